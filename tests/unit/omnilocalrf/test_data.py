"""OmniLocalRF data (spec 3 and 8): the procedural 360 street is deterministic for a seed; its static twin equals
the dynamic frame outside the true mask; the photographer stays in one ERP region while the crossing pedestrians
sweep across the sphere and the one walking with the camera barely moves; true depth matches the geometry; the
released layout round-trips exactly through the one loader (flow_ds encoding and the fwd i+1 file offset for
frame_step 1 and 4 included); every validation error names the file; an interrupted write leaves nothing behind."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cvpr24.core.ingest import MissingDatasetError
from cvpr24.core.validation import DataValidationError
from cvpr24.pipelines.omnilocalrf import data as D
from cvpr24.pipelines.omnilocalrf.camera import erp_directions

H, N = 16, 4
W = 2 * H


@pytest.fixture(scope="module")
def scene() -> D.StreetScene:
    return D.generate_street(seed=3, height=H, n_frames=N)


@pytest.fixture(scope="module")
def written(scene, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("street")
    return D.write_street(scene, root / D.STREET_ON, static_dest=root / D.STREET_OFF, test_frame_every=2, seed=1)


@pytest.fixture
def copy_on(written, tmp_path) -> Path:
    dest = tmp_path / "scene"
    shutil.copytree(written["on"], dest)
    return dest


# ------------------------------------------------------------------ generator


def test_generator_is_deterministic_for_a_seed_and_differs_for_another(scene):
    again = D.generate_street(seed=3, height=H, n_frames=N)
    for name in ("images", "static", "dyn_ids", "depth", "depth_static", "c2w"):
        assert np.array_equal(getattr(scene, name), getattr(again, name)), name
    other = D.generate_street(seed=4, height=H, n_frames=N)
    assert not np.array_equal(scene.images, other.images)
    assert not np.array_equal(scene.static, other.static)
    assert scene.images.shape == (N, H, W, 3) and scene.images.dtype == np.uint8
    assert scene.static.dtype == np.uint8 and scene.dyn_ids.dtype == np.uint8
    assert scene.depth.dtype == np.float32 and scene.depth.shape == (N, H, W)
    assert scene.c2w.shape == (N, 4, 4) and scene.generation_seconds > 0
    assert np.isfinite(scene.depth).all() and np.isfinite(scene.depth_static).all()
    assert set(np.unique(scene.dyn_ids)) <= set(range(len(D.OBJECT_NAMES)))


def test_static_twin_equals_the_dynamic_frame_exactly_outside_the_true_mask(scene):
    outside = ~scene.dyn_mask
    assert outside.any() and scene.dyn_mask.any()
    assert np.array_equal(scene.images[outside], scene.static[outside])
    assert np.array_equal(scene.depth[outside], scene.depth_static[outside])
    assert (scene.images[scene.dyn_mask] != scene.static[scene.dyn_mask]).any(axis=-1).mean() > 0.5
    assert (scene.depth <= scene.depth_static).all()


def _mean_directions(ids: np.ndarray, oid: int) -> np.ndarray:
    dirs = erp_directions(ids.shape[1], ids.shape[2], dtype=torch.float64).numpy()
    means = [dirs[m].mean(0) for m in (ids == oid) if m.any()]
    return np.array([v / np.linalg.norm(v) for v in means])


def test_photographer_stays_in_the_same_bottom_rear_region(scene):
    masks = scene.dyn_ids == D.PHOTOGRAPHER_ID
    assert masks.all(axis=(1, 2)).sum() == 0 and masks.any(axis=(1, 2)).all()
    for k in range(1, N):
        iou = (masks[0] & masks[k]).sum() / (masks[0] | masks[k]).sum()
        assert iou >= 0.8, (k, iou)
    centre = _mean_directions(scene.dyn_ids, D.PHOTOGRAPHER_ID).mean(0)
    assert centre[2] < -0.3 and centre[1] > 0.3          # behind (-z) and below (+y, y down) the camera
    # it straddles the seam: both edge columns hold photographer pixels
    assert masks[:, :, 0].any() and masks[:, :, -1].any()


def test_pedestrian_with_the_camera_moves_little_while_the_others_sweep():
    ids = D.generate_street(seed=3, height=H, n_frames=20).dyn_ids

    def sweep(oid: int) -> float:
        means = _mean_directions(ids, oid)
        assert len(means) >= 15, oid
        centre = means.mean(0) / np.linalg.norm(means.mean(0))
        return float(np.degrees(np.arccos(np.clip(means @ centre, -1, 1))).max())

    with_camera, crossing, against = sweep(2), sweep(3), sweep(4)
    assert with_camera < 15.0
    assert crossing > 30.0 and against > 30.0
    assert with_camera < 0.5 * min(crossing, against)


def test_true_depth_matches_the_geometry(scene):
    # yaw-only cameras: a ray with down component d_y meets the ground (y = 0) at camera height / d_y
    d = erp_directions(H, W, dtype=torch.float64).numpy()
    for k in range(N):
        cam_height = -scene.c2w[k, 1, 3]
        assert 1.55 < cam_height < 1.65
        expected = cam_height / d[-1, :, 1]                # bottom row: 84 degrees below the horizon
        np.testing.assert_allclose(scene.depth_static[k, -1], expected, rtol=1e-6)
        np.testing.assert_allclose(scene.depth[k, -1], expected, rtol=1e-6)   # nothing dynamic at the nadir
    assert (scene.depth_static[:, 0] == D.SKY_DEPTH).all()  # top row: sky
    # the photographer is within arm's length of the camera (pixels whose centre ray hits it)
    centre_hit = (scene.dyn_ids == D.PHOTOGRAPHER_ID) & (scene.depth < scene.depth_static)
    assert centre_hit.any() and scene.depth[centre_hit].max() < 1.2


# ------------------------------------------------------------------ writer / loader


def test_write_then_load_round_trips_exactly(scene, written):
    data = D.load_dataset(written["on"], test_frame_every=2)
    assert data.stems == scene.stems
    assert np.array_equal(data.images, scene.images)
    assert data.gt is not None
    assert np.array_equal(data.gt.static, scene.static)
    assert np.array_equal(data.gt.dyn_ids, scene.dyn_ids)
    assert np.array_equal(data.gt.depth, scene.depth) and data.gt.depth.dtype == np.float32
    assert np.array_equal(data.gt.depth_static, scene.depth_static)
    assert np.array_equal(data.gt.c2w, scene.c2w)
    assert np.array_equal(data.w2c, np.linalg.inv(scene.c2w))        # traj.csv: repr() floats read back exactly
    assert data.test.tolist() == [True, False, True, False]
    assert sorted(data.eval_masks) == [0, 2]
    for k, m in data.eval_masks.items():
        assert np.array_equal(m, scene.dyn_mask[k])
    assert data.masks is None                                         # no masks/ for the embedded scene
    # priors: 16-bit inverse-depth-like map (nearer = larger), half-resolution flow rescaled to the image size
    assert data.invdepth.shape == (N, H, W) and data.invdepth.dtype == np.float32
    near, far = scene.depth < 1.0, scene.depth > 20.0
    assert data.invdepth[near].mean() > data.invdepth[far].mean()
    assert data.fwd_flow.shape == (N, H, W, 2) and data.bwd_valid.shape == (N, H, W)
    assert not data.bwd_valid[0].any() and not data.fwd_valid[-1].any()   # frame 0's files: zero, invalid
    assert np.array_equal(data.fwd_flow[-1], np.zeros((H, W, 2), np.float32))
    flow_files = sorted(p.name for p in (written["on"] / D.FLOW_DIR).iterdir())
    assert flow_files == sorted([f"{kind}_{s}.png" for s in scene.stems for kind in ("fwd", "bwd")])
    # static-only twin: the static renders, no dynamic pixels, the dynamic video's eval masks
    twin = D.load_dataset(written["off"], test_frame_every=2)
    assert np.array_equal(twin.images, scene.static)
    assert not twin.gt.dyn_mask.any()
    assert np.array_equal(twin.gt.depth, scene.depth_static)
    assert all(np.array_equal(twin.eval_masks[k], scene.dyn_mask[k]) for k in (0, 2))
    assert not any(p.name.startswith(".") for p in written["on"].parent.iterdir())


def test_flow_png_encoding_round_trip_and_validity(tmp_path):
    rng = np.random.default_rng(0)
    flow = rng.uniform(-40, 40, size=(6, 12, 2)).astype(np.float32)
    valid = rng.random((6, 12)) > 0.3
    flow[0, 0] = [200.0, 0.0]                     # encodes above 65535: forced invalid, as the code does
    valid[0, 0] = True
    D.write_flow_png(tmp_path / "f.png", flow, valid)
    enc = D.read_flow_png(tmp_path / "f.png")
    assert enc.dtype == np.uint16 and enc.shape == (6, 12, 3)
    dec, ok = D.decode_flow(enc)
    expect_ok = valid.copy()
    expect_ok[0, 0] = False
    assert np.array_equal(ok, expect_ok)
    assert np.abs(dec - flow)[1:].max() <= 1 / 256


def _tiny_dataset(root: Path, n: int = 8, hw: tuple[int, int] = (8, 16), flow_step: int = 1,
                  flow_hw: tuple[int, int] | None = None) -> list[str]:
    """n flat frames; the flow files of retained frame m hold the constant fwd flow (m + 1, 0) and bwd (0, -m - 1)."""
    images = np.stack([np.full(hw + (3,), 10 * k, np.uint8) for k in range(n)])
    fh = flow_hw or hw
    flows = []
    for m in range(len(range(0, n, flow_step))):
        fwd = np.zeros(fh + (2,), np.float32)
        fwd[..., 0] = m + 1
        bwd = np.zeros(fh + (2,), np.float32)
        bwd[..., 1] = -(m + 1)
        flows.append((fwd, np.ones(fh, bool), bwd, np.ones(fh, bool)))
    D.write_dataset(root, images, invdepth_png=np.ones((n,) + hw, np.uint16), flows=flows, flow_step=flow_step,
                    masks=np.ones((n,) + hw, bool), w2c=np.tile(np.eye(4), (n, 1, 1)))
    return [D.STEM_FORMAT.format(k) for k in range(n)]


@pytest.mark.parametrize("step", [1, 4])
def test_loader_reads_fwd_flow_from_the_next_frame_file(tmp_path, step):
    stems = _tiny_dataset(tmp_path / "s", flow_step=step)
    assert (tmp_path / "s" / D.FLOW_DIR / D.flow_file_name("fwd", stems[0], step)).is_file()
    data = D.load_dataset(tmp_path / "s", frame_step=step, test_frame_every=10)
    n = len(stems[::step])
    assert data.stems == stems[::step] and data.test.tolist() == [k % 10 == 0 for k in range(n)]
    for i in range(n):
        assert np.all(data.fwd_flow[i, ..., 0] == (i + 1) % n + 1)      # file named after frame i+1 (wraps)
        assert np.all(data.bwd_flow[i, ..., 1] == -(i + 1))              # file named after frame i
    assert data.masks.all() and data.w2c.shape == (n, 4, 4)


def test_half_resolution_flow_is_rescaled_to_pixels_of_the_image(tmp_path):
    _tiny_dataset(tmp_path / "s", n=3, hw=(8, 16), flow_hw=(4, 8))
    data = D.load_dataset(tmp_path / "s")
    assert data.fwd_flow.shape == (3, 8, 16, 2)
    np.testing.assert_allclose(data.fwd_flow[0, ..., 0], 2 * 2.0)          # frame 1's file holds 2 px at half size


# ------------------------------------------------------------------ validation errors


def test_missing_scene_images_folder_and_depth_folder_are_named(tmp_path, copy_on):
    with pytest.raises(MissingDatasetError, match="nowhere"):
        D.load_dataset(tmp_path / "nowhere")
    shutil.rmtree(copy_on / D.DEPTH_DIR)
    with pytest.raises(MissingDatasetError, match=r"depth.*Google Drive"):
        D.load_dataset(copy_on)
    assert D.load_dataset(copy_on, load_depth=False).invdepth is None
    shutil.rmtree(copy_on / D.IMAGE_DIR)
    with pytest.raises(MissingDatasetError, match="images"):
        D.load_dataset(copy_on)


def test_missing_ground_truth_file_is_named(copy_on):
    (copy_on / D.GT_DIR / D.GT_POSES).unlink()
    with pytest.raises(MissingDatasetError, match="gt_poses.json"):
        D.load_dataset(copy_on)
    assert D.load_dataset(copy_on, load_gt=False).gt is None


def test_frame_count_mismatch_names_the_missing_file(copy_on):
    (copy_on / D.DEPTH_DIR / "frame_0002.png").unlink()
    with pytest.raises(DataValidationError, match=r"frame counts disagree.*3 \.png files.*4 frames.*frame_0002\.png"):
        D.load_dataset(copy_on)


def test_missing_flow_file_is_named(copy_on):
    (copy_on / D.FLOW_DIR / "fwd_frame_0003.png").unlink()
    with pytest.raises(DataValidationError, match=r"fwd_frame_0003\.png is missing"):
        D.load_dataset(copy_on)


def test_extra_frame_without_image_is_named(copy_on):
    shutil.copy(copy_on / D.GT_DIR / D.GT_DEPTH / "frame_0000.npy", copy_on / D.GT_DIR / D.GT_DEPTH / "frame_0009.npy")
    with pytest.raises(DataValidationError, match=r"frame_0009\.npy has no frame"):
        D.load_dataset(copy_on)


def test_wrong_erp_aspect_is_named(tmp_path):
    D.write_dataset(tmp_path / "s", np.zeros((2, 8, 12, 3), np.uint8))
    with pytest.raises(DataValidationError, match=r"frame_0000\.png is 12x8.*not a 2:1"):
        D.load_dataset(tmp_path / "s", load_depth=False, load_flow=False)


def test_images_of_different_sizes_are_named(copy_on):
    D._write_rgb(copy_on / D.IMAGE_DIR / "frame_0001.png", np.zeros((8, 16, 3), np.uint8))
    with pytest.raises(DataValidationError, match=r"different sizes.*frame_0001\.png is 16x8"):
        D.load_dataset(copy_on)


def test_nan_depth_is_named(copy_on):
    path = copy_on / D.GT_DIR / D.GT_DEPTH / "frame_0001.npy"
    depth = np.load(path)
    depth[3, 4] = np.nan
    np.save(path, depth)
    with pytest.raises(DataValidationError, match=r"gt_depth/frame_0001\.npy contains NaN"):
        D.load_dataset(copy_on)


@pytest.mark.parametrize("rel", ["images/frame_0001.png", "flow_ds/bwd_frame_0002.png", "depth/frame_0003.png"])
def test_corrupt_files_are_named(copy_on, rel):
    (copy_on / rel).write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(DataValidationError, match=rel.split("/")[1].replace(".", r"\.") + ".*cannot be decoded"):
        D.load_dataset(copy_on)


def test_short_trajectory_is_named(copy_on):
    lines = (copy_on / D.TRAJ_FILE).read_text().splitlines()
    (copy_on / D.TRAJ_FILE).write_text("\n".join(lines[:2]) + "\n")
    with pytest.raises(DataValidationError, match=r"traj\.csv has 2 poses but images/ has 4"):
        D.load_dataset(copy_on)


# ------------------------------------------------------------------ atomic writes


def _fail_after(monkeypatch, n_calls: int) -> None:
    real = D._imwrite
    calls = {"n": 0}

    def flaky(path, array):
        calls["n"] += 1
        if calls["n"] > n_calls:
            raise KeyboardInterrupt("killed mid-write")
        real(path, array)

    monkeypatch.setattr(D, "_imwrite", flaky)


def test_interrupted_write_leaves_no_dataset_behind(scene, tmp_path, monkeypatch):
    _fail_after(monkeypatch, 30)          # inside the second (static twin) folder
    with pytest.raises(KeyboardInterrupt):
        D.write_street(scene, tmp_path / D.STREET_ON, static_dest=tmp_path / D.STREET_OFF)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_rewrite_keeps_the_previous_dataset(scene, written, tmp_path, monkeypatch):
    dest = tmp_path / "scene"
    shutil.copytree(written["on"], dest)
    before = sorted(p.relative_to(dest) for p in dest.rglob("*"))
    _fail_after(monkeypatch, 20)
    with pytest.raises(KeyboardInterrupt):
        D.write_street(D.generate_street(seed=9, height=H, n_frames=N), dest)
    assert [p.name for p in tmp_path.iterdir()] == ["scene"]
    assert sorted(p.relative_to(dest) for p in dest.rglob("*")) == before
    assert np.array_equal(D.load_dataset(dest, test_frame_every=2).images, scene.images)
