"""Geometry shared by the papers: the mip-NeRF 360 scene contraction and its inverse (numpy or torch).

`contract(x, kind)` maps world points (..., 3) into the radius-2 ball (`l2`, mip-NeRF 360 / OmniLocalRF's
TensoRF fields) or box (`linf`, NeRF2Mesh's cascades for LTM): identity where |x| <= 1, else
(2 - 1/|x|) x / |x|; `none` returns x. Differentiable in torch.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

CONTRACTIONS = ("linf", "l2", "none")
UNCONTRACT_EPS = 4e-6  # |c| is clamped to 2 - this before uncontracting (|x| ~ 1.25e5 at most)
ArrayLike = np.ndarray | Tensor


def check_contraction(kind: str) -> None:
    if kind not in CONTRACTIONS:
        raise ValueError(f"contraction must be one of {CONTRACTIONS}, got {kind!r}")


def contraction_norm(x: ArrayLike, kind: str) -> ArrayLike:
    if isinstance(x, Tensor):
        return x.abs().amax(-1, keepdim=True) if kind == "linf" else x.norm(dim=-1, keepdim=True)
    return np.abs(x).max(-1, keepdims=True) if kind == "linf" else np.linalg.norm(x, axis=-1, keepdims=True)


def contract(x: ArrayLike, kind: str = "linf") -> ArrayLike:
    """Contract world points ``(..., 3)`` (numpy or torch, differentiable) into the radius-2 box (``linf``) or ball
    (``l2``): identity where ``|x| <= 1``, else ``(2 - 1/|x|) x / |x|``. ``none`` returns ``x``."""
    check_contraction(kind)
    if kind == "none":
        return x
    m = contraction_norm(x, kind)
    if isinstance(x, Tensor):
        ms = m.clamp_min(1.0)
        return torch.where(m <= 1.0, x, (2.0 - 1.0 / ms) * x / ms)
    ms = np.maximum(m, 1.0)
    return np.where(m <= 1.0, x, (2.0 - 1.0 / ms) * x / ms)


def uncontract(c: ArrayLike, kind: str = "linf") -> ArrayLike:
    """Inverse of :func:`contract`: identity where ``|c| <= 1``, else ``c / (m (2 - m))`` with ``m = |c|`` clamped to
    ``2 - UNCONTRACT_EPS`` (points at or beyond the image of infinity come back far away but finite)."""
    check_contraction(kind)
    if kind == "none":
        return c
    m = contraction_norm(c, kind)
    top = 2.0 - UNCONTRACT_EPS
    if isinstance(c, Tensor):
        return torch.where(m <= 1.0, c, c / m.clamp_min(1.0) / (2.0 - m.clamp(1.0, top)))
    return np.where(m <= 1.0, c, c / np.maximum(m, 1.0) / (2.0 - np.clip(m, 1.0, top)))
