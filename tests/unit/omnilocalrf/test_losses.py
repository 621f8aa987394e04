"""OmniLocalRF's main-branch losses: sharpness weights, photometric L1, beta, far-depth TV, monocular depth, flow."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cvpr24.pipelines.omnilocalrf import camera as C
from cvpr24.pipelines.omnilocalrf import losses as L


def test_sharpness_ranks_a_blurred_frame_lower() -> None:
    rng = np.random.default_rng(0)
    sharp = (rng.random((32, 64)) * 255).astype(np.uint8)
    blurred = ((sharp[:, :-1].astype(np.float64) + sharp[:, 1:]) / 2).astype(np.uint8)
    assert L.sharpness(sharp) > 2 * L.sharpness(blurred)
    assert L.sharpness(np.full((8, 8), 7, np.uint8)) == 0.0
    with pytest.raises(ValueError, match="grey uint8"):
        L.sharpness(np.zeros((8, 8, 3), np.uint8))


def test_photometric_l1_weights_rays() -> None:
    pred = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    gt = torch.zeros(2, 3)
    assert L.photometric_l1(pred, gt, torch.ones(2)) == pytest.approx(0.5)
    assert L.photometric_l1(pred, gt, torch.tensor([3.0, 1.0])) == pytest.approx(0.75)   # lw / mean(lw) = 1.5, 0.5


def test_beta_loss_peaks_at_half_and_falls_towards_the_ends() -> None:
    assert L.beta_loss(torch.tensor([0.5])) == pytest.approx(2 * math.log(0.5))
    assert L.beta_loss(torch.tensor([0.01])) < L.beta_loss(torch.tensor([0.5]))
    assert torch.isfinite(L.beta_loss(torch.tensor([0.0, 1.0])))


def test_depth_tv_counts_far_patches_only() -> None:
    near = torch.tensor([[[1.0, 5.0], [1.0, 5.0]]])
    assert L.depth_tv_far(near) == 0.0
    far = torch.tensor([[[40.0, 42.0], [40.0, 42.0]]])
    assert L.depth_tv_far(far) == pytest.approx(4.0)          # columns differ by 2 (squared 4), rows by 0
    assert L.depth_tv_far(torch.cat([near, far])) == pytest.approx(4.0)


def test_mono_depth_loss_is_scale_and_shift_invariant_per_view() -> None:
    g = torch.Generator().manual_seed(0)
    prior = torch.rand(3, 50, generator=g) + 0.1
    scaled = prior * torch.tensor([[2.0], [0.5], [7.0]]) + torch.tensor([[0.3], [-0.1], [1.0]])
    assert L.mono_depth_loss(scaled, prior) == pytest.approx(0.0, abs=1e-10)
    other = torch.rand(3, 50, generator=g) + 0.1
    assert L.mono_depth_loss(other, prior) > 0.1
    masked = L.mono_depth_loss(other, prior, torch.ones(3, 50))
    assert masked == 0.0                                   # every ray marked dynamic


def test_mono_depth_loss_drops_the_worst_fifth() -> None:
    prior = torch.linspace(0.1, 1.0, 100).unsqueeze(0)
    pred = prior.clone()
    pred[0, :10] = 50.0                                    # 10 % outliers: dropped by the 80th percentile
    full = (L._normalise(pred) - L._normalise(prior)).square()
    kept = L.mono_depth_loss(pred, prior)
    assert kept < full.mean() / 10
    with pytest.raises(ValueError, match="views, rays"):
        L.mono_depth_loss(pred[0], prior[0])


def test_predicted_flow_of_a_pure_yaw_is_a_horizontal_shift_across_the_seam() -> None:
    h, w = 16, 32
    grid = C.erp_pixel_grid(h, w).reshape(-1, 2)
    dirs = C.erp_directions(h, w).reshape(-1, 3)
    depth = torch.full((h * w,), 3.0)
    yaw = 2 * math.pi / w * 2                              # the destination camera turned by 2 columns
    rot = torch.tensor([[math.cos(yaw), 0.0, math.sin(yaw)], [0.0, 1.0, 0.0], [-math.sin(yaw), 0.0, math.cos(yaw)]])
    src = torch.eye(4)
    dst = torch.eye(4)
    dst[:3, :3] = rot
    flow, valid = L.predicted_flow(dirs, depth, grid, src, dst, h, w)
    assert bool(valid.all())
    assert flow[:, 0].abs().max() <= w / 2 and torch.allclose(flow[:, 0].abs(), torch.full((h * w,), 2.0), atol=1e-3)
    assert flow[:, 1].abs().max() < 1e-3
    assert torch.allclose(flow[:, 0], flow[0, 0].expand(h * w), atol=1e-3)   # the same direction at the seam too


def test_flow_loss_masks_and_drops_outliers() -> None:
    pred = torch.zeros(1, 10, 2)
    prior = torch.zeros(1, 10, 2)
    prior[0, 0] = torch.tensor([100.0, 0.0])               # one outlier: above the 90th percentile
    prior[0, 1:5, 0] = 1.0
    valid = torch.ones(1, 10, dtype=torch.bool)
    assert L.flow_loss(pred, prior, valid) == pytest.approx(0.4)
    valid[0, 1:3] = False
    assert L.flow_loss(pred, prior, valid) == pytest.approx(0.2)
    mask = torch.zeros(1, 10)
    mask[0, 3] = 1.0
    assert L.flow_loss(pred, prior, valid, mask) == pytest.approx(0.1)
