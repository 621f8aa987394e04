"""MASH data: embedded clean crops, the two synthetic noise families, and the real-dataset readers.

Embedded default (spec Sec. 8), all offline:

* :func:`load_clean_crop` cuts a fixed crop out of an image that scikit-image bundles in its wheel
  (:data:`BUNDLED_IMAGES`; nothing is fetched over the network).
* Family A, :func:`correlated_gaussian_noise` / :func:`add_correlated_noise`: the paper's analysis noise
  (Eq. 2), a stationary Gaussian field with a cone-shaped autocovariance, synthesised by FFT.
  :func:`correlated_gaussian_psd` gives its power spectral density in BM3D's ``sigma_psd`` convention.
* Family B, :func:`camera_pipeline_noise`: a simulated camera pipeline (Bayer mosaic, signal-dependent
  raw noise, bilinear demosaicking, in-camera denoise + sharpening, sRGB gamma, 8-bit quantisation), the
  stand-in for real sRGB noise.
* :func:`noise_psd`: a smoothed periodogram of a noise realisation (the "oracle PSD" for BM3D).

Full profile (spec Sec. 3 / 10): :func:`read_sidd_validation`, :func:`read_sidd_benchmark`,
:func:`read_fmdd` (+ :func:`flatten_fmdd_release`), :func:`read_polyu`. Each returns a list of
``(image_id, noisy uint8 HxWxC, clean uint8 HxWxC or None)``.

Conventions: images are H x W x C numpy arrays (C = 1 for grey, the channel axis is kept); clean images
are uint8, noisy images float32 in 0-255 grey levels. Every function is pure; randomness comes only from
the ``numpy.random.Generator`` passed in.

PSD convention (BM3D's ``sigma_psd``, checked in ``bm3d/__init__.py`` / ``bm4d/__init__.py`` of bm3d 4.0.3):
a PSD is an H x W array equal to ``E|FFT2(n)|^2`` of the noise with the *unnormalised* DFT, so white noise
of std ``sigma`` has the constant PSD ``H * W * sigma**2`` (bm4d turns a scalar sigma into exactly
``ones * z.size * sigma**2``). PSDs returned here are in 0-255 units; the BM3D wrapper rescales by 1/255**2.
"""

from __future__ import annotations

import functools
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from cvpr24.core.ingest import MissingDatasetError, missing_dataset

# ------------------------------------------------------------------------------------------- clean crops
#: scikit-image images whose files ship inside the wheel (verified offline with scikit-image 0.26.0).
#: name -> True for grey images, False for RGB. ``stereo_motorcycle`` is the left view.
#: Deliberately absent (fetched over the network by pooch): cells3d, brain, kidney, lily, eagle, vortex, skin.
BUNDLED_IMAGES: dict[str, bool] = {
    "astronaut": False,
    "coffee": False,
    "chelsea": False,
    "rocket": False,
    "immunohistochemistry": False,
    "stereo_motorcycle": False,
    "hubble_deep_field": False,
    "camera": True,
    "moon": True,
    "brick": True,
    "grass": True,
    "gravel": True,
    "coins": True,
    "cell": True,
}

_RGB_TO_GREY = np.array([0.2125, 0.7154, 0.0721])  # skimage.color.rgb2gray weights (ITU-R BT.709)


@functools.cache
def _bundled_image(name: str) -> np.ndarray:
    """The full bundled image as a read-only uint8 H x W x C array (cached: the files never change)."""
    import skimage.data

    img = getattr(skimage.data, name)()
    if name == "stereo_motorcycle":
        img = img[0]  # (left, right, disparity) -> left view
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise ValueError(f"bundled image {name!r} has dtype {img.dtype}, expected uint8")
    if img.ndim == 2:
        img = img[..., None]
    img = np.ascontiguousarray(img[..., :3])
    img.setflags(write=False)
    return img


def load_clean_crop(name: str, top: int, left: int, size: int, grey: bool | None = None) -> np.ndarray:
    """A ``size`` x ``size`` crop ``image[top:top+size, left:left+size]`` of a bundled scikit-image image.

    Args:
        name: one of :data:`BUNDLED_IMAGES`.
        top, left: upper-left corner of the crop (pixels, >= 0).
        size: side of the square crop (> 0).
        grey: ``None`` keeps the image's own colour mode; ``True`` converts RGB to grey (BT.709 luma, the
            weights of ``skimage.color.rgb2gray``, rounded to uint8); ``False`` repeats a grey image over 3
            channels.

    Returns:
        uint8 array of shape (size, size, C), C = 1 (grey) or 3 (RGB).

    Raises:
        ValueError: unknown name (the message lists the allowed ones) or a crop that falls outside the image
            (the message names the image and its shape).
    """
    if name not in BUNDLED_IMAGES:
        raise ValueError(
            f"unknown clean image {name!r}: allowed (bundled with scikit-image, load offline) are "
            f"{sorted(BUNDLED_IMAGES)}"
        )
    top, left, size = int(top), int(left), int(size)
    img = _bundled_image(name)
    h, w = img.shape[:2]
    if size <= 0 or top < 0 or left < 0 or top + size > h or left + size > w:
        raise ValueError(
            f"crop [{top}:{top + size}, {left}:{left + size}] falls outside image {name!r} of shape {img.shape} "
            f"(H={h}, W={w}); choose top+size <= {h} and left+size <= {w}"
        )
    crop = img[top : top + size, left : left + size].astype(np.float64)
    if grey is True and crop.shape[2] == 3:
        crop = np.clip(np.round(crop @ _RGB_TO_GREY), 0, 255)[..., None]
    elif grey is False and crop.shape[2] == 1:
        crop = np.repeat(crop, 3, axis=2)
    return np.ascontiguousarray(crop.astype(np.uint8))


# ------------------------------------------------------------------------ family A: correlated Gaussian
def _check_corr_params(sigma: float, beta: float, k: float) -> None:
    if not np.isfinite(sigma) or sigma < 0:
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(
            f"beta must lie in [0, 1] (correlation of the nearest neighbours is 2/3*beta), got {beta}"
        )
    if k < 0:
        raise ValueError(f"k (correlation radius in pixels) must be >= 0, got {k}")


def correlated_gaussian_autocov(height: int, width: int, sigma: float, beta: float, k: float) -> np.ndarray:
    """Eq. 2's autocovariance on the periodic H x W lag grid (lag (0, 0) at index [0, 0]).

    ``r(d) = sigma^2`` at d = 0, ``beta * sigma^2 * (k - d) / k`` for ``0 < d <= k``, else 0, where d is the
    Euclidean length of the shortest periodic lag.
    """
    _check_corr_params(sigma, beta, k)
    iy, ix = np.arange(height), np.arange(width)
    dy = np.minimum(iy, height - iy).astype(np.float64)
    dx = np.minimum(ix, width - ix).astype(np.float64)
    d = np.hypot(dy[:, None], dx[None, :])
    r = np.zeros((height, width), dtype=np.float64)
    if k > 0:
        near = (d > 0) & (d <= k)
        r[near] = beta * (k - d[near]) / k
    r[0, 0] = 1.0
    return float(sigma) ** 2 * r


def _unit_spectrum(height: int, width: int, beta: float, k: float) -> np.ndarray:
    """Per-frequency variance ``S = max(Re FFT2(r), 0)`` of a unit-variance field, renormalised to mean 1.

    For beta = 1 the cone autocovariance is not positive definite on the grid (the minimum normalised
    spectrum is about -0.22 at 128x128); negative values are clipped to 0 (spec 8.2.A) and the spectrum is
    rescaled so that the field's variance (the spectrum's mean) is exactly 1 again.
    """
    r = correlated_gaussian_autocov(height, width, 1.0, beta, k)
    s = np.clip(np.fft.fft2(r).real, 0.0, None)
    return s / s.mean()


def correlated_gaussian_psd(height: int, width: int, sigma: float, beta: float, k: float) -> np.ndarray:
    """The PSD of :func:`correlated_gaussian_noise` in BM3D's ``sigma_psd`` convention, 0-255 units.

    Returns a float64 (height, width) array ``H * W * sigma^2 * S`` where ``S`` is the clipped, renormalised
    spectrum of Eq. 2's autocovariance (mean of S = 1), so ``beta = 0`` gives the constant
    ``H * W * sigma^2`` that BM3D uses for white noise of std ``sigma``. Divide by 255**2 for [0, 1] images.
    """
    return height * width * float(sigma) ** 2 * _unit_spectrum(height, width, beta, k)


def correlated_gaussian_noise(
    shape: tuple[int, int, int], sigma: float, beta: float, k: float, rng: np.random.Generator
) -> np.ndarray:
    """Zero-mean stationary Gaussian noise with Eq. 2's autocovariance, independent across channels.

    FFT synthesis on the periodic lag grid: ``n = IFFT2(sqrt(S) * FFT2(w))`` with white ``w ~ N(0, 1)``
    and ``S`` the clipped spectrum (see :func:`correlated_gaussian_psd`), then each channel is rescaled to
    an empirical standard deviation of exactly ``sigma``. Expected neighbour correlations: lag 1
    ``2/3*beta``, lag 2 ``1/3*beta``, lag >= k+1 zero (k = 3 -> lag 4 is 0).

    Args:
        shape: (H, W, C).
        sigma: noise std in 0-255 grey levels.
        beta: correlation strength in [0, 1] (0 = i.i.d.).
        k: correlation radius in pixels (paper: 3).
        rng: source of randomness.

    Returns:
        float32 array of the given shape.
    """
    if len(shape) != 3:
        raise ValueError(f"shape must be (H, W, C), got {shape}")
    h, w, c = (int(v) for v in shape)
    _check_corr_params(sigma, beta, k)
    amp = np.sqrt(_unit_spectrum(h, w, beta, k))
    out = np.empty((h, w, c), dtype=np.float64)
    for ch in range(c):
        white = rng.standard_normal((h, w))
        field = np.fft.ifft2(amp * np.fft.fft2(white)).real
        field -= field.mean()
        std = field.std()
        out[..., ch] = field * (float(sigma) / std) if std > 0 else 0.0
    return out.astype(np.float32)


def add_correlated_noise(
    clean_uint8: np.ndarray, sigma: float, beta: float, k: float, rng: np.random.Generator, clip: bool
) -> np.ndarray:
    """``clean + correlated_gaussian_noise`` in 0-255 units, float32, optionally clipped to [0, 255]."""
    clean = _as_hwc(clean_uint8, "clean_uint8")
    noisy = clean.astype(np.float32) + correlated_gaussian_noise(clean.shape, sigma, beta, k, rng)
    if clip:
        noisy = np.clip(noisy, 0.0, 255.0)
    return noisy.astype(np.float32)


def noise_psd(noise: np.ndarray, max_lag: int = 8) -> np.ndarray:
    """A smoothed PSD estimate of one noise realisation, BM3D ``sigma_psd`` convention, 0-255 units.

    Per channel: remove the mean, take the biased circular autocovariance ``IFFT2(|FFT2(n)|^2) / (HW)``,
    keep lags with ``|dy|, |dx| < max_lag`` under a separable Bartlett (triangular) window, and return
    ``H * W * Re FFT2(windowed autocovariance)``. The triangular window's DFT is non-negative, so the
    estimate is a smoothed periodogram and stays >= 0 (clipped for rounding). White noise of std sigma
    gives approximately the constant ``H * W * sigma^2``.

    Args:
        noise: (H, W) or (H, W, C) noise, e.g. ``noisy - clean``.
        max_lag: half-width of the lag window (at most H//2 and W//2).

    Returns:
        float64 (H, W) for one channel, (H, W, C) for several.
    """
    n = np.asarray(noise, dtype=np.float64)
    if n.ndim == 2:
        n = n[..., None]
    if n.ndim != 3:
        raise ValueError(f"noise must be HxW or HxWxC, got shape {n.shape}")
    h, w, c = n.shape
    lag = int(max(1, min(max_lag, h // 2, w // 2)))

    def tri(size: int) -> np.ndarray:
        idx = np.arange(size)
        d = np.minimum(idx, size - idx)
        return np.clip(1.0 - d / lag, 0.0, None)

    window = tri(h)[:, None] * tri(w)[None, :]
    out = np.empty((h, w, c), dtype=np.float64)
    for ch in range(c):
        x = n[..., ch] - n[..., ch].mean()
        spec = np.abs(np.fft.fft2(x)) ** 2
        acov = np.fft.ifft2(spec).real / (h * w)
        out[..., ch] = np.clip(h * w * np.fft.fft2(acov * window).real, 0.0, None)
    return out[..., 0] if c == 1 else out


# --------------------------------------------------------------------- family B: camera-pipeline noise
CAMERA_PRESETS: tuple[str, ...] = ("pipeline_iid", "pipeline_demosaic", "pipeline_full")

#: Defaults and the spec's ranges (Sec. 8.2.B). Scalars named ``shot``, ``read``, ``blur_sigma``,
#: ``sharpen_amount`` fix a parameter; otherwise it is drawn uniformly from ``*_range`` with the rng.
CAMERA_DEFAULTS: dict[str, Any] = {
    "sigma": 10.0,  # pipeline_iid: std of the i.i.d. Gaussian noise added in sRGB (0-255)
    "wb_gains": (2.0, 1.0, 1.6),  # R, G, B white-balance gains (raw = linear / gain)
    "shot_range": (0.004, 0.012),  # a: raw variance a*raw + b
    "read_range": (2e-5, 2e-4),  # b
    "blur_range": (0.4, 0.9),  # in-camera denoise: Gaussian blur sigma_d (px)
    "sharpen_range": (0.3, 0.8),  # unsharp-mask amount
    "sharpen_radius": 1.0,  # unsharp-mask Gaussian radius (px)
    "quantize": True,  # round to integers (8-bit) and clip to [0, 255]
    "jpeg_quality": None,  # e.g. 95 to add a JPEG round trip (needs quantize); off by default
    "signal_path": "ideal",  # "ideal": only the noise goes through mosaic/demosaic/filters; "processed": all
    "output": "srgb",  # "srgb" (gamma, the realistic output) or "linear" (skip the gamma; diagnostics)
}
_CAMERA_KEYS = set(CAMERA_DEFAULTS) | {"shot", "read", "blur_sigma", "sharpen_amount", "preset"}

# Bilinear demosaicking kernels (spec 8.2.B step 4) applied to zero-filled planes.
_K_G = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]], dtype=np.float64) / 4.0
_K_RB = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]], dtype=np.float64) / 4.0


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 sRGB decoding of values in [0, 1]."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 sRGB encoding of linear values in [0, 1] (clipped to [0, 1] first)."""
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1.0 / 2.4) - 0.055)


def draw_camera_params(preset: str, rng: np.random.Generator, params: dict | None = None) -> dict[str, Any]:
    """Complete camera-pipeline parameters: defaults, user overrides, then random draws for the rest.

    Draw order (fixed, so a seed reproduces): shot ``a``, read ``b`` (demosaic/full), then blur sigma and
    sharpening amount (full). A parameter given as a scalar in ``params`` is not drawn.
    """
    if preset not in CAMERA_PRESETS:
        raise ValueError(f"unknown camera-pipeline preset {preset!r}; choose one of {CAMERA_PRESETS}")
    params = dict(params or {})
    unknown = set(params) - _CAMERA_KEYS
    if unknown:
        raise ValueError(
            f"unknown camera-pipeline parameter(s) {sorted(unknown)}; known: {sorted(_CAMERA_KEYS)}"
        )
    if "preset" in params and params["preset"] != preset:
        raise ValueError(f"params were drawn for preset {params['preset']!r}, not {preset!r}")
    p: dict[str, Any] = {**CAMERA_DEFAULTS, **params, "preset": preset}
    if p["signal_path"] not in ("ideal", "processed"):
        raise ValueError(f"signal_path must be 'ideal' or 'processed', got {p['signal_path']!r}")
    if p["output"] not in ("srgb", "linear"):
        raise ValueError(f"output must be 'srgb' or 'linear', got {p['output']!r}")
    if preset != "pipeline_iid":
        for key, rkey in (("shot", "shot_range"), ("read", "read_range")):
            if key not in params:
                p[key] = float(rng.uniform(*p[rkey]))
    if preset == "pipeline_full":
        for key, rkey in (("blur_sigma", "blur_range"), ("sharpen_amount", "sharpen_range")):
            if key not in params:
                p[key] = float(rng.uniform(*p[rkey]))
    return p


def _bayer_masks(h: int, w: int, channels: int) -> list[np.ndarray]:
    """RGGB sampling masks (R at even row/even col, B at odd/odd, G elsewhere); grey: the G sites only."""
    yy, xx = np.mgrid[0:h, 0:w]
    g = ((yy + xx) % 2 == 1).astype(np.float64)
    if channels == 1:
        return [g]
    r = ((yy % 2 == 0) & (xx % 2 == 0)).astype(np.float64)
    b = ((yy % 2 == 1) & (xx % 2 == 1)).astype(np.float64)
    return [r, g, b]


def _process_raw(
    mosaic: np.ndarray, masks: list[np.ndarray], gains: np.ndarray, p: dict[str, Any]
) -> np.ndarray:
    """The pipeline's linear steps on a raw mosaic: demosaic (4), WB gains and, for pipeline_full, denoise
    blur + unsharp mask (5). Returns linear RGB (or grey) H x W x C."""
    channels = len(masks)
    out = np.empty(mosaic.shape + (channels,), dtype=np.float64)
    for ch, mask in enumerate(masks):
        kernel = _K_G if (channels == 1 or ch == 1) else _K_RB
        # 'mirror' reflection keeps the 2-periodic Bayer parity at the border ('reflect' would flip it)
        out[..., ch] = ndimage.convolve(mosaic * mask, kernel, mode="mirror") * gains[ch]
    if p["preset"] == "pipeline_full":
        for ch in range(channels):
            x = ndimage.gaussian_filter(out[..., ch], float(p["blur_sigma"]), mode="reflect")
            low = ndimage.gaussian_filter(x, float(p["sharpen_radius"]), mode="reflect")
            out[..., ch] = x + float(p["sharpen_amount"]) * (x - low)
    return out


def _finish(values_255: np.ndarray, p: dict[str, Any]) -> np.ndarray:
    """Step 6 tail: quantise to 8 bit (+ optional JPEG round trip), float32 output."""
    out = np.asarray(values_255, dtype=np.float64)
    if p["quantize"]:
        out = np.clip(np.round(out), 0, 255)
        if p["jpeg_quality"] is not None:
            out = _jpeg_round_trip(out.astype(np.uint8), int(p["jpeg_quality"])).astype(np.float64)
    elif p["jpeg_quality"] is not None:
        raise ValueError("jpeg_quality needs quantize=True (JPEG stores 8-bit values)")
    return out.astype(np.float32)


def _jpeg_round_trip(img: np.ndarray, quality: int) -> np.ndarray:
    import io

    from PIL import Image

    pil = Image.fromarray(img[..., 0] if img.shape[2] == 1 else img)
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", quality=quality)
    buf.seek(0)
    back = np.asarray(Image.open(buf).convert("L" if img.shape[2] == 1 else "RGB"))
    return back[..., None] if back.ndim == 2 else back


def _camera_simulate(clean: np.ndarray, p: dict[str, Any], rng: np.random.Generator | None) -> np.ndarray:
    """Run the pipeline; ``rng=None`` means zero noise (the clean reference through the same pipeline)."""
    preset = p["preset"]
    x = clean.astype(np.float64)
    if preset == "pipeline_iid":
        noise = 0.0 if rng is None else rng.normal(0.0, float(p["sigma"]), size=x.shape)
        return _finish(x + noise, p)
    h, w, c = x.shape
    if c not in (1, 3):
        raise ValueError(f"camera pipeline needs 1 (grey) or 3 (RGB) channels, got {c}")
    lin = srgb_to_linear(x / 255.0)  # step 1
    gains = (
        np.asarray(p["wb_gains"], dtype=np.float64)[[1]] if c == 1 else np.asarray(p["wb_gains"], np.float64)
    )
    masks = _bayer_masks(h, w, c)  # step 2: RGGB mosaic (grey: G sites)
    raw = sum(lin[..., ch] / gains[ch] * masks[ch] for ch in range(c))
    if rng is None:
        raw_noisy = raw
    else:  # step 3: heteroscedastic Gaussian raw noise, clipped to the sensor range
        var = float(p["shot"]) * raw + float(p["read"])
        raw_noisy = np.clip(raw + rng.standard_normal(raw.shape) * np.sqrt(var), 0.0, 1.0)
    if p["signal_path"] == "ideal":
        # steps 2, 4, 5 are linear: pipeline(raw + n) = pipeline(raw) + pipeline(n). Keep the noise term and
        # replace pipeline(raw) by the artefact-free signal, so noisy - clean is noise only.
        lin_noisy = lin + _process_raw(raw_noisy - raw, masks, gains, p)
    else:
        lin_noisy = _process_raw(raw_noisy, masks, gains, p)
    if p["output"] == "linear":
        return _finish(np.clip(lin_noisy, 0.0, 1.0) * 255.0, p)
    return _finish(linear_to_srgb(lin_noisy) * 255.0, p)  # step 6


def camera_pipeline(
    clean_uint8: np.ndarray, preset: str, rng: np.random.Generator, params: dict | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """:func:`camera_pipeline_noise` that also returns the complete parameters it used (for
    :func:`camera_pipeline_clean` and for logging)."""
    clean = _as_hwc(clean_uint8, "clean_uint8")
    p = draw_camera_params(preset, rng, params)
    return _camera_simulate(clean, p, rng), p


def camera_pipeline_noise(
    clean_uint8: np.ndarray, preset: str, rng: np.random.Generator, params: dict | None = None
) -> np.ndarray:
    """Simulated camera-pipeline sRGB noise (spec 8.2.B), float32 in 0-255.

    Presets (increasing spatial correlation):

    * ``pipeline_iid``: ``clean + N(0, sigma)`` directly in sRGB (``params["sigma"]``, default 10).
    * ``pipeline_demosaic``: steps 1-4, 6: sRGB -> linear, / WB gains (R 2.0, G 1.0, B 1.6), RGGB mosaic,
      raw noise ``N(0, a*raw + b)`` with ``a ~ U[0.004, 0.012]``, ``b ~ U[2e-5, 2e-4]`` (clipped to
      [0, 1]), bilinear demosaic, WB gains back, sRGB gamma, 8-bit quantisation.
    * ``pipeline_full``: steps 1-6, adding in-camera denoise (Gaussian blur ``sigma_d ~ U[0.4, 0.9]``) and
      unsharp-mask sharpening (``amount ~ U[0.3, 0.8]``, radius 1 px) after demosaicking.

    Grey images take the G-channel path: raw noise on all pixels, G sites of the RGGB pattern kept (a
    checkerboard), the 3x3 G interpolation kernel fills the others, then the same filters, so the noise is
    correlated without colour mixing.

    Clean-reference convention (``params["signal_path"]``): with the default ``"ideal"`` the linear steps
    (mosaic, demosaic, gains, blur, sharpening) are applied to the raw *noise* only and the signal keeps its
    exact value, so ``noisy - clean_crop`` is pure (processed, signal-dependent, correlated) noise and the
    clean crop is the reference; the noise statistics are the same as the literal pipeline's, only the
    deterministic demosaic/blur artefacts of the signal are dropped. ``"processed"`` runs the literal
    pipeline on signal + noise; its matching reference is :func:`camera_pipeline_clean` with the same
    parameters (use :func:`camera_pipeline` to get them).

    Note on signal dependence: the raw variance grows with the raw level, but the sRGB gamma compresses
    bright values, so with these ranges the *sRGB* noise std decreases with brightness (read noise dominates
    in the dark, where the gamma slope is steepest). ``params["output"] = "linear"`` skips the gamma and shows
    the raw-domain growth.
    """
    return camera_pipeline(clean_uint8, preset, rng, params)[0]


def camera_pipeline_clean(clean_uint8: np.ndarray, preset: str, params: dict | None = None) -> np.ndarray:
    """The clean reference for :func:`camera_pipeline_noise`: the same pipeline with zero noise, float32.

    ``params`` must fix every random parameter of the preset (pass the dict returned by
    :func:`camera_pipeline`). With ``signal_path="ideal"`` (default) and sRGB output this is the clean crop
    itself (up to float rounding, then quantised when ``quantize``), i.e. the clean crop is the reference.
    """
    clean = _as_hwc(clean_uint8, "clean_uint8")
    params = dict(params or {})
    needed = {
        "pipeline_demosaic": ("shot", "read"),
        "pipeline_full": ("shot", "read", "blur_sigma", "sharpen_amount"),
    }
    missing = [k for k in needed.get(preset, ()) if k not in params]
    if missing:
        raise ValueError(
            f"camera_pipeline_clean needs the drawn parameters {missing} for preset {preset!r}; pass the "
            f"dict returned by camera_pipeline()"
        )
    p = draw_camera_params(preset, np.random.default_rng(0), params)
    return _camera_simulate(clean, p, None)


def _as_hwc(img: np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise ValueError(f"{what} must be H x W x C (or H x W), got shape {arr.shape}")
    return arr


# ------------------------------------------------------------------------------------ real datasets
SIDD_SOURCE = (
    "download the sRGB blocks from the SIDD website (Smartphone Image Denoising Dataset, "
    "https://abdokamel.github.io/sidd/ , formerly www.eecs.yorku.ca/~kamel/sidd/): 'SIDD Validation Data and "
    "Ground Truth' sRGB blocks (ValidationNoisyBlocksSrgb.mat, ValidationGtBlocksSrgb.mat) and 'SIDD Benchmark "
    "Data' sRGB blocks (BenchmarkNoisyBlocksSrgb.mat)"
)
FMDD_SOURCE = (
    "download the Fluorescence Microscopy Denoising Dataset (FMDD, Zhang et al. CVPR 2019) release linked from "
    "https://github.com/yinhaoz/denoising-fluorescence and flatten it with "
    "cvpr24.pipelines.mash.data.flatten_fmdd_release(release_root, root)"
)
POLYU_SOURCE = (
    "download the PolyU real-world noisy image dataset (Xu et al. 2018, "
    "https://github.com/csjunxu/PolyU-Real-World-Noisy-Images-Dataset) and copy its 'CroppedImages' files "
    "(<name>_real.JPG noisy, <name>_mean.JPG ground truth)"
)
_IMAGE_EXTS = {".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp"}


def _missing(path: Path, source: str, root: Path, example: str) -> MissingDatasetError:
    return missing_dataset("the dataset file", path, f"to get it, {source}; put the files in {root} (the root "
                           f"directory configured for this dataset, e.g. {example}).")


def _load_mat_var(path: Path, var: str, source: str, root: Path) -> np.ndarray:
    """Read one variable of a MATLAB .mat file with scipy.io.loadmat, with errors that name the file."""
    import scipy.io

    if not path.is_file():
        raise _missing(path, source, root, "data/mash/01_raw/sidd/")
    try:
        contents = scipy.io.loadmat(str(path), variable_names=[var])
    except NotImplementedError as exc:  # MATLAB v7.3 (HDF5)
        raise ValueError(
            f"{path} is a MATLAB v7.3 (HDF5) file, which scipy.io.loadmat cannot read ({exc}); the official SIDD "
            f"sRGB blocks are v5 files: re-download it ({source})"
        ) from exc
    except Exception as exc:  # any parse failure means a corrupt or truncated file
        raise ValueError(
            f"{path} is not a valid MATLAB .mat file ({type(exc).__name__}: {exc}); it is probably corrupt or "
            f"truncated: re-download it ({source})"
        ) from exc
    if var not in contents:
        try:
            found = [name for name, _, _ in scipy.io.whosmat(str(path))]
        except Exception:  # listing the variables is only for the message
            found = []
        raise ValueError(f"{path} has no variable {var!r} (found {found}); re-download it ({source})")
    return contents[var]


def _check_sidd_array(arr: np.ndarray, path: Path) -> None:
    problems = []
    if arr.ndim != 5:
        problems.append(f"expected 5 dimensions (N, K, H, W, 3), got shape {arr.shape}")
    elif arr.shape[-1] != 3:
        problems.append(f"last dimension must be 3 (RGB), got shape {arr.shape}")
    if arr.dtype != np.uint8:
        problems.append(f"dtype must be uint8, got {arr.dtype}")
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems) + f"; re-download it ({SIDD_SOURCE})")


def _limit(max_images: int | None) -> int | None:
    if max_images is None:
        return None
    if int(max_images) < 0:
        raise ValueError(f"max_images must be >= 0 or None, got {max_images}")
    return int(max_images)


def read_sidd_validation(
    root: str | Path, max_images: int | None = None
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """SIDD Validation sRGB blocks: ``[(f"sidd_val_{n:02d}_{k:02d}", noisy uint8 HxWx3, clean uint8 HxWx3)]``.

    Reads ``root/ValidationNoisyBlocksSrgb.mat`` and ``root/ValidationGtBlocksSrgb.mat`` (variables of the
    same names, uint8 (N, K, H, W, 3) = (40, 32, 256, 256, 3) for the official files) with
    ``scipy.io.loadmat``, in the order ``for n: for k:`` of the official scripts, at most ``max_images``.
    """
    root = Path(root)
    noisy_path, gt_path = root / "ValidationNoisyBlocksSrgb.mat", root / "ValidationGtBlocksSrgb.mat"
    for path in (noisy_path, gt_path):
        if not path.is_file():
            raise _missing(path, SIDD_SOURCE, root, "data/mash/01_raw/sidd/")
    noisy = _load_mat_var(noisy_path, "ValidationNoisyBlocksSrgb", SIDD_SOURCE, root)
    clean = _load_mat_var(gt_path, "ValidationGtBlocksSrgb", SIDD_SOURCE, root)
    _check_sidd_array(noisy, noisy_path)
    _check_sidd_array(clean, gt_path)
    if noisy.shape != clean.shape:
        raise ValueError(
            f"{noisy_path} has shape {noisy.shape} but {gt_path} has shape {clean.shape}; they must match "
            f"(re-download both: {SIDD_SOURCE})"
        )
    limit = _limit(max_images)
    out: list[tuple[str, np.ndarray, np.ndarray]] = []
    for n in range(noisy.shape[0]):
        for k in range(noisy.shape[1]):
            if limit is not None and len(out) >= limit:
                return out
            out.append(
                (
                    f"sidd_val_{n:02d}_{k:02d}",
                    np.ascontiguousarray(noisy[n, k]),
                    np.ascontiguousarray(clean[n, k]),
                )
            )
    return out


def read_sidd_benchmark(
    root: str | Path, max_images: int | None = None
) -> list[tuple[str, np.ndarray, None]]:
    """SIDD Benchmark sRGB blocks (ground truth withheld): ``[(f"sidd_bench_{n:02d}_{k:02d}", noisy, None)]``
    from ``root/BenchmarkNoisyBlocksSrgb.mat`` (variable of the same name, uint8 (N, K, H, W, 3))."""
    root = Path(root)
    path = root / "BenchmarkNoisyBlocksSrgb.mat"
    noisy = _load_mat_var(path, "BenchmarkNoisyBlocksSrgb", SIDD_SOURCE, root)
    _check_sidd_array(noisy, path)
    limit = _limit(max_images)
    out: list[tuple[str, np.ndarray, None]] = []
    for n in range(noisy.shape[0]):
        for k in range(noisy.shape[1]):
            if limit is not None and len(out) >= limit:
                return out
            out.append((f"sidd_bench_{n:02d}_{k:02d}", np.ascontiguousarray(noisy[n, k]), None))
    return out


def _read_image(path: Path, mode: str, source: str) -> np.ndarray:
    """Read an 8-bit image with Pillow as uint8 H x W x C (mode 'L' -> C=1, 'RGB' -> C=3)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                raise ValueError(
                    f"{path} is a {img.mode} (16-bit/float) image; this reader expects 8-bit images as in the "
                    f"official release: re-download it ({source})"
                )
            arr = np.asarray(img.convert(mode))
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise ValueError(
            f"{path} is not a readable image ({type(exc).__name__}: {exc}); it is probably corrupt or "
            f"truncated: re-download it ({source})"
        ) from exc
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def read_fmdd(root: str | Path, max_images: int | None = None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """FMDD in the official code's flat layout: ``root/raw/<name>`` (noisy) + ``root/gt/<name>`` (clean).

    Every image file in ``raw/`` (sorted by name) is paired with the file of the same name in ``gt/``,
    both read as 8-bit grey (H, W, 1). Ids are ``fmdd_<stem>``. A raw file without its gt raises
    FileNotFoundError naming both.
    """
    root = Path(root)
    raw_dir, gt_dir = root / "raw", root / "gt"
    for d in (raw_dir, gt_dir):
        if not d.is_dir():
            raise _missing(d, FMDD_SOURCE, root, "data/mash/01_raw/fmdd/ with raw/ and gt/ inside")
    files = sorted(p for p in raw_dir.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_EXTS)
    if not files:
        raise _missing(
            raw_dir / "*.png", FMDD_SOURCE, root, "data/mash/01_raw/fmdd/ with raw/ and gt/ inside"
        )
    limit = _limit(max_images)
    out: list[tuple[str, np.ndarray, np.ndarray]] = []
    for raw_path in files:
        if limit is not None and len(out) >= limit:
            break
        gt_path = gt_dir / raw_path.name
        if not gt_path.is_file():
            raise MissingDatasetError(
                f"FMDD raw image {raw_path} has no ground truth {gt_path} (raw/ and gt/ must hold the same file "
                f"names); {FMDD_SOURCE}"
            )
        noisy = _read_image(raw_path, "L", FMDD_SOURCE)
        clean = _read_image(gt_path, "L", FMDD_SOURCE)
        if noisy.shape != clean.shape:
            raise ValueError(f"{raw_path} has shape {noisy.shape} but {gt_path} has shape {clean.shape}")
        out.append((f"fmdd_{raw_path.stem}", noisy, clean))
    return out


def flatten_fmdd_release(
    release_root: str | Path, out_root: str | Path, subset: str | Sequence[str] = "test_mix"
) -> list[str]:
    """Copy (part of) the public FMDD release into the flat ``out_root/{raw,gt}/<name>`` layout.

    Release layout: ``<config>/raw/<fov>/*.png`` with ground truth ``<config>/gt/<fov>/avg50.png`` (one GT per
    field of view), and ``test_mix/{raw,gt}``. For each raw file ``<base>/raw/<rel>`` the ground truth is
    ``<base>/gt/<rel>`` when that file exists (same name), else ``<base>/gt/<rel dir>/avg50.png``.
    Flat names join the relative path with ``_``, prefixed by the config name (not for ``test_mix``), e.g.
    ``Confocal_BPAE_B_1_HV110_P0500510000.png``; gt gets the same name.

    Args:
        release_root: the unpacked release (holds ``test_mix/`` and the ``<config>/`` folders).
        out_root: destination; ``raw/`` and ``gt/`` are created.
        subset: ``"test_mix"`` (default), ``"all"`` (every config folder except test_mix), one config name,
            or a list of config names. Which subset the paper evaluated on is **not stated** (spec Sec. 3; the
            test_mix images are the likely choice): unverified.

    Returns:
        The flat file names written, sorted.
    """
    release_root, out_root = Path(release_root), Path(out_root)
    if not release_root.is_dir():
        raise _missing(release_root, FMDD_SOURCE, release_root, "data/mash/01_raw/fmdd_release/")
    if isinstance(subset, str) and subset == "all":
        bases = sorted(
            d for d in release_root.iterdir() if d.is_dir() and d.name != "test_mix" and (d / "raw").is_dir()
        )
    else:
        names = [subset] if isinstance(subset, str) else list(subset)
        bases = [release_root / n for n in names]
    if not bases:
        raise MissingDatasetError(
            f"no FMDD config folders with a raw/ sub-folder under {release_root}; {FMDD_SOURCE}"
        )
    plan: dict[str, tuple[Path, Path]] = {}
    for base in bases:
        raw_dir, gt_dir = base / "raw", base / "gt"
        for d in (raw_dir, gt_dir):
            if not d.is_dir():
                raise _missing(d, FMDD_SOURCE, release_root, "data/mash/01_raw/fmdd_release/")
        for raw_path in sorted(
            p for p in raw_dir.rglob("*") if p.is_file() and p.suffix.lower() in _IMAGE_EXTS
        ):
            rel = raw_path.relative_to(raw_dir)
            gt_path = gt_dir / rel
            if not gt_path.is_file():
                gt_path = gt_dir / rel.parent / "avg50.png"
            if not gt_path.is_file():
                raise MissingDatasetError(
                    f"FMDD release: no ground truth for {raw_path} (looked for {gt_dir / rel} and {gt_path})"
                )
            parts = rel.parts if base.name == "test_mix" else (base.name, *rel.parts)
            name = "_".join(parts)
            if name in plan:
                raise ValueError(f"FMDD release: two raw files flatten to the same name {name!r}")
            plan[name] = (raw_path, gt_path)
    if not plan:
        raise MissingDatasetError(f"no raw images found under {[str(b / 'raw') for b in bases]}; {FMDD_SOURCE}")
    (out_root / "raw").mkdir(parents=True, exist_ok=True)
    (out_root / "gt").mkdir(parents=True, exist_ok=True)
    for name, (raw_path, gt_path) in plan.items():
        shutil.copyfile(raw_path, out_root / "raw" / name)
        shutil.copyfile(gt_path, out_root / "gt" / name)
    return sorted(plan)


_POLYU_RE = re.compile(r"^(?P<name>.+)_(?P<kind>real|mean)\.jpe?g$", re.IGNORECASE)


def read_polyu(root: str | Path, max_images: int | None = None) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """PolyU "CroppedImages": pairs ``<name>_real.JPG`` (noisy) with ``<name>_mean.JPG`` (clean), RGB uint8.

    Looks in ``root`` (or ``root/CroppedImages`` when ``root`` itself holds no such files); the extension
    match is case-insensitive (.JPG/.jpg/.jpeg). Ids are ``polyu_<name>``, sorted. A file without its
    partner raises FileNotFoundError naming it.
    """
    root = Path(root)
    if not root.is_dir():
        raise _missing(root, POLYU_SOURCE, root, "data/mash/01_raw/polyu/")

    def scan(d: Path) -> dict[str, dict[str, Path]]:
        pairs: dict[str, dict[str, Path]] = {}
        for p in sorted(d.iterdir()):
            m = _POLYU_RE.match(p.name) if p.is_file() else None
            if m:
                slot = pairs.setdefault(m["name"], {})
                kind = m["kind"].lower()
                if kind in slot:
                    raise ValueError(f"PolyU: two {kind} files for {m['name']!r}: {slot[kind]} and {p}")
                slot[kind] = p
        return pairs

    pairs = scan(root)
    if not pairs and (root / "CroppedImages").is_dir():
        pairs = scan(root / "CroppedImages")
    if not pairs:
        raise _missing(root / "<name>_real.JPG", POLYU_SOURCE, root, "data/mash/01_raw/polyu/")
    for name, slot in pairs.items():
        for have, need in (("real", "mean"), ("mean", "real")):
            if have in slot and need not in slot:
                raise MissingDatasetError(
                    f"PolyU file {slot[have]} has no partner {name}_{need}.JPG next to it; every <name>_real.JPG "
                    f"needs a <name>_mean.JPG ({POLYU_SOURCE})"
                )
    limit = _limit(max_images)
    out: list[tuple[str, np.ndarray, np.ndarray]] = []
    for name in sorted(pairs):
        if limit is not None and len(out) >= limit:
            break
        noisy = _read_image(pairs[name]["real"], "RGB", POLYU_SOURCE)
        clean = _read_image(pairs[name]["mean"], "RGB", POLYU_SOURCE)
        if noisy.shape != clean.shape:
            raise ValueError(
                f"{pairs[name]['real']} has shape {noisy.shape} but {pairs[name]['mean']} has "
                f"shape {clean.shape}"
            )
        out.append((f"polyu_{name}", noisy, clean))
    return out
