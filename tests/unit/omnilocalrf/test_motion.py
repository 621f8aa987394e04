"""OmniLocalRF's motion-mask module: plane lookup per frame, the affine decoder, compositing and the mask losses."""

from __future__ import annotations

import pytest
import torch

from cvpr24.pipelines.omnilocalrf import motion as MM

SMALL = MM.MotionMaskConfig(base_size=(16, 32), hidden=8)


def test_untrained_module_is_one_constant_everywhere() -> None:
    mod = MM.MotionMask(5, SMALL)
    g = torch.Generator().manual_seed(0)
    u, v = torch.rand(50, generator=g) * 2 - 1, torch.rand(50, generator=g) * 2 - 1
    c, m = mod(u, v, torch.randint(0, 5, (50,), generator=g))
    expect = torch.sigmoid(mod.mlp(torch.zeros(1, 16)))[0]
    torch.testing.assert_close(c, expect[:3].expand(50, 3))
    torch.testing.assert_close(m, expect[3].expand(50))


def test_frame_coordinate_hits_one_plane_only() -> None:
    mod = MM.MotionMask(4, SMALL)
    with torch.no_grad():
        for p in mod.planes:
            p[:, 2] = 1.0                       # only frame 2 carries features
    u = torch.tensor([-0.3, 0.4])
    v = torch.tensor([0.1, -0.8])
    for k in range(4):
        feats = mod.features(u, v, torch.full((2,), float(k)))
        torch.testing.assert_close(feats, torch.full_like(feats, 1.0 if k == 2 else 0.0))


def test_plane_lookup_is_bilinear_in_u() -> None:
    mod = MM.MotionMask(1, MM.MotionMaskConfig(levels=1, channels=1, base_size=(2, 2), hidden=4))
    with torch.no_grad():
        mod.planes[0].copy_(torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]]))   # columns 0 and 1
    f = mod.features(torch.tensor([-1.0, 0.0, 0.5, 1.0]), torch.zeros(4), torch.zeros(4))
    torch.testing.assert_close(f[:, 0], torch.tensor([0.0, 0.5, 0.75, 1.0]))


def test_default_decoder_is_affine_before_the_sigmoid_and_relu_is_not() -> None:
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(3, 16, generator=g), torch.randn(3, 16, generator=g)
    for act, affine in (("none", True), ("relu", False)):
        mod = MM.MotionMask(1, MM.MotionMaskConfig(base_size=(16, 32), hidden=8, hidden_act=act))
        f = mod.mlp
        lhs = f(0.5 * a + 0.5 * b)
        rhs = 0.5 * f(a) + 0.5 * f(b)
        assert torch.allclose(lhs, rhs, atol=1e-5) == affine, act


def test_append_frame_copies_the_last_frame() -> None:
    mod = MM.MotionMask(2, SMALL)
    with torch.no_grad():
        for p in mod.planes:
            p.normal_()
    last = [p[:, -1].clone() for p in mod.planes]
    mod.append_frame()
    assert mod.n_frames == 3
    for p, ref in zip(mod.planes, last, strict=True):
        torch.testing.assert_close(p[:, 2], ref)
        assert p.requires_grad


def test_param_groups_scale_the_plane_lr_per_level() -> None:
    groups = MM.MotionMask(2, SMALL).param_groups(lr_planes=1e-2, lr_mlp=5e-4)
    assert [g["lr"] for g in groups] == pytest.approx([1e-2, 5e-3, 1e-2 / 3, 2.5e-3, 5e-4])


def test_pixel_to_plane_conventions() -> None:
    u, v = MM.pixel_to_plane(torch.tensor([0, 7]), torch.tensor([0, 15]), 8, 16, "code")
    torch.testing.assert_close(u, torch.tensor([-1.0, 0.875]))
    torch.testing.assert_close(v, torch.tensor([-1.0, 0.75]))
    u, _ = MM.pixel_to_plane(torch.tensor([0]), torch.tensor([15]), 8, 16, "centre")
    torch.testing.assert_close(u, torch.tensor([0.9375]))
    with pytest.raises(ValueError, match="convention"):
        MM.pixel_to_plane(torch.tensor([0]), torch.tensor([0]), 8, 16, "corner")


def test_composite_selects_by_the_mask_and_clamps() -> None:
    st = torch.tensor([[0.2, 0.4, 0.6]] * 3)
    dy = torch.tensor([[1.0, 0.0, 0.5]] * 3)
    out = MM.composite(st, dy, torch.tensor([0.0, 1.0, 0.25]))
    torch.testing.assert_close(out[0], st[0])
    torch.testing.assert_close(out[1], dy[1])
    torch.testing.assert_close(out[2], 0.25 * dy[2] + 0.75 * st[2])
    assert MM.composite(st + 1.0, dy, torch.zeros(3)).max() == 1.0


def test_binary_and_tv_losses() -> None:
    assert MM.binary_loss(torch.tensor([0.0, 1.0])) == 0.0
    assert MM.binary_loss(torch.tensor([0.5])) == pytest.approx(1 / 16)
    flat = torch.full((3, 4, 5), 0.3)
    assert MM.tv_loss(flat) == 0.0
    step = torch.zeros(1, 4, 4)
    step[:, :, 2:] = 1.0           # one column edge: 4 of 12 differences are 1
    assert MM.tv_loss(step) == pytest.approx(4 / 12)
    frames = torch.stack([torch.zeros(4, 4), torch.ones(4, 4)])   # a change over time only
    assert MM.tv_loss(frames, t_weight=0.1) == pytest.approx(0.1)


def test_dynamic_colour_loss_is_weighted_and_noise_bounded() -> None:
    gt = torch.full((4, 3), 0.5)
    zero = MM.dynamic_colour_loss(gt, gt, torch.ones(4), noise=0.0)
    assert zero == 0.0
    g = torch.Generator().manual_seed(0)
    noisy = MM.dynamic_colour_loss(gt, gt, torch.ones(4), noise=0.05, generator=g)
    assert 0.0 < noisy <= 0.05
    pred = gt.clone()
    pred[0] += 0.2                             # the error sits on the heaviest ray
    light = MM.dynamic_colour_loss(pred, gt, torch.tensor([1.0, 1.0, 1.0, 1.0]), noise=0.0)
    heavy = MM.dynamic_colour_loss(pred, gt, torch.tensor([5.0, 1.0, 1.0, 1.0]), noise=0.0)
    assert heavy > light


def test_gradients_reach_the_planes_of_the_queried_frame_only() -> None:
    mod = MM.MotionMask(3, SMALL)
    c, m = mod(torch.tensor([0.1]), torch.tensor([0.2]), torch.tensor([1.0]))
    (c.sum() + m.sum()).backward()
    g = mod.planes[0].grad
    assert g[:, 1].abs().sum() > 0 and g[:, 0].abs().sum() == 0 and g[:, 2].abs().sum() == 0


def test_config_checks() -> None:
    with pytest.raises(ValueError, match="hidden_act"):
        MM.MotionMaskConfig(hidden_act="gelu")
    with pytest.raises(ValueError, match="too small"):
        MM.MotionMaskConfig(base_size=(4, 8), levels=4)
    with pytest.raises(ValueError, match="n_frames"):
        MM.MotionMask(0, SMALL)
