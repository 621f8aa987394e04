"""OmniLocalRF evaluation metrics (spec section 4): image quality on ERP test frames and camera-pose errors.

Images are float arrays (H, W, 3) in [0, 1] (`max_val` = 1), H x W equirectangular, row j at latitude
(j + 0.5) pi / H - pi / 2.

- PSNR: scikit-image's, via `cvpr24.core.metrics.psnr`.
- SSIM: the paper's (`rgb_ssim` of the official code, from mip-NeRF): Gaussian window 11, sigma 1.5, k1 0.01,
  k2 0.03, 'valid' filtering (the map is (H - 10) x (W - 10) x 3), variances clipped at 0 and the covariance at
  sqrt(var0 var1), mean over the map and channels. This is NOT `core.metrics.ssim` (7x7 uniform window with sample
  covariance); it equals scikit-image's `structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False)` up to rounding (checked in tests/unit/omnilocalrf/test_metrics.py).
- WS-PSNR / WS-SSIM (Sun et al. 2017, Zhou et al. 2018): per-row weight w(j) = cos((j + 0.5 - H/2) pi / H), the
  cosine of the row centre's latitude; WS-MSE = sum w err^2 / sum w over pixels and channels, WS-PSNR =
  10 log10(max_val^2 / WS-MSE); WS-SSIM = the same weighted mean of the SSIM map, map row r standing for image row
  r + 5 (the 'valid' map is cropped by 5 rows at the top and bottom). The released code has no WS metrics; the
  definition is the spec's.
- Masked variants (real data): pixels where the evaluation mask is set (dynamic) are filled with grey (0.5) in BOTH
  prediction and ground truth before any metric, as the paper does; the filled pixels still count in the means.
- LPIPS: `cvpr24.core.metrics.lpips_distance` (AlexNet; `Unavailable` when its weights are not cached).
- Averaging: per image, then per scene, then the mean over scenes (`mean_of_scene_means`).

Pose errors (Table 3) follow the evaluation convention that NeRF pose papers share (BARF / NoPe-NeRF
`align_ate_c2b_use_a2b`, `compute_ATE`, `compute_rpe`, with Umeyama from rpg_trajectory_evaluation); neither
OmniLocalRF nor LocalRF released a pose-evaluation script, and the paper names no convention or unit:
- Sim(3) Umeyama alignment of the estimated camera centres to the true ones (scale, rotation, translation);
  the estimated camera-to-world poses are mapped by it (R -> R_a R, t -> s R_a t + t_a);
- ATE = RMSE of the aligned camera centres' distances to the true ones;
- RPE over consecutive frames on the aligned poses: E_i = (G_i^-1 G_i+1)^-1 (P_i^-1 P_i+1);
  RPE_t = mean |translation(E_i)|, RPE_r = mean rotation angle of E_i in DEGREES (`reduction="rmse"` gives TUM's
  RMSE instead). Poses are camera-to-world (N, 3|4, 4).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
from scipy.ndimage import correlate1d

from cvpr24.core.metrics import Unavailable, lpips_distance
from cvpr24.core.metrics import psnr as _core_psnr

GREY = 0.5
SSIM_FILTER_SIZE = 11
SSIM_SIGMA = 1.5


# ---------------------------------------------------------------- images


def _pair(prediction: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = np.asarray(prediction, np.float64), np.asarray(reference, np.float64)
    if pred.shape != ref.shape:
        raise ValueError(f"metric inputs differ in shape: {pred.shape} vs {ref.shape}")
    if pred.ndim != 3:
        raise ValueError(f"images must be (H, W, C), got {pred.shape}")
    if not (np.isfinite(pred).all() and np.isfinite(ref).all()):
        raise ValueError("metric input contains NaN or inf values")
    return pred, ref


def latitude_weights(h: int) -> np.ndarray:
    """(h,) WS weights cos((j + 0.5 - h/2) pi / h) = cos(latitude of row j's centre)."""
    return np.cos((np.arange(h, dtype=np.float64) + 0.5 - h / 2) * np.pi / h)


def psnr(prediction: np.ndarray, reference: np.ndarray, max_val: float = 1.0) -> float:
    """PSNR in dB (scikit-image's, via `core.metrics.psnr`)."""
    pred, ref = _pair(prediction, reference)
    return _core_psnr(pred, ref, data_range=max_val)


def ws_mse(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Latitude-weighted MSE: sum w(j) err^2 / sum w(j) over pixels and channels."""
    pred, ref = _pair(prediction, reference)
    w = latitude_weights(pred.shape[0])[:, None, None]
    err = (pred - ref) ** 2
    return float((w * err).sum() / (w.sum() * err.shape[1] * err.shape[2]))


def ws_psnr(prediction: np.ndarray, reference: np.ndarray, max_val: float = 1.0) -> float:
    """WS-PSNR in dB: 10 log10(max_val^2 / WS-MSE) (inf for identical images)."""
    mse = ws_mse(prediction, reference)
    return math.inf if mse == 0 else 10.0 * math.log10(max_val**2 / mse)


def _gaussian_filter_1d(size: int, sigma: float) -> np.ndarray:
    half = size // 2
    shift = (2 * half - size + 1) / 2
    f = np.exp(-0.5 * ((np.arange(size) - half + shift) / sigma) ** 2)
    return f / f.sum()


def ssim_map(prediction: np.ndarray, reference: np.ndarray, max_val: float = 1.0,
             filter_size: int = SSIM_FILTER_SIZE, filter_sigma: float = SSIM_SIGMA, k1: float = 0.01,
             k2: float = 0.03) -> np.ndarray:
    """The paper's SSIM map, (H - filter_size + 1, W - filter_size + 1, C), 'valid' separable Gaussian filtering."""
    pred, ref = _pair(prediction, reference)
    if min(pred.shape[:2]) < filter_size:
        raise ValueError(f"images must be at least {filter_size} x {filter_size} for SSIM, got {pred.shape[:2]}")
    if filter_size % 2 != 1:
        raise ValueError(f"filter_size must be odd, got {filter_size}")
    filt = _gaussian_filter_1d(filter_size, filter_sigma)

    lo, hi = filter_size // 2, filter_size - 1 - filter_size // 2

    def blur(z: np.ndarray) -> np.ndarray:  # 'valid' part of a separable filtering (the filter is symmetric)
        z = correlate1d(z, filt, axis=0, mode="constant")[lo:z.shape[0] - hi]
        return correlate1d(z, filt, axis=1, mode="constant")[:, lo:z.shape[1] - hi]

    mu0, mu1 = blur(pred), blur(ref)
    mu00, mu11, mu01 = mu0 * mu0, mu1 * mu1, mu0 * mu1
    s00 = np.maximum(0.0, blur(pred**2) - mu00)
    s11 = np.maximum(0.0, blur(ref**2) - mu11)
    s01 = blur(pred * ref) - mu01
    s01 = np.sign(s01) * np.minimum(np.sqrt(s00 * s11), np.abs(s01))
    c1, c2 = (k1 * max_val) ** 2, (k2 * max_val) ** 2
    return (2 * mu01 + c1) * (2 * s01 + c2) / ((mu00 + mu11 + c1) * (s00 + s11 + c2))


def ssim(prediction: np.ndarray, reference: np.ndarray, max_val: float = 1.0) -> float:
    """The paper's SSIM: mean of `ssim_map` over the map and the channels."""
    return float(ssim_map(prediction, reference, max_val).mean())


def ws_mean_of_map(values: np.ndarray, image_height: int, row_offset: int | None = None) -> float:
    """Latitude-weighted mean of a per-pixel map (h', W', ...) whose row r stands for image row r + row_offset
    (default: centred, (image_height - h') / 2, i.e. a 'valid' filter's crop)."""
    values = np.asarray(values, np.float64)
    crop = image_height - values.shape[0]
    row_offset = crop // 2 if row_offset is None else row_offset
    if crop < 0 or not 0 <= row_offset <= crop:
        raise ValueError(f"a map of {values.shape[0]} rows does not fit image rows {row_offset}.. of {image_height}")
    w = latitude_weights(image_height)[row_offset:row_offset + values.shape[0]]
    w = w.reshape(-1, *([1] * (values.ndim - 1)))
    return float((w * values).sum() / (w.sum() * (values.size // values.shape[0])))


def ws_ssim(prediction: np.ndarray, reference: np.ndarray, max_val: float = 1.0) -> float:
    """WS-SSIM: the SSIM map averaged with the latitude weights of its (cropped) rows."""
    smap = ssim_map(prediction, reference, max_val)
    return ws_mean_of_map(smap, np.asarray(prediction).shape[0], row_offset=SSIM_FILTER_SIZE // 2)


def grey_fill(image: np.ndarray, mask: np.ndarray | None, value: float = GREY) -> np.ndarray:
    """Copy of `image` (H, W, C) with pixels where `mask` (H, W) is non-zero set to `value` (grey)."""
    out = np.array(image, dtype=np.float64, copy=True)
    if mask is None:
        return out
    mask = np.asarray(mask)
    if mask.shape != out.shape[:2]:
        raise ValueError(f"mask {mask.shape} does not match image {out.shape[:2]}")
    out[mask.astype(bool)] = value
    return out


def image_metrics(prediction: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None, *,
                  max_val: float = 1.0, with_lpips: bool = False) -> dict[str, float | Unavailable]:
    """PSNR, PSNR_WS, SSIM, SSIM_WS (and LPIPS on request) of one test frame; with `mask` (non-zero = dynamic,
    excluded) both images are grey-filled there first, as the paper does for the real scenes."""
    pred, ref = grey_fill(prediction, mask), grey_fill(reference, mask)
    out: dict[str, float | Unavailable] = {
        "psnr": psnr(pred, ref, max_val), "psnr_ws": ws_psnr(pred, ref, max_val),
        "ssim": ssim(pred, ref, max_val), "ssim_ws": ws_ssim(pred, ref, max_val),
    }
    if with_lpips:
        out["lpips"] = lpips_distance(pred, ref, data_range=max_val)
    return out


def mean_of_scene_means(per_scene: Mapping[str, Sequence[float]]) -> float:
    """The tables' averaging: per-image values -> mean per scene -> mean over scenes (NaN when empty)."""
    means = [float(np.mean(v)) for v in per_scene.values() if len(v)]
    return float(np.mean(means)) if means else float("nan")


# ---------------------------------------------------------------- poses


def _poses44(poses: np.ndarray) -> np.ndarray:
    poses = np.asarray(poses, np.float64)
    if poses.ndim != 3 or poses.shape[1:] not in ((3, 4), (4, 4)):
        raise ValueError(f"poses must be (N, 3, 4) or (N, 4, 4), got {poses.shape}")
    if not np.isfinite(poses).all():
        raise ValueError("poses contain NaN or inf values")
    out = np.tile(np.eye(4), (poses.shape[0], 1, 1))
    out[:, :3, :] = poses[:, :3, :]
    return out


def umeyama(source: np.ndarray, target: np.ndarray, with_scale: bool = True
            ) -> tuple[float, np.ndarray, np.ndarray]:
    """Least-squares similarity (s, R, t) with target ~ s R source + t (Umeyama 1991), points (N, 3)."""
    src, dst = np.asarray(source, np.float64), np.asarray(target, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3:
        raise ValueError(f"point sets must both be (N, 3), got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    var_s = (xs**2).sum() / len(src)
    if var_s == 0:
        raise ValueError("the source points are all equal: the alignment is undefined")
    cov = xd.T @ xs / len(src)
    u, d, vt = np.linalg.svd(cov)
    sign = np.ones(3)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[2] = -1
    rot = u @ np.diag(sign) @ vt
    scale = float((d * sign).sum() / var_s) if with_scale else 1.0
    return scale, rot, mu_d - scale * rot @ mu_s


def align_poses(estimated: np.ndarray, reference: np.ndarray, with_scale: bool = True
                ) -> tuple[np.ndarray, tuple[float, np.ndarray, np.ndarray]]:
    """Map the estimated camera-to-world poses by the Umeyama Sim(3) of their centres onto the reference centres.
    Returns the aligned (N, 4, 4) poses and (s, R, t)."""
    est, ref = _poses44(estimated), _poses44(reference)
    if est.shape != ref.shape:
        raise ValueError(f"trajectories differ in length: {est.shape[0]} vs {ref.shape[0]}")
    s, rot, t = umeyama(est[:, :3, 3], ref[:, :3, 3], with_scale)
    out = est.copy()
    out[:, :3, :3] = rot @ est[:, :3, :3]
    out[:, :3, 3] = s * est[:, :3, 3] @ rot.T + t
    return out, (s, rot, t)


def rotation_angle(rot: np.ndarray) -> np.ndarray:
    """Rotation angle in radians of (..., 3, 3) matrices, atan2(|vee(R - R^T)| / 2, (tr R - 1) / 2) (equal to the
    usual arccos((tr R - 1) / 2), without its loss of precision at small angles)."""
    rot = np.asarray(rot, np.float64)
    v = np.stack([rot[..., 2, 1] - rot[..., 1, 2], rot[..., 0, 2] - rot[..., 2, 0], rot[..., 1, 0] - rot[..., 0, 1]],
                 axis=-1)
    return np.arctan2(np.linalg.norm(v, axis=-1) / 2, (np.trace(rot, axis1=-2, axis2=-1) - 1) / 2)


def ate(estimated: np.ndarray, reference: np.ndarray, align: bool = True) -> float:
    """Absolute trajectory error: RMSE of the camera centres after Sim(3) alignment (units of the reference)."""
    est = align_poses(estimated, reference)[0] if align else _poses44(estimated)
    ref = _poses44(reference)
    return float(np.sqrt(np.mean(np.sum((est[:, :3, 3] - ref[:, :3, 3]) ** 2, axis=-1))))


def rpe(estimated: np.ndarray, reference: np.ndarray, align: bool = True,
        reduction: Literal["mean", "rmse"] = "mean") -> tuple[float, float]:
    """Relative pose error over consecutive frames: (RPE_t, RPE_r in degrees), on Sim(3)-aligned poses."""
    est = align_poses(estimated, reference)[0] if align else _poses44(estimated)
    ref = _poses44(reference)
    if len(ref) < 2:
        raise ValueError("RPE needs at least two poses")
    rel_ref = np.linalg.inv(ref[:-1]) @ ref[1:]
    rel_est = np.linalg.inv(est[:-1]) @ est[1:]
    err = np.linalg.inv(rel_ref) @ rel_est
    t_err = np.linalg.norm(err[:, :3, 3], axis=-1)
    r_err = np.degrees(rotation_angle(err[:, :3, :3]))
    if reduction == "mean":
        return float(t_err.mean()), float(r_err.mean())
    if reduction == "rmse":
        return float(np.sqrt((t_err**2).mean())), float(np.sqrt((r_err**2).mean()))
    raise ValueError(f"reduction must be 'mean' or 'rmse', got {reduction!r}")


def pose_errors(estimated: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Table 3's numbers for one scene: ATE, RPE_t, RPE_r (degrees), all after Sim(3) alignment."""
    rpe_t, rpe_r = rpe(estimated, reference)
    return {"ate": ate(estimated, reference), "rpe_t": rpe_t, "rpe_r": rpe_r}
