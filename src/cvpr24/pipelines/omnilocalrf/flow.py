"""Optical flow for equirectangular (ERP) frames with OpenCV's DIS flow: the offline stand-in for RAFT (spec 7a).

An ERP frame wraps horizontally: content leaving through the left edge re-enters at the right. A flow method run on
the bare frame cannot match pixels whose content crossed the seam; here both frames are padded with `pad` wrapped
columns on each side (default W/8), the flow is computed on the padded pair, cropped back to W columns and brought
to the short way round with `camera.wrap_flow`. Flow is in pixels, (H, W, 2) float32, channel 0 = horizontal
(column) displacement, channel 1 = vertical, from `frame0` to `frame1` (frame1(x + flow(x)) ~ frame0(x)).

The official preprocessing (`scripts/run_flow.py`) runs RAFT on the bare ERP frame (no seam handling) and its
forward-backward check warps the backward flow by itself (`warp_flow(bwd_flow, bwd_flow)` overwrites the line
above it); `fwd_bwd_consistency` implements the intent (warp by the forward flow) with wrapped columns.

OpenCV (`opencv-python-headless`) is imported lazily; it runs single-threaded (`cv2.setNumThreads(1)`) so results
are deterministic for a given OpenCV build.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cvpr24.pipelines.omnilocalrf.camera import wrap_flow

PRESETS = ("ultrafast", "fast", "medium")
DEFAULT_PRESET = "medium"


def _cv2() -> Any:
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "OmniLocalRF's offline optical flow needs OpenCV: pip install opencv-python-headless"
        ) from exc
    cv2.setNumThreads(1)
    return cv2


def to_gray_u8(frame: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, 3) RGB frame, uint8 (0..255) or float (0..1) -> (H, W) uint8 grey (ITU-R 601 luma)."""
    arr = np.asarray(frame)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2 and arr.dtype == np.uint8:
        return arr
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ValueError(f"expected a (H, W) or (H, W, 3) frame, got {arr.shape}")
    scale = 255.0 if np.issubdtype(arr.dtype, np.floating) else 1.0
    grey = arr.astype(np.float64) @ np.array([0.299, 0.587, 0.114]) if arr.ndim == 3 else arr.astype(np.float64)
    return np.clip(np.rint(grey * scale), 0, 255).astype(np.uint8)


def pad_wrap(image: np.ndarray, pad: int) -> np.ndarray:
    """Pad an ERP image (H, W, ...) with `pad` wrapped columns on each side."""
    if pad == 0:
        return image
    if not 0 < pad <= image.shape[1]:
        raise ValueError(f"pad must be in [0, W={image.shape[1]}], got {pad}")
    return np.concatenate([image[:, -pad:], image, image[:, :pad]], axis=1)


def dis_flow(frame0: np.ndarray, frame1: np.ndarray, *, preset: str = DEFAULT_PRESET, pad: int | None = None,
             wrap: bool = True) -> np.ndarray:
    """DIS optical flow (H, W, 2) float32 from `frame0` to `frame1` (ERP frames of equal size).

    `pad`: wrapped columns added on each side before the flow (default W // 8; 0 = the bare frame, seam-blind);
    `wrap`: bring the horizontal component to the short way across the seam (`camera.wrap_flow`).
    """
    cv2 = _cv2()
    g0, g1 = to_gray_u8(frame0), to_gray_u8(frame1)
    if g0.shape != g1.shape:
        raise ValueError(f"frames differ in size: {g0.shape} vs {g1.shape}")
    h, w = g0.shape
    if preset not in PRESETS:
        raise ValueError(f"preset must be one of {PRESETS}, got {preset!r}")
    pad = w // 8 if pad is None else int(pad)
    dis = cv2.DISOpticalFlow_create(getattr(cv2, f"DISOPTICAL_FLOW_PRESET_{preset.upper()}"))
    flow = dis.calc(pad_wrap(g0, pad), pad_wrap(g1, pad), None)[:, pad:pad + w]
    flow = np.ascontiguousarray(flow, dtype=np.float32)
    if wrap:
        flow = wrap_flow(torch.from_numpy(flow), w).numpy()
    return flow


def warp_wrapped(values: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Bilinear look-up of `values` (H, W, C) at x + flow(x): columns modulo W, rows clamped (ERP)."""
    h, w = flow.shape[:2]
    jj, ii = np.meshgrid(np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64), indexing="ij")
    x, y = ii + flow[..., 0], jj + flow[..., 1]
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = (x - x0)[..., None], (y - y0)[..., None]
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    c0, c1 = np.mod(x0, w), np.mod(x0 + 1, w)
    r0, r1 = np.clip(y0, 0, h - 1), np.clip(y0 + 1, 0, h - 1)
    top = values[r0, c0] * (1 - fx) + values[r0, c1] * fx
    bottom = values[r1, c0] * (1 - fx) + values[r1, c1] * fx
    return (top * (1 - fy) + bottom * fy).astype(values.dtype)


def fwd_bwd_consistency(fwd: np.ndarray, bwd: np.ndarray, alpha_1: float = 0.05, alpha_2: float = 0.5
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Forward-backward check of `run_flow.py` (spec 7a): a forward vector is kept where
    |f_fwd + f_bwd(x + f_fwd)| < alpha_1 (|f_fwd| + |f_bwd(x + f_fwd)|) + alpha_2, and symmetrically; look-ups wrap
    across the seam and the round-trip sum is taken the short way. Returns (fwd_mask, bwd_mask), boolean (H, W)."""
    w = fwd.shape[1]

    def check(f: np.ndarray, g: np.ndarray) -> np.ndarray:
        g_at = warp_wrapped(g, f)
        err = wrap_flow(torch.from_numpy(np.ascontiguousarray(f + g_at, dtype=np.float64)), w).numpy()
        bound = alpha_1 * (np.linalg.norm(f, axis=-1) + np.linalg.norm(g_at, axis=-1)) + alpha_2
        return np.linalg.norm(err, axis=-1) < bound

    return check(fwd, bwd), check(bwd, fwd)
