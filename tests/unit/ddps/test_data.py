"""DDPS data: the official on-disk layout (reader and writer) on tiny fixtures, normal encoding, mask
erosion, the geometry generator, and the clear errors bad input gets."""

from __future__ import annotations

import numpy as np
import pytest
from kedro.io import DatasetError

from cvpr24.core.ingest import MissingDatasetError
from cvpr24.core.validation import DataValidationError
from cvpr24.pipelines.ddps import data as D
from cvpr24.pipelines.ddps import model as M
from cvpr24.pipelines.ddps import nodes


def write_fixture(root, h=8, w=10, scenes=("objA", "objB"), trailing=(True, False), n_lights=144):
    """Two scenes in the official layout: 144 PNGs of h x w, normals in the [0, 1] encoding, a mask npy,
    one list file with and one without a trailing newline."""
    from PIL import Image

    rng = np.random.default_rng(0)
    normals = {}
    for s in scenes:
        folder = root / s / "main" / "diffuse"
        folder.mkdir(parents=True)
        for j in range(n_lights):
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(folder / f"{j:03d}.png")
        n = np.zeros((h, w, 3))
        n[..., 0], n[..., 1] = rng.uniform(-0.3, 0.3, (2, h, w))
        n[..., 2] = -1
        n /= np.linalg.norm(n, axis=-1, keepdims=True)
        normals[s] = n
        np.save(root / s / "geo_normal_img.npy", ((1 - n) / 2).astype(np.float32))
        mask = np.zeros((h, w, 3), np.uint8)
        mask[1:-1, 1:-1] = 255
        np.save(root / s / "geo_normal_img_mask.npy", mask)
    (root / D.TRAIN_LIST).write_text(scenes[0] + ("\n" if trailing[0] else ""))
    (root / D.TEST_LIST).write_text(scenes[1] + ("\n" if trailing[1] else ""))
    return normals


def test_reader_reads_the_official_layout(tmp_path):
    normals = write_fixture(tmp_path)
    layout = D.read_layout(tmp_path)
    assert layout["train"] == ["objA"] and layout["test"] == ["objB"]  # with and without trailing newline
    sc = layout["scenes"]["objA"]
    assert sc["basis"].shape == (144, 8, 10, 3) and sc["basis"].dtype == np.uint8
    assert np.abs(sc["normals"] - normals["objA"]).max() < 1e-6
    assert (sc["normals"][..., 2] < 0).all()  # decoded n = -(2v - 1): camera-facing
    assert sc["mask"].sum() == 6 * 8


def test_list_files_with_and_without_trailing_newline(tmp_path):
    (tmp_path / "a.txt").write_text("scene_1\nscene_2\n")
    (tmp_path / "b.txt").write_text("scene_1\nscene_2")
    assert D.read_list(tmp_path / "a.txt") == D.read_list(tmp_path / "b.txt") == ["scene_1", "scene_2"]


def test_normal_encoding_round_trip_through_8_bit():
    rng = np.random.default_rng(1)
    n = rng.normal(size=(50, 3))
    n[:, 2] = -np.abs(n[:, 2])
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    v = D.encode_normals(n)
    assert np.allclose(v, (1 - n) / 2) and np.allclose(D.encode_normals(np.array([0, 0, -1.0])), [0.5, 0.5, 1.0])
    assert np.abs(D.decode_normals(np.round(v * 255) / 255) - n).max() < 2 / 255 * 2


def test_writer_and_reader_round_trip(tmp_path):
    sc = D.make_scene("ellipsoid", 0, 16, 20, 36.0, 0.5)
    basis = np.random.default_rng(0).integers(0, 255, (144, 16, 20, 3), dtype=np.uint8)
    layout = {"train": ["a"], "test": ["b"], "scenes": {k: {"basis": basis, "normals": sc["normals"], "mask": sc["mask"]}
                                                          for k in ("a", "b")}}
    D.DDPSLayoutDataset(str(tmp_path / "lay")).save(layout)
    back = D.DDPSLayoutDataset(str(tmp_path / "lay")).load()
    assert (back["scenes"]["a"]["basis"] == basis).all()
    assert np.abs(back["scenes"]["b"]["normals"][sc["mask"]] - sc["normals"][sc["mask"]]).max() < 1e-6
    assert (back["scenes"]["b"]["mask"] == sc["mask"]).all()


def test_missing_dataset_says_where_to_get_it(tmp_path):
    with pytest.raises(MissingDatasetError) as err:
        D.read_layout(tmp_path / "nowhere")
    assert "nowhere" in str(err.value) and "DIR dataset" in str(err.value) and "README" in str(err.value)


def test_real_source_without_a_root_is_a_missing_dataset(tmp_path):
    params = _real_params(tmp_path)
    with pytest.raises(MissingDatasetError, match="README"):
        nodes.ingest({**params, "real": {}}, {}, {"seed": 0})
    with pytest.raises(MissingDatasetError, match="light-position calibration"):
        nodes.lights_from({**params, "real": {**params["real"], "light_positions": str(tmp_path / "no.npy")}})


def test_corrupt_png_is_named(tmp_path):
    write_fixture(tmp_path)
    bad = tmp_path / "objB" / "main" / "diffuse" / "017.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DatasetError) as err:
        D.read_layout(tmp_path)
    assert "017.png" in str(err.value)


def test_wrong_shape_normals_are_named(tmp_path):
    write_fixture(tmp_path)
    np.save(tmp_path / "objA" / "geo_normal_img.npy", np.zeros((8, 9, 3), np.float32))
    with pytest.raises(DatasetError) as err:
        D.read_layout(tmp_path)
    assert "objA/geo_normal_img.npy" in str(err.value) and "(8, 9, 3)" in str(err.value)


def test_missing_basis_image_and_empty_split(tmp_path):
    write_fixture(tmp_path)
    (tmp_path / "objA" / "main" / "diffuse" / "143.png").unlink()
    with pytest.raises(MissingDatasetError, match="143.png"):
        D.read_layout(tmp_path)
    (tmp_path / D.TEST_LIST).write_text("\n")
    with pytest.raises(DatasetError, match="empty split"):
        D.read_layout(tmp_path)


def _real_params(root):
    return {"source": "real", "display": {"rows": 9, "cols": 16, "x_range": [-0.56, 0.56], "y_range": [-0.61, 0.0],
                                          "z_range": [0.25, 0.03]},
            "real": {"root": str(root), "resizing_factor": 1, "basis_column_flip": True, "focal": 18.0}}


def test_ingest_of_real_layout_flags_nan_normals_by_sample(tmp_path):
    write_fixture(tmp_path)
    v = np.load(tmp_path / "objB" / "geo_normal_img.npy")
    v[3, 3, 0] = np.nan
    np.save(tmp_path / "objB" / "geo_normal_img.npy", v)
    with pytest.raises(DataValidationError) as err:
        nodes.ingest(_real_params(tmp_path), {}, {"seed": 0})
    assert "objB" in str(err.value) and "n_nonfinite" in str(err.value)


def test_ingest_and_preprocess_of_real_layout(tmp_path):
    write_fixture(tmp_path, h=12, w=14)
    layout, truth, manifest = nodes.ingest(_real_params(tmp_path), {}, {"seed": 0})
    assert set(manifest["split"]) == {"train", "test"} and (manifest["family"] == "real").all()
    train = {"pt_ref_z": 0.5, "runs": [{"run_id": "r", "init": "OLAT", "n_patterns": 4, "channels": "rgb",
                                        "basis": "realistic"}]}
    mi, runs = nodes.preprocess(layout, truth, manifest, {"mask_erosion": 3, "min_pixels": 5, "median_blur": True},
                                _real_params(tmp_path), train)
    assert bool(mi["basis_column_flip"]) and mi["train_basis"].shape[1] == 144
    assert mi["train_valid"].sum() == 8 * 10 and "test_points" not in mi


def test_unknown_label_is_rejected(tmp_path, monkeypatch):
    write_fixture(tmp_path)
    real = nodes._real

    def relabel(data):
        layout, truth, meta = real(data)
        meta["objA"]["family"] = "teapot"
        return layout, truth, meta

    monkeypatch.setattr(nodes, "_real", relabel)
    with pytest.raises(DataValidationError) as err:
        nodes.ingest(_real_params(tmp_path), {}, {"seed": 0})
    assert "objA" in str(err.value) and "family" in str(err.value)


def test_mask_erosion_7x7():
    stripe = np.zeros((30, 30), bool)
    stripe[:, 10:16] = True  # 6 px wide
    assert not D.erode(stripe, 7).any()
    yy, xx = np.mgrid[:41, :41]
    disk = (yy - 20) ** 2 + (xx - 20) ** 2 <= 12**2
    er = D.erode(disk, 7)
    shrink = np.sqrt(disk.sum() / np.pi) - np.sqrt(er.sum() / np.pi)
    assert 3.0 <= shrink <= 4.5  # a 7x7 square removes 3 px (3-4 px on a disk, whose rim is curved)
    assert not er[20, 8 + 2] and not er[20, 32 - 2] and er[20, 20]


def test_generator_families_have_camera_facing_unit_normals():
    for fam in D.FAMILIES:
        sc = D.make_scene(fam, 5, 32, 38, 72.0, 0.5)
        n = sc["normals"][sc["mask"]]
        assert sc["mask"].sum() > 50, fam
        assert np.allclose(np.linalg.norm(n, axis=-1), 1, atol=1e-6) and (n[:, 2] < 0).all(), fam
        assert sc["albedo"][sc["mask"]].min() >= 0.2 * 0.8 - 1e-6 and 0 <= sc["rho_s"] <= 0.4


def test_basis_capture_separation_removes_specular():
    rng = np.random.default_rng(0)
    d = rng.uniform(0.1, 0.4, (4, 30, 3))
    s = rng.uniform(0.0, 0.3, (4, 30, 3))
    b = D.capture_basis(d, s, rng, noise_sigma=0.0, phi_deg=45.0)
    assert np.abs(b / 255.0 - d).max() < 3 / 255  # quantisation only
    assert np.abs(b / 255.0 - (d + s)).max() > 0.1


def test_display_grid_matches_the_calibration_extent():
    g = D.display_grid()
    assert g.shape == (9, 16, 3)
    assert np.isclose(g[0, 0], [-0.56, -0.61, 0.25]).all() and np.isclose(g[-1, -1], [0.56, 0.0, 0.03]).all()
    e = D.light_energy(g, M.exposure(4))
    assert e > 0
