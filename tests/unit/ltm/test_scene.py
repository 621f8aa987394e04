"""LTM's embedded garden-lite scene (`ltm/scene.py`): the analytic SDF (true distances, numpy = torch), sphere
tracing against analytic intersections, ground-truth surface samples, the far field and the thin stems the spec's
stages must cope with, view-dependent gloss, and the scene folder: write -> load round trip through COLMAP, LLFF and
transforms.json, validation errors, atomic writes. Tiny sizes throughout."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from cvpr24.core.ingest import MissingDatasetError
from cvpr24.core.validation import DataValidationError
from cvpr24.pipelines.ltm import colmap as C
from cvpr24.pipelines.ltm import scene as S

SCENE = S.GardenLite()
TINY = S.GardenLiteConfig(n_views=9, width=16, height=12, supersample=1, sparse_points=40, surface_samples=300,
                          surface_resolution=48)


@pytest.fixture(scope="module")
def tiny_data() -> S.GardenLiteData:
    return S.generate_garden_lite(TINY)


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory, tiny_data: S.GardenLiteData) -> Path:
    return S.write_scene_folder(tmp_path_factory.mktemp("ltm") / "garden", tiny_data)


@pytest.fixture
def folder_copy(tiny_folder: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_folder, tmp_path / "garden"))


def fd_grad(p: np.ndarray, h: float = 1e-6) -> np.ndarray:
    return S.sdf_gradient(SCENE, p, h)


# ------------------------------------------------------------------------------------------------ the SDF
def stem_point(offset: float) -> np.ndarray:
    """A point at the middle of stem 0, ``offset`` away from its axis (perpendicular, horizontal-ish)."""
    a, b = (np.array(v) for v in SCENE.stems[0])
    axis = (b - a) / np.linalg.norm(b - a)
    side = np.cross(axis, [0.0, 1.0, 0.0])
    return 0.5 * (a + b) + offset * side / np.linalg.norm(side)


def test_sdf_is_a_true_distance_near_the_primitives() -> None:
    sc, r = np.array(SCENE.sphere_c), SCENE.sphere_r
    up = np.array([0.3, 1.0, -0.2]) / np.linalg.norm([0.3, 1.0, -0.2])
    hx, hy, hz, hr = SCENE.hills[0]
    cases = [  # point, expected signed distance
        (sc + (r + 0.01) * up, 0.01), (sc + (r - 0.01) * up, -0.01), (sc, -r),
        (np.array([-0.3, 0.195 + 0.15 + 0.045 + 0.01, 0.0]), 0.01),  # above the torus tube
        (np.array([0.0, 0.3 + 0.02, -0.35]), 0.02),  # above the table top
        (np.array([0.7 + 0.02 + 0.01, 0.2, 0.7]), 0.01),  # beside a fence post
        (stem_point(0.012), 0.012 - SCENE.stem_radius), (stem_point(0.0), -SCENE.stem_radius),
        (np.array([hx, hy + hr + 0.1, hz]), 0.1),  # above a hill
        (np.array([0.0, 11.9, 0.0]), 0.1),  # below the top of the background sphere (inward-facing)
        (np.array([0.0, 12.1, 0.0]), -0.1),
    ]
    p = np.stack([c[0] for c in cases])
    np.testing.assert_allclose(SCENE.sdf(p), [c[1] for c in cases], atol=1e-12)
    medial = [2, 7]  # the sphere's centre and the stem's axis: the distance has no gradient there
    off = np.setdiff1d(np.arange(len(p)), medial)
    np.testing.assert_allclose(np.linalg.norm(fd_grad(p[off]), axis=1), 1.0, atol=1e-6)
    # the ground is a height field: exact zero set, distance to first order
    x, z = np.array([0.55, -0.5, 0.1]), np.array([0.3, 0.45, 0.6])
    y = SCENE.ground_height(x, z)
    g = np.stack([x, y + 0.01, z], 1)
    np.testing.assert_allclose(SCENE.sdf(np.stack([x, y, z], 1)), 0.0, atol=1e-15)
    np.testing.assert_allclose(SCENE.sdf(g), 0.01, rtol=0.03)
    np.testing.assert_allclose(np.linalg.norm(fd_grad(g), axis=1), 1.0, atol=0.03)
    assert np.all(SCENE.sdf(np.stack([x, y - 0.01, z], 1)) < 0)


def test_torch_sdf_matches_numpy_and_is_differentiable() -> None:
    import torch

    rng = np.random.default_rng(0)
    p = np.concatenate([rng.uniform(-1, 1, (500, 3)), rng.uniform(-15, 15, (100, 3))])
    pt = torch.tensor(p, dtype=torch.float64, requires_grad=True)
    d = SCENE.sdf_torch(pt)
    np.testing.assert_allclose(d.detach().numpy(), SCENE.sdf(p), atol=1e-12)
    (g,) = torch.autograd.grad(d.sum(), pt)
    near_sphere = np.array([SCENE.sphere_c]) + np.array([[0.0, SCENE.sphere_r + 0.03, 0.0]])
    ps = torch.tensor(near_sphere, requires_grad=True)
    (gs,) = torch.autograd.grad(SCENE.sdf_torch(ps).sum(), ps)
    np.testing.assert_allclose(gs.numpy(), [[0.0, 1.0, 0.0]], atol=1e-12)
    assert torch.isfinite(g).all()
    with pytest.raises(TypeError):
        SCENE.sdf_torch(p)


# ------------------------------------------------------------------------------------------------ tracing
def test_sphere_traced_depth_equals_analytic_intersections() -> None:
    # a camera straight above the ground at (0.55, 1, 0.3): its centre pixel hits y = h(0.55, 0.3)
    c2w = C.look_at_c2w([0.55, 1.0, 0.3], [0.55, 0.0, 0.3], up=(0.0, 0.0, -1.0))
    cams = C.Cameras(["a.png"], 5, 5, 4.0, 4.0, 2.5, 2.5, c2w[None])
    view = S.render_view(SCENE, cams, 0, S.GardenLiteConfig(supersample=1))
    assert view.material[2, 2] == S.MATERIALS.index("ground")
    assert view.depth[2, 2] == pytest.approx(1.0 - SCENE.ground_height(0.55, 0.3), abs=1e-3)
    np.testing.assert_allclose(view.normal[2, 2], SCENE.normal(np.array([0.55, SCENE.ground_height(0.55, 0.3),
                                                                             0.3])), atol=1e-3)
    # rays towards the glossy sphere: t = b - sqrt(b^2 - |o - c|^2 + r^2)
    rng = np.random.default_rng(0)
    o = np.array([0.25, 0.2, 1.2]) + rng.uniform(-0.02, 0.02, (20, 3))
    target = np.array(SCENE.sphere_c) + rng.uniform(-0.1, 0.1, (20, 3))
    d = (target - o) / np.linalg.norm(target - o, axis=1, keepdims=True)
    oc = o - np.array(SCENE.sphere_c)
    b = -(oc * d).sum(1)
    t_exact = b - np.sqrt(b * b - (oc * oc).sum(1) + SCENE.sphere_r**2)
    tr = S.sphere_trace(SCENE.sdf, o, d)
    assert tr.hit.all() and not tr.capped.any()
    np.testing.assert_allclose(tr.t, t_exact, atol=1e-3)
    # a ray leaving the scene upwards hits the background sphere at R_bg
    tr = S.sphere_trace(SCENE.sdf, np.zeros((1, 3)) + [0, 0.5, 0], np.array([[0.0, 1.0, 0.0]]))
    assert tr.hit[0] and tr.t[0] == pytest.approx(SCENE.bg_radius - 0.5, abs=1e-2)
    # without the background sphere it misses: the step cap / max distance leave it unhit, shaded as sky
    tr = S.sphere_trace(lambda q: np.full(len(q), 1.0), np.zeros((1, 3)), np.array([[0.0, 1.0, 0.0]]), max_dist=5)
    assert not tr.hit[0] and tr.t[0] > 5
    tr = S.sphere_trace(lambda q: np.full(len(q), 1e-3), np.zeros((1, 3)), np.array([[0.0, 1.0, 0.0]]), max_steps=7)
    assert not tr.hit[0] and tr.capped[0] and tr.steps[0] == 7


def test_surface_samples_lie_on_the_zero_level_set() -> None:
    p, n = S.surface_samples(SCENE, 400, resolution=40, seed=1)
    assert p.shape == (400, 3) and n.shape == (400, 3)
    assert np.abs(SCENE.sdf(p)).max() < 1e-5
    assert np.abs(p).max() <= 0.9
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-9)
    mats = np.bincount(SCENE.material(p), minlength=len(S.MATERIALS))
    assert mats[S.MATERIALS.index("ground")] > 0.5 * len(p)  # area-weighted: the ground dominates
    assert mats[S.MATERIALS.index("hills")] == mats[S.MATERIALS.index("sky")] == 0  # inner surfaces only


# ------------------------------------------------------------------------------------------------ scene properties
def test_far_field_lies_outside_the_inner_cascade() -> None:
    """Hills and the background sphere are nowhere inside [-1, 1]^3 (not even its corners): only the contracted
    outer cascade can represent them; the inner scene fits in |x|inf <= 0.8."""
    nearest = np.linalg.norm(SCENE.hills[:, :3], axis=1) - SCENE.hills[:, 3]
    assert nearest.min() > math.sqrt(3) and SCENE.bg_radius > math.sqrt(3)
    assert np.all((SCENE.hills[:, 1] < 0) & (SCENE.hills[:, 1] + SCENE.hills[:, 3] > 0))  # sunk, but above ground
    rng = np.random.default_rng(0)
    comp = SCENE.components(rng.uniform(-1, 1, (20000, 3)))
    assert comp["hills"].min() > 0 and comp["sky"].min() > 0
    # the inner parts: surface samples of everything but the ground stay within 0.8
    p, _ = S.surface_samples(SCENE, 300, resolution=40, seed=2)
    objects = p[SCENE.material(p) != 0]
    assert len(objects) and np.abs(objects[:, [0, 2]]).max() <= 0.8 and objects[:, 1].max() < 0.5


def test_thin_stems_are_thinner_than_a_64_cubed_voxel() -> None:
    """The stems are 2 r = 0.016 wide, half a voxel of a 64^3 grid over [-1, 1]^3, so marching cubes at that
    resolution loses them (next to no surface), while a fine grid recovers their area."""
    voxel = 2.0 / 63  # 64 samples per axis over [-1, 1]
    assert 2 * SCENE.stem_radius < voxel

    lo, hi = np.array([0.28, 0.22, -0.52]), np.array([0.52, 0.5, -0.28])  # the stems above the vase's neck
    true_area = 0.0
    for a, b in SCENE.stems:
        a, b = np.array(a), np.array(b)
        true_area += 2 * math.pi * SCENE.stem_radius * np.linalg.norm(b - a) * (b[1] - lo[1]) / (b[1] - a[1])

    def mc_area(samples: int) -> float:
        from skimage.measure import marching_cubes

        g = np.linspace(-1.0, 1.0, samples)
        axes = [g[(g >= lo[k]) & (g <= hi[k])] for k in range(3)]
        vol = SCENE.components(np.stack(np.meshgrid(*axes, indexing="ij"), -1))["stems"]
        if vol.min() > 0:
            return 0.0
        v, f, _, _ = marching_cubes(vol, 0.0, spacing=(g[1] - g[0],) * 3)
        t = v[f]
        return float(0.5 * np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1).sum())

    assert mc_area(64) < 0.05 * true_area
    assert mc_area(401) == pytest.approx(true_area, rel=0.15)


def test_glossy_colour_depends_on_the_view_direction() -> None:
    sphere_top = np.array([SCENE.sphere_c]) + [[0.0, SCENE.sphere_r, 0.0]]
    ground = np.array([[0.55, SCENE.ground_height(0.55, 0.3), 0.3]])
    mirror = S.LIGHT * [-1, 1, -1]  # the light reflected about the vertical normal
    d1 = -mirror[None]  # looking along the mirror direction: the highlight
    d2 = np.array([[1.0, -0.2, 0.0]]) / np.linalg.norm([1.0, -0.2, 0.0])
    for p, glossy in ((sphere_top, True), (ground, False)):
        n, m = SCENE.normal(p), SCENE.material(p)
        c1, c2 = SCENE.shade(p, n, d1, m), SCENE.shade(p, n, d2, m)
        assert np.all((c1 >= 0) & (c1 <= 1))
        if glossy:
            assert m[0] == S.MATERIALS.index("sphere") and np.abs(c1 - c2).max() > 0.2
        else:
            np.testing.assert_array_equal(c1, c2)
    vase_side = np.array([[SCENE.vase_c[0] - SCENE.vase_bulb_r, SCENE.vase_bulb_r, SCENE.vase_c[1]]])
    assert SCENE.material(vase_side)[0] == S.MATERIALS.index("vase")


def test_look_at_matches_the_rasteriser() -> None:
    from cvpr24.pipelines.ltm import raster

    cams = S.orbit_cameras(TINY)
    assert len(cams) == 9 and cams.names == sorted(cams.names)
    eye = cams.centers[3]
    target = eye + cams.forward[3]
    np.testing.assert_allclose(np.linalg.inv(cams.c2w_opengl[3]), raster.look_at(eye, target).double().numpy(),
                               atol=1e-5)
    radii = np.hypot(cams.centers[:, 0], cams.centers[:, 2])
    np.testing.assert_allclose(radii, [1.5, 2.2] * 4 + [1.5])
    assert math.degrees(2 * math.atan(0.5 * TINY.height / cams.fy[0])) == pytest.approx(55.0)


# ------------------------------------------------------------------------------------------------ scene folders
def test_generated_tiny_scene(tiny_data: S.GardenLiteData) -> None:
    st = tiny_data.stats
    assert st["rays_missed"] == 0 and st["pixel_hits_per_material"]["hills"] > 0
    assert st["pixel_hits_per_material"]["sky"] > 0 and st["pixel_hits_per_material"]["ground"] > 0
    d = tiny_data.depth
    assert d.max() > 2.0  # the far field is seen: it needs the outer cascade
    assert np.all(tiny_data.cameras.near > 0) and np.all(tiny_data.cameras.far > tiny_data.cameras.near)
    assert tiny_data.downscaled[2].shape == (9, 6, 8, 3)
    assert len(tiny_data.points) == 40 and np.all(np.diff(tiny_data.points.track_offsets) >= 1)


def test_scene_folder_round_trip(tiny_folder: Path, tiny_data: S.GardenLiteData) -> None:
    for rel in ("images/view_000.png", "images_2/view_008.png", "sparse/0/cameras.bin", "sparse/0/images.bin",
                "sparse/0/points3D.bin", "poses_bounds.npy", "transforms.json", "gt/surface_points.npy",
                "gt/surface_normals.npy", "gt/depth/view_004.npy", "gt/normal/view_004.npy", "gt/scene.json"):
        assert (tiny_folder / rel).is_file(), rel
    assert not list(tiny_folder.parent.glob(".garden.*"))
    data = S.load_scene_folder(tiny_folder)
    assert data.source == "colmap-bin" and data.images.dtype == np.uint8
    np.testing.assert_array_equal(data.images, tiny_data.images)
    np.testing.assert_allclose(data.cameras.c2w, tiny_data.cameras.c2w, atol=1e-12)
    np.testing.assert_allclose(data.cameras.fx, tiny_data.cameras.fx)
    assert data.test_ids.tolist() == [0, 8] and data.train_ids.tolist() == [1, 2, 3, 4, 5, 6, 7]
    np.testing.assert_allclose(data.points_xyz, tiny_data.points.xyz)
    np.testing.assert_array_equal(data.gt_surface_points, tiny_data.surface_points)
    depth, normal = data.gt_maps(4)
    np.testing.assert_array_equal(depth, tiny_data.depth[4])
    # the sparse points project where images.bin says they were observed (COLMAP's tracks are consistent)
    model = C.read_model(tiny_folder / "sparse" / "0")
    pts = model.points3D
    for k in range(len(pts)):
        for image_id, idx in pts.track(k):
            im = model.images[image_id]
            assert im.point3D_ids[idx] == pts.ids[k]
            uv, _ = data.cameras.project(image_id - 1, pts.xyz[k:k + 1])
            np.testing.assert_allclose(uv[0], im.xys[idx], atol=1e-9)
    # downscaled images: intrinsics follow
    half = S.load_scene_folder(tiny_folder, downscale=2)
    assert half.images.shape == (9, 6, 8, 3) and half.image_dir.name == "images_2"
    np.testing.assert_allclose([half.cameras.fx, half.cameras.cx], [data.cameras.fx / 2, data.cameras.cx / 2])


def test_fallbacks_give_the_same_cameras(folder_copy: Path) -> None:
    ref = S.load_scene_folder(folder_copy).cameras
    shutil.rmtree(folder_copy / "sparse")
    llff = S.load_scene_folder(folder_copy)
    assert llff.source == "poses_bounds" and llff.cameras.near is not None
    (folder_copy / "poses_bounds.npy").unlink()
    tj = S.load_scene_folder(folder_copy, downscale=2)
    assert tj.source == "transforms"
    for cams, scale in ((llff.cameras, 1.0), (tj.cameras, 0.5)):
        assert cams.names == ref.names
        np.testing.assert_allclose(cams.c2w, ref.c2w, atol=1e-12)
        np.testing.assert_allclose([cams.fx, cams.fy, cams.cx, cams.cy],
                                   np.array([ref.fx, ref.fy, ref.cx, ref.cy]) * scale, atol=1e-9)
    (folder_copy / "transforms.json").unlink()
    with pytest.raises(MissingDatasetError, match=r"no camera file in .*sparse/0/cameras\.bin.*poses_bounds.npy"):
        S.load_scene_folder(folder_copy)


def test_scene_folder_validation_errors(folder_copy: Path, tmp_path: Path) -> None:
    from PIL import Image

    with pytest.raises(MissingDatasetError, match="scene folder .*nowhere not found: download"):
        S.load_scene_folder(tmp_path / "nowhere")
    with pytest.raises(MissingDatasetError, match=r"images_4 not found.*downscaling images/ by 4"):
        S.load_scene_folder(folder_copy, downscale=4)
    img = folder_copy / "images" / "view_003.png"
    saved = img.read_bytes()
    img.write_bytes(b"\x89PNG not really")
    with pytest.raises(DataValidationError, match=r"image file .*view_003\.png cannot be decoded"):
        S.load_scene_folder(folder_copy)
    Image.new("RGB", (17, 12)).save(img)
    with pytest.raises(DataValidationError, match=r"view_003\.png is 17x12 but the cameras \(colmap-bin\) expect "
                                                  r"16x12"):
        S.load_scene_folder(folder_copy)
    img.unlink()
    with pytest.raises(MissingDatasetError, match=r"missing from .*images: \['view_003\.png'\]"):
        S.load_scene_folder(folder_copy)
    img.write_bytes(saved)
    gt = folder_copy / "gt" / "surface_points.npy"
    pts = np.load(gt)
    pts[5, 1] = np.nan
    np.save(gt, pts)
    with pytest.raises(DataValidationError, match=r"surface_points\.npy: expected finite .* with NaN"):
        S.load_scene_folder(folder_copy)
    gt.unlink()
    assert S.load_scene_folder(folder_copy).gt_surface_points is None  # like a real scene
    shutil.rmtree(folder_copy / "sparse")
    pb = np.load(folder_copy / "poses_bounds.npy")
    pb[2, 3] = np.inf
    np.save(folder_copy / "poses_bounds.npy", pb)
    with pytest.raises(C.ColmapFormatError, match=r"poses_bounds\.npy: rows \[2\] hold NaN or inf"):
        S.load_scene_folder(folder_copy)


def test_interrupted_write_leaves_nothing_behind(tiny_data: S.GardenLiteData, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(S, "write_transforms_json", boom)  # after the images and sparse/0 were written
    with pytest.raises(KeyboardInterrupt):
        S.write_scene_folder(tmp_path / "garden", tiny_data)
    assert list(tmp_path.iterdir()) == []
    # an existing folder survives an interrupted rewrite untouched
    monkeypatch.undo()
    S.write_scene_folder(tmp_path / "garden", tiny_data)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    monkeypatch.setattr(S, "write_transforms_json", boom)
    with pytest.raises(KeyboardInterrupt):
        S.write_scene_folder(tmp_path / "garden", tiny_data)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert S.load_scene_folder(tmp_path / "garden").source == "colmap-bin"
