"""Bidirectional optimisation: activation, choice of distant frames, the valid sets and the masked losses."""

from __future__ import annotations

import pytest
import torch

from cvpr24.pipelines.omnilocalrf import bidirectional as B


def test_active_needs_two_rfs_and_a_finished_upsampling() -> None:
    assert not B.active(1, 5000, 100)
    assert not B.active(2, 100, 100)
    assert B.active(2, 101, 100)


def test_distant_frames_come_from_one_previous_window_without_test_frames() -> None:
    windows = [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8]]
    g = torch.Generator().manual_seed(0)
    seen_rf = set()
    for _ in range(40):
        p, frames = B.pick_distant_frames(windows, 2, 16, test_ids=[1, 5], generator=g)
        seen_rf.add(p)
        assert p in (0, 1) and len(frames) == 16
        assert set(frames) <= set(windows[p]) - {1, 5}
    assert seen_rf == {0, 1}
    with pytest.raises(ValueError, match="previous RF"):
        B.pick_distant_frames(windows, 0, 4, [], g)
    with pytest.raises(ValueError, match="no training frame"):
        B.pick_distant_frames([[1]], 1, 4, [1], g)


def test_forward_valid_set_follows_the_depth_agreement() -> None:
    c = torch.zeros(4, 3)
    bar = torch.ones(4, 3)
    d_c = torch.tensor([0.50, 0.50, 0.90, 1.50])
    d_p = torch.tensor([0.51, 0.70, 0.90, 1.50])          # agree, disagree, agree, agree but too far
    loss, valid = B.forward_loss(c, bar, d_c, d_p, torch.ones(4))
    assert valid.tolist() == [True, False, True, False]
    assert loss == pytest.approx(B.WEIGHT * 1.0)


def test_the_codes_forward_values_leave_nothing_valid_and_give_zero_not_nan() -> None:
    c = torch.zeros(3, 3, requires_grad=True)
    loss, valid = B.forward_loss(c, torch.ones(3, 3), torch.tensor([0.2, 0.5, 1.0]), torch.tensor([0.2, 0.5, 1.0]),
                                 torch.ones(3), **B.FORWARD_CODE)
    assert not valid.any() and loss.item() == 0.0 and torch.isfinite(loss)
    loss.backward()
    assert c.grad is not None and c.grad.abs().sum() == 0


def test_mask_and_weights_enter_as_the_equations_say() -> None:
    pred = torch.zeros(2, 3)
    target = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    assert B.masked_l1(pred, target, torch.ones(2), weight=1.0) == pytest.approx(0.5)
    assert B.masked_l1(pred, target, torch.tensor([3.0, 1.0]), weight=1.0) == pytest.approx(0.75)
    assert B.masked_l1(pred, target, torch.ones(2), mask=torch.tensor([1.0, 0.0]), weight=1.0) == 0.0
    m = torch.tensor([0.5, 0.0], requires_grad=True)
    p = pred.clone().requires_grad_(True)
    B.masked_l1(p, target, torch.ones(2), mask=m, weight=1.0).backward()
    assert p.grad is not None and m.grad is None           # the mask is detached in these terms


def test_backward_losses() -> None:
    ones = torch.ones(3, 3)
    eq7, eq9, valid = B.backward_losses(ones * 0.5, ones, ones * 0.2, ones * 0.2, torch.tensor([0.5, 0.5, 0.5]),
                                        torch.tensor([0.5, 0.6, 1.2]), torch.ones(3), torch.ones(3))
    assert eq7 == pytest.approx(B.WEIGHT * 0.5)
    assert valid.tolist() == [True, False, False] and eq9 == 0.0
