"""Tests of the tiny mAV-HuBERT unit extractor (spec 2.2, 8.4, component checklist)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cvpr24.core.training import Checkpointer
from cvpr24.pipelines.av2av import units as U

TINY = {"K": 8, "d": 32, "layers": 2, "heads": 2, "ffn": 64, "frontend": 32, "final_dim": 16, "dropout": 0.0,
        "batch_size": 8, "lr": 3e-3, "ckpt_every": 1000}


def test_interleave_order():
    even, odd = np.array([1, 2, 3]), np.array([7, 8, 9])
    assert U.interleave(even, odd).tolist() == [1, 7, 2, 8, 3, 9]
    with pytest.raises(ValueError):
        U.interleave(np.array([1, 2]), np.array([1]))


def test_span_mask_coverage_and_spans():
    gen = torch.Generator().manual_seed(0)
    cov = [float(U.span_mask(200, 0.65, 5, gen).float().mean()) for _ in range(200)]
    # fairseq semantics: 0.65*200/5 = 26 starts of 5 frames, overlaps allowed -> a bit below 0.65
    assert 0.45 < np.mean(cov) < 0.65
    # length 1: no overlap possible, so the coverage is exactly the number of starts / T ~ prob
    cov1 = [float(U.span_mask(100, 0.5, 1, gen).float().mean()) for _ in range(50)]
    assert abs(np.mean(cov1) - 0.5) < 0.02
    # masked frames come in runs of >= length
    m = U.span_mask(300, 0.2, 5, gen).numpy().astype(int)
    edges = np.flatnonzero(np.diff(np.concatenate([[0], m, [0]])))
    assert np.all(edges[1::2] - edges[0::2] >= 5)
    assert not U.span_mask(50, 0.0, 5, gen).any()


def test_modality_dropout_zeroes_exactly_one_stream():
    gen = torch.Generator().manual_seed(1)
    a, v = torch.randn(400, 5, 3) + 3, torch.randn(400, 5, 4, 4) + 3
    a2, v2, which = U.modality_dropout(a, v, p=1.0, gen=gen)
    a_zero = (a2 == 0).flatten(1).all(1)
    v_zero = (v2 == 0).flatten(1).all(1)
    assert torch.all(a_zero ^ v_zero)                                  # exactly one stream dropped
    assert torch.equal(a2[~a_zero], a[~a_zero]) and torch.equal(v2[~v_zero], v[~v_zero])
    assert torch.equal(which, torch.where(a_zero, 1, 2))
    assert 0.4 < a_zero.float().mean() < 0.6                            # audio or video with equal chance
    a3, v3, which0 = U.modality_dropout(a, v, p=0.0, gen=gen)
    assert torch.equal(a3, a) and torch.equal(v3, v) and not which0.any()
    _, _, w = U.modality_dropout(a, v, p=0.5, gen=gen)
    assert 0.4 < (w > 0).float().mean() < 0.6


def test_config_validation_names_key():
    with pytest.raises(ValueError, match="bogus"):
        U.validate_config({"bogus": 1})
    with pytest.raises(ValueError, match="mask_prob"):
        U.validate_config({"mask_prob": 1.5})
    with pytest.raises(ValueError, match="heads"):
        U.validate_config({"d": 30, "heads": 4})


def test_forward_shapes_missing_modality_and_padding():
    torch.manual_seed(0)
    m = U.TinyAVHubert(TINY).eval()
    a, v = torch.randn(2, 6, 104), torch.randn(2, 6, 28, 28)
    le, lo = m(a, v)
    assert le.shape == lo.shape == (2, 6, 8)
    assert le.abs().max() <= 1 / 0.1 + 1e-4                             # cosine / temperature
    # a missing modality is zero front-end features (AV-HuBERT)
    fa, _ = m._frontends(a, None)
    ref = m._heads(m._encode(fa, torch.zeros_like(fa), None)[-1])[0]
    assert torch.allclose(m(a, None)[0], ref)
    assert m.features(a, None, layer=2).shape == (2, 6, 32)
    with pytest.raises(ValueError):
        m(None, None)
    # batched extraction with padding == one at a time
    rng = np.random.default_rng(0)
    feats = [rng.standard_normal((t, 104)).astype(np.float32) for t in (5, 9, 7)]
    lips = [rng.integers(0, 256, (t, 32, 32), dtype=np.uint8) for t in (5, 9, 7)]
    batched = U.extract_units_batch(m, feats, lips, batch_size=3)
    for f, lp, b in zip(feats, lips, batched, strict=True):
        single = U.extract_units(m, f, lp)
        assert single.shape == (2 * len(f),) and single.dtype == np.int64
        assert np.array_equal(single, b)


def _synthetic(n=24, t=20, k=8, seed=0):
    """Per 25 Hz frame a hidden class (runs of 2-4 frames) seen by BOTH streams: audio = class prototype +
    noise, lips = class-dependent brightness + noise (crop/flip invariant). Units: even = c, odd = (c+1)%k."""
    rng = np.random.default_rng(seed)
    protos = rng.standard_normal((k, 104)).astype(np.float32)
    feats, lips, tgts = [], [], []
    for _ in range(n):
        cls = np.repeat(rng.integers(0, k, t), rng.integers(2, 5, t))[:t]
        feats.append(protos[cls] + 0.3 * rng.standard_normal((t, 104)).astype(np.float32))
        lvl = 20 + 28 * cls[:, None, None] + rng.integers(0, 10, (t, 32, 32))
        lips.append(lvl.clip(0, 255).astype(np.uint8))
        tgts.append(U.interleave(cls, (cls + 1) % k))
    return feats, lips, tgts


def test_tiny_model_learns_unified_units():
    torch.set_num_threads(1)
    feats, lips, tgts = _synthetic()
    noisy = [[f + 0.5 * np.random.default_rng(i).standard_normal(f.shape).astype(np.float32)]
             for i, f in enumerate(feats)]
    sd, hist = U.fit_unit_model(feats, noisy, lips, tgts, {**TINY, "steps": 150}, seed=0)
    first = hist[0]["loss"]                                             # ~log(8) = 2.08 or above
    last = np.mean([h["loss"] for h in hist[-5:]])
    assert last < 0.75 * first
    m = U.load_unit_model(sd, TINY)
    chance = 1 / 8
    acc_a = U.unit_accuracy(U.extract_units_batch(m, feats, None), tgts)
    acc_v = U.unit_accuracy(U.extract_units_batch(m, None, lips), tgts)
    acc_av = U.unit_accuracy(U.extract_units_batch(m, feats, lips), tgts)
    # audio and AV ~1.0 here; video-only learns slower (only from audio-dropped utterances), ~0.6
    assert acc_a > 3 * chance and acc_av > 3 * chance and acc_v > 3 * chance


def test_resume_gives_same_weights(tmp_path):
    torch.set_num_threads(1)
    feats, lips, tgts = _synthetic(n=6, t=8)
    cfg = {**TINY, "steps": 6, "batch_size": 3, "ckpt_every": 2, "dropout": 0.1}
    noisy = [[f + 1.0, f - 1.0] for f in feats]
    full, hist_full = U.fit_unit_model(feats, noisy, lips, tgts, cfg, seed=3)
    ck = Checkpointer(tmp_path / "ck")
    U.fit_unit_model(feats, noisy, lips, tgts, cfg, seed=3, checkpointer=ck, stop_at=3)
    assert ck.checkpoints()
    resumed, hist_res = U.fit_unit_model(feats, noisy, lips, tgts, cfg, seed=3, checkpointer=ck)
    for k in full:
        assert torch.equal(full[k], resumed[k]), k
    assert [h["loss"] for h in hist_full] == [h["loss"] for h in hist_res]
    again, _ = U.fit_unit_model(feats, noisy, lips, tgts, cfg, seed=3)
    assert all(torch.equal(full[k], again[k]) for k in full)


def test_fit_unit_model_rejects_bad_input():
    feats, lips, tgts = _synthetic(n=3, t=4)
    with pytest.raises(ValueError, match="K"):
        U.fit_unit_model(feats, None, lips, [t + 8 for t in tgts], {**TINY, "steps": 1}, seed=0)
    with pytest.raises(ValueError, match="targets"):
        U.fit_unit_model(feats, None, lips, [t[:-1] for t in tgts], {**TINY, "steps": 1}, seed=0)


def test_kmeans_deterministic_and_upsample():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.standard_normal((100, 4)) + 6 * i for i in range(3)]).astype(np.float32)
    km1, km2 = U.fit_kmeans(x, 3, seed=0), U.fit_kmeans(x, 3, seed=0)
    a1, a2 = U.assign(km1, x), U.assign(km2, x)
    assert np.array_equal(a1, a2) and a1.dtype == np.int64
    assert len(set(a1[:100])) == 1 and len(set(a1)) == 3                # recovers the three blobs
    h = np.arange(6, dtype=np.float32).reshape(3, 2)
    up = U.upsample_features(h)
    assert up.shape == (6, 2)
    assert np.allclose(up[0::2], h) and np.allclose(up[1], (h[0] + h[1]) / 2) and np.allclose(up[5], h[2])


def test_iteration2_targets_shape():
    torch.manual_seed(0)
    m = U.TinyAVHubert(TINY).eval()
    feats, lips, _ = _synthetic(n=4, t=6)
    km, tg = U.iteration2_targets(m, feats, lips, k=5, seed=0, layer=2)
    assert [t.shape for t in tg] == [(12,)] * 4 and all(t.max() < 5 for t in tg)


def test_unit_accuracy():
    assert U.unit_accuracy(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 4])) == 0.75
    assert U.unit_accuracy([np.array([1]), np.array([2, 3])], [np.array([1]), np.array([2, 0])]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        U.unit_accuracy(np.array([1, 2]), np.array([1]))
