"""The video ViT with its reduction hook: r = 0 equals the unmerged model, proportional attention, the
FLOP counter against a hand count and torch's FlopCounterMode, and loading a local checkpoint."""

from __future__ import annotations

import pytest
import torch

from cvpr24.core.ingest import MissingDatasetError
from cvpr24.pipelines.vidtldr import model as M

TINY = M.ModelConfig(num_frames=4, image_size=16, tubelet=2, patch=8, width=16, depth=3, heads=2, num_classes=5)


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return M.VideoViT(TINY).eval()


def clip(b: int = 2) -> torch.Tensor:
    return torch.randn(b, 3, 4, 16, 16, generator=torch.Generator().manual_seed(1))


def test_r_zero_equals_the_unmerged_model(net):
    x = clip()
    with torch.no_grad():
        base = net(x)
        for red in (M.Reduction.vidtldr([0, 0, 0]), M.Reduction.tome([0, 0, 0]), M.Reduction("evit", (0,))):
            assert torch.equal(net(x, red), base)


def test_token_counts_per_layer(net):
    tr = M.Trace()
    with torch.no_grad():
        net(clip(), M.Reduction.vidtldr([3, 2, 0]), trace=tr)
    assert tr.tokens == [8, 5, 3]
    assert M.tokens_per_layer(TINY, M.Reduction.vidtldr([3, 2, 0])) == [(8, 5), (5, 3), (3, 3)]
    assert M.tokens_per_layer(TINY, M.Reduction.tome([100] * 3)) == [(8, 4), (4, 2), (2, 1)]  # clamp N // 2


def test_proportional_attention_adds_log_size():
    torch.manual_seed(0)
    att = M.Attention(8, 2)
    x = torch.randn(1, 4, 8)
    ones = torch.ones(1, 4, 1)
    out1, plain, _ = att(x, None, True)
    out2, plain2, _ = att(x, ones, True)
    assert torch.allclose(out1, out2, atol=1e-6) and torch.allclose(plain, plain2)
    size = ones.clone()
    size[0, 2] = 2.0
    _, plain3, _ = att(x, size, True)
    assert torch.allclose(plain3, plain)  # the map returned for saliency has no size term
    # logits + log 2 on key 2: the key's weight relative to key 0 doubles
    qkv = att.qkv(x).reshape(1, 4, 3, 2, 4).permute(2, 0, 3, 1, 4)
    logits = (qkv[0] * att.scale) @ qkv[1].transpose(-2, -1)
    weighted = (logits + size.log()[:, None, None, :, 0]).softmax(-1)
    ratio = (weighted[..., 2] / weighted[..., 0]) / (plain[..., 2] / plain[..., 0])
    assert torch.allclose(ratio, torch.full_like(ratio, 2.0), atol=1e-5)


def test_flop_count_matches_a_hand_count_and_flopcounter(net):
    # hand count, tiny config: N0 = 2*2*2 = 8 tokens, C = 16, MLP 64, 3 blocks, schedule [2, 1, 0]
    c = 16
    embed = 8 * (3 * 2 * 8 * 8) * c  # conv: tokens x kernel volume x out channels
    def block(n, n_out, merge_width):
        sim = ((n + 1) // 2) * (n // 2) * merge_width if n_out < n else 0
        return 3 * n * c * c + 2 * n * n * c + n * c * c + 2 * n_out * c * 64 + sim
    hand = embed + block(8, 6, c) + block(6, 5, c) + block(5, 5, c) + c * 5
    red = M.Reduction.vidtldr([2, 1, 0])
    assert M.analytic_macs(TINY, red) == hand
    assert M.counted_macs(net, clip(1), red) == pytest.approx(hand, rel=1e-9)
    base = M.analytic_macs(TINY)
    assert base == embed + 3 * (3 * 8 * c * c + 2 * 64 * c + 8 * c * c + 2 * 8 * c * 64) + c * 5
    assert M.counted_macs(net, clip(1), M.Reduction()) == pytest.approx(base, rel=1e-9)
    tome = M.Reduction.tome([2, 2, 2])  # keys metric: similarity width = head dim
    assert M.counted_macs(net, clip(1), tome) == pytest.approx(M.analytic_macs(TINY, tome), rel=1e-9)


def test_merging_is_training_free(net):
    before = M.state_hash(net)
    with torch.no_grad():
        net(clip(), M.Reduction.vidtldr([3, 2]))
    assert M.state_hash(net) == before


def test_load_pretrained_videomae_style_checkpoint(tmp_path, net):
    state = {k: v.clone() for k, v in net.state_dict().items()}
    for i in range(TINY.depth):  # VideoMAE stores q and v biases separately
        bias = state.pop(f"blocks.{i}.attn.qkv.bias")
        state[f"blocks.{i}.attn.q_bias"], state[f"blocks.{i}.attn.v_bias"] = bias[:16], bias[32:]
    torch.save({"module": state}, tmp_path / "ckpt.pth")
    fresh = M.VideoViT(TINY)
    M.load_pretrained(fresh, str(tmp_path / "ckpt.pth"))
    got = fresh.state_dict()
    for i in range(TINY.depth):
        b = net.state_dict()[f"blocks.{i}.attn.qkv.bias"]
        assert torch.equal(got[f"blocks.{i}.attn.qkv.bias"][32:], b[32:])
        assert torch.all(got[f"blocks.{i}.attn.qkv.bias"][16:32] == 0)
    with pytest.raises(MissingDatasetError, match="nothing is"):
        M.load_pretrained(fresh, str(tmp_path / "missing.pth"))
    torch.save({"head.weight": torch.zeros(3, 3)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="does not fit"):
        M.load_pretrained(fresh, str(tmp_path / "bad.pth"))


def test_conv_stem_flops_and_token_grid():
    # stem: 3x3 conv, stride 2, 4 channels on 4 x 16 x 16 -> 4 x 8 x 8 map; projection (2, 4, 4) -> 2 x 2 x 2 tokens
    cfg = M.ModelConfig(num_frames=4, image_size=16, tubelet=2, patch=8, width=16, depth=3, heads=2, num_classes=5,
                        stem=4)
    torch.manual_seed(0)
    model = M.VideoViT(cfg).eval()
    video = torch.randn(2, 3, 4, 16, 16)
    assert model.embed(video).shape == (2, 8, 16)
    c = 16
    embed = 4 * 8 * 8 * 27 * 4 + 8 * (4 * 2 * 4 * 4) * c
    base = embed + 3 * (3 * 8 * c * c + 2 * 64 * c + 8 * c * c + 2 * 8 * c * 64) + c * 5
    assert M.analytic_macs(cfg) == base
    assert M.counted_macs(model, video[:1], M.Reduction()) == pytest.approx(base, rel=1e-9)


def test_size_weighted_pooling_counts_a_merged_token_as_its_patches():
    x = torch.tensor([[[1.0, 0.0], [0.0, 4.0]]])
    size = torch.tensor([[[1.0], [3.0]]])
    assert torch.allclose(M.pool_tokens(x, size), torch.tensor([[0.25, 3.0]]))
    assert torch.equal(M.pool_tokens(x, None), x.mean(dim=1))
    # merging exact duplicates changes nothing the pool sees: the pooled vector stays the mean over the patches
    from cvpr24.pipelines.vidtldr import merging as G

    base = torch.randn(1, 4, 3, generator=torch.Generator().manual_seed(0))
    dup = base.repeat_interleave(2, dim=1)  # A token i == B token i
    merged, msize, _ = G.bipartite_merge(dup, dup, torch.ones(1, 8, 1), 4)
    assert merged.shape[1] == 4 and torch.allclose(M.pool_tokens(merged, msize), dup.mean(dim=1), atol=1e-6)


def test_pooling_setting_of_the_model():
    torch.manual_seed(0)
    cfg = M.ModelConfig(num_frames=4, image_size=16, tubelet=2, patch=8, width=16, depth=3, heads=2, num_classes=5)
    sized = M.VideoViT(cfg).eval()
    plain = M.VideoViT(M.ModelConfig(**{**cfg.__dict__, "pool": "mean"})).eval()
    plain.load_state_dict(sized.state_dict())
    x = clip()
    with torch.no_grad():
        assert torch.equal(sized(x), plain(x))  # unmerged: every size is 1
        red = M.Reduction.tome([3, 1, 0])
        tr = M.Trace()
        out = sized(x, red, trace=tr)
        assert not torch.allclose(out, plain(x, red))  # merged tokens of different sizes
        assert torch.all(tr.size.sum(dim=1) == cfg.num_tokens)  # ToMe: sizes add up to the patches
        # FLOP counters see no cost for the pooling: analytic and counted still agree
        assert M.counted_macs(sized, x[:1], red) == pytest.approx(M.analytic_macs(cfg, red), rel=1e-9)
    with pytest.raises(ValueError, match="pool"):
        M.ModelConfig(pool="max")
