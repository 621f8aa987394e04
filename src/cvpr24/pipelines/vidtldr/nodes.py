"""vid-TLDR's five phases as pure Kedro nodes (arguments in, values out; the catalog does all I/O).

ingest      -> salient-sprites clips (or Kinetics-400 / SSv2 read from disk) + a validated manifest
preprocess  -> normalisation statistics, per-token foreground labels, the plan of reduction settings
train       -> the one small video ViT, trained once without merging (checkpointed, resumable), or a
               user's pretrained checkpoint
evaluate    -> every setting training-free on the same weights: accuracy (per clip), analytic + counted
               GFLOPs, tokens per layer, CPU throughput (per timing run); the saliency scored against the
               object masks; `table_rows`: every cell of ours from its per-clip (per-run) values
report      -> see report.py

The train phase's checkpoint folder (`train.checkpoint_dir`) is the one deliberate side effect: a
`core.training.cached_job` keyed by the data, the model, the training parameters and the model code, so it
never serves a stale model.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from cvpr24.core.ingest import dispatch
from cvpr24.core.provenance import fingerprint_arrays, fingerprint_files
from cvpr24.core.reporting import TableRows
from cvpr24.core.seeding import derive_seed, torch_generator
from cvpr24.core.tracking import log_history_to_active_run
from cvpr24.core.training import TrainState, cached_job, job_key, mlflow_step_logger, train_loop
from cvpr24.core.validation import validate_manifest
from cvpr24.pipelines.vidtldr import data as D
from cvpr24.pipelines.vidtldr import expectations as E
from cvpr24.pipelines.vidtldr.model import (
    ModelConfig,
    Reduction,
    Trace,
    VideoViT,
    analytic_macs,
    cosine_lr,
    counted_macs,
    load_pretrained,
    normalise,
    state_hash,
    tokens_per_layer,
)

log = logging.getLogger(__name__)

REAL_FIX = "see pipelines/vidtldr/README.md (Real data) for where to get each dataset and where to put it"


# ------------------------------------------------------------------------------------------- ingest
def clip_manifest(x: np.ndarray, y: np.ndarray, split: str, masks: np.ndarray | None,
                  ids: list[str] | None = None, sources: list[str] | None = None) -> pd.DataFrame:
    """One row per clip, computed from the arrays (so NaN, a wrong shape or dtype is visible)."""
    n = x.shape[0]
    flat = x.reshape(n, -1)
    floating = np.issubdtype(x.dtype, np.floating)
    finite = np.isfinite(flat) if floating else np.ones_like(flat, dtype=bool)
    shape = list(x.shape[1:]) + [-1] * max(0, 4 - (x.ndim - 1))
    return pd.DataFrame({
        "sample_id": ids or [f"{split}_{i:05d}" for i in range(n)],
        "split": split, "label": y.astype(np.int64),
        "frames": shape[0], "height": shape[1], "width": shape[2], "channels": shape[3],
        "dtype": str(x.dtype),
        "n_nonfinite": (~finite).sum(axis=1).astype(np.int64),
        "min": np.where(finite, flat, np.inf).min(axis=1).astype(float),
        "max": np.where(finite, flat, -np.inf).max(axis=1).astype(float),
        "mask_fraction": masks.reshape(n, -1).mean(axis=1) if masks is not None else np.nan,
        "source": sources or f"embedded:salient-sprites/{split}",
    })


def _embedded(data: dict[str, Any], seed: int):
    arrays, parts = {}, []
    for split, n in data["splits"].items():
        def seed_of(i: int, part: str, split=split) -> int:
            return derive_seed(seed, "vidtldr", split, i, part)

        x, y, m = D.make_split(int(n), seed_of, data, clutter=(split == "clutter"))
        arrays[f"{split}_x"], arrays[f"{split}_y"], arrays[f"{split}_mask"] = x, y, m
        parts.append(clip_manifest(x, y, split, m))
    return arrays, pd.concat(parts, ignore_index=True)


def _real(data: dict[str, Any]):
    real = data["real"]  # core.ingest.dispatch raises MissingDatasetError when none is configured
    readers = {"kinetics400": D.read_kinetics, "ssv2": D.read_ssv2}
    name = str(real.get("dataset"))
    if name not in readers:
        raise ValueError(f"vidtldr.data.real.dataset must be one of {sorted(readers)}, got {name!r}")
    arrays, parts = {}, []
    for split, file_split in real["splits"].items():
        x, y, rec = readers[name](real["root"], file_split, int(data["frames"]), int(data["size"]),
                                  real.get("max_videos"))
        arrays[f"{split}_x"], arrays[f"{split}_y"] = x, y
        parts.append(clip_manifest(x, y, split, None, [r["sample_id"] for r in rec], [r["source"] for r in rec]))
    return arrays, pd.concat(parts, ignore_index=True)


def ingest(data: dict[str, Any], model: dict[str, Any], runtime: dict[str, Any]):
    """Materialise the clips (embedded generator or a real dataset) and validate their manifest."""
    (arrays, manifest), fix = dispatch(data, slug="vidtldr", embedded=lambda: _embedded(data, int(runtime["seed"])),
                                       real=lambda: _real(data), real_fix=REAL_FIX)
    real_splits = (data.get("real") or {}).get("splits") or {}
    required = ["train", "test"] if data["source"] == "embedded" or "train" in real_splits else ["test"]
    for split in required:
        if f"{split}_x" not in arrays:
            raise ValueError(f"vidtldr: no {split!r} split configured (vidtldr.data); {fix}")
    exps = E.clips(int(data["frames"]), int(data["size"]), int(model["num_classes"]), required)
    validate_manifest(manifest, exps, dataset="vidtldr.clips", fix=fix)
    manifest["fingerprint"] = fingerprint_arrays(arrays)
    return arrays, manifest


# --------------------------------------------------------------------------------------- preprocess
def schedule_name(schedule) -> str:
    s = list(schedule)
    while s and s[-1] == 0:
        s.pop()
    return "[" + ",".join(f"{v:g}" for v in s) + "]"


def plan_settings(ev: dict[str, Any], cfg: ModelConfig) -> pd.DataFrame:
    """Every reduction setting the tables need: base, vid-TLDR and ToMe sweeps, ablations and controls."""
    rows: list[dict[str, Any]] = []

    def add(sid: str, row: str, family: str, variant: str, red: Reduction, timed: bool = False) -> None:
        rows.append({"setting_id": sid, "row": row, "family": family, "variant": variant,
                     "method": red.method, "schedule": json.dumps(list(red.schedule)), "metric": red.metric,
                     "saliency": red.saliency, "background_drop": red.background_drop,
                     "prop_attn": red.prop_attn, "sort_kept": red.sort_kept, "seed": red.seed,
                     "tokens_out": tokens_per_layer(cfg, red)[-1][1], "timed": timed})

    add("base", "no merging (base)", "base", "base", Reduction(), timed=True)
    schedules = [list(s) for s in ev["vidtldr_schedules"]]
    for s in schedules:
        add(f"vidtldr_{schedule_name(s)}", f"vid-TLDR r={schedule_name(s)}", "vidtldr", "full",
            Reduction.vidtldr(s), timed=True)
    for r in ev["tome_r"]:
        add(f"tome_r{r}", f"ToMe r={r} per layer", "tome", "tome", Reduction.tome([r] * cfg.depth), timed=True)
    variants = {
        "tome_schedule": ("ToMe with vid-TLDR's schedule", "control", lambda s: Reduction.tome(s)),
        "no_saliency": ("vid-TLDR without saliency (s=1)", "ablation", lambda s: Reduction.vidtldr(s, saliency=False)),
        "no_background_drop": ("vid-TLDR without background drop and sharpening", "ablation",
                               lambda s: Reduction.vidtldr(s, background_drop=False)),
        "keys_metric": ("vid-TLDR with keys as metric", "ablation", lambda s: Reduction.vidtldr(s, metric="keys")),
        "no_prop_attn": ("vid-TLDR without proportional attention", "ablation",
                         lambda s: Reduction.vidtldr(s, prop_attn=False)),
        "random": ("random token drop", "control", lambda s: Reduction("random", tuple(s), seed=int(ev["seed"]))),
        "evit": ("EViT-style attention pruning", "control", lambda s: Reduction("evit", tuple(s))),
    }
    for i in ev["ablation_schedules"]:
        s = schedules[int(i)]
        for key in ev["ablations"]:
            label, family, make = variants[key]
            add(f"{key}_{schedule_name(s)}", f"{label} r={schedule_name(s)}", family, key, make(s))
    return pd.DataFrame(rows)


def reduction_of(row: dict[str, Any]) -> Reduction:
    return Reduction(method=row["method"], schedule=tuple(json.loads(row["schedule"])), metric=row["metric"],
                     saliency=bool(row["saliency"]), background_drop=bool(row["background_drop"]),
                     prop_attn=bool(row["prop_attn"]), sort_kept=bool(row["sort_kept"]), seed=int(row["seed"]))


def preprocess(arrays: dict[str, np.ndarray], manifest: pd.DataFrame, prep: dict[str, Any],
               model: dict[str, Any], ev: dict[str, Any]):
    """Normalisation statistics (train split), per-token foreground labels, the settings plan; validated."""
    cfg = ModelConfig(**model)
    out: dict[str, np.ndarray] = {}
    splits = [k.removesuffix("_x") for k in arrays if k.endswith("_x")]
    stats_split = "train" if "train" in splits else splits[0]
    ref = arrays[f"{stats_split}_x"].reshape(-1, 3).astype(np.float64) / 255.0
    out["mean"], out["std"] = ref.mean(axis=0).astype(np.float32), ref.std(axis=0).astype(np.float32)
    if prep.get("mean") is not None:  # a pretrained model's own normalisation (ImageNet's for VideoMAE / UMT)
        out["mean"], out["std"] = np.asarray(prep["mean"], np.float32), np.asarray(prep["std"], np.float32)
    rows = []
    for split in splits:
        x = arrays[f"{split}_x"]
        out[f"{split}_x"], out[f"{split}_y"] = x, arrays[f"{split}_y"]
        if f"{split}_mask" in arrays:
            out[f"{split}_fg"] = D.token_foreground(arrays[f"{split}_mask"], cfg.tubelet, cfg.patch)
        rows.append({"sample_id": split, "n_clips": int(x.shape[0]),
                     "n_classes_seen": int(len(np.unique(arrays[f"{split}_y"]))) if split == stats_split else 2,
                     "frames_mod": int(x.shape[1] % cfg.tubelet) + int(x.shape[1] != cfg.num_frames),
                     "side_mod": int(x.shape[2] % cfg.patch) + int(x.shape[2] != cfg.image_size),
                     "std_min": float(out["std"].min())})
    fix = ("check vidtldr.model (num_frames, image_size, tubelet, patch) against vidtldr.data in "
           "conf/<env>/parameters/vidtldr.yml")
    validate_manifest(pd.DataFrame(rows), E.model_input(cfg.tubelet, cfg.patch), dataset="vidtldr.model_input",
                      fix=fix)
    settings = plan_settings(ev, cfg)
    validate_manifest(settings, E.settings(cfg.num_tokens), dataset="vidtldr.settings", id_column="setting_id",
                      fix="check vidtldr.evaluate (schedules, tome_r, ablations) in conf/<env>/parameters/vidtldr.yml")
    return out, settings


# -------------------------------------------------------------------------------------------- train
def code_fingerprint() -> str:
    """The code a trained model depends on (the model and the training loop), for the job-cache key."""
    from pathlib import Path

    here = Path(__file__).resolve().parent
    return fingerprint_files([here / "model.py", here.parent.parent / "core" / "training.py"])


def _batches(n: int, bs: int):
    for i in range(0, n, bs):
        yield slice(i, min(n, i + bs))


def train(model_input: dict[str, np.ndarray], model: dict[str, Any], params: dict[str, Any],
          runtime: dict[str, Any]):
    """Train the video ViT once (no merging), through core.training.train_loop with checkpoints; or load a
    user's pretrained checkpoint. Returns the weights (as arrays), the loss history and a one-row log."""
    torch.set_num_threads(min(int(runtime.get("threads", 2)), int(params.get("threads", 2))))
    seed = int(runtime["seed"])
    cfg = ModelConfig(**model)
    torch.manual_seed(derive_seed(seed, "vidtldr", "init"))
    net = VideoViT(cfg)
    mean, std = model_input["mean"], model_input["std"]
    started = time.perf_counter()
    history: list[dict[str, float]] = []
    if params.get("pretrained"):
        unused = load_pretrained(net, str(params["pretrained"]))
        log.info("vidtldr: loaded pretrained weights from %s (%d unused keys)", params["pretrained"], len(unused))
        source = f"pretrained:{params['pretrained']}"
    else:
        x, y = torch.from_numpy(model_input["train_x"]), torch.from_numpy(model_input["train_y"])
        n, bs = x.shape[0], int(params["batch_size"])
        per_epoch = max(1, n // bs)
        steps = int(params["epochs"]) * per_epoch
        opt = torch.optim.AdamW(net.parameters(), lr=float(params["lr"]), weight_decay=float(params["weight_decay"]))
        warm = int(round(float(params["warmup_epochs"]) * per_epoch))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_lr(s, steps, warm))
        gen = torch_generator(derive_seed(seed, "vidtldr", "batches"))
        smoothing, hflip = float(params["label_smoothing"]), bool(params["hflip"])

        def step_fn(step: int) -> dict[str, float]:
            idx = torch.randint(0, n, (bs,), generator=gen)
            xb = normalise(x[idx], mean, std)
            if hflip:  # a horizontal flip keeps both the shape class and the motion type
                flip = torch.rand(bs, generator=gen) < 0.5
                xb = torch.where(flip[:, None, None, None, None], xb.flip(-1), xb)
            loss = F.cross_entropy(net(xb), y[idx], label_smoothing=smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            return {"loss": float(loss.detach())}

        def fit(ckpt) -> dict[str, Any]:
            net.train()
            hist = train_loop(model=net, optimizer=opt, scheduler=sched, step_fn=step_fn, n_steps=steps,
                              state=TrainState(generators={"batches": gen}), checkpointer=ckpt,
                              every=int(params["checkpoint_every"]), log_every=int(params.get("log_every", 10)),
                              log_fn=mlflow_step_logger("vidtldr/train"), desc="vidtldr train",
                              progress=bool(runtime.get("progress", True)))
            if mlflow_step_logger("x") is None:
                log_history_to_active_run([{"job_id": "vidtldr", **h} for h in hist])
            return {"model": net.state_dict(), "history": hist}

        key = job_key(job={"n": n, "model": model, "train": {k: v for k, v in params.items() if k not in
                                                               ("checkpoint_dir", "checkpoint_every", "threads")}},
                      seed=seed, code=code_fingerprint(),
                      data=fingerprint_arrays({"x": model_input["train_x"][:64], "y": model_input["train_y"]}))
        out, cached = cached_job(params["checkpoint_dir"], "video_vit", key, fit)
        net.load_state_dict(out["model"])
        history = list(out["history"])
        if cached:
            log.info("vidtldr: read the trained model back from %s/video_vit-%s", params["checkpoint_dir"], key)
        source = "trained here (embedded)" if "train_fg" in model_input else "trained here (real data)"
    net.eval()
    val = {}
    for split in ("val", "test"):
        if f"{split}_x" in model_input:
            val[f"{split}_acc"] = accuracy(net, model_input[f"{split}_x"], model_input[f"{split}_y"], Reduction(),
                                           mean, std, 128)
    weights = {k: v.detach().numpy().copy() for k, v in net.state_dict().items()}
    train_log = pd.DataFrame([{"source": source, "seconds": time.perf_counter() - started,
                               "steps": len(history) and history[-1]["step"] + 1, **val}])
    return weights, pd.DataFrame(history, columns=["step", "loss"]), train_log


# ----------------------------------------------------------------------------------------- evaluate
def build_model(model: dict[str, Any], weights: dict[str, np.ndarray]) -> VideoViT:
    net = VideoViT(ModelConfig(**model))
    net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in weights.items()})
    return net.eval()


@torch.no_grad()
def predict(net: VideoViT, x: np.ndarray, red: Reduction, mean, std, bs: int) -> np.ndarray:
    gen = torch.Generator().manual_seed(red.seed) if red.method == "random" else None
    out = [net(normalise(torch.from_numpy(x[s]), mean, std), red, generator=gen).argmax(-1).numpy()
           for s in _batches(x.shape[0], bs)]
    return np.concatenate(out)


def accuracy(net, x, y, red, mean, std, bs) -> float:
    return float(100.0 * (predict(net, x, red, mean, std, bs) == y).mean())


def per_clip_auroc(score: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """AUROC of `score` for `positive` per row (clips with both classes; NaN otherwise). Ties count half."""
    from scipy.stats import rankdata

    ranks = rankdata(score, axis=1)
    npos = positive.sum(axis=1)
    nneg = positive.shape[1] - npos
    auc = (np.where(positive, ranks, 0).sum(axis=1) - npos * (npos + 1) / 2) / np.maximum(npos * nneg, 1)
    return np.where((npos > 0) & (nneg > 0), auc, np.nan)


@torch.no_grad()
def saliency_stats(net, x, fg, mean, std, threshold: float, bs: int) -> tuple[dict[str, float], np.ndarray]:
    """Layer-0 attention sharpness against the per-token object labels (spec V2)."""
    scores = []
    for s in _batches(x.shape[0], bs):
        tr = Trace()
        net(normalise(torch.from_numpy(x[s]), mean, std), Reduction(), trace=tr)
        scores.append(tr.sharpness0[..., 0].numpy())
    score = np.concatenate(scores)
    pos = fg >= threshold
    auc = per_clip_auroc(score, pos)
    defined = np.isfinite(auc)  # clips with both object and background tokens
    zeroed = score < score.mean(axis=1, keepdims=True)  # the tokens vid-TLDR's background drop zeroes
    fg_all = float(pos.mean())
    fg_zeroed = float(pos[zeroed].mean()) if zeroed.any() else float("nan")
    top = np.argsort(-score, axis=1)[:, : max(1, int(round(pos.sum(axis=1).mean())))]
    precision = float(np.take_along_axis(pos, top, axis=1).mean())
    return {"auroc": float(auc[defined].mean()) if defined.any() else float("nan"), "auroc_clips": int(defined.sum()),
            "fg_fraction": fg_all, "fg_fraction_zeroed": fg_zeroed,
            "zeroed_fg_ratio": fg_zeroed / fg_all if fg_all > 0 else float("nan"),
            "zeroed_fraction": float(zeroed.mean()), "topk_precision": precision}, score


def throughput(net, x: np.ndarray, settings: pd.DataFrame, mean, std, tm: dict[str, Any]) -> dict[str, list[float]]:
    """Clips per second of each timed setting in each of `iters` rounds (after `warmup` rounds); every round
    runs all settings interleaved, so a load change on the machine hits every setting alike."""
    batch = normalise(torch.from_numpy(x[: int(tm["batch"])]), mean, std)
    reds = {r["setting_id"]: reduction_of(r) for r in settings.to_dict("records") if r["timed"]}
    times: dict[str, list[float]] = {k: [] for k in reds}
    with torch.no_grad():
        for it in tqdm(range(int(tm["warmup"]) + int(tm["iters"])), desc="vidtldr throughput", leave=False):
            for sid, red in reds.items():
                t0 = time.perf_counter()
                net(batch, red)
                if it >= int(tm["warmup"]):
                    times[sid].append(time.perf_counter() - t0)
    return {sid: [batch.shape[0] / t for t in ts] for sid, ts in times.items()}


def evaluate(model_input: dict[str, np.ndarray], weights: dict[str, np.ndarray], settings: pd.DataFrame,
             model: dict[str, Any], ev: dict[str, Any], prep: dict[str, Any], runtime: dict[str, Any]):
    """Every reduction setting on the same weights, training-free. Returns (sweep, saliency, example, per_clip):
    per_clip holds whether each test (clutter) clip is classified right under each setting."""
    torch.set_num_threads(min(int(runtime.get("threads", 2)), int(ev.get("threads", 2))))
    cfg = ModelConfig(**model)
    net = build_model(model, weights)
    mean, std, bs = model_input["mean"], model_input["std"], int(ev["batch_size"])
    before = state_hash(net)
    splits = [s for s in ("test", "clutter") if f"{s}_x" in model_input]
    one = normalise(torch.from_numpy(model_input["test_x"][:1]), mean, std)
    rows, per_clip = [], []
    for rec in tqdm(settings.to_dict("records"), desc="vidtldr settings", leave=False):
        red = reduction_of(rec)
        row = {**rec, "gflops": analytic_macs(cfg, red) / 1e9, "gflops_counted": counted_macs(net, one, red) / 1e9,
               "tokens_per_layer": json.dumps([n for n, _ in tokens_per_layer(cfg, red)])}
        for split in splits:
            y = model_input[f"{split}_y"]
            correct = predict(net, model_input[f"{split}_x"], red, mean, std, bs) == y
            row[f"acc_{split}"] = float(100.0 * correct.mean())
            per_clip.append(pd.DataFrame({"setting_id": rec["setting_id"], "split": split, "clip": np.arange(len(y)),
                                          "label": y, "correct": correct}))
        rows.append(row)
    sweep = pd.DataFrame(rows)
    base = sweep[sweep["setting_id"] == "base"].iloc[0]
    sweep["gflops_rel"] = 100.0 * sweep["gflops"] / base["gflops"]
    tput = throughput(net, model_input["test_x"], settings, mean, std, ev["timing"])
    sweep["throughput_runs"] = sweep["setting_id"].map(lambda sid: json.dumps(tput.get(sid, [])))
    sweep["throughput_clips_per_seconds"] = sweep["setting_id"].map(
        lambda sid: float(np.median(tput[sid])) if sid in tput else float("nan"))
    sweep["walltime_speedup"] = sweep["throughput_clips_per_seconds"] / float(np.median(tput["base"]))
    after = state_hash(net)
    sweep["weights_hash_before"], sweep["weights_hash_after"] = before, after
    # saliency against the object masks, and one example clip for the figure
    stats: dict[str, Any] = {"auroc": float("nan")}
    example: dict[str, np.ndarray] = {}
    if "test_fg" in model_input:
        stats, _ = saliency_stats(net, model_input["test_x"], model_input["test_fg"], mean, std,
                                  float(prep["foreground_threshold"]), bs)
        example = _example(net, model_input, ev, mean, std)
    stats["weights_unchanged"] = bool(before == after)
    return sweep, pd.DataFrame([stats]), example, pd.concat(per_clip, ignore_index=True)


@torch.no_grad()
def _example(net: VideoViT, mi: dict[str, np.ndarray], ev: dict[str, Any], mean, std) -> dict[str, np.ndarray]:
    """One test clip with its layer-0 sharpness, vid-TLDR saliency and the merged token groups."""
    idx = int(ev.get("example_index", 0))
    x = mi["test_x"][idx: idx + 1]
    tr = Trace()
    red = Reduction.vidtldr(ev["main_schedule"])
    logits = net(normalise(torch.from_numpy(x), mean, std), red, trace=tr)
    src = tr.source[0].numpy()  # (N, N0)
    groups = np.where(src.max(axis=0) > 0, src.argmax(axis=0), -1)
    return {"frames": x[0], "label": mi["test_y"][idx: idx + 1], "pred": logits.argmax(-1).numpy(),
            "sharpness0": tr.sharpness0[0, :, 0].numpy(), "saliency0": tr.saliency[0][0, :, 0].numpy(),
            "groups": groups.astype(np.int64), "fg": mi["test_fg"][idx], "tokens": np.asarray(tr.tokens)}


# --------------------------------------------------------------------------------------- table rows
def _interp(x_new: float, xs: np.ndarray, ys: np.ndarray) -> float:
    """Linear interpolation on a curve; NaN outside its range (no extrapolation)."""
    order = np.argsort(xs)
    xs, ys = np.asarray(xs)[order], np.asarray(ys)[order]
    if len(xs) == 0 or x_new < xs[0] - 1e-12 or x_new > xs[-1] + 1e-12:
        return float("nan")
    return float(np.interp(x_new, xs, ys))


def main_points(sweep: pd.DataFrame, ev: dict[str, Any]) -> dict[str, pd.Series]:
    """The operating points the paper-row names stand for: vid-TLDR at its main schedule, ToMe at the
    constant r whose GFLOPs are closest to it."""
    v = sweep[sweep["setting_id"] == f"vidtldr_{schedule_name(ev['main_schedule'])}"].iloc[0]
    tome = sweep[sweep["family"] == "tome"]
    t = tome.iloc[int((tome["gflops"] - v["gflops"]).abs().argmin())]
    return {"no merging (base)": sweep[sweep["setting_id"] == "base"].iloc[0], "vid-TLDR": v, "ToMe": t}


TABLE4_PAPER_ROWS = {"vid-TLDR (full)": "full", "without saliency weighting": "no_saliency",
                     "without background drop and sharpening": "no_background_drop",
                     "ToMe with vid-TLDR's schedule (control)": "tome_schedule"}


def _speedups(s: pd.Series, base: pd.Series) -> list[float]:
    """Per timing round: this setting's clips/s over the unmerged model's in the same round."""
    runs, ref = json.loads(s.get("throughput_runs") or "[]"), json.loads(base.get("throughput_runs") or "[]")
    return [a / b for a, b in zip(runs, ref, strict=True)] if runs and len(runs) == len(ref) else []


def table_rows(sweep: pd.DataFrame, per_clip: pd.DataFrame, saliency: pd.DataFrame, manifest: pd.DataFrame,
               paper: dict[str, Any], ev: dict[str, Any], model: dict[str, Any], train_params: dict[str, Any],
               runtime: dict[str, Any]) -> pd.DataFrame:
    """Every cell of ours from its per-clip (accuracy) or per-timing-run (throughput) values; GFLOPs are
    counted, one number each. Core's table-rows format (cvpr24.core.reporting.TableRows)."""
    rows = TableRows()
    base = sweep[sweep["setting_id"] == "base"].iloc[0]
    by_setting = {k: g.set_index("clip") for k, g in per_clip.groupby(["setting_id", "split"])}
    net = f"tiny video ViT, {model['width']} wide x {model['depth']} blocks"
    timing = f"CPU, batch {ev['timing']['batch']}, one value per interleaved timing round"

    def correct(sid: str, split: str) -> pd.Series | None:
        hit = by_setting.get((sid, split))
        return None if hit is None else 100.0 * hit["correct"].astype(float)

    def add(table: str, row: str, s: pd.Series) -> None:
        keys = {c["key"] for c in paper["tables"][table]["columns"]}
        for key in [k for k in ("gflops", "gflops_counted", "gflops_rel") if k in keys]:
            rows.add(table, row, key, float(s[key]), over="", data="per clip" if key != "gflops_rel" else "")
        for key, split in (("top1", "test"), ("top1_clutter", "clutter")):
            vals = correct(s["setting_id"], split)
            n = 0 if vals is None else len(vals)
            rows.add(table, row, key, vals, over="clips", data=f"salient-sprites {split} ({n} clips), {net}",
                     note="" if vals is not None else f"no {split} split in this profile (embedded data only)")
        drop = None if correct("base", "test") is None else correct("base", "test") - correct(s["setting_id"], "test")
        rows.add(table, row, "top1_drop", drop, over="clips", data="per clip: base − this setting, test split")
        if "throughput_clips_per_seconds" in keys:
            runs = json.loads(s.get("throughput_runs") or "[]")
            why = "not timed (only the base, vid-TLDR and ToMe sweeps are)"
            rows.add(table, row, "throughput_clips_per_seconds", runs or None, over="timing runs", data=timing,
                     note="" if runs else why)
            sp = _speedups(s, base)
            rows.add(table, row, "walltime_speedup", sp or None, over="timing runs", data=timing,
                     note="" if sp else why)

    for tid in [t for t, spec in paper["tables"].items() if t not in ("table_3", "table_4")]:
        spec = paper["tables"][tid]  # retrieval: not run here; each cell says why
        for prow in spec["rows"]:
            for col in spec["columns"]:
                rows.add(tid, str(prow[spec["index"][-1]]), col["key"], None, note=col["ours_reason"])
    for name, s in main_points(sweep, ev).items():
        add("table_3", name, s)
    for idx in sweep.index[sweep["family"].isin(["base", "vidtldr", "tome"])]:
        add("table_3", sweep.loc[idx, "row"], sweep.loc[idx])
    main = schedule_name(ev["main_schedule"])
    for name, variant in TABLE4_PAPER_ROWS.items():
        sid = f"vidtldr_{main}" if variant == "full" else f"{variant}_{main}"
        hit = sweep[sweep["setting_id"] == sid]
        if hit.empty:
            for col in paper["tables"]["table_4"]["columns"]:
                rows.add("table_4", name, col["key"], None,
                         note=f"the ablation {variant} at {main} is not run in this profile (vidtldr.evaluate)")
        else:
            add("table_4", name, hit.iloc[0])
    abl_sched = [schedule_name(ev["vidtldr_schedules"][int(i)]) for i in ev["ablation_schedules"]]
    for _, s in sweep.iterrows():
        if s["family"] in ("ablation", "control") or (s["family"] == "vidtldr" and
                                                       schedule_name(json.loads(s["schedule"])) in abl_sched):
            add("table_4", s["row"], s)
    return rows.frame(profile=runtime.get("profile", ""),
                      data_fingerprint=str(manifest["fingerprint"].iloc[0]) if "fingerprint" in manifest else "",
                      params={"model": model, "train": train_params, "evaluate": ev})
