"""Unit tests of vid-TLDR's components (spec 9.2): each fails if its component is wrong."""

from __future__ import annotations

import pytest
import torch

from cvpr24.pipelines.vidtldr import merging as G


def g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------- saliency
def test_saliency_one_hot_row_is_one_uniform_rows_are_zero():
    n = 6
    attn = torch.full((1, 2, n, n), 1.0 / n)
    attn[0, :, 2] = 0.0
    attn[0, :, 2, 4] = 1.0  # token 2 attends to one token only (exact zeros elsewhere: log(0) guarded)
    s = G.saliency_score(attn)
    assert s.shape == (1, n, 1) and torch.isfinite(s).all()
    assert s[0, 2, 0] == pytest.approx(1.0)
    assert torch.all(s[0, [0, 1, 3, 4, 5], 0] == 0)
    raw = G.sharpness(attn)
    assert raw[0, 2, 0] == pytest.approx(1.0) and raw[0, 0, 0] == pytest.approx(0.0)


def test_saliency_ranks_sharper_rows_higher_and_zeroes_about_half():
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 50, 50) * torch.linspace(0.1, 5.0, 50)[None, None, :, None]
    s = G.sharpness(logits.softmax(-1))
    # rows with larger logit scale are sharper (lower entropy): the score must increase with the row index
    assert torch.corrcoef(torch.stack([s[0, :, 0], torch.arange(50.0)]))[0, 1] > 0.9
    sal = G.saliency_score(torch.randn(4, 2, 64, 64).softmax(-1))
    zeros = (sal == 0).float().mean()
    assert 0.3 < zeros < 0.7 and sal.max() == pytest.approx(1.0, abs=1e-6) and sal.min() == 0


def test_wrong_saliency_sign_would_be_caught():
    """An entropy (instead of negative entropy) score ranks the uniform token highest: the check fails."""
    n = 5
    attn = torch.full((1, 1, n, n), 1.0 / n)
    attn[0, 0, 0] = torch.tensor([0.96, 0.01, 0.01, 0.01, 0.01])
    right = G.saliency_score(attn)[0, :, 0]
    a = attn.mean(1)
    wrong = -torch.xlogy(a, a).sum(-1)
    assert right.argmax() == 0 and wrong[0].argmax() != 0


def test_background_drop_off_keeps_minmax_score():
    attn = torch.randn(2, 2, 10, 10).softmax(-1)
    assert torch.allclose(G.saliency_score(attn, background_drop=False), G.sharpness(attn))


# ------------------------------------------------------------------------------------------ merging
def test_clamp_r():
    assert G.clamp_r(100, 10) == 5 and G.clamp_r(0.5, 10) == 5 and G.clamp_r(0.25, 10) == 2
    assert G.clamp_r(0, 10) == 0 and G.clamp_r(3, 10) == 3


def test_r_zero_returns_inputs_unchanged():
    x, size = torch.randn(2, 8, 4), torch.ones(2, 8, 1)
    out = G.bipartite_merge(x, x, size, 0)
    assert out[0] is x and out[1] is size


@pytest.mark.parametrize("n,r", [(16, 3), (17, 8), (9, 4)])
def test_token_count_falls_by_exactly_r_and_sizes_are_conserved(n, r):
    x = torch.randn(3, n, 8, generator=g())
    size = torch.rand(3, n, 1, generator=g(1)) + 0.5
    out, new_size, _ = G.bipartite_merge(x, x, size, r)
    assert out.shape == (3, n - r, 8) and new_size.shape == (3, n - r, 1)
    assert torch.allclose(new_size.sum(1), size.sum(1))  # ToMe (s = 1): no mass lost
    sal = (torch.rand(3, n, 1, generator=g(2)) > 0.5).float() * torch.rand(3, n, 1, generator=g(3))
    out, new_size, _ = G.bipartite_merge(x, x, size, r, weight=sal)
    assert out.shape[1] == n - r and (new_size > 0).all()
    # mass is lost only for the merged sources: sum(size') = sum(size) - sum_src (1 - s_a) size_a
    lost = size.sum(1) - new_size.sum(1)
    assert (lost >= -1e-5).all() and (lost <= ((1 - sal) * size)[:, ::2].sum(1) + 1e-5).all()


def test_merged_feature_is_the_size_and_saliency_weighted_mean():
    # 4 tokens: A = {0, 2}, B = {1, 3}. Token 0 is nearly parallel to token 1, token 2 orthogonal to both B.
    x = torch.tensor([[[1.0, 0.1, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.0]]])
    size = torch.tensor([[[2.0], [3.0], [1.0], [1.0]]])
    sal = torch.tensor([[[0.5], [0.9], [0.0], [0.0]]])
    out, new_size, _ = G.bipartite_merge(x, x, size, 1, weight=sal)
    # kept A token 2 first, then B tokens 1 and 3; token 0 merged into token 1
    expect1 = (3.0 * x[0, 1] + 0.5 * 2.0 * x[0, 0]) / (3.0 + 0.5 * 2.0)
    assert torch.allclose(out[0, 0], x[0, 2]) and torch.allclose(out[0, 2], x[0, 3])
    assert torch.allclose(out[0, 1], expect1)
    assert torch.allclose(new_size[0, :, 0], torch.tensor([1.0, 4.0, 1.0]))
    # ToMe weighting (s = 1): plain size-weighted mean
    out, new_size, _ = G.bipartite_merge(x, x, size, 1)
    assert torch.allclose(out[0, 1], (3.0 * x[0, 1] + 2.0 * x[0, 0]) / 5.0)
    # a background source (s = 0) is dropped: destination and its size unchanged
    sal0 = torch.zeros(1, 4, 1)
    out, new_size, _ = G.bipartite_merge(x, x, size, 1, weight=sal0)
    assert torch.allclose(out[0, 1], x[0, 1]) and new_size[0, 1, 0] == 3.0


def test_order_kept_sources_then_destinations():
    torch.manual_seed(3)
    x = torch.randn(1, 10, 6)
    idx = torch.arange(10.0)[None, :, None]
    feat = torch.cat([x, idx], -1)  # carry the original index along as a feature
    out, _, _ = G.bipartite_merge(feat, x, torch.ones(1, 10, 1), 2, sort_kept=True)
    kept = out[0, :3, -1]
    assert torch.all(kept[1:] > kept[:-1]) and set(kept.tolist()) <= {0.0, 2.0, 4.0, 6.0, 8.0}


def _reference_tome(x, metric, size, r):
    """A loop-by-loop ToMe (bipartite soft matching, size-weighted average, score-ordered kept tokens)."""
    outs, sizes = [], []
    for b in range(x.shape[0]):
        m = metric[b] / metric[b].norm(dim=-1, keepdim=True)
        a_idx, b_idx = list(range(0, x.shape[1], 2)), list(range(1, x.shape[1], 2))
        best = {a: max(b_idx, key=lambda j, a=a: float(m[a] @ m[j])) for a in a_idx}
        score = {a: float(m[a] @ m[best[a]]) for a in a_idx}
        order = sorted(a_idx, key=lambda a: -score[a])
        src, kept = order[:r], order[r:]
        feats = {j: x[b, j] * size[b, j] for j in b_idx}
        sz = {j: size[b, j].clone() for j in b_idx}
        for a in src:
            feats[best[a]] = feats[best[a]] + x[b, a] * size[b, a]
            sz[best[a]] = sz[best[a]] + size[b, a]
        outs.append(torch.stack([x[b, a] for a in kept] + [feats[j] / sz[j] for j in b_idx]))
        sizes.append(torch.stack([size[b, a] for a in kept] + [sz[j] for j in b_idx]))
    return torch.stack(outs), torch.stack(sizes)


def test_tome_parity_with_a_reference_implementation():
    x, k = torch.randn(2, 12, 5, generator=g(4)), torch.randn(2, 12, 3, generator=g(5))
    size = torch.rand(2, 12, 1, generator=g(6)) + 0.5
    out, new_size, _ = G.bipartite_merge(x, k, size, 4, weight=None, sort_kept=False)
    ref_x, ref_s = _reference_tome(x, k, size, 4)
    assert torch.allclose(out, ref_x, atol=1e-5) and torch.allclose(new_size, ref_s, atol=1e-5)


def test_source_tracking_marks_groups_and_dropped_patches():
    x = torch.randn(1, 8, 4, generator=g(7))
    src = torch.eye(8)[None]
    sal = torch.tensor([[[0.0], [1.0], [1.0], [1.0], [1.0], [1.0], [1.0], [1.0]]])
    _, _, source = G.bipartite_merge(x, x, torch.ones(1, 8, 1), 4, weight=sal, source=src)
    assert source.shape == (1, 4, 8)
    assert source[0, :, 0].sum() == 0  # token 0 had s = 0: dropped, in no group
    assert source[0, :, 1:].sum(0).eq(1).all()  # every other patch in exactly one group


def test_controls_drop_exactly_r():
    x, size = torch.randn(2, 10, 4), torch.ones(2, 10, 1)
    out, s, _ = G.random_drop(x, size, 3, g())
    assert out.shape == (2, 7, 4)
    attn = torch.zeros(2, 1, 10, 10)
    attn[..., 7] = 1.0  # everyone attends to token 7
    out, s, _ = G.attention_prune(x, size, attn, 5)
    assert out.shape == (2, 5, 4) and any(torch.allclose(out[0, i], x[0, 7]) for i in range(5))
