"""LTM's camera files (`ltm/colmap.py`): COLMAP binary round trip for every camera model, the text reader on a
hand-written fixture in COLMAP's text format, quaternions, agreement of the COLMAP / LLFF / transforms.json
conventions (same camera centre and viewing direction from the raw files), and the errors for truncated, corrupt or
incomplete files."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest

from cvpr24.core.ingest import MissingDatasetError
from cvpr24.core.validation import DataValidationError
from cvpr24.pipelines.ltm import colmap as C


# ------------------------------------------------------------------------------------------------ helpers
def random_model(seed: int = 0) -> C.ColmapModel:
    """One camera of every COLMAP model, three images (one without 2D points, one with a non-ASCII name) and 3D
    points with tracks of length 0-3."""
    rng = np.random.default_rng(seed)
    cams = {m.model_id + 3: C.ColmapCamera(m.model_id + 3, m.name, int(rng.integers(10, 5000)),
                                           int(rng.integers(10, 5000)), rng.normal(size=m.num_params) * 100)
            for m in C.CAMERA_MODELS}
    q = rng.normal(size=(3, 4))
    imgs = {
        7: C.ColmapImage(7, q[0], rng.normal(size=3), 3, "a/img_001.jpg", rng.random((5, 2)) * 100,
                         [1, -1, 9, 2**40, -1]),
        2: C.ColmapImage(2, q[1], rng.normal(size=3), 4, "b_ü.png"),
        11: C.ColmapImage(11, q[2], rng.normal(size=3), 13, "c.JPG", rng.random((2, 2)), [-1, 5]),
    }
    tracks = [[], [(7, 0)], [(7, 3), (11, 1), (2, 0)]]
    pts = C.Points3D.from_tracks([1, 5, 2**40], rng.normal(size=(3, 3)), rng.integers(0, 256, (3, 3)),
                                 rng.random(3), tracks)
    return C.ColmapModel(cams, imgs, pts)


def assert_models_equal(a: C.ColmapModel, b: C.ColmapModel) -> None:
    assert list(a.cameras) == list(b.cameras) and list(a.images) == list(b.images)
    for k, cam in a.cameras.items():
        other = b.cameras[k]
        assert (cam.id, cam.model, cam.width, cam.height) == (other.id, other.model, other.width, other.height)
        np.testing.assert_array_equal(cam.params, other.params)
    for k, im in a.images.items():
        other = b.images[k]
        assert (im.id, im.camera_id, im.name) == (other.id, other.camera_id, other.name)
        for key in ("qvec", "tvec", "xys", "point3D_ids"):
            np.testing.assert_array_equal(getattr(im, key), getattr(other, key))
    for key in ("ids", "xyz", "rgb", "error", "track_offsets", "track_image_ids", "track_point2D_idxs"):
        np.testing.assert_array_equal(getattr(a.points3D, key), getattr(b.points3D, key))


def orbit(n: int = 5, width: int = 40, height: int = 30, f: float = 35.0) -> tuple[C.Cameras, np.ndarray, np.ndarray]:
    eyes, targets, c2w = [], [], []
    for k in range(n):
        a = 2 * math.pi * k / n
        eye = np.array([2 * math.cos(a), 0.3 + 0.2 * k, 2 * math.sin(a)])
        target = np.array([0.1 * k, 0.1, -0.05 * k])
        eyes.append(eye)
        targets.append(target)
        c2w.append(C.look_at_c2w(eye, target))
    cams = C.Cameras([f"im_{k:02d}.png" for k in range(n)], width, height, f, f, width / 2, height / 2,
                     np.stack(c2w), near=np.full(n, 0.5), far=np.full(n, 9.0))
    return cams, np.stack(eyes), np.stack(targets)


# ------------------------------------------------------------------------------------------------ binary format
def test_binary_round_trip_every_camera_model(tmp_path: Path) -> None:
    model = random_model()
    C.write_model(model, tmp_path)
    back = C.read_model(tmp_path)
    assert back.path == tmp_path
    assert_models_equal(model, back)
    assert back.images[7].point3D_ids.tolist() == [1, -1, 9, 2**40, -1]
    assert back.points3D.track(2) == [(7, 3), (11, 1), (2, 0)] and back.points3D.track(0) == []
    assert {c.model for c in back.cameras.values()} >= {"SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "OPENCV"}


def test_binary_layout_matches_colmap_documentation(tmp_path: Path) -> None:
    """Bytes of a one-camera file written by hand from COLMAP's documented layout read back as expected."""
    raw = struct.pack("<Q", 1) + struct.pack("<IiQQ", 5, 1, 640, 480) + struct.pack("<4d", 500.0, 510.0, 320.0, 240.0)
    (tmp_path / "cameras.bin").write_bytes(raw)
    cam = C.read_cameras_binary(tmp_path / "cameras.bin")[5]
    assert (cam.model, cam.width, cam.height, cam.params.tolist()) == ("PINHOLE", 640, 480, [500, 510, 320, 240])
    C.write_cameras_binary({5: cam}, tmp_path / "again.bin")
    assert (tmp_path / "again.bin").read_bytes() == raw

    img = struct.pack("<Q", 1) + struct.pack("<I4d3dI", 9, 1, 0, 0, 0, 1, 2, 3, 5) + b"x.png\x00" + \
        struct.pack("<Q", 1) + struct.pack("<ddq", 10.5, 20.25, -1)
    (tmp_path / "images.bin").write_bytes(img)
    im = C.read_images_binary(tmp_path / "images.bin")[9]
    assert (im.name, im.camera_id, im.tvec.tolist(), im.xys.tolist(), im.point3D_ids.tolist()) == \
        ("x.png", 5, [1, 2, 3], [[10.5, 20.25]], [-1])
    # COLMAP writes an invalid point3D id as uint64 max: the same 8 bytes as int64 -1
    assert struct.pack("<Q", 2**64 - 1) == struct.pack("<q", -1)


@pytest.mark.parametrize("fname, cut, where", [
    ("cameras.bin", 5, "camera record"),
    ("images.bin", 40, "image record"),
    ("points3D.bin", 7, "3D point record"),
])
def test_truncated_binary_names_file_record_and_expectation(tmp_path: Path, fname: str, cut: int, where: str) -> None:
    C.write_model(random_model(), tmp_path)
    path = tmp_path / fname
    path.write_bytes(path.read_bytes()[:-cut])
    with pytest.raises(C.ColmapFormatError) as err:
        C.read_model(tmp_path)
    msg = str(err.value)
    assert str(path) in msg and where in msg and "expected" in msg and "model_converter" in msg
    assert isinstance(err.value, DataValidationError)


def test_corrupt_binaries(tmp_path: Path) -> None:
    C.write_model(random_model(), tmp_path)
    cams = tmp_path / "cameras.bin"
    good = cams.read_bytes()
    # model id of the first record (bytes 12..16) -> 42
    cams.write_bytes(good[:12] + struct.pack("<i", 42) + good[16:])
    with pytest.raises(C.ColmapFormatError, match=r"cameras\.bin: camera record 1 of 11 .*model id 42.*PINHOLE"):
        C.read_cameras_binary(cams)
    # trailing garbage: the header's count and the records disagree
    cams.write_bytes(good + b"\x00" * 5)
    with pytest.raises(C.ColmapFormatError, match=r"5 unexpected bytes after the last of the 11 cameras"):
        C.read_cameras_binary(cams)
    # an absurd point count in the header
    pts = tmp_path / "points3D.bin"
    pts.write_bytes(struct.pack("<Q", 10**12) + pts.read_bytes()[8:])
    with pytest.raises(C.ColmapFormatError, match=r"points3D\.bin: the header announces 1000000000000 3D points"):
        C.read_points3D_binary(pts)
    # an image name that never ends
    (tmp_path / "images.bin").write_bytes(struct.pack("<Q", 1) + struct.pack("<I4d3dI", 1, 1, 0, 0, 0, 0, 0, 0, 1)
                                          + b"no_nul")
    with pytest.raises(C.ColmapFormatError, match=r"images\.bin: truncated in image record 1 of 1 .*never ends"):
        C.read_images_binary(tmp_path / "images.bin")
    with pytest.raises(MissingDatasetError, match="nothing.bin"):
        C.read_cameras_binary(tmp_path / "nothing.bin")
    (tmp_path / "cameras.bin").unlink()
    with pytest.raises(MissingDatasetError, match="no COLMAP sparse model"):
        C.read_model(tmp_path)


def test_image_referring_to_unknown_camera(tmp_path: Path) -> None:
    model = random_model()
    model.images[2].camera_id = 99
    C.write_model(model, tmp_path)
    with pytest.raises(C.ColmapFormatError, match=r"image 2 \(b_ü\.png\) refers to camera 99"):
        C.read_model(tmp_path)


def test_images_missing_on_disk(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(b"x")
    with pytest.raises(MissingDatasetError, match=r"1 image\(s\) that sparse/0 lists are missing .*\['b.png'\]"):
        C.check_image_files(["a.png", "b.png"], tmp_path / "images", "sparse/0")
    with pytest.raises(MissingDatasetError, match="image folder .*images_4"):
        C.check_image_files(["a.png"], tmp_path / "images_4", "sparse/0")


# ------------------------------------------------------------------------------------------------ text format
CAMERAS_TXT = """# Camera list with one line of data per camera:
#   CAMERA_ID, MODEL, WIDTH, HEIGHT, PARAMS[]
# Number of cameras: 4
1 SIMPLE_PINHOLE 3072 2304 2559.81 1536 1152
2 PINHOLE 3072 2304 2560.56 2560.56 1536 1152
3 SIMPLE_RADIAL 3072 2304 2559.69 1536 1152 -0.0218531
4 OPENCV 640 480 500.5 501.5 320.25 240.75 0.01 -0.02 0.001 0.002
"""

IMAGES_TXT = """# Image list with two lines of data per image:
#   IMAGE_ID, QW, QX, QY, QZ, TX, TY, TZ, CAMERA_ID, NAME
#   POINTS2D[] as (X, Y, POINT3D_ID)
# Number of images: 3, mean observations per image: 1.0
1 0.851773 0.0165051 0.503764 -0.142941 -0.737434 1.02973 3.74354 1 P1180141.JPG
2362.39 248.498 58396 1784.7 268.254 59027 1784.7 268.254 -1
2 0.7071067811865476 0 0 0.7071067811865476 1 2 3 2 my image.png

3 1 0 0 0 0 0 0 3 last.jpg
10 20 -1
"""

POINTS_TXT = """# 3D point list with one line of data per point:
#   POINT3D_ID, X, Y, Z, R, G, B, ERROR, TRACK[] as (IMAGE_ID, POINT2D_IDX)
58396 1.5 -0.25 3.0 255 128 0 0.5 1 0 3 0
59027 0 0 1 1 2 3 0.125
"""


def test_text_reader_on_handwritten_fixture(tmp_path: Path) -> None:
    (tmp_path / "cameras.txt").write_text(CAMERAS_TXT)
    (tmp_path / "images.txt").write_text(IMAGES_TXT)
    (tmp_path / "points3D.txt").write_text(POINTS_TXT)
    model = C.read_model(tmp_path)
    assert [c.model for c in model.cameras.values()] == ["SIMPLE_PINHOLE", "PINHOLE", "SIMPLE_RADIAL", "OPENCV"]
    assert model.cameras[4].params.tolist() == [500.5, 501.5, 320.25, 240.75, 0.01, -0.02, 0.001, 0.002]
    assert model.cameras[3].params[-1] == pytest.approx(-0.0218531)
    im1, im2, im3 = model.images[1], model.images[2], model.images[3]
    assert im1.name == "P1180141.JPG" and im1.camera_id == 1
    assert im1.qvec.tolist() == [0.851773, 0.0165051, 0.503764, -0.142941]
    assert im1.point3D_ids.tolist() == [58396, 59027, -1] and im1.xys[0].tolist() == [2362.39, 248.498]
    assert im2.name == "my image.png" and len(im2.xys) == 0  # the empty POINTS2D line belongs to image 2
    assert im3.xys.tolist() == [[10, 20]] and im3.point3D_ids.tolist() == [-1]
    np.testing.assert_allclose(im2.rotation, [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    assert model.points3D.ids.tolist() == [58396, 59027]
    assert model.points3D.track(0) == [(1, 0), (3, 0)] and model.points3D.track(1) == []
    assert model.points3D.rgb[0].tolist() == [255, 128, 0]
    # the same model through the binary writer and reader
    C.write_model(model, tmp_path / "bin")
    assert_models_equal(model, C.read_model(tmp_path / "bin"))


def test_text_reader_errors(tmp_path: Path) -> None:
    (tmp_path / "cameras.txt").write_text("1 KANNALA 10 10 1 2 3\n")
    with pytest.raises(C.ColmapFormatError, match=r"cameras\.txt: line 1 \(camera 1\) has camera model 'KANNALA'"):
        C.read_cameras_text(tmp_path / "cameras.txt")
    (tmp_path / "cameras.txt").write_text("# c\n1 PINHOLE 10 10 1 2 3\n")
    with pytest.raises(C.ColmapFormatError, match=r"line 2: a PINHOLE camera has 4 parameters"):
        C.read_cameras_text(tmp_path / "cameras.txt")
    (tmp_path / "images.txt").write_text("1 1 0 0 0 0 0 x 1 a.png\n\n")
    with pytest.raises(C.ColmapFormatError, match=r"images\.txt, line 1: cannot parse the image pose"):
        C.read_images_text(tmp_path / "images.txt")


# ------------------------------------------------------------------------------------------------ rotations
def test_qvec_rotation_round_trip_and_known_rotation() -> None:
    rng = np.random.default_rng(1)
    q = rng.normal(size=(200, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[q[:, 0] < 0] *= -1
    r = C.qvec_to_rotmat(q)
    np.testing.assert_allclose(r @ np.swapaxes(r, 1, 2), np.broadcast_to(np.eye(3), r.shape), atol=1e-12)
    np.testing.assert_allclose(np.linalg.det(r), 1.0, atol=1e-12)
    np.testing.assert_allclose(C.rotmat_to_qvec(r), q, atol=1e-12)
    # 90 degrees about +z (right-handed): x -> y
    s = math.sqrt(0.5)
    rz = C.qvec_to_rotmat([s, 0, 0, s])
    np.testing.assert_allclose(rz, [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-15)
    np.testing.assert_allclose(rz @ [1, 0, 0], [0, 1, 0], atol=1e-15)
    np.testing.assert_allclose(C.rotmat_to_qvec(rz), [s, 0, 0, s], atol=1e-15)
    # 180-degree turns (qw = 0) and the identity
    np.testing.assert_allclose(C.rotmat_to_qvec(np.diag([1.0, -1.0, -1.0])), [0, 1, 0, 0], atol=1e-15)
    np.testing.assert_allclose(C.rotmat_to_qvec(np.eye(3)), [1, 0, 0, 0], atol=1e-15)


# ------------------------------------------------------------------------------------------------ conventions
def test_colmap_llff_transforms_agree_on_centres_and_viewing_directions(tmp_path: Path) -> None:
    cams, eyes, targets = orbit()
    fwd = (targets - eyes) / np.linalg.norm(targets - eyes, axis=1, keepdims=True)
    C.write_model(C.colmap_from_cameras(cams), tmp_path / "sparse")
    C.write_poses_bounds(tmp_path / "poses_bounds.npy", cams)
    C.write_transforms_json(tmp_path / "transforms.json", cams)

    # raw files, read without the library's conversions
    imgs = C.read_images_binary(tmp_path / "sparse" / "images.bin")
    r = np.stack([C.qvec_to_rotmat(imgs[i + 1].qvec) for i in range(len(cams))])
    t = np.stack([imgs[i + 1].tvec for i in range(len(cams))])
    colmap_centre, colmap_fwd = -np.einsum("nji,nj->ni", r, t), r[:, 2, :]  # -R^T t ; R^T [0, 0, 1]
    llff = np.load(tmp_path / "poses_bounds.npy")
    assert llff.shape == (5, 17) and llff.dtype == np.float64
    m = llff[:, :15].reshape(-1, 3, 5)
    llff_centre, llff_fwd = m[:, :, 3], -m[:, :, 2]  # columns: down, right, back, centre, hwf
    np.testing.assert_allclose(m[:, :, 4], np.tile([30.0, 40.0, 35.0], (5, 1)))
    np.testing.assert_allclose(llff[:, 15:], np.tile([0.5, 9.0], (5, 1)))
    meta = json.loads((tmp_path / "transforms.json").read_text())
    gl = np.array([fr["transform_matrix"] for fr in meta["frames"]])
    tj_centre, tj_fwd = gl[:, :3, 3], -gl[:, :3, 2]  # OpenGL: the camera looks down -z
    for centre, f in ((colmap_centre, colmap_fwd), (llff_centre, llff_fwd), (tj_centre, tj_fwd)):
        np.testing.assert_allclose(centre, eyes, atol=1e-12)
        np.testing.assert_allclose(f, fwd, atol=1e-12)
    # image "down" agrees too: LLFF's first column, minus OpenGL's up, OpenCV's y
    np.testing.assert_allclose(m[:, :, 0], -gl[:, :3, 1], atol=1e-12)
    np.testing.assert_allclose(m[:, :, 0], r[:, 1, :], atol=1e-12)
    assert meta["camera_angle_x"] == pytest.approx(2 * math.atan(40 / 70)) and meta["fl_x"] == 35.0

    # through the readers: the same Cameras from all three
    a = C.cameras_from_colmap(C.read_model(tmp_path / "sparse"))
    b = C.read_poses_bounds(tmp_path / "poses_bounds.npy", cams.names)
    c, files = C.read_transforms_json(tmp_path / "transforms.json")
    assert files[0] == tmp_path / "images" / "im_00.png" and c.names[0] == "images/im_00.png"
    for other in (a, b, c):
        np.testing.assert_allclose(other.c2w, cams.c2w, atol=1e-12)
        for key in ("width", "height", "fx", "fy", "cx", "cy"):
            np.testing.assert_allclose(getattr(other, key), getattr(cams, key))
    np.testing.assert_allclose(b.near, 0.5)
    # the look-at target projects onto the principal point; the centre has depth 0
    for i in range(len(cams)):
        uv, z = a.project(i, targets[i:i + 1])
        np.testing.assert_allclose(uv[0], [20.0, 15.0], atol=1e-9)
        assert z[0] == pytest.approx(np.linalg.norm(targets[i] - eyes[i]))
    o, d = a.pixel_rays(0, np.array([20.0]), np.array([15.0]))
    np.testing.assert_allclose(d[0], fwd[0], atol=1e-12)
    # a point below the optical axis (world -y) appears lower in the image (larger v): OpenCV y is down
    uv, _ = a.project(0, targets[:1] - [[0, 0.1, 0]])
    assert uv[0, 1] > 15.0


def test_llff_and_opengl_axis_maps_invert() -> None:
    cams, _, _ = orbit()
    np.testing.assert_allclose(C.llff_to_opencv(C.opencv_to_llff(cams.c2w)), cams.c2w, atol=1e-15)
    np.testing.assert_allclose(C.opengl_to_opencv(C.opencv_to_opengl(cams.c2w)), cams.c2w, atol=1e-15)
    q, t = C.c2w_to_colmap_pose(cams.c2w[2])
    np.testing.assert_allclose(C.colmap_pose_to_c2w(q, t), cams.c2w[2], atol=1e-12)


def test_llff_refuses_what_it_cannot_store_and_reader_checks(tmp_path: Path) -> None:
    cams, _, _ = orbit()
    cams.cx[0] += 2.0
    with pytest.raises(ValueError, match="centred principal point"):
        C.write_poses_bounds(tmp_path / "pb.npy", cams)
    cams, _, _ = orbit()
    C.write_poses_bounds(tmp_path / "pb.npy", cams)
    with pytest.raises(C.ColmapFormatError, match="holds 5 poses but there are 4 images"):
        C.read_poses_bounds(tmp_path / "pb.npy", cams.names[:4])
    arr = np.load(tmp_path / "pb.npy")
    arr[3, 7] = np.nan
    np.save(tmp_path / "nan.npy", arr)
    with pytest.raises(C.ColmapFormatError, match=r"nan\.npy: rows \[3\] hold NaN"):
        C.read_poses_bounds(tmp_path / "nan.npy")
    np.save(tmp_path / "shape.npy", arr[:, :15])
    with pytest.raises(C.ColmapFormatError, match=r"expected an \(N, 17\) float array"):
        C.read_poses_bounds(tmp_path / "shape.npy")


def test_transforms_json_nerf_synthetic_style(tmp_path: Path) -> None:
    """camera_angle_x only, paths without extension, image size from the file."""
    from PIL import Image

    (tmp_path / "train").mkdir()
    Image.new("RGB", (20, 10)).save(tmp_path / "train" / "r_0.png")
    gl = np.eye(4)
    gl[:3, 3] = [0, 0, 4]
    meta = {"camera_angle_x": 2 * math.atan(0.5), "frames": [{"file_path": "./train/r_0", "transform_matrix":
                                                              gl.tolist()}]}
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    cams, files = C.read_transforms_json(tmp_path / "transforms.json")
    assert files == [tmp_path / "train" / "r_0.png"]
    got = (cams.width[0], cams.height[0], cams.fx[0], cams.fy[0], cams.cx[0], cams.cy[0])
    np.testing.assert_allclose(got, (20, 10, 20, 20, 10, 5), rtol=1e-12)
    np.testing.assert_allclose(cams.forward[0], [0, 0, -1])  # OpenGL identity looks down -z
    meta["frames"][0]["transform_matrix"][0][0] = 3.0
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(DataValidationError, match="not a proper rotation"):
        C.read_transforms_json(tmp_path / "transforms.json")
    meta["frames"][0]["transform_matrix"][0][0] = 1.0
    meta["k1"] = 0.1
    (tmp_path / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(C.ColmapFormatError, match="distortion"):
        C.read_transforms_json(tmp_path / "transforms.json")


def test_distorted_models_need_undistortion() -> None:
    cams = {1: C.ColmapCamera(1, "OPENCV", 64, 48, [50, 51, 32, 24, 0.1, 0, 0, 0]),
            2: C.ColmapCamera(2, "SIMPLE_RADIAL", 64, 48, [50, 32, 24, 0.0]),
            3: C.ColmapCamera(3, "OPENCV_FISHEYE", 64, 48, [50, 50, 32, 24, 0, 0, 0, 0])}
    img = C.ColmapImage(1, [1, 0, 0, 0], [0, 0, 0], 1, "a.png")
    with pytest.raises(C.ColmapFormatError, match="image_undistorter"):
        C.cameras_from_colmap(C.ColmapModel(cams, {1: img}))
    img.camera_id = 2
    out = C.cameras_from_colmap(C.ColmapModel(cams, {1: img}))
    assert (out.fx[0], out.fy[0], out.cx[0], out.cy[0]) == (50, 50, 32, 24)
    img.camera_id = 3
    with pytest.raises(C.ColmapFormatError, match="not a pinhole model"):
        C.cameras_from_colmap(C.ColmapModel(cams, {1: img}))
