"""Unit tests for cvpr24.pipelines.mash.baselines: BM3D (white / PSD), sigma estimate, ZS-N2N, NL-means."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio

from cvpr24.pipelines.mash import baselines as B
from cvpr24.pipelines.mash import data as D


def psnr(gt: np.ndarray, pred: np.ndarray) -> float:
    return float(peak_signal_noise_ratio(gt.astype(np.float32), pred, data_range=255))


@pytest.fixture(scope="module")
def camera64() -> np.ndarray:
    return D.load_clean_crop("camera", 60, 200, 64)


@pytest.fixture(scope="module")
def noisy_iid(camera64) -> np.ndarray:
    return D.add_correlated_noise(camera64, 25.0, 0.0, 3, np.random.default_rng(0), clip=False)


@pytest.fixture(scope="module")
def noisy_corr(camera64) -> np.ndarray:
    return D.add_correlated_noise(camera64, 25.0, 1.0, 3, np.random.default_rng(0), clip=False)


# ------------------------------------------------------------------------------------------------ BM3D
def test_bm3d_white_gains_over_3db(camera64, noisy_iid):
    den = B.bm3d_denoise(noisy_iid, 25.0)
    assert den.shape == noisy_iid.shape and den.dtype == np.float32
    assert psnr(camera64, den) > psnr(camera64, noisy_iid) + 3.0


def test_bm3d_white_psd_equals_scalar_sigma(camera64, noisy_iid):
    """A constant PSD H*W*sigma^2 (0-255 units) must act like the scalar sigma: checks the PSD convention and
    its 1/255**2 rescaling (a 1/255 rescaling would oversmooth by a factor 255 in variance)."""
    psd = D.correlated_gaussian_psd(64, 64, 25.0, 0.0, 3)
    a, b = B.bm3d_denoise(noisy_iid, 25.0), B.bm3d_denoise(noisy_iid, psd)
    assert abs(psnr(camera64, a) - psnr(camera64, b)) < 0.1
    assert np.abs(a - b).mean() < 0.5


def test_bm3d_oracle_psd_beats_white_on_correlated_noise(camera64, noisy_corr):
    white = B.bm3d_denoise(noisy_corr, 25.0)  # the true marginal std, white model
    oracle = B.bm3d_denoise(noisy_corr, D.correlated_gaussian_psd(64, 64, 25.0, 1.0, 3))
    estimated = B.bm3d_denoise(noisy_corr, D.noise_psd(noisy_corr - camera64))  # the pipeline's oracle PSD
    p_noisy, p_white, p_oracle = psnr(camera64, noisy_corr), psnr(camera64, white), psnr(camera64, oracle)
    assert p_oracle > p_white + 1.5
    assert psnr(camera64, estimated) > p_white + 1.5
    assert p_white > p_noisy  # white BM3D still helps a little


def test_bm3d_rgb_with_per_channel_psd():
    clean = D.load_clean_crop("astronaut", 30, 190, 64)
    noisy = D.add_correlated_noise(clean, 25.0, 1.0, 3, np.random.default_rng(2), clip=False)
    psd2 = D.correlated_gaussian_psd(64, 64, 25.0, 1.0, 3)
    psd3 = np.repeat(psd2[..., None], 3, axis=2)
    a, b = B.bm3d_denoise(noisy, psd2), B.bm3d_denoise(noisy, psd3)
    assert a.shape == (64, 64, 3)
    np.testing.assert_allclose(a, b, atol=0.05)  # shared PSD == the same PSD given per channel
    assert psnr(clean, a) > psnr(clean, B.bm3d_denoise(noisy, 25.0)) + 1.0
    with pytest.raises(ValueError, match="does not fit"):
        B.bm3d_denoise(noisy, psd2[:32])


# ------------------------------------------------------------------------------------- sigma estimate
def test_estimate_sigma_flat(camera64, noisy_iid, noisy_corr):
    flat = np.full((96, 96, 3), 128.0, np.float32)
    white = flat + D.correlated_gaussian_noise((96, 96, 3), 25.0, 0.0, 3, np.random.default_rng(5))
    assert abs(B.estimate_sigma_flat(white) / 25.0 - 1) < 0.03
    assert abs(B.estimate_sigma_flat(noisy_iid) / 25.0 - 1) < 0.05  # real crop, flat sky + coat
    est_corr = B.estimate_sigma_flat(noisy_corr)
    assert 0.7 * 25.0 < est_corr < 25.0  # documented underestimate on correlated noise
    assert B.estimate_sigma_flat(np.full((64, 64, 1), 7.0, np.float32)) == pytest.approx(0.0, abs=1e-6)


# ----------------------------------------------------------------------------------------------- ZS-N2N
def test_pair_downsample():
    x = torch.arange(16, dtype=torch.float32).reshape(1, 1, 4, 4)
    d1, d2 = B._pair_downsample(x)
    np.testing.assert_allclose(d1[0, 0].numpy(), [[2.5, 4.5], [10.5, 12.5]])  # (0 + 5) / 2 ...
    np.testing.assert_allclose(d2[0, 0].numpy(), [[2.5, 4.5], [10.5, 12.5]])  # (1 + 4) / 2 ...
    y = torch.zeros(1, 1, 4, 4)
    y[0, 0, 0, 0] = 2.0
    a, b = B._pair_downsample(y)
    assert a[0, 0, 0, 0] == 1.0 and b[0, 0, 0, 0] == 0.0


def test_zs_n2n_improves_psnr(camera64, noisy_iid):
    den = B.zs_n2n_denoise(noisy_iid, iterations=300, seed=0)
    assert den.shape == noisy_iid.shape and den.dtype == np.float32
    assert den.min() >= 0 and den.max() <= 255
    assert psnr(camera64, den) > psnr(camera64, noisy_iid) + 2.0


def test_zs_n2n_deterministic_and_leaves_global_rng(noisy_iid):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    a = B.zs_n2n_denoise(noisy_iid, iterations=10, seed=3)
    after = torch.rand(3)
    torch.testing.assert_close(after, expected)
    b = B.zs_n2n_denoise(noisy_iid, iterations=10, seed=3)
    c = B.zs_n2n_denoise(noisy_iid, iterations=10, seed=4)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_zs_n2n_rgb_shape():
    clean = D.load_clean_crop("coffee", 60, 230, 32)
    noisy = D.add_correlated_noise(clean, 25.0, 0.0, 3, np.random.default_rng(0), clip=False)
    out = B.zs_n2n_denoise(noisy, iterations=5, width=8, seed=0)
    assert out.shape == (32, 32, 3)


# ---------------------------------------------------------------------------------------------- NL-means
def test_nlmeans_calibrated_improves_psnr():
    clean = D.load_clean_crop("astronaut", 30, 190, 96)
    noisy = D.add_correlated_noise(clean, 25.0, 0.0, 3, np.random.default_rng(1), clip=False)
    den = B.nlmeans_calibrated(noisy, seed=0)
    assert den.shape == noisy.shape and den.dtype == np.float32
    assert psnr(clean, den) > psnr(clean, noisy) + 3.0
    np.testing.assert_array_equal(den, B.nlmeans_calibrated(noisy, seed=1))  # deterministic


def test_nlmeans_calibrated_grey_picks_a_good_h(camera64, noisy_iid):
    """The self-supervised choice must be close to the best h of the grid as judged with the clean image."""
    from skimage.restoration import denoise_nl_means, estimate_sigma

    den = B.nlmeans_calibrated(noisy_iid, seed=0)
    assert den.shape == (64, 64, 1)
    assert psnr(camera64, den) > psnr(camera64, noisy_iid) + 2.0
    x = noisy_iid[..., 0] / 255.0
    s = float(estimate_sigma(x))
    grid = [
        psnr(
            camera64[..., 0],
            np.clip(
                255 * denoise_nl_means(x, h=f * s, sigma=s, patch_size=5, patch_distance=6, fast_mode=True),
                0,
                255,
            ),
        )
        for f in B.NLMEANS_H_FACTORS
    ]
    assert psnr(camera64, den) > max(grid) - 0.5
    assert psnr(camera64, den) > min(grid) + 0.5
