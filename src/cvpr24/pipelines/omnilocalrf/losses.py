"""OmniLocalRF's per-ray losses of the main branch (spec 2.5 items 1, 5-8), after the official code (LocalRF's
`train.py` as forked by KAIST-VCLAB/OmniLocalRF @ 763f490). The motion-mask terms are in :mod:`.motion`.

- Sharpness weight ``lw`` of a frame: the variance of the Laplacian of its grey 8-bit image (OpenCV's 3x3 aperture,
  float64), normalised by the batch mean where it is used; blurred frames count less.
- Photometric (Eq. 1 / 3): ``mean |C - C_gt| lw / mean(lw)`` (L1), weight 0.25.
- Beta loss on a ray's last transmittance: ``mean(log T + log(1 - T))`` with T clamped to [1e-6, 1 - 1e-6],
  weight 1e-3; it is largest at T = 0.5 and falls towards either end, so minimising it drives T to 0 or 1.
- Depth TV on 2x2 patches, only where the rendered depth exceeds ``far`` (30): squared differences inside each
  patch, weight 1e-4.
- Monocular depth (item 8): per view, rendered and prior inverse depths are each normalised by their median and
  mean absolute deviation, the squared difference is taken, values above the view's 80th percentile are dropped
  (set to 0), and the rest is weighted by (1 - M) (mask detached) and averaged.
- Optical flow (item 7): the rendered depth back-projects each ray into 3D, the current poses project it into the
  neighbouring frame, the predicted ERP flow (seam-aware, :func:`.camera.wrap_flow`) is compared with the prior flow
  in L1, multiplied by the flow's validity (forward-backward consistency) and (1 - M); per view, values above the
  90th percentile are dropped; the caller scales by ``lr_factor^iter / ((W + H) / 2)``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from cvpr24.pipelines.omnilocalrf.camera import reproject_rays, wrap_flow


def sharpness(grey_u8: np.ndarray) -> float:
    """Variance of the 3x3 Laplacian of a grey uint8 image (``cv2.Laplacian(img, cv2.CV_64F).var()``)."""
    import cv2

    if grey_u8.ndim != 2 or grey_u8.dtype != np.uint8:
        raise ValueError(f"sharpness needs a grey uint8 image (H, W), got {grey_u8.dtype} {grey_u8.shape}")
    return float(cv2.Laplacian(grey_u8, cv2.CV_64F).var())


def photometric_l1(pred: Tensor, target: Tensor, weights: Tensor) -> Tensor:
    """mean |pred - target| * lw / mean(lw), lw per ray (N,), colours (N, 3)."""
    lw = weights.reshape(-1, 1) / weights.mean()
    return ((pred - target).abs() * lw).mean()


def beta_loss(t_last: Tensor, eps: float = 1e-6) -> Tensor:
    """mean(log T + log(1 - T)), T clamped to [eps, 1 - eps]."""
    t = t_last.clamp(eps, 1.0 - eps)
    return (torch.log(t) + torch.log(1.0 - t)).mean()


def depth_tv_far(depth_patches: Tensor, far: float = 30.0) -> Tensor:
    """Squared differences inside 2x2 patches (P, 2, 2) of rendered depth, counted only in patches whose pixels all
    lie beyond ``far``; 0 when there is none."""
    keep = (depth_patches > far).flatten(1).all(dim=1)
    if not bool(keep.any()):
        return depth_patches.new_zeros(())
    d = depth_patches[keep]
    return ((d[:, :, 1:] - d[:, :, :-1]).square().mean() + (d[:, 1:, :] - d[:, :-1, :]).square().mean())


def _normalise(x: Tensor) -> Tensor:
    med = x.median(dim=-1, keepdim=True).values
    mad = (x - med).abs().mean(dim=-1, keepdim=True).clamp_min(1e-8)
    return (x - med) / mad


def _drop_above_quantile(loss: Tensor, q: float) -> Tensor:
    thr = torch.quantile(loss.detach(), q, dim=-1, keepdim=True)
    return torch.where(loss > thr, torch.zeros_like(loss), loss)


def mono_depth_loss(pred_invdepth: Tensor, prior_invdepth: Tensor, mask: Tensor | None = None, *,
                    quantile: float = 0.8) -> Tensor:
    """Scale- and shift-invariant inverse-depth loss (module docstring), inputs (views, rays per view)."""
    if pred_invdepth.shape != prior_invdepth.shape or pred_invdepth.ndim != 2:
        raise ValueError(f"inverse depths must both be (views, rays), got {tuple(pred_invdepth.shape)} and "
                         f"{tuple(prior_invdepth.shape)}")
    loss = (_normalise(pred_invdepth) - _normalise(prior_invdepth)).square()
    loss = _drop_above_quantile(loss, quantile)
    if mask is not None:
        loss = loss * (1.0 - mask.detach())
    return loss.mean()


def predicted_flow(directions: Tensor, depth: Tensor, pixels: Tensor, pose_src: Tensor, pose_dst: Tensor, h: int,
                   w: int) -> tuple[Tensor, Tensor]:
    """ERP flow (N, 2) from the source pixels (N, 2) = (i, j) to where their rays at ``depth`` land in the
    destination frame, seam-aware; and the validity of each reprojection."""
    coords, valid = reproject_rays(directions, depth, pose_src, pose_dst, h, w)
    return wrap_flow(coords - pixels, float(w)), valid


def flow_loss(pred_flow: Tensor, prior_flow: Tensor, prior_valid: Tensor, mask: Tensor | None = None, *,
              quantile: float = 0.9) -> Tensor:
    """L1 between predicted and prior flow (views, rays, 2), times the prior's validity (views, rays) and (1 - M);
    per view, values above the ``quantile`` are dropped. The caller applies the weight and the lr factor."""
    loss = (pred_flow - prior_flow).abs().sum(-1)
    loss = loss * prior_valid.to(loss.dtype)
    if mask is not None:
        loss = loss * (1.0 - mask.detach())
    return _drop_above_quantile(loss, quantile).mean()
