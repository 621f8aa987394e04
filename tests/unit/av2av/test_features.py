"""Tests of the AV2AV input features and noise mixing (spec 2.1, 8.4, component checklist)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cvpr24.pipelines.av2av import features as Fe


def _wave(t=5, seed=0):
    rng = np.random.default_rng(seed)
    n = 640 * t
    x = 0.3 * np.sin(2 * np.pi * 440 * np.arange(n) / 16000) + 0.05 * rng.standard_normal(n)
    return x.astype(np.float32)


def test_stack_frames_zero_pads_last_group():
    f = np.arange(10 * 26, dtype=np.float32).reshape(10, 26) + 1
    s = Fe.stack_frames(f, 4)
    assert s.shape == (3, 104)
    assert np.array_equal(s[0], f[0:4].ravel()) and np.array_equal(s[1], f[4:8].ravel())
    assert np.array_equal(s[2, :52], f[8:10].ravel()) and not s[2, 52:].any()
    assert Fe.stack_frames(f[:8], 4).shape == (2, 104)


def test_normalize_frames_is_per_frame():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 104)) * np.arange(1, 8)[:, None] + np.arange(7)[:, None]
    y = Fe.normalize_frames(x)
    assert y.dtype == np.float32
    assert np.allclose(y.mean(1), 0, atol=1e-5) and np.allclose(y.std(1), 1, atol=1e-3)
    ref = torch.nn.functional.layer_norm(torch.from_numpy(x).float(), (104,)).numpy()
    assert np.allclose(y, ref, atol=1e-5)


def test_logfbank_shapes_scale_and_padding():
    w = _wave(5)
    fb = Fe.logfbank(w)
    assert fb.shape == (20, 26) and fb.dtype == np.float32
    assert not fb[-1].any() and fb[:-1].min() > 0       # 640T samples -> 4T-1 frames, zero row as official stack
    # int16 scale: log energies are log(32768^2 * P); scaling the wave is a pure shift of the log energies
    half = Fe.logfbank(0.5 * w)
    assert np.allclose(fb[:-1] - half[:-1], np.log(4.0), atol=1e-4)
    assert fb[:-1].mean() > 10                          # int16-scale energies (float input would be ~ -5)
    # a 1 kHz tone peaks in one of the two filters whose centres (HTK mel, 26 over 0-8 kHz) bracket 1 kHz
    tone = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(640 * 3) / 16000)).astype(np.float32)
    centres = Fe._mel2hz(np.linspace(0, Fe._hz2mel(8000), 28))[1:-1]
    below = int(np.flatnonzero(centres < 1000)[-1])
    assert set(Fe.logfbank(tone)[:-1].argmax(1).tolist()) <= {below, below + 1}
    a = Fe.audio_input(w)
    assert a.shape == (5, 104) and a.dtype == np.float32
    assert np.allclose(a.mean(1), 0, atol=1e-4)
    with pytest.raises(ValueError, match="640"):
        Fe.logfbank(w[:-1])
    with pytest.raises(ValueError, match="float"):
        Fe.logfbank((w * 32767).astype(np.int16))


def test_logfbank_and_mfcc_match_python_speech_features():
    import python_speech_features as psf
    w = _wave(5)
    x = w.astype(np.float64) * 32768.0
    ref = psf.logfbank(x, samplerate=16000, winlen=0.025, winstep=0.01, nfilt=26)
    assert len(ref) == 19
    assert np.allclose(Fe.logfbank(w)[:19], ref, rtol=1e-5, atol=1e-4)
    m = psf.mfcc(x, samplerate=16000, winlen=0.025, winstep=0.01, numcep=13, nfilt=26)
    d1 = psf.delta(m, 2)
    full = np.concatenate([m, d1, psf.delta(d1, 2)], axis=1)
    full = np.concatenate([full, full[-1:]])
    assert np.allclose(Fe.mfcc_targets(w), full.reshape(10, 2, 39).mean(1), rtol=1e-4, atol=1e-3)


def test_mfcc_targets_pairs():
    w = _wave(5)
    m = Fe.mfcc_targets(w)
    assert m.shape == (10, 39) and m.dtype == np.float32 and np.all(np.isfinite(m))
    d = Fe._psf_delta(np.arange(10, dtype=np.float64)[:, None], 2)
    assert np.allclose(d[2:-2], 1.0)                     # regression delta of a unit ramp


def test_mel_filterbank_matches_librosa():
    fb = Fe.mel_filterbank()
    assert fb.shape == (80, 513) and fb.dtype == np.float32 and np.all(fb.sum(1) > 0)
    import librosa
    ref = librosa.filters.mel(sr=16000, n_fft=1024, n_mels=80, fmin=0.0, fmax=8000.0)
    assert np.allclose(fb, ref, atol=1e-6)


def test_log_mel_definition():
    w = _wave(5)
    lm = Fe.log_mel(w)
    assert lm.shape == (10, 80) and lm.dtype == np.float32
    ref = np.log(np.maximum(Fe.mel_filterbank() @ Fe.stft_magnitude(w), 1e-5)).T
    assert np.allclose(lm, ref, atol=1e-5)
    # a centred STFT (reflect padding, periodic Hann): the same as torch.stft's first 2T frames
    st = torch.stft(torch.from_numpy(w).double(), 1024, 320, window=torch.hann_window(1024, dtype=torch.float64),
                    center=True, pad_mode="reflect", return_complex=True).abs().numpy()[:, :10]
    assert np.allclose(Fe.stft_magnitude(w), st, atol=1e-3)


def test_stft_magnitude_frames():
    # filterbank-free part (no librosa): 2T frames, a pure tone peaks in its bin
    n = 640 * 4
    w = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(n) / 16000)).astype(np.float32)
    mag = Fe.stft_magnitude(w)
    assert mag.shape == (513, 8)
    assert np.all(mag[:, 2:6].argmax(0) == 64)       # 1000 Hz * 1024 / 16000


def test_lip_input_crop_flip_normalise():
    lip = np.tile(np.arange(32, dtype=np.uint8)[None, None, :] * 8, (3, 32, 1))   # columns 0, 8, ..., 248
    x = Fe.lip_input(lip, train=False)
    assert x.shape == (3, 28, 28) and x.dtype == np.float32
    assert np.allclose(x[0, 0, 0], (16 / 255 - 0.421) / 0.165)                   # centre crop starts at 2
    gen = np.random.default_rng(0)
    flips, lefts = 0, set()
    for _ in range(40):
        y = Fe.lip_input(lip, train=True, gen=gen)
        raw = y * 0.165 + 0.421
        if raw[0, 0, 0] > raw[0, 0, -1]:
            flips += 1
        lefts.add(int(round(min(raw[0, 0, 0], raw[0, 0, -1]) * 255 / 8)))
    assert 10 < flips < 30 and len(lefts) > 2 and lefts <= set(range(5))
    y1 = Fe.lip_input(lip, True, torch.Generator().manual_seed(3))
    y2 = Fe.lip_input(lip, True, torch.Generator().manual_seed(3))
    assert np.array_equal(y1, y2)
    with pytest.raises(ValueError, match="uint8"):
        Fe.lip_input(lip.astype(np.float32))
    with pytest.raises(ValueError):
        Fe.lip_input(lip[:, :28])


def test_mix_at_snr_and_babble():
    rng = np.random.default_rng(0)
    clean = _wave(10)
    noise = rng.standard_normal(3000).astype(np.float32)              # shorter: tiled
    for snr in (10, 0, -5):
        mix = Fe.mix_at_snr(clean, noise, snr)
        assert mix.shape == clean.shape
        n = mix.astype(np.float64) - clean
        got = 10 * np.log10(np.mean(clean.astype(np.float64) ** 2) / np.mean(n ** 2))
        assert abs(got - snr) < 1e-3
    others = [rng.standard_normal(1000 * (i + 1)).astype(np.float32) for i in range(5)]
    b = Fe.babble(others, 4000, np.random.default_rng(1), n=3)
    assert b.shape == (4000,) and b.dtype == np.float32
    assert 2.0 < np.var(b) < 4.0                                       # sum of 3 unit-variance sources
    assert np.array_equal(b, Fe.babble(others, 4000, np.random.default_rng(1), n=3))
    with pytest.raises(ValueError):
        Fe.babble(others[:2], 100, rng, n=3)
    with pytest.raises(ValueError, match="silent"):
        Fe.mix_at_snr(clean, np.zeros(10, np.float32), 0)
