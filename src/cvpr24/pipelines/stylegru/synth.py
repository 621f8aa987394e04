"""StyleGRU embedded data: "SynthTalk", a procedural talking-face video generator (spec Sec. 8.1-8.4).

Every video is a (T, 9, 8) W+-like style-latent trajectory rendered to (T, S, S, 3) uint8 frames with numpy
(vectorised over frames; no torch). Real videos follow per-level AR(1) dynamics plus a speech (mouth) driver
and blinks; each fake method temporally smooths some levels and rescales the smoothed residual so that
per-frame statistics match real while the frame-to-frame flow at those levels is calmer (the cue of the
paper's Fig. 1). In-domain methods (FF++ folder names) add a weak per-frame pixel artifact; the held-out
"cross" generators add none of those (X-DFD: JPEG on real and fake, X-DFo: colour flicker on real and fake).

Choices made here where the spec leaves room ([ours]):
- Latent -> parameters: params = lo + (hi - lo) * (tanh(0.7 * Q_l z_l) + 1) / 2 with a fixed orthogonal Q_l
  per level (seed 20240306, sign-fixed QR). The speech driver and blinks act along the latent direction
  that moves exactly one parameter (mouth opening, eye openness), i.e. a row of Q_l.
- Level roles: 0 pose/placement, 1 head shape, 2 feature layout (coarse); 3 mouth, 4 eyes, 5 brows/cheeks
  (middle); 6 skin colour, 7 lighting, 8 texture + hair tone (fine). "Mouth dims of the middle levels"
  (NeuralTextures) = level 3.
- AR(1) rho/sigma are per frame at 25 fps; at another fps rho -> rho**(25/fps) and sigma is rescaled so the
  stationary variance is unchanged. u_0 is drawn from the stationary law, so every frame has the same marginal.
  Speech driver A (|sin(pi f t / fps + phi_t)| - 2/pi) with f ~ U(3, 6) Hz, A ~ U(0.7, 1.3), phase random walk
  (0.15 rad/frame); blinks Poisson(0.3/s), profile (0.6, 1, 0.6) x 4.0 latent units toward closed eyes.
  The "dfd" population has base N(0.3, 0.8 I) (covariance 0.8) and coarse innovation std x 1.6.
- Fakes: the "base" of a trajectory is its temporal mean; a smoothed level keeps each dim's temporal mean and
  std exactly (residual rescaled). NeuralTextures' "frozen" texture level = Gaussian smoothing sigma 4 frames
  (a constant could not be rescaled back to the real std). X-CDF window 3 on middle+fine (source identity on
  fine), X-DFD window 4 on coarse (target) + fine (source), X-FSh EMA alpha 0.5 on fine (source), X-DFo
  Gaussian sigma 2 on middle (target) with the source identity on fine unsmoothed: the spec's strengths,
  all giving flow-std ratios < 0.8 (measured in the unit tests).
- Hue artifact: +8 degrees (0-360 scale) on the inner face; seam: 1-px ring darkened by 8 %; mouth blur: 3x3
  box blur inside the mouth region; checkerboard: +-2 grey levels, period 2 px, on the head.
- Cross sets pair their own new ids like FF++ (id k with id k ^ 1); fake k has target k and that source.
- Seeds: every video draws from np.random.default_rng([seed, crc32("<dataset>/<method>/<name>"), stream])
  (stream 0 trajectory, 1 background, 2 rendering noise), so its bytes do not depend on the other videos.
"""

from __future__ import annotations

import io
import logging
import zlib
from typing import Any

import numpy as np

from cvpr24.core.validation import DataValidationError

log = logging.getLogger(__name__)

N_LEVELS = 9
LEVEL_DIM = 8
GROUPS = {"coarse": (0, 1, 2), "middle": (3, 4, 5), "fine": (6, 7, 8)}
TRAIN_METHODS = ("Deepfakes", "FaceSwap", "Face2Face", "NeuralTextures")
CROSS_SETS = ("X-CDF", "X-DFD", "X-FSh", "X-DFo")
CROSS_DATASETS = {"X-CDF": "cdf", "X-DFD": "dfd", "X-FSh": "fsh", "X-DFo": "dfo"}
_C, _M, _F = GROUPS["coarse"], GROUPS["middle"], GROUPS["fine"]
SMOOTHED_LEVELS: dict[str, tuple[int, ...]] = {
    "Deepfakes": _F,
    "FaceSwap": _C,
    "Face2Face": _M,
    "NeuralTextures": (3, 8),
    "X-CDF": _M + _F,
    "X-DFD": _C + _F,
    "X-FSh": _F,
    "X-DFo": _M,
}
ARTIFACTS = {"Deepfakes": "seam", "FaceSwap": "hue", "Face2Face": "mouth_blur", "NeuralTextures": "checker"}
CROSS_JPEG = {"X-DFD": 60}
CROSS_COLOUR_JITTER = {"X-DFo": 0.03}
DEFAULTS: dict[str, Any] = {
    "n_ids": 96, "split_pairs": [34, 7, 7], "n_frames": 32, "image_size": 48, "n_cross": 48,
    "noise_sigma": 3.0, "fps": 25, "artifact_strength": 1.0,
}

# per-level AR(1) at 25 fps (spec 8.3)
_RHO = np.array([0.9] * 3 + [0.6] * 3 + [0.5] * 3)
_SIGMA = np.array([0.15] * 3 + [0.35] * 3 + [0.10] * 3)
_GAIN = 0.7
HUE_SHIFT_DEG = 8.0

# level -> 8 (name, lo, hi) render parameters
_PARAM_SPEC: tuple[tuple[tuple[str, float, float], ...], ...] = (
    (("yaw", -1.0, 1.0), ("pitch", -1.0, 1.0), ("roll", -0.3, 0.3), ("cx", -0.1, 0.1),
     ("cy", -0.08, 0.08), ("scale", 0.85, 1.1), ("face_w", 0.5, 0.66), ("face_h", 0.6, 0.76)),
    (("jaw", 0.0, 0.45), ("chin", 0.85, 1.15), ("forehead", 0.85, 1.1), ("ear_size", 0.07, 0.14),
     ("ear_y", -0.15, 0.15), ("neck_w", 0.2, 0.4), ("hair_vol", 0.02, 0.14), ("hairline", -0.58, -0.3)),
    (("eye_sep", 0.2, 0.3), ("eye_y", -0.22, -0.08), ("nose_len", 0.14, 0.26), ("nose_w", 0.05, 0.11),
     ("mouth_y", 0.3, 0.45), ("hair_side", -0.25, 0.35), ("ear_x", 0.92, 1.05), ("brow_sep", 0.9, 1.1)),
    (("mouth_open", 0.0, 0.12), ("mouth_w", 0.14, 0.27), ("smile", -0.08, 0.08), ("lip_up", 0.015, 0.045),
     ("lip_lo", 0.02, 0.055), ("mouth_tilt", -0.05, 0.05), ("mouth_dy", -0.04, 0.04), ("teeth", 0.0, 1.0)),
    (("eye_open", 0.0, 1.0), ("eye_asym", -0.3, 0.3), ("gaze_x", -1.0, 1.0), ("gaze_y", -1.0, 1.0),
     ("eye_w", 0.07, 0.105), ("iris_r", 0.028, 0.045), ("eye_tilt", -0.3, 0.3), ("eye_dy", -0.03, 0.03)),
    (("brow_h", 0.06, 0.13), ("brow_asym", -0.03, 0.03), ("brow_tilt", -0.35, 0.35),
     ("brow_thick", 0.012, 0.032), ("brow_len", 0.07, 0.12), ("nose_flare", 0.8, 1.3), ("cheek", 0.0, 1.0),
     ("wrinkle", 0.0, 1.0)),
    (("skin_h", 10.0, 35.0), ("skin_s", 0.2, 0.6), ("skin_v", 0.5, 0.92), ("blush", 0.0, 0.3),
     ("lip_red", 0.3, 0.9), ("iris_v", 0.08, 0.55), ("brow_dark", 0.25, 0.75), ("sclera", 0.8, 1.0)),
    (("light_x", -1.0, 1.0), ("light_y", -1.0, 1.0), ("light_gain", 0.78, 1.12), ("ambient", 0.5, 0.9),
     ("warm", -0.08, 0.08), ("spec", 0.0, 0.25), ("shadow", 0.0, 0.35), ("vignette", 0.0, 0.25)),
    (("tex_f", 2.0, 4.5), ("tex_o", 0.0, 3.0), ("tex_phase", -2.5, 2.5), ("tex_phase2", -2.5, 2.5),
     ("tex_amp", 2.0, 8.0), ("hair_h", 0.0, 50.0), ("hair_s", 0.2, 0.7), ("hair_v", 0.08, 0.6)),
)
PARAM_NAMES: tuple[tuple[str, ...], ...] = tuple(tuple(p[0] for p in lvl) for lvl in _PARAM_SPEC)
_LO = np.array([[p[1] for p in lvl] for lvl in _PARAM_SPEC], np.float32)
_HI = np.array([[p[2] for p in lvl] for lvl in _PARAM_SPEC], np.float32)


def _mixing_matrices(seed: int = 20240306) -> np.ndarray:
    """Fixed orthogonal 8x8 mix per level (QR of a seeded Gaussian, signs fixed so diag(R) > 0)."""
    rng = np.random.default_rng(seed)
    out = np.empty((N_LEVELS, LEVEL_DIM, LEVEL_DIM))
    for lvl in range(N_LEVELS):
        q, r = np.linalg.qr(rng.standard_normal((LEVEL_DIM, LEVEL_DIM)))
        out[lvl] = q * np.sign(np.diag(r))[None, :]
    return out


MIX = _mixing_matrices()
_MOUTH_DIR = MIX[3][PARAM_NAMES[3].index("mouth_open")]  # latent direction moving only mouth opening
_EYE_DIR = MIX[4][PARAM_NAMES[4].index("eye_open")]  # latent direction moving only eye openness


def stable_hash(text: str) -> int:
    """Process-independent 32-bit hash of a string (crc32), for name-derived seeds."""
    return zlib.crc32(text.encode("utf-8")) & 0xFFFFFFFF


def video_rng(seed: int, key: str, stream: int) -> np.random.Generator:
    """The generator of one random stream of one video (key = "<dataset>/<method>/<name>")."""
    return np.random.default_rng([int(seed), stable_hash(key), int(stream)])


# ------------------------------------------------------------------------------------------ dynamics
def _ar_params(fps: float, population: str) -> tuple[np.ndarray, np.ndarray]:
    rho = _RHO ** (25.0 / fps)
    sigma = _SIGMA * np.sqrt((1 - rho**2) / (1 - _RHO**2))
    if population == "dfd":
        sigma = sigma.copy()
        sigma[list(_C)] *= 1.6
    return rho, sigma


def _real_batch(rng: np.random.Generator, n: int, n_frames: int, fps: float, population: str) -> np.ndarray:
    """n real trajectories (n, T, 9, 8) float64: base + AR(1) per level + speech driver + blinks."""
    if population not in ("ffpp", "dfd"):
        raise DataValidationError(f"synthtalk: unknown population {population!r}; use 'ffpp' or 'dfd'.")
    if n_frames < 1 or fps <= 0:
        raise DataValidationError(f"synthtalk: need n_frames >= 1 and fps > 0, got {n_frames}, {fps}.")
    shape = (n, N_LEVELS, LEVEL_DIM)
    if population == "dfd":
        base = 0.3 + np.sqrt(0.8) * rng.standard_normal(shape)
    else:
        base = rng.standard_normal(shape)
    rho, sigma = _ar_params(fps, population)
    rho_, sig_ = rho[None, :, None], sigma[None, :, None]
    eps = rng.standard_normal((n_frames, *shape))
    u = np.empty((n_frames, *shape))
    u[0] = eps[0] * sig_ / np.sqrt(1 - rho_**2)
    for t in range(1, n_frames):
        u[t] = rho_ * u[t - 1] + sig_ * eps[t]
    s = base[None] + u  # (T, n, 9, 8)
    # speech driver on the mouth-opening direction of level 3
    t = np.arange(n_frames)[:, None]
    f = rng.uniform(3.0, 6.0, n)[None]
    amp = rng.uniform(0.7, 1.3, n)[None]
    phase = rng.uniform(0, np.pi, n)[None] + np.cumsum(0.15 * rng.standard_normal((n_frames, n)), axis=0)
    drv = amp * (np.abs(np.sin(np.pi * f * t / fps + phase)) - 2 / np.pi)  # (T, n)
    s[:, :, 3, :] += drv[..., None] * _MOUTH_DIR
    # blinks: Poisson(0.3/s) three-frame closures toward closed eyes (level 4)
    blink = np.zeros((n_frames + 2, n))
    counts = rng.poisson(0.3 * n_frames / fps, n)
    for k in np.flatnonzero(counts):
        for start in rng.integers(0, n_frames, counts[k]):
            blink[start:start + 3, k] = np.maximum(blink[start:start + 3, k], (0.6, 1.0, 0.6))
    s[:, :, 4, :] -= 4.0 * blink[:n_frames, :, None] * _EYE_DIR
    return np.transpose(s, (1, 0, 2, 3))


def real_trajectory(rng: np.random.Generator, n_frames: int, fps: float = 25.0,
                    population: str = "ffpp") -> np.ndarray:
    """One real video's latent trajectory (T, 9, 8) float32 (spec 8.3); "dfd" = base N(0.3, 0.8 I) and
    larger head motion."""
    return _real_batch(rng, 1, n_frames, fps, population)[0].astype(np.float32)


def _moving_average(x: np.ndarray, window: int) -> np.ndarray:
    """Centred moving average over axis 0 with reflect padding (even windows lean half a frame back)."""
    front, back = (window - 1) // 2, window // 2
    xp = np.pad(x, [(front, back)] + [(0, 0)] * (x.ndim - 1), mode="reflect")
    c = np.cumsum(np.concatenate([np.zeros_like(xp[:1]), xp]), axis=0)
    return (c[window:] - c[:-window]) / window


def _ema(x: np.ndarray, alpha: float) -> np.ndarray:
    out = np.empty_like(x)
    out[0] = x[0]
    for t in range(1, len(x)):
        out[t] = alpha * x[t] + (1 - alpha) * out[t - 1]
    return out


def _gaussian(x: np.ndarray, sigma: float) -> np.ndarray:
    radius = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    k /= k.sum()
    xp = np.pad(x, [(radius, radius)] + [(0, 0)] * (x.ndim - 1), mode="symmetric")
    return sum(w * xp[i:i + len(x)] for i, w in enumerate(k))


def _smooth(x: np.ndarray, kind: str, strength: float) -> np.ndarray:
    """Smooth a (T, L, 8) trajectory in time, then rescale each dim's residual around its temporal mean so
    the temporal mean and std equal the input's (marginal matching, spec 8.4)."""
    if len(x) < 3:
        return x.copy()
    mean = x.mean(0)
    r = x - mean
    if kind == "ma":
        rs = _moving_average(r, int(strength))
    elif kind == "ema":
        rs = _ema(r, strength)
    else:
        rs = _gaussian(r, strength)
    rs = rs - rs.mean(0)
    sd_s = rs.std(0)
    scale = np.where(sd_s > 1e-12, r.std(0) / np.maximum(sd_s, 1e-12), 0.0)
    return mean + rs * scale


def fake_trajectory(method: str, target: np.ndarray, source: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Latent trajectory (T, 9, 8) float32 of the fake made from real trajectories of target i and source j.

    Smoothed levels keep each dim's temporal mean/std (rescaled residual), so per-frame marginals match real.
    `rng` is accepted for API stability; the current methods are deterministic given target and source.
    """
    del rng
    tgt = np.asarray(target, np.float64)
    src = np.asarray(source, np.float64)
    if tgt.shape != src.shape or tgt.ndim != 3 or tgt.shape[1:] != (N_LEVELS, LEVEL_DIM):
        raise DataValidationError(
            f"synthtalk.fake_trajectory: target {tgt.shape} and source {src.shape} must both be (T, 9, 8); "
            "pass two real_trajectory() outputs of the same length.")
    c, m, f = list(_C), list(_M), list(_F)
    out = tgt.copy()
    if method == "Deepfakes":  # identity swap: fine = source identity, moving average 5
        out[:, f] = _smooth(src[:, f], "ma", 5)
    elif method == "FaceSwap":  # coarse from source, EMA 0.3
        out[:, c] = _smooth(src[:, c], "ema", 0.3)
    elif method == "Face2Face":  # target identity, source expression, Gaussian 1.5
        out[:, m] = tgt[:, m].mean(0) + _smooth(src[:, m] - src[:, m].mean(0), "gauss", 1.5)
    elif method == "NeuralTextures":  # source mouth (window 3), texture level frozen (Gaussian 4)
        out[:, 3] = tgt[:, 3].mean(0) + _smooth(src[:, [3]] - src[:, [3]].mean(0), "ma", 3)[:, 0]
        out[:, [8]] = _smooth(tgt[:, [8]], "gauss", 4.0)
    elif method == "X-CDF":  # DF-type swap, window 3 on middle + fine, no seam
        out[:, m] = _smooth(tgt[:, m], "ma", 3)
        out[:, f] = _smooth(src[:, f], "ma", 3)
    elif method == "X-DFD":  # window 4 on coarse (target) + fine (source identity)
        out[:, c] = _smooth(tgt[:, c], "ma", 4)
        out[:, f] = _smooth(src[:, f], "ma", 4)
    elif method == "X-FSh":  # EMA 0.5 on fine (source identity), re-blended without artifact
        out[:, f] = _smooth(src[:, f], "ema", 0.5)
    elif method == "X-DFo":  # identity swap (unsmoothed), middle Gaussian 2.0
        out[:, f] = src[:, f]
        out[:, m] = _smooth(tgt[:, m], "gauss", 2.0)
    else:
        raise DataValidationError(
            f"synthtalk.fake_trajectory: unknown method {method!r}; use one of {TRAIN_METHODS + CROSS_SETS}.")
    return out.astype(np.float32)


def level_flow_std(latents: np.ndarray | list[np.ndarray]) -> np.ndarray:
    """RMS style flow (s_{t+1} - s_t) per level (9,), pooled over frames, dims and videos."""
    vids = [np.asarray(v, np.float64) for v in (latents if isinstance(latents, list) else
                                                 (latents if np.ndim(latents) == 4 else [latents]))]
    d = np.concatenate([np.diff(v, axis=0).reshape(-1, N_LEVELS, LEVEL_DIM) for v in vids])
    return np.sqrt((d**2).mean(axis=(0, 2)))


# ------------------------------------------------------------------------------------------ renderer
def latent_to_params(latents: np.ndarray) -> dict[str, np.ndarray]:
    """Render parameters {name: (T,) float32} of latents (T, 9, 8): orthogonal mix + tanh per level."""
    z = np.asarray(latents, np.float64)
    pre = np.einsum("lij,tlj->tli", MIX, z)
    p = (_LO + (_HI - _LO) * (np.tanh(_GAIN * pre) + 1) / 2).astype(np.float32)
    return {name: p[:, lvl, k] for lvl, names in enumerate(PARAM_NAMES) for k, name in enumerate(names)}


def _hsv_to_rgb(h: np.ndarray, s: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Vectorised HSV (hue in degrees, s, v in [0, 1]) -> RGB in [0, 255], shape (..., 3)."""
    h = np.mod(h, 360.0) / 60.0
    k = np.stack([np.mod(5 + h, 6), np.mod(3 + h, 6), np.mod(1 + h, 6)], -1)
    rgb = v[..., None] - v[..., None] * s[..., None] * np.clip(np.minimum(k, 4 - k), 0, 1)
    return (255.0 * rgb).astype(np.float32)


def random_background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A per-video background (size, size, 3) float32: random colour plus a faint linear gradient."""
    colour = _hsv_to_rgb(rng.uniform(0, 360, 1), rng.uniform(0.1, 0.7, 1), rng.uniform(0.2, 0.9, 1))[0]
    ang = rng.uniform(0, 2 * np.pi)
    g = (np.arange(size) + 0.5) / size * 2 - 1
    ramp = np.cos(ang) * g[None, :] + np.sin(ang) * g[:, None]
    return np.clip(colour[None, None] + rng.uniform(0, 15) * ramp[..., None], 0, 255).astype(np.float32)


def _band(d: np.ndarray, px) -> np.ndarray:
    """Anti-aliased coverage of {d > 0} with d in image units (1 px transition)."""
    r = d / px
    r += 0.5
    np.maximum(r, 0.0, out=r)
    return np.minimum(r, 1.0, out=r)


def _ellipse(x, y, a, b, px) -> np.ndarray:
    """Coverage of the axis-aligned ellipse |y| < b sqrt(1 - (x/a)^2), |x| < a."""
    w = x / a
    w *= w
    np.subtract(1.0, w, out=w)
    np.maximum(w, 0.0, out=w)
    np.sqrt(w, out=w)
    w *= b
    w -= np.abs(y)
    ax = np.abs(x)
    np.subtract(a, ax, out=ax)
    cov = _band(w, px)
    cov *= _band(ax, px)
    return cov


def _over(img: np.ndarray, cov: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Alpha-composite colour ((T, 3) or channel-first (3, T, S, S)) over the channel-first img (3, T, S, S)
    with coverage (T, S, S)."""
    if colour.ndim == 2:
        colour = colour.T[:, :, None, None]
    tmp = colour - img
    tmp *= cov[None]
    tmp += img
    return tmp


def _box3(img: np.ndarray) -> np.ndarray:
    p = np.pad(img, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="edge")
    s = img.shape[2]
    return sum(p[:, :, i:i + s, j:j + s] for i in range(3) for j in range(3)) / np.float32(9.0)


def _rows(q: dict[str, np.ndarray], x_half: float, y0, y1, size: int) -> slice:
    """Image rows (all frames) that can hold the face-local rectangle |x| <= x_half, y0 <= y <= y1 of the
    feature frame (X - 0.1 yaw, Y - 0.08 pitch), with a 2-px margin: features are drawn only there."""
    cr, sr = np.cos(q["roll"]), np.sin(q["roll"])
    ys = []
    for xl in (-x_half, x_half):
        for yl in (y0, y1):
            xf, yf = xl + 0.1 * q["yaw"], yl + 0.08 * q["pitch"]
            ys.append(q["cy"] + q["scale"] * (sr * xf + cr * yf))
    rows = (np.concatenate([np.ravel(y) for y in ys]) + 1) / 2 * size - 0.5
    return slice(max(0, int(np.floor(rows.min())) - 2), min(size, int(np.ceil(rows.max())) + 3))


def _broadcast_background(background: np.ndarray, n: int, size: int) -> np.ndarray:
    bg = np.asarray(background, np.float32)
    if bg.shape == (3,):
        bg = bg[None, None, None, :]
    elif bg.shape == (n, 3):
        bg = bg[:, None, None, :]
    elif bg.shape == (size, size, 3):
        bg = bg[None]
    elif bg.shape != (n, size, size, 3):
        raise DataValidationError(
            f"synthtalk.render: background shape {bg.shape} must be (3,), (T, 3), ({size}, {size}, 3) or "
            f"(T, {size}, {size}, 3); use random_background(rng, size).")
    return np.broadcast_to(bg, (n, size, size, 3))


def _draw(P: dict[str, np.ndarray], size: int, background: np.ndarray,
          artifact: str | None, strength: float = 1.0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Noise-free channel-first float frames (3, T, S, S) in [0, 255] and region masks (T, S, S)."""
    n = len(P["yaw"])
    q = {k: v[:, None, None] for k, v in P.items()}  # (T, 1, 1)
    g = ((np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1)
    X0, Y0 = g[None, None, :], g[None, :, None]
    px = 2.0 / size
    # face-local coordinates (head pose: centre shift, roll, scale)
    cr, sr = np.cos(q["roll"]), np.sin(q["roll"])
    dx, dy = X0 - q["cx"], Y0 - q["cy"]
    X = (cr * dx + sr * dy) / q["scale"]
    Y = (-sr * dx + cr * dy) / q["scale"]
    pxf = px / q["scale"]
    ox, oy = 0.1 * q["yaw"], 0.08 * q["pitch"]  # yaw/pitch move inner features against the outline
    Xi, Yi = X - ox, Y - oy

    skin = _hsv_to_rgb(P["skin_h"], P["skin_s"], P["skin_v"])  # (T, 3)
    hair = _hsv_to_rgb(P["hair_h"], P["hair_s"], P["hair_v"])
    img = np.ascontiguousarray(_broadcast_background(background, n, size).transpose(3, 0, 1, 2))

    # neck, ears, back hair
    neck = _band(q["neck_w"] / 2 - np.abs(X), pxf) * _band(Y - 0.3, pxf)
    img = _over(img, neck, 0.8 * skin)
    ex = q["ear_x"] * q["face_w"]
    ears = _ellipse(np.abs(X) - ex, Y - q["ear_y"], 0.6 * q["ear_size"], q["ear_size"], pxf)
    img = _over(img, ears, 0.9 * skin)
    bu, bl = q["face_h"] * q["forehead"], q["face_h"] * q["chin"]
    hv = q["hair_vol"]
    back = _ellipse(X, Y + 0.5 * hv, q["face_w"] + hv, bu + hv, pxf) * _band(q["hair_side"] - Y, pxf)
    img = _over(img, back, hair)

    # head: tapered jaw, textured skin, blush/cheeks, forehead hair
    yn = np.clip(Y / bl, 0, 1)
    a = q["face_w"] * (1 - q["jaw"] * yn**2)
    b = np.where(Y < 0, bu, bl)
    f = np.sqrt((X / a) ** 2 + (Y / b) ** 2)
    head = _band((1 - f) * np.minimum(a, b), pxf)
    o = q["tex_o"]
    u1 = X * np.cos(o) + Y * np.sin(o)
    u2 = -X * np.sin(o) + Y * np.cos(o)
    tex = q["tex_amp"] * (0.6 * np.sin(2 * np.pi * q["tex_f"] * u1 + q["tex_phase"])
                          + 0.4 * np.sin(3 * np.pi * q["tex_f"] * u2 + q["tex_phase2"]))
    skin_field = skin.T[:, :, None, None] + tex[None]
    if artifact == "hue":
        inner = _ellipse(Xi, Yi - (q["eye_y"] + q["mouth_y"]) / 2, 0.75 * q["face_w"],
                         (q["mouth_y"] - q["eye_y"]) / 2 + 0.16, pxf)
        shifted = _hsv_to_rgb(P["skin_h"] + HUE_SHIFT_DEG * strength, P["skin_s"], P["skin_v"])
        skin_field = skin_field + inner[None] * (shifted - skin).T[:, :, None, None]
    img = _over(img, head, skin_field)
    cheeks = _ellipse(np.abs(Xi) - q["eye_sep"], Yi - q["eye_y"] - 0.2, 0.1, 0.07, pxf) * head
    red = np.array([200.0, 60.0, 70.0], np.float32)[:, None, None, None]
    img = img + (cheeks * q["blush"])[None] * (red - img)
    occl = 1 - 0.12 * cheeks * q["cheek"]  # multiplicative shading, applied with the lighting
    hl = q["hairline"] + 0.25 * (X / q["face_w"]) ** 2
    img = _over(img, head * _band(hl - Y, pxf), hair)
    wrinkle = _ellipse(Xi, Yi - (q["hairline"] + q["eye_y"]) / 2, 0.18, 0.012, pxf) * head
    occl *= 1 - 0.15 * wrinkle * q["wrinkle"]

    # nose: shaded triangle, darker on the side away from the light
    apex, base = q["eye_y"] + 0.03, q["eye_y"] + 0.03 + q["nose_len"]
    wy = q["nose_w"] * q["nose_flare"] * np.clip((Yi - apex) / (base - apex), 0, 1)
    nose = _band(Yi - apex, pxf) * _band(base - Yi, pxf) * _band(wy - np.abs(Xi), pxf)
    side = np.where(Xi * q["light_x"] < 0, np.float32(1.0), np.float32(0.4))
    occl *= 1 - (0.12 + q["shadow"] * side) * nose

    # eyes: sclera, iris clipped to the sclera (yaw widens the near eye)
    eh = 0.055 * np.sqrt(np.clip(q["eye_open"], 0, 1))  # sqrt: few squinters, blinks still close
    rs = _rows(q, 0.55, q["eye_y"] - 0.36, q["eye_y"] + 0.12, size)
    Xe, Ye = Xi[:, rs], Yi[:, rs]
    ey = Ye - q["eye_y"] - q["eye_dy"]
    iris_col = np.repeat(255 * P["iris_v"][:, None], 3, 1) * np.array([0.8, 0.9, 1.0], np.float32)
    sclera_col = np.repeat(235 * P["sclera"][:, None], 3, 1)
    sc, iris, brow = [], [], []
    for sgn in (-1.0, 1.0):
        ew = q["eye_w"] * (1 + 0.25 * sgn * q["yaw"])
        xe = Xe - sgn * q["eye_sep"]
        t = sgn * q["eye_tilt"]
        xr, yr = np.cos(t) * xe + np.sin(t) * ey, -np.sin(t) * xe + np.cos(t) * ey
        sc.append(_ellipse(xr, yr, ew, eh * (1 + sgn * q["eye_asym"]), pxf))
        ir = q["iris_r"]
        iris.append(_ellipse(xr - 0.5 * q["gaze_x"] * ew, yr - 0.5 * q["gaze_y"] * eh, ir, ir, pxf) * sc[-1])
        # brow: thin tilted ellipse above the eye
        bx = Xe - sgn * q["eye_sep"] * q["brow_sep"]
        by = Ye - (q["eye_y"] - q["brow_h"] - sgn * q["brow_asym"])
        bt = sgn * q["brow_tilt"]
        bxr, byr = np.cos(bt) * bx + np.sin(bt) * by, -np.sin(bt) * bx + np.cos(bt) * by
        brow.append(_ellipse(bxr, byr, q["brow_len"], q["brow_thick"], pxf))
    img[:, :, rs] = _over(img[:, :, rs], np.maximum(*sc), sclera_col)
    img[:, :, rs] = _over(img[:, :, rs], np.maximum(*iris), iris_col)
    img[:, :, rs] = _over(img[:, :, rs], np.maximum(*brow), hair * P["brow_dark"][:, None])

    # mouth: curved centre line, lips, dark interior, teeth
    mw = q["mouth_w"]
    rs = _rows(q, 0.45, q["mouth_y"] - 0.3, q["mouth_y"] + 0.3, size)
    Xm, Ym = Xi[:, rs], Yi[:, rs]
    xm = Xm / mw
    env = np.sqrt(np.clip(1 - xm**2, 0, None))
    cy_m = q["mouth_y"] + q["mouth_dy"] - q["smile"] * (xm**2 - 1 / 3) + q["mouth_tilt"] * xm
    ym = Ym - cy_m
    h_in = 0.5 * q["mouth_open"] * env
    h_out = np.where(ym < 0, h_in + q["lip_up"] * env, h_in + q["lip_lo"] * env)
    inside_x = _band(mw - np.abs(Xm), pxf)
    lips = _band(h_out - np.abs(ym), pxf) * inside_x
    lip_col = skin + P["lip_red"][:, None] * (np.array([170.0, 40.0, 50.0], np.float32) - skin)
    img[:, :, rs] = _over(img[:, :, rs], lips, lip_col)
    interior = _band(h_in - np.abs(ym), pxf) * inside_x
    dark = np.broadcast_to(np.array([45.0, 15.0, 20.0], np.float32), (n, 3))
    img[:, :, rs] = _over(img[:, :, rs], interior, dark)
    teeth = interior * _band(-ym - 0.25 * h_in, pxf) * q["teeth"]
    white = np.broadcast_to(np.array([225.0, 222.0, 210.0], np.float32), (n, 3))
    img[:, :, rs] = _over(img[:, :, rs], teeth, white)
    mouth_region = np.zeros_like(head)
    mouth_region[:, rs] = _ellipse(Xm, ym, 1.3 * mw + 0.02, 0.5 * q["mouth_open"] + 0.08, pxf)

    # lighting on the foreground: linear gradient, colour temperature, forehead highlight, edge vignette
    fg = np.maximum(np.maximum(head, back), np.maximum(neck, ears))
    grad = np.clip((q["light_x"] * X + q["light_y"] * Y) / 0.8, -1, 1)
    shade = q["light_gain"] * (q["ambient"] + (1 - q["ambient"]) * (0.5 + 0.5 * grad))
    shade = shade + q["spec"] * np.exp(-((X - 0.2 * q["light_x"]) ** 2 + (Y + 0.35) ** 2) / 0.02)
    shade = shade * (1 - q["vignette"] * np.clip(f, 0, 1) ** 4)
    temp = np.stack([1 + P["warm"], np.ones(n, np.float32), 1 - P["warm"]])[:, :, None, None]
    img = img * (occl[None] * (1 + fg[None] * (shade[None] * temp - 1)))

    # manipulation artifacts (weak, per frame)
    inner_c = Yi - (q["eye_y"] + q["mouth_y"]) / 2
    ia, ib = 0.75 * q["face_w"], (q["mouth_y"] - q["eye_y"]) / 2 + 0.16
    if artifact == "seam":
        ring = np.clip(_ellipse(Xi, inner_c, ia + pxf, ib + pxf, pxf) - _ellipse(Xi, inner_c, ia, ib, pxf), 0, 1)
        img = img * (1 - min(1.0, 0.08 * strength) * ring[None])
    elif artifact == "mouth_blur":
        blurred = img
        for _ in range(max(1, int(round(strength)))):   # strength k: k passes of the 3x3 box
            blurred = _box3(blurred)
        img = img + mouth_region[None] * (blurred - img)
    elif artifact == "checker":
        amp = 2.0 * strength
        chk = np.where((np.arange(size)[:, None] + np.arange(size)[None, :]) % 2 == 0, amp, -amp)
        img = img + (head * chk.astype(np.float32))[None]
    elif artifact not in (None, "hue"):
        raise DataValidationError(
            f"synthtalk.render: unknown artifact {artifact!r}; use None, 'seam', 'hue', 'mouth_blur' or 'checker'.")
    return img, {"head": head, "mouth": mouth_region, "fg": fg}


def _to_uint8(img: np.ndarray, rng: np.random.Generator, noise_sigma: float, colour_jitter: float,
              jpeg_quality: int | None) -> np.ndarray:
    """Channel-first float frames (3, T, S, S) -> (T, S, S, 3) uint8 with jitter, camera noise and JPEG."""
    n = img.shape[1]
    if colour_jitter:
        img = img * (1 + np.float32(colour_jitter) * rng.standard_normal((3, n, 1, 1), dtype=np.float32))
    if noise_sigma:
        img = img + np.float32(noise_sigma) * rng.standard_normal(img.shape, dtype=np.float32)
    np.rint(img, out=img)
    np.clip(img, 0, 255, out=img)
    out = np.ascontiguousarray(img.astype(np.uint8).transpose(1, 2, 3, 0))
    if jpeg_quality is not None:
        from PIL import Image

        for k in range(n):
            buf = io.BytesIO()
            Image.fromarray(out[k]).save(buf, format="JPEG", quality=int(jpeg_quality))
            buf.seek(0)
            out[k] = np.asarray(Image.open(buf).convert("RGB"))
    return out


def _check_latents(latents: np.ndarray) -> np.ndarray:
    lat = np.asarray(latents)
    if lat.ndim != 3 or lat.shape[1:] != (N_LEVELS, LEVEL_DIM) or not np.isfinite(lat).all():
        raise DataValidationError(
            f"synthtalk.render: latents must be finite (T, {N_LEVELS}, {LEVEL_DIM}), got shape {lat.shape}; "
            "use real_trajectory()/fake_trajectory() outputs.")
    return lat


def render(latents: np.ndarray, size: int, background: np.ndarray, rng: np.random.Generator,
           artifact: str | None = None, jpeg_quality: int | None = None, colour_jitter: float = 0.0,
           noise_sigma: float = 3.0, artifact_strength: float = 1.0) -> np.ndarray:
    """Frames (T, size, size, 3) uint8 of a latent trajectory (spec 8.2): face on `background`, optional
    manipulation artifact ('seam', 'hue', 'mouth_blur', 'checker'), per-frame colour jitter (gain std),
    i.i.d. Gaussian camera noise of `noise_sigma` grey levels, optional JPEG (PIL) at `jpeg_quality`.
    `artifact_strength` k scales the artifact (hue shift 8k degrees, seam darkening 8k %, checkerboard +-2k
    grey levels, k box-blur passes in the mouth); 1 = the spec's weak artifacts."""
    lat = _check_latents(latents)
    img, _ = _draw(latent_to_params(lat), int(size), background, artifact, float(artifact_strength))
    return _to_uint8(img, rng, noise_sigma, colour_jitter, jpeg_quality)


def render_random_frames(n: int, size: int, rng: np.random.Generator,
                         noise_sigma: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Encoder training set: n i.i.d. frames whose latents follow the real (FF++-population) per-frame
    marginal (one random frame of an independent 32-frame real trajectory each) on random backgrounds.
    Returns frames (n, size, size, 3) uint8 and latents (n, 9, 8) float32."""
    frames = np.empty((n, size, size, 3), np.uint8)
    latents = np.empty((n, N_LEVELS, LEVEL_DIM), np.float32)
    chunk = 512
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        traj = _real_batch(rng, m, 32, 25.0, "ffpp")
        lat = traj[np.arange(m), rng.integers(0, 32, m)].astype(np.float32)
        colour = _hsv_to_rgb(rng.uniform(0, 360, m), rng.uniform(0.1, 0.7, m), rng.uniform(0.2, 0.9, m))
        img, _ = _draw(latent_to_params(lat), size, colour, None)
        frames[start:start + m] = _to_uint8(img, rng, noise_sigma, 0.0, None)
        latents[start:start + m] = lat
    return frames, latents


# ------------------------------------------------------------------------------------------ dataset
def _config(cfg: dict | None) -> dict[str, Any]:
    c = {**DEFAULTS, **(cfg or {})}
    n_ids, sp = int(c["n_ids"]), [int(v) for v in c["split_pairs"]]
    if n_ids < 2 or n_ids % 2 or len(sp) != 3 or sum(sp) != n_ids // 2 or min(sp) < 0:
        raise DataValidationError(
            f"synthtalk config: n_ids={n_ids} must be even and split_pairs={sp} three counts summing to "
            f"n_ids/2={n_ids // 2}; fix stylegru.data in conf/base/parameters/stylegru.yml.")
    if int(c["n_frames"]) < 2 or int(c["image_size"]) < 16 or int(c["n_cross"]) < 0:
        raise DataValidationError(
            f"synthtalk config: need n_frames >= 2, image_size >= 16, n_cross >= 0 (got {c['n_frames']}, "
            f"{c['image_size']}, {c['n_cross']}); fix stylegru.data in conf/base/parameters/stylegru.yml.")
    return c


def make_synthtalk(cfg: dict, seed: int, progress: bool = True) -> dict:
    """The embedded SynthTalk set: FF++-like reals + 4 in-domain manipulations with FF++ pair splits, and
    four held-out cross sets (n_cross real + n_cross fake each, split 'test'). Deterministic in `seed`;
    each video's bytes depend only on (seed, dataset, method, name)."""
    from tqdm.auto import tqdm

    c = _config(cfg)
    n_ids, T, S = int(c["n_ids"]), int(c["n_frames"]), int(c["image_size"])
    strength = float(c["artifact_strength"])
    fps, sigma, n_cross = float(c["fps"]), float(c["noise_sigma"]), int(c["n_cross"])
    ids = [f"{k:03d}" for k in range(n_ids)]
    order = np.random.default_rng([int(seed), stable_hash("synthtalk/pairs"), n_ids]).permutation(n_ids)
    pairs = [[ids[order[2 * k]], ids[order[2 * k + 1]]] for k in range(n_ids // 2)]
    sp = [int(v) for v in c["split_pairs"]]
    bounds = np.cumsum([0] + sp)
    splits = {name: pairs[bounds[k]:bounds[k + 1]] for k, name in enumerate(("train", "val", "test"))}
    split_of = {i: s for s, prs in splits.items() for p in prs for i in p}

    # (dataset, method, name, label, split, target, source, population, artifact, jpeg, jitter)
    plan: list[tuple] = [("ffpp", "Origin", i, 0, split_of[i], i, i, "ffpp", None, None, 0.0) for i in ids]
    for method in TRAIN_METHODS:
        for s_name, prs in splits.items():
            for a, b in prs:
                for tg, sr in ((a, b), (b, a)):
                    plan.append(("ffpp", method, f"{tg}_{sr}", 1, s_name, tg, sr, "ffpp", ARTIFACTS[method],
                                 None, 0.0))
    for method in CROSS_SETS:
        ds = CROSS_DATASETS[method]
        pop = "dfd" if ds == "dfd" else "ffpp"
        jpeg, jit = CROSS_JPEG.get(method), CROSS_COLOUR_JITTER.get(method, 0.0)
        rids = [f"{ds}_r{k:03d}" for k in range(n_cross)]
        for r in rids:
            plan.append((ds, "Origin", r, 0, "test", r, r, pop, None, jpeg, jit))
        for k in range(n_cross):
            src = rids[k ^ 1] if (k ^ 1) < n_cross else rids[0]
            plan.append((ds, method, f"{ds}_f{k:03d}", 1, "test", rids[k], src, pop, None, jpeg, jit))

    seed = int(seed)
    traj_cache: dict[tuple[str, str], np.ndarray] = {}
    bg_cache: dict[tuple[str, str], np.ndarray] = {}

    def real_of(ds: str, name: str, pop: str) -> np.ndarray:
        if (ds, name) not in traj_cache:
            traj_cache[(ds, name)] = real_trajectory(video_rng(seed, f"{ds}/Origin/{name}", 0), T, fps, pop)
        return traj_cache[(ds, name)]

    def background_of(ds: str, name: str) -> np.ndarray:
        if (ds, name) not in bg_cache:
            bg_cache[(ds, name)] = random_background(video_rng(seed, f"{ds}/Origin/{name}", 1), S)
        return bg_cache[(ds, name)]

    videos = []
    for ds, method, name, label, split, tg, sr, pop, art, jpeg, jit in tqdm(
            plan, desc="stylegru: synthtalk", disable=not progress):
        key = f"{ds}/{method}/{name}"
        if label == 0:
            lat = real_of(ds, name, pop)
        else:
            lat = fake_trajectory(method, real_of(ds, tg, pop), real_of(ds, sr, pop), video_rng(seed, key, 0))
        frames = render(lat, S, background_of(ds, tg), video_rng(seed, key, 2), artifact=art, jpeg_quality=jpeg,
                        colour_jitter=jit, noise_sigma=sigma, artifact_strength=strength)
        videos.append({"dataset": ds, "method": method, "name": name, "label": label, "split": split,
                       "target": tg, "source": sr, "frames": frames, "latents": lat})
    log.info("synthtalk: %d videos (%d frames of %dx%d each)", len(videos), T, S, S)
    return {"videos": videos, "splits": splits}
