"""StyleGRU model components: each test fails if its component (flow, level slicing, latent dropout, StyleGRU,
losses, SAM, TTE, detector fusion, content branch, frame baseline, video aggregation, style encoder) is wrong."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cvpr24.core.validation import DataValidationError
from cvpr24.pipelines.stylegru import model as M


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny networks: one torch thread (two-thread kernels are several times slower on these sizes when other
    jobs share the cores); restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------------------------ flow and levels
def test_style_flow_steps_constant_and_ramp():
    x = torch.randn(2, 1, 9, 8, generator=gen(0)).expand(2, 6, 9, 8)
    d = M.style_flow(x)
    assert d.shape == (2, 5, 9, 8) and torch.equal(d, torch.zeros_like(d))
    slope = torch.randn(2, 72, generator=gen(1))
    ramp = torch.randn(2, 1, 72, generator=gen(2)) + torch.arange(7.0)[None, :, None] * slope[:, None, :]
    d = M.style_flow(ramp)
    assert d.shape == (2, 6, 72)
    assert torch.allclose(d, slope[:, None, :].expand(2, 6, 72), atol=1e-5)
    # direction: s_{t+1} - s_t, also on numpy
    a = np.array([[0.0, 1.0, 3.0, 6.0]])
    assert np.array_equal(M.style_flow(a), [[1.0, 2.0, 3.0]])
    with pytest.raises(DataValidationError):
        M.style_flow(torch.zeros(2, 1, 72))


def test_level_sets_partition_and_unions():
    c, m, f = (set(M.level_indices(n)) for n in ("coarse", "middle", "fine"))
    assert not (c & m or c & f or m & f)
    assert c | m | f == set(range(9)) == set(M.level_indices("total"))
    assert set(M.level_indices("middle+")) == m | f
    assert set(M.level_indices("coarse+")) == c | m
    assert max(c) < min(m) and max(m) < min(f)
    with pytest.raises(DataValidationError):
        M.level_indices("ultra")


def test_select_levels_picks_the_right_dims():
    lv = torch.arange(9.0)[:, None] * 10 + torch.arange(8.0)[None, :]  # value = 10 * level + dim
    x = lv.expand(2, 3, 9, 8)
    mid = M.select_levels(x, "middle")
    assert mid.shape == (2, 3, 24)
    assert mid[1, 2].tolist() == [10.0 * lev + j for lev in (3, 4, 5) for j in range(8)]
    fine_plus = M.select_levels(x.reshape(2, 3, 72), "middle+")  # flat input gives the same
    assert torch.equal(fine_plus, M.select_levels(x, "middle+"))
    assert fine_plus[0, 0, 0] == 30 and fine_plus[0, 0, -1] == 87
    assert torch.equal(M.select_levels(x, "total"), x.reshape(2, 3, 72))
    assert M.select_levels(lv.numpy(), "coarse").tolist() == [10.0 * lev + j for lev in (0, 1, 2) for j in range(8)]
    with pytest.raises(DataValidationError):
        M.select_levels(torch.zeros(2, 70), "total")


# ------------------------------------------------------------------------------------ latent dropout
def test_latent_dropout_eval_identity_and_shared_mask():
    drop = M.LatentDropout(0.2, generator=gen(0))
    x = torch.randn(5, 7, 16, generator=gen(1))
    assert torch.equal(drop.eval()(x), x)
    drop.train()
    y = drop(torch.ones(5, 7, 16))
    scale = 1 / 0.8
    assert torch.all((y == 0) | torch.isclose(y, torch.tensor(scale)))
    assert torch.equal(y, y[:1, :1].expand_as(y))  # same over samples and time steps
    assert torch.equal(y[..., :8], y[..., 8:])  # first half == second half
    masks = {tuple(drop(torch.ones(1, 1, 16))[0, 0].tolist()) for _ in range(20)}
    assert len(masks) > 1  # a fresh mask per call
    a = M.LatentDropout(0.2)(torch.ones(2, 3, 16), generator=gen(5))
    b = M.LatentDropout(0.2)(torch.ones(2, 3, 16), generator=gen(5))
    assert torch.equal(a, b)


def test_latent_dropout_is_unbiased():
    drop = M.LatentDropout(0.2, generator=gen(3)).train()
    x = torch.linspace(0.5, 2.0, 16)[None, None, :]
    acc = torch.zeros_like(x)
    n = 10_000
    for _ in range(n):
        acc += drop(x)
    rel = ((acc / n - x).abs() / x).max().item()
    assert rel < 0.02
    keep = (drop(torch.ones(1, 1, 4000)) > 0).float().mean().item()
    assert abs(keep - 0.8) < 0.03


# ------------------------------------------------------------------------------------ StyleGRU
@pytest.fixture(scope="module")
def gru():
    torch.manual_seed(0)
    return M.StyleGRU(input_dim=24, steps=7, hidden=16, layers=2, head_hidden=32)


def test_stylegru_shapes_and_learned_h0(gru):
    gru.train()
    x = torch.randn(6, 7, 24, generator=gen(0))
    logit, e = gru(x)
    assert logit.shape == (6,) and e.shape == (6, 4 * 16) == (6, gru.embed_dim)
    assert isinstance(gru.h0, torch.nn.Parameter) and gru.h0.shape == (4, 1, 16)
    gru.zero_grad()
    (logit.sum() + e.pow(2).sum()).backward()
    assert gru.h0.grad is not None and gru.h0.grad.abs().sum() > 0
    assert gru.gru.bidirectional and gru.gru.num_layers == 2 and gru.gru.batch_first
    with pytest.raises(DataValidationError):
        gru(torch.randn(6, 8, 24))


def test_stylegru_embedding_is_the_final_hidden_states(gru):
    gru.eval()
    x = torch.randn(3, 7, 24, generator=gen(1))
    with torch.no_grad():
        e = gru.embed(x)
        _, h = gru.gru(gru.bn(x), gru.h0.repeat(1, 3, 1))
        assert torch.allclose(e, torch.cat(list(h), dim=1), atol=1e-6)
        assert torch.allclose(gru(x)[1], e)
        old = gru.h0.detach().clone()
        gru.h0.add_(1.0)
        changed = gru.embed(x)
        gru.h0.copy_(old)
    assert not torch.allclose(changed, e)  # the learned h0 is actually used


def test_batchnorm_is_over_the_time_axis(gru):
    assert gru.bn.num_features == 7
    bn, bn2 = copy.deepcopy(gru.bn).train(), copy.deepcopy(gru.bn).train()
    x = torch.randn(8, 7, 24, generator=gen(2))
    y1 = bn(x)
    x2 = x.clone()
    x2[0, 3] = x2[0, 3] * 5 + 10  # only time step 3 of one sample
    y2 = bn2(x2)
    other = [t for t in range(7) if t != 3]
    assert torch.allclose(y1[:, other], y2[:, other], atol=1e-6)
    assert not torch.allclose(y1[1:, 3], y2[1:, 3], atol=1e-3)  # step 3's statistics changed for everyone
    assert torch.equal(bn.running_mean[other], bn2.running_mean[other])
    assert bn.running_mean[3] != bn2.running_mean[3]


# ------------------------------------------------------------------------------------ losses
def test_triplet_loss_hand_example():
    a = torch.zeros(2, 2)
    p = torch.tensor([[3.0, 4.0], [1.0, 0.0]])
    n = torch.tensor([[0.0, 1.0], [0.0, 2.0]])
    # d_ap = (5, 1), d_an = (1, 2): mean(max(0, 5 - 1 + m), max(0, 1 - 2 + m))
    assert M.triplet_loss(a, p, n).item() == pytest.approx((5.0 + 0.0) / 2, abs=1e-4)
    assert M.triplet_loss(a, p, n, margin=5.0).item() == pytest.approx((9.0 + 4.0) / 2, abs=1e-4)
    assert M.triplet_loss(a, n, p).item() == pytest.approx((0.0 + 2.0) / 2, abs=1e-4)


def _supcon_reference(z, y, tau):
    z = F.normalize(z, dim=1)
    n, tot, cnt = len(y), 0.0, 0
    for i in range(n):
        pos = [p for p in range(n) if p != i and y[p] == y[i]]
        if not pos:
            continue
        den = sum(math.exp(float(z[i] @ z[a]) / tau) for a in range(n) if a != i)
        tot += -sum(math.log(math.exp(float(z[i] @ z[p]) / tau) / den) for p in pos) / len(pos)
        cnt += 1
    return tot / cnt


def test_supcon_matches_reference_and_prefers_clusters():
    z = torch.randn(7, 5, generator=gen(0), dtype=torch.float64)
    y = torch.tensor([0, 1, 0, 1, 1, 0, 2])  # label 2 has no positive: not an anchor
    assert M.supcon_loss(z, y, tau=0.5).item() == pytest.approx(_supcon_reference(z, y.tolist(), 0.5), rel=1e-9)
    centres = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])
    labels = torch.tensor([0, 1] * 8)
    clustered = centres[labels] + 0.1 * torch.randn(16, 4, generator=gen(1))
    shuffled = labels[torch.randperm(16, generator=gen(2))]
    assert M.supcon_loss(clustered, labels) < M.supcon_loss(clustered, shuffled) - 1.0


# ------------------------------------------------------------------------------------ SAM, TTE
def test_sam_is_identity_at_init_and_learns_q_k():
    torch.manual_seed(0)
    sam = M.SAM(8)
    content = torch.randn(3, 4, 8, generator=gen(0))
    style = torch.randn(3, 5, 8, generator=gen(1))
    assert torch.equal(sam(content, style), content)
    a = sam.attention(content, style)
    assert a.shape == (3, 4, 5) and torch.allclose(a.sum(-1), torch.ones(3, 4))
    target = torch.randn(3, 4, 8, generator=gen(2))
    opt = torch.optim.SGD(sam.parameters(), lr=0.5)
    loss = ((sam(content, style) - target) ** 2).mean()
    loss.backward()
    assert sam.w_o.weight.grad.abs().sum() > 0
    assert sam.w_q.weight.grad.abs().sum() == 0  # blocked by the zero W_o, as expected at init
    opt.step()
    opt.zero_grad()
    ((sam(content, style) - target) ** 2).mean().backward()
    assert sam.w_q.weight.grad.abs().sum() > 0 and sam.w_k.weight.grad.abs().sum() > 0
    assert sam.w_v.weight.grad.abs().sum() > 0
    with torch.no_grad():  # queries come from content, keys from style: both change the attention map
        a0 = sam.attention(content, style)
        assert not torch.allclose(a0, sam.attention(content * 2 + 1, style), atol=1e-4)
        assert not torch.allclose(a0, sam.attention(content, style * 2 + 1), atol=1e-4)
        # rows follow their content token; columns their style token (no positional mixing)
        assert torch.allclose(sam.attention(content.flip(1), style.flip(1)), a0.flip(1, 2), atol=1e-6)


def test_tte_shape_and_positional_embedding():
    torch.manual_seed(0)
    tte = M.TTE(16, n_tokens=6, depth=1, heads=4, mlp=32).eval()
    x = torch.randn(2, 6, 16, generator=gen(0))
    perm = torch.tensor([5, 0, 3, 1, 4, 2])
    with torch.no_grad():
        out = tte(x)
        assert out.shape == (2, 1)
        assert not torch.allclose(out, tte(x[:, perm]), atol=1e-5)
        assert tte(x[:, :4]).shape == (2, 1)  # fewer tokens (shorter clip) is fine
        tte.pos.zero_()  # without positions the CLS readout is permutation invariant
        assert torch.allclose(tte(x), tte(x[:, perm]), atol=1e-5)
    with pytest.raises(DataValidationError):
        tte(torch.randn(2, 7, 16))


# ------------------------------------------------------------------------------------ content, detector
def test_content_net_tokens_and_temporal_only_kernels():
    torch.manual_seed(0)
    net = M.ContentNet(d=12, channels=(4, 8, 8, 8), token_stride=4).eval()
    for t, s in ((32, 48), (16, 32)):
        assert net(torch.rand(2, 3, t, s, s, generator=gen(t))).shape == (2, t // 4, 12)
    spatial = [m for m in net.modules() if isinstance(m, torch.nn.Conv3d) and m.kernel_size[1:] != (1, 1)]
    assert len(spatial) == 1 and spatial[0] is net.stages[0][0]
    with pytest.raises(DataValidationError):
        net(torch.rand(1, 3, 10, 32, 32))


SMALL = dict(d=16, n_style_tokens=4, clip_len=16, channels=(4, 8, 8, 8), tte_mlp=16)


def _detector(fusion: str) -> M.Detector:
    torch.manual_seed(0)
    return M.Detector(fusion, style_dim=32, **SMALL).eval()


def test_detector_fusion_starts_as_identity():
    clips = torch.rand(2, 3, 16, 32, 32, generator=gen(0))
    e1, e2 = torch.randn(2, 32, generator=gen(1)), torch.randn(2, 32, generator=gen(2))
    none = _detector("none")
    with torch.no_grad():
        base = none(clips, e1)
        assert base.shape == (2,)
        assert torch.equal(base, none(clips, e2)) and torch.equal(base, none(clips, None))
        for fusion in ("sam", "add"):
            det = _detector(fusion)
            missing, unexpected = det.load_state_dict(none.state_dict(), strict=False)
            assert not unexpected and all(k.startswith(("fuse.", "style_proj.")) for k in missing)
            assert torch.equal(det(clips, e1), base)
            for p in det.fuse.parameters():  # once the fusion has weights, the style matters
                p.add_(0.3 * torch.randn(p.shape, generator=gen(3)))
            assert not torch.allclose(det(clips, e1), det(clips, e2))
    with pytest.raises(DataValidationError):
        _detector("sam")(clips, None)


def test_detector_projects_style_tokens_when_sizes_differ():
    torch.manual_seed(0)
    det = M.Detector("sam", style_dim=64, **SMALL)  # 64 / 4 = 16 = d: no projection
    assert isinstance(det.style_proj, torch.nn.Identity)
    det = M.Detector("sam", style_dim=32, **SMALL)  # 32 / 4 = 8 != 16
    assert isinstance(det.style_proj, torch.nn.Linear) and det.style_proj.in_features == 8


def test_frame_cnn_is_the_mean_of_per_frame_logits():
    torch.manual_seed(0)
    net = M.FrameCNN(channels=(4, 8, 8)).eval()
    clips = torch.rand(2, 3, 5, 32, 32, generator=gen(0))
    with torch.no_grad():
        out = net(clips)
        per = torch.stack([net.frame_logits(clips[:, :, t]) for t in range(5)], 1)
        assert out.shape == (2,) and torch.allclose(out, per.mean(1), atol=1e-6)
        assert torch.allclose(out, net(clips[:, :, [4, 2, 0, 1, 3]]), atol=1e-6)


# ------------------------------------------------------------------------------------ video aggregation
def test_video_scores_one_per_video():
    logits = np.array([1.0, 2.0, -0.5, -1.0])
    ids = ["a", "a", "a", "b"]
    s = M.video_scores(logits, ids)
    assert list(s) == ["a", "b"]
    assert s["a"] == pytest.approx(1 / (1 + math.exp(-2.5 / 3)))  # sigmoid of the mean logit ...
    assert s["a"] != pytest.approx(np.mean(1 / (1 + np.exp(-logits[:3]))))  # ... not the mean probability
    assert s["b"] == pytest.approx(1 / (1 + math.e))
    v = M.video_scores(torch.tensor(logits), ids, how="vote")
    assert v == {"a": pytest.approx(2 / 3), "b": 0.0}
    with pytest.raises(DataValidationError):
        M.video_scores(logits, ids[:3])


# ------------------------------------------------------------------------------------ style encoder
def test_style_encoder_shapes_and_level_routing():
    torch.manual_seed(0)
    for s in (32, 48):
        enc = M.StyleEncoder(s, widths=(8, 16, 32), head_width=8).eval()
        x = torch.rand(3, 3, s, s, generator=gen(s))
        with torch.no_grad():
            out = enc(x)
            assert out.shape == (3, 9, 8)
            for group, levels in enumerate(M.LEVEL_GROUPS):
                enc.heads[group].bias.add_(1.0)
                moved = (enc(x) - out).abs().amax(dim=(0, 2)) > 0.5
                enc.heads[group].bias.sub_(1.0)
                assert moved.nonzero().flatten().tolist() == list(levels)


def _synthetic_faces(n: int, seed: int, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Images: a coloured square on a coloured background; target latents: a fixed mix of colour/position."""
    g = gen(seed)
    bg, fg = torch.rand(n, 3, generator=g), torch.rand(n, 3, generator=g)
    side = size // 3
    pos = torch.randint(0, size - side + 1, (n, 2), generator=g)
    rows = torch.arange(size)[None, :, None]
    cols = torch.arange(size)[None, None, :]
    inside = ((rows >= pos[:, :1, None]) & (rows < pos[:, :1, None] + side)
              & (cols >= pos[:, 1:, None]) & (cols < pos[:, 1:, None] + side))[:, None]  # (n, 1, S, S)
    img = torch.where(inside, fg[:, :, None, None], bg[:, :, None, None])
    feats = torch.cat([bg, fg, pos.float() / (size - side)], dim=1) - 0.5  # (n, 8)
    mix = torch.randn(8, 72, generator=gen(99)) / math.sqrt(8)
    return img, (feats @ mix).view(n, 9, 8)


def test_style_encoder_can_fit_a_regression():
    torch.manual_seed(0)
    enc = M.StyleEncoder(16, widths=(8, 16, 16), head_width=8)
    x, y = _synthetic_faces(64, seed=0)
    opt = torch.optim.Adam(enc.parameters(), 3e-3)
    enc.eval()
    with torch.no_grad():
        start = F.mse_loss(enc(x), y).item()
    enc.train()
    for step in range(200):
        idx = torch.arange(step * 16, step * 16 + 16) % 64
        opt.zero_grad()
        F.mse_loss(enc(x[idx]), y[idx]).backward()
        opt.step()
    enc.eval()
    with torch.no_grad():
        end = F.mse_loss(enc(x), y).item()
    assert end < 0.25 * start
