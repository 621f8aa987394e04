"""Face side of the AV-Renderer and the video metrics of the embedded profile (spec 2.5, 4, 8.6, 8.7).

* `MiniWav2Lip`: the official `FaceRenderer` (unit2av/model.py) scaled to 64x64: a U-Net face encoder on
  6 channels = [target frame with its lower half zeroed, reference frame]; a unit branch (unit embedding with a
  pad id -> a window of 20 units = 10 video frames -> linear interpolation by 0.5 to 10 steps -> one
  TransformerEncoderLayer, d 128, 1 head -> one vector per frame); a decoder with skip connections ending in a
  sigmoid (RGB in [0, 1]). Losses (Wav2Lip, the repo has none): L1 + 0.03 x expert sync loss from a frozen
  `MiniSyncNet`; the GAN term is not implemented (spec 8.6: off by default).
* Inference as the official code: units padded (repeat last) to a multiple of 20, source frames looped
  forward/backward (`pingpong`) to the padded length, the reference = the source frame itself (zero-shot).
* `MiniSyncNet`: Wav2Lip's expert discriminator scaled down: 5 lower-half face frames stacked as channels and
  the matching 10 mel frames (0.2 s at 50 Hz) -> L2-normalised 64-d embeddings, cosine similarity + BCE on
  aligned (positive) vs shifted (negative) windows.
* `lse`: LSE-D / LSE-C exactly as syncnet_python's `calc_pdist` + `evaluate` (used by Wav2Lip's evaluation).
* `VisemeClassifier` + `frechet_distance`: the FID proxy of spec 8.7 (Fréchet distance of penultimate
  features of a small viseme CNN instead of Inception-v3 pool features).

Conventions: faces are uint8 RGB (T, 64, 64, 3) at 25 fps (the spec's correction says the official frames
are BGR; our procedural faces are RGB throughout, so nothing is converted); units are int (2T,) at 50 Hz;
mels are (2T, 80) at 50 Hz. The renderer outputs (T, 3, 64, 64) float in [0, 1] (`forward`) and
`render_video` returns uint8 (n, 64, 64, 3).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from torch import nn

from cvpr24.core.training import Checkpointer, TrainState, train_loop
from cvpr24.core.validation import DataValidationError
from cvpr24.pipelines.av2av.common import FACE, N_MELS

SYNC_T = 5            # video frames per SyncNet window
SYNC_MEL = 2 * SYNC_T  # matching 50 Hz mel frames (0.2 s)
WIN_UNITS = 20        # units per renderer window (official)
WIN_FRAMES = WIN_UNITS // 2
N_VISEMES = 12
HALF = FACE // 2

# ------------------------------------------------------------------------------------------------ config

SYNC_DEFAULTS: dict[str, Any] = {
    "dim": 64,            # embedding size
    "width": 32,          # first conv width (doubled per block)
    "rgb": True,          # RGB (15 channels) or grayscale (5 channels) mouth stack
    "steps": 300,
    "batch_size": 32,
    "lr": 1e-3,
    "min_shift": 5,       # negatives: audio window shifted by >= min_shift video frames
    "ckpt_every": 100,
}
RENDER_DEFAULTS: dict[str, Any] = {
    "K": 100,             # unit vocabulary (pad id = K)
    "d": 128,             # unit branch width (= decoder input)
    "ffn": 256,
    "dropout": 0.1,
    "use_units": True,    # False = acceptance check 7's ablation (reference only)
    "steps": 300,
    "batch_size": 4,      # windows of 10 frames per step
    "lr": 1e-3,
    "sync_weight": 0.03,  # Wav2Lip
    "ckpt_every": 100,
}
VISEME_DEFAULTS: dict[str, Any] = {
    "feat_dim": 64,       # penultimate feature size
    "steps": 200,
    "batch_size": 64,
    "lr": 1e-3,
    "ckpt_every": 100,
}
_BOOL_KEYS = {"rgb", "use_units"}
_FLOAT_KEYS = {"lr", "sync_weight", "dropout"}


def _validate(cfg: dict[str, Any] | None, defaults: dict[str, Any], what: str) -> dict[str, Any]:
    cfg = dict(cfg or {})
    unknown = set(cfg) - set(defaults)
    if unknown:
        raise ValueError(f"unknown {what} config key(s) {sorted(unknown)}; valid keys: {sorted(defaults)}")
    out = {**defaults, **cfg}
    for k, v in out.items():
        if k in _BOOL_KEYS:
            if not isinstance(v, bool):
                raise ValueError(f"{what} config key {k!r} must be a bool, got {v!r}")
        elif k in _FLOAT_KEYS:
            if not isinstance(v, int | float) or isinstance(v, bool) or v < 0 or (k == "dropout" and v >= 1):
                raise ValueError(f"{what} config key {k!r} must be a number >= 0 (dropout < 1), got {v!r}")
            out[k] = float(v)
        else:
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{what} config key {k!r} must be a positive int, got {v!r}")
    return out


def validate_sync_config(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """SYNC_DEFAULTS updated with `cfg` (ValueError naming a bad/unknown key)."""
    return _validate(cfg, SYNC_DEFAULTS, "syncnet")


def validate_render_config(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """RENDER_DEFAULTS updated with `cfg` (ValueError naming a bad/unknown key)."""
    return _validate(cfg, RENDER_DEFAULTS, "face renderer")


def validate_viseme_config(cfg: dict[str, Any] | None) -> dict[str, Any]:
    """VISEME_DEFAULTS updated with `cfg` (ValueError naming a bad/unknown key)."""
    return _validate(cfg, VISEME_DEFAULTS, "viseme classifier")


# ------------------------------------------------------------------------------------------------ inputs


def _check_faces(faces: np.ndarray, name: str = "faces", min_len: int = 1) -> np.ndarray:
    faces = np.asarray(faces)
    if faces.dtype != np.uint8 or faces.ndim != 4 or faces.shape[1:] != (FACE, FACE, 3):
        raise DataValidationError(f"{name} must be uint8 RGB (T, {FACE}, {FACE}, 3), got {faces.dtype} "
                                  f"{faces.shape}; crop/resize faces to {FACE}x{FACE} first")
    if len(faces) < min_len:
        raise DataValidationError(f"{name} has {len(faces)} frames, need at least {min_len}")
    return faces


def _check_mel(mel: np.ndarray, n_frames: int, name: str = "mel") -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float32)
    if mel.ndim != 2 or mel.shape[1] != N_MELS:
        raise DataValidationError(f"{name} must be ({2 * n_frames}, {N_MELS}) 50 Hz log-mel, got {mel.shape}")
    if len(mel) < 2 * n_frames:
        raise DataValidationError(f"{name} has {len(mel)} frames but the video has {n_frames} frames; need "
                                  f"2 mel frames per video frame (>= {2 * n_frames})")
    return mel


def _to_float(faces: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [0, 1]."""
    t = torch.as_tensor(np.asarray(faces)) if not isinstance(faces, torch.Tensor) else faces
    return t.float().div(255.0).movedim(-1, -3)


def pad_units(units: Sequence[int] | np.ndarray, window: int = WIN_UNITS) -> np.ndarray:
    """Pad by repeating the last unit to a multiple of `window` (official inference)."""
    u = np.asarray(units, dtype=np.int64).reshape(-1)
    if len(u) == 0:
        raise ValueError("pad_units: empty unit sequence")
    extra = (-len(u)) % window
    return np.concatenate([u, np.full(extra, u[-1], dtype=np.int64)]) if extra else u


def pingpong(frames: np.ndarray, n: int) -> np.ndarray:
    """Loop frames forward then backward (0..T-1, T-2..1, 0..) to exactly `n` frames, as the official inference
    (which extends the list by `flip(0)[1:]` and `[1:]`, so the turning frames are not repeated); a one-frame
    video repeats its frame (the official loop never ends there)."""
    frames = np.asarray(frames)
    if len(frames) == 0:
        raise ValueError("pingpong: no source frames")
    if n < 0:
        raise ValueError(f"pingpong: n must be >= 0, got {n}")
    t = len(frames)
    period = np.arange(t) if t == 1 else np.concatenate([np.arange(t), np.arange(t - 2, 0, -1)])
    return frames[period[np.arange(n) % len(period)]]


# ------------------------------------------------------------------------------------------------ blocks


class _Conv(nn.Module):
    """Conv + BN + ReLU, with a residual add when shapes allow (Wav2Lip's `Conv2d(residual=True)`)."""

    def __init__(self, cin: int, cout: int, k: int = 3, s: int = 1, p: int = 1, residual: bool = False):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv2d(cin, cout, k, s, p), nn.BatchNorm2d(cout))
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return F.relu(y + x if self.residual else y)


class _Up(nn.Module):
    def __init__(self, cin: int, cout: int, k: int = 3, s: int = 2, p: int = 1, op: int = 1):
        super().__init__()
        self.up = nn.Sequential(nn.ConvTranspose2d(cin, cout, k, s, p, op), nn.BatchNorm2d(cout), nn.ReLU())
        self.res = _Conv(cout, cout, residual=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res(self.up(x))


# ------------------------------------------------------------------------------------------------ SyncNet


class MiniSyncNet(nn.Module):
    """Expert lip-sync discriminator (Wav2Lip `SyncNet_color`, scaled down): video (B, 5, 3, 64, 64) float
    in [0, 1] (lower halves used) and mel (B, 10, 80) -> L2-normalised (B, dim) embeddings each."""

    def __init__(self, dim: int = 64, width: int = 32, rgb: bool = True):
        super().__init__()
        self.rgb = rgb
        w = width
        cin = SYNC_T * (3 if rgb else 1)
        self.video = nn.Sequential(  # 32x64 -> 16x32 -> 8x16 -> 4x8 -> 2x4 -> pool
            _Conv(cin, w, 5, 1, 2), _Conv(w, 2 * w, 3, 2, 1), _Conv(2 * w, 2 * w, residual=True),
            _Conv(2 * w, 4 * w, 3, 2, 1), _Conv(4 * w, 4 * w, 3, 2, 1), _Conv(4 * w, 4 * w, 3, 2, 1),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, dim))
        self.audio = nn.Sequential(  # (1, 80, 10) -> 40x10 -> 20x5 -> 10x3 -> pool
            _Conv(1, w), _Conv(w, 2 * w, 3, (2, 1), 1), _Conv(2 * w, 2 * w, residual=True),
            _Conv(2 * w, 4 * w, 3, 2, 1), _Conv(4 * w, 4 * w, 3, 2, 1),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * w, dim))
        # per-bin mel standardisation, set from the training data by `fit_syncnet`
        self.register_buffer("mel_mean", torch.zeros(N_MELS))
        self.register_buffer("mel_std", torch.ones(N_MELS))

    def embed_video(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames[..., HALF:, :]                                   # (B, 5, 3, 32, 64) lower half
        if not self.rgb:
            x = x.mean(dim=2, keepdim=True)
        x = x.flatten(1, 2)
        return F.normalize(F.relu(self.video(x)), dim=-1)           # ReLU + L2 as Wav2Lip's expert

    def embed_audio(self, mel: torch.Tensor) -> torch.Tensor:
        x = ((mel - self.mel_mean) / self.mel_std).transpose(1, 2).unsqueeze(1)   # (B, 1, 80, 10)
        return F.normalize(F.relu(self.audio(x)), dim=-1)

    def forward(self, frames: torch.Tensor, mel: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.embed_video(frames), self.embed_audio(mel)


def sync_bce(v: torch.Tensor, a: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Wav2Lip's `cosine_loss`: BCE on the cosine similarity of (ReLU'd, hence non-negative) embeddings."""
    cos = F.cosine_similarity(v, a).clamp(1e-6, 1 - 1e-6)
    return F.binary_cross_entropy(cos, label)


def _mel_windows(mel: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    idx = 2 * starts[:, None] + torch.arange(SYNC_MEL)[None]
    return mel[idx]


def fit_syncnet(faces: list[np.ndarray], mels: list[np.ndarray], cfg: dict[str, Any] | None, seed: int,
                checkpointer: Checkpointer | None = None, progress: bool = False) -> tuple[MiniSyncNet, list]:
    """Train a `MiniSyncNet` on real AV pairs: half the batch aligned windows (label 1), half with the audio
    window shifted by >= min_shift frames within the same video (label 0). Returns (model in eval mode,
    history)."""
    c = validate_sync_config(cfg)
    if len(faces) != len(mels) or not faces:
        raise ValueError(f"fit_syncnet: need as many mels as videos (>0), got {len(faces)} and {len(mels)}")
    min_len = 2 * c["min_shift"] + SYNC_T - 1   # so every shifted negative is >= min_shift away
    vids, auds = [], []
    for i, (f, m) in enumerate(zip(faces, mels, strict=True)):
        f = _check_faces(f, f"faces[{i}]")
        m = _check_mel(m, len(f), f"mels[{i}]")
        if len(f) >= min_len:
            vids.append(_to_float(f))
            auds.append(torch.from_numpy(m[: 2 * len(f)]))
    if not vids:
        raise DataValidationError(f"fit_syncnet: no video has >= {min_len} frames (5-frame window + shift)")
    torch.manual_seed(seed)
    model = MiniSyncNet(c["dim"], c["width"], c["rgb"])
    allmel = torch.cat(auds)
    model.mel_mean.copy_(allmel.mean(0))
    model.mel_std.copy_(allmel.std(0).clamp_min(1e-3))
    opt = torch.optim.Adam(model.parameters(), lr=c["lr"])
    gen = torch.Generator().manual_seed(seed)
    lens = torch.tensor([len(v) for v in vids])
    B = c["batch_size"]

    def step(_: int) -> dict[str, float]:
        model.train()
        which = torch.randint(len(vids), (B,), generator=gen)
        nwin = lens[which] - SYNC_T + 1
        start = (torch.rand(B, generator=gen) * nwin).long()
        label = (torch.rand(B, generator=gen) < 0.5).float()
        # negative: a shift of +-[min_shift, nwin-1] wrapped into range, so |shift| >= min_shift
        span = (nwin - 2 * c["min_shift"] + 1).clamp_min(1)
        sh = c["min_shift"] + (torch.rand(B, generator=gen) * span).long()
        astart = torch.where(label > 0, start, (start + sh) % nwin)
        fv = torch.stack([vids[w][s:s + SYNC_T] for w, s in zip(which.tolist(), start.tolist(), strict=True)])
        ma = torch.stack([_mel_windows(auds[w], torch.tensor([s]))[0]
                          for w, s in zip(which.tolist(), astart.tolist(), strict=True)])
        v, a = model(fv, ma)
        loss = sync_bce(v, a, label)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.item()}

    hist = train_loop(model=model, optimizer=opt, step_fn=step, n_steps=c["steps"],
                      state=TrainState(generators={"sync": gen}), checkpointer=checkpointer,
                      every=c["ckpt_every"], desc="syncnet", progress=progress)
    return model.eval(), hist


@torch.no_grad()
def sync_embeddings(model: MiniSyncNet, faces: np.ndarray | torch.Tensor,
                    mel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-window embeddings: window t = frames [t, t+5) and mel [2t, 2t+10); W = T - 4 windows.
    `faces` uint8 (T,64,64,3) or float (T,3,64,64) in [0,1]. Returns (video_emb (W,dim), audio_emb (W,dim))."""
    if isinstance(faces, torch.Tensor) and faces.is_floating_point():
        fr = faces
    else:
        fr = _to_float(_check_faces(faces, min_len=SYNC_T))
    T = len(fr)
    if T < SYNC_T:
        raise DataValidationError(f"sync_embeddings: need >= {SYNC_T} frames, got {T}")
    m = torch.from_numpy(_check_mel(mel, T))
    model.eval()
    starts = torch.arange(T - SYNC_T + 1)
    vw = fr[starts[:, None] + torch.arange(SYNC_T)[None]]
    return model.embed_video(vw).numpy(), model.embed_audio(_mel_windows(m, starts)).numpy()


# ------------------------------------------------------------------------------------------------ LSE


def lse(video_emb: np.ndarray, audio_emb: np.ndarray,
        offsets: Sequence[int] = range(-15, 16)) -> tuple[float, float, int, np.ndarray]:
    """LSE-D, LSE-C as syncnet_python `calc_pdist` + `evaluate` (Wav2Lip's evaluation).

    For offset o, dist[o] = mean over windows t of ||video[t] - audio[t+o]|| where the audio stream is ZERO-
    padded by max|o| at both ends (calc_pdist pads `feat2` with zeros and keeps those terms in the mean;
    `F.pairwise_distance` with its eps=1e-6). LSE-D = min_o dist, LSE-C = median_o dist - min.
    Returns (lse_d, lse_c, best_offset, per_offset_dist). Sign: best_offset = +k means the audio embedding
    that matches video at t is at t+k, i.e. the audio lags the video by k frames (syncnet_python prints
    `vshift - argmin` = -k as its "AV offset")."""
    v = torch.as_tensor(np.asarray(video_emb, dtype=np.float32))
    a = torch.as_tensor(np.asarray(audio_emb, dtype=np.float32))
    offs = [int(o) for o in offsets]
    if v.ndim != 2 or v.shape != a.shape or len(v) == 0:
        raise ValueError(f"lse: video/audio embeddings must be equal (W, D) arrays, got {tuple(v.shape)} and "
                         f"{tuple(a.shape)}")
    if not offs:
        raise ValueError("lse: empty offsets")
    pad = max(abs(o) for o in offs)
    ap = F.pad(a, (0, 0, pad, pad))
    W = len(v)
    dist = np.array([F.pairwise_distance(v, ap[pad + o: pad + o + W]).mean().item() for o in offs])
    i = int(np.argmin(dist))
    return float(dist[i]), float(np.median(dist) - dist[i]), offs[i], dist


# ------------------------------------------------------------------------------------------------ renderer


class MiniWav2Lip(nn.Module):
    """Unit-driven talking-face U-Net. `forward(units (B, 20) long, faces (B, 10, 6, 64, 64))` ->
    (B, 10, 3, 64, 64) in [0, 1]. The 6 channels = [target with lower half zeroed, reference]."""

    def __init__(self, K: int = 100, d: int = 128, ffn: int = 256, dropout: float = 0.1, use_units: bool = True):
        super().__init__()
        self.K, self.d, self.use_units = K, d, use_units
        if use_units:
            self.unit_emb = nn.Embedding(K + 1, d, padding_idx=K)
            # ours: a learned position embedding over the 10 steps (not in the official code, which relies on
            # the interpolated unit order alone); helps the 1-head layer keep frames apart at this size
            self.pos = nn.Parameter(torch.zeros(WIN_FRAMES, d))
            self.tf = nn.TransformerEncoderLayer(d, 1, ffn, dropout, activation="relu", batch_first=True)
        # encoder: 64 -> 32 -> 16 -> 8 -> 4 -> 1 (five down blocks after the stem). Ours: narrow widths
        # (8..64, d) instead of Wav2Lip's 16..512 so a CPU training step stays well under a second.
        self.enc = nn.ModuleList([
            nn.Sequential(_Conv(6, 8, 3, 1, 1)),                                           # 8 x 64
            nn.Sequential(_Conv(8, 16, 3, 2, 1), _Conv(16, 16, residual=True)),            # 16 x 32
            nn.Sequential(_Conv(16, 32, 3, 2, 1), _Conv(32, 32, residual=True)),           # 32 x 16
            nn.Sequential(_Conv(32, 64, 3, 2, 1), _Conv(64, 64, residual=True)),           # 64 x 8
            nn.Sequential(_Conv(64, d, 3, 2, 1), _Conv(d, d, residual=True)),              # d x 4
            nn.Sequential(_Conv(d, d, 4, 1, 0)),                                           # d x 1
        ])
        self.dec = nn.ModuleList([
            nn.Sequential(nn.ConvTranspose2d(2 * d, d, 4, 1, 0), nn.BatchNorm2d(d), nn.ReLU()),  # -> 4
            _Up(2 * d, 64),         # cat skip d x 4 -> 8
            _Up(128, 32),           # cat 64 x 8 -> 16
            _Up(64, 16),            # cat 32 x 16 -> 32
            _Up(32, 8),             # cat 16 x 32 -> 64
        ])
        self.out = nn.Sequential(_Conv(16, 8), nn.Conv2d(8, 3, 1), nn.Sigmoid())

    def unit_vectors(self, units: torch.Tensor) -> torch.Tensor:
        """(B, 20) units -> (B, 10, d) per-frame vectors (zeros when use_units=False)."""
        B = units.shape[0]
        if not self.use_units:
            return torch.zeros(B, WIN_FRAMES, self.d)
        e = self.unit_emb(units).transpose(1, 2)                             # (B, d, 20)
        e = F.interpolate(e, scale_factor=0.5, mode="linear", align_corners=False).transpose(1, 2)
        return self.tf(e + self.pos)

    def forward(self, units: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
        B, T = faces.shape[:2]
        u = self.unit_vectors(units).reshape(B * T, self.d, 1, 1)
        x = faces.reshape(B * T, 6, FACE, FACE)
        feats = []
        for blk in self.enc:
            x = blk(x)
            feats.append(x)
        y = u
        for blk, skip in zip(self.dec, reversed(feats[1:]), strict=True):
            y = blk(torch.cat([y, skip], 1))
        y = self.out(torch.cat([y, feats[0]], 1))
        return y.reshape(B, T, 3, FACE, FACE)


def masked_input(target: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """[target with lower half zeroed, reference] on the channel axis: (..., 3, H, W) x2 -> (..., 6, H, W)."""
    t = target.clone()
    t[..., HALF:, :] = 0
    return torch.cat([t, reference], -3)


def fit_face_renderer(faces: list[np.ndarray], units: list[np.ndarray], cfg: dict[str, Any] | None, seed: int,
                      syncnet: MiniSyncNet | None = None, mels: list[np.ndarray] | None = None,
                      checkpointer: Checkpointer | None = None,
                      progress: bool = False) -> tuple[MiniWav2Lip, list]:
    """Train `MiniWav2Lip` on windows of 10 frames / 20 units: L1 + sync_weight x expert sync loss (frozen
    `syncnet` on the two 5-frame halves of each generated window with the matching mel; off when syncnet is
    None). The reference of each frame is another random frame of the same video (Wav2Lip)."""
    c = validate_render_config(cfg)
    if len(faces) != len(units) or not faces:
        raise ValueError(f"fit_face_renderer: need as many unit arrays as videos (>0), got {len(faces)}, "
                         f"{len(units)}")
    use_sync = syncnet is not None and c["sync_weight"] > 0
    if use_sync and (mels is None or len(mels) != len(faces)):
        raise ValueError("fit_face_renderer: a syncnet needs `mels`, one per video")
    vids, uts, auds = [], [], []
    for i, (f, u) in enumerate(zip(faces, units, strict=True)):
        f = _check_faces(f, f"faces[{i}]")
        u = np.asarray(u).reshape(-1)
        if len(u) < 2 * len(f):
            raise DataValidationError(f"units[{i}] has {len(u)} units for {len(f)} frames; need 2 per frame")
        if u.min() < 0 or u.max() >= c["K"]:
            raise DataValidationError(f"units[{i}] ids must lie in [0, K={c['K']}), found "
                                      f"[{u.min()}, {u.max()}]; set cfg['K']")
        if len(f) < WIN_FRAMES:
            continue
        vids.append(_to_float(f))
        uts.append(torch.from_numpy(u[: 2 * len(f)].astype(np.int64)))
        if use_sync:
            auds.append(torch.from_numpy(_check_mel(mels[i], len(f), f"mels[{i}]")))
    if not vids:
        raise DataValidationError(f"fit_face_renderer: no video has >= {WIN_FRAMES} frames")
    torch.manual_seed(seed)
    model = MiniWav2Lip(c["K"], c["d"], c["ffn"], c["dropout"], c["use_units"])
    if use_sync:
        syncnet.eval()
        for p in syncnet.parameters():
            p.requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=c["lr"])
    gen = torch.Generator().manual_seed(seed)
    lens = torch.tensor([len(v) for v in vids])
    B = c["batch_size"]
    fidx = torch.arange(WIN_FRAMES)

    def step(_: int) -> dict[str, float]:
        model.train()
        which = torch.randint(len(vids), (B,), generator=gen)
        L = lens[which]
        start = (torch.rand(B, generator=gen) * (L - WIN_FRAMES + 1)).long()
        # reference: a random frame of the same video != the target (shift by 1..L-1, wrapped)
        rshift = 1 + (torch.rand(B, WIN_FRAMES, generator=gen) * (L[:, None] - 1)).long()
        tgt, ref, uu, mm = [], [], [], []
        for b, (w, s) in enumerate(zip(which.tolist(), start.tolist(), strict=True)):
            idx = s + fidx
            tgt.append(vids[w][idx])
            ref.append(vids[w][(idx + rshift[b]) % int(L[b])])
            uu.append(uts[w][2 * s: 2 * s + WIN_UNITS])
            if use_sync:
                mm.append(auds[w][2 * s: 2 * s + WIN_UNITS])
        tgt_t = torch.stack(tgt)
        out = model(torch.stack(uu), masked_input(tgt_t, torch.stack(ref)))
        l1 = (out - tgt_t).abs().mean()
        loss, metrics = l1, {"l1": l1.item()}
        if use_sync:
            mel = torch.stack(mm)                                           # (B, 20, 80)
            gv = out.reshape(B * 2, SYNC_T, 3, FACE, FACE)                  # two 5-frame halves
            ga = mel.reshape(B * 2, SYNC_MEL, N_MELS)
            v, a = syncnet(gv, ga)
            sl = sync_bce(v, a, torch.ones(B * 2))
            loss = loss + c["sync_weight"] * sl
            metrics["sync"] = sl.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
        return metrics

    hist = train_loop(model=model, optimizer=opt, step_fn=step, n_steps=c["steps"],
                      state=TrainState(generators={"face": gen}), checkpointer=checkpointer,
                      every=c["ckpt_every"], desc="face", progress=progress)
    return model.eval(), hist


@torch.no_grad()
def render_video(model: MiniWav2Lip, units50: Sequence[int] | np.ndarray, source_faces: np.ndarray,
                 batch_windows: int = 16) -> np.ndarray:
    """Official inference: pad units to a multiple of 20 (repeat last), ping-pong the source frames to the
    padded length, reference = the source frame itself; returns uint8 (len(units50)//2, 64, 64, 3)."""
    src = _check_faces(source_faces, "source_faces")
    u = np.asarray(units50).reshape(-1)
    n = len(u) // 2
    if n == 0:
        raise ValueError(f"render_video: need >= 2 units (one video frame), got {len(u)}")
    if u.min() < 0 or u.max() >= model.K:
        raise DataValidationError(f"render_video: unit ids must lie in [0, {model.K}), found [{u.min()}, "
                                  f"{u.max()}]")
    up = torch.from_numpy(pad_units(u)).reshape(-1, WIN_UNITS)               # (Nw, 20)
    fr = _to_float(pingpong(src, up.shape[0] * WIN_FRAMES)).reshape(-1, WIN_FRAMES, 3, FACE, FACE)
    model.eval()
    outs = []
    for i in range(0, len(up), batch_windows):
        f = fr[i:i + batch_windows]
        outs.append(model(up[i:i + batch_windows], masked_input(f, f)))
    out = torch.cat(outs).reshape(-1, 3, FACE, FACE)[:n]
    return (out.movedim(1, -1) * 255).round().clamp(0, 255).to(torch.uint8).numpy()


# ------------------------------------------------------------------------------------------------ FID proxy


class VisemeClassifier(nn.Module):
    """Small CNN on the lower half of a 64x64 face -> 12 visemes; `features` = penultimate (B, feat_dim)."""

    def __init__(self, feat_dim: int = 64, n_classes: int = N_VISEMES):
        super().__init__()
        self.body = nn.Sequential(
            _Conv(3, 16, 3, 2, 1), _Conv(16, 32, 3, 2, 1), _Conv(32, 64, 3, 2, 1),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, feat_dim), nn.ReLU())
        self.head = nn.Linear(feat_dim, n_classes)

    def features(self, frames: torch.Tensor) -> torch.Tensor:
        return self.body(frames[..., HALF:, :])

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(frames))


def fit_viseme_classifier(faces: np.ndarray, viseme_labels: np.ndarray, cfg: dict[str, Any] | None, seed: int,
                          checkpointer: Checkpointer | None = None,
                          progress: bool = False) -> tuple[VisemeClassifier, list]:
    """Cross-entropy training on frames uint8 (N,64,64,3) with labels int (N,) in [0, 12)."""
    c = validate_viseme_config(cfg)
    x = _to_float(_check_faces(faces))
    y = torch.as_tensor(np.asarray(viseme_labels, dtype=np.int64)).reshape(-1)
    if len(y) != len(x) or y.min() < 0 or y.max() >= N_VISEMES:
        raise DataValidationError(f"viseme_labels must be {len(x)} ints in [0, {N_VISEMES}), got {len(y)} in "
                                  f"[{int(y.min())}, {int(y.max())}]")
    torch.manual_seed(seed)
    model = VisemeClassifier(c["feat_dim"])
    opt = torch.optim.Adam(model.parameters(), lr=c["lr"])
    gen = torch.Generator().manual_seed(seed)

    def step(_: int) -> dict[str, float]:
        model.train()
        i = torch.randint(len(x), (c["batch_size"],), generator=gen)
        logits = model(x[i])
        loss = F.cross_entropy(logits, y[i])
        opt.zero_grad()
        loss.backward()
        opt.step()
        return {"loss": loss.item(), "acc": (logits.argmax(1) == y[i]).float().mean().item()}

    hist = train_loop(model=model, optimizer=opt, step_fn=step, n_steps=c["steps"],
                      state=TrainState(generators={"viseme": gen}), checkpointer=checkpointer,
                      every=c["ckpt_every"], desc="viseme", progress=progress)
    return model.eval(), hist


@torch.no_grad()
def viseme_features(model: VisemeClassifier, frames: np.ndarray, batch: int = 256) -> np.ndarray:
    """Penultimate features (N, feat_dim) float64 of uint8 frames (N,64,64,3)."""
    x = _to_float(_check_faces(frames))
    model.eval()
    return torch.cat([model.features(x[i:i + batch]) for i in range(0, len(x), batch)]).double().numpy()


def frechet_distance(feats_a: np.ndarray, feats_b: np.ndarray, eps: float = 1e-6) -> float:
    """FID formula: ||mu_a - mu_b||^2 + Tr(S_a + S_b - 2 sqrtm(S_a S_b)) (pytorch-fid: scipy sqrtm, eps*I
    added to both covariances if the product is singular, imaginary part dropped)."""
    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or len(a) < 2 or len(b) < 2:
        raise ValueError(f"frechet_distance: need (N>=2, D) feature arrays of equal D, got {a.shape}, {b.shape}")
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean, _ = scipy.linalg.sqrtm(s1 @ s2, disp=False)
    if not np.isfinite(covmean).all():
        off = np.eye(len(s1)) * eps
        covmean = scipy.linalg.sqrtm((s1 + off) @ (s2 + off))
    covmean = np.real(covmean)
    diff = mu1 - mu2
    return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean), 0.0))
