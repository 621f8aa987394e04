"""MagNet's five phases as pure Kedro nodes (arguments in, values out; the catalog does all I/O).

ingest      -> the referring dataset in the REFER layout (the ShapeRef generator writes it; real RefCOCO /
               RefCOCO+ / G-Ref are read where they lie) and a manifest validated before anything is trained,
               one row per expression
preprocess  -> square-resized images (once per image), ground-truth masks and token ids per expression, the
               word-level vocabulary; bad input (a mask that does not match its image, an expression longer
               than the limit, a missing image) stops here, before training
train       -> every config of the ablation for every seed (cached, resumable, one thread per job in a pool of
               processes); binarised predictions on the evaluation splits and the Mask Grounding / alignment /
               inference-cost diagnostics
evaluate    -> I and U per expression, mIoU / oIoU / Prec@X per job, seed, split and template; one row per
               paper-table cell
report      -> the tables in the paper's layout, claims, figures, metrics.json

Evaluation masks are read by the evaluate phase and by the train jobs' diagnostics only; training sees the
train split.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from cvpr24.core.ingest import dispatch
from cvpr24.core.provenance import fingerprint_arrays
from cvpr24.core.reporting import TableRows
from cvpr24.core.seeding import derive_seed
from cvpr24.core.tracking import log_history_to_active_run
from cvpr24.core.validation import validate_manifest
from cvpr24.pipelines.magnet import data as D
from cvpr24.pipelines.magnet import expectations as E
from cvpr24.pipelines.magnet import method as F
from cvpr24.pipelines.magnet import metrics as MT

log = logging.getLogger(__name__)
REAL_FIX = ("see pipelines/magnet/README.md (Real data) for the REFER layout (refs(<splitBy>).p, instances.json, "
            "COCO train2014 images) and where to point magnet.data.real")
EVAL_SPLITS = ("val", "testA", "testB", "test")


# ------------------------------------------------------------------------------------------- ingest
def _manifest(refs: pd.DataFrame, fingerprint: str = "") -> pd.DataFrame:
    man = refs.copy()
    man["n_words"] = man["sentence"].map(lambda s: len(D.tokenize(s)))
    if fingerprint:
        man["fingerprint"] = fingerprint
    return man


def ingest(data: dict[str, Any], prep: dict[str, Any], runtime: dict[str, Any]):
    """The dataset in the REFER layout and its manifest (one row per expression), validated before training.
    Embedded: ShapeRef is generated from the run's seed and written in the REFER format (the dataset writes
    it); real: the refs pickle and instances JSON are read and checked where they lie."""
    seed = int(runtime["seed"])

    def embedded():
        scenes = D.generate_shaperef(**dict(data["shaperef"]), seed=derive_seed(seed, "shaperef"))
        fp = fingerprint_arrays({"images": np.stack([sc.image for sc in scenes]),
                                 "masks": np.concatenate([sc.masks for sc in scenes])})
        return {"scenes": scenes}, _manifest(D.refs_frame(scenes), fp)

    def real():
        real_cfg = dict(data["real"])
        pointer = {k: real_cfg.get(k) for k in ("data_root", "dataset", "split_by", "image_dir")}
        refs, _, _ = D.load_refer(**pointer)
        return {"pointer": pointer}, _manifest(refs)

    (layout, manifest), fix = dispatch(data, slug="magnet", embedded=embedded, real=real, real_fix=REAL_FIX)
    validate_manifest(manifest, E.raw(), dataset="magnet.raw_layout", fix=fix)
    if prep.get("on_long", "error") == "error":   # an expression over the limit stops the run here
        sentences = manifest["sentence"].tolist()
        D.encode(sentences, D.Vocab.from_sentences(sentences), int(prep["max_tokens"]), on_long="error",
                 where=[f"ref {r} ({f})" for r, f in zip(manifest["ref_id"], manifest["file_name"], strict=True)])
    return layout, manifest


# --------------------------------------------------------------------------------------- preprocess
def preprocess(layout: dict[str, Any], manifest: pd.DataFrame, prep: dict[str, Any], evaluate: dict[str, Any]):
    """Images resized once per image, masks and token ids per expression, the vocabulary (train split words)."""
    refs, anns, images = D.load_refer(**layout)
    size = int(prep["image_size"])
    if set(refs["sample_id"]) != set(manifest["sample_id"]):
        raise D.DataValidationError(f"{layout['data_root']}: the dataset changed since ingest "
                                    f"({len(refs)} expressions, the manifest has {len(manifest)}); re-run ingest")
    arrays = D.load_split_arrays(refs, anns, images, refs.attrs["image_dir"], size)
    vocab = D.Vocab.from_sentences(refs.loc[refs["split"] == "train", "sentence"],
                                   min_count=int(prep.get("vocab_min_count", 1)))
    ids, attn = D.encode(refs["sentence"].tolist(), vocab, int(prep["max_tokens"]),
                         on_long=str(prep.get("on_long", "error")),
                         where=[f"ref {r}" for r in refs["ref_id"]])
    eval_splits = set(evaluate.get("splits", EVAL_SPLITS))
    has_d = arrays.get("has_distractor", np.zeros(len(refs), np.uint8))
    mi = {"images": arrays["images"], "masks": arrays["masks"], "image_index": arrays["image_index"].astype(np.int64),
          "distractor_masks": arrays["distractor_masks"], "has_distractor": np.asarray(has_d, np.uint8),
          "ids": ids.astype(np.int64), "attn": attn.astype(np.int64),
          "is_eval": refs["split"].isin(eval_splits).to_numpy().astype(np.uint8)}
    samples = refs[["sample_id", "ref_id", "ann_id", "image_id", "split", "sent_id", "sentence", "template"]].copy()
    samples["area"] = mi["masks"].reshape(len(refs), -1).sum(1)
    samples["n_unk"] = (mi["ids"] == D.UNK_ID).sum(1)
    samples.attrs = {}  # pandas writes attrs into the parquet: load_refer's absolute paths would differ per clone
    validate_manifest(samples, E.model_input(size), dataset="magnet.model_input",
                      fix="a ground-truth mask is empty after resizing to magnet.preprocess.image_size: raise it, "
                          "or drop the ref from the dataset")
    return mi, samples, json.loads(vocab.to_json())


# -------------------------------------------------------------------------------------------- train
def plan_jobs(train: dict[str, Any]) -> list[tuple[dict[str, Any], int]]:
    """(job, seed) pairs: every config of `train.configs` at every seed of `train.seeds`, except the configs in
    `train.first_seed_only` (table rows no claim reads), which run at the first seed only. Ordered config by
    config in the file's order (the costliest first there), so two workers finish close together."""
    seeds = [int(s) for s in train["seeds"]]
    once = set(train.get("first_seed_only") or [])
    unknown = once - set(train["configs"])
    if unknown:
        raise ValueError(f"magnet.train.first_seed_only names configs that are not in magnet.train.configs: "
                         f"{sorted(unknown)}")
    return [({"id": name, "flags": dict(flags or {})}, s) for name, flags in train["configs"].items()
            for s in (seeds[:1] if name in once else seeds)]


def _write_arrays(folder: Path, mi: dict[str, np.ndarray], samples: pd.DataFrame) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for k, v in mi.items():
        np.save(folder / f"{k}.npy", v)
    np.save(folder / "split.npy", samples["split"].to_numpy().astype(str))


def train(model_input: dict[str, np.ndarray], samples: pd.DataFrame, vocab: dict[str, Any], train: dict[str, Any],
          evaluate: dict[str, Any], runtime: dict[str, Any]):
    """Every config for every seed (cached, resumable), each job on one thread in a pool of `train.workers`
    processes (the numbers do not depend on the worker count)."""
    from cvpr24.core.parallel import map_jobs

    torch.use_deterministic_algorithms(True, warn_only=True)
    progress = bool(runtime.get("progress", True))
    code = F.code_fingerprint()
    fp = fingerprint_arrays({k: model_input[k] for k in ("images", "masks", "ids")})
    ckpt = str(train["checkpoint_dir"])
    voc = D.Vocab.from_json(json.dumps(vocab))
    word_ids = sorted(set(voc.ids([w for w in D.COLOURS + D.SHAPES if w in voc])))
    cfg = {k: v for k, v in train.items() if k not in ("checkpoint_dir", "first_seed_only")}
    seed_of = {derive_seed(int(runtime["seed"]), "seed", int(s)): int(s) for s in train["seeds"]}
    derived = {s: d for d, s in seed_of.items()}
    Path(ckpt).mkdir(parents=True, exist_ok=True)
    workers = int(train.get("workers", 1))
    pre_rows = []
    pcfg = dict(train.get("pretrain") or {})
    if int(pcfg.get("steps", 0)) > 0:
        if cfg.get("init_checkpoint"):
            raise ValueError("magnet.train.pretrain.steps > 0 and magnet.train.init_checkpoint are both set: the "
                             "encoder would be pretrained and then overwritten; set pretrain.steps: 0 to start from "
                             "the checkpoint, or init_checkpoint: null to pretrain")
        torch.set_num_threads(max(workers, 1))   # one process: the pretraining may use every worker's core
        mcfg0 = F.model_config(cfg, {}, len(voc), model_input["ids"].shape[1], model_input["images"].shape[1])
        path, info = F.pretrained_backbone(mcfg0, pcfg, int(runtime["seed"]), ckpt, progress)
        cfg = {**cfg, "init_checkpoint": path}
        pre_rows = [{"job": "pretrain", "seed": int(train["seeds"][0]), **info}]
        log.info("magnet: backbone pretrained (%s), foreground shape accuracy %.1f %%, colour %.1f %%",
                 "cached" if info["cached"] else f"{info['seconds']:.0f} s", info.get("pretrain_shape_acc", np.nan),
                 info.get("pretrain_colour_acc", np.nan))
    folder = Path(tempfile.mkdtemp(prefix="arrays-", dir=ckpt))
    jobs = [{"folder": str(folder), "job": j, "seed": seed, "cfg": cfg, "vocab_size": len(voc),
             "word_ids": word_ids, "mtp_split": str(evaluate.get("mtp_split", "val")), "data_fp": fp, "code": code,
             "ckpt": ckpt} for j, s in plan_jobs(train) for seed in [derived[s]]]
    try:
        _write_arrays(folder, model_input, samples)
        outs = map_jobs(F.train_job, jobs, workers=workers, threads=workers, desc="magnet: jobs", progress=progress)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    bits, log_rows, history = {}, [], []
    for spec, rec in zip(jobs, outs, strict=True):
        s, jid = seed_of[spec["seed"]], spec["job"]["id"]
        bits[f"{jid}__s{s}"] = rec["bits"]
        bits.setdefault("eval_idx", rec["eval_idx"])
        log_rows.append({"job": jid, "seed": s, "cached": rec["cached"], "seconds": rec["seconds"], **rec["diag"]})
        history.extend({"job_id": f"{jid}/s{s}", **h} for h in rec["history"])
    train_log = pd.DataFrame(pre_rows + log_rows)
    log.info("magnet train: %d jobs (%d from the cache), %.0f s of training", len(train_log),
             int(train_log["cached"].sum()), float(train_log["seconds"].sum()))
    log_history_to_active_run([{k: v for k, v in h.items() if k in ("job_id", "step", "total")} for h in history],
                              prefix="loss")
    hist = pd.DataFrame(history)
    for col in ("job_id", "step", "total", "seg", "mg", "cal"):
        if col not in hist:
            hist[col] = np.nan
    return bits, train_log, hist[["job_id", "step", "total", "seg", "mg", "cal"]]


# ----------------------------------------------------------------------------------------- evaluate
def unpack(bits: np.ndarray, size: int) -> np.ndarray:
    return np.unpackbits(bits, axis=-1, count=size).astype(bool)


def evaluate(predictions: dict[str, np.ndarray], model_input: dict[str, np.ndarray], samples: pd.DataFrame):
    """I and U per job, seed and expression at the model input's resolution; mIoU / oIoU / Prec@X per job, seed,
    split, and per template."""
    idx = np.asarray(predictions["eval_idx"])
    gt = model_input["masks"][idx].astype(bool)
    meta = samples.iloc[idx][["sample_id", "split", "template"]].reset_index(drop=True)
    parts = []
    for key in sorted(k for k in predictions if k != "eval_idx"):
        job, seed = key.rsplit("__s", 1)
        pred = unpack(predictions[key], gt.shape[-1])
        inter, union = MT.intersection_union(pred, gt)
        parts.append(meta.assign(job=job, seed=int(seed), inter=inter, union=union, iou=MT.pair_iou(inter, union)))
    pairs = pd.concat(parts, ignore_index=True)
    by_split = MT.summarise_groups(pairs, ["job", "seed", "split"]).assign(template="all")
    by_tpl = MT.summarise_groups(pairs, ["job", "seed", "split", "template"])
    by_tpl_all = MT.summarise_groups(pairs.assign(split="all"), ["job", "seed", "split", "template"])
    return pairs, pd.concat([by_split, by_tpl, by_tpl_all], ignore_index=True)


# ----------------------------------------------------------------------------------- table rows
ABLATION = {"base": "base", "+MG": "mg", "+CAM": "cam", "+CAL": "cal", "MagNet (MG + CAM + CAL)": "magnet",
            "MG + CAM (MagNet without CAL)": "mg_cam", "+MG, 4x4 mask tokens": "mg_pool4",
            "LAVT-like (no language-side fusion, no CAM)": "lavt"}
T1 = {"MagNet": "magnet", "LAVT": "lavt"}


def per_seed(scores: pd.DataFrame, job: str, split: str, metric: str, template: str = "all") -> pd.Series | None:
    """`metric` per seed of `job` on `split` (None when the job or split was not run)."""
    sub = scores[(scores["job"] == job) & (scores["split"] == split) & (scores["template"] == template)]
    return None if sub.empty else sub.set_index("seed")[metric].sort_index()


def table_rows(scores: pd.DataFrame, paper: dict[str, Any], train: dict[str, Any], runtime: dict[str, Any],
               manifest: pd.DataFrame) -> pd.DataFrame:
    """Every cell of ours from its per-seed values, in core's table-rows format."""
    rows = TableRows()
    data = "ShapeRef (embedded)" if "fingerprint" in manifest else "REFER data (full profile)"
    why = "not in magnet.train.configs in this profile"
    t1_cols = [c["key"] for c in paper["tables"]["table_1"]["columns"]]
    for name, reason in (paper["tables"]["table_1"].get("not_reproduced") or {}).items():
        for key in t1_cols:
            rows.add("table_1", name, key, None, note=reason)
    for row, job in T1.items():
        for split in ("val", "testA", "testB"):
            rows.add("table_1", row, f"refcoco_{split}", per_seed(scores, job, split, "oiou"), data=data, note=why)
        for key in t1_cols:
            if not key.startswith("refcoco_"):
                rows.add("table_1", row, key, None, note="no stand-in for this dataset in the embedded data")
    cols = {"val_miou": ("val", "miou"), "val_oiou": ("val", "oiou"), "testA_oiou": ("testA", "oiou"),
            "testB_oiou": ("testB", "oiou"), "val_prec50": ("val", "prec@0.5"), "val_prec70": ("val", "prec@0.7"),
            "val_prec90": ("val", "prec@0.9")}
    for row, job in ABLATION.items():
        for key, (split, metric) in cols.items():
            rows.add("table_2", row, key, per_seed(scores, job, split, metric), data=data, note=why)
    fp = str(manifest["fingerprint"].iloc[0]) if "fingerprint" in manifest else ""
    return rows.frame(profile=runtime.get("profile", ""), data_fingerprint=fp,
                      params={"train": {k: v for k, v in train.items() if k != "checkpoint_dir"}})
