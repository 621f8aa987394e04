"""Classical and zero-shot comparison methods for MASH (spec Sec. 6), all offline on CPU.

Every denoiser maps a noisy float32 H x W x C image in 0-255 grey levels to a float32 H x W x C image in
0-255 (clipped); randomness only through an explicit seed.

* :func:`bm3d_denoise`: BM3D for correlated noise (PyPI ``bm3d`` 4.0.3; academic/non-commercial licence), run
  "white" with a scalar sigma (e.g. :func:`estimate_sigma_flat`) or with a noise PSD (oracle).
* :func:`estimate_sigma_flat`: scalar noise std from the high-pass residual on the flattest blocks.
* :func:`zs_n2n_denoise`: Zero-Shot Noise2Noise (Mansour & Heckel, CVPR 2023).
* :func:`nlmeans_calibrated`: scikit-image non-local means with its ``h`` chosen by J-invariant
  self-supervised calibration (Noise2Self, no clean image). Not in the paper's tables ("ours").

BM3D input scaling (read from ``bm3d/__init__.py`` and ``bm4d/__init__.py`` of the installed 4.0.3): the
block-matching thresholds are converted with ``tau_match * bs**2 / 255**2``, i.e. the package expects images
in [0, 1]; a scalar ``sigma_psd`` is a std in the image's units and is turned into the PSD
``ones * z.size * sigma**2`` (unnormalised-DFT convention). So we pass ``noisy / 255``, ``sigma / 255`` and
``psd / 255**2`` (the PSD of noise scaled by 1/255 scales by 1/255**2).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


# ------------------------------------------------------------------------------------------------ BM3D
def _bm4d_numpy_compat() -> None:
    """Let bm3d 4.0.3 run its PSD path under NumPy >= 2.4.

    ``bm4d._pcax`` (used whenever ``sigma_psd`` is a PSD, not a scalar) calls ``np.trapz``, which NumPy 2.4
    removed (``np.trapezoid`` is the same function). Instead of patching NumPy globally, only bm4d's own
    ``np`` name is pointed at a thin proxy module that forwards everything to NumPy and adds ``trapz``.
    """
    import types

    import bm4d

    if hasattr(bm4d.np, "trapz"):
        return
    proxy = types.ModuleType("numpy_bm4d_compat")
    proxy.__getattr__ = lambda name: getattr(np, name)  # PEP 562 module __getattr__
    proxy.trapz = np.trapezoid
    bm4d.np = proxy


def _check_image(noisy: np.ndarray) -> np.ndarray:
    x = np.asarray(noisy, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"noisy must be H x W x C, got shape {x.shape}")
    if not np.all(np.isfinite(x)):
        raise ValueError("noisy contains NaN or inf")
    return x


def bm3d_denoise(noisy: np.ndarray, sigma_psd: float | np.ndarray, profile: str = "np") -> np.ndarray:
    """BM3D (Makinen, Azzari & Foi 2020, correlated-noise version) on a 0-255 image.

    Args:
        noisy: float32 H x W x C, 0-255.
        sigma_psd: a scalar noise std in 0-255 grey levels ("white" BM3D), or a noise PSD in 0-255 units and
            BM3D's convention (``E|FFT2(n)|^2`` with the unnormalised DFT; white noise of std s <-> constant
            ``H*W*s**2``; see :func:`cvpr24.pipelines.mash.data.correlated_gaussian_psd` /
            :func:`~cvpr24.pipelines.mash.data.noise_psd`), shape (H, W) (same PSD for every channel),
            (H, W, 1) or (H, W, C) (one per channel).
        profile: BM3D profile name ('np' default, 'refilter', 'vn', 'high', ...).

    Colour: C = 1 runs ``bm3d.bm3d`` on the 2-D image; C = 3 runs ``bm3d.bm3d_rgb`` (opponent colour
    transform, block matching on the luminance channel). ``bm3d_rgb`` maps a PSD to the transformed channels
    as ``psd @ A**2`` (per-channel PSDs) or ``psd * sum(A**2)`` (shared PSD), which is exact only when the
    noise of the three input channels is mutually independent; that holds for the embedded generators
    (family A draws channels independently; the camera pipeline's channels come from disjoint Bayer sites)
    but not for real noise with cross-channel correlation, where the PSD row is an approximation. Other C:
    each channel separately with ``bm3d.bm3d``.
    """
    import bm3d

    _bm4d_numpy_compat()
    x = _check_image(noisy)
    h, w, c = x.shape
    z = x / 255.0
    psd = np.asarray(sigma_psd, dtype=np.float64)
    if psd.ndim == 0:
        s = float(psd)
        if not np.isfinite(s) or s < 0:
            raise ValueError(f"sigma must be a finite number >= 0, got {s}")
        if s == 0:
            return np.clip(x, 0, 255).astype(np.float32)
        arg: float | np.ndarray = s / 255.0
    else:
        if (
            psd.ndim not in (2, 3)
            or psd.shape[:2] != (h, w)
            or (psd.ndim == 3 and psd.shape[2] not in (1, c))
        ):
            raise ValueError(
                f"PSD of shape {psd.shape} does not fit an image of shape {x.shape}: expected "
                f"({h}, {w}), ({h}, {w}, 1) or ({h}, {w}, {c})"
            )
        if not np.all(np.isfinite(psd)) or psd.min() < 0:
            raise ValueError("PSD must be finite and >= 0")
        if psd.ndim == 3 and psd.shape[2] == 1:
            psd = psd[..., 0]
        arg = psd / 255.0**2
    if c == 1:
        p = arg if np.ndim(arg) == 0 else np.asarray(arg)
        out = np.asarray(bm3d.bm3d(z[..., 0], p, profile=profile))[..., None]
    elif c == 3:
        out = np.asarray(bm3d.bm3d_rgb(z, arg, profile=profile))
    else:
        chans = []
        for ch in range(c):
            p = arg if np.ndim(arg) <= 2 else np.asarray(arg)[..., ch]
            chans.append(np.asarray(bm3d.bm3d(z[..., ch], p, profile=profile)))
        out = np.stack(chans, axis=-1)
    return np.clip(out.reshape(h, w, c) * 255.0, 0.0, 255.0).astype(np.float32)


def estimate_sigma_flat(
    noisy: np.ndarray, *, smooth_sigma: float = 2.0, block: int = 8, flat_fraction: float = 0.3
) -> float:
    """Scalar noise std (0-255) from the high-pass residual on the flattest blocks, no clean image.

    1. ``smooth = gaussian_filter(noisy, smooth_sigma)`` per channel, residual ``r = noisy - smooth``.
    2. Tile into ``block`` x ``block`` blocks; rank them by the gradient magnitude of ``smooth`` (texture of
       the signal, nearly noise-free, so the ranking does not pick blocks where the noise happens to be low).
    3. ``sigma^2 = mean(r^2 over the flattest flat_fraction of blocks) / g`` with
       ``g = 1 - 2*k(0) + sum(k^2)`` the residual's variance gain for *white* noise (k the discrete Gaussian
       kernel), so i.i.d. noise is estimated without bias.

    Bias (measured on 96x96 crops, the numbers are the estimate's relative error): i.i.d. noise on flat or
    mildly textured crops within about +-3 %. Correlated noise is underestimated, because the Gaussian
    low-pass keeps the low-frequency part of the noise out of the residual: Eq. 2 noise (sigma 25, k 3) on a
    flat image -11 % (beta 0.5) and -22 % (beta 1); camera-pipeline ``pipeline_full`` noise -10 to -16 % on
    camera/coffee/cell crops. skimage's wavelet-MAD ``estimate_sigma`` is worse on correlated noise (it sees
    only the finest wavelet band: -25 % at beta 0.5, -58 % at beta 1). Strong fine texture leaks into the
    residual and biases upwards: about +10 % at sigma 25 and +50 % at sigma 10 on the astronaut / chelsea
    crops of the embedded config. A plane-fit-per-block variant was tried: less biased on correlated noise
    (-8 % at beta 1 with 16 px blocks) but worse on texture (up to +88 %), so it was not kept.
    """
    x = _check_image(noisy)
    h, w, c = x.shape
    if h < 2 * block or w < 2 * block:
        raise ValueError(f"image {x.shape} too small for {block}x{block} blocks")
    smooth = np.stack(
        [ndimage.gaussian_filter(x[..., ch], smooth_sigma, mode="reflect") for ch in range(c)], -1
    )
    resid = x - smooth
    grad = np.zeros((h, w))
    for ch in range(c):
        grad += np.hypot(ndimage.sobel(smooth[..., ch], 0), ndimage.sobel(smooth[..., ch], 1))
    # drop a margin of 2*smooth_sigma px, where the reflect padding lowers the residual
    m = int(np.ceil(2 * smooth_sigma))
    if h - 2 * m >= 2 * block and w - 2 * m >= 2 * block:
        resid, grad = resid[m : h - m, m : w - m], grad[m : h - m, m : w - m]
    hb, wb = resid.shape[0] // block, resid.shape[1] // block

    def blocks(a: np.ndarray) -> np.ndarray:
        a = a[: hb * block, : wb * block]
        return a.reshape(hb, block, wb, block, *a.shape[2:]).swapaxes(1, 2).reshape(hb * wb, -1)

    texture = blocks(grad).mean(axis=1)
    energy = blocks(resid**2).mean(axis=1)
    n_sel = max(4, int(round(flat_fraction * texture.size)))
    sel = np.argsort(texture, kind="stable")[:n_sel]
    delta = np.zeros((8 * int(np.ceil(smooth_sigma)) + 1,) * 2)
    delta[delta.shape[0] // 2, delta.shape[1] // 2] = 1.0
    kern = ndimage.gaussian_filter(delta, smooth_sigma, mode="constant")
    gain = 1.0 - 2.0 * kern[kern.shape[0] // 2, kern.shape[1] // 2] + float((kern**2).sum())
    return float(np.sqrt(energy[sel].mean() / gain))


# ---------------------------------------------------------------------------------------------- ZS-N2N


def _zs_n2n_net(channels: int, width: int):
    import torch.nn as nn

    class ZSN2NNet(nn.Module):
        """conv3x3 C->width, LeakyReLU(0.2), conv3x3 width->width, LeakyReLU(0.2), conv1x1 width->C."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(channels, width, 3, padding=1)
            self.conv2 = nn.Conv2d(width, width, 3, padding=1)
            self.conv3 = nn.Conv2d(width, channels, 1)
            self.act = nn.LeakyReLU(negative_slope=0.2)

        def forward(self, x):
            return self.conv3(self.act(self.conv2(self.act(self.conv1(x)))))

    return ZSN2NNet()


def _pair_downsample(x):
    """The two fixed 2x2 stride-2 diagonal averages of ZS-N2N: D1 = mean of (0,0),(1,1); D2 = (0,1),(1,0)."""
    import torch
    import torch.nn.functional as F

    c = x.shape[1]
    f1 = torch.tensor([[[[0.5, 0.0], [0.0, 0.5]]]], dtype=x.dtype).repeat(c, 1, 1, 1)
    f2 = torch.tensor([[[[0.0, 0.5], [0.5, 0.0]]]], dtype=x.dtype).repeat(c, 1, 1, 1)
    return F.conv2d(x, f1, stride=2, groups=c), F.conv2d(x, f2, stride=2, groups=c)


def zs_n2n_denoise(
    noisy: np.ndarray,
    *,
    iterations: int = 2000,
    lr: float = 1e-3,
    width: int = 48,
    seed: int,
    progress: bool = False,
) -> np.ndarray:
    """Zero-Shot Noise2Noise (Mansour & Heckel, CVPR 2023) on one image, CPU.

    The image (scaled to [0, 1]) is split by two fixed 2x2 diagonal downsamplers into a pair (D1(y), D2(y))
    whose noises are nearly independent for i.i.d. noise. A tiny net predicts the noise (residual:
    ``denoised = x - net(x)``) and is trained with

    * residual loss ``1/2 (||D1 - net(D1) - D2||^2 + ||D2 - net(D2) - D1||^2)`` (symmetric pair), plus
    * consistency loss ``1/2 (||D1 - net(D1) - D1(y - net(y))||^2 + ||D2 - net(D2) - D2(y - net(y))||^2)``,

    (mean squared errors), Adam with ``lr``, halved once at 3/4 of the iterations. Output:
    ``clip(y - net(y), 0, 1) * 255``. Deterministic for a seed: the weights are initialised under
    ``torch.manual_seed(seed)`` inside ``torch.random.fork_rng`` (the caller's global RNG is untouched) and
    training draws no random numbers.
    """
    import torch
    import torch.nn.functional as F

    x = _check_image(noisy)
    h, w, c = x.shape
    if h < 2 or w < 2:
        raise ValueError(f"image {x.shape} too small for 2x2 downsampling")
    iterations = int(iterations)
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    y = torch.from_numpy((x / 255.0).transpose(2, 0, 1)[None].astype(np.float32).copy())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        net = _zs_n2n_net(c, int(width))
    opt = torch.optim.Adam(net.parameters(), lr=float(lr))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, int(0.75 * iterations)), gamma=0.5)
    d1, d2 = _pair_downsample(y)
    steps = range(iterations)
    if progress:
        from tqdm.auto import tqdm

        steps = tqdm(steps, desc="zs-n2n", leave=False)
    for _ in steps:
        pred1 = d1 - net(d1)
        pred2 = d2 - net(d2)
        loss_res = 0.5 * (F.mse_loss(pred1, d2) + F.mse_loss(pred2, d1))
        den1, den2 = _pair_downsample(y - net(y))
        loss_cons = 0.5 * (F.mse_loss(pred1, den1) + F.mse_loss(pred2, den2))
        loss = loss_res + loss_cons
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        out = torch.clamp(y - net(y), 0.0, 1.0)[0].numpy().transpose(1, 2, 0)
    return (out * 255.0).astype(np.float32)


# -------------------------------------------------------------------------------------------- NL-means

#: ``h`` candidates as multiples of the wavelet-MAD noise estimate (which underestimates correlated noise,
#: hence the grid reaches 2x).
NLMEANS_H_FACTORS: tuple[float, ...] = (0.4, 0.6, 0.8, 1.0, 1.4, 2.0)


def nlmeans_calibrated(
    noisy: np.ndarray, seed: int = 0, *, h_factors: tuple[float, ...] = NLMEANS_H_FACTORS
) -> np.ndarray:
    """skimage NL-means with ``h`` picked by J-invariant self-supervised calibration (no clean image).

    ``sigma_w = skimage.restoration.estimate_sigma`` (wavelet MAD, averaged over channels, [0, 1] units);
    candidates ``h = f * sigma_w`` for ``f`` in ``h_factors``, with ``sigma=sigma_w``, ``patch_size=5``,
    ``patch_distance=6``, ``fast_mode=True``. ``skimage.restoration.calibrate_denoiser`` (approximate loss,
    stride 4: one masked J-invariant evaluation per candidate) ranks them by the self-supervised loss; the
    best ``h`` is then applied with the *plain* NL-means to the whole image (skimage's calibrated
    J-invariant output, which re-denoises 16 masked copies, is slower and slightly worse).

    Caveat: J-invariance with a single-pixel mask assumes pixel-independent noise; on correlated noise the
    loss rewards copying the noise, so the calibration picks too small an ``h`` (a small illustration of
    the paper's point). ``seed`` is accepted for a uniform baseline API and is unused: the calibration mask
    grid and NL-means are deterministic.
    """
    from skimage.restoration import calibrate_denoiser, denoise_nl_means, estimate_sigma

    del seed  # deterministic
    x3 = _check_image(noisy) / 255.0
    grey = x3.shape[2] == 1
    x = x3[..., 0] if grey else x3  # skimage's NL-means squeezes a single channel axis: run grey as 2-D
    axis = None if grey else -1
    sigma_w = float(estimate_sigma(x, channel_axis=axis, average_sigmas=True))
    if not np.isfinite(sigma_w) or sigma_w <= 0:
        return np.clip(x3 * 255.0, 0, 255).astype(np.float32)
    grid = {
        "h": [f * sigma_w for f in h_factors],
        "sigma": [sigma_w],
        "patch_size": [5],
        "patch_distance": [6],
        "fast_mode": [True],
        "channel_axis": [axis],
    }
    _, (tested, losses) = calibrate_denoiser(x, denoise_nl_means, denoise_parameters=grid, extra_output=True)
    best = tested[int(np.argmin(losses))]
    out = denoise_nl_means(x, **best)
    return np.clip(np.asarray(out).reshape(x3.shape) * 255.0, 0.0, 255.0).astype(np.float32)
