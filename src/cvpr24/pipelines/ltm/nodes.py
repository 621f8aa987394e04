"""LTM's five phases as Kedro nodes (arguments in, values out; the catalog does the I/O).

ingest      -> the scene folder (embedded garden-lite written in the mip-NeRF 360 layout, or a real scene pointed
               to) and a manifest of its images
preprocess  -> the validated arrays every stage reads (images, cameras, splits, ground-truth surface samples)
train       -> stage A (neural SDF + colour field, or the analytic SDF with `sdf_source: analytic`), stage B (cascaded
               marching cubes, visibility culling), stage C (quadric simplification per budget) and stage D (joint
               refinement, one job per row of the ablations and of the budget sweep), each cached and resumable
evaluate    -> stage E per run (xatlas, texture bake, the viewer's files) or the per-vertex asset of the vertex-colour
               rows; every test view rendered FROM THE EXPORTED FILES; PSNR / SSIM, triangles, bytes, Chamfer,
               normal consistency, mesh-quality diagnostics; one row per table cell
report      -> tables, claims, figures, the exported LTM scene with its browser viewer

Training sees the training views only; the test views and the ground-truth surface are read by evaluate.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cvpr24.core.ingest import dispatch
from cvpr24.core.metrics import lpips_available, psnr, ssim
from cvpr24.core.provenance import fingerprint_arrays
from cvpr24.core.reporting import TableRows
from cvpr24.core.tracking import log_history_to_active_run
from cvpr24.core.validation import DataValidationError
from cvpr24.pipelines.ltm import data as D
from cvpr24.pipelines.ltm import jobs as J
from cvpr24.pipelines.ltm.scene import generate_garden_lite, load_scene_folder

log = logging.getLogger(__name__)
NEURAL = "neural"             # suffix of the rows whose stage A is ``ltm.train.neural_stage_a``
NEURAL_RUN = f"ltm_{NEURAL}"
REAL_FIX = ("see pipelines/ltm/README.md (Real data): point ltm.data.real.root at a mip-NeRF 360 / Tanks and Temples "
            "/ Deep Blending scene folder (sparse/0 COLMAP model + images/ [+ images_<k>/])")


# ------------------------------------------------------------------------------------------- ingest
def ingest(data: dict[str, Any], runtime: dict[str, Any]):
    """The scene folder and its manifest (one row per image), validated before anything is trained."""
    seed = int(runtime["seed"])

    def embedded():
        scene = generate_garden_lite(D.garden_config(dict(data.get("garden_lite") or {}), seed))
        pointer = {"data": scene}
        arrays = D.SceneData(Path("."), "embedded", Path("."), scene.cameras, scene.images,
                             np.setdiff1d(np.arange(len(scene.cameras)),
                                          np.arange(len(scene.cameras))[::scene.config.test_every]),
                             np.arange(len(scene.cameras))[::scene.config.test_every])
        return pointer, D.manifest(arrays)

    def real():
        root = Path(str(data["real"]["root"]))
        scene = load_scene_folder(root, downscale=int(data["real"].get("downscale", 1)),
                                  test_every=int(data.get("test_every", 8)))
        return {"pointer": {"root": str(root), "kind": "real"}}, D.manifest(scene)

    (pointer, manifest), fix = dispatch(data, slug="ltm", embedded=embedded, real=real, real_fix=REAL_FIX)
    if manifest.empty:
        raise DataValidationError(f"the scene has no images: {fix}")
    return pointer, manifest


# --------------------------------------------------------------------------------------- preprocess
def preprocess(raw_scene: dict[str, Any], manifest: pd.DataFrame, data: dict[str, Any]) -> dict[str, np.ndarray]:
    """Read the scene folder through the one validating loader (cameras against images, sizes, NaNs) and keep the
    arrays the stages read. The manifest must name the same images (a folder changed since ingest is refused)."""
    downscale = int(data.get("real", {}).get("downscale", 1)) if raw_scene.get("kind") == "real" else 1
    scene = load_scene_folder(raw_scene["root"], downscale=downscale, test_every=int(data.get("test_every", 8)))
    if list(manifest["sample_id"]) != list(scene.cameras.names):
        raise DataValidationError(f"{raw_scene['root']}: the images differ from the ingest manifest; re-run "
                                  "`kedro run --pipeline=ltm --tags=ingest`")
    return D.to_arrays(scene)


# -------------------------------------------------------------------------------------------- train
def train(model_input: dict[str, np.ndarray], train: dict[str, Any], runtime: dict[str, Any]):
    """Stages A-D (module docstring). Returns the models (every run's meshes and colour-field weights), a per-stage
    / per-run log (seconds, cached, sizes) and the loss history."""
    from cvpr24.core.parallel import map_jobs

    torch.use_deterministic_algorithms(True, warn_only=True)
    progress = bool(runtime.get("progress", True))
    threads = int(runtime.get("threads", 2))
    torch.set_num_threads(threads)
    seed = int(runtime["seed"])
    ckpt = Path(str(train["checkpoint_dir"]))
    ckpt.mkdir(parents=True, exist_ok=True)
    fp = fingerprint_arrays({k: model_input[k] for k in ("images", "c2w", "fx", "train_ids")})
    scene = D.from_arrays(model_input)
    code = J.code_fingerprint()
    rows, history = [], []

    # stage A
    t0 = time.perf_counter()
    fields, cached = J.stage_a(scene, dict(train["stage_a"]), seed=seed, root=ckpt, data_fp=fp, code=code,
                               progress=progress)
    rows.append({"run": "stage_a", "stage": "A", "seconds": time.perf_counter() - t0, "cached": cached,
                 **fields["info"]})
    history += [{"run": "stage_a", **h} for h in fields["history"]]

    # stage B
    t0 = time.perf_counter()
    full, cached = J.stage_b(fields, scene, dict(train["stage_b"]), seed=seed, root=ckpt, data_fp=fp, code=code)
    rows.append({"run": "stage_b", "stage": "B", "seconds": time.perf_counter() - t0, "cached": cached,
                 "faces": int(sum(len(f) for _, f in full)), **{f"c{c}_faces": len(f) for c, (_, f) in
                                                                 enumerate(full)}})

    # the second stage A (``neural_stage_a``: the neural SDF where the profile's stage A is the exact one), meshed
    # and refined by the same stages B-D: its rows end in "_neural"
    second = None
    if train.get("neural_stage_a"):
        cfg_n = {**dict(train["stage_a"]), **dict(train["neural_stage_a"])}
        t0 = time.perf_counter()
        fields_n, cached = J.stage_a(scene, cfg_n, seed=seed, root=ckpt, data_fp=fp, code=code, progress=progress)
        rows.append({"run": NEURAL_RUN, "stage": "A", "seconds": time.perf_counter() - t0, "cached": cached,
                     **fields_n["info"]})
        history += [{"run": f"stage_a_{NEURAL}", **h} for h in fields_n["history"]]
        t0 = time.perf_counter()
        full_n, cached = J.stage_b(fields_n, scene, dict(train["stage_b"]), seed=seed, root=ckpt, data_fp=fp,
                                   code=code)
        rows.append({"run": NEURAL_RUN, "stage": "B", "seconds": time.perf_counter() - t0, "cached": cached,
                     "faces": int(sum(len(f) for _, f in full_n))})
        second = {"fields": fields_n, "full": full_n}

    # stage C, then D: one job per run
    runs = J.plan_runs(train)
    sources = [(run, fields, full) for run in runs]
    if second is not None:
        sources.append(({"name": NEURAL_RUN, "budget": int(train["budget"]), "refine": dict(train["stage_d"])},
                        second["fields"], second["full"]))
    jobs = []
    for run, run_fields, run_full in sources:
        t0 = time.perf_counter()
        simple = J.stage_c(run_full, run["budget"], dict(train["stage_c"]))
        rows.append({"run": run["name"], "stage": "C", "seconds": time.perf_counter() - t0, "cached": False,
                     "faces": int(sum(len(f) for _, f in simple))})
        jobs.append({"run": run, "cascades": simple, "colour_state": run_fields["colour_state"],
                     "field_cfg": run_fields["cfg"], "model_input": model_input, "refine_cfg": run["refine"],
                     "seed": seed, "root": str(ckpt), "data_fp": fp, "code": code})
    workers = int(train.get("workers", 1))
    outs = map_jobs(J.stage_d, jobs, workers=workers, threads=threads, desc="ltm: stage D (refinement)",
                    progress=progress)
    models: dict[str, Any] = {"field_cfg": fields["cfg"], "colour_state_a": fields["colour_state"],
                              "sdf_state_a": fields["sdf_state"], "full": full, "runs": {}, NEURAL: None}
    for (run, run_fields, _), out in zip(sources, outs, strict=True):
        entry = {"run": run, "cascades": out["cascades"], "before": out["before"],
                 "colour_state": out["colour_state"], "field_cfg": run_fields["cfg"]}
        if run["name"] == NEURAL_RUN:
            models[NEURAL] = {"field_cfg": run_fields["cfg"], "colour_state_a": run_fields["colour_state"],
                              "sdf_state_a": run_fields["sdf_state"], "full": second["full"], "ltm": entry}
        else:
            models["runs"][run["name"]] = entry
        rows.append({"run": run["name"], "stage": "D", "seconds": out["seconds"], "cached": out["cached"],
                     "faces": int(sum(len(f) for _, f in out["cascades"]))})
        history += [{"run": run["name"], **h} for h in out["history"]]
    train_log = pd.DataFrame(rows)
    hist = pd.DataFrame(history)
    for col in ("run", "step", "loss"):
        if col not in hist:
            hist[col] = np.nan
    log_history_to_active_run([{"job_id": h["run"], "step": h["step"], "loss": h["loss"]} for h in history
                               if "loss" in h], prefix="loss")
    log.info("ltm train: %s", ", ".join(f"{r['run']}/{r['stage']} {r['seconds']:.0f} s"
                                        + (" (cached)" if r["cached"] else "") for r in rows if r["stage"] != "C"))
    return models, train_log, hist


# ----------------------------------------------------------------------------------------- evaluate
def evaluate(models: dict[str, Any], model_input: dict[str, np.ndarray], evaluate: dict[str, Any],
             runtime: dict[str, Any]):
    """Every row's asset written and rendered from its files on the test views. Returns per-view scores, per-run
    asset measurements and the test renders of the figure rows."""
    torch.set_num_threads(int(runtime.get("threads", 2)))
    scene = D.from_arrays(model_input)
    out_dir = Path(str(evaluate["asset_dir"]))
    out_dir.mkdir(parents=True, exist_ok=True)
    views, assets, renders = [], [], {}
    for row in J.evaluation_rows(models, evaluate):
        t0 = time.perf_counter()
        field = J.colour_field(row["field_cfg"], row["colour_state"])
        cascades = row["cascades"]
        folder = out_dir / row["name"]
        if row["appearance"] == "texture":
            foot = J.export_textured(folder, cascades, field, evaluate)
            imgs = J.render_textured(folder, scene)
        else:
            foot = J.export_vertex(folder, cascades, field)
            imgs = J.render_vertex(folder, cascades, field, scene)
        seconds = time.perf_counter() - t0
        geo = J.geometry_metrics(cascades, row.get("before"), scene, evaluate)
        assets.append({"row": row["name"], "appearance": row["appearance"], "seconds": seconds,
                       "budget": np.nan if row.get("budget") is None else float(row["budget"]), **foot, **geo})
        for i, img in zip(scene.test_ids, imgs, strict=True):
            ref = scene.images[i]
            pred = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
            views.append({"row": row["name"], "view": scene.cameras.names[i], "psnr": psnr(pred, ref),
                          "ssim": ssim(pred, ref)})
        if row["name"] in evaluate.get("figure_rows", []):
            renders[row["name"]] = np.stack([np.clip(np.round(x * 255), 0, 255).astype(np.uint8) for x in imgs])
        if row["name"] == "ltm":
            model_imgs = J.render_model(cascades, field, scene)
            for i, a, b in zip(scene.test_ids, imgs, model_imgs, strict=True):
                views.append({"row": "export_fidelity", "view": scene.cameras.names[i],
                              "psnr": psnr(np.clip(a, 0, 1), np.clip(b, 0, 1), data_range=1.0), "ssim": np.nan})
    if evaluate.get("stage_a_row", True):
        # stage A itself, volume rendered (no mesh): what extraction, simplification and refinement start from
        sources = [("stage_a", models)] + ([(f"stage_a_{NEURAL}", models[NEURAL])] if models.get(NEURAL) else [])
        for name, src in sources:
            t0 = time.perf_counter()
            imgs = J.render_fields(src["field_cfg"], src["sdf_state_a"], src["colour_state_a"], scene)
            assets.append({"row": name, "appearance": "volume", "seconds": time.perf_counter() - t0,
                           "budget": np.nan})
            for i, img in zip(scene.test_ids, imgs, strict=True):
                pred = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
                views.append({"row": name, "view": scene.cameras.names[i], "psnr": psnr(pred, scene.images[i]),
                              "ssim": ssim(pred, scene.images[i])})
    renders["gt"] = scene.images[scene.test_ids]
    return pd.DataFrame(views), pd.DataFrame(assets), renders


def per_view(scores: pd.DataFrame, row: str, metric: str = "psnr") -> pd.Series:
    s = scores[scores["row"] == row].set_index("view")[metric]
    return s.astype(float)


TABLE2_ROWS = {
    "ltm": "LTM (joint refinement, textures)",
    "no_refine": "no refinement of the geometry (appearance only)",
    "silhouette_only": "silhouette gradients only",
    "surface_only": "surface gradients only",
    "no_reg": "no regularisers",
    "vertex_colour": "vertex colours instead of textures",
    "bakedsdf_lite": "BakedSDF-lite (full mesh, vertex colours)",
    "bakedsdf_lite_tex": "BakedSDF-lite, textured",
    "stage_a": "stage-A fields, volume rendered (no mesh)",
    NEURAL_RUN: "LTM from the neural stage A",
    f"bakedsdf_lite_{NEURAL}": "BakedSDF-lite from the neural stage A",
    f"stage_a_{NEURAL}": "neural stage-A fields, volume rendered (no mesh)",
}


def table_rows(scores: pd.DataFrame, assets: pd.DataFrame, paper: dict[str, Any], train: dict[str, Any],
               runtime: dict[str, Any], manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per table cell of ours: per-view PSNR / SSIM (over = views), counted triangles / MB."""
    rows = TableRows()
    a = assets.set_index("row")
    lp = lpips_available()
    data = "garden-lite test views"

    def add_common(table: str, label: str, name: str) -> None:
        rows.add(table, label, "psnr", per_view(scores, name), over="views", data=data)
        rows.add(table, label, "ssim", per_view(scores, name, "ssim"), over="views", data=data)
        if pd.isna(a.loc[name].get("triangles", np.nan)):
            for key in ("triangles", "mb"):
                rows.add(table, label, key, None, note="no mesh: the fields are volume rendered")
            return
        rows.add(table, label, "triangles", float(a.loc[name, "triangles"]), over="")
        rows.add(table, label, "mb", float(a.loc[name, "disk_bytes"]) / 1e6, over="")

    add_common("table_1", "LTM", "ltm")
    add_common("table_1", "BakedSDF", "bakedsdf_lite")
    for label in ("LTM", "BakedSDF"):
        rows.add("table_1", label, "lpips", None, note=str(lp) if lp else "LPIPS is not computed for LTM yet")
    for name, label in TABLE2_ROWS.items():
        if name not in a.index:
            continue
        add_common("table_2", label, name)
        for key in ("chamfer", "normal_consistency", "dihedral", "flipped"):
            val = a.loc[name, key] if key in a.columns else np.nan
            if pd.isna(val):
                rows.add("table_2", label, key, None, note="not measured for this row")
            else:
                rows.add("table_2", label, key, float(val) * (1e3 if key == "chamfer" else 1.0), over="")
    sweep = [n for n in a.index if n.startswith("budget_") or n == "ltm"]
    for name in sorted(sweep, key=lambda n: float(a.loc[n, "budget"])):
        add_common("table_3", f"B0 = {int(a.loc[name, 'budget']):,}" + (" (LTM)" if name == "ltm" else ""), name)
    ltm, baked = a.loc["ltm"], a.loc["bakedsdf_lite"]
    rows.add("table_headline", "fewer triangles (x)", "value", float(baked["triangles"]) / float(ltm["triangles"]),
             over="")
    rows.add("table_headline", "less memory (x)", "value", float(baked["disk_bytes"]) / float(ltm["disk_bytes"]),
             over="")
    diff = per_view(scores, "ltm") - per_view(scores, "bakedsdf_lite")
    rows.add("table_headline", "PSNR difference (dB)", "value", diff, over="views", data=data)
    fp = fingerprint_arrays({"names": manifest["sample_id"].to_numpy().astype(str),
                             "means": manifest["mean"].to_numpy(dtype=np.float64)})
    return rows.frame(profile=runtime["profile"], data_fingerprint=fp,
                      params={"budget": train.get("budget"), "stage_a_iterations": train["stage_a"].get("iterations")})
