"""OmniLocalRF's bidirectional optimisation by distant frames (spec 2.4; paper Sec. 3.2, Eq. 5-9): the choice of
distant frames and the three loss terms on rendered quantities. The renders themselves (RF_c and RF_p along the
source and destination rays) are the trainer's; geometry is :func:`.camera.reproject_rays`,
:func:`.camera.depth_consistent` and :func:`.camera.erp_bilinear_sample`.

- Active only when at least two RFs exist and the current RF's refinement iteration is past its last upsampling.
- Each iteration picks one previous RF p uniformly among 0..c-1 and, for each source view, a random non-test
  destination frame of p's window.
- Forward step (Eq. 5-6): source pixels back-projected with RF_c's depth, projected into the destination frame;
  C_bar = the destination image sampled there; RF_c renders the destination rays (colour, depth) and RF_p their
  depth; valid where ``(1 - margin) D_p < D_c < (1 + margin) D_p`` and ``D_c < max_depth``; loss
  ``weight * mean_valid(|C_c - C_bar| * lw * (1 - M)) / mean(lw)`` with M the destination frame's mask, detached.
- Backward step (Eq. 7 and 9): RF_p renders fresh destination rays, compared with their pixels (Eq. 7), and, after
  reprojection into the source frames with RF_p's depth, with the sampled source colours where RF_c's depth agrees
  (Eq. 9), both with the same weighting.
- The code passes margin 2 and max depth 0.05 to the forward step, which makes the valid set D_c < 0.05 (empty: all
  sample distances are >= 0.1) and its loss a mean over nothing (NaN, no gradient; spec correction). Here an empty
  valid set gives 0 with no gradient, and the paper's values (margin 0.05, max depth 1) are the default;
  ``FORWARD_CODE`` holds the code's pair for a run that wants it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from cvpr24.pipelines.omnilocalrf.camera import depth_consistent

FORWARD_PAPER = {"margin": 0.05, "max_depth": 1.0}
FORWARD_CODE = {"margin": 2.0, "max_depth": 0.05}
BACKWARD = {"margin": 0.05, "max_depth": 1.0}
WEIGHT = 0.025


def active(n_rfs: int, rf_iter: int, last_upsample_iter: int) -> bool:
    """Whether the bidirectional terms run this iteration (module docstring)."""
    return n_rfs >= 2 and rf_iter > last_upsample_iter


def pick_distant_frames(frame_lists: Sequence[Sequence[int]], current_rf: int, n_views: int, test_ids: Sequence[int],
                        generator: torch.Generator) -> tuple[int, list[int]]:
    """One previous RF p (uniform over 0..current_rf-1) and ``n_views`` destination frames drawn uniformly, with
    replacement, from p's window without its test frames."""
    if current_rf < 1:
        raise ValueError("the bidirectional step needs a previous RF (current_rf >= 1)")
    p = int(torch.randint(0, current_rf, (1,), generator=generator))
    test = set(int(t) for t in test_ids)
    pool = [int(f) for f in frame_lists[p] if int(f) not in test]
    if not pool:
        raise ValueError(f"RF {p}'s window has no training frame to reproject into")
    picks = torch.randint(0, len(pool), (n_views,), generator=generator)
    return p, [pool[int(i)] for i in picks]


def masked_l1(pred: Tensor, target: Tensor, weights: Tensor, mask: Tensor | None = None,
              valid: Tensor | None = None, weight: float = WEIGHT) -> Tensor:
    """``weight * mean over valid rays of |pred - target| * lw * (1 - M) / mean(lw)``; 0 (no gradient) when no ray
    is valid. pred / target (N, 3); weights, mask, valid (N,)."""
    lw = weights / weights.mean()
    err = (pred - target).abs().mean(-1) * lw
    if mask is not None:
        err = err * (1.0 - mask.detach())
    if valid is not None:
        if not bool(valid.any()):
            return pred.sum() * 0.0
        err = err[valid]
    return weight * err.mean()


def forward_loss(c_current: Tensor, c_sampled: Tensor, depth_current: Tensor, depth_previous: Tensor, weights: Tensor,
                 mask: Tensor | None = None, *, margin: float = FORWARD_PAPER["margin"],
                 max_depth: float = FORWARD_PAPER["max_depth"], weight: float = WEIGHT) -> tuple[Tensor, Tensor]:
    """Eq. 5-6: the loss and the valid set R_C."""
    valid = depth_consistent(depth_current.detach(), depth_previous.detach(), margin, max_depth)
    return masked_l1(c_current, c_sampled, weights, mask, valid, weight), valid


def backward_losses(c_prev_dst: Tensor, c_dst: Tensor, c_prev_src: Tensor, c_src_sampled: Tensor,
                    depth_prev: Tensor, depth_current: Tensor, weights_dst: Tensor, weights_src: Tensor,
                    mask_dst: Tensor | None = None, mask_src: Tensor | None = None, *,
                    margin: float = BACKWARD["margin"], max_depth: float = BACKWARD["max_depth"],
                    weight: float = WEIGHT) -> tuple[Tensor, Tensor, Tensor]:
    """Eq. 7 (RF_p on the destination rays against their pixels) and Eq. 9 (RF_p on the reprojected source rays
    against the sampled source colours where R_P holds). Returns (eq7, eq9, valid R_P). The code's R_P compares
    D_p with D_c and bounds D_c (``D_c < 1``); ``depth_prev`` / ``depth_current`` are RF_p's and RF_c's depths."""
    eq7 = masked_l1(c_prev_dst, c_dst, weights_dst, mask_dst, None, weight)
    valid = depth_consistent(depth_prev.detach(), depth_current.detach(), margin, float("inf")) & \
        (depth_current.detach() < max_depth)
    eq9 = masked_l1(c_prev_src, c_src_sampled, weights_src, mask_src, valid, weight)
    return eq7, eq9, valid
