"""OmniLocalRF metrics: PSNR and the paper's SSIM against scikit-image where the definitions agree, the
latitude-weighted WS-PSNR / WS-SSIM (uniform error, pole vs equator errors, row-constant SSIM maps, the crop of the
'valid' map), grey-filled masked metrics, and the pose errors (Umeyama Sim(3), ATE, RPE_t, RPE_r in degrees)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from cvpr24.pipelines.omnilocalrf import camera as C
from cvpr24.pipelines.omnilocalrf import metrics as M

H, W = 32, 64


def rand_image(seed: int, h: int = H, w: int = W) -> np.ndarray:
    return np.random.default_rng(seed).random((h, w, 3))


def rot(axis: str, angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return {"x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]), "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
            "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])}[axis]


def random_rotations(n: int, seed: int) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    return C.rotation_6d_to_matrix(torch.randn(n, 3, 2, generator=g, dtype=torch.float64)).numpy()


def trajectory(n: int = 20, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, :3, :3] = random_rotations(n, seed)
    poses[:, :3, 3] = np.cumsum(rng.normal(0, 0.3, (n, 3)), axis=0)
    return poses


# ------------------------------------------------------------------ images


def test_psnr_and_ssim_match_scikit_image_where_definitions_agree():
    gt = rand_image(0)
    pred = np.clip(gt + np.random.default_rng(1).normal(0, 0.1, gt.shape), 0, 1)
    assert M.psnr(pred, gt) == pytest.approx(peak_signal_noise_ratio(gt, pred, data_range=1.0), abs=1e-10)
    ref = structural_similarity(gt, pred, data_range=1.0, channel_axis=2, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False)
    assert M.ssim(pred, gt) == pytest.approx(ref, abs=1e-8)
    assert M.ssim_map(pred, gt).shape == (H - 10, W - 10, 3)
    assert M.ssim(gt, gt) == pytest.approx(1.0)
    # skimage's default SSIM (7x7 uniform window, sample covariance) is a different number
    assert abs(M.ssim(pred, gt) - structural_similarity(gt, pred, data_range=1.0, channel_axis=2)) > 1e-3


def test_latitude_weights_are_cosines_of_the_row_latitudes():
    w = M.latitude_weights(H)
    d = C.erp_directions(H, 4, dtype=torch.float64)[:, 0].numpy()
    np.testing.assert_allclose(w, np.hypot(d[:, 0], d[:, 2]), atol=1e-12)  # cos(latitude) of the row centres
    np.testing.assert_allclose(w, w[::-1], atol=1e-12)
    assert w.max() < 1 and w.min() > 0 and np.argmax(w) in (H // 2 - 1, H // 2)


def test_ws_psnr_equals_psnr_for_uniform_error():
    gt = 0.2 + 0.6 * rand_image(2)
    pred = gt + 0.05
    assert M.ws_psnr(pred, gt) == pytest.approx(M.psnr(pred, gt), abs=1e-9)
    assert M.ws_psnr(pred, gt) == pytest.approx(10 * math.log10(1 / 0.05**2), abs=1e-9)
    # an error varying only along longitude is uniform over latitude too
    pred2 = gt + 0.1 * np.sin(np.arange(W) / 3.0)[None, :, None]
    assert M.ws_psnr(pred2, gt) == pytest.approx(M.psnr(pred2, gt), abs=1e-9)
    assert M.ws_psnr(gt, gt) == math.inf


def test_ws_psnr_weights_the_equator_more_than_the_poles():
    gt = np.full((H, W, 3), 0.5)
    poles, equator = gt.copy(), gt.copy()
    poles[:2] += 0.2
    poles[-2:] += 0.2
    equator[H // 2 - 2:H // 2 + 2] += 0.2
    assert M.psnr(poles, gt) == pytest.approx(M.psnr(equator, gt))  # same plain MSE
    assert M.ws_psnr(poles, gt) > M.psnr(poles, gt) + 5
    assert M.ws_psnr(equator, gt) < M.psnr(equator, gt)
    w = M.latitude_weights(H)
    expected = 0.2**2 * w[H // 2 - 2:H // 2 + 2].sum() / w.sum()
    assert M.ws_mse(equator, gt) == pytest.approx(expected, rel=1e-12)


def test_ws_ssim_equals_ssim_for_a_latitude_constant_map():
    rng = np.random.default_rng(4)
    gt = np.broadcast_to(rng.random((1, W, 3)), (H, W, 3)).copy()  # every row identical
    pred = np.clip(gt + rng.normal(0, 0.1, (1, W, 3)), 0, 1) * np.ones((H, 1, 1))
    smap = M.ssim_map(pred, gt)
    np.testing.assert_allclose(smap, np.broadcast_to(smap[:1], smap.shape), atol=1e-12)
    assert M.ssim(pred, gt) < 0.95
    assert M.ws_ssim(pred, gt) == pytest.approx(M.ssim(pred, gt), abs=1e-12)


def test_ws_ssim_uses_the_weights_of_the_cropped_rows():
    gt = rand_image(5)
    pred = np.clip(gt + np.random.default_rng(6).normal(0, 0.1, gt.shape), 0, 1)
    smap = M.ssim_map(pred, gt)
    w = M.latitude_weights(H)[5:H - 5]
    expected = (w[:, None, None] * smap).sum() / (w.sum() * smap.shape[1] * smap.shape[2])
    assert M.ws_ssim(pred, gt) == pytest.approx(expected, abs=1e-12)
    assert M.ws_ssim(pred, gt) != pytest.approx(M.ssim(pred, gt), abs=1e-6)
    values = np.zeros((H - 10, 3))
    values[0] = 1.0  # only the map's first row (image row 5) is non-zero
    assert M.ws_mean_of_map(values, H) == pytest.approx(M.latitude_weights(H)[5] / w.sum())


def test_masked_metrics_grey_fill_both_images():
    gt = rand_image(7)
    pred = np.clip(gt + np.random.default_rng(8).normal(0, 0.05, gt.shape), 0, 1)
    mask = np.zeros((H, W), bool)
    mask[10:20, 30:50] = True
    ghost = pred.copy()
    ghost[12:18, 35:45] = 1.0  # a ghost of a dynamic object inside the mask
    clean = M.image_metrics(pred, gt, mask)
    assert M.image_metrics(ghost, gt, mask) == clean
    assert M.image_metrics(ghost, gt)["psnr"] < M.image_metrics(pred, gt)["psnr"]
    filled = M.grey_fill(gt, mask)
    assert (filled[mask] == 0.5).all() and np.array_equal(filled[~mask], gt[~mask])
    assert clean["psnr"] == pytest.approx(M.psnr(M.grey_fill(pred, mask), filled))
    assert set(clean) == {"psnr", "psnr_ws", "ssim", "ssim_ws"}


def test_mean_of_scene_means():
    assert M.mean_of_scene_means({"a": [1.0, 3.0], "b": [10.0]}) == pytest.approx(6.0)
    assert math.isnan(M.mean_of_scene_means({}))


# ------------------------------------------------------------------ poses


def test_umeyama_recovers_a_known_similarity():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(30, 3))
    r = random_rotations(1, seed=9)[0]
    dst = 2.5 * src @ r.T + np.array([1.0, -2.0, 0.5])
    s, r_est, t = M.umeyama(src, dst)
    assert s == pytest.approx(2.5, abs=1e-12)
    np.testing.assert_allclose(r_est, r, atol=1e-12)
    np.testing.assert_allclose(t, [1.0, -2.0, 0.5], atol=1e-12)
    mirrored = src * np.array([1, 1, -1])  # no proper rotation maps src onto its mirror image
    s_m, r_m, t_m = M.umeyama(src, mirrored)
    assert np.linalg.det(r_m) == pytest.approx(1.0)
    xs, xd = src - src.mean(0), mirrored - mirrored.mean(0)
    assert s_m == pytest.approx(np.sum(xd * (xs @ r_m.T)) / np.sum(xs**2), rel=1e-10)  # least-squares scale given R
    np.testing.assert_allclose(t_m, mirrored.mean(0) - s_m * r_m @ src.mean(0), atol=1e-12)
    with pytest.raises(ValueError, match="all equal"):
        M.umeyama(np.zeros((4, 3)), src[:4])


def test_ate_and_rpe_are_zero_for_a_similar_copy_of_the_trajectory():
    gt = trajectory()
    r = random_rotations(1, seed=11)[0]
    est = gt.copy()
    est[:, :3, :3] = r @ gt[:, :3, :3]
    est[:, :3, 3] = 0.3 * gt[:, :3, 3] @ r.T + np.array([4.0, 0.0, -1.0])
    aligned, (s, _, _) = M.align_poses(est, gt)
    assert s == pytest.approx(1 / 0.3)
    np.testing.assert_allclose(aligned, gt, atol=1e-10)
    errs = M.pose_errors(est[:, :3], gt)  # 3x4 poses are accepted
    assert errs["ate"] == pytest.approx(0.0, abs=1e-10)
    assert errs["rpe_t"] == pytest.approx(0.0, abs=1e-10)
    assert errs["rpe_r"] == pytest.approx(0.0, abs=1e-8)
    assert M.ate(est, gt, align=False) > 1.0


def test_ate_is_the_rmse_of_centre_errors():
    gt = trajectory(n=4)
    est = gt.copy()
    est[0, :3, 3] += [0.0, 0.0, 0.2]  # one perturbed centre: the alignment absorbs part of it
    plain = math.sqrt(0.2**2 / 4)
    assert M.ate(est, gt, align=False) == pytest.approx(plain)
    assert 0 < M.ate(est, gt) < plain


def test_rpe_r_of_a_known_per_step_rotation_is_its_angle():
    n, theta = 15, math.radians(1.5)
    gt = np.tile(np.eye(4), (n, 1, 1))
    gt[:, :3, 3] = np.stack([np.sin(np.arange(n) / 3), np.zeros(n), np.arange(n) * 0.2], axis=1)
    for k in range(n):
        gt[k, :3, :3] = rot("y", 0.1 * k)  # a yawing camera
    est = gt.copy()
    for k in range(n):
        est[k, :3, :3] = gt[k, :3, :3] @ rot("y", theta * k)  # an extra yaw of theta per step, centres unchanged
    rpe_t, rpe_r = M.rpe(est, gt)
    assert rpe_r == pytest.approx(1.5, abs=1e-9)
    assert M.rpe(est, gt, reduction="rmse")[1] == pytest.approx(1.5, abs=1e-9)
    assert rpe_t > 0  # the relative translation is seen from a wrongly rotated camera


def test_rpe_t_of_a_known_per_step_offset():
    n, delta = 10, 0.05
    gt = np.tile(np.eye(4), (n, 1, 1))
    gt[:, 2, 3] = np.arange(n) * 0.5
    est = gt.copy()
    est[:, 0, 3] += np.arange(n) * delta  # each step drifts by delta sideways
    rpe_t, rpe_r = M.rpe(est, gt, align=False)
    assert rpe_t == pytest.approx(delta, abs=1e-12) and rpe_r == pytest.approx(0.0, abs=1e-12)


def test_rotation_angle_matches_arccos_and_is_precise_for_small_angles():
    rots = random_rotations(100, seed=3)
    np.testing.assert_allclose(M.rotation_angle(rots),
                               np.arccos(np.clip((np.trace(rots, axis1=1, axis2=2) - 1) / 2, -1, 1)), atol=1e-7)
    assert M.rotation_angle(rot("x", 1e-7)) == pytest.approx(1e-7, rel=1e-6)
    assert M.rotation_angle(rot("z", math.pi - 1e-3)) == pytest.approx(math.pi - 1e-3, rel=1e-9)
