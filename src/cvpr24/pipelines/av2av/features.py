"""Input features of the AV2AV unit extractor (spec 2.1, 8.4) and the noise mixing used for augmentation.

Follows the official av2unit / AV-HuBERT feature code: `python_speech_features.logfbank`
(re-implemented here in numpy, identical output) (26 filters, 25 ms
window, 10 ms hop) on int16-scaled samples (the code reads wavs with scipy as int16), 4 frames stacked into a
104-d 25 Hz frame (the last group zero-padded), and `F.layer_norm(feats, feats.shape[1:])` on the (T, 104)
array, i.e. each frame normalised over its features ("Corrections from the authors' code"). Lip ROIs: /255,
centre crop (random crop + horizontal flip with p=0.5 in training), normalised with mean 0.421, std 0.165.

Deviations (embedded profile, spec 8.4): 32x32 lip ROIs cropped to 28 (the paper: 96 -> 88); MFCC k-means
targets for iteration 1 instead of mHuBERT units; a log-mel at 50 Hz (one frame per unit) for the renderer.

All functions take numpy and return numpy; audio is float32 mono 16 kHz in [-1, 1] of length 640 T.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from cvpr24.pipelines.av2av.common import (
    FBANK_HOP,
    LIP,
    LIP_CROP,
    LIP_MEAN,
    LIP_STD,
    MEL_HOP,
    N_MELS,
    SAMPLES_PER_FRAME,
    SR,
    STACK,
)

N_FBANK = 26
MEL_N_FFT = 1024
MEL_FLOOR = 1e-5


# ---- python_speech_features (v0.6) re-implemented in numpy: the package is not in the offline mirror. The
# algorithm (pre-emphasis 0.97, rectangular 400-sample frames every 160 samples with the tail zero-padded,
# 512-point power spectrum / 512, 26 triangular HTK-mel filters 0-8 kHz with FFT-bin edges, zero -> eps,
# log; MFCC = orthonormal DCT-II, 13 coefficients, lifter 22, c0 replaced by log frame energy; regression
# deltas with edge padding) is tested against the package when it is installed.
_EPS = np.finfo(float).eps
_NFFT = 512


def _hz2mel(hz):
    return 2595.0 * np.log10(1.0 + np.asarray(hz) / 700.0)


def _mel2hz(mel):
    return 700.0 * (10.0 ** (np.asarray(mel) / 2595.0) - 1.0)


def _psf_filterbank(nfilt: int = N_FBANK, nfft: int = _NFFT, sr: int = SR) -> np.ndarray:
    mel = np.linspace(_hz2mel(0.0), _hz2mel(sr / 2), nfilt + 2)
    bins = np.floor((nfft + 1) * _mel2hz(mel) / sr)
    fb = np.zeros((nfilt, nfft // 2 + 1))
    for j in range(nfilt):
        lo, mid, hi = int(bins[j]), int(bins[j + 1]), int(bins[j + 2])
        for i in range(lo, mid):
            fb[j, i] = (i - bins[j]) / (bins[j + 1] - bins[j])
        for i in range(mid, hi):
            fb[j, i] = (bins[j + 2] - i) / (bins[j + 2] - bins[j + 1])
    return fb


def _psf_fbank(signal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(frames, 26) filterbank energies and (frames,) frame energies, python_speech_features.fbank."""
    sig = np.append(signal[0], signal[1:] - 0.97 * signal[:-1])
    flen, fstep = int(round(0.025 * SR)), FBANK_HOP
    n = 1 if len(sig) <= flen else 1 + math.ceil((len(sig) - flen) / fstep)
    sig = np.concatenate([sig, np.zeros((n - 1) * fstep + flen - len(sig))])
    idx = np.arange(flen)[None, :] + fstep * np.arange(n)[:, None]
    pspec = np.abs(np.fft.rfft(sig[idx], _NFFT)) ** 2 / _NFFT
    energy = pspec.sum(1)
    energy = np.where(energy == 0, _EPS, energy)
    feat = pspec @ _psf_filterbank().T
    feat = np.where(feat == 0, _EPS, feat)
    return feat, energy


def _psf_delta(feat: np.ndarray, n: int = 2) -> np.ndarray:
    denom = 2 * sum(i * i for i in range(1, n + 1))
    padded = np.pad(feat, ((n, n), (0, 0)), mode="edge")
    w = np.arange(-n, n + 1, dtype=np.float64)
    t = len(feat)
    return np.stack([w @ padded[i:i + 2 * n + 1] for i in range(t)]) / denom


def _check_wave(wave: np.ndarray, name: str = "wave") -> np.ndarray:
    w = np.asarray(wave)
    if w.ndim != 1:
        raise ValueError(f"{name} must be 1-D mono audio, got shape {w.shape}; average the channels first")
    if not np.issubdtype(w.dtype, np.floating):
        raise ValueError(f"{name} must be float in [-1, 1] (got {w.dtype}); divide int16 audio by 32768")
    if w.size == 0 or not np.all(np.isfinite(w)):
        raise ValueError(f"{name} is empty or holds NaN/inf values")
    return w.astype(np.float32, copy=False)


def _n_video_frames(wave: np.ndarray) -> int:
    n = len(wave)
    if n % SAMPLES_PER_FRAME:
        raise ValueError(
            f"audio length {n} is not a multiple of {SAMPLES_PER_FRAME} samples (one 25 fps video frame); "
            "pad the waveform to a multiple of 640 samples"
        )
    return n // SAMPLES_PER_FRAME


def _fit_rows(x: np.ndarray, n: int, zeros: bool = False) -> np.ndarray:
    """Trim, or pad with zero rows / copies of the last row, to exactly n rows."""
    if len(x) >= n:
        return x[:n]
    if zeros or not len(x):
        pad = np.zeros((n - len(x), x.shape[1]), x.dtype)
    else:
        pad = np.repeat(x[-1:], n - len(x), axis=0)
    return np.concatenate([x, pad], axis=0)


def logfbank(wave: np.ndarray) -> np.ndarray:
    """(4T, 26) float32 log mel filterbank at 100 Hz on int16-scaled samples (python_speech_features)."""
    w = _check_wave(wave)
    t = _n_video_frames(w)
    # The official code reads int16 samples with scipy; scaling by 32768 reproduces those values.
    fb = np.log(_psf_fbank(w.astype(np.float64) * 32768.0)[0]).astype(np.float32)
    # 640T samples give 4T-1 frames; the official stacking zero-pads the last group, so pad with zeros.
    return _fit_rows(fb, STACK * t, zeros=True)


def stack_frames(feats: np.ndarray, k: int = STACK) -> np.ndarray:
    """(n, D) -> (ceil(n/k), D*k): k consecutive frames concatenated, the last group zero-padded."""
    f = np.asarray(feats)
    if f.ndim != 2:
        raise ValueError(f"feats must be (frames, dims), got shape {f.shape}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    n, d = f.shape
    groups = math.ceil(n / k)
    pad = groups * k - n
    if pad:
        f = np.concatenate([f, np.zeros((pad, d), f.dtype)], axis=0)
    return f.reshape(groups, k * d)


def normalize_frames(x: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    """Per-frame layer norm over the feature axis (the code's F.layer_norm(x, x.shape[1:]) on (T, 104))."""
    x = np.asarray(x, dtype=np.float32)
    mean = x.mean(axis=-1, keepdims=True)
    var = x.var(axis=-1, keepdims=True)
    return ((x - mean) / np.sqrt(var + eps)).astype(np.float32)


def audio_input(wave: np.ndarray) -> np.ndarray:
    """(T, 104) float32: logfbank -> stack 4 -> per-frame layer norm (the unit model's audio input)."""
    return normalize_frames(stack_frames(logfbank(wave), STACK))


def mfcc_targets(wave: np.ndarray) -> np.ndarray:
    """(2T, 39) float32: 13 MFCC + delta + delta-delta at 100 Hz, averaged in pairs to 50 Hz."""
    w = _check_wave(wave)
    t = _n_video_frames(w)
    from scipy.fft import dct

    feat, energy = _psf_fbank(w.astype(np.float64) * 32768.0)
    m = dct(np.log(feat), type=2, axis=1, norm="ortho")[:, :13]
    m = m * (1 + 11.0 * np.sin(np.pi * np.arange(13) / 22.0))      # lifter 22
    m[:, 0] = np.log(energy)
    d1 = _psf_delta(m, 2)
    d2 = _psf_delta(d1, 2)
    f = _fit_rows(np.concatenate([m, d1, d2], axis=1), STACK * t)
    return f.reshape(2 * t, 2, 39).mean(axis=1).astype(np.float32)


def _slaney_hz2mel(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, np.float64)
    lin = f / (200.0 / 3)
    return np.where(f >= 1000.0, 15.0 + np.log(np.maximum(f, 1e-10) / 1000.0) / (np.log(6.4) / 27.0), lin)


def _slaney_mel2hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, np.float64)
    return np.where(m >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (m - 15.0)), m * (200.0 / 3))


def mel_filterbank(n_mels: int = N_MELS) -> np.ndarray:
    """(n_mels, 513) float32 mel filterbank of librosa.filters.mel(sr=16000, n_fft=1024, fmin=0, fmax=8000)
    (Slaney mel scale and area normalisation), computed in numpy (tested against librosa when installed)."""
    mel_f = _slaney_mel2hz(np.linspace(_slaney_hz2mel(0.0), _slaney_hz2mel(8000.0), n_mels + 2))
    fft_f = np.linspace(0, SR / 2, 1 + MEL_N_FFT // 2)
    fdiff = np.diff(mel_f)
    ramps = mel_f[:, None] - fft_f[None, :]
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    w = np.maximum(0.0, np.minimum(lower, upper))
    w *= (2.0 / (mel_f[2:n_mels + 2] - mel_f[:n_mels]))[:, None]
    return w.astype(np.float32)


def stft_magnitude(wave: np.ndarray) -> np.ndarray:
    """(513, 2T) |STFT| with n_fft 1024, hop 320, Hann window, centred (reflect padding), last frame dropped."""
    w = _check_wave(wave)
    t = _n_video_frames(w)
    half = MEL_N_FFT // 2
    padded = np.pad(w.astype(np.float64), (half, half), mode="reflect")
    n_frames = 2 * t
    idx = np.arange(MEL_N_FFT)[None, :] + MEL_HOP * np.arange(n_frames)[:, None]
    window = np.hanning(MEL_N_FFT + 1)[:-1]  # periodic Hann, as librosa / torch.stft
    spec = np.abs(np.fft.rfft(padded[idx] * window, axis=1))
    return spec.T.astype(np.float32)


def log_mel(wave: np.ndarray, n_mels: int = N_MELS) -> np.ndarray:
    """(2T, n_mels) float32: natural log of max(mel_fb @ |STFT|, 1e-5) at hop 320 (one frame per unit).

    Magnitude (not power) spectrum, as HiFi-GAN's mel; invert with exp() then the mel_filterbank()."""
    mag = stft_magnitude(wave)
    mel = mel_filterbank(n_mels) @ mag
    return np.log(np.maximum(mel, MEL_FLOOR)).T.astype(np.float32)


def _randint(gen, high: int) -> int:
    """A draw in [0, high) from a numpy Generator or a torch.Generator."""
    if isinstance(gen, torch.Generator):
        return int(torch.randint(0, high, (1,), generator=gen).item())
    if isinstance(gen, np.random.Generator):
        return int(gen.integers(0, high))
    raise ValueError("gen must be a numpy Generator or a torch.Generator when train=True")


def lip_input(lip: np.ndarray, train: bool = False, gen=None) -> np.ndarray:
    """(T, 32, 32) uint8 lip ROIs -> (T, 28, 28) float32: /255, crop 28 (centre; random + flip p=0.5 when
    `train`, drawn from `gen`), normalised with AV-HuBERT's mean 0.421, std 0.165."""
    x = np.asarray(lip)
    if x.ndim != 3 or x.shape[1:] != (LIP, LIP):
        raise ValueError(f"lip must be (T, {LIP}, {LIP}) grayscale frames, got shape {x.shape}")
    if x.dtype != np.uint8:
        raise ValueError(f"lip must be uint8 (0..255), got {x.dtype}")
    margin = LIP - LIP_CROP
    if train:
        top, left = _randint(gen, margin + 1), _randint(gen, margin + 1)
        flip = _randint(gen, 2) == 1
    else:
        top = left = margin // 2
        flip = False
    crop = x[:, top:top + LIP_CROP, left:left + LIP_CROP].astype(np.float32) / 255.0
    if flip:
        crop = crop[:, :, ::-1]
    return np.ascontiguousarray((crop - LIP_MEAN) / LIP_STD, dtype=np.float32)


def _fit_length(x: np.ndarray, length: int, offset: int = 0) -> np.ndarray:
    """Tile x (from `offset`) and crop to `length` samples."""
    reps = math.ceil((length + offset) / len(x))
    return np.tile(x, reps)[offset:offset + length]


def mix_at_snr(clean: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """clean + noise scaled so that 10 log10(P_clean / P_noise) = snr_db; noise tiled/cropped to the length.

    Not clipped (the features scale floats, so values slightly outside [-1, 1] are harmless)."""
    c = _check_wave(clean, "clean")
    n = _check_wave(noise, "noise")
    n = _fit_length(n, len(c))
    pc = float(np.mean(c.astype(np.float64) ** 2))
    pn = float(np.mean(n.astype(np.float64) ** 2))
    if pn <= 0:
        raise ValueError("noise is silent (zero power); cannot scale it to an SNR")
    scale = math.sqrt(pc / (pn * 10.0 ** (snr_db / 10.0))) if pc > 0 else 0.0
    return (c + scale * n).astype(np.float32)


def babble(others: Sequence[np.ndarray], length: int, rng: np.random.Generator, n: int = 3) -> np.ndarray:
    """Babble noise: sum of n distinct other utterances (drawn with `rng`), each tiled from a random offset
    and cropped to `length` samples."""
    if len(others) < n:
        raise ValueError(f"babble needs at least n={n} other utterances, got {len(others)}")
    if length < 1:
        raise ValueError(f"length must be >= 1, got {length}")
    picks = rng.choice(len(others), size=n, replace=False)
    out = np.zeros(length, np.float64)
    for i in picks:
        o = _check_wave(others[int(i)], "babble source")
        out += _fit_length(o, length, int(rng.integers(0, len(o))))
    return out.astype(np.float32)
