"""Training and measuring one MagNet job (a config of the ablation at one seed), on one thread.

`train_job` is what the train phase's worker processes run: it reads the model input (memory-mapped .npy
files written once by the train node), trains the model through core's job cache (resumable from its last
checkpoint), then predicts the evaluation splits and measures what the claims need and only a trained model
can give:

- the masked-token predictor's accuracy on one masked colour / shape word per val expression, with the true
  mask, with the mask of another object of the same image (chosen by the ingest phase's seeded generator),
  and text-only (visual and mask tokens zeroed) — claim C3;
- the foreground / background alignment of the pixel features with the sentence feature (C6);
- MG's inference cost: a model built without MG carrying the MG model's inference weights must have the same
  inference parameters and predict the same probabilities (C4).

Ground-truth masks of the evaluation splits are read here only to measure (MTP, alignment); training sees
the train split alone.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cvpr24.core.provenance import fingerprint_files
from cvpr24.core.seeding import derive_seed, torch_generator
from cvpr24.core.training import Checkpointer, TrainState, atomic_torch_save, cached_job, job_key, train_loop
from cvpr24.pipelines.magnet import metrics as MT
from cvpr24.pipelines.magnet import model as M

PACKAGE_DIR = Path(__file__).resolve().parent
MEAN = np.array([0.485, 0.456, 0.406], np.float32)   # ImageNet statistics, as the released transforms
STD = np.array([0.229, 0.224, 0.225], np.float32)


def code_fingerprint() -> str:
    return fingerprint_files([PACKAGE_DIR / "model.py", PACKAGE_DIR / "method.py",
                              PACKAGE_DIR.parent.parent / "core" / "training.py"])


def to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 (N, S, S, 3) -> normalised float (N, 3, S, S)."""
    x = (np.asarray(images, np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def model_config(cfg: dict[str, Any], flags: dict[str, Any], vocab_size: int, max_tokens: int,
                 image_size: int) -> M.MagNetConfig:
    """The job's MagNetConfig: the profile's `train.model` block with the job's switches on top."""
    fields = {f.name for f in dataclasses.fields(M.MagNetConfig)}
    merged = {**dict(cfg["model"]), **dict(flags)}
    unknown = sorted(set(merged) - fields)
    if unknown:
        raise ValueError(f"magnet.train.model / configs: unknown MagNetConfig field(s) {unknown}; "
                         f"known: {sorted(fields)}")
    for k in ("dims", "blocks", "text_layers"):
        if k in merged:
            merged[k] = tuple(merged[k])
    if "cam_sizes" in merged:
        merged["cam_sizes"] = tuple(tuple(s) for s in merged["cam_sizes"])
    return M.MagNetConfig(vocab_size=vocab_size, max_tokens=max_tokens, image_size=image_size, **merged)


def n_steps(n_train: int, cfg: dict[str, Any]) -> int:
    return max(1, int(cfg["epochs"]) * math.ceil(n_train / int(cfg["batch"])))


def _scheduler(opt: torch.optim.Optimizer, steps: int, kind: str) -> torch.optim.lr_scheduler.LRScheduler:
    if kind == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    if kind == "poly":
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda s: (1 - min(s, steps) / steps) ** 0.9)
    raise ValueError(f"magnet.train.schedule: {kind!r} is not cosine or poly")


def init_from_checkpoint(model: M.MagNet, path: str) -> dict[str, list[str]]:
    """Start from a user's local state dict (e.g. an image backbone and text encoder converted to our module
    names: `encoder.image.*`, `encoder.text.*`): every tensor whose name and shape match is loaded, the rest
    keep their initialisation; both lists are logged. Nothing is downloaded."""
    import logging

    from cvpr24.core.safety import load_weights

    if not Path(path).is_file():
        raise FileNotFoundError(f"magnet.train.init_checkpoint: {path} does not exist; point it at a local state "
                                f"dict (torch.save of a dict of tensors) or set it to null")
    state = load_weights(path)
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    own = model.state_dict()
    match = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not match:
        raise ValueError(f"magnet.train.init_checkpoint: no tensor of {path} matches the model's names and shapes "
                         f"(e.g. the model has {sorted(own)[:3]}); convert the checkpoint's keys first")
    model.load_state_dict(match, strict=False)
    skipped = sorted(set(state) - set(match))
    logging.getLogger(__name__).info("init_checkpoint %s: %d tensors loaded, %d skipped (%s)", path, len(match),
                                     len(skipped), skipped[:5])
    return {"loaded": sorted(match), "skipped": skipped}


def fit(arrays: dict[str, np.ndarray], train_idx: np.ndarray, mcfg: M.MagNetConfig, cfg: dict[str, Any], seed: int,
        checkpointer: Checkpointer | None = None, progress: bool = False) -> dict[str, Any]:
    """Train one model on the train expressions; returns its state dict and loss history."""
    torch.manual_seed(derive_seed(seed, "init"))
    model = M.MagNet(mcfg)
    if cfg.get("init_checkpoint"):
        init_from_checkpoint(model, str(cfg["init_checkpoint"]))
    opt = torch.optim.AdamW(model.parameters(), lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]))
    steps = n_steps(len(train_idx), cfg)
    sched = _scheduler(opt, steps, str(cfg.get("schedule", "cosine")))
    gen_order, gen_loss = torch_generator(derive_seed(seed, "order")), torch_generator(derive_seed(seed, "loss"))
    order: list[torch.Tensor] = []   # this epoch's permutation: saved in checkpoints, so a resume is exact
    state = TrainState(generators={"order": gen_order, "loss": gen_loss},
                       get_extra=lambda: {"order": order[0].clone()} if order else {},
                       set_extra=lambda extra: order.__setitem__(slice(None), [extra["order"]] if "order" in extra
                                                                 else []))
    batch, per_epoch = int(cfg["batch"]), math.ceil(len(train_idx) / int(cfg["batch"]))
    images, masks = arrays["images"], arrays["masks"]
    ids, attn, img_of = arrays["ids"], arrays["attn"], arrays["image_index"]

    def step_fn(step: int) -> dict[str, float]:
        if step % per_epoch == 0:   # a fresh permutation per epoch
            order[:] = [torch.randperm(len(train_idx), generator=gen_order)]
        pos = step % per_epoch
        sel = train_idx[order[0][pos * batch:(pos + 1) * batch].numpy()]
        b = {"images": to_input(images[img_of[sel]]), "ids": torch.from_numpy(ids[sel].astype(np.int64)),
             "attn": torch.from_numpy(attn[sel].astype(np.int64)),
             "masks": torch.from_numpy(masks[sel].astype(np.float32))}
        model.train()
        losses = model.losses(b, gen_loss)
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        opt.step()
        return {k: float(v.detach()) for k, v in losses.items()}

    history = train_loop(model=model, optimizer=opt, step_fn=step_fn, n_steps=steps, scheduler=sched, state=state,
                         checkpointer=checkpointer, every=int(cfg.get("checkpoint_every", 100)),
                         log_every=int(cfg.get("log_every", 10)), desc="magnet", progress=progress)
    return {"state": model.state_dict(), "history": history}


@torch.no_grad()
def predict(model: M.MagNet, arrays: dict[str, np.ndarray], idx: np.ndarray, batch: int = 64) -> np.ndarray:
    """Probabilities (n, S, S) at the model input's resolution for the expressions `idx`."""
    model.eval()
    out = []
    size = arrays["images"].shape[1]
    for a in range(0, len(idx), batch):
        sel = idx[a:a + batch]
        out.append(model.predict(to_input(arrays["images"][arrays["image_index"][sel]]),
                                 torch.from_numpy(arrays["ids"][sel].astype(np.int64)),
                                 torch.from_numpy(arrays["attn"][sel].astype(np.int64)), size=(size, size)).numpy())
    return np.concatenate(out) if out else np.zeros((0, size, size), np.float32)


def _one_word_masks(ids: np.ndarray, attn: np.ndarray, target_ids: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Mask one colour / shape word per expression (seeded choice among them): (masked ids, targets with -100
    elsewhere, and rows without such a word dropped by the caller: target row all -100)."""
    rng = np.random.default_rng(derive_seed(seed, "mtp-eval"))
    masked, targets = ids.copy(), np.full_like(ids, -100)
    for r in range(len(ids)):
        cand = np.flatnonzero(np.isin(ids[r], target_ids) & (attn[r] > 0))
        if cand.size:
            c = int(rng.choice(cand))
            targets[r, c] = ids[r, c]
            masked[r, c] = M.MASK_ID
    return masked, targets


@torch.no_grad()
def mtp_accuracy(model: M.MagNet, arrays: dict[str, np.ndarray], idx: np.ndarray, word_ids: np.ndarray, seed: int,
                 batch: int = 64) -> dict[str, float]:
    """Masked-token accuracy (%) on one masked colour / shape word per expression, with the true mask, another
    object's mask of the same image, and text only; n = expressions that have such a word and a distractor."""
    model.eval()
    has_other = arrays["has_distractor"][idx] > 0
    idx = idx[has_other]
    masked, targets = _one_word_masks(arrays["ids"][idx], arrays["attn"][idx], word_ids, seed)
    keep = (targets >= 0).any(1)
    idx, masked, targets = idx[keep], masked[keep], targets[keep]
    hits = {"true": 0, "other": 0, "text": 0}
    for a in range(0, len(idx), batch):
        sel = idx[a:a + batch]
        x = to_input(arrays["images"][arrays["image_index"][sel]])
        ids = torch.from_numpy(masked[a:a + batch].astype(np.int64))
        attn = torch.from_numpy(arrays["attn"][sel].astype(np.int64))
        tgt = torch.from_numpy(targets[a:a + batch].astype(np.int64))
        for name, mask, mode in (("true", arrays["masks"][sel], "true"), ("other", arrays["distractor_masks"][sel], "true"),
                                 ("text", arrays["masks"][sel], "zero")):
            logits = model.mg_logits(x, ids, attn, torch.from_numpy(mask.astype(np.float32)), mask_mode=mode)
            pick = tgt >= 0
            hits[name] += int((logits.argmax(-1)[pick] == tgt[pick]).sum())
    n = max(len(idx), 1)
    return {f"mtp_acc_{k}": 100.0 * v / n for k, v in hits.items()} | {"mtp_n": float(len(idx))}


@torch.no_grad()
def alignment(model: M.MagNet, arrays: dict[str, np.ndarray], idx: np.ndarray, batch: int = 64) -> float:
    """Mean over expressions of [mean cos(f_fg, t) − mean cos(f_bg, t)] with the model's pixel features at 1/4
    and its sentence feature (C6); the ground-truth mask is pooled to the feature grid (area > 0.5)."""
    model.eval()
    gaps = []
    for a in range(0, len(idx), batch):
        sel = idx[a:a + batch]
        x = to_input(arrays["images"][arrays["image_index"][sel]])
        ids = torch.from_numpy(arrays["ids"][sel].astype(np.int64))
        attn = torch.from_numpy(arrays["attn"][sel].astype(np.int64))
        out = model(x, ids, attn)
        f = model.pixel_features(out["mask_features"])                    # (B, D, h, w)
        t = model.sentence_features(out["lang"], attn)                    # (B, D)
        cos = torch.einsum("bdhw,bd->bhw", f, t)
        gt = torch.nn.functional.adaptive_avg_pool2d(torch.from_numpy(arrays["masks"][sel].astype(np.float32))[:, None],
                                                     cos.shape[-2:])[:, 0] > 0.5
        for c, g in zip(cos, gt, strict=True):
            if g.any() and (~g).any():
                gaps.append(float(c[g].mean() - c[~g].mean()))
    return float(np.mean(gaps)) if gaps else float("nan")


@torch.no_grad()
def inference_equivalence(model: M.MagNet, mcfg: M.MagNetConfig, arrays: dict[str, np.ndarray],
                          idx: np.ndarray) -> dict[str, float]:
    """Build the same config without MG, load the MG model's inference weights, compare (C4)."""
    plain = M.MagNet(dataclasses.replace(mcfg, mg=False))
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k in plain.state_dict()}, strict=True)
    p_mg, p_plain = predict(model, arrays, idx), predict(plain, arrays, idx)
    return {"inference_params": float(model.inference_parameters()),
            "inference_params_without_mg": float(plain.inference_parameters()),
            "max_prob_diff_without_mg": float(np.abs(p_mg - p_plain).max()) if len(idx) else 0.0}


def run_cached(job: dict[str, Any], cfg: dict[str, Any], seed: int, data_fp: str, code: str, directory: str,
               fit_fn: Callable[[Checkpointer], dict[str, Any]]) -> tuple[dict[str, Any], bool, float]:
    """One job through core's cache; returns (result, was_cached, seconds of training when it ran)."""
    key = job_key(job=job, cfg=cfg, seed=seed, data=data_fp, code=code)
    start = time.perf_counter()

    def timed(ck: Checkpointer) -> dict[str, Any]:
        return {**fit_fn(ck), "seconds": time.perf_counter() - start}

    out, cached = cached_job(directory, f"{job['id']}-s{seed}", key, timed)
    return out, cached, float(out.get("seconds", 0.0))


ENCODER_FIELDS = ("encoder", "dims", "blocks", "conv_kernel", "stem_width", "image_size")


def pretrained_backbone(mcfg: M.MagNetConfig, pcfg: dict[str, Any], seed: int, directory: str,
                        progress: bool = False) -> tuple[str, dict[str, float]]:
    """The image encoder pretrained once for every job (`pretrain.pretrain_encoder`, cached and resumable like a
    job); returns (path of its weights under MagNet's names, for `init_checkpoint`; diagnostics). The path holds
    the cache key, so a job keyed by it changes whenever the pretraining does."""
    from cvpr24.pipelines.magnet import pretrain as P

    key = job_key(job={"id": "pretrain"}, cfg={"pretrain": dict(pcfg),
                                               "encoder": {f: getattr(mcfg, f) for f in ENCODER_FIELDS}},
                  seed=seed, code=fingerprint_files([PACKAGE_DIR / "pretrain.py", PACKAGE_DIR / "model.py",
                                                     PACKAGE_DIR / "data.py",
                                                     PACKAGE_DIR.parent.parent / "core" / "training.py"]))
    start = time.perf_counter()
    out, cached = cached_job(directory, "pretrain", key, lambda ck: {
        **P.pretrain_encoder(mcfg, pcfg, seed, ck, progress), "seconds": time.perf_counter() - start})
    path = Path(directory) / f"pretrain-{key}" / "encoder.pt"
    if not path.is_file():
        atomic_torch_save(out["state"], path)
    return str(path), {"cached": cached, "seconds": float(out.get("seconds", 0.0)), **out["accuracy"]}


_ARRAYS: dict[str, dict[str, np.ndarray]] = {}


def load_arrays(folder: str) -> dict[str, np.ndarray]:
    """The model input a worker reads (memory-mapped .npy files written once by the train node), per process."""
    if folder not in _ARRAYS:
        _ARRAYS[folder] = {f.stem: np.load(f, mmap_mode="r", allow_pickle=False) for f in Path(folder).glob("*.npy")}
    return _ARRAYS[folder]


def train_job(folder: str, job: dict[str, Any], seed: int, cfg: dict[str, Any], vocab_size: int, word_ids: list[int],
              mtp_split: str, data_fp: str, code: str, ckpt: str, progress: bool = False,
              threads: int = 1) -> dict[str, Any]:
    """One job: train (cached), then predictions on the evaluation expressions and the diagnostics."""
    torch.set_num_threads(threads)
    arrays = load_arrays(folder)
    split = np.asarray(arrays["split"])
    train_idx = np.flatnonzero(split == "train")
    eval_idx = np.flatnonzero(arrays["is_eval"] > 0)
    mcfg = model_config(cfg, job["flags"], vocab_size, arrays["ids"].shape[1], arrays["images"].shape[1])
    out, cached, secs = run_cached(job, {k: v for k, v in cfg.items() if k not in ("seeds", "workers", "configs")},
                                   seed, data_fp, code, ckpt, lambda ck: fit(arrays, train_idx, mcfg, cfg, seed, ck,
                                                                              progress))
    model = M.MagNet(mcfg)
    model.load_state_dict(out["state"])
    prob = predict(model, arrays, eval_idx)
    diag: dict[str, float] = {"inference_params": float(model.inference_parameters()),
                              "total_params": float(M.count_parameters(model))}
    mtp_idx = np.flatnonzero(split == mtp_split)
    if mcfg.mg:
        diag |= mtp_accuracy(model, arrays, mtp_idx, np.asarray(word_ids), seed)
        diag |= inference_equivalence(model, mcfg, arrays, mtp_idx)
    if mcfg.mg or mcfg.cal:   # the sentence projection is trained only by MG or CAL
        diag["alignment"] = alignment(model, arrays, mtp_idx)
    return {"bits": np.packbits(MT.binarise(prob), axis=-1), "eval_idx": eval_idx, "cached": cached, "seconds": secs,
            "history": out["history"], "diag": diag}
