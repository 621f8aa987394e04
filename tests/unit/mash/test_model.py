"""MASH's method components: each test fails if its component is wrong (spec section 9.2)."""

from __future__ import annotations

import pytest
import torch

from cvpr24.pipelines.mash import model as M


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_mask_hides_tau_per_pixel_and_channel():
    m = M.bernoulli_mask((1, 3, 256, 256), 0.3, gen())
    assert abs(float((m == 0).float().mean()) - 0.3) < 0.01
    assert set(m.unique().tolist()) == {0.0, 1.0}
    assert bool((m[0, 0] != m[0, 1]).any())  # channels are masked independently


def test_unet_parameter_count_shapes_and_size_check():
    net = M.UNetN2N(3, 48)
    assert M.count_parameters(net) == 991_203
    assert net(torch.zeros(1, 3, 64, 64)).shape == (1, 3, 64, 64)
    assert M.UNetN2N(1, 8)(torch.zeros(1, 1, 32, 64)).shape == (1, 1, 32, 64)
    with pytest.raises(ValueError, match="multiples of 32"):
        net(torch.zeros(1, 3, 48, 48))


def test_conv_macs_scale_with_area_and_match_the_paper_order():
    net = M.UNetN2N(3, 48)
    a, b = M.conv_macs(net, 64, 64), M.conv_macs(net, 128, 128)
    assert b == 4 * a
    assert M.conv_macs(net, 256, 256) / 1e9 == pytest.approx(11.44, rel=0.01)  # paper Table 5


def test_masked_loss_only_counts_hidden_entries_and_divides_by_all():
    target = torch.zeros(1, 1, 2, 2)
    mask = torch.tensor([[[[1.0, 0.0], [1.0, 1.0]]]])  # one hidden entry
    out = torch.tensor([[[[5.0, 0.0], [7.0, 9.0]]]])  # wrong only where visible
    assert float(M.masked_loss(out, target, mask)) == 0.0
    out2 = torch.tensor([[[[5.0, 2.0], [7.0, 9.0]]]])  # error 2 on the hidden entry
    assert float(M.masked_loss(out2, target, mask, "l1")) == pytest.approx(2.0 / 4)
    assert float(M.masked_loss(out2, target, mask, "l2")) == pytest.approx(4.0 / 4)
    with pytest.raises(ValueError):
        M.masked_loss(out2, target, mask, "l3")


def test_blind_spot_output_ignores_the_hidden_pixel():
    torch.manual_seed(0)
    net = M.UNetN2N(1, 8)
    y = torch.rand(1, 1, 32, 32)
    m = M.bernoulli_mask(tuple(y.shape), 0.5, gen(1))
    idx = tuple(int(i) for i in (m == 0).nonzero()[0])
    y2 = y.clone()
    y2[idx] += 10.0
    torch.testing.assert_close(net(m * y), net(m * y2))
    vis = tuple(int(i) for i in (m == 1).nonzero()[0])
    y3 = y.clone()
    y3[vis] += 10.0
    assert not torch.allclose(net(m * y), net(m * y3))  # a visible pixel does reach the output


def test_training_on_pure_noise_does_not_learn_the_identity():
    torch.manual_seed(0)
    net = M.UNetN2N(1, 8)
    opt = torch.optim.Adam(net.parameters(), lr=4e-4)
    y = 0.5 + 0.2 * torch.randn(1, 1, 64, 64, generator=gen(2))
    g = gen(3)
    for _ in range(50):
        m = M.bernoulli_mask(tuple(y.shape), 0.5, g)
        loss = M.masked_loss(net(m * y), y, m)
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = M.ensemble_predict(net, y, 0.5, 4, g)
    assert float(out.var()) < 0.25 * float(y.var())


def test_ensemble_of_a_linear_stub_is_its_expectation():
    y = torch.rand(1, 3, 32, 32, generator=gen(4))
    out = M.ensemble_predict(lambda x: 2 * x, y, 0.3, 400, gen(5))
    expected = 2 * (1 - 0.3) * y
    assert float((out - expected).abs().mean()) < 0.02  # per-pixel binomial noise ~0.046 * y at K=400
    assert float(out.sum() / y.sum()) == pytest.approx(1.4, abs=0.01)


def test_noise_std_of_a_perfect_denoiser_is_the_noise_std():
    clean = torch.rand(1, 3, 64, 64, generator=gen(6))
    noisy = clean + (12 / 255) * torch.randn(clean.shape, generator=gen(7))
    assert M.noise_std_255(clean, noisy) == pytest.approx(12.0, rel=0.02)


@pytest.mark.parametrize(("eps", "expected"), [(2.51, (0.8, True)), (2.5, (0.5, False)), (1.5, (0.5, False)),
                                                 (1.49, (0.2, False)), (0.0, (0.2, False))])
def test_selection_rule(eps, expected):
    assert M.SelectionRule().select(eps) == expected


def test_blockwise_std_values():
    assert float(M.blockwise_std(torch.full((8, 8), 7.0)).abs().max()) == 0.0
    a = 3.0
    board = torch.zeros(8, 8)
    board[::2, ::2] = 2 * a
    board[1::2, 1::2] = 2 * a
    torch.testing.assert_close(M.blockwise_std(board, 2), torch.full((8, 8), a))
    x = torch.rand(8, 8, generator=gen(8))
    s = M.blockwise_std(x, 2)
    assert torch.equal(s[0::2, 0::2], s[1::2, 1::2]) and torch.equal(s[0::2, 0::2], s[0::2, 1::2])
    with pytest.raises(ValueError):
        M.blockwise_std(torch.zeros(7, 8), 2)


def test_texture_map_is_relative_to_the_image_maximum():
    img = torch.zeros(3, 8, 8)
    img[:, 0:2, 0:2] = torch.tensor([[0.0, 100.0], [100.0, 0.0]])  # strong texture (std 50)
    img[:, 4:6, 4:6] = torch.tensor([[0.0, 20.0], [20.0, 0.0]])  # weak texture (std 10)
    t = M.texture_map(img, 2, 0.5)
    assert t[0:2, 0:2].all() and not t[4:6, 4:6].any()
    assert M.texture_map(img, 2, 0.1)[4:6, 4:6].all()
    assert not M.texture_map(torch.ones(3, 8, 8), 2, 0.5).any()


def test_flat_tiles_and_partial_border():
    tex = torch.zeros(8, 10, dtype=torch.bool)
    tex[5, 1] = True
    flat = M.flat_tiles(tex, 4)
    assert flat.shape == (2, 3)
    assert flat[0, 0] and not flat[1, 0]  # the tile with one textured pixel is not flat
    assert not flat[:, 2].any()  # partial border tiles are never flat


def test_shuffle_is_a_per_tile_permutation_shared_by_channels():
    c, h, w, s = 3, 8, 12, 4
    base = torch.arange(h * w, dtype=torch.float32).reshape(h, w)
    y = torch.stack([base, base + 1000, base + 2000])
    flat = torch.tensor([[True, False, True], [False, True, True]])
    out = M.shuffle_tiles(y, flat, s, gen(9))
    changed = False
    for i in range(2):
        for j in range(3):
            a = y[:, i * s:(i + 1) * s, j * s:(j + 1) * s]
            b = out[:, i * s:(i + 1) * s, j * s:(j + 1) * s]
            if not flat[i, j]:
                assert torch.equal(a, b)
                continue
            assert torch.equal(a.reshape(c, -1).sort(1).values, b.reshape(c, -1).sort(1).values)
            torch.testing.assert_close(b[1] - b[0], torch.full((s, s), 1000.0))  # same permutation per channel
            changed |= not torch.equal(a, b)
    assert changed
    assert torch.equal(out, M.shuffle_tiles(y, flat, s, gen(9)))  # deterministic for a seed


def test_lps_target_reports_the_shuffled_fraction():
    y = torch.rand(1, 16, 16, generator=gen(10))
    pseudo = torch.zeros(1, 16, 16)
    pseudo[0, :4, :4] = torch.tensor([[0.0, 50.0] * 2, [50.0, 0.0] * 2] * 2)  # one textured tile
    out, frac = M.lps_target(y, pseudo, tile=4, block=2, rel_threshold=0.5, generator=gen(11))
    assert frac == pytest.approx(15 / 16)
    assert torch.equal(out[:, :4, :4], y[:, :4, :4])
