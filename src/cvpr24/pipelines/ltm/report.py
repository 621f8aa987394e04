"""LTM's claim measurements, figures and the exported scene; core renders the tables, verdicts and the README.

`measure_claims` returns each claim of `pipelines/ltm/paper.yaml` per test view (or as one counted value); every
number comes from the renders of the exported files made by the evaluate phase.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from cvpr24.core.claims import Measurement, evaluate_claims  # noqa: E402
from cvpr24.core.reporting import Figure, build_report, figure_png  # noqa: E402
from cvpr24.pipelines.ltm import data as D  # noqa: E402
from cvpr24.pipelines.ltm import mesh as M  # noqa: E402
from cvpr24.pipelines.ltm.nodes import per_view  # noqa: E402
from cvpr24.pipelines.ltm.raster import project, rasterize  # noqa: E402

INNER_DIAGONAL = 2.0 * np.sqrt(3.0)
ROW_COLOURS = {"bakedsdf_lite": "tab:orange", "bakedsdf_lite_tex": "tab:green", "ltm_neural": "tab:purple",
               "bakedsdf_lite_neural": "tab:red"}


def _views(s: pd.Series, detail: str) -> Measurement:
    return Measurement({str(k): float(v) for k, v in s.items()}, detail)


def _one(value: float, detail: str) -> Measurement:
    return Measurement({"scene": float(value)}, detail)


def measure_claims(scores: pd.DataFrame, assets: pd.DataFrame) -> dict[str, Measurement]:
    a = assets.set_index("row")
    have = set(a.index)

    def p(row: str) -> pd.Series:
        return per_view(scores, row)

    m: dict[str, Measurement] = {}
    ltm, baked = a.loc["ltm"], a.loc["bakedsdf_lite"]
    tri = float(baked["triangles"]) / float(ltm["triangles"])
    byt = float(baked["disk_bytes"]) / float(ltm["disk_bytes"])
    m["C1"] = _one(tri, f"{int(baked['triangles']):,} vs {int(ltm['triangles']):,} triangles: {tri:.1f}x (paper 73x)")
    m["C1b"] = _one(byt, f"{baked['disk_bytes'] / 1e6:.3f} vs {ltm['disk_bytes'] / 1e6:.3f} MB: {byt:.1f}x "
                         "(paper 11x)")
    m["C1c"] = _views(p("ltm") - p("bakedsdf_lite"),
                      f"PSNR {p('ltm').mean():.2f} vs {p('bakedsdf_lite').mean():.2f} dB")
    m["C2"] = _views(p("ltm") - p("no_refine"), f"PSNR {p('ltm').mean():.2f} vs {p('no_refine').mean():.2f} dB") \
        if "no_refine" in have else Measurement({}, note="no_refine not run in this profile")
    if {"silhouette_only", "surface_only"} <= have:
        best = np.maximum(p("silhouette_only"), p("surface_only"))
        m["C2b"] = _views(p("ltm") - best, f"PSNR {p('ltm').mean():.2f} vs silhouette-only "
                                           f"{p('silhouette_only').mean():.2f}, surface-only "
                                           f"{p('surface_only').mean():.2f} dB")
    else:
        m["C2b"] = Measurement({}, note="the gradient-path ablations were not run in this profile")
    m["C3"] = _views(p("ltm") - p("vertex_colour"),
                     f"PSNR {p('ltm').mean():.2f} vs {p('vertex_colour').mean():.2f} dB at "
                     f"{int(ltm['triangles']):,} triangles")
    if "no_reg" in have:
        m["C4"] = _one(float(a.loc["no_reg", "dihedral"]) - float(ltm["dihedral"]),
                       f"{a.loc['no_reg', 'dihedral']:.2f} vs {ltm['dihedral']:.2f} degrees; flipped faces "
                       f"{a.loc['no_reg', 'flipped']:.0f} vs {ltm['flipped']:.0f}")
    else:
        m["C4"] = Measurement({}, note="no_reg not run in this profile")
    b8, b2 = "budget_8000", "ltm"
    if b8 in have and int(ltm["budget"]) == 2000:
        d = p(b8).mean() - p(b2).mean()
        m["C5"] = _one(d, f"PSNR {p(b8).mean():.2f} (B0 8,000) vs {p(b2).mean():.2f} dB (B0 2,000)")
    else:
        m["C5"] = Measurement({}, note="the budget sweep does not hold B0 = 8,000 and 2,000 in this profile")
    fid = per_view(scores, "export_fidelity")
    m["S1"] = _views(fid, f"mean {fid.mean():.1f} dB between the torch render and the exported files")
    if "budget_250" in have and int(ltm["budget"]) == 2000:
        m["S2"] = _views(p("ltm") - p("budget_250"), f"PSNR {p('ltm').mean():.2f} vs {p('budget_250').mean():.2f}")
    else:
        m["S2"] = Measurement({}, note="the budget sweep does not hold B0 = 250 in this profile")
    ch = float(ltm.get("chamfer", np.nan))
    m["S3"] = _one(100.0 * ch / INNER_DIAGONAL, f"Chamfer-L1 {ch * 1e3:.2f}e-3 = "
                                                f"{100 * ch / INNER_DIAGONAL:.2f} % of the inner diagonal")
    if "bakedsdf_lite_neural" in have and not pd.isna(a.loc["bakedsdf_lite_neural"].get("chamfer", np.nan)):
        chn = float(a.loc["bakedsdf_lite_neural", "chamfer"])
        vol = per_view(scores, "stage_a_neural").mean() if "stage_a_neural" in have else np.nan
        m["S4"] = _one(100.0 * chn / INNER_DIAGONAL,
                       f"Chamfer-L1 {chn * 1e3:.1f}e-3 = {100 * chn / INNER_DIAGONAL:.2f} % of the inner diagonal "
                       f"(the full neural mesh); the neural fields volume rendered: {vol:.2f} dB on the test views")
    else:
        m["S4"] = Measurement({}, note="no neural stage A in this profile (ltm.train.neural_stage_a is null)")
    return m


# ------------------------------------------------------------------------------------------- figures
def figure_views(renders: dict[str, np.ndarray], assets: pd.DataFrame, scores: pd.DataFrame, names: list[str],
                 dpi: int, k: int = 3) -> bytes:
    a = assets.set_index("row")
    cols = [("gt", "ground truth")] + [(r, r) for r in ("ltm", "bakedsdf_lite") if r in renders]
    n = min(k, len(renders["gt"]))
    fig, axes = plt.subplots(n, len(cols), figsize=(2.6 * len(cols), 2.1 * n), squeeze=False)
    for j, (key, label) in enumerate(cols):
        if key != "gt":
            label = (f"{'LTM' if key == 'ltm' else 'BakedSDF-lite'}: {int(a.loc[key, 'triangles']):,} tris, "
                     f"{a.loc[key, 'disk_bytes'] / 1e6:.2f} MB")
        for i in range(n):
            ax = axes[i, j]
            ax.imshow(renders[key][i])
            ax.set_xticks([])
            ax.set_yticks([])
            if key != "gt":
                ax.set_xlabel(f"{per_view(scores, key).iloc[i]:.2f} dB", fontsize=7)
            if i == 0:
                ax.set_title(label, fontsize=7)
            if j == 0:
                ax.set_ylabel(names[i], fontsize=7)
    fig.tight_layout()
    return figure_png(fig, dpi)


def budget_frame(scores: pd.DataFrame, assets: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for r in assets.to_dict("records"):
        if r["row"] in ("ltm", "ltm_neural") or str(r["row"]).startswith(("budget_", "bakedsdf_lite")):
            s = per_view(scores, r["row"])
            rows.append({"row": r["row"], "budget": r.get("budget"), "triangles": r["triangles"],
                         "mb": r["disk_bytes"] / 1e6, "psnr": s.mean(), "psnr_std": s.std(ddof=0)})
    return pd.DataFrame(rows).sort_values("triangles")


def figure_budget(frame: pd.DataFrame, dpi: int) -> bytes:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    sweep = frame[~frame["row"].str.startswith("bakedsdf") & (frame["row"] != "ltm_neural")]
    ref = frame[frame["row"].str.startswith("bakedsdf") | (frame["row"] == "ltm_neural")]
    for ax, key, label in ((axes[0], "triangles", "triangles (all cascades)"), (axes[1], "mb", "bytes on disk (MB)")):
        ax.errorbar(sweep[key], sweep["psnr"], yerr=sweep["psnr_std"], marker="o", capsize=3, label="LTM, budget sweep")
        for r in sweep.to_dict("records"):
            ax.annotate(f"B0={int(r['budget'])}" if not pd.isna(r["budget"]) else "", (r[key], r["psnr"]), fontsize=6,
                        textcoords="offset points", xytext=(3, -8))
        for r in ref.to_dict("records"):
            name = {"bakedsdf_lite": "BakedSDF-lite, vertex colours", "bakedsdf_lite_tex": "BakedSDF-lite, textured",
                     "bakedsdf_lite_neural": "BakedSDF-lite from the neural stage A",
                     "ltm_neural": "LTM from the neural stage A"}.get(r["row"], r["row"])
            ax.scatter([r[key]], [r["psnr"]], marker="s" if "neural" not in r["row"] else "D", s=30, label=name,
                       color=ROW_COLOURS.get(r["row"]))
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.set_ylabel("test PSNR (dB)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle("Quality against size: mean over the test views (bars: std over views)", fontsize=9)
    fig.tight_layout()
    return figure_png(fig, dpi)


def figure_wireframe(models: dict[str, Any], model_input: dict[str, np.ndarray], dpi: int) -> bytes:
    """The LTM mesh's visible edges from the first test view, over the ground truth (dimmed)."""
    scene = D.from_arrays(model_input)
    i = int(scene.test_ids[0])
    cams = scene.cameras
    h, w = int(cams.height[i]), int(cams.width[i])
    casc = models["runs"]["ltm"]["cascades"]
    v = np.concatenate([c[0] for c in casc]).astype(np.float32)
    offs = np.cumsum([0] + [len(c[0]) for c in casc])[:-1]
    f = np.concatenate([c[1] + o for c, o in zip(casc, offs, strict=True)])
    scale = 4
    mvp = M.camera_mvp(cams, i)
    clip = project(torch.from_numpy(v), mvp)
    rast = rasterize(clip, torch.from_numpy(f), h * scale, w * scale)
    visible = np.unique(rast.pix_face.numpy())
    ndc = (clip[:, :2] / clip[:, 3:4]).numpy()
    sx, sy = (ndc[:, 0] + 1) * w / 2, (1 - ndc[:, 1]) * h / 2
    fig, ax = plt.subplots(figsize=(7, 7 * h / w))
    ax.imshow(scene.images[i], alpha=0.35, extent=(0, w, h, 0))
    from matplotlib.collections import LineCollection

    segs = []
    for tri in f[visible]:
        for a_, b_ in ((0, 1), (1, 2), (2, 0)):
            segs.append([(sx[tri[a_]], sy[tri[a_]]), (sx[tri[b_]], sy[tri[b_]])])
    ax.add_collection(LineCollection(segs, linewidths=0.3, colors="k"))
    ax.set_xlim(0, w)
    ax.set_ylim(h, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"LTM mesh, {len(f):,} triangles ({len(visible):,} visible in this test view)", fontsize=8)
    return figure_png(fig, dpi)


def scene_files(asset_dir: Path) -> dict[str, bytes]:
    """The exported LTM scene and the browser viewer page, for the report's `scene/` folder."""
    from cvpr24.pipelines.ltm.webviewer import viewer_files

    files = {f"scene/{p.name}": p.read_bytes() for p in sorted((asset_dir / "ltm").iterdir()) if p.is_file()}
    files.update({f"scene/{name}": data for name, data in viewer_files().items()})
    return files


def render(scores: pd.DataFrame, assets: pd.DataFrame, renders: dict[str, np.ndarray], train_log: pd.DataFrame,
           history: pd.DataFrame, rows: pd.DataFrame, models: dict[str, Any], model_input: dict[str, np.ndarray],
           paper: dict[str, Any], params: dict[str, Any], evaluate: dict[str, Any],
           runtime: dict[str, Any]) -> dict[str, str | bytes]:
    """All report files as {relative path: content}: measurements and figures here, the rest core's."""
    dpi = int(params.get("figure_dpi", 110))
    claims = evaluate_claims(paper, measure_claims(scores, assets))
    names = [str(model_input["names"][i]) for i in model_input["test_ids"]]
    budget = budget_frame(scores, assets)
    figures = [
        Figure("views", "Test views: ground truth, LTM and BakedSDF-lite, each rendered from its exported files "
                        "(triangles and bytes over all cascades; PSNR under each view).",
               figure_views(renders, assets, scores, names, dpi)),
        Figure("budget", "Test PSNR against triangles and against bytes on disk for the triangle-budget sweep, with "
                         "BakedSDF-lite (the full mesh) for reference.", figure_budget(budget, dpi)),
        Figure("wireframe", "The LTM mesh (after refinement) seen from the first test view.",
               figure_wireframe(models, model_input, dpi)),
    ]
    stages = train_log.groupby("stage")["seconds"].sum().round(1)
    per_run = assets[["row", "appearance", "triangles", "disk_bytes", "seconds"]].copy()
    per_run["seconds"] = per_run["seconds"].round(1)
    sections = [
        ("Run time per stage", "Seconds per stage (A: neural fields, B: extraction and culling, C: simplification, "
                               "D: refinement, summed over runs; 0 for cached results):\n\n"
         + stages.to_frame("seconds").to_markdown() + "\n\nEvaluation per row (export, renders of the test views "
         "from the files):\n\n" + per_run.to_markdown(index=False)),
        ("The exported scene", "`scene/` holds LTM's exported files (`mesh_<c>.obj`, `feat0_<c>.jpg`, "
                               "`feat1_<c>.jpg`, `mlp.json`) and a WebGL viewer: `python -m http.server -d "
                               f"{runtime.get('reports_root', 'reports')}/ltm/scene` and open http://127.0.0.1:8000/ "
                               "(a headless-chromium test renders it and compares with our evaluation render)."),
    ]
    files = {"scores.csv": scores.to_csv(index=False), "assets.csv": assets.to_csv(index=False),
             "plots/budget.csv": budget.to_csv(index=False)}
    files.update(scene_files(Path(str(evaluate["asset_dir"]))))
    return build_report("ltm", paper, rows, claims, profile=runtime.get("profile", "base"), figures=figures,
                        sections=sections, files=files)
