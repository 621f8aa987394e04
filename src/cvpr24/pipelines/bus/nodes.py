"""BUS's five phases as pure Kedro nodes (arguments in, values out; the catalog does all I/O).

ingest      -> images + Cityscapes label-id maps of three splits (embedded OpenStreets, or GTA5/SYNTHIA +
               Cityscapes), and a validated manifest
preprocess  -> the open-set label conversion (source: private -> 255; target eval: private -> 13), label-free
               masks (superpixels) of the target train images, the hidden target-train labels (kept apart:
               used by one claim's measurement only, never by training), and the job plan
train       -> one source-only network per seed, then every self-training variant from it
evaluate    -> per run: the 14x14 confusion matrix over the target val set, per-class IoU, Common, Private,
               H-Score, the private boundary F-score, small-object IoU, pseudo-label accuracy; the
               threshold sweep; one row per paper-table cell
report      -> the claims' measurements and the figures; core renders tables, claims, README, metrics.json

The train phase's job cache (`train.checkpoint_dir`) is the one deliberate side effect: checkpoints that
let a killed run resume, keyed by code, parameters and data so they can never serve a stale result.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
import torch

from cvpr24.core.ingest import dispatch
from cvpr24.core.parallel import map_jobs
from cvpr24.core.provenance import fingerprint_arrays
from cvpr24.core.reporting import TableRows
from cvpr24.core.safety import load_weights
from cvpr24.core.seeding import derive_seed
from cvpr24.core.tracking import log_history_to_active_run
from cvpr24.core.validation import array_stats, validate_manifest
from cvpr24.pipelines.bus import data as D
from cvpr24.pipelines.bus import expectations as E
from cvpr24.pipelines.bus import method as Me
from cvpr24.pipelines.bus import metrics as Mt
from cvpr24.pipelines.bus import model as M
from cvpr24.pipelines.bus.labels import (
    CLASS_NAMES,
    IGNORE_ID,
    NUM_CLASSES,
    PRIVATE_ID,
    SOURCE_LUT,
    TARGET_LUT,
)

log = logging.getLogger(__name__)

REAL_FIX = "see pipelines/bus/README.md (Real data) for where to get GTA5 / SYNTHIA / Cityscapes and where to put them"
SPLITS = ("source_train", "target_train", "target_val")

# the table rows: variant -> (label, kind, switches)
VARIANTS: dict[str, dict[str, Any]] = {
    "source_only": {"label": "Source only (closed set)", "kind": "pretrain"},
    "source_only_thr": {"label": "Source only + threshold", "kind": "pretrain"},
    "st_thr": {"label": "Self-training (DACS/MIC-style) + threshold", "kind": "selftrain",
               "refine": False, "decon": False, "ro": False, "ap": False},
    "st_refine": {"label": "+ superpixel refinement", "kind": "selftrain",
                  "refine": True, "decon": False, "ro": False, "ap": False},
    "st_decon": {"label": "+ DECON", "kind": "selftrain", "refine": False, "decon": True, "ro": False, "ap": False},
    "st_ro": {"label": "+ resizing object (RO)", "kind": "selftrain",
              "refine": False, "decon": False, "ro": True, "ap": False},
    "st_ap": {"label": "+ attaching private (AP)", "kind": "selftrain",
              "refine": False, "decon": False, "ro": False, "ap": True},
    "bus": {"label": "BUS (superpixel refinement + RO + AP + DECON)", "kind": "selftrain",
            "refine": True, "decon": True, "ro": True, "ap": True},
}


# ------------------------------------------------------------------------------------------- ingest
def _embedded(data: dict[str, Any], seed: int) -> dict[str, list[D.Sample]]:
    out = {}
    sizes = {"source_train": data["n_source"], "target_train": data["n_target_train"], "target_val": data["n_target_val"]}
    for split, n in sizes.items():
        domain = "source" if split == "source_train" else "target"
        imgs, labs = D.generate_split(int(n), domain, derive_seed(seed, "openstreets", split), data)
        out[split] = [(f"{split}_{i:05d}", imgs[i], labs[i], f"embedded:openstreets/{split}")
                      for i in range(len(imgs))]
    return out


def _real(real: dict[str, Any]) -> dict[str, list[D.Sample]]:
    src = real["source"]
    readers = {"gta5": D.read_gta5, "synthia": D.read_synthia}
    if src["dataset"] not in readers:
        raise ValueError(f"bus.data.real.source.dataset must be one of {sorted(readers)}, got {src['dataset']!r}")
    tgt = real["target"]
    return {
        "source_train": readers[src["dataset"]](src["root"], src.get("max_images")),
        "target_train": D.read_cityscapes(tgt["root"], "train", tgt.get("max_images_train"),
                                          bool(tgt.get("use_polygons", False))),
        "target_val": D.read_cityscapes(tgt["root"], "val", tgt.get("max_images_val"),
                                        bool(tgt.get("use_polygons", False))),
    }


def _manifest(samples: dict[str, list[D.Sample]]) -> pd.DataFrame:
    rows = []
    for split, items in samples.items():
        for sid, img, lab, src in items:
            stats = array_stats(img)
            rows.append({"sample_id": sid, "split": split, "source": src, **stats,
                         "has_label": lab is not None,
                         "label_height": int(lab.shape[0]) if lab is not None else -1,
                         "label_width": int(lab.shape[1]) if lab is not None and lab.ndim >= 2 else -1,
                         "n_unknown_ids": D.n_unknown_label_ids(lab) if lab is not None else 0})
    return pd.DataFrame(rows)


def ingest(data: dict[str, Any], runtime: dict[str, Any]) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Materialise the three splits (image + Cityscapes label-id map) and validate their manifest."""
    samples, fix = dispatch(data, slug="bus", embedded=lambda: _embedded(data, int(runtime["seed"])),
                            real=lambda: _real(data["real"]), real_fix=REAL_FIX)
    manifest = _manifest(samples)
    min_n = int(data.get("min_per_split", 1))
    validate_manifest(manifest, E.raw(min_n), dataset="bus.raw_manifest", fix=fix)
    counts = manifest.groupby("split").size().reindex(list(SPLITS), fill_value=0).rename("n").reset_index()
    validate_manifest(counts, E.split_sizes(min_n), dataset="bus.raw_manifest (split sizes)", id_column="split",
                      fix=f"every split needs at least {min_n} image(s); {fix}")
    H, W = int(data["height"]), int(data["width"])
    arrays: dict[str, np.ndarray] = {}
    for split, items in samples.items():
        pairs = [(img, lab) if img.shape[:2] == (H, W) else D.resize_pair(img, lab, H, W) for _, img, lab, _ in items]
        arrays[f"{split}_images"] = np.stack([p[0] for p in pairs]).astype(np.uint8)
        arrays[f"{split}_label_ids"] = np.stack([p[1] for p in pairs]).astype(np.uint8)
        arrays[f"{split}_ids"] = np.array([sid for sid, *_ in items])
    manifest["fingerprint"] = fingerprint_arrays({k: v for k, v in arrays.items() if not k.endswith("_ids")})
    return arrays, manifest


# --------------------------------------------------------------------------------------- preprocess
def superpixels(images: np.ndarray, cfg: dict[str, Any]) -> np.ndarray:
    """Label-free masks per image (the offline stand-in for MobileSAM's automatic masks)."""
    from skimage.segmentation import felzenszwalb, slic

    method = cfg["method"]
    if method == "felzenszwalb":
        segs = [felzenszwalb(im, scale=float(cfg["scale"]), sigma=float(cfg["sigma"]), min_size=int(cfg["min_size"]))
                for im in images]
    elif method == "slic":
        segs = [slic(im, n_segments=int(cfg["n_segments"]), compactness=float(cfg["compactness"]), start_label=0)
                for im in images]
    elif method == "mobilesam":
        segs = mobilesam_masks(images, cfg.get("weights"))
    else:
        raise ValueError(f"bus.preprocess.masks.method must be 'felzenszwalb', 'slic' or 'mobilesam', got {method!r}")
    return np.stack(segs).astype(np.int32)


def mobilesam_masks(images: np.ndarray, weights: str | None) -> list[np.ndarray]:
    """MobileSAM's automatic masks as one segment map per image (larger masks first, smaller ones on top;
    uncovered pixels form one segment each image). Full profile only: needs the user's MobileSAM weights and
    the `mobile_sam` package (github.com/ChaoningZhang/MobileSAM), neither of which is installed here."""
    from pathlib import Path

    if not weights or not Path(weights).is_file():
        raise FileNotFoundError(
            f"MobileSAM weights not found at {weights!r}: download mobile_sam.pt from the MobileSAM release and put "
            "it at weights/mobile_sam.pt (or set bus.preprocess.masks.weights), or use masks.method: felzenszwalb")
    try:
        from mobile_sam import SamAutomaticMaskGenerator, sam_model_registry
    except ImportError as exc:
        raise ImportError("masks.method 'mobilesam' needs the `mobile_sam` package (pip install "
                          "git+https://github.com/ChaoningZhang/MobileSAM); it is not a dependency of this project") from exc
    sam = sam_model_registry["vit_t"]()
    sam.load_state_dict(load_weights(weights))
    generator = SamAutomaticMaskGenerator(sam.eval())
    out = []
    for im in images:
        seg = np.zeros(im.shape[:2], np.int32)
        for k, m in enumerate(sorted(generator.generate(im), key=lambda r: -r["area"]), start=1):
            seg[m["segmentation"]] = k
        out.append(seg)
    return out


def _label_manifest(split: str, ids: np.ndarray, labels: np.ndarray) -> pd.DataFrame:
    known = np.zeros(256, bool)
    known[[*range(NUM_CLASSES), IGNORE_ID]] = True
    flat = labels.reshape(len(labels), -1)
    return pd.DataFrame({
        "sample_id": ids.astype(str), "split": split, "height": labels.shape[1], "width": labels.shape[2],
        "n_bad_train_ids": (~known[flat]).sum(1),
        "n_private_in_source": (flat == PRIVATE_ID).sum(1) if split == "source_train" else 0,
        "ignore_fraction": (flat == IGNORE_ID).mean(1),
    })


def preprocess(raw: dict[str, np.ndarray], manifest: pd.DataFrame, prep: dict[str, Any], data: dict[str, Any]):
    """Open-set label conversion, superpixels of the target train images, and the job plan."""
    model_input = {
        "source_images": raw["source_train_images"],
        "source_labels": SOURCE_LUT[raw["source_train_label_ids"]],   # private -> 255 (unlabelled)
        "target_images": raw["target_train_images"],                  # unlabelled
        "target_segments": superpixels(raw["target_train_images"], prep["masks"]),
        "val_images": raw["target_val_images"],
        "val_labels": TARGET_LUT[raw["target_val_label_ids"]],        # private -> 13
    }
    hidden = {"target_train_labels": TARGET_LUT[raw["target_train_label_ids"]]}
    lab_manifest = pd.concat([
        _label_manifest("source_train", raw["source_train_ids"], model_input["source_labels"]),
        _label_manifest("target_val", raw["target_val_ids"], model_input["val_labels"]),
    ], ignore_index=True)
    fix = "check the label maps in src/cvpr24/pipelines/bus/labels.py and bus.data in conf/<env>/parameters/bus.yml"
    validate_manifest(lab_manifest, E.model_input(int(data["height"]), int(data["width"])),
                      dataset="bus.model_input", fix=fix)
    if not (model_input["val_labels"] == PRIVATE_ID).any():
        raise ValueError("bus.model_input: the target val split has no private pixels, so Private IoU and the "
                         f"H-Score are undefined; {fix}")
    jobs = plan_jobs(prep)
    validate_manifest(jobs, E.JOBS, dataset="bus.jobs", id_column="job_id", fix="check bus.preprocess.rows / seeds")
    return model_input, hidden, jobs


def plan_jobs(prep: dict[str, Any]) -> pd.DataFrame:
    """One pretrain job per seed and one self-training job per (variant, seed) of `prep['rows']`."""
    rows = list(prep["rows"])
    unknown = [r for r in rows if r not in VARIANTS]
    if unknown:
        raise ValueError(f"bus.preprocess.rows has unknown rows {unknown}; known: {list(VARIANTS)}")
    jobs = []
    for seed in prep["seeds"]:
        jobs.append({"job_id": f"pretrain_s{seed}", "kind": "pretrain", "variant": "source_only", "seed": int(seed),
                     "refine": False, "decon": False, "ro": False, "ap": False})
        for r in rows:
            v = VARIANTS[r]
            if v["kind"] == "selftrain":
                jobs.append({"job_id": f"{r}_s{seed}", "kind": "selftrain", "variant": r, "seed": int(seed),
                             **{k: bool(v[k]) for k in ("refine", "decon", "ro", "ap")}})
    return pd.DataFrame(jobs)


# -------------------------------------------------------------------------------------------- train
def _specs(jobs: pd.DataFrame, arrays, inits, train, runtime, code, threads):
    return [{"job": {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}, "arrays": arrays,
             "init": inits.get(int(row["seed"])) if inits is not None else None, "cfg": train,
             "seed": int(runtime["seed"]), "checkpoint_root": str(train["checkpoint_dir"]), "code": code,
             "threads": threads}
            for row in jobs.to_dict("records")]


def train(jobs: pd.DataFrame, model_input: dict[str, np.ndarray], train: dict[str, Any], runtime: dict[str, Any]):
    """Pretrain one source-only network per seed, then run every self-training job from its seed's network.
    Returns every network's weights (student and EMA teacher), a job log and the per-step losses."""
    code = Me.code_fingerprint()
    workers, threads = int(train["workers"]), int(runtime["threads"])
    per = max(1, threads // max(1, workers))
    src = {"src_img": model_input["source_images"], "src_lab": model_input["source_labels"]}
    progress = bool(runtime.get("progress", True))
    pre = jobs[jobs["kind"] == "pretrain"]
    results = map_jobs(Me.run_job, _specs(pre, src, None, train, runtime, code, per), workers=workers,
                       threads=threads, desc="bus: source-only pretraining", progress=progress)
    inits = {int(j["seed"]): r["student"] for j, r in zip(pre.to_dict("records"), results, strict=True)}
    st = jobs[jobs["kind"] == "selftrain"]
    full = {**src, "tgt_img": model_input["target_images"], "tgt_segments": model_input["target_segments"]}
    results += map_jobs(Me.run_job, _specs(st, full, inits, train, runtime, code, per), workers=workers,
                        threads=threads, desc="bus: self-training runs", progress=progress)
    weights: dict[str, np.ndarray] = {}
    log_rows, history = [], []
    for r in results:
        for which in ("student", "teacher"):
            for name, t in r[which].items():
                weights[f"{r['job_id']}::{which}::{name}"] = t.detach().cpu().numpy()
        log_rows.append({"job_id": r["job_id"], "seconds": float(r["seconds"]), "cached": bool(r["cached"]),
                         **{f"diag_{k}": float(v) for k, v in r.get("diag", {}).items()}})
        history += [{"job_id": r["job_id"], **h} for h in r["history"]]
    log.info("bus train: %d jobs (%d read back from the job cache)", len(results), sum(r["cached"] for r in results))
    log_history_to_active_run(history, prefix="loss")
    hist = pd.DataFrame(history)
    return weights, pd.DataFrame(log_rows), hist


# ----------------------------------------------------------------------------------------- evaluate
def load_net(weights: dict[str, np.ndarray], job_id: str, which: str, model_cfg: dict[str, Any]) -> torch.nn.Module:
    prefix = f"{job_id}::{which}::"
    state = {k[len(prefix):]: torch.from_numpy(np.asarray(v)) for k, v in weights.items() if k.startswith(prefix)}
    if not state:
        raise KeyError(f"no weights for {job_id} ({which}) in bus.models: re-run `kedro run --pipeline=bus --tags=train`")
    net = Me.build_model(model_cfg)
    net.load_state_dict(state)
    return net.eval()


@torch.no_grad()
def predict_logits(net: torch.nn.Module, images: np.ndarray, batch: int = 64) -> torch.Tensor:
    out = []
    for i in range(0, len(images), batch):
        x = Me.normalise(Me.to_input(images[i:i + batch]))
        out.append(M.full_res_logits(net, x)[0])
    return torch.cat(out)


def predictions(logits: torch.Tensor, closed_set: bool, thres: float) -> np.ndarray:
    """Closed set: softmax over the 13 common channels; `thres` >= 0 applies the test-time threshold rule."""
    probs = torch.softmax(logits[:, :PRIVATE_ID] if closed_set else logits, 1)
    return M.threshold_predictions(probs, thres).numpy().astype(np.uint8)


def _scores(gt: np.ndarray, pred: np.ndarray, ev: dict[str, Any]) -> dict[str, float]:
    out = Mt.open_set_scores(Mt.confusion_matrix(gt, pred))
    out.update(Mt.boundary_fscore(gt, pred, PRIVATE_ID, int(ev["boundary_tolerance"])))
    out["small_object_iou"] = Mt.small_object_iou(gt, pred, int(ev["small_object_pixels"]))
    return out


def evaluate(jobs: pd.DataFrame, weights: dict[str, np.ndarray], model_input: dict[str, np.ndarray],
             hidden: dict[str, np.ndarray], ev: dict[str, Any], train: dict[str, Any]):
    """Score every row on the target val set (one confusion matrix over all pixels), sweep the test-time
    threshold, and measure pseudo-label accuracy before/after refinement on target train (hidden labels)."""
    gt = model_input["val_labels"]
    which = ev["network"]
    thr = float(ev["threshold"])
    n_pl = int(ev["pseudo_label_images"])
    rows, sweep, examples = [], [], {}
    fig_ids = [int(i) for i in np.nonzero((gt == PRIVATE_ID).reshape(len(gt), -1).sum(1) >= 30)[0][: int(ev["figure_images"])]]
    examples["image"] = model_input["val_images"][fig_ids]
    examples["gt"] = gt[fig_ids]
    for job in jobs.to_dict("records"):
        net = load_net(weights, job["job_id"], "student" if job["kind"] == "pretrain" else which, train["model"])
        logits = predict_logits(net, model_input["val_images"])
        if job["kind"] == "pretrain":
            settings = [("source_only", True, -1.0), ("source_only_thr", True, thr)]
        else:
            settings = [(job["variant"], False, -1.0)]
        for variant, closed, t in settings:
            pred = predictions(logits, closed, t)
            rows.append({"variant": variant, "seed": int(job["seed"]), "job_id": job["job_id"], **_scores(gt, pred, ev)})
            if int(job["seed"]) == int(ev["figure_seed"]):
                examples[f"pred_{variant}"] = pred[fig_ids]
        if job["variant"] in ev["sweep_rows"] or job["kind"] == "pretrain":
            for t in ev["sweep_thresholds"]:
                pred = predictions(logits, job["kind"] == "pretrain", float(t))
                s = Mt.open_set_scores(Mt.confusion_matrix(gt, pred))
                sweep.append({"variant": "source_only_thr" if job["kind"] == "pretrain" else job["variant"],
                              "seed": int(job["seed"]), "threshold": float(t), "common": s["common"],
                              "private": s["private"], "h_score": s["h_score"]})
        if job["kind"] == "selftrain" and n_pl > 0:
            rows[-1].update(_pseudo_label_accuracy(weights, job, model_input, hidden, train, n_pl))
    return pd.DataFrame(rows), pd.DataFrame(sweep), examples


def _pseudo_label_accuracy(weights, job, model_input, hidden, train, n: int) -> dict[str, float]:
    """Accuracy (%) of the run's final teacher's open-set pseudo-labels on `n` target train images, before and
    after label-free mask refinement. The hidden labels are used here only, after training."""
    teacher = load_net(weights, job["job_id"], "teacher", train["model"])
    st = train["selftrain"]
    probs = torch.softmax(predict_logits(teacher, model_input["target_images"][:n]), 1)
    pl, _ = M.open_set_pseudo_labels(probs, float(st["pseudo_thres"]), float(st["conf_thres"]))
    refined = M.refine_with_masks(pl, torch.from_numpy(model_input["target_segments"][:n]))
    gt = hidden["target_train_labels"][:n]
    return {"pseudo_acc_raw": Mt.pixel_accuracy(gt, pl.numpy()),
            "pseudo_acc_refined": Mt.pixel_accuracy(gt, refined.numpy())}


# --------------------------------------------------------------------------------------- table rows
def summarise(per_run: pd.DataFrame) -> pd.DataFrame:
    """Mean and std over seeds per variant (for the figures; the tables' cells come from `table_rows`)."""
    num = per_run.drop(columns=["job_id"]).groupby("variant")
    mean, std = num.mean(numeric_only=True), num.std(numeric_only=True, ddof=1)
    out = mean.add_suffix("_mean").join(std.add_suffix("_std"))
    out["n_seeds"] = num.size()
    return out


def per_seed(per_run: pd.DataFrame, variant: str, metric: str) -> pd.Series:
    """One row's metric per seed, over every seed of the run: a seed the row lacks is NaN, never dropped."""
    seeds = sorted(int(s) for s in per_run["seed"].unique())
    sub = per_run[per_run["variant"] == variant]
    col = sub.set_index("seed")[metric] if metric in sub.columns else pd.Series(dtype=float)
    return col.reindex(seeds).astype(float).rename(index=lambda s: f"seed {s}")


def table_rows(per_run: pd.DataFrame, paper: dict[str, Any], ev: dict[str, Any], train: dict[str, Any],
               runtime: dict[str, Any], manifest: pd.DataFrame, job_log: pd.DataFrame) -> pd.DataFrame:
    """Every cell of ours from its per-seed values, in core's table-rows format (mean, std, n)."""
    rows = TableRows()
    ran = set(per_run["variant"])
    for table_id, t in paper["tables"].items():
        ours_map = {**(t.get("ours_rows") or {}), **(t.get("ours_only_rows") or {})}  # + rows the paper lacks
        for name, variant in ours_map.items():
            for col in t["columns"]:
                if variant not in ran:
                    rows.add(table_id, str(name), col["key"], None,
                             note=f"row `{variant}` is not in bus.preprocess.rows of this profile")
                    continue
                rows.add(table_id, str(name), col["key"], per_seed(per_run, variant, col["key"]), over="seeds",
                         data=f"{ev['data_label']}; {VARIANTS[variant]['label']}")
    fresh = job_log[~job_log["cached"]] if (~job_log["cached"]).any() else job_log
    out = rows.frame(profile=runtime.get("profile", ""),
                      data_fingerprint=str(manifest["fingerprint"].iloc[0]) if "fingerprint" in manifest else "",
                      params={"train": {k: v for k, v in train.items() if k != "checkpoint_dir"},
                              "evaluate": {k: v for k, v in ev.items() if k != "data_label"},
                              "train_seconds_total": float(fresh["seconds"].sum())})
    # float `n`: core's table_csv tests `isinstance(n, int | float)`, which a NumPy int64 fails, and would
    # leave every `<metric>_n` of the table CSVs empty
    out["n"] = out["n"].astype(float)
    return out


__all__ = ["CLASS_NAMES", "VARIANTS", "evaluate", "ingest", "per_seed", "preprocess", "table_rows", "train"]
