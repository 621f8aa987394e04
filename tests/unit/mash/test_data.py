"""Unit tests for cvpr24.pipelines.mash.data: clean crops, both noise families, the real-data readers."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io
from PIL import Image

from cvpr24.pipelines.mash import data as D


def lag_corr(noise: np.ndarray, lag: int) -> float:
    """Mean of the horizontal and vertical lag-`lag` correlation coefficients, pooled over channels."""
    n = np.asarray(noise, dtype=np.float64)
    n = n - n.mean(axis=(0, 1))
    out = []
    for a, b in ((n[:, :-lag], n[:, lag:]), (n[:-lag], n[lag:])):
        out.append((a * b).mean() / np.sqrt((a * a).mean() * (b * b).mean()))
    return float(np.mean(out))


# ------------------------------------------------------------------------------------------- clean crops
def test_bundled_images_exclude_network_fetched_ones():
    assert {"astronaut", "camera", "coffee", "chelsea", "cell", "stereo_motorcycle"} <= set(D.BUNDLED_IMAGES)
    assert not {"cells3d", "brain", "kidney", "lily", "eagle", "vortex", "skin"} & set(D.BUNDLED_IMAGES)


def test_load_clean_crop_shape_dtype_and_values():
    import skimage.data

    rgb = D.load_clean_crop("astronaut", 30, 190, 96)
    assert rgb.shape == (96, 96, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb, skimage.data.astronaut()[30:126, 190:286])
    grey = D.load_clean_crop("camera", 60, 200, 64)
    assert grey.shape == (64, 64, 1) and grey.dtype == np.uint8
    np.testing.assert_array_equal(grey[..., 0], skimage.data.camera()[60:124, 200:264])
    left = D.load_clean_crop("stereo_motorcycle", 0, 0, 32)
    np.testing.assert_array_equal(left, skimage.data.stereo_motorcycle()[0][:32, :32])
    assert D.load_clean_crop("astronaut", 30, 190, 32, grey=True).shape == (32, 32, 1)
    as_rgb = D.load_clean_crop("camera", 0, 0, 32, grey=False)
    assert as_rgb.shape == (32, 32, 3) and np.array_equal(as_rgb[..., 0], as_rgb[..., 2])


def test_load_clean_crop_errors():
    with pytest.raises(ValueError, match=r"coins.*\(303, 384, 1\)"):
        D.load_clean_crop("coins", 250, 0, 96)  # 250 + 96 > 303
    with pytest.raises(ValueError, match="coins"):
        D.load_clean_crop("coins", 0, -1, 32)
    with pytest.raises(ValueError, match="astronaut"):  # the message lists the allowed names
        D.load_clean_crop("lena", 0, 0, 32)


# ------------------------------------------------------------------------------ family A: Eq. 2 noise
@pytest.mark.parametrize("beta", [0.5, 1.0])
def test_correlated_noise_lag_correlations_and_std(beta):
    n = D.correlated_gaussian_noise((128, 128, 3), 25.0, beta, 3, np.random.default_rng(0))
    assert n.shape == (128, 128, 3) and n.dtype == np.float32
    assert abs(lag_corr(n, 1) - beta * 2 / 3) < 0.05
    assert abs(lag_corr(n, 2) - beta * 1 / 3) < 0.05
    assert abs(lag_corr(n, 4)) < 0.05
    c = n - n.mean(axis=(0, 1))
    diag = 0.5 * ((c[:-1, :-1] * c[1:, 1:]).mean() + (c[:-1, 1:] * c[1:, :-1]).mean()) / c.var()
    assert abs(diag - beta * (3 - np.sqrt(2)) / 3) < 0.05  # Euclidean lag distance (not Chebyshev/city-block)
    np.testing.assert_allclose(n.std(axis=(0, 1)), 25.0, rtol=0.03)


def test_correlated_noise_beta0_is_white_and_channels_independent():
    n = D.correlated_gaussian_noise((128, 128, 3), 15.0, 0.0, 3, np.random.default_rng(1))
    assert abs(lag_corr(n, 1)) < 0.05
    np.testing.assert_allclose(n.std(axis=(0, 1)), 15.0, rtol=0.03)
    cross = np.corrcoef(n.reshape(-1, 3).T)[0, 1]
    assert abs(cross) < 0.05
    m = D.correlated_gaussian_noise((128, 128, 3), 25.0, 1.0, 3, np.random.default_rng(1))
    assert abs(np.corrcoef(m.reshape(-1, 3).T)[0, 1]) < 0.05


def test_correlated_noise_is_seeded():
    a = D.correlated_gaussian_noise((32, 32, 1), 25.0, 1.0, 3, np.random.default_rng(7))
    b = D.correlated_gaussian_noise((32, 32, 1), 25.0, 1.0, 3, np.random.default_rng(7))
    c = D.correlated_gaussian_noise((32, 32, 1), 25.0, 1.0, 3, np.random.default_rng(8))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_correlated_autocov_and_clipped_spectrum():
    r = D.correlated_gaussian_autocov(64, 64, 10.0, 1.0, 3)
    assert r[0, 0] == pytest.approx(100.0) and r[0, 1] == pytest.approx(100.0 * 2 / 3)
    assert r[1, 1] == pytest.approx(100.0 * (3 - np.sqrt(2)) / 3) and r[2, 2] == pytest.approx(
        100.0 * (3 - np.sqrt(8)) / 3
    )
    assert r[0, 3] == 0.0 and r[2, 3] == 0.0 and r[0, 4] == 0.0
    assert r[0, 63] == r[0, 1] and r[63, 0] == r[1, 0]  # periodic lag grid
    spectrum = np.fft.fft2(r).real
    assert spectrum.min() < -0.1 * spectrum.mean()  # beta=1: not positive definite on the grid
    psd = D.correlated_gaussian_psd(64, 64, 10.0, 1.0, 3)
    clipped = np.clip(spectrum, 0.0, None)
    np.testing.assert_allclose(psd, clipped * psd.mean() / clipped.mean(), rtol=1e-9, atol=1e-9)


def test_correlated_psd_convention_and_agreement_with_samples():
    h, w = 64, 64
    white = D.correlated_gaussian_psd(h, w, 25.0, 0.0, 3)
    np.testing.assert_allclose(white, h * w * 25.0**2)  # BM3D: white noise std s <-> H*W*s^2
    psd = D.correlated_gaussian_psd(h, w, 25.0, 1.0, 3)
    assert psd.min() >= 0 and np.isclose(psd.mean(), h * w * 25.0**2)
    rng = np.random.default_rng(3)
    per = np.mean(
        [
            np.abs(np.fft.fft2(D.correlated_gaussian_noise((h, w, 1), 25.0, 1.0, 3, rng)[..., 0])) ** 2
            for _ in range(64)
        ],
        axis=0,
    )
    assert np.corrcoef(per.ravel(), psd.ravel())[0, 1] > 0.95
    np.testing.assert_allclose(per.mean(), psd.mean(), rtol=0.02)


def test_noise_psd_estimate():
    h = w = 64
    white = D.correlated_gaussian_noise((h, w, 1), 20.0, 0.0, 3, np.random.default_rng(0))
    est = D.noise_psd(white)
    assert est.shape == (h, w) and est.min() >= 0
    np.testing.assert_allclose(est.mean(), h * w * 20.0**2, rtol=0.03)
    corr = D.correlated_gaussian_noise((h, w, 3), 25.0, 1.0, 3, np.random.default_rng(0))
    est3 = D.noise_psd(corr)
    assert est3.shape == (h, w, 3)
    true = D.correlated_gaussian_psd(h, w, 25.0, 1.0, 3)
    assert np.corrcoef(est3[..., 0].ravel(), true.ravel())[0, 1] > 0.9


def test_add_correlated_noise_clip_and_dtype():
    dark = np.full((32, 32, 1), 5, np.uint8)
    raw = D.add_correlated_noise(dark, 25.0, 0.5, 3, np.random.default_rng(0), clip=False)
    clipped = D.add_correlated_noise(dark, 25.0, 0.5, 3, np.random.default_rng(0), clip=True)
    assert raw.dtype == np.float32 and raw.shape == dark.shape
    assert raw.min() < 0 and clipped.min() >= 0 and clipped.max() <= 255
    np.testing.assert_allclose((raw - 5).std(), 25.0, rtol=1e-4)


# ----------------------------------------------------------------------- family B: camera pipeline
def test_camera_pipeline_lag1_ordering_on_flat_grey():
    """Lag-1 correlation: full > demosaic > iid ~ 0, averaged over the spec's random parameter draws.

    Per draw the first inequality does not always hold: a weak in-camera blur (sigma_d near 0.4) with strong
    sharpening (amount near 0.8) makes pipeline_full *less* correlated than pipeline_demosaic (about 0.54 vs
    0.61); over the spec's ranges ~22 % of draws do that. The check is therefore on the mean over seeds and
    on mid-range parameters.
    """
    flat = np.full((96, 96, 3), 128, np.uint8)
    rho = {
        p: np.mean(
            [lag_corr(D.camera_pipeline_noise(flat, p, np.random.default_rng(s)) - flat, 1) for s in range(6)]
        )
        for p in D.CAMERA_PRESETS
    }
    assert abs(rho["pipeline_iid"]) < 0.05
    assert rho["pipeline_demosaic"] > 0.3
    assert rho["pipeline_full"] > rho["pipeline_demosaic"] + 0.03
    mid = {"shot": 0.008, "read": 1e-4, "blur_sigma": 0.65, "sharpen_amount": 0.55}
    full = D.camera_pipeline_noise(flat, "pipeline_full", np.random.default_rng(0), mid) - flat
    demo = D.camera_pipeline_noise(flat, "pipeline_demosaic", np.random.default_rng(0), mid) - flat
    assert lag_corr(full, 1) > lag_corr(demo, 1) + 0.05


def test_camera_pipeline_grey_is_correlated():
    flat = np.full((96, 96, 1), 128, np.uint8)
    out = {p: D.camera_pipeline_noise(flat, p, np.random.default_rng(0)) for p in D.CAMERA_PRESETS}
    for y in out.values():
        assert y.shape == (96, 96, 1) and y.dtype == np.float32
    assert abs(lag_corr(out["pipeline_iid"] - flat, 1)) < 0.05
    assert lag_corr(out["pipeline_demosaic"] - flat, 1) > 0.25
    assert lag_corr(out["pipeline_full"] - flat, 1) > 0.25


def test_camera_pipeline_signal_dependence():
    """Raw noise variance grows with the signal (checked on the linear output); in sRGB the gamma curve
    compresses highlights faster than shot noise grows, so the sRGB std *falls* with brightness. Either way
    it depends on the signal, unlike pipeline_iid."""
    params = {"shot": 0.008, "read": 1e-4, "blur_sigma": 0.6, "sharpen_amount": 0.5, "quantize": False}
    levels = [20, 60, 128, 200, 240]
    lin_std, srgb_std, iid_std = [], [], []
    for lvl in levels:
        img = np.full((64, 64, 3), lvl, np.uint8)
        y = D.camera_pipeline_noise(
            img, "pipeline_full", np.random.default_rng(lvl), {**params, "output": "linear"}
        )
        lin_std.append((y - D.srgb_to_linear(img / 255.0) * 255.0).std())
        y = D.camera_pipeline_noise(img, "pipeline_full", np.random.default_rng(lvl), params)
        srgb_std.append((y - img).std())
        y = D.camera_pipeline_noise(img, "pipeline_iid", np.random.default_rng(lvl), {"quantize": False})
        iid_std.append((y - img).std())
    assert np.all(np.diff(lin_std) > 0)  # grows with brightness in the raw/linear domain
    assert lin_std[-1] > 3 * lin_std[0]
    assert max(srgb_std) / min(srgb_std) > 1.3  # signal-dependent in sRGB too
    assert srgb_std[0] > srgb_std[-1]  # ... but decreasing (gamma), a property of the spec's generator
    assert max(iid_std) / min(iid_std) < 1.1


def test_camera_pipeline_reference_conventions():
    clean = D.load_clean_crop("coffee", 60, 230, 64)
    noisy, p = D.camera_pipeline(clean, "pipeline_full", np.random.default_rng(4))
    assert 0.4 <= p["blur_sigma"] <= 0.9 and 0.3 <= p["sharpen_amount"] <= 0.8
    assert 0.004 <= p["shot"] <= 0.012 and 2e-5 <= p["read"] <= 2e-4
    again = D.camera_pipeline_noise(clean, "pipeline_full", np.random.default_rng(4))
    np.testing.assert_array_equal(noisy, again)
    assert noisy.min() >= 0 and noisy.max() <= 255 and np.array_equal(noisy, np.round(noisy))
    # ideal signal path: the zero-noise pipeline returns the clean crop -> clean crop is the reference
    np.testing.assert_array_equal(
        D.camera_pipeline_clean(clean, "pipeline_full", p), clean.astype(np.float32)
    )
    # processed signal path: the reference carries the demosaic/blur artefacts; only noise differs
    pp = {**p, "signal_path": "processed"}
    ref = D.camera_pipeline_clean(clean, "pipeline_full", pp)
    assert np.abs(ref - clean).mean() > 1.0
    noisy_p = D.camera_pipeline_noise(clean, "pipeline_full", np.random.default_rng(4), pp)
    assert abs((noisy_p - ref).mean()) < 2.0 and (noisy_p - ref).std() < 1.5 * (noisy - clean).std()
    # on a flat image both signal paths are the same pipeline (linearity), up to 8-bit rounding
    flat = np.full((48, 48, 3), 100, np.uint8)
    a = D.camera_pipeline_noise(flat, "pipeline_full", np.random.default_rng(1), p)
    b = D.camera_pipeline_noise(flat, "pipeline_full", np.random.default_rng(1), pp)
    assert np.abs(a - b).max() <= 1 and np.mean(a != b) < 0.01
    with pytest.raises(ValueError, match="blur_sigma"):
        D.camera_pipeline_clean(clean, "pipeline_full", {"shot": 0.01, "read": 1e-4})


def test_camera_pipeline_bad_arguments():
    img = np.full((16, 16, 3), 128, np.uint8)
    with pytest.raises(ValueError, match="pipeline_iid"):
        D.camera_pipeline_noise(img, "pipeline_jpeg", np.random.default_rng(0))
    with pytest.raises(ValueError, match="colour"):
        D.camera_pipeline_noise(img, "pipeline_full", np.random.default_rng(0), {"colour": 1})


def test_camera_pipeline_iid_sigma():
    img = np.full((128, 128, 3), 128, np.uint8)
    y = D.camera_pipeline_noise(img, "pipeline_iid", np.random.default_rng(0), {"sigma": 7.0})
    assert abs((y - img).std() - 7.0) < 0.2


# ---------------------------------------------------------------------------------------- SIDD reader
def _sidd_arrays(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 256, (2, 3, 64, 64, 3), dtype=np.uint8),
        rng.integers(0, 256, (2, 3, 64, 64, 3), dtype=np.uint8),
    )


def _write_sidd(root, noisy, clean) -> None:
    scipy.io.savemat(root / "ValidationNoisyBlocksSrgb.mat", {"ValidationNoisyBlocksSrgb": noisy})
    scipy.io.savemat(root / "ValidationGtBlocksSrgb.mat", {"ValidationGtBlocksSrgb": clean})


def test_read_sidd_validation_order_and_values(tmp_path):
    noisy, clean = _sidd_arrays()
    _write_sidd(tmp_path, noisy, clean)
    items = D.read_sidd_validation(tmp_path)
    assert [i[0] for i in items] == [f"sidd_val_{n:02d}_{k:02d}" for n in range(2) for k in range(3)]
    for idx, (_, y, x) in enumerate(items):
        n, k = divmod(idx, 3)
        assert y.dtype == np.uint8 and x.dtype == np.uint8 and y.shape == (64, 64, 3)
        np.testing.assert_array_equal(y, noisy[n, k])
        np.testing.assert_array_equal(x, clean[n, k])
    assert [i[0] for i in D.read_sidd_validation(tmp_path, max_images=4)][-1] == "sidd_val_01_00"


def test_read_sidd_benchmark(tmp_path):
    noisy, _ = _sidd_arrays(1)
    scipy.io.savemat(tmp_path / "BenchmarkNoisyBlocksSrgb.mat", {"BenchmarkNoisyBlocksSrgb": noisy})
    items = D.read_sidd_benchmark(tmp_path, max_images=2)
    assert [i[0] for i in items] == ["sidd_bench_00_00", "sidd_bench_00_01"]
    assert items[1][2] is None
    np.testing.assert_array_equal(items[1][1], noisy[0, 1])


def test_read_sidd_missing_file(tmp_path):
    noisy, _ = _sidd_arrays()
    scipy.io.savemat(tmp_path / "ValidationNoisyBlocksSrgb.mat", {"ValidationNoisyBlocksSrgb": noisy})
    with pytest.raises(FileNotFoundError) as exc:
        D.read_sidd_validation(tmp_path)
    msg = str(exc.value)
    assert str(tmp_path / "ValidationGtBlocksSrgb.mat") in msg and "SIDD" in msg and str(tmp_path) in msg
    with pytest.raises(FileNotFoundError, match="BenchmarkNoisyBlocksSrgb.mat"):
        D.read_sidd_benchmark(tmp_path)


def test_read_sidd_corrupt_file(tmp_path):
    noisy, clean = _sidd_arrays()
    _write_sidd(tmp_path, noisy, clean)
    bad = tmp_path / "ValidationGtBlocksSrgb.mat"
    bad.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(ValueError, match="ValidationGtBlocksSrgb.mat.*re-download"):
        D.read_sidd_validation(tmp_path)


@pytest.mark.parametrize(
    "noisy_shape, clean_shape, dtype, match",
    [
        ((2, 3, 64, 64), (2, 3, 64, 64), np.uint8, "5 dimensions"),
        ((2, 3, 64, 64, 4), (2, 3, 64, 64, 4), np.uint8, "last dimension"),
        ((2, 3, 64, 64, 3), (2, 2, 64, 64, 3), np.uint8, "must match"),
        ((2, 3, 64, 64, 3), (2, 3, 64, 64, 3), np.float32, "uint8"),
    ],
)
def test_read_sidd_bad_contents(tmp_path, noisy_shape, clean_shape, dtype, match):
    _write_sidd(tmp_path, np.zeros(noisy_shape, dtype), np.zeros(clean_shape, dtype))
    with pytest.raises(ValueError, match=match):
        D.read_sidd_validation(tmp_path)


def test_read_sidd_wrong_variable_name(tmp_path):
    noisy, clean = _sidd_arrays()
    scipy.io.savemat(tmp_path / "ValidationNoisyBlocksSrgb.mat", {"noisy": noisy})
    scipy.io.savemat(tmp_path / "ValidationGtBlocksSrgb.mat", {"ValidationGtBlocksSrgb": clean})
    with pytest.raises(ValueError, match="ValidationNoisyBlocksSrgb.mat.*no variable"):
        D.read_sidd_validation(tmp_path)


# ---------------------------------------------------------------------------------------- FMDD reader
def _png(path, value: int, size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = (np.arange(size * size).reshape(size, size) % 7 + value).astype(np.uint8)
    Image.fromarray(arr, mode="L").save(path)


def test_read_fmdd_pairs_by_name(tmp_path):
    for name, v in (("b_img.png", 10), ("a_img.png", 100)):
        _png(tmp_path / "raw" / name, v)
        _png(tmp_path / "gt" / name, v + 50)
    items = D.read_fmdd(tmp_path)
    assert [i[0] for i in items] == ["fmdd_a_img", "fmdd_b_img"]
    for (_, y, x), v in zip(items, (100, 10), strict=True):
        assert y.shape == (16, 16, 1) and y.dtype == np.uint8 and x.dtype == np.uint8
        assert y.min() == v and x.min() == v + 50
    assert len(D.read_fmdd(tmp_path, max_images=1)) == 1


def test_read_fmdd_missing_gt_and_dirs(tmp_path):
    _png(tmp_path / "raw" / "a.png", 10)
    _png(tmp_path / "gt" / "a.png", 20)
    _png(tmp_path / "raw" / "lonely.png", 30)
    with pytest.raises(FileNotFoundError, match="lonely.png"):
        D.read_fmdd(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"nowhere.*Fluorescence"):
        D.read_fmdd(tmp_path / "nowhere")


def test_read_fmdd_corrupt_image(tmp_path):
    _png(tmp_path / "gt" / "a.png", 20)
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "a.png").write_bytes(b"not a png at all" * 10)
    with pytest.raises(ValueError, match=r"a\.png.*re-download"):
        D.read_fmdd(tmp_path)


def test_flatten_fmdd_release(tmp_path):
    rel = tmp_path / "release"
    for cfg in ("Confocal_BPAE_B", "TwoPhoton_MICE"):
        for fov in ("1", "2"):
            _png(rel / cfg / "raw" / fov / "HV110_P0500510000.png", 10)
            _png(rel / cfg / "raw" / fov / "HV110_P0500510001.png", 11)
            _png(rel / cfg / "gt" / fov / "avg50.png", 90)
    _png(rel / "test_mix" / "raw" / "x1.png", 5)
    _png(rel / "test_mix" / "gt" / "x1.png", 60)
    names = D.flatten_fmdd_release(rel, tmp_path / "flat_mix")
    assert names == ["x1.png"]
    items = D.read_fmdd(tmp_path / "flat_mix")
    assert items[0][1].min() == 5 and items[0][2].min() == 60
    names = D.flatten_fmdd_release(rel, tmp_path / "flat_all", subset="all")
    assert len(names) == 8 and "Confocal_BPAE_B_1_HV110_P0500510000.png" in names
    items = dict((i[0], i) for i in D.read_fmdd(tmp_path / "flat_all"))
    _, y, x = items["fmdd_TwoPhoton_MICE_2_HV110_P0500510001"]
    assert y.min() == 11 and x.min() == 90  # gt = that field of view's avg50.png
    assert len(D.flatten_fmdd_release(rel, tmp_path / "one", subset="TwoPhoton_MICE")) == 4
    (rel / "TwoPhoton_MICE" / "gt" / "2" / "avg50.png").unlink()
    with pytest.raises(FileNotFoundError, match="HV110_P0500510000.png"):
        D.flatten_fmdd_release(rel, tmp_path / "broken", subset="TwoPhoton_MICE")


# --------------------------------------------------------------------------------------- PolyU reader
def _jpg(path, rgb: tuple[int, int, int]) -> None:
    Image.fromarray(np.full((16, 16, 3), rgb, np.uint8)).save(path, quality=95)


def test_read_polyu_pairs(tmp_path):
    _jpg(tmp_path / "Canon5D2_bag_real.JPG", (200, 20, 20))
    _jpg(tmp_path / "Canon5D2_bag_mean.JPG", (180, 30, 30))
    _jpg(tmp_path / "Nikon_D800_plant_real.jpg", (20, 200, 20))
    _jpg(tmp_path / "Nikon_D800_plant_mean.jpg", (30, 180, 30))
    (tmp_path / "readme.txt").write_text("ignored")
    items = D.read_polyu(tmp_path)
    assert [i[0] for i in items] == ["polyu_Canon5D2_bag", "polyu_Nikon_D800_plant"]
    (_, y0, x0), (_, y1, x1) = items
    assert y0.shape == (16, 16, 3) and y0.dtype == np.uint8
    assert abs(int(y0[..., 0].mean()) - 200) < 5 and abs(int(x0[..., 0].mean()) - 180) < 5
    assert abs(int(y1[..., 1].mean()) - 200) < 5 and abs(int(x1[..., 1].mean()) - 180) < 5
    assert len(D.read_polyu(tmp_path, max_images=1)) == 1


def test_read_polyu_unpaired_and_missing(tmp_path):
    _jpg(tmp_path / "a_real.JPG", (1, 2, 3))
    _jpg(tmp_path / "a_mean.JPG", (1, 2, 3))
    _jpg(tmp_path / "b_real.JPG", (1, 2, 3))
    with pytest.raises(FileNotFoundError, match="b_real.JPG"):
        D.read_polyu(tmp_path)
    with pytest.raises(FileNotFoundError, match="PolyU"):
        D.read_polyu(tmp_path / "absent")


def test_read_polyu_corrupt(tmp_path):
    _jpg(tmp_path / "a_real.JPG", (1, 2, 3))
    (tmp_path / "a_mean.JPG").write_bytes(b"\xff\xd8garbage" * 20)
    with pytest.raises(ValueError, match=r"a_mean\.JPG.*re-download"):
        D.read_polyu(tmp_path)
