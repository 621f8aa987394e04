"""StyleGRU training: the style encoder (pSp substitute), stage 1 (StyleGRU, triplet + BCE as the official
code), stage 2 (content branch + SAM + temporal transformer on the frozen StyleGRU feature), the per-frame
2D CNN baseline and the hand-crafted flow-variance detector; every learned job is checkpointed and cached
through core.training (a killed run resumes; a changed job never reads a stale result).

Clip arrays used here (built by the preprocess node):
  latents   (N, T, 9, 8) float32   encoder latents of every clip's frames
  latents_r (N, T, 9, 8) float32   the augmented view (horizontal flip + crop jitter), stage 1's positives
  frames    (N, T, S, S, 3) uint8  the clip's frames (stage 2 / frame CNN)
  label (N,) 1 = fake, method (N,), split (N,), video_id (N,)
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cvpr24.core.provenance import fingerprint_files
from cvpr24.core.seeding import derive_seed, torch_generator
from cvpr24.core.training import Checkpointer, TrainState, cached_job, job_key, train_loop
from cvpr24.pipelines.stylegru import model as M

PACKAGE_DIR = Path(__file__).parent


def code_fingerprint() -> str:
    return fingerprint_files([PACKAGE_DIR / "model.py", PACKAGE_DIR / "method.py",
                              PACKAGE_DIR.parent.parent / "core" / "training.py"])


def to_float(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (..., T, S, S, 3) -> float (..., 3, T, S, S) in [0, 1] (clips) or (N, 3, S, S) for frames."""
    x = torch.as_tensor(frames).float().div_(255.0)
    if x.ndim == 5:
        return x.permute(0, 4, 1, 2, 3).contiguous()
    return x.permute(0, 3, 1, 2).contiguous()


# ------------------------------------------------------------------------------------ style encoder
def r2_per_level(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Coefficient of determination per level (pooled over its dims): 1 - SSE / SST, (N, L, D) inputs."""
    sse = ((pred - true) ** 2).sum(axis=(0, 2))
    sst = ((true - true.mean(axis=0, keepdims=True)) ** 2).sum(axis=(0, 2))
    return 1.0 - sse / np.maximum(sst, 1e-12)


def fit_encoder(frames: np.ndarray, latents: np.ndarray, val_frames: np.ndarray, val_latents: np.ndarray,
                cfg: dict[str, Any], seed: int, checkpointer: Checkpointer | None = None,
                progress: bool = True) -> dict[str, Any]:
    """Supervised regression of the true latent from a rendered frame (MSE, Adam), spec 8.5."""
    torch.manual_seed(derive_seed(seed, "encoder-init"))
    arch = {"image_size": int(frames.shape[1]), **cfg.get("model", {})}
    enc = M.StyleEncoder(**arch)
    opt = torch.optim.Adam(enc.parameters(), lr=float(cfg["lr"]))
    n, bs = len(frames), int(cfg["batch"])
    steps_per_epoch = max(1, n // bs)
    n_steps = steps_per_epoch * int(cfg["epochs"])
    order = torch_generator(derive_seed(seed, "encoder-order"))
    extra: dict[str, Any] = {"perm": torch.randperm(n, generator=order)}
    x_all, y_all = torch.from_numpy(frames), torch.from_numpy(latents.astype(np.float32))

    def step_fn(step: int) -> dict[str, float]:
        b = step % steps_per_epoch
        if b == 0 and step > 0:
            extra["perm"] = torch.randperm(n, generator=order)
        idx = extra["perm"][b * bs:(b + 1) * bs]
        enc.train()
        loss = F.mse_loss(enc(to_float(x_all[idx])), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return {"loss": float(loss.detach())}

    state = TrainState(generators={"order": order}, get_extra=lambda: {"perm": extra["perm"]},
                       set_extra=lambda s: extra.update(s))
    history = train_loop(model=enc, optimizer=opt, step_fn=step_fn, n_steps=n_steps, state=state,
                         checkpointer=checkpointer, every=int(cfg.get("checkpoint_every", 100)),
                         log_every=int(cfg.get("log_every", 20)), desc="stylegru: style encoder", progress=progress)
    pred = encode_frames(enc, val_frames)
    return {"state": enc.state_dict(), "history": history, "r2": r2_per_level(pred, val_latents).tolist(),
            "config": arch}


@torch.no_grad()
def encode_frames(enc: torch.nn.Module, frames: np.ndarray, batch: int = 512) -> np.ndarray:
    """(N, S, S, 3) uint8 -> (N, 9, 8) float32 latents, eval mode."""
    enc.eval()
    out = [enc(to_float(frames[i:i + batch])).numpy() for i in range(0, len(frames), batch)]
    return np.concatenate(out).astype(np.float32) if out else np.zeros((0, 9, 8), np.float32)


def augmented_view(frames: np.ndarray, rng: np.random.Generator, jitter: int = 2) -> np.ndarray:
    """The `_r` view of one clip (T, S, S, 3): horizontal flip + one random crop shift of up to `jitter`
    pixels (edge-padded), the same for every frame of the clip (a re-crop of the same video)."""
    s = frames.shape[1]
    dy, dx = (int(v) for v in rng.integers(-jitter, jitter + 1, size=2))
    pad = np.pad(frames[:, :, ::-1], ((0, 0), (jitter, jitter), (jitter, jitter), (0, 0)), mode="edge")
    return np.ascontiguousarray(pad[:, jitter + dy:jitter + dy + s, jitter + dx:jitter + dx + s])


def load_encoder(result: dict[str, Any]) -> torch.nn.Module:
    enc = M.StyleEncoder(**result.get("config", {}))
    enc.load_state_dict(result["state"])
    return enc.eval()


def _keep_best(extra: dict[str, Any], net: torch.nn.Module, score: float, at: int) -> None:
    """Model selection on validation: keep the weights of the best score so far (in the checkpoint's extra)."""
    if score > extra["best_score"]:
        extra.update(best_score=score, best_at=at,
                     best_state={k: v.detach().clone() for k, v in net.state_dict().items()})


def _restore_best(net: torch.nn.Module, extra: dict[str, Any]) -> None:
    if extra["best_state"] is not None:
        net.load_state_dict(extra["best_state"])


# ------------------------------------------------------------------------------------------ stage 1
def style_input(latents: np.ndarray | torch.Tensor, job: dict[str, Any]) -> torch.Tensor:
    """(N, T, 9, 8) -> (N, T-1, dims): the flow (s_{t+1} - s_t) of the chosen levels, or for the latent
    ablation the latents s_1..s_{T-1} themselves (same number of steps, so the network is the same)."""
    x = M.select_levels(torch.as_tensor(latents), job["levels"])
    return M.style_flow(x) if job["input"] == "flow" else x[:, 1:]


def _sample_triplets(labels: np.ndarray, n: int, gen: torch.Generator) -> tuple[torch.Tensor, ...]:
    """The official sampler: y ~ U{0, 1}; anchor = a clip of label y (original view), positive = a clip of
    label y from the augmented view, negative = a clip of label 1 - y from either view (coin flip).
    Returns indices (anchor, positive, negative), the negative's view flag and y."""
    pools = [torch.from_numpy(np.flatnonzero(labels == c)) for c in (0, 1)]
    y = torch.randint(0, 2, (n,), generator=gen)
    pick = [torch.randint(0, 1 << 30, (n,), generator=gen) for _ in range(3)]
    neg_view = torch.randint(0, 2, (n,), generator=gen).bool()

    def take(cls: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        out = torch.empty(n, dtype=torch.long)
        for c in (0, 1):
            m = cls == c
            out[m] = pools[c][r[m] % len(pools[c])]
        return out

    return take(y, pick[0]), take(y, pick[1]), take(1 - y, pick[2]), neg_view, y


def fit_stage1(train: dict[str, np.ndarray], val: dict[str, np.ndarray], job: dict[str, Any],
               cfg: dict[str, Any], seed: int, checkpointer: Checkpointer | None = None,
               progress: bool = True) -> dict[str, Any]:
    """StyleGRU stage 1 (spec 2.4, official train.py): per epoch `triplets` fresh triplets in batches;
    loss = BCE on the three logits + margin ranking loss on the E_style distances (`loss: triplet`), BCE
    alone (`bce`) or BCE + SupCon (`supcon`); the best epoch by val clip accuracy (logit > 0.5, as the code)."""
    xa, xr = style_input(train["latents"], job), style_input(train["latents_r"], job)
    labels = train["label"].astype(np.int64)
    xv, yv = style_input(val["latents"], job), torch.from_numpy(val["label"].astype(np.float32))
    torch.manual_seed(derive_seed(seed, job["id"], "init"))
    net = M.StyleGRU(xa.shape[-1], xa.shape[1], **cfg["model"])
    opt = torch.optim.Adam(net.parameters(), lr=float(cfg["lr"]))
    bs = int(cfg["batch"])
    per_epoch = max(1, int(cfg["triplets"]) // bs)
    n_steps = per_epoch * int(cfg["epochs"])
    gen = torch_generator(derive_seed(seed, job["id"], "triplets"))
    extra: dict[str, Any] = {"best_score": -1.0, "best_state": None, "best_at": -1}

    def val_acc() -> float:
        net.eval()
        with torch.no_grad():
            logit, _ = net(xv)
        net.train()
        return float(((logit > 0.5).float() == yv).float().mean())

    def step_fn(step: int) -> dict[str, float]:
        net.train()
        a, p, ng, nview, y = _sample_triplets(labels, bs, gen)
        x_n = torch.where(nview[:, None, None], xr[ng], xa[ng])
        # three calls, as the official TripletNet: three latent-dropout masks and BN batch statistics per
        # step (one call on the concatenation changes train-mode outputs by up to 1.3 in logit)
        (l_a, e_a), (l_p, e_p), (l_n, e_n) = net(xa[a]), net(xr[p]), net(x_n)
        logit, emb = torch.cat([l_a, l_p, l_n]), torch.cat([e_a, e_p, e_n])
        target = torch.cat([y, y, 1 - y]).float()
        loss = F.binary_cross_entropy_with_logits(logit, target)
        if job["loss"] == "triplet":
            loss = loss + M.triplet_loss(e_a, e_p, e_n, margin=float(cfg["margin"]))
        elif job["loss"] == "supcon":
            loss = loss + M.supcon_loss(emb, target.long(), tau=float(cfg.get("tau", 0.07)))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        out = {"loss": float(loss.detach())}
        if (step + 1) % per_epoch == 0:
            acc = val_acc()
            out["val_acc"] = acc
            _keep_best(extra, net, acc, (step + 1) // per_epoch)
        return out

    state = TrainState(generators={"triplets": gen}, get_extra=lambda: dict(extra), set_extra=extra.update)
    history = train_loop(model=net, optimizer=opt, step_fn=step_fn, n_steps=n_steps, state=state,
                         checkpointer=checkpointer, every=per_epoch, log_every=int(cfg.get("log_every", 25)),
                         desc=f"stylegru: {job['id']}", progress=progress)
    _restore_best(net, extra)
    return {"state": net.state_dict(), "history": history, "best_epoch": int(extra["best_at"]),
            "best_val_acc": float(extra["best_score"]), "in_dim": int(xa.shape[-1]), "steps": int(xa.shape[1])}


def stylegru_from(result: dict[str, Any], cfg: dict[str, Any]) -> torch.nn.Module:
    net = M.StyleGRU(int(result["in_dim"]), int(result["steps"]), **cfg["model"])
    net.load_state_dict(result["state"])
    return net.eval()


@torch.no_grad()
def stylegru_outputs(net: torch.nn.Module, latents: np.ndarray, job: dict[str, Any],
                     batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Clip logits (N,) and E_style (N, E) of a trained StyleGRU in eval mode."""
    x = style_input(latents, job)
    logits, embs = [], []
    for i in range(0, len(x), batch):
        lg, e = net(x[i:i + batch])
        logits.append(lg.numpy())
        embs.append(e.numpy())
    return np.concatenate(logits).astype(np.float32), np.concatenate(embs).astype(np.float32)


# ------------------------------------------------------------------------------------------ stage 2
def _balanced_batch(labels: np.ndarray, bs: int, gen: torch.Generator) -> torch.Tensor:
    """Half real, half fake clips (FF++ has four fakes per real video)."""
    idx = []
    for c, k in ((0, bs // 2), (1, bs - bs // 2)):
        pool = torch.from_numpy(np.flatnonzero(labels == c))
        idx.append(pool[torch.randint(0, len(pool), (k,), generator=gen)])
    return torch.cat(idx)


def build_detector(job: dict[str, Any], cfg: dict[str, Any], style_dim: int, clip_len: int) -> torch.nn.Module:
    if job["model"] == "frame":
        return M.FrameCNN(**cfg.get("frame_model", {}))
    return M.Detector(fusion=job["fusion"], style_dim=style_dim or 256, clip_len=clip_len, **cfg["model"])


def fit_stage2(train: dict[str, np.ndarray], val: dict[str, np.ndarray], job: dict[str, Any],
               cfg: dict[str, Any], seed: int, checkpointer: Checkpointer | None = None,
               progress: bool = True) -> dict[str, Any]:
    """The detector (or the per-frame CNN) with BCE on balanced batches of clips, AdamW; StyleGRU is
    frozen (its E_style per clip comes precomputed in `train["e_style"]`). The best step by val AUC."""
    from sklearn.metrics import roc_auc_score

    e_tr = torch.from_numpy(train["e_style"]) if "e_style" in train else None
    e_va = torch.from_numpy(val["e_style"]) if "e_style" in val else None
    torch.manual_seed(derive_seed(seed, job["id"], "init"))
    clip_len = int(train["frames"].shape[1])
    net = build_detector(job, cfg, 0 if e_tr is None else int(e_tr.shape[1]), clip_len)
    opt = torch.optim.AdamW(net.parameters(), lr=float(cfg["lr"]), weight_decay=float(cfg["weight_decay"]))
    n_steps, bs, every = int(cfg["steps"]), int(cfg["batch"]), int(cfg["val_every"])
    gen = torch_generator(derive_seed(seed, job["id"], "batches"))
    labels = train["label"].astype(np.int64)
    frames = torch.from_numpy(train["frames"])
    extra: dict[str, Any] = {"best_score": -1.0, "best_state": None, "best_at": -1}

    def forward(fr: torch.Tensor, e: torch.Tensor | None) -> torch.Tensor:
        return net(to_float(fr)) if job["model"] == "frame" else net(to_float(fr), e)

    def val_auc() -> float:
        logits = predict_stage2(net, job, val["frames"], e_va)
        return float(roc_auc_score(val["label"], logits)) if len(set(val["label"].tolist())) == 2 else 0.0

    def step_fn(step: int) -> dict[str, float]:
        net.train()
        idx = _balanced_batch(labels, bs, gen)
        logit = forward(frames[idx], None if e_tr is None else e_tr[idx])
        loss = F.binary_cross_entropy_with_logits(logit, torch.from_numpy(labels)[idx].float())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        out = {"loss": float(loss.detach())}
        if (step + 1) % every == 0 or step + 1 == n_steps:
            auc = val_auc()
            out["val_auc"] = auc
            _keep_best(extra, net, auc, step + 1)
        return out

    state = TrainState(generators={"batches": gen}, get_extra=lambda: dict(extra), set_extra=extra.update)
    history = train_loop(model=net, optimizer=opt, step_fn=step_fn, n_steps=n_steps, state=state,
                         checkpointer=checkpointer, every=every, log_every=int(cfg.get("log_every", 10)),
                         desc=f"stylegru: {job['id']}", progress=progress)
    _restore_best(net, extra)
    return {"state": net.state_dict(), "history": history, "best_step": int(extra["best_at"]),
            "best_val_auc": float(extra["best_score"]), "style_dim": 0 if e_tr is None else int(e_tr.shape[1]),
            "clip_len": clip_len}


@torch.no_grad()
def predict_stage2(net: torch.nn.Module, job: dict[str, Any], frames: np.ndarray, e_style: Any,
                   batch: int = 64) -> np.ndarray:
    net.eval()
    out = []
    for i in range(0, len(frames), batch):
        fr = to_float(frames[i:i + batch])
        if job["model"] == "frame":
            out.append(net(fr).numpy())
        else:
            e = None if e_style is None else torch.as_tensor(e_style[i:i + batch])
            out.append(net(fr, e).numpy())
    return np.concatenate(out).astype(np.float32) if out else np.zeros(0, np.float32)


def detector_from(result: dict[str, Any], job: dict[str, Any], cfg: dict[str, Any]) -> torch.nn.Module:
    net = build_detector(job, cfg, int(result["style_dim"]), int(result["clip_len"]))
    net.load_state_dict(result["state"])
    return net.eval()


# --------------------------------------------------------------------- hand-crafted Fig. 1 detector
def flow_variance_features(latents: np.ndarray) -> np.ndarray:
    """(N, T, L, D) -> (N, L): log variance over time of the style flow, averaged over each level's dims."""
    flow = np.diff(latents, axis=1)
    return np.log(flow.var(axis=1).mean(axis=-1) + 1e-8)


def fit_flow_variance_lr(train: dict[str, np.ndarray], seed: int):
    """Per-level flow variance + logistic regression (balanced classes): the direct test of Fig. 1."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=2000,
                                                             random_state=seed))
    clf.fit(flow_variance_features(train["latents"]), train["label"])
    return clf


# ------------------------------------------------------------------------------------------- cache
def run_cached(kind: str, job: dict[str, Any], cfg: dict[str, Any], seed: int, data_fp: str, code: str,
               directory: str, fit: Callable[[Checkpointer], dict[str, Any]]) -> tuple[dict[str, Any], bool, float]:
    """One job through core's cache; returns (result, was_cached, seconds of training when it ran)."""
    key = job_key(kind=kind, job=job, cfg=cfg, seed=seed, data=data_fp, code=code)
    start = time.perf_counter()

    def timed(ck: Checkpointer) -> dict[str, Any]:
        out = fit(ck)
        return {**out, "seconds": time.perf_counter() - start}

    out, cached = cached_job(directory, f"{kind}-{job['id']}-s{seed}", key, timed)
    return out, cached, float(out.get("seconds", 0.0))
