"""OmniLocalRF's five phases as Kedro nodes (arguments in, values out; the catalog does the I/O).

ingest      -> the scene folders in the released layout: the embedded 360 street (dynamic video + static-only twin,
               priors in depth/ and flow_ds/, traj.csv, gt/) written by `data.write_street`, or pointers to a real
               scene; a manifest of the frames
preprocess  -> every array the runs and the evaluation read, through the one validating loader `data.load_dataset`
train       -> one cached, resumable job per run (full model, LocalRF equivalent, the ablations of Table 4, the
               w/ pose and static-only rows), two at a time on the two cores
evaluate    -> per run: the test frames rendered (static branch) against the static ground truth (PSNR, PSNR_WS,
               SSIM, SSIM_WS, and PSNR on the true dynamic pixels), pose errors after Sim(3) alignment, the learned
               mask against the true dynamic mask; one table row per cell
report      -> tables, claims, figures (report.py)

Training reads images, priors and traj.csv (w/ pose rows only); gt/ (static frames, dynamic masks, poses) is read by
evaluate alone.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cvpr24.core.ingest import dispatch, missing_dataset
from cvpr24.core.metrics import lpips_available
from cvpr24.core.provenance import fingerprint_arrays, fingerprint_files
from cvpr24.core.reporting import TableRows
from cvpr24.core.tracking import log_history_to_active_run
from cvpr24.core.training import cached_job, job_key
from cvpr24.core.validation import DataValidationError
from cvpr24.pipelines.omnilocalrf import data as D
from cvpr24.pipelines.omnilocalrf import metrics as MT
from cvpr24.pipelines.omnilocalrf.trainer import TrainConfig, TrainedModel, Trainer, scene_tensors

log = logging.getLogger(__name__)
PACKAGE = Path(__file__).resolve().parent
REAL_FIX = ("see pipelines/omnilocalrf/README.md (Real data): point omnilocalrf.data.real.root at a scene folder "
            "in the released layout (images/, depth/, flow_ds/, optional masks/, traj.csv)")
VARIANTS = ("on", "off")
TRAIN_KEYS = ("images", "invdepth", "fwd_flow", "fwd_valid", "bwd_flow", "bwd_valid", "test", "masks", "w2c")


# ------------------------------------------------------------------------------------------- ingest
def _manifest(folder: Path, variant: str, test_every: int, frame_step: int = 1) -> pd.DataFrame:
    d = D.load_dataset(folder, frame_step=frame_step, test_frame_every=test_every, load_depth=False,
                       load_flow=False, load_gt=False)
    return pd.DataFrame({"variant": variant, "sample_id": d.stems, "test": d.test,
                         "mean": d.images.reshape(len(d.stems), -1).mean(1).astype(np.float64)})


def ingest(data: dict[str, Any], runtime: dict[str, Any]):
    """The scene folders and a manifest (one row per frame and variant), validated before anything is trained."""
    seed = int(runtime["seed"])
    test_every = int(data.get("test_frame_every", 10))

    def embedded():
        scene = D.generate_street(seed=seed, **dict(data.get("street") or {}))
        write = {"seed": seed, "test_frame_every": test_every, **dict(data.get("priors") or {})}
        return {"scene": scene, "write": write}

    def real():
        real_cfg = dict(data["real"])
        root = Path(str(real_cfg["root"]))
        if not root.is_dir():
            raise missing_dataset("OmniLocalRF scene folder", root, REAL_FIX)
        static = real_cfg.get("static_root")
        return {"pointer": {"on": str(root), "off": None if not static else str(static), "kind": "real",
                            "frame_step": int(real_cfg.get("frame_step", 1))}}

    raw, _fix = dispatch(data, slug="omnilocalrf", embedded=embedded, real=real, real_fix=REAL_FIX)
    return raw


def manifest(raw_scene: dict[str, Any], data: dict[str, Any]) -> pd.DataFrame:
    """Read back what ingest wrote (the folder dataset resolves the paths): one row per frame and variant."""
    test_every = int(data.get("test_frame_every", 10))
    step = int(raw_scene.get("frame_step", 1))
    parts = [_manifest(Path(raw_scene[v]), v, test_every, step) for v in VARIANTS if raw_scene.get(v)]
    out = pd.concat(parts, ignore_index=True)
    if out.empty:
        raise DataValidationError(f"{raw_scene.get('on')}: the scene has no frames: {REAL_FIX}")
    return out


# --------------------------------------------------------------------------------------- preprocess
def preprocess(raw_scene: dict[str, Any], manifest: pd.DataFrame, data: dict[str, Any]) -> dict[str, np.ndarray]:
    """Both variants through the one validating loader (priors present and matching the frames, 2:1 frames, a
    trajectory with one pose per image); arrays prefixed ``on_`` / ``off_``. The manifest must name the same frames
    (a folder changed since ingest is refused)."""
    test_every = int(data.get("test_frame_every", 10))
    step = int(raw_scene.get("frame_step", 1))
    out: dict[str, np.ndarray] = {}
    for v in VARIANTS:
        if not raw_scene.get(v):
            continue
        d = D.load_dataset(raw_scene[v], frame_step=step, test_frame_every=test_every)
        want = list(manifest.loc[manifest["variant"] == v, "sample_id"])
        if d.stems != want:
            raise DataValidationError(f"{raw_scene[v]}: the frames differ from the ingest manifest; re-run "
                                      "`kedro run --pipeline=omnilocalrf --tags=ingest`")
        for name, arr in (("images", d.images), ("invdepth", d.invdepth), ("fwd_flow", d.fwd_flow),
                          ("fwd_valid", d.fwd_valid), ("bwd_flow", d.bwd_flow), ("bwd_valid", d.bwd_valid),
                          ("test", d.test)):
            if arr is not None and not np.all(np.isfinite(arr)):
                raise DataValidationError(f"{raw_scene[v]}: {name} holds NaN or inf values; re-run the "
                                          f"preprocessing that wrote it ({REAL_FIX})")
            out[f"{v}_{name}"] = np.asarray(arr)
        h, w = d.hw
        out[f"{v}_masks"] = d.masks if d.masks is not None else np.ones((d.n_frames, h, w), bool)
        out[f"{v}_w2c"] = d.w2c if d.w2c is not None else np.full((d.n_frames, 4, 4), np.nan)
        out[f"{v}_stems"] = np.asarray(d.stems)
        eval_mask = np.zeros((d.n_frames, h, w), bool)
        for k, mk in d.eval_masks.items():
            eval_mask[k] = mk
        out[f"{v}_eval_masks"] = eval_mask
        if d.gt is not None:
            out[f"{v}_gt_static"] = d.gt.static
            out[f"{v}_gt_dyn_ids"] = d.gt.dyn_ids
            out[f"{v}_gt_c2w"] = d.gt.c2w
    return out


def _train_arrays(model_input: dict[str, np.ndarray], variant: str) -> dict[str, np.ndarray]:
    if f"{variant}_images" not in model_input:
        raise DataValidationError(f"the '{variant}' video is missing (a run asks for it): the static-only twin "
                                  "exists for the embedded street, or set omnilocalrf.data.real.static_root")
    return {k: model_input[f"{variant}_{k}"] for k in TRAIN_KEYS}


def _tensors(arrays: dict[str, np.ndarray], use_traj: bool):
    w2c = arrays["w2c"] if use_traj and np.all(np.isfinite(arrays["w2c"])) else None
    if use_traj and w2c is None:
        raise DataValidationError("a w/ pose run needs traj.csv in the scene folder (one world-to-camera pose per "
                                  "image); see pipelines/omnilocalrf/README.md")
    return scene_tensors(arrays["images"], arrays["invdepth"], arrays["fwd_flow"], arrays["fwd_valid"],
                         arrays["bwd_flow"], arrays["bwd_valid"], arrays["test"], arrays["masks"], w2c)


# -------------------------------------------------------------------------------------------- train
def code_fingerprint() -> str:
    files = [PACKAGE / f for f in ("trainer.py", "tensorf.py", "camera.py", "motion.py", "losses.py", "poses.py",
                                   "bidirectional.py")]
    files += [PACKAGE.parent.parent / "core" / f for f in ("training.py", "geometry.py")]
    return fingerprint_files(files)


def plan_runs(train: dict[str, Any]) -> list[dict[str, Any]]:
    """[{name, variant, cfg}] from ``train.model`` (shared) and ``train.runs`` (each run's overrides; Kedro merges a
    profile's run list into the base one, so a profile drops a run with ``name: null``)."""
    base = dict(train.get("model") or {})
    runs = []
    for name, over in dict(train["runs"]).items():
        if over is None:  # a profile drops a run of the base list with `name: null`
            continue
        over = dict(over)
        variant = str(over.pop("variant", "on"))
        if variant not in VARIANTS:
            raise ValueError(f"omnilocalrf.train.runs.{name}.variant must be 'on' or 'off', got {variant!r}")
        cfg = {**base, **over}
        if "weights" in base and "weights" in over:
            cfg["weights"] = {**base["weights"], **over["weights"]}
        TrainConfig.from_dict(cfg)  # unknown keys fail here, before any training
        runs.append({"name": name, "variant": variant, "cfg": cfg})
    return runs


def run_job(name: str, variant: str, cfg: dict[str, Any], arrays: dict[str, np.ndarray], seed: int, root: str,
            data_fp: str, code: str, progress: bool = True) -> dict[str, Any]:
    """One run, cached by its parameters, seed, data and code; resumable from its checkpoints."""
    torch.use_deterministic_algorithms(True, warn_only=True)
    tcfg = TrainConfig.from_dict({**cfg, "seed": int(cfg.get("seed", 20240314)) + seed})
    key = job_key(run="omnilocalrf", cfg=tcfg.to_dict(), data=data_fp, code=code)

    def fit(ckpt) -> dict[str, Any]:
        t0 = time.perf_counter()
        trainer = Trainer(_tensors(arrays, tcfg.with_preprocessed_poses), tcfg)
        trainer.run(checkpointer=ckpt, progress=progress, desc=f"omnilocalrf {name}")
        hist = trainer.history
        keys = sorted({k for h in hist for k in h})
        return {"export": trainer.export(), "seconds": torch.tensor(time.perf_counter() - t0, dtype=torch.float64),
                "history": {k: torch.tensor([float(h.get(k, np.nan)) for h in hist], dtype=torch.float64)
                            for k in keys}}

    out, cached = cached_job(Path(root), f"run_{name}", key, fit)
    hist = out["history"]
    keys = list(hist)
    n = len(hist[keys[0]]) if keys else 0
    history = [{"run": name, **{k: float(hist[k][i]) for k in keys}} for i in range(n)]
    return {"name": name, "variant": variant, "export": out["export"], "seconds": float(out["seconds"]),
            "cached": cached, "history": history}


def train(model_input: dict[str, np.ndarray], train: dict[str, Any], runtime: dict[str, Any]):
    """Every run of ``train.runs``. Returns the trained states, a per-run log and the loss history."""
    from cvpr24.core.parallel import map_jobs

    progress = bool(runtime.get("progress", True))
    threads = int(runtime.get("threads", 2))
    torch.set_num_threads(threads)
    seed = int(runtime["seed"])
    ckpt = Path(str(train["checkpoint_dir"]))
    ckpt.mkdir(parents=True, exist_ok=True)
    code = code_fingerprint()
    jobs = []
    for run in plan_runs(train):
        arrays = _train_arrays(model_input, run["variant"])
        fp = fingerprint_arrays({k: np.asarray(v) for k, v in arrays.items()})
        jobs.append({"name": run["name"], "variant": run["variant"], "cfg": run["cfg"], "arrays": arrays,
                     "seed": seed, "root": str(ckpt), "data_fp": fp, "code": code, "progress": progress})
    outs = map_jobs(run_job, jobs, workers=int(train.get("workers", 1)), threads=threads,
                    desc="omnilocalrf: runs", progress=progress)
    models = {o["name"]: {"variant": o["variant"], "export": o["export"]} for o in outs}
    rows, history = [], []
    for o in outs:
        rows.append({"run": o["name"], "variant": o["variant"], "seconds": o["seconds"], "cached": o["cached"],
                     "iterations": int(o["export"]["iterations"]), "rfs": len(o["export"]["grids"])})
        history += o["history"]
    hist = pd.DataFrame(history)
    for col in ("run", "step", "loss"):
        if col not in hist:
            hist[col] = np.nan
    log_history_to_active_run([{"job_id": h["run"], "step": h["step"], "loss": h["loss"]} for h in history
                               if "loss" in h], prefix="loss")
    log.info("omnilocalrf train: %s", ", ".join(f"{r['run']} {r['seconds']:.0f} s" + (" (cached)" if r["cached"]
                                                                                      else "") for r in rows))
    return models, pd.DataFrame(rows), hist


# ----------------------------------------------------------------------------------------- evaluate
def _eval_reference(model_input: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """The static ground truth of the test frames and the true dynamic ids (embedded / synthetic); for a real
    scene without gt/, the input frames with the evaluation masks (grey-filled, the paper's protocol)."""
    if "on_gt_static" in model_input:
        return model_input["on_gt_static"], model_input["on_gt_dyn_ids"]
    return model_input["on_images"], None


def evaluate(models: dict[str, Any], model_input: dict[str, np.ndarray], evaluate: dict[str, Any],
             runtime: dict[str, Any]):
    """Per run and test frame: image metrics against the static ground truth (and on its true dynamic pixels);
    per run: pose errors, mask IoU, mask entropy proxy. Returns (scores, runs, renders)."""
    torch.set_num_threads(int(runtime.get("threads", 2)))
    ref, dyn_ids = _eval_reference(model_input)
    has_gt = dyn_ids is not None
    views, runs, renders = [], [], {}
    figure_rows = list(evaluate.get("figure_rows", []))
    scenes: dict[str, Any] = {}  # one SceneTensors per video (sharpness weights computed once, not per run)
    for name, m in models.items():
        t0 = time.perf_counter()
        variant = m["variant"]
        if variant not in scenes:
            scenes[variant] = _tensors(_train_arrays(model_input, variant), False)
        scene = scenes[variant]
        model = TrainedModel(m["export"], scene)
        test_ids = np.flatnonzero(model_input[f"{variant}_test"])
        imgs = []
        for k in test_ids:
            pred = model.render(int(k))["rgb"].astype(np.float64)
            gt = ref[k].astype(np.float64) / 255.0
            mask = None if has_gt else model_input["on_eval_masks"][k]
            rec = {"row": name, "frame": int(k), **{kk: float(vv) for kk, vv in MT.image_metrics(pred, gt, mask)
                                                    .items()}}
            if has_gt:
                dyn = dyn_ids[k] > 0
                rec["dyn_psnr"] = float(MT.psnr(pred[dyn][None], gt[dyn][None])) if dyn.any() else np.nan
                rec["static_psnr"] = float(MT.psnr(pred[~dyn][None], gt[~dyn][None]))
            views.append(rec)
            imgs.append(np.clip(np.round(pred * 255), 0, 255).astype(np.uint8))
        info: dict[str, Any] = {"row": name, "variant": variant, "iterations": int(m["export"]["iterations"]),
                                "rfs": len(m["export"]["grids"])}
        gt_key = f"{variant}_gt_c2w"
        if gt_key in model_input:
            info.update(MT.pose_errors(model.c2w(), model_input[gt_key]))
        train_ids = np.flatnonzero(~model_input[f"{variant}_test"])
        if has_gt and model.cfg.use_mask_module and variant == "on":
            masks = np.stack([model.mask(int(k)) for k in train_ids])
            truth = dyn_ids[train_ids] > 0
            pred_m = masks > 0.5
            info["mask_iou"] = float((pred_m & truth).sum() / max((pred_m | truth).sum(), 1))
            ph_truth = dyn_ids[train_ids] == D.PHOTOGRAPHER_ID
            info["mask_iou_photographer"] = float((pred_m & ph_truth).sum() / max((pred_m | ph_truth).sum(), 1))
            info["mask_uncertainty"] = float(np.mean(masks * (1 - masks)))
            if name in figure_rows:
                renders[f"mask_{name}"] = np.clip(np.round(masks * 255), 0, 255).astype(np.uint8)
        info["eval_seconds"] = time.perf_counter() - t0
        runs.append(info)
        if name in figure_rows:
            renders[name] = np.stack(imgs)
            renders[f"c2w_{name}"] = model.c2w()
    test_on = np.flatnonzero(model_input["on_test"])
    renders["gt_static"] = ref[test_on]
    renders["input"] = model_input["on_images"][test_on]
    if has_gt:
        train_on = np.flatnonzero(~model_input["on_test"])
        renders["gt_dyn"] = ((dyn_ids[train_on] > 0) * 255).astype(np.uint8)
        renders["train_input"] = model_input["on_images"][train_on]
        renders["gt_c2w"] = model_input["on_gt_c2w"]
    return pd.DataFrame(views), pd.DataFrame(runs), renders


def per_frame(scores: pd.DataFrame, row: str, metric: str = "psnr") -> pd.Series:
    s = scores[scores["row"] == row].set_index("frame")[metric]
    return s.astype(float)


TABLE1_ROWS = {
    "Ours wo/ pose, static only": "full_static",
    "LocalRF w/ pose": "localrf_wpose",
    "Ours w/ pose": "full_wpose",
    "LocalRF wo/ pose": "localrf",
    "Ours wo/ pose": "full",
    "LocalRF wo/ pose, static only": "localrf_static",
}
TABLE1_MISSING = {
    "Mip-NeRF360, static only": "JAX code, one global NeRF trained for hours per scene; not re-run",
    "Mip-NeRF360": "JAX code, one global NeRF trained for hours per scene; not re-run",
    "EgoNeRF": "no CPU path (CUDA Yin-Yang grid); not re-run",
    "D2NeRF": "multi-GPU dynamic/static decoupling; not re-run",
    "RobustNeRF": "not re-run (its trimmed-IRLS loss on our field is a possible stand-in, not built)",
}
TABLE4_ROWS = {
    "(a) No forward step": "no_forward",
    "(b) Backward step w/o L_rgb_s^back": "no_eq7",
    "(c) No backward step": "no_backward",
    "(d) No mask module": "no_mask",
    "(e) No mask photometric supervision": "no_eq11",
    "Complete model": "full",
}
TABLE3_ROWS = {"LocalRF": "localrf", "Ours": "full", "LocalRF, static only": "localrf_static",
               "Ours, static only": "full_static"}


def table_rows(scores: pd.DataFrame, runs: pd.DataFrame, paper: dict[str, Any], train: dict[str, Any],
               runtime: dict[str, Any], manifest: pd.DataFrame) -> pd.DataFrame:
    """One row per table cell of ours: per-test-frame image metrics, per-run pose errors."""
    rows = TableRows()
    have = set(scores["row"]) if not scores.empty else set()
    r = runs.set_index("row")
    lp = lpips_available()
    lp_note = str(lp) if lp else "LPIPS is not computed for OmniLocalRF yet"
    data = "embedded street, test frames vs the static ground truth"

    def images(table: str, label: str, name: str, metrics: tuple[str, ...]) -> None:
        if name not in have:
            for key in (*metrics, "lpips"):
                rows.add(table, label, key, None, note="this run is not in the profile's run list")
            return
        for key in metrics:
            rows.add(table, label, key, per_frame(scores, name, key), over="test frames", data=data)
        rows.add(table, label, "lpips", None, note=lp_note)

    for label, name in TABLE1_ROWS.items():
        images("table_1", label, name, ("psnr", "psnr_ws", "ssim", "ssim_ws"))
    for label, why in TABLE1_MISSING.items():
        for key in ("psnr", "psnr_ws", "ssim", "ssim_ws", "lpips"):
            rows.add("table_1", label, key, None, note=why)
    for label in ("Mip-NeRF360", "EgoNeRF", "LocalRF w/ pose", "D2NeRF", "RobustNeRF", "Ours w/ pose",
                  "LocalRF wo/ pose", "Ours wo/ pose"):
        for key in ("psnr", "psnr_ws", "ssim", "ssim_ws", "lpips"):
            rows.add("table_2", label, key, None, note="the six real 360 scenes: full profile only (data not "
                                                       "embeddable, spec 3)")
    for label, name in TABLE4_ROWS.items():
        images("table_4", label, name, ("psnr", "ssim"))
    for label, name in TABLE3_ROWS.items():
        for key in ("rpe_r", "rpe_t", "ate"):
            if name in r.index and key in r.columns and not pd.isna(r.loc[name, key]):
                rows.add("table_3", label, key, float(r.loc[name, key]), over="",
                         data="embedded street, all frames, after Sim(3) alignment")
            else:
                rows.add("table_3", label, key, None, note="this run is not in the profile's run list")
    for label in ("OpenMVG", "OpenMVG, static only"):
        for key in ("rpe_r", "rpe_t", "ate"):
            rows.add("table_3", label, key, None, note="OpenMVG (SfM) is not installable here; not re-run")
    # our extra table: dynamic pixels, mask quality, run size
    for name in sorted(have):
        rows.add("table_dynamic", name, "dyn_psnr", per_frame(scores, name, "dyn_psnr"), over="test frames",
                 data="PSNR on the true dynamic pixels of the test frames")
        rows.add("table_dynamic", name, "static_psnr", per_frame(scores, name, "static_psnr"), over="test frames",
                 data="PSNR on the static pixels of the test frames")
        for key in ("mask_iou", "mask_iou_photographer"):
            val = r.loc[name, key] if key in r.columns else np.nan
            rows.add("table_dynamic", name, key, None if pd.isna(val) else float(val), over="",
                     note="" if not pd.isna(val) else "no mask module in this run")
        rows.add("table_dynamic", name, "rfs", float(r.loc[name, "rfs"]), over="")
    fp = fingerprint_arrays({"names": manifest["sample_id"].to_numpy().astype(str),
                             "means": manifest["mean"].to_numpy(dtype=np.float64)})
    return rows.frame(profile=runtime["profile"], data_fingerprint=fp,
                      params={"runs": ",".join(dict(train["runs"])), "model": dict(train.get("model") or {})})
