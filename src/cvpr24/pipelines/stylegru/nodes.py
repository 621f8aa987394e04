"""StyleGRU's five phases as pure Kedro nodes (arguments in, values out; the catalog does all I/O).

ingest      -> the videos in the FF++ folder layout (SynthTalk generator, or the real datasets' index) and a
               validated manifest, one row per video
preprocess  -> non-overlapping clips; the style encoder (pSp substitute, trained once on rendered frames with
               known latents; per-level R²); every clip's latents and its augmented view; validated again
train       -> every job of the plan for every seed: stage-1 StyleGRUs, stage-2 detectors on their frozen
               E_style, the per-frame CNN and the flow-variance detector; their clip logits on every
               evaluation clip (cached and resumable)
evaluate    -> one score per video (sigmoid of the mean clip logit), AUC per test set and job; the Fig. 1
               flow-variance ratios; one row per paper-table cell
report      -> the tables in the paper's layout, claims, figures, metrics.json

Evaluation labels are read by the evaluate phase only; training sees the FF++-like train and val splits.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from cvpr24.core.ingest import dispatch, missing_dataset
from cvpr24.core.provenance import fingerprint_arrays
from cvpr24.core.reporting import TableRows
from cvpr24.core.seeding import derive_seed
from cvpr24.core.tracking import log_history_to_active_run
from cvpr24.core.validation import DataValidationError, validate_manifest
from cvpr24.pipelines.stylegru import data as D
from cvpr24.pipelines.stylegru import expectations as E
from cvpr24.pipelines.stylegru import method as F
from cvpr24.pipelines.stylegru import model as M
from cvpr24.pipelines.stylegru import synth as S

log = logging.getLogger(__name__)
REAL_FIX = "see pipelines/stylegru/README.md (Real data) for the datasets' layouts and where to point stylegru.data.real"
TRAIN_METHODS = ("Deepfakes", "FaceSwap", "Face2Face", "NeuralTextures")
CROSS = ("cdf", "dfd", "fsh", "dfo")


# ------------------------------------------------------------------------------------------- ingest
def _manifest(index: pd.DataFrame) -> pd.DataFrame:
    man = index.rename(columns={"video_id": "sample_id"}).copy()
    man["source"] = man["path"].astype(str)
    man["label"] = man["label"].astype(int)
    return man


def _real_index(real: dict[str, Any]) -> pd.DataFrame:
    """The real datasets' videos (full profile): FF++ with its split JSONs and the cross-dataset sets that
    are configured; each reader raises MissingDatasetError naming the file it needs."""
    root = real.get("ffpp_root")
    if not root or not Path(root).is_dir():
        raise missing_dataset("FaceForensics++ (stylegru.data.real.ffpp_root)", root or "<unset>", REAL_FIX)
    comp = real.get("compression", "c23")
    parts = [D.index_ffpp(root, compression=comp, splits_dir=real.get("splits_dir"))]
    if real.get("celebdf_root"):
        parts.append(D.index_testlist(real["celebdf_root"], dataset="cdf"))
    if real.get("dfd", False):
        parts.append(D.index_dfd(root, comp))
    if real.get("faceshifter", False):
        parts.append(D.index_faceshifter(root, comp, real.get("splits_dir")))
    if real.get("deeperforensics_root"):
        parts.append(D.index_deeperforensics(real["deeperforensics_root"], root, comp, real.get("splits_dir")))
    return pd.concat(parts, ignore_index=True)


def ingest(data: dict[str, Any], prep: dict[str, Any], runtime: dict[str, Any]):
    """The videos in their layout (the embedded generator writes SynthTalk in the FF++ layout; real data is
    indexed where it lies) and a manifest validated before anything is trained."""
    seed, progress = int(runtime["seed"]), bool(runtime.get("progress", True))

    def embedded():
        synth = S.make_synthtalk(dict(data["synth"]), seed, progress=progress)
        index = pd.DataFrame([{"video_id": f"{r['dataset']}/{r['method']}/{r['name']}", "dataset": r["dataset"],
                               "method": r["method"], "label": int(r["label"]), "split": r["split"],
                               "path": f"embedded:{r['dataset']}/{r['method']}/{r['name']}",
                               "n_frames": int(r["frames"].shape[0]), "target": r["target"], "source": r["source"]}
                              for r in synth["videos"]])
        return synth, index

    def real():
        index = _real_index(dict(data["real"]))
        return {"index": index}, index

    (layout, index), fix = dispatch(data, slug="stylegru", embedded=embedded, real=real, real_fix=REAL_FIX)
    manifest = _manifest(index)
    validate_manifest(manifest, E.raw(int(prep["clip_size"])), dataset="stylegru.raw_layout", fix=fix)
    if data["source"] == "embedded":
        manifest["fingerprint"] = fingerprint_arrays({f"{r['dataset']}/{r['method']}/{r['name']}": r["frames"]
                                                      for r in layout["videos"]})
    return layout, manifest


# --------------------------------------------------------------------------------------- preprocess
def _clip_plan(index: pd.DataFrame, prep: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for v in index.sort_values("video_id").to_dict("records"):
        try:
            spans = D.clips_of(int(v["n_frames"]), int(prep["clip_size"]), prep.get("max_clips"))
        except DataValidationError as exc:
            raise DataValidationError(f"{v['video_id']} ({v['path']}): {exc}") from exc
        for k, (a, b) in enumerate(spans):
            rows.append({"sample_id": f"{v['video_id']}#{k}", "video_id": v["video_id"], "dataset": v["dataset"],
                         "method": v["method"], "label": int(v["label"]), "split": v["split"], "clip": k,
                         "start": int(a), "end": int(b), "path": v["path"]})
    return pd.DataFrame(rows)


def _resize(frames: np.ndarray, size: int) -> np.ndarray:
    if frames.shape[1] == size and frames.shape[2] == size:
        return frames
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BILINEAR)) for f in frames])


def _encoder_job(prep: dict[str, Any], ckpt_dir: str, seed: int, progress: bool) -> dict[str, Any]:
    """The pSp substitute, trained once on frames rendered from random latents (cached)."""
    enc = dict(prep["encoder"])
    size = int(prep["image_size"])

    def fit(ck):
        rng = np.random.default_rng(derive_seed(seed, "encoder-frames"))
        fr, lat = S.render_random_frames(int(enc["n_frames"]), size, rng)
        vfr, vlat = S.render_random_frames(int(enc["n_val"]), size, np.random.default_rng(derive_seed(seed, "enc-val")))
        return F.fit_encoder(fr, lat, vfr, vlat, enc, seed, ck, progress)

    job = {"id": "encoder", "size": size}
    out, cached, secs = F.run_cached("encoder", job, enc, seed, "synthtalk-render", F.code_fingerprint(),
                                     ckpt_dir, fit)
    return {**out, "cached": cached, "seconds": secs}


def preprocess(layout: dict[str, Any], manifest: pd.DataFrame, prep: dict[str, Any], train: dict[str, Any],
               runtime: dict[str, Any]):
    """Clips, the style encoder, every clip's latents (original and augmented view) and frames."""
    torch.set_num_threads(int(runtime.get("threads", 2)))
    seed, progress = int(runtime["seed"]), bool(runtime.get("progress", True))
    root, index = layout["root"], layout["index"]
    clips = _clip_plan(index, prep)
    enc_out = _encoder_job(prep, train["checkpoint_dir"], seed, progress)
    enc = F.load_encoder(enc_out)
    enc_shape = (M.N_LEVELS, M.LEVEL_DIM)
    size = int(prep["image_size"])
    truth = D.read_truth(root) if (Path(root) / D.TRUTH_FILE).is_file() else None
    raw, aug, frames, true_lat = [], [], [], []
    by_id = index.set_index("video_id")
    for vid, group in tqdm(clips.groupby("video_id", sort=True), desc="stylegru: read clips",
                           disable=not progress, mininterval=1.0, leave=False):
        path = D.resolve(root, by_id.loc[vid, "path"])
        video = D.read_frames(path)
        if video.shape[0] < int(group["end"].max()):
            raise DataValidationError(f"{path}: {video.shape[0]} frames, the index says "
                                      f"{int(group['end'].max())}; re-run ingest ({REAL_FIX})")
        video = _resize(video, size)
        for c in group.to_dict("records"):
            fr = video[c["start"]:c["end"]]
            raw.append(fr)
            aug.append(F.augmented_view(fr, np.random.default_rng(derive_seed(seed, "view", c["sample_id"])),
                                        int(prep["jitter_px"])))
            frames.append(_resize(fr, int(prep["content_size"])))
            if truth is not None:
                true_lat.append(truth[vid][c["start"]:c["end"]])
    n, t = len(raw), int(prep["clip_size"])
    lat = F.encode_frames(enc, np.concatenate(raw)).reshape(n, t, *enc_shape)
    lat_r = F.encode_frames(enc, np.concatenate(aug)).reshape(n, t, *enc_shape)
    clips = clips.sort_values(["video_id", "clip"]).reset_index(drop=True)
    mi = {"latents": lat.astype(np.float32), "latents_r": lat_r.astype(np.float32),
          "frames": np.stack(frames).astype(np.uint8), "encoder_r2": np.asarray(enc_out["r2"], np.float32)}
    if true_lat:
        mi["true_latents"] = np.stack(true_lat).astype(np.float32)
    check = clips[["sample_id", "split"]].copy()
    check["n_nonfinite"] = (~np.isfinite(mi["latents"])).reshape(len(clips), -1).sum(1)
    check["latent_abs_max"] = np.nan_to_num(np.abs(mi["latents"]), nan=0).reshape(len(clips), -1).max(1)
    validate_manifest(check, E.model_input(), dataset="stylegru.model_input",
                      fix="the style encoder produced non-finite or exploding latents: check stylegru.preprocess.encoder")
    hist = pd.DataFrame([{"job_id": "encoder", **h} for h in enc_out["history"]])
    return mi, clips, hist


# -------------------------------------------------------------------------------------------- train
def plan_jobs(train: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    """Every learned job the tables need (per seed): stage-1 StyleGRUs, stage-2 detectors, the frame CNN, the
    flow-variance detector; `exclude` = the manipulation left out of training (cross-manipulation)."""
    def s1(inp: str, levels: str, loss: str, exclude: str | None = None) -> dict[str, Any]:
        jid = f"s1_{inp}_{levels}_{loss}" + (f"_wo{exclude}" if exclude else "")
        return {"id": jid, "input": inp, "levels": levels, "loss": loss, "exclude": exclude}

    def s2(name: str, fusion: str, stage1: dict | None, exclude: str | None = None) -> dict[str, Any]:
        return {"id": f"s2_{name}" + (f"_wo{exclude}" if exclude else ""), "model": "detector", "fusion": fusion,
                "stage1": stage1["id"] if stage1 else None, "exclude": exclude}

    main, latent, bce = s1("flow", "total", "triplet"), s1("latent", "total", "triplet"), s1("flow", "total", "bce")
    groups = list(train.get("level_groups", ["coarse", "middle", "fine"]))
    stage1 = [main, latent, bce] + [s1("flow", g, "triplet") for g in groups]
    stage2 = [s2("full", "sam", main), s2("content", "none", None), s2("add", "add", main),
              s2("latent", "sam", latent), s2("bce", "sam", bce),
              {"id": "s2_frame", "model": "frame", "fusion": "none", "stage1": None, "exclude": None}]
    for m in train.get("loo_methods", []):
        wo = s1("flow", "total", "triplet", m)
        stage1 += [wo] + [s1("flow", g, "triplet", m) for g in train.get("loo_level_groups", groups)]
        stage2 += [s2("full", "sam", wo, m), s2("content", "none", None, m)]
    return {"stage1": stage1, "stage2": stage2}


def _subset(mi: dict[str, np.ndarray], meta: dict[str, np.ndarray], mask: np.ndarray,
            keys: tuple[str, ...]) -> dict:
    out = {k: np.ascontiguousarray(mi[k][mask]) for k in keys if k in mi}
    out["label"] = meta["label"][mask]
    return out


_ARRAYS: dict[str, dict[str, np.ndarray]] = {}


def _arrays(folder: str) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The model input a worker reads (memory-mapped .npy files written once by `train`), cached per process."""
    if folder not in _ARRAYS:
        _ARRAYS[folder] = {f.stem: np.load(f, mmap_mode="r", allow_pickle=False) for f in Path(folder).glob("*.npy")}
    arr = _ARRAYS[folder]
    return ({k: arr[k] for k in ("latents", "latents_r", "frames") if k in arr},
            {k: np.asarray(arr[k]) for k in ("label", "split", "method", "dataset")})


def _masks(meta: dict[str, np.ndarray], exclude: str | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    use = (meta["dataset"] == "ffpp") & (meta["method"] != (exclude or ""))
    return use & (meta["split"] == "train"), use & (meta["split"] == "val"), meta["split"] == "test"


def stage1_job(folder: str, job: dict, seed: int, cfg: dict, fp: str, code: str, ckpt: str, progress: bool = False,
               threads: int = 1) -> dict[str, Any]:
    """One StyleGRU (cached): its logits on every test clip and its training record."""
    torch.set_num_threads(threads)
    mi, meta = _arrays(folder)
    tr_m, va_m, te_m = _masks(meta, job["exclude"])
    tr, va = _subset(mi, meta, tr_m, ("latents", "latents_r")), _subset(mi, meta, va_m, ("latents",))
    out, cached, secs = F.run_cached("stage1", job, cfg, seed, fp, code, ckpt,
                                     lambda ck: F.fit_stage1(tr, va, job, cfg, seed, ck, progress))
    logits, _ = F.stylegru_outputs(F.stylegru_from(out, cfg), np.asarray(mi["latents"][te_m]), job)
    return {"logits": logits, "cached": cached, "seconds": secs, "best": float(out["best_val_acc"]),
            "history": out["history"]}


def stage2_job(folder: str, job: dict, stage1: dict | None, seed: int, cfg: dict, s1cfg: dict, fp: str, code: str,
               ckpt: str, progress: bool = False, threads: int = 1) -> dict[str, Any]:
    """One detector (cached) on the frozen E_style of its stage-1 StyleGRU (read back from the job cache)."""
    torch.set_num_threads(threads)
    mi, meta = _arrays(folder)
    tr_m, va_m, te_m = _masks(meta, job["exclude"])
    e_all = None
    if stage1 is not None:
        s1, _, _ = F.run_cached("stage1", stage1, s1cfg, seed, fp, code, ckpt,
                                lambda ck: F.fit_stage1(_subset(mi, meta, tr_m, ("latents", "latents_r")),
                                                        _subset(mi, meta, va_m, ("latents",)), stage1, s1cfg,
                                                        seed, ck, progress))
        _, e_all = F.stylegru_outputs(F.stylegru_from(s1, s1cfg), np.array(mi["latents"]), stage1)
    full = {"frames": mi["frames"], **({"e_style": e_all} if e_all is not None else {})}
    tr, va = _subset(full, meta, tr_m, ("frames", "e_style")), _subset(full, meta, va_m, ("frames", "e_style"))
    out, cached, secs = F.run_cached("stage2", job, cfg, seed, fp, code, ckpt,
                                     lambda ck: F.fit_stage2(tr, va, job, cfg, seed, ck, progress))
    logits = F.predict_stage2(F.detector_from(out, job, cfg), job, np.asarray(mi["frames"][te_m]),
                              None if e_all is None else e_all[te_m])
    return {"logits": logits, "cached": cached, "seconds": secs, "best": float(out["best_val_auc"]),
            "history": out["history"]}


def _write_arrays(folder: Path, model_input: dict[str, np.ndarray], clips: pd.DataFrame) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k in ("latents", "latents_r", "frames"):
        np.save(folder / f"{k}.npy", model_input[k])
    for k in ("label", "split", "method", "dataset"):
        np.save(folder / f"{k}.npy", clips[k].to_numpy().astype(int if k == "label" else str))


def train(model_input: dict[str, np.ndarray], clips: pd.DataFrame, train: dict[str, Any], runtime: dict[str, Any]):
    """Every job of the plan for every seed (cached, resumable), stage 1 then stage 2, each job on one thread
    in a pool of `train.workers` processes (the numbers do not depend on the worker count); clip logits on
    every test clip."""
    import shutil
    import tempfile

    from cvpr24.core.parallel import map_jobs

    torch.use_deterministic_algorithms(True, warn_only=True)
    progress = bool(runtime.get("progress", True))
    plan, code = plan_jobs(train), F.code_fingerprint()
    fp = fingerprint_arrays({k: model_input[k] for k in ("latents", "latents_r", "frames")})
    ckpt = str(train["checkpoint_dir"])
    s1cfg, s2cfg = dict(train["stage1"]), dict(train["stage2"])
    seeds = [(int(s), derive_seed(int(runtime["seed"]), "seed", int(s))) for s in train["seeds"]]
    Path(ckpt).mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="arrays-", dir=ckpt))
    workers = int(train.get("workers", 1))
    try:
        _write_arrays(folder, model_input, clips)
        common = {"folder": str(folder), "fp": fp, "code": code, "ckpt": ckpt}
        s1_jobs = [{**common, "job": j, "seed": seed, "cfg": s1cfg} for _, seed in seeds for j in plan["stage1"]]
        s1_out = map_jobs(stage1_job, s1_jobs, workers=workers, threads=workers, desc="stylegru: stage 1",
                          progress=progress)
        by_id = {j["id"]: j for j in plan["stage1"]}
        s2_jobs = [{**common, "job": j, "stage1": by_id.get(j["stage1"]), "seed": seed, "cfg": s2cfg,
                    "s1cfg": s1cfg} for _, seed in seeds for j in plan["stage2"]]
        s2_out = map_jobs(stage2_job, s2_jobs, workers=workers, threads=workers, desc="stylegru: stage 2",
                          progress=progress)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    test = clips["split"].to_numpy() == "test"
    seed_of = {seed: s for s, seed in seeds}
    preds, log_rows, history = [], [], []

    def keep(kind: str, job_id: str, s: int, logits: np.ndarray, rec: dict) -> None:
        preds.append(pd.DataFrame({"job": job_id, "kind": kind, "seed": s,
                                   "sample_id": clips["sample_id"].to_numpy()[test], "logit": logits}))
        log_rows.append({"job": job_id, "kind": kind, "seed": s, "cached": rec["cached"], "seconds": rec["seconds"],
                         "best": rec["best"]})
        history.extend({"job_id": f"{job_id}/s{s}", **h} for h in rec["history"])

    for spec, rec in zip(s1_jobs, s1_out, strict=True):
        keep("stylegru", spec["job"]["id"], seed_of[spec["seed"]], rec["logits"], rec)
    for spec, rec in zip(s2_jobs, s2_out, strict=True):
        keep(spec["job"]["model"], spec["job"]["id"], seed_of[spec["seed"]], rec["logits"], rec)
    meta = {k: clips[k].to_numpy() for k in ("label", "split", "method", "dataset")}
    ff = meta["dataset"] == "ffpp"
    for s, seed in seeds:  # the hand-crafted detector: no training loop, no cache
        clf = F.fit_flow_variance_lr(_subset(model_input, meta, ff & (meta["split"] == "train"), ("latents",)), seed)
        lr_logits = clf.decision_function(F.flow_variance_features(model_input["latents"][test]))
        keep("lr", "flow_variance_lr", s, lr_logits.astype(np.float32),
             {"cached": False, "seconds": 0.0, "best": float("nan"), "history": []})
    train_log = pd.DataFrame(log_rows)
    log.info("stylegru train: %d jobs (%d from the cache), %.0f s of training", len(train_log),
             int(train_log["cached"].sum()), float(train_log["seconds"].sum()))
    log_history_to_active_run([{k: v for k, v in h.items() if k in ("job_id", "step", "loss")} for h in history],
                              prefix="loss")
    hist = pd.DataFrame(history)
    for col in ("job_id", "step", "loss", "val_acc", "val_auc"):
        if col not in hist:
            hist[col] = np.nan
    return pd.concat(preds, ignore_index=True), train_log, hist[["job_id", "step", "loss", "val_acc", "val_auc"]]


# ----------------------------------------------------------------------------------------- evaluate
def _auc(scores: pd.DataFrame) -> float:
    from sklearn.metrics import roc_auc_score

    if scores["label"].nunique() < 2:
        return float("nan")
    return float(100.0 * roc_auc_score(scores["label"], scores["score"]))


def eval_sets(videos: pd.DataFrame, exclude: str | None) -> dict[str, pd.Series]:
    """Which test videos each AUC uses: FF++-like test (all / per manipulation), the held-out manipulation
    for a leave-one-out job, and each cross-dataset set (its own reals and fakes)."""
    ff = videos["dataset"] == "ffpp"
    real = ff & (videos["label"] == 0)
    if exclude:
        return {"heldout": real | (ff & (videos["method"] == exclude))}
    sets = {"ffpp": ff}
    for m in TRAIN_METHODS:
        sets[f"ffpp:{m}"] = real | (ff & (videos["method"] == m))
    for c in CROSS:
        if (videos["dataset"] == c).any():
            sets[c] = videos["dataset"] == c
    return sets


def evaluate(predictions: pd.DataFrame, clips: pd.DataFrame, model_input: dict[str, np.ndarray],
             params: dict[str, Any], train: dict[str, Any]):
    """Video scores (one per video), AUC per job, seed and test set; Fig. 1's flow-variance ratios."""
    excl = {j["id"]: j["exclude"] for jobs in plan_jobs(train).values() for j in jobs}
    meta = clips.set_index("sample_id")
    rows = []
    for (job, seed), grp in predictions.groupby(["job", "seed"], sort=True):
        scores = M.video_scores(grp["logit"].to_numpy(), meta.loc[grp["sample_id"], "video_id"].tolist(),
                                how=params.get("aggregation", "mean_logit"))
        videos = meta.drop_duplicates("video_id").set_index("video_id").loc[list(scores)]
        videos = videos.assign(score=[scores[v] for v in videos.index])
        for name, mask in eval_sets(videos, excl.get(job)).items():
            sub = videos[mask.to_numpy()]
            rows.append({"job": job, "kind": grp["kind"].iloc[0], "seed": int(seed), "set": name, "auc": _auc(sub),
                         "n_real": int((sub["label"] == 0).sum()), "n_fake": int((sub["label"] == 1).sum())})
    return pd.DataFrame(rows), flow_ratios(model_input, clips)


def flow_ratios(mi: dict[str, np.ndarray], clips: pd.DataFrame) -> pd.DataFrame:
    """var(flow of fakes) / var(flow of reals) per generator and level (Fig. 1), on the encoder's latents and,
    for the embedded data, on the true latents; reals = FF++ reals for FF++ manipulations, the set's own reals
    for a cross set."""
    rows = []
    for key in ("latents", "true_latents"):
        if key not in mi:
            continue
        var = np.diff(mi[key], axis=1).var(axis=1).mean(axis=-1)   # (N, L): per clip, per level
        for (ds, m), grp in clips[clips["label"] == 1].groupby(["dataset", "method"], sort=True):
            reals = (clips["dataset"] == ds) & (clips["label"] == 0)
            fake = var[grp.index.to_numpy()].mean(0)
            real = var[reals.to_numpy()].mean(0)
            for lvl in range(var.shape[1]):
                rows.append({"latents": "encoder" if key == "latents" else "true", "dataset": ds, "method": m,
                             "level": lvl, "ratio": float(fake[lvl] / max(real[lvl], 1e-12)),
                             "var_fake": float(fake[lvl]), "var_real": float(real[lvl])})
    return pd.DataFrame(rows)


# ----------------------------------------------------------------------------------- table rows
ROWS = {"full": "s2_full", "content": "s2_content", "add": "s2_add", "latent_full": "s2_latent",
        "bce_full": "s2_bce", "frame": "s2_frame", "lr": "flow_variance_lr", "stylegru": "s1_flow_total_triplet",
        "stylegru_latent": "s1_latent_total_triplet", "stylegru_bce": "s1_flow_total_bce"}


def per_seed(aucs: pd.DataFrame, job: str, sets: list[str] | str) -> pd.Series | None:
    """AUC per seed of `job`, averaged over `sets` (a set list = the cross mean); None when not run."""
    sets = [sets] if isinstance(sets, str) else sets
    sub = aucs[(aucs["job"] == job) & aucs["set"].isin(sets)]
    if sub.empty:
        return None
    return sub.groupby("seed")["auc"].mean() if sub["set"].nunique() == len(sets) else None


def loo_per_seed(aucs: pd.DataFrame, prefix: str, methods: list[str]) -> pd.Series | None:
    """Mean over the leave-one-out runs `<prefix>_wo<M>` of their held-out AUC, per seed."""
    vals = [per_seed(aucs, f"{prefix}_wo{m}", "heldout") for m in methods]
    return None if any(v is None for v in vals) or not vals else pd.concat(vals, axis=1).mean(axis=1)


def table_rows(aucs: pd.DataFrame, train_log: pd.DataFrame, paper: dict[str, Any], train: dict[str, Any],
               runtime: dict[str, Any], manifest: pd.DataFrame) -> pd.DataFrame:
    """Every cell of ours from its per-seed values, in core's table-rows format."""
    rows = TableRows()
    cross = [c for c in CROSS if (aucs["set"] == c).any()]
    why_loo = "not in stylegru.train.loo_methods in this profile"
    data = "SynthTalk: FF++-like test split / held-out generators"
    t1 = {"Ours (StyleGRU+SAM)": ROWS["full"], "content-only (w/o StyleGRU; FTCN family)": ROWS["content"],
          "StyleGRU only (stage-1 classifier)": ROWS["stylegru"], "per-frame 2D CNN": ROWS["frame"],
          "flow variance + logistic regression (Fig. 1 test)": ROWS["lr"]}
    for name, reason in (paper["tables"]["table_1"].get("not_reproduced") or {}).items():
        for key in ("cdf", "dfd", "fsh", "dfo", "cross_mean", "ffpp"):
            rows.add("table_1", name, key, None, note=reason)
    for row, job in t1.items():
        for c in CROSS:
            rows.add("table_1", row, c, per_seed(aucs, job, c), data=data, note="held-out set not generated")
        rows.add("table_1", row, "cross_mean", per_seed(aucs, job, cross), data=data)
        rows.add("table_1", row, "ffpp", per_seed(aucs, job, "ffpp"), data=data)
    for row, prefix in (("Ours (StyleGRU+SAM)", "s2_full"), ("content-only (w/o StyleGRU)", "s2_content"),
                        ("StyleGRU only", ROWS["stylegru"])):
        for m in TRAIN_METHODS:
            rows.add("table_2", row, m, per_seed(aucs, f"{prefix}_wo{m}", "heldout"), data=data, note=why_loo)
        rows.add("table_2", row, "mean", loo_per_seed(aucs, prefix, list(TRAIN_METHODS)), data=data,
                 note="needs all four leave-one-out runs (stylegru.train.loo_methods)")
    for row, s1, s2 in (("style latent", ROWS["stylegru_latent"], ROWS["latent_full"]),
                        ("style flow", ROWS["stylegru"], ROWS["full"])):
        rows.add("table_3", row, "stylegru_cross", per_seed(aucs, s1, cross), data=data)
        rows.add("table_3", row, "full_cross", per_seed(aucs, s2, cross), data=data)
        rows.add("table_3", row, "stylegru_ffpp", per_seed(aucs, s1, "ffpp"), data=data)
    for g in ("coarse", "middle", "fine", "total"):
        job = f"s1_flow_{g}_triplet"
        rows.add("table_4", g, "cross_manip", loo_per_seed(aucs, job, list(TRAIN_METHODS)), data=data,
                 note="needs the four leave-one-out runs of each level group (stylegru.train.loo_level_groups; "
                      "off in the embedded profile for run time)")
        rows.add("table_4", g, "cross_dataset", per_seed(aucs, job, cross), data=data)
    for row, job in (("w/o StyleGRU", ROWS["content"]), ("w/o contrastive learning", ROWS["bce_full"]),
                     ("w/o SAM", ROWS["add"]), ("full (StyleGRU + SAM)", ROWS["full"])):
        rows.add("table_5", row, "cross_mean", per_seed(aucs, job, cross), data=data)
        rows.add("table_5", row, "ffpp", per_seed(aucs, job, "ffpp"), data=data)
    fp = str(manifest["fingerprint"].iloc[0]) if "fingerprint" in manifest else ""
    return rows.frame(profile=runtime.get("profile", ""), data_fingerprint=fp,
                      params={"train": {k: v for k, v in train.items() if k != "checkpoint_dir"}})
