"""Jointly estimated poses: identity first frame, initialisation of new frames, 6D rotations, per-frame gradients."""

from __future__ import annotations

import math

import torch

from cvpr24.pipelines.omnilocalrf.poses import FramePoses


def _yaw(a: float, t: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> torch.Tensor:
    m = torch.eye(4)
    m[:3, :3] = torch.tensor([[math.cos(a), 0.0, math.sin(a)], [0.0, 1.0, 0.0], [-math.sin(a), 0.0, math.cos(a)]])
    m[:3, 3] = torch.tensor(t)
    return m


def test_first_frame_is_identity_and_new_frames_copy_the_last() -> None:
    poses = FramePoses(1)
    torch.testing.assert_close(poses.c2w([0])[0], torch.eye(4)[:3])
    with torch.no_grad():
        poses.t[0] += torch.tensor([1.0, 2.0, 3.0])
    k = poses.append()
    assert k == 1 and len(poses) == 2
    torch.testing.assert_close(poses.c2w([1]), poses.c2w([0]))
    assert poses.t[1] is not poses.t[0]                    # a copy, not a shared Parameter


def test_a_relative_prior_composes_with_the_previous_pose() -> None:
    poses = FramePoses(1)
    first = _yaw(0.3, (0.5, 0.0, -1.0))
    with torch.no_grad():
        poses.r6[0].copy_(first[:3, :2])
        poses.t[0].copy_(first[:3, 3])
    rel = _yaw(-0.1, (0.0, 0.0, 0.2))
    poses.append(rel)
    torch.testing.assert_close(poses.c2w([1])[0], (first @ rel)[:3], atol=1e-6, rtol=0)


def test_rotations_stay_orthonormal_after_a_gradient_step() -> None:
    poses = FramePoses(3)
    opt = torch.optim.SGD(poses.parameters(), lr=0.5)
    target = torch.tensor([0.3, -0.2, 0.9])
    loss = (poses.c2w()[:, :, 2] - target).square().sum()
    loss.backward()
    opt.step()
    rot = poses.c2w()[:, :, :3].detach()
    torch.testing.assert_close(rot @ rot.transpose(1, 2), torch.eye(3).expand(3, 3, 3), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(3), atol=1e-5, rtol=0)


def test_gradients_reach_only_the_queried_frames() -> None:
    poses = FramePoses(3)
    poses.c2w([2]).sum().backward()
    assert poses.t[0].grad is None and poses.t[2].grad is not None
    assert [p.shape for p in poses.parameters_of([1])] == [torch.Size([3, 2]), torch.Size([3])]
    assert poses.translations().shape == (3, 3) and not poses.translations().requires_grad
