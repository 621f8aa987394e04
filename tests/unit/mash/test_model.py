"""Unit tests of MASH's model and method components (spec section 9.2); each can fail if its component is
wrong. Small sizes and a width-8 U-Net keep the file fast on 2 CPU cores."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn as nn

from cvpr24.pipelines.mash import model as M


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)



# ------------------------------------------------------------------------------------------- masking


def test_mask_hides_tau_iid_per_pixel_and_channel():
    m = M.bernoulli_mask((1, 3, 256, 256), 0.3, gen())
    assert m.dtype == torch.float32 and m.shape == (1, 3, 256, 256)
    assert set(m.unique().tolist()) == {0.0, 1.0}
    assert abs(float((m == 0).float().mean()) - 0.3) < 0.01  # 0 = hidden, P(hidden) = tau
    for ch in range(3):
        assert abs(float((m[0, ch] == 0).float().mean()) - 0.3) < 0.01
    assert bool((m[0, 0] != m[0, 1]).any()) and bool((m[0, 1] != m[0, 2]).any())  # drawn per channel
    # independence across channels: P(both hidden) ~ tau^2, not tau
    assert float(((m[0, 0] == 0) & (m[0, 1] == 0)).float().mean()) == pytest.approx(0.09, abs=0.01)
    assert torch.equal(m, M.bernoulli_mask((1, 3, 256, 256), 0.3, gen()))  # reproducible per seed
    assert not torch.equal(m, M.bernoulli_mask((1, 3, 256, 256), 0.3, gen(1)))
    assert bool((M.bernoulli_mask((1, 1, 8, 8), 0.0, gen()) == 1).all())
    with pytest.raises(ValueError):
        M.bernoulli_mask((1, 1, 8, 8), 1.0, gen())


# ------------------------------------------------------------------------------------------- network


def _expected_params(c: int, w: int) -> int:
    """Parameters from the spec's layer table: each 3x3 conv has 9 * cin * cout weights + cout biases."""
    d = 2 * w
    convs = [(c, w), (w, w), (w, w), (w, w), (w, w), (w, w), (w, w),  # enc1 (2), enc2-4, enc5 (2)
             (2 * w, d), (d, d)] + [(d + w, d), (d, d)] * 3 + [(d + c, 64), (64, 32), (32, c)]  # fmt: skip
    return sum(9 * i * o + o for i, o in convs)


def test_unet_parameter_count():
    assert M.count_parameters(M.UNetN2N(3, 48)) == 991_203
    assert M.count_parameters(M.UNetN2N()) == 991_203  # defaults are RGB, width 48
    assert M.count_parameters(M.UNetN2N(1, 8)) == _expected_params(1, 8)
    assert M.count_parameters(M.UNetN2N(3, 32)) == _expected_params(3, 32)


def test_unet_structure_linear_output_and_leaky_relu():
    net = M.UNetN2N(3, 48)
    convs = [m for m in net.modules() if isinstance(m, nn.Conv2d)]
    acts = [m for m in net.modules() if isinstance(m, nn.LeakyReLU)]
    assert len(convs) == 18 and len(acts) == 17  # every conv but the last is followed by LeakyReLU
    assert all(a.negative_slope == pytest.approx(0.1) for a in acts)
    assert isinstance(list(net.dec5)[-1], nn.Conv2d) and net.dec5[-1].out_channels == 3
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) and c.bias is not None for c in convs)


def test_unet_output_shape_and_size_check():
    net = M.UNetN2N(3, 48)
    with torch.no_grad():
        assert net(torch.rand(1, 3, 64, 64)).shape == (1, 3, 64, 64)
        assert M.UNetN2N(1, 8)(torch.rand(1, 1, 32, 96)).shape == (1, 1, 32, 96)
    for h, w in ((48, 48), (64, 48), (48, 64)):
        with pytest.raises(ValueError, match="multiples of 32"):
            net(torch.zeros(1, 3, h, w))


def test_conv_macs_analytic_matches_a_measured_count_and_scales_with_area():
    net = M.UNetN2N(3, 48)
    measured = 0

    def hook(module: nn.Conv2d, _inp: object, out: torch.Tensor) -> None:
        nonlocal measured
        measured += out.numel() * module.in_channels * module.kernel_size[0] * module.kernel_size[1]

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        net(torch.zeros(1, 3, 64, 96))
    for h in handles:
        h.remove()
    assert M.conv_macs(net, 64, 96) == measured
    assert M.conv_macs(net, 128, 128) == 4 * M.conv_macs(net, 64, 64)
    macs_256 = M.conv_macs(net, 256, 256)
    assert macs_256 == 16 * M.conv_macs(net, 64, 64)
    assert macs_256 == 11_399_675_904  # 11.40 G; paper Table 5 reports 11.44 G FLOPs
    assert macs_256 / 1e9 == pytest.approx(11.44, rel=0.01)
    with pytest.raises(ValueError):
        M.conv_macs(net, 48, 64)


# ---------------------------------------------------------------------------------------------- loss


def test_masked_loss_ignores_visible_entries():
    target = torch.rand(1, 3, 8, 8, generator=gen(1))
    mask = M.bernoulli_mask((1, 3, 8, 8), 0.5, gen(2))
    output = torch.where(mask == 0, target, target + 5.0)  # right where hidden, wrong where visible
    assert float(M.masked_loss(output, target, mask, "l1")) == 0.0
    assert float(M.masked_loss(output, target, mask, "l2")) == 0.0
    assert float(M.masked_loss(output, target, torch.zeros_like(mask))) > 0.0  # all hidden -> counted


def test_masked_loss_normalises_by_all_hwc_entries():
    target = torch.zeros(1, 3, 2, 2)  # H * W * C = 12 entries
    mask = torch.ones(1, 3, 2, 2)
    mask[0, 0, 0, 1] = 0.0
    mask[0, 2, 1, 0] = 0.0  # two hidden entries, in different channels
    output = torch.full((1, 3, 2, 2), 9.0)  # error 9 on every visible entry (must not count)
    output[0, 0, 0, 1] = 0.6
    output[0, 2, 1, 0] = -0.3
    assert float(M.masked_loss(output, target, mask)) == pytest.approx((0.6 + 0.3) / 12)  # default l1
    assert float(M.masked_loss(output, target, mask, "l2")) == pytest.approx((0.36 + 0.09) / 12)
    with pytest.raises(ValueError, match="l3"):
        M.masked_loss(output, target, mask, "l3")


def test_masked_loss_gradient_reaches_hidden_entries_only():
    target = torch.rand(1, 1, 4, 4, generator=gen(3))
    mask = M.bernoulli_mask((1, 1, 4, 4), 0.5, gen(4))
    output = torch.rand(1, 1, 4, 4, generator=gen(5)).requires_grad_()
    M.masked_loss(output, target, mask).backward()
    assert bool((output.grad[mask == 1] == 0).all()) and bool((output.grad[mask == 0] != 0).all())


# ----------------------------------------------------------------------------------------- blind spot


@pytest.mark.parametrize("channels", [1, 3])
def test_blind_spot_output_does_not_see_the_hidden_value(channels: int):
    torch.manual_seed(0)
    net = M.UNetN2N(channels, 8)
    y = torch.rand(1, channels, 32, 32, generator=gen(6))
    m = M.bernoulli_mask(tuple(y.shape), 0.5, gen(7))
    hidden = tuple(int(i) for i in (m == 0).nonzero()[len((m == 0).nonzero()) // 2])
    visible = tuple(int(i) for i in (m == 1).nonzero()[len((m == 1).nonzero()) // 2])
    with torch.no_grad():
        ref = net(m * y)
        y_hidden = y.clone()
        y_hidden[hidden] += 10.0
        assert torch.equal(net(m * y_hidden), ref)  # the hidden value cannot reach any output
        y_visible = y.clone()
        y_visible[visible] += 10.0
        assert not torch.allclose(net(m * y_visible), ref)  # a visible value does


def _train_on_noise(lr: float, blind: bool, steps: int = 50) -> tuple[float, float]:
    """Train a width-8 grey U-Net on pure Gaussian noise; return (output var, input var).
    `blind=False` is the identity-capable control: unmasked input, loss on every entry."""
    torch.manual_seed(0)
    net = M.UNetN2N(1, 8)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    y = 0.5 + 0.2 * torch.randn(1, 1, 64, 64, generator=gen(8))
    g = gen(9)
    for _ in range(steps):
        m = M.bernoulli_mask(tuple(y.shape), 0.5, g)
        loss = M.masked_loss(net(m * y), y, m) if blind else M.masked_loss(net(y), y, torch.zeros_like(m))
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        out = M.ensemble_predict(net, y, 0.5, 4, g) if blind else net(y)
    return float(out.var()), float(y.var())


def test_blind_spot_training_on_pure_noise_does_not_copy_it(one_thread: None):
    out_var, in_var = _train_on_noise(4e-4, blind=True)  # spec setting: 50 Adam steps, lr 4e-4, tau 0.5
    assert out_var < 0.25 * in_var
    # The check has teeth: at a higher lr the identity-capable control copies the noise within 50 steps,
    # while the blind-spot model still cannot.
    out_var, in_var = _train_on_noise(2e-3, blind=True)
    assert out_var < 0.25 * in_var
    out_var, in_var = _train_on_noise(2e-3, blind=False)
    assert out_var > 0.6 * in_var


# ------------------------------------------------------------------------ ensemble and noise estimate


def test_ensemble_of_a_linear_stub_is_its_expectation():
    y = torch.rand(1, 3, 32, 32, generator=gen(10))
    tau = 0.3
    out = M.ensemble_predict(lambda x: 2 * x, y, tau, 500, gen(11))
    expected = 2 * (1 - tau) * y
    # per entry: 2 * y * Binomial(500, 0.7) / 500, std <= 2 * sqrt(0.21 / 500) ~ 0.041
    assert float((out - expected).abs().max()) < 0.2
    assert float((out - expected).abs().mean()) < 0.035
    assert float(out.sum() / y.sum()) == pytest.approx(2 * (1 - tau), abs=0.005)
    assert torch.equal(out, M.ensemble_predict(lambda x: 2 * x, y, tau, 500, gen(11)))
    one = M.ensemble_predict(lambda x: 2 * x, y, tau, 1, gen(12))  # k = 1: a single masked pass
    assert set((one / (2 * y)).round(decimals=4).unique().tolist()) <= {0.0, 1.0}


def test_ensemble_runs_under_no_grad():
    net = M.UNetN2N(1, 8)
    out = M.ensemble_predict(net, torch.rand(1, 1, 32, 32), 0.5, 2, gen(13))
    assert out.shape == (1, 1, 32, 32) and not out.requires_grad


def test_noise_std_of_a_perfect_denoiser_is_the_noise_std():
    clean = torch.rand(1, 3, 64, 64, generator=gen(14))
    noisy = clean + (12 / 255) * torch.randn(clean.shape, generator=gen(15))
    pred = M.ensemble_predict(lambda x: clean, noisy, 0.8, 3, gen(16))  # stub returns the clean image
    sigma = M.noise_std_255(pred, noisy)
    assert isinstance(sigma, float)
    assert sigma == pytest.approx(12.0, rel=0.02)
    assert M.noise_std_255(pred + 0.1, noisy) == pytest.approx(sigma, rel=1e-5)  # the mean is removed
    expected = np.std(255 * pred.numpy().astype(np.float64) - 255 * noisy.numpy().astype(np.float64))
    assert sigma == pytest.approx(float(expected), rel=1e-6)


# -------------------------------------------------------------------------------------- selection rule


@pytest.mark.parametrize(
    ("eps", "expected"),
    [
        (9.0, (0.8, True)),  # far above eps_high
        (2.51, (0.8, True)),  # just above
        (2.5, (0.5, False)),  # at eps_high: not above
        (2.0, (0.5, False)),  # between
        (1.5, (0.5, False)),  # at eps_low: not below
        (1.49, (0.2, False)),  # just below
        (0.0, (0.2, False)),
    ],
)
def test_selection_rule_paper_thresholds(eps: float, expected: tuple[float, bool]):
    assert M.SelectionRule().select(eps) == expected


def test_selection_rule_uses_its_fields():
    rule = M.SelectionRule(tau_high=0.9, tau_low=0.1, eps_low=1.0, eps_high=2.0)  # official-code preset
    assert rule.select(2.2) == (0.9, True)
    assert rule.select(1.2) == (0.5, False)
    assert rule.select(0.5) == (0.1, False)
    with pytest.raises(AttributeError):
        rule.tau_high = 0.7  # type: ignore[misc]  # frozen


# --------------------------------------------------------------------------------- local pixel shuffling


def test_blockwise_std_values():
    assert float(M.blockwise_std(torch.full((8, 8), 7.0)).abs().max()) == 0.0
    a = 3.0
    board = torch.zeros(8, 8)
    board[::2, ::2] = 2 * a
    board[1::2, 1::2] = 2 * a
    assert torch.equal(M.blockwise_std(board, 2), torch.full((8, 8), a))  # population std, exactly a
    x = torch.rand(8, 12, generator=gen(17))
    s = M.blockwise_std(x, 2)
    assert s.shape == (8, 12)
    for di in range(2):
        for dj in range(2):
            assert torch.equal(s[di::2, dj::2], s[0::2, 0::2])  # constant inside each 2x2 block
    s4 = M.blockwise_std(x, 4)
    block = x[4:8, 8:12].numpy().astype(np.float64)
    assert float(s4[5, 9]) == pytest.approx(float(np.std(block)), rel=1e-6)
    assert torch.equal(s4[4:8, 8:12], torch.full((4, 4), float(s4[4, 8])))
    for h, w, b in ((7, 8, 2), (8, 8, 3)):
        with pytest.raises(ValueError):
            M.blockwise_std(torch.zeros(h, w), b)


def test_texture_map_relative_threshold_and_channel_mean():
    img = torch.zeros(3, 8, 8)
    img[:, 0:2, 0:2] = torch.tensor([[0.0, 100.0], [100.0, 0.0]])  # std 50: the image maximum
    img[:, 4:6, 4:6] = torch.tensor([[0.0, 20.0], [20.0, 0.0]])  # std 10: 0.2 of the maximum
    t = M.texture_map(img, 2, 0.5)
    assert t.dtype == torch.bool and t.shape == (8, 8)
    assert bool(t[0:2, 0:2].all()) and not bool(t[4:6, 4:6].any()) and int(t.sum()) == 4
    assert bool(M.texture_map(img, 2, 0.2)[4:6, 4:6].all())  # ">=": exactly at the threshold is texture
    assert not bool(M.texture_map(img, 2, 0.21)[4:6, 4:6].any())
    assert not bool(M.texture_map(torch.full((3, 8, 8), 40.0), 2, 0.5).any())  # max std 0: nothing
    # channels are averaged before the std: opposite checkerboards cancel out
    board = torch.tensor([[0.0, 100.0], [100.0, 0.0]]).repeat(4, 4)
    assert not bool(
        M.texture_map(torch.stack([board, 100.0 - board, torch.full((8, 8), 50.0)]), 2, 0.5).any()
    )
    with pytest.raises(ValueError):
        M.texture_map(torch.zeros(3, 8, 9), 2, 0.5)


def test_flat_tiles_one_textured_pixel_blocks_a_tile():
    tex = torch.zeros(8, 12, dtype=torch.bool)
    tex[5, 1] = True  # in tile (1, 0)
    tex[3, 11] = True  # in tile (0, 2)
    flat = M.flat_tiles(tex, 4)
    assert flat.dtype == torch.bool and flat.shape == (2, 3)
    assert flat.tolist() == [[True, True, False], [False, True, True]]


def test_flat_tiles_partial_border_tiles_are_never_flat():
    flat = M.flat_tiles(torch.zeros(96, 96, dtype=torch.bool), 5)  # 96 = 19 * 5 + 1
    assert flat.shape == (20, 20)
    assert bool(flat[:19, :19].all())
    assert not bool(flat[19, :].any()) and not bool(flat[:, 19].any())
    assert M.flat_tiles(torch.zeros(3, 3, dtype=torch.bool), 4).tolist() == [[False]]


def _tile(x: torch.Tensor, i: int, j: int, s: int) -> torch.Tensor:
    return x[:, i * s : (i + 1) * s, j * s : (j + 1) * s]


def test_shuffle_is_a_per_tile_permutation_shared_by_channels():
    c, h, w, s = 3, 8, 12, 4
    base = torch.arange(h * w, dtype=torch.float32).reshape(h, w)  # distinct values everywhere
    y = torch.stack([base, base + 1000.0, base + 2000.0])  # distinct channel values
    flat = torch.tensor([[True, False, True], [False, True, True]])
    out = M.shuffle_tiles(y, flat, s, gen(18))
    assert out.shape == y.shape and out.dtype == y.dtype
    changed = 0
    for i in range(2):
        for j in range(3):
            a, b = _tile(y, i, j, s), _tile(out, i, j, s)
            if not flat[i, j]:
                assert torch.equal(a, b)  # textured tiles are bit-identical
                continue
            assert torch.equal(a.reshape(c, -1).sort(1).values, b.reshape(c, -1).sort(1).values)
            assert torch.equal(b[1] - b[0], torch.full((s, s), 1000.0))  # same permutation in every channel
            assert torch.equal(b[2] - b[0], torch.full((s, s), 2000.0))
            changed += int(not torch.equal(a, b))
    assert changed >= 3  # (a 16-element tile stays put with probability 1/16!)
    assert torch.equal(out, M.shuffle_tiles(y, flat, s, gen(18)))  # deterministic for a seed
    assert not torch.equal(out, M.shuffle_tiles(y, flat, s, gen(19)))
    assert torch.equal(M.shuffle_tiles(y, torch.zeros(2, 3, dtype=torch.bool), s, gen(18)), y)


def test_shuffle_leaves_partial_border_strips_alone():
    y = torch.rand(2, 11, 13, generator=gen(20))  # tile 5: two complete tiles per axis plus a strip
    flat = M.flat_tiles(torch.zeros(11, 13, dtype=torch.bool), 5)
    out = M.shuffle_tiles(y, flat, 5, gen(21))
    assert torch.equal(out[:, 10:, :], y[:, 10:, :]) and torch.equal(out[:, :, 10:], y[:, :, 10:])
    assert not torch.equal(out[:, :10, :10], y[:, :10, :10])
    assert torch.equal(out[:, :10, :10].flatten().sort().values, y[:, :10, :10].flatten().sort().values)


def test_lps_target_shuffles_flat_tiles_and_reports_the_fraction():
    y = torch.rand(3, 16, 16, generator=gen(22))
    pseudo = torch.full((3, 16, 16), 80.0)
    pseudo[:, :4, :4] = torch.tensor([[0.0, 50.0], [50.0, 0.0]]).repeat(2, 2)  # one textured tile
    pseudo[:, 9, 6] = 110.0  # one textured 2x2 block (std 13, 0.52 of the max 25) in tile (2, 1)
    out, frac = M.lps_target(y, pseudo, tile=4, block=2, rel_threshold=0.5, generator=gen(23))
    assert frac == pytest.approx(14 / 16)
    assert torch.equal(out[:, :4, :4], y[:, :4, :4]) and torch.equal(out[:, 8:12, 4:8], y[:, 8:12, 4:8])
    assert not torch.equal(out, y)
    _, frac_low = M.lps_target(y, pseudo, tile=4, block=2, rel_threshold=0.7, generator=gen(23))
    assert frac_low == pytest.approx(15 / 16)  # the weaker block no longer counts as texture
    with pytest.raises(ValueError):
        M.lps_target(y, pseudo, tile=4, block=3, rel_threshold=0.5, generator=gen(23))
