"""Tiny mAV-HuBERT: the unified audio-visual speech unit extractor of the embedded profile (spec 2.2, 8.4).

Architecture (AV-HuBERT, scaled down): a per-frame 3-layer 2D CNN on 28x28 lip crops -> 128 and a linear
audio front-end 104 -> 128, concatenated (`modality_fuse: concat`) -> LayerNorm -> projection to d ->
Transformer encoder -> `final_proj` -> cosine-similarity logits (temperature 0.1) against learned label
embeddings of TWO label sets, the even and odd 50 Hz units of each 25 Hz frame. Units are the argmax of each
head interleaved [even0, odd0, even1, odd1, ...] (official av2unit unit extraction).

Training (AV-HuBERT `apply_input_mask` + `forward`): span masks (fairseq `compute_mask_indices`, static
lengths, overlapping spans allowed) drawn INDEPENDENTLY for audio and video; masked audio frames become a
learned mask embedding, masked video frames are replaced by the same frames of another utterance in the
batch (`selection_type: same_other_seq`; zeros when the batch holds one utterance); the loss is on the
union of both masks (pred_masked_weight 1, pred_nomask_weight 0 as HuBERT/AV-HuBERT). Modality dropout
zeroes one stream's front-end FEATURES (AV-HuBERT zeroes `features_audio`/`features_video`, and uses zero
features for a missing modality at inference). Noise augmentation is the caller's (noisy audio features are
passed in, p=0.5); targets are always the clean-audio units.

Deviations (embedded, spec 8.4): tiny sizes; 3-layer CNN instead of ResNet-18; a convolutional positional
embedding of kernel 15 instead of 128; modality dropout drawn per utterance instead of once per batch (less
variance with tiny batches); targets are k-means units of MFCC (iteration 1) / of layer-3 features
(iteration 2) instead of mHuBERT units.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cvpr24.core.training import Checkpointer, TrainState, train_loop
from cvpr24.pipelines.av2av.common import LIP, LIP_CROP
from cvpr24.pipelines.av2av.features import lip_input

AUDIO_DIM = 104

DEFAULTS: dict[str, Any] = {
    # model
    "K": 100,               # classes per head (units)
    "d": 256,               # transformer width
    "layers": 4,
    "heads": 4,
    "ffn": 512,
    "dropout": 0.1,
    "frontend": 128,        # per-modality front-end width (concat -> 2*frontend)
    "final_dim": 128,       # final_proj embedding size (per head)
    "temperature": 0.1,     # cosine logit temperature
    # training
    "steps": 300,
    "batch_size": 16,
    "lr": 5e-4,
    "warmup": 0.1,          # fraction of steps with linear warm-up
    "weight_decay": 0.0,
    "mask_prob": 0.65,
    "mask_length": 5,
    "modality_dropout": 0.5,
    "audio_dropout": 0.5,   # P(drop audio | a modality is dropped)
    "noise_prob": 0.5,      # P(use a noisy audio version) per utterance
    "pred_nomask_weight": 0.0,
    "max_frames": 0,        # random crop of longer utterances (25 Hz frames); 0 = no crop
    "ckpt_every": 100,
}

_INT_KEYS = {"K", "d", "layers", "heads", "ffn", "frontend", "final_dim", "steps", "batch_size", "mask_length",
             "max_frames", "ckpt_every"}
_PROB_KEYS = {"dropout", "warmup", "mask_prob", "modality_dropout", "audio_dropout", "noise_prob"}


def validate_config(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """DEFAULTS updated with `cfg`; unknown keys or bad values raise ValueError naming the key."""
    cfg = dict(cfg or {})
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown unit-model config key(s) {sorted(unknown)}; valid keys: {sorted(DEFAULTS)}")
    out = {**DEFAULTS, **cfg}
    for k in _INT_KEYS:
        v = out[k]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ValueError(f"unit-model config {k!r} must be an int, got {v!r}")
        if v < (0 if k == "max_frames" else 1):
            raise ValueError(f"unit-model config {k!r} must be positive, got {v!r}")
        out[k] = int(v)
    for k in _PROB_KEYS:
        if not 0.0 <= float(out[k]) <= 1.0:
            raise ValueError(f"unit-model config {k!r} must be in [0, 1], got {out[k]!r}")
    for k in ("lr", "temperature"):
        if not float(out[k]) > 0:
            raise ValueError(f"unit-model config {k!r} must be > 0, got {out[k]!r}")
    if float(out["weight_decay"]) < 0 or float(out["pred_nomask_weight"]) < 0:
        raise ValueError("unit-model config 'weight_decay' and 'pred_nomask_weight' must be >= 0")
    if out["d"] % out["heads"]:
        raise ValueError(f"unit-model config 'd' ({out['d']}) must be divisible by 'heads' ({out['heads']})")
    if out["K"] < 2:
        raise ValueError("unit-model config 'K' must be >= 2")
    return out


# --------------------------------------------------------------------------------------------- model
class TinyAVHubert(nn.Module):
    """Tiny AV-HuBERT with two cosine-similarity unit heads (even / odd 50 Hz positions)."""

    def __init__(self, cfg: dict[str, Any] | None = None):
        super().__init__()
        c = validate_config(cfg)
        self.cfg = c
        fe, d = c["frontend"], c["d"]
        c1, c2 = max(4, fe // 4), max(8, fe // 2)   # CNN widths 32/64/128 at the default frontend 128
        self.audio_frontend = nn.Linear(AUDIO_DIM, fe)
        self.video_frontend = nn.Sequential(
            nn.Conv2d(1, c1, 3, stride=2, padding=1), nn.PReLU(c1),    # 28 -> 14
            nn.Conv2d(c1, c2, 3, stride=2, padding=1), nn.PReLU(c2),   # 14 -> 7
            nn.Conv2d(c2, fe, 3, stride=2, padding=1), nn.PReLU(fe),   # 7 -> 4
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.mask_emb = nn.Parameter(torch.empty(AUDIO_DIM).uniform_())  # AV-HuBERT: uniform audio mask emb
        self.layer_norm = nn.LayerNorm(2 * fe)
        self.post_proj = nn.Linear(2 * fe, d)
        self.dropout = nn.Dropout(c["dropout"])
        self.pos_conv = nn.Conv1d(d, d, 15, padding=7, groups=16 if d % 16 == 0 else 1)
        self.pos_norm = nn.LayerNorm(d)
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(d, c["heads"], c["ffn"], c["dropout"], activation="gelu", batch_first=True)
            for _ in range(c["layers"])
        )
        self.final_proj = nn.Linear(d, 2 * c["final_dim"])   # untied: one projection per label set
        self.label_embs = nn.Parameter(torch.empty(2, c["K"], c["final_dim"]).uniform_())

    # -- pieces -------------------------------------------------------------------------------------
    def _frontends(self, audio: torch.Tensor | None, video: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if audio is None and video is None:
            raise ValueError("give audio, video or both to the unit model")
        ref = audio if audio is not None else video
        b, t = ref.shape[:2]
        fe = self.cfg["frontend"]
        if audio is not None:
            if audio.ndim != 3 or audio.shape[2] != AUDIO_DIM:
                raise ValueError(f"audio must be (B, T, {AUDIO_DIM}) stacked fbank, got {tuple(audio.shape)}")
            fa = self.audio_frontend(audio)
        else:
            fa = ref.new_zeros(b, t, fe)
        if video is not None:
            if video.ndim != 4 or video.shape[2:] != (LIP_CROP, LIP_CROP):
                raise ValueError(f"video must be (B, T, {LIP_CROP}, {LIP_CROP}) lip crops, got {tuple(video.shape)}")
            if video.shape[:2] != (b, t):
                raise ValueError(f"audio and video lengths differ: {(b, t)} vs {tuple(video.shape[:2])}")
            fv = self.video_frontend(video.reshape(b * t, 1, LIP_CROP, LIP_CROP)).reshape(b, t, fe)
        else:
            fv = ref.new_zeros(b, t, fe)
        return fa, fv

    def _encode(self, fa: torch.Tensor, fv: torch.Tensor, padding_mask: torch.Tensor | None) -> list[torch.Tensor]:
        """Hidden states: [input to layer 1, output of layer 1, ..., output of the last layer]."""
        x = self.post_proj(self.layer_norm(torch.cat([fa, fv], dim=-1)))
        if padding_mask is not None:
            x = x.masked_fill(padding_mask[..., None], 0.0)
        x = x + F.gelu(self.pos_conv(x.transpose(1, 2))).transpose(1, 2)
        x = self.dropout(self.pos_norm(x))
        states = [x]
        for layer in self.layers:
            x = layer(x, src_key_padding_mask=padding_mask)
            states.append(x)
        return states

    def _heads(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.final_proj(h).reshape(*h.shape[:2], 2, self.cfg["final_dim"])
        z = F.normalize(z, dim=-1)
        e = F.normalize(self.label_embs, dim=-1)
        logits = torch.einsum("btsf,skf->btsk", z, e) / self.cfg["temperature"]
        return logits[:, :, 0], logits[:, :, 1]

    # -- public -------------------------------------------------------------------------------------
    def forward(self, audio: torch.Tensor | None, video: torch.Tensor | None,
                padding_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """audio (B,T,104) or None, video (B,T,28,28) or None, padding_mask (B,T) True = pad
        -> (logits_even (B,T,K), logits_odd (B,T,K)). A missing modality is zero features."""
        fa, fv = self._frontends(audio, video)
        return self._heads(self._encode(fa, fv, padding_mask)[-1])

    def features(self, audio: torch.Tensor | None, video: torch.Tensor | None,
                 padding_mask: torch.Tensor | None = None, layer: int = 3) -> torch.Tensor:
        """(B, T, d) hidden states after transformer layer `layer` (1-based; 0 = encoder input)."""
        if not 0 <= layer <= self.cfg["layers"]:
            raise ValueError(f"layer must be in [0, {self.cfg['layers']}], got {layer}")
        fa, fv = self._frontends(audio, video)
        return self._encode(fa, fv, padding_mask)[layer]


# ------------------------------------------------------------------------------------------ helpers
def interleave(even: np.ndarray | torch.Tensor, odd: np.ndarray | torch.Tensor) -> np.ndarray:
    """(T,) even-head and (T,) odd-head units -> (2T,) int64 ordered [e0, o0, e1, o1, ...]."""
    e, o = np.asarray(even), np.asarray(odd)
    if e.shape != o.shape or e.ndim != 1:
        raise ValueError(f"even and odd units must be 1-D of equal length, got {e.shape} and {o.shape}")
    out = np.empty(2 * len(e), np.int64)
    out[0::2], out[1::2] = e, o
    return out


def span_mask(t: int, prob: float = 0.65, length: int = 5, gen: torch.Generator | None = None,
              min_masks: int = 2) -> torch.Tensor:
    """(T,) bool span mask, fairseq `compute_mask_indices` semantics (static spans, overlap allowed):
    int(prob*T/length + U[0,1)) span starts (at least `min_masks`), drawn without replacement from
    [0, T-length], each masking `length` frames. Overlaps make the covered fraction a bit below `prob`."""
    if t < 1:
        raise ValueError(f"T must be >= 1, got {t}")
    if prob <= 0:
        return torch.zeros(t, dtype=torch.bool)
    length = min(length, t)
    u = float(torch.rand((), generator=gen))
    n = max(min_masks, int(prob * t / length + u))
    n_starts = t - length + 1
    n = min(n, n_starts)
    starts = torch.randperm(n_starts, generator=gen)[:n]
    mask = torch.zeros(t, dtype=torch.bool)
    for s in starts.tolist():
        mask[s:s + length] = True
    return mask


def modality_dropout(audio: torch.Tensor, video: torch.Tensor, p: float = 0.5, gen: torch.Generator | None = None,
                     audio_p: float = 0.5) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per utterance, with prob p zero exactly one stream (audio with prob audio_p, else video).

    audio, video: (B, T, ...) (front-end features in training). Returns (audio, video, which) where
    which (B,) int64 is 0 = both kept, 1 = audio zeroed, 2 = video zeroed."""
    b = audio.shape[0]
    if video.shape[0] != b:
        raise ValueError("audio and video batch sizes differ")
    drop = torch.rand(b, generator=gen) < p
    drop_audio = torch.rand(b, generator=gen) < audio_p
    which = torch.where(drop, torch.where(drop_audio, 1, 2), 0).long()
    keep_a = (which != 1).to(audio.dtype).reshape(b, *([1] * (audio.ndim - 1)))
    keep_v = (which != 2).to(video.dtype).reshape(b, *([1] * (video.ndim - 1)))
    return audio * keep_a, video * keep_v, which


def _crop_lips_torch(lip: np.ndarray, gen: torch.Generator) -> np.ndarray:
    return lip_input(lip, train=True, gen=gen)


def _check_lists(audio_feats, lips, targets) -> None:
    if not (len(audio_feats) == len(lips) == len(targets)) or not audio_feats:
        raise ValueError(f"audio_feats, lips and targets must be equal-length non-empty lists, got "
                         f"{len(audio_feats)}, {len(lips)}, {len(targets)}")
    for i, (a, v, y) in enumerate(zip(audio_feats, lips, targets, strict=True)):
        a, v, y = np.asarray(a), np.asarray(v), np.asarray(y)
        if a.ndim != 2 or a.shape[1] != AUDIO_DIM:
            raise ValueError(f"audio_feats[{i}] must be (T, {AUDIO_DIM}), got {a.shape}")
        if v.shape != (a.shape[0], LIP, LIP):
            raise ValueError(f"lips[{i}] must be (T={a.shape[0]}, {LIP}, {LIP}) to match its audio, got {v.shape}")
        if y.shape != (2 * a.shape[0],):
            raise ValueError(f"targets[{i}] must be (2T={2 * a.shape[0]},) units, got {y.shape}")


NoisyAudio = Sequence[np.ndarray | Sequence[np.ndarray]] | Callable[[int, torch.Generator], np.ndarray] | None


def _noisy_version(noisy: NoisyAudio, i: int, gen: torch.Generator) -> np.ndarray | None:
    if noisy is None:
        return None
    if callable(noisy):
        return np.asarray(noisy(i, gen), np.float32)
    item = noisy[i]
    if isinstance(item, np.ndarray) and item.ndim == 2:
        return item
    versions = list(item)
    if not versions:
        return None
    return np.asarray(versions[int(torch.randint(0, len(versions), (1,), generator=gen))], np.float32)


def fit_unit_model(
    audio_feats: Sequence[np.ndarray],
    noisy_audio_feats: NoisyAudio,
    lips: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    cfg: dict[str, Any] | None,
    seed: int,
    checkpointer: Checkpointer | None = None,
    progress: bool = False,
    stop_at: int | None = None,
    init_state: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, torch.Tensor], list[dict[str, float]]]:
    """Train TinyAVHubert on (clean audio features, lips) -> clean-audio units; returns (state_dict, history).

    audio_feats[i] (T_i, 104) float32 (features.audio_input of the CLEAN wave); lips[i] (T_i, 32, 32) uint8;
    targets[i] (2 T_i,) int in [0, K). noisy_audio_feats: None, or per utterance one (T_i, 104) array or a
    list of them (e.g. babble at 10/5/0/-5 dB; one is picked uniformly), or a callable (i, torch.Generator)
    -> (T_i, 104); with prob cfg['noise_prob'] an utterance's audio input is a noisy version (targets stay
    clean). `stop_at` pauses after that many steps (checkpointed; a later call resumes). Each step: a batch
    of `batch_size` utterances drawn with replacement, padded; Adam; linear warm-up; CE of both heads on
    masked frames. Bit-identical run to run and across a resume."""
    c = validate_config(cfg)
    _check_lists(audio_feats, lips, targets)
    for i, y in enumerate(targets):
        y = np.asarray(y)
        if y.min() < 0 or y.max() >= c["K"]:
            raise ValueError(f"targets[{i}] holds units outside [0, K={c['K']}); set cfg['K'] to the k-means size")
    if noisy_audio_feats is not None and not callable(noisy_audio_feats) and len(noisy_audio_feats) != len(audio_feats):
        raise ValueError("noisy_audio_feats must have one entry per utterance (or be a callable or None)")

    torch.manual_seed(seed)  # model init and dropout; the loop checkpoints the global RNG state
    model = TinyAVHubert(c)
    if init_state is not None:
        model.load_state_dict(init_state)
    gen = torch.Generator().manual_seed(seed + 1)
    opt = torch.optim.Adam(model.parameters(), lr=c["lr"], weight_decay=c["weight_decay"])
    warm = max(1, int(c["warmup"] * c["steps"]))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    n = len(audio_feats)
    k = c["K"]

    def batch(step: int):
        idx = torch.randint(0, n, (c["batch_size"],), generator=gen).tolist()
        auds, vids, ys = [], [], []
        for i in idx:
            a = np.asarray(audio_feats[i], np.float32)
            if c["noise_prob"] > 0 and float(torch.rand((), generator=gen)) < c["noise_prob"]:
                noisy = _noisy_version(noisy_audio_feats, i, gen)
                if noisy is not None:
                    if noisy.shape != a.shape:
                        raise ValueError(f"noisy audio features of utterance {i} have shape {noisy.shape}, "
                                         f"expected {a.shape}")
                    a = noisy
            v = np.asarray(lips[i])
            y = np.asarray(targets[i], np.int64)
            t = a.shape[0]
            if c["max_frames"] and t > c["max_frames"]:
                s = int(torch.randint(0, t - c["max_frames"] + 1, (1,), generator=gen))
                a, v, y = a[s:s + c["max_frames"]], v[s:s + c["max_frames"]], y[2 * s:2 * (s + c["max_frames"])]
            auds.append(a)
            vids.append(_crop_lips_torch(v, gen))
            ys.append(y)
        tmax = max(len(a) for a in auds)
        b = len(auds)
        audio = torch.zeros(b, tmax, AUDIO_DIM)
        video = torch.zeros(b, tmax, LIP_CROP, LIP_CROP)
        tgt = torch.full((b, 2 * tmax), -100, dtype=torch.long)
        pad = torch.ones(b, tmax, dtype=torch.bool)
        for j, (a, v, y) in enumerate(zip(auds, vids, ys, strict=True)):
            t = len(a)
            audio[j, :t] = torch.from_numpy(a)
            video[j, :t] = torch.from_numpy(v)
            tgt[j, :2 * t] = torch.from_numpy(y)
            pad[j, :t] = False
        return audio, video, tgt, pad, [len(a) for a in auds]

    def step_fn(step: int) -> dict[str, float]:
        model.train()
        audio, video, tgt, pad, lens = batch(step)
        b, tmax = pad.shape
        mask_a = torch.zeros(b, tmax, dtype=torch.bool)
        mask_v = torch.zeros(b, tmax, dtype=torch.bool)
        for j, t in enumerate(lens):
            mask_a[j, :t] = span_mask(t, c["mask_prob"], c["mask_length"], gen)
            mask_v[j, :t] = span_mask(t, c["mask_prob"], c["mask_length"], gen)
        audio = torch.where(mask_a[..., None], model.mask_emb.expand_as(audio), audio)
        if b > 1:  # same_other_seq: masked lip frames come from another utterance of the batch
            shift = int(torch.randint(1, b, (1,), generator=gen))
            perm = (torch.arange(b) + shift) % b
            video = torch.where(mask_v[..., None, None], video[perm], video)
        else:
            video = video.masked_fill(mask_v[..., None, None], 0.0)
        fa, fv = model._frontends(audio, video)
        fa, fv, _ = modality_dropout(fa, fv, c["modality_dropout"], gen, c["audio_dropout"])
        le, lo = model._heads(model._encode(fa, fv, pad)[-1])
        masked = (mask_a | mask_v) & ~pad
        unmasked = ~(mask_a | mask_v) & ~pad
        te, to = tgt[:, 0::2], tgt[:, 1::2]

        def ce(sel: torch.Tensor) -> torch.Tensor:
            if not bool(sel.any()):
                return le.new_zeros(())
            return 0.5 * (F.cross_entropy(le[sel].reshape(-1, k), te[sel]) +
                          F.cross_entropy(lo[sel].reshape(-1, k), to[sel]))

        loss_m = ce(masked)
        loss = loss_m
        if c["pred_nomask_weight"] > 0:
            loss = loss + c["pred_nomask_weight"] * ce(unmasked)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        with torch.no_grad():
            valid = ~pad
            acc = 0.5 * ((le.argmax(-1) == te)[valid].float().mean() + (lo.argmax(-1) == to)[valid].float().mean())
        return {"loss": float(loss.detach()), "loss_masked": float(loss_m.detach()), "acc": float(acc)}

    history = train_loop(model=model, optimizer=opt, step_fn=step_fn, n_steps=c["steps"], scheduler=sched,
                         state=TrainState(generators={"unit_gen": gen}), checkpointer=checkpointer,
                         every=c["ckpt_every"], log_every=max(1, min(10, c["steps"] // 20)),
                         desc="av2av-units", progress=progress, stop_at=stop_at)
    model.eval()
    return {k_: v.detach().clone() for k_, v in model.state_dict().items()}, history


def load_unit_model(state_dict: dict[str, torch.Tensor], cfg: dict[str, Any] | None) -> TinyAVHubert:
    """A TinyAVHubert in eval mode with the given weights."""
    model = TinyAVHubert(cfg)
    model.load_state_dict(state_dict)
    return model.eval()


# ---------------------------------------------------------------------------------------- inference
def _batched_inputs(audio_feats, lips, start: int, stop: int):
    src = audio_feats if audio_feats is not None else lips
    lens = [len(src[i]) for i in range(start, stop)]
    tmax, b = max(lens), stop - start
    audio = video = None
    if audio_feats is not None:
        audio = torch.zeros(b, tmax, AUDIO_DIM)
        for j, i in enumerate(range(start, stop)):
            a = np.asarray(audio_feats[i], np.float32)
            if a.ndim != 2 or a.shape[1] != AUDIO_DIM:
                raise ValueError(f"audio_feats[{i}] must be (T, {AUDIO_DIM}), got {a.shape}")
            audio[j, :len(a)] = torch.from_numpy(a)
    if lips is not None:
        video = torch.zeros(b, tmax, LIP_CROP, LIP_CROP)
        for j, i in enumerate(range(start, stop)):
            v = lip_input(np.asarray(lips[i]), train=False)
            if len(v) != lens[j]:
                raise ValueError(f"lips[{i}] has {len(v)} frames but its audio has {lens[j]}")
            video[j, :len(v)] = torch.from_numpy(v)
    pad = torch.ones(b, tmax, dtype=torch.bool)
    for j, t in enumerate(lens):
        pad[j, :t] = False
    return audio, video, pad, lens


def _as_list(x):
    if x is None:
        return None
    if isinstance(x, np.ndarray):
        return [x]
    return list(x)


@torch.no_grad()
def extract_units_batch(model: TinyAVHubert, audio_feats: Sequence[np.ndarray] | None,
                        lips: Sequence[np.ndarray] | None, batch_size: int = 32) -> list[np.ndarray]:
    """Units (2T_i,) int64 for many utterances; audio_feats[i] (T_i,104) and/or lips[i] (T_i,32,32) uint8.
    Pass None for a modality to run audio-only or video-only (its features are zeros)."""
    if audio_feats is None and lips is None:
        raise ValueError("extract_units needs audio features, lips or both")
    if audio_feats is not None and lips is not None and len(audio_feats) != len(lips):
        raise ValueError(f"{len(audio_feats)} audio utterances but {len(lips)} lip videos")
    model.eval()
    n = len(audio_feats if audio_feats is not None else lips)
    out: list[np.ndarray] = []
    for s in range(0, n, batch_size):
        e = min(n, s + batch_size)
        audio, video, pad, lens = _batched_inputs(audio_feats, lips, s, e)
        le, lo = model(audio, video, pad)
        ev, od = le.argmax(-1).numpy(), lo.argmax(-1).numpy()
        out.extend(interleave(ev[j, :t], od[j, :t]) for j, t in enumerate(lens))
    return out


def extract_units(model: TinyAVHubert, audio_feats: np.ndarray | None, lips: np.ndarray | None) -> np.ndarray:
    """(2T,) int64 units of one utterance: argmax of the even/odd heads, interleaved."""
    return extract_units_batch(model, _as_list(audio_feats), _as_list(lips), batch_size=1)[0]


@torch.no_grad()
def layer_features(model: TinyAVHubert, audio_feats: Sequence[np.ndarray] | None,
                   lips: Sequence[np.ndarray] | None, layer: int = 3, batch_size: int = 32) -> list[np.ndarray]:
    """Per utterance (T_i, d) float32 hidden states after transformer layer `layer` (25 Hz)."""
    if audio_feats is None and lips is None:
        raise ValueError("layer_features needs audio features, lips or both")
    model.eval()
    n = len(audio_feats if audio_feats is not None else lips)
    out: list[np.ndarray] = []
    for s in range(0, n, batch_size):
        e = min(n, s + batch_size)
        audio, video, pad, lens = _batched_inputs(audio_feats, lips, s, e)
        h = model.features(audio, video, pad, layer=layer).numpy()
        out.extend(h[j, :t].astype(np.float32) for j, t in enumerate(lens))
    return out


def upsample_features(h: np.ndarray) -> np.ndarray:
    """(T, D) 25 Hz features -> (2T, D) at 50 Hz: even = frame t, odd = mean of frames t and t+1 (linear
    interpolation at the half-frame; the last odd frame repeats frame T-1). Iteration-2 k-means runs on these
    so that the 50 Hz targets of a frame's two units can differ (repeating each frame would make every odd
    unit a copy of the even one)."""
    h = np.asarray(h, np.float32)
    if h.ndim != 2 or len(h) == 0:
        raise ValueError(f"features must be (T, D) with T >= 1, got {h.shape}")
    nxt = np.concatenate([h[1:], h[-1:]], axis=0)
    out = np.empty((2 * len(h), h.shape[1]), np.float32)
    out[0::2], out[1::2] = h, 0.5 * (h + nxt)
    return out


def fit_kmeans(features: np.ndarray, k: int, seed: int):
    """sklearn MiniBatchKMeans (k clusters, n_init 3, batch 1024, fixed seed) fitted on (N, D) features."""
    from sklearn.cluster import MiniBatchKMeans

    x = np.asarray(features, np.float32)
    if x.ndim != 2 or len(x) < k:
        raise ValueError(f"k-means needs (N, D) features with N >= k={k}, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("k-means features hold NaN/inf")
    km = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=3, batch_size=1024, max_iter=100,
                         reassignment_ratio=0.01)
    return km.fit(x)


def assign(model, feats: np.ndarray) -> np.ndarray:
    """(N,) int64 nearest-centroid units of (N, D) features."""
    x = np.asarray(feats, np.float32)
    if x.ndim != 2:
        raise ValueError(f"feats must be (N, D), got {x.shape}")
    return model.predict(x).astype(np.int64)


def iteration2_targets(model: TinyAVHubert, audio_feats: Sequence[np.ndarray], lips: Sequence[np.ndarray],
                       k: int, seed: int, layer: int = 3) -> tuple[Any, list[np.ndarray]]:
    """Iteration 2: k-means (k) on the 50 Hz-upsampled layer-`layer` features of `model` run on clean AV
    input; returns (kmeans, per-utterance (2T_i,) targets)."""
    feats = [upsample_features(h) for h in layer_features(model, audio_feats, lips, layer)]
    km = fit_kmeans(np.concatenate(feats, axis=0), k, seed)
    return km, [assign(km, f) for f in feats]


def unit_accuracy(pred, ref) -> float:
    """Frame-level agreement of unit sequences (one array, or lists of arrays concatenated)."""
    p = np.concatenate([np.asarray(x).ravel() for x in pred]) if isinstance(pred, (list, tuple)) else np.asarray(pred)
    r = np.concatenate([np.asarray(x).ravel() for x in ref]) if isinstance(ref, (list, tuple)) else np.asarray(ref)
    if p.shape != r.shape:
        raise ValueError(f"unit sequences differ in length: {p.shape} vs {r.shape}")
    if p.size == 0:
        raise ValueError("unit sequences are empty")
    return float(np.mean(p == r))


__all__ = [
    "DEFAULTS", "TinyAVHubert", "assign", "extract_units", "extract_units_batch", "fit_kmeans", "fit_unit_model",
    "interleave", "iteration2_targets", "layer_features", "load_unit_model", "modality_dropout", "span_mask",
    "unit_accuracy", "upsample_features", "validate_config",
]
