"""Tests of the face renderer, mini SyncNet, LSE and the Fréchet FID proxy (spec 8.6, 8.7, checklist)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cvpr24.core.validation import DataValidationError
from cvpr24.pipelines.av2av import face as fm


@pytest.fixture(autouse=True)
def _one_thread():
    """Single-threaded (fast on a shared CPU, and the numbers the thresholds were set with)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _toy_video(T: int = 20, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Static upper half (identity), a mouth whose opening follows the units, mel derived from the units."""
    rng = np.random.default_rng(seed)
    units = np.repeat(rng.integers(0, 4, size=T), 2)                     # (2T,)
    frames = np.zeros((T, 64, 64, 3), np.uint8)
    yy, xx = np.mgrid[0:32, 0:64]
    tone = rng.integers(60, 200, size=3)
    frames[:, :32] = (tone + 40 * np.sin(xx / 9.0)[..., None] * np.cos(yy / 7.0)[..., None]).astype(np.uint8)
    frames[:, 32:] = 150
    for t in range(T):
        h = 2 + 4 * int(units[2 * t])
        frames[t, 44:44 + h, 20:44] = 30
    mel = np.repeat(units[:, None].astype(np.float32), 80, 1) + rng.normal(0, 0.1, (2 * T, 80)).astype(np.float32)
    return frames, units, mel


def test_pad_units_and_pingpong_lengths():
    u = np.arange(47)
    p = fm.pad_units(u)
    assert len(p) == 60 and (p[47:] == 46).all() and (p[:47] == u).all()
    assert len(fm.pad_units(np.arange(40))) == 40
    frames = np.arange(4)
    for n in (0, 3, 4, 11, 30):
        assert len(fm.pingpong(frames, n)) == n
    # the official order: the turning frames are not repeated (checked against av2av's unit2av inference)
    assert fm.pingpong(frames, 11).tolist() == [0, 1, 2, 3, 2, 1, 0, 1, 2, 3, 2]
    assert fm.pingpong(frames[:1], 3).tolist() == [0, 0, 0]


def test_renderer_shapes_range_and_ablation():
    torch.manual_seed(0)
    m = fm.MiniWav2Lip(K=10).eval()
    faces = torch.rand(2, 10, 6, 64, 64)
    out = m(torch.randint(0, 11, (2, 20)), faces)
    assert out.shape == (2, 10, 3, 64, 64)
    assert out.min() >= 0 and out.max() <= 1
    src, units, _ = _toy_video(7)
    vid = fm.render_video(m, np.concatenate([units, units, [1, 2, 3]]), src)    # 31 units -> 15 frames
    assert vid.shape == (15, 64, 64, 3) and vid.dtype == np.uint8
    abl = fm.MiniWav2Lip(K=10, use_units=False).eval()
    assert not any("unit_emb" in n for n, _ in abl.named_parameters())
    assert torch.equal(abl.unit_vectors(torch.zeros(3, 20, dtype=torch.long)), torch.zeros(3, 10, 128))
    with pytest.raises(DataValidationError):
        fm.render_video(m, np.array([10, 10]), src)        # unit id out of range


def test_renderer_learns_upper_half_from_reference():
    frames, units, _ = _toy_video(20)
    cfg = {"K": 4, "steps": 40, "batch_size": 1, "d": 16, "ffn": 32, "lr": 1e-2}
    untrained = fm.MiniWav2Lip(K=4, d=16, ffn=32).eval()
    model, hist = fm.fit_face_renderer([frames], [units], cfg, seed=0)
    assert hist[-1]["l1"] < hist[0]["l1"]
    ref = frames[:10, :32].astype(np.float32)
    out = fm.render_video(model, units[:20], frames[:10])
    base = fm.render_video(untrained, units[:20], frames[:10])
    err = np.abs(out[:, :32].astype(np.float32) - ref).mean() / 255
    err0 = np.abs(base[:, :32].astype(np.float32) - ref).mean() / 255
    mean_only = np.abs(ref - ref.mean((1, 2), keepdims=True)).mean() / 255    # a flat colour: ~0.06
    assert err < 0.04 and err < 0.6 * mean_only and err < 0.3 * err0


def test_fit_is_deterministic_and_config_validated():
    frames, units, mel = _toy_video(16)
    cfg = {"K": 4, "steps": 2, "batch_size": 1, "d": 16, "ffn": 16}
    sync, _ = fm.fit_syncnet([frames], [mel], {"steps": 3, "batch_size": 4, "width": 8, "min_shift": 3}, seed=1)
    a, h1 = fm.fit_face_renderer([frames], [units], cfg, seed=3, syncnet=sync, mels=[mel])
    b, h2 = fm.fit_face_renderer([frames], [units], cfg, seed=3, syncnet=sync, mels=[mel])
    assert h1 == h2 and "sync" in h1[0]
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    with pytest.raises(ValueError, match="bogus"):
        fm.validate_render_config({"bogus": 1})
    with pytest.raises(ValueError, match="min_shift"):
        fm.validate_sync_config({"min_shift": 0})


def test_syncnet_embeddings_shapes():
    frames, _, mel = _toy_video(16)
    sync, hist = fm.fit_syncnet([frames], [mel], {"steps": 3, "batch_size": 4, "width": 8, "min_shift": 3}, 0)
    v, a = fm.sync_embeddings(sync, frames, mel)
    assert v.shape == (12, 64) and a.shape == (12, 64)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, atol=1e-4)
    with pytest.raises(DataValidationError):
        fm.sync_embeddings(sync, frames, mel[:10])


def test_lse_offsets():
    rng = np.random.default_rng(0)
    e = rng.normal(size=(60, 16)).astype(np.float32)
    d, c, off, dist = fm.lse(e, e.copy())
    assert off == 0 and len(dist) == 31 and d == pytest.approx(dist.min()) and c > 0
    assert dist.argmin() == 15
    # audio lags by k: audio[t] = video[t - k]  -> video[t] matches audio[t + k] -> offset +k
    k = 4
    a = np.roll(e, k, axis=0)
    assert fm.lse(e, a)[2] == k
    assert fm.lse(e, np.roll(e, -k, axis=0))[2] == -k
    # zero padding as calc_pdist: at offset o the |o| padded terms are distances to the zero vector
    o = 3
    expect = np.mean([np.linalg.norm(e[t] - (e[t + o] if t + o < 60 else 0) + 1e-6) for t in range(60)])
    assert dist[15 + o] == pytest.approx(expect, rel=1e-5)


def test_frechet_distance():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 4))
    assert fm.frechet_distance(x, x) == pytest.approx(0, abs=1e-6)
    # exact: diagonal Gaussians, compared with the closed form on the sample statistics
    n = 20000
    va, vb = np.array([1.0, 4.0, 0.25]), np.array([2.0, 1.0, 1.0])
    a = rng.normal(size=(n, 3)) * np.sqrt(va)
    b = 1.0 + rng.normal(size=(n, 3)) * np.sqrt(vb)
    closed = 3 * 1.0 + np.sum((np.sqrt(va) - np.sqrt(vb)) ** 2)
    assert fm.frechet_distance(a, b) == pytest.approx(closed, rel=0.03)
    # general covariances: trace of sqrtm(S1 S2) = sum of sqrt of eigenvalues of S1 S2
    c, d = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5)), rng.normal(size=(300, 5))
    s1, s2 = np.cov(c, rowvar=False), np.cov(d, rowvar=False)
    tr = np.sum(np.sqrt(np.linalg.eigvals(s1 @ s2).real.clip(0)))
    mu = c.mean(0) - d.mean(0)
    ref = mu @ mu + np.trace(s1) + np.trace(s2) - 2 * tr
    assert fm.frechet_distance(c, d) == pytest.approx(ref, rel=1e-6)


def test_viseme_classifier_features():
    rng = np.random.default_rng(0)
    frames = np.zeros((48, 64, 64, 3), np.uint8)
    labels = np.arange(48) % 3
    for i, y in enumerate(labels):
        frames[i, 40:40 + 6 * (y + 1), 16:48] = 255
    frames += rng.integers(0, 20, size=frames.shape, dtype=np.uint8)
    model, hist = fm.fit_viseme_classifier(frames, labels, {"steps": 25, "batch_size": 16, "feat_dim": 8}, 0)
    assert hist[-1]["loss"] < hist[0]["loss"]
    f = fm.viseme_features(model, frames)
    assert f.shape == (48, 8)


def test_syncnet_learns_sync_and_lse_finds_the_delay():
    data = [_toy_video(40, seed=s) for s in range(3)]
    cfg = {"steps": 80, "batch_size": 16, "width": 8, "min_shift": 3, "lr": 3e-3}
    sync, hist = fm.fit_syncnet([d[0] for d in data], [d[2] for d in data], cfg, seed=0)
    assert hist[-1]["loss"] < 0.6 * hist[0]["loss"]
    frames, _, mel = _toy_video(40, seed=7)                      # an unseen video
    v, a = fm.sync_embeddings(sync, frames, mel)
    d0, c0, off0, _ = fm.lse(v, a)
    assert off0 == 0 and c0 > 0.1
    v, a = fm.sync_embeddings(sync, frames, np.roll(mel, 2 * 6, axis=0))   # audio delayed by 6 frames
    d6, _, off6, _ = fm.lse(v, a)
    assert off6 == 6


def test_renderer_resumes_bit_identically(tmp_path):
    from cvpr24.core.training import Checkpointer

    frames, units, _ = _toy_video(12)
    cfg = {"K": 4, "steps": 3, "batch_size": 1, "d": 16, "ffn": 16, "ckpt_every": 1}
    ref, _ = fm.fit_face_renderer([frames], [units], cfg, seed=5)
    ck = Checkpointer(tmp_path / "face", keep=1)
    fm.fit_face_renderer([frames], [units], cfg, seed=5, checkpointer=ck)   # leaves the step-2 checkpoint
    resumed, _ = fm.fit_face_renderer([frames], [units], cfg, seed=5, checkpointer=ck)   # runs step 2 only
    assert all(torch.equal(x, y) for x, y in zip(ref.state_dict().values(), resumed.state_dict().values(),
                                                  strict=True))
