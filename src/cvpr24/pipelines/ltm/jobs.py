"""LTM's stages as cached jobs (what the train and evaluate nodes call), and the rows of the evaluation.

Every trained result is cached under ``ltm.train.checkpoint_dir`` by :func:`cvpr24.core.training.cached_job`, keyed
by its parameters, the seed, the input data and the code of the stage (``field.py`` / ``refine.py`` / ``mesh.py`` /
``raster.py`` / this file), so a killed run resumes and a report edit retrains nothing. Stage-D jobs run in worker
processes (one thread each) and take only picklable arguments.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cvpr24.core.provenance import fingerprint_files
from cvpr24.core.training import cached_job, job_key
from cvpr24.pipelines.ltm import data as D
from cvpr24.pipelines.ltm import field as F
from cvpr24.pipelines.ltm import mesh as M
from cvpr24.pipelines.ltm import refine as R

log = logging.getLogger(__name__)
PACKAGE = Path(__file__).resolve().parent
Cascades = list[tuple[np.ndarray, np.ndarray]]


def code_fingerprint() -> str:
    """The code a trained result depends on (not the evaluation or report code)."""
    files = [PACKAGE / f for f in ("field.py", "refine.py", "mesh.py", "raster.py", "jobs.py", "scene.py")]
    files += [PACKAGE.parent.parent / "core" / f for f in ("training.py", "geometry.py")]
    return fingerprint_files(files)


def _t(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a))


def _cascades_to_cache(cascades: Cascades) -> list[dict[str, torch.Tensor]]:
    return [{"v": _t(np.asarray(v, dtype=np.float32)), "f": _t(np.asarray(f, dtype=np.int64))} for v, f in cascades]


def _cascades_from_cache(items: list[dict[str, torch.Tensor]]) -> Cascades:
    return [(c["v"].numpy(), c["f"].numpy()) for c in items]


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ------------------------------------------------------------------------------------------- stage A
def stage_a(scene, cfg: dict[str, Any], *, seed: int, root: Path, data_fp: str, code: str, progress: bool = True):
    """The stage-A fields (trained, or the analytic SDF with a trained colour field). Returns
    ``({"cfg", "sdf_source", "sdf_state", "colour_state", "history", "info"}, cached)``."""
    fcfg = F.FieldConfig.from_dict({**cfg, "seed": seed})
    key = job_key(stage="A", cfg=fcfg.to_dict(), data=data_fp, code=code)

    def fit(ckpt) -> dict[str, Any]:
        t0 = time.perf_counter()
        res = F.train_stage_a(scene, fcfg, checkpoint_path=ckpt.directory / "resume.pt", progress=progress)
        return {"sdf_state": _state(res.sdf), "colour_state": _state(res.colour), "history": res.history,
                "seconds": time.perf_counter() - t0}

    def to_cache(out: dict[str, Any]) -> dict[str, Any]:
        hist = out["history"]
        keys = sorted({k for h in hist for k in h})
        return {"sdf_state": out["sdf_state"], "colour_state": out["colour_state"],
                "history": {k: torch.tensor([float(h.get(k, np.nan)) for h in hist], dtype=torch.float64)
                            for k in keys},
                "seconds": torch.tensor(float(out["seconds"]), dtype=torch.float64)}

    def from_cache(c: dict[str, Any]) -> dict[str, Any]:
        keys = list(c["history"])
        n = len(c["history"][keys[0]]) if keys else 0
        hist = [{k: float(c["history"][k][i]) for k in keys} for i in range(n)]
        return {"sdf_state": c["sdf_state"], "colour_state": c["colour_state"], "history": hist,
                "seconds": float(c["seconds"])}

    out, cached = cached_job(root, "stage_a", key, fit, to_cache=to_cache, from_cache=from_cache)
    last = out["history"][-1] if out["history"] else {}
    info = {"train_seconds": out["seconds"], "iterations": fcfg.iterations, "sdf_source": fcfg.sdf_source,
            **{f"final_{k}": v for k, v in last.items() if k != "step"}}
    return {"cfg": fcfg.to_dict(), "sdf_state": out["sdf_state"], "colour_state": out["colour_state"],
            "history": out["history"], "info": info}, cached


def sdf_field(cfg: dict[str, Any], state: dict[str, torch.Tensor], root: str | Path | None = None) -> torch.nn.Module:
    """f_sdf with the trained weights (the analytic SDF of the scene folder ``root`` for ``sdf_source: analytic``)."""
    fcfg = F.FieldConfig.from_dict(cfg)
    sdf, _ = F.build_fields(fcfg, root if fcfg.sdf_source == "analytic" else None)
    sdf.load_state_dict(state)
    return sdf.eval()


def colour_field(cfg: dict[str, Any], state: dict[str, torch.Tensor]) -> torch.nn.Module:
    """f_color with the given weights (stage A's, or a stage-D run's)."""
    _, colour = F.build_fields(F.FieldConfig.from_dict(cfg))
    colour.load_state_dict(state)
    return colour.eval()


# ------------------------------------------------------------------------------------------- stage B
def stage_b(fields: dict[str, Any], scene, cfg: dict[str, Any], *, seed: int, root: Path, data_fp: str,
            code: str) -> tuple[Cascades, bool]:
    """Cascaded marching cubes of the stage-A SDF, visibility culling against the training views, small components
    removed; the full-resolution cascades (BakedSDF-lite's mesh, and what stage C simplifies)."""
    key = job_key(stage="B", cfg=cfg, field=fields["cfg"], a=_digest(fields["sdf_state"]), data=data_fp, code=code)

    def fit(_ckpt) -> dict[str, Any]:
        sdf = sdf_field(fields["cfg"], fields["sdf_state"], scene.root)
        fn = F.sdf_numpy(sdf)
        res = [int(r) for r in cfg["resolution"]]
        casc = M.extract_cascades(fn, res, contraction=str(fields["cfg"].get("contraction", "linf")),
                                  bound=float(fields["cfg"].get("bound", 2.0)), array="numpy")
        views = [int(i) for i in scene.train_ids]
        out = []
        for c in casc:
            if len(c.faces) == 0:
                raise RuntimeError(f"stage B: marching cubes found no surface in cascade {c.index} (resolution "
                                   f"{c.resolution}); stage A did not learn a surface: check ltm.train.stage_a "
                                   "(iterations, learning rates) and its loss history")
            cul = M.cull_invisible(c.vertices, c.faces, scene.cameras, dilation=int(cfg.get("dilation", 3)),
                                   views=views)
            v, f = M.remove_small_components(cul.vertices, cul.faces, int(cfg.get("min_faces", 16)))
            if len(f) == 0:
                raise RuntimeError(f"stage B: cascade {c.index} is empty after culling; no training view sees it")
            out.append((v.astype(np.float32), f.astype(np.int64)))
        return {"cascades": out}

    out, cached = cached_job(root, "stage_b", key, fit,
                             to_cache=lambda o: {"cascades": _cascades_to_cache(o["cascades"])},
                             from_cache=lambda c: {"cascades": _cascades_from_cache(c["cascades"])})
    return out["cascades"], cached


def _digest(state: dict[str, torch.Tensor]) -> str:
    from cvpr24.core.provenance import fingerprint_arrays

    return fingerprint_arrays({k: v.detach().cpu().numpy() for k, v in sorted(state.items())})


# ------------------------------------------------------------------------------------------- stage C
def stage_c(full: Cascades, budget: int, cfg: dict[str, Any]) -> Cascades:
    """Quadric edge collapse of each cascade: the inner one to ``budget`` faces, outer ones to ``budget *
    outer_ratio`` (NeRF2Mesh's optimal placement off for the outer cascades)."""
    out = []
    for c, (v, f) in enumerate(full):
        target = int(budget) if c == 0 else max(1, int(round(budget * float(cfg.get("outer_ratio", 0.5)))))
        sv, sf = M.simplify(v, f, target, backend=str(cfg.get("backend", "auto")), optimal_placement=(c == 0))
        out.append((sv, sf))
    return out


# ------------------------------------------------------------------------------------------- stage D
def plan_runs(train: dict[str, Any]) -> list[dict[str, Any]]:
    """Every stage-D run: LTM, its ablations (one refinement setting changed each) and the budget sweep."""
    base = dict(train["stage_d"])
    budget = int(train["budget"])
    runs = [{"name": "ltm", "budget": budget, "refine": base}]
    for name, change in (train.get("ablations") or {}).items():
        runs.append({"name": name, "budget": budget, "refine": {**base, **dict(change)}})
    for b in train.get("budgets") or []:
        if int(b) != budget:
            runs.append({"name": f"budget_{int(b)}", "budget": int(b), "refine": base})
    names = [r["name"] for r in runs]
    if len(set(names)) != len(names):
        raise ValueError(f"ltm.train: duplicate run names {names}")
    return runs


def stage_d(run: dict[str, Any], cascades: Cascades, colour_state: dict[str, torch.Tensor], field_cfg: dict[str, Any],
            model_input: dict[str, np.ndarray], refine_cfg: dict[str, Any], seed: int, root: str, data_fp: str,
            code: str) -> dict[str, Any]:
    """One joint refinement (cached): the refined cascades, the fine-tuned colour field, the loss history."""
    rcfg = R.RefineConfig.from_dict({**refine_cfg, "seed": seed})
    key = job_key(stage="D", cfg=rcfg.to_dict(), field=field_cfg, colour=_digest(colour_state),
                  mesh=[_digest({"v": _t(v), "f": _t(f)}) for v, f in cascades], data=data_fp, code=code)

    def fit(ckpt) -> dict[str, Any]:
        t0 = time.perf_counter()
        scene = D.from_arrays(model_input)
        field = colour_field(field_cfg, colour_state)
        res = R.refine(cascades, field, scene, rcfg, checkpoint_path=ckpt.directory / "resume.pt", progress=False,
                       keep_final_checkpoint=False)
        return {"cascades": res.cascades, "colour_state": _state(res.colour_field), "history": res.history,
                "seconds": time.perf_counter() - t0}

    def to_cache(o: dict[str, Any]) -> dict[str, Any]:
        keys = sorted({k for h in o["history"] for k in h})
        return {"cascades": _cascades_to_cache(o["cascades"]), "colour_state": o["colour_state"],
                "history": {k: torch.tensor([float(h.get(k, np.nan)) for h in o["history"]], dtype=torch.float64)
                            for k in keys},
                "seconds": torch.tensor(float(o["seconds"]), dtype=torch.float64)}

    def from_cache(c: dict[str, Any]) -> dict[str, Any]:
        keys = list(c["history"])
        n = len(c["history"][keys[0]]) if keys else 0
        return {"cascades": _cascades_from_cache(c["cascades"]), "colour_state": c["colour_state"],
                "history": [{k: float(c["history"][k][i]) for k in keys} for i in range(n)],
                "seconds": float(c["seconds"])}

    out, cached = cached_job(root, f"stage_d_{run['name']}", key, fit, to_cache=to_cache, from_cache=from_cache)
    return {**out, "before": cascades, "cached": cached}


# ------------------------------------------------------------------------------------------- evaluation rows
def evaluation_rows(models: dict[str, Any], evaluate: dict[str, Any]) -> list[dict[str, Any]]:
    """What evaluate writes and renders: every stage-D run textured; the LTM mesh with vertex colours; BakedSDF-lite
    (the full stage-B mesh, stage-A colours per vertex) and the same mesh textured; with
    ``ltm.train.neural_stage_a`` also LTM and BakedSDF-lite from that stage A (rows ending in ``_neural``). Each row names the colour field it is shaded with."""
    rows = []
    stage_a = {"field_cfg": models["field_cfg"], "colour_state": models["colour_state_a"]}
    for name, run in models["runs"].items():
        rows.append({"name": name, "appearance": "texture", "cascades": run["cascades"], "before": run["before"],
                     "budget": run["run"]["budget"], "field_cfg": run["field_cfg"],
                     "colour_state": run["colour_state"]})
    ltm = models["runs"]["ltm"]
    rows.append({"name": "vertex_colour", "appearance": "vertex", "cascades": ltm["cascades"],
                 "before": ltm["before"], "budget": ltm["run"]["budget"], "field_cfg": ltm["field_cfg"],
                 "colour_state": ltm["colour_state"]})
    rows.append({"name": "bakedsdf_lite", "appearance": "vertex", "cascades": models["full"], "before": None,
                 "budget": None, **stage_a})
    if evaluate.get("bakedsdf_lite_textured", True):
        rows.append({"name": "bakedsdf_lite_tex", "appearance": "texture", "cascades": models["full"],
                     "before": None, "budget": None, **stage_a})
    second = models.get("neural")
    if second:
        run = second["ltm"]
        rows.append({"name": run["run"]["name"], "appearance": "texture", "cascades": run["cascades"],
                     "before": run["before"], "budget": run["run"]["budget"], "field_cfg": run["field_cfg"],
                     "colour_state": run["colour_state"]})
        rows.append({"name": "bakedsdf_lite_neural", "appearance": "vertex", "cascades": second["full"],
                     "before": None, "budget": None, "field_cfg": second["field_cfg"],
                     "colour_state": second["colour_state_a"]})
    return rows


def render_fields(cfg: dict[str, Any], sdf_state: dict[str, torch.Tensor], colour_state: dict[str, torch.Tensor],
                  scene) -> list[np.ndarray]:
    """The test views volume rendered from the stage-A fields (float in [0, 1])."""
    sdf = sdf_field(cfg, sdf_state, scene.root)
    colour = colour_field(cfg, colour_state)
    fcfg = F.FieldConfig.from_dict(cfg)
    return [np.clip(F.render_view(sdf, colour, scene.cameras, int(i), fcfg)["rgb"], 0.0, 1.0) for i in scene.test_ids]


def export_textured(folder: Path, cascades: Cascades, field: torch.nn.Module, evaluate: dict[str, Any]) -> dict:
    """Stage E: xatlas, bake (texture size per cascade), the viewer's files; returns the footprint."""
    sizes = [int(s) for s in evaluate["texture_size"]]
    fn = F.colour_numpy(field)
    tcs = []
    for c, (v, f) in enumerate(cascades):
        size = sizes[min(c, len(sizes) - 1)]
        atlas = M.uv_atlas(v, f, texture_size=size, padding=int(evaluate.get("padding", 2)))
        baked = M.bake_textures(v, f, atlas, fn, size, ssaa=int(evaluate.get("ssaa", 2)),
                                gutter=int(evaluate.get("gutter", 8)), array="torch")
        tcs.append(M.textured_cascade(v, f, atlas, baked))
    M.export_viewer(folder, tcs, field.viewer_weights(), jpeg_quality=int(evaluate.get("jpeg_quality", 95)))
    return M.footprint(folder).as_dict()


def render_textured(folder: Path, scene) -> list[np.ndarray]:
    """The test views rendered from the exported files, as the viewer shades them (float in [0, 1])."""
    asset = M.load_viewer(folder)
    cams = scene.cameras
    out = []
    for i in scene.test_ids:
        img = M.render_viewer(asset, M.camera_mvp(cams, int(i)), cams.centers[int(i)], int(cams.height[i]),
                              int(cams.width[i]), background=0.0)
        out.append(img.numpy())
    return out


def export_vertex(folder: Path, cascades: Cascades, field: torch.nn.Module) -> dict:
    """The per-vertex asset (BakedSDF's appearance storage): positions, faces, 6 bytes of features per vertex,
    the shading MLP."""
    feats = [R.vertex_features(v, field) for v, _ in cascades]
    R.write_vertex_colour_asset(folder, [(v, f, q) for (v, f), q in zip(cascades, feats, strict=True)],
                                field.viewer_weights())
    n_f = sum(len(f) for _, f in cascades)
    n_v = sum(len(v) for v, _ in cascades)
    return {"disk_bytes": int(R.vertex_colour_bytes(folder)), "triangles": int(n_f), "vertices": int(n_v)}


def render_vertex(folder: Path, cascades: Cascades, field: torch.nn.Module, scene) -> list[np.ndarray]:
    asset = R.read_vertex_colour_asset(folder)
    return [R.render_vertex_colour_asset(asset, scene.cameras, int(i)).numpy() for i in scene.test_ids]


def render_model(cascades: Cascades, field: torch.nn.Module, scene) -> list[np.ndarray]:
    """The trained model itself (colour field queried per pixel), for the export-fidelity check."""
    with torch.no_grad():
        return [R.render_model(cascades, field, scene.cameras, int(i)).numpy() for i in scene.test_ids]


# ------------------------------------------------------------------------------------------- geometry
def geometry_metrics(cascades: Cascades, before: Cascades | None, scene, evaluate: dict[str, Any]) -> dict:
    """Chamfer-L1 and normal consistency of the inner cascade against the ground-truth surface samples (where the
    scene has them), and the refinement diagnostics (mean dihedral deviation, faces flipped by refinement)."""
    out: dict[str, Any] = {}
    v, f = cascades[0]
    vt, ft = _t(np.asarray(v, dtype=np.float32)), _t(np.asarray(f, dtype=np.int64))
    out["dihedral"] = float(R.mean_dihedral_deviation(vt, ft))
    if before is not None:
        out["flipped"] = float(sum(int(R.flipped_faces(_t(b[0]), _t(a[0]), _t(a[1])))
                                   for b, a in zip(before, cascades, strict=True)))
    if scene.gt_surface_points is not None:
        out.update(chamfer(v, f, scene.gt_surface_points, scene.gt_surface_normals,
                           n=int(evaluate.get("chamfer_samples", 100_000)),
                           extent=float(evaluate.get("chamfer_extent", 0.9)), seed=0))
    return out


def chamfer(vertices: np.ndarray, faces: np.ndarray, gt_points: np.ndarray, gt_normals: np.ndarray | None, *,
            n: int, extent: float, seed: int = 0) -> dict[str, float]:
    """Chamfer-L1 (mean of the two directed mean nearest-neighbour distances) and normal consistency (mean |cos|
    between a sample's normal and its nearest neighbour's, both directions) within |x|inf <= extent."""
    import trimesh
    from scipy.spatial import cKDTree

    mesh = trimesh.Trimesh(vertices=np.asarray(vertices, dtype=np.float64), faces=np.asarray(faces), process=False)
    pts, fid = trimesh.sample.sample_surface(mesh, n, seed=seed)
    nrm = mesh.face_normals[fid]
    keep = np.abs(pts).max(1) <= extent
    pts, nrm = pts[keep], nrm[keep]
    gk = np.abs(gt_points).max(1) <= extent
    gp = gt_points[gk].astype(np.float64)
    d1, i1 = cKDTree(gp).query(pts)
    d2, i2 = cKDTree(pts).query(gp)
    out = {"chamfer": float(0.5 * (d1.mean() + d2.mean()))}
    if gt_normals is not None:
        gn = gt_normals[gk].astype(np.float64)
        out["normal_consistency"] = float(0.5 * (np.abs((nrm * gn[i1]).sum(1)).mean()
                                                 + np.abs((gn * nrm[i2]).sum(1)).mean()))
    return out
