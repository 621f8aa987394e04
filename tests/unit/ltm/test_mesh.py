"""LTM's mesh stages (`ltm/mesh.py`): contraction, cascaded marching cubes, visibility culling, quadric
simplification, the xatlas atlas, texture baking with gutter fill, the viewer's files (export / load / OBJ
conventions / mlp.json layout), the viewer's shading formula and the footprint. Tiny meshes throughout."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial import cKDTree

from cvpr24.pipelines.ltm import mesh as M
from cvpr24.pipelines.ltm.colmap import Cameras, look_at_c2w
from cvpr24.pipelines.ltm.raster import project, render, texture_nearest

R_SPHERE = 0.6


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------------ helpers
def sphere_sdf(centre: tuple[float, float, float] = (0.0, 0.0, 0.0), r: float = R_SPHERE) -> Callable:
    c = np.asarray(centre)
    return lambda p: np.linalg.norm(p - c, axis=-1) - r


def face_areas(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    t = v[f].astype(np.float64)
    return 0.5 * np.linalg.norm(np.cross(t[:, 1] - t[:, 0], t[:, 2] - t[:, 0]), axis=1)


def surface_samples(v: np.ndarray, f: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """Area-weighted uniform samples on a triangle mesh."""
    rng = np.random.default_rng(seed)
    a = face_areas(v, f)
    idx = rng.choice(len(f), n, p=a / a.sum())
    u, w = rng.random((2, n))
    flip = u + w > 1
    u[flip], w[flip] = 1 - u[flip], 1 - w[flip]
    t = v[f[idx]].astype(np.float64)
    return t[:, 0] + u[:, None] * (t[:, 1] - t[:, 0]) + w[:, None] * (t[:, 2] - t[:, 0])


def uv_areas(corner_uvs: np.ndarray) -> np.ndarray:
    """Areas of uv triangles ``(F, 3, 2)`` (unit square = 1)."""
    e1, e2 = corner_uvs[:, 1] - corner_uvs[:, 0], corner_uvs[:, 2] - corner_uvs[:, 0]
    return 0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0])


def linear_colour(p: torch.Tensor) -> torch.Tensor:
    """6 channels in [0.1, 0.9], linear in the position (|p| <= 0.65)."""
    q = p.double() / 0.65
    return torch.cat([0.5 + 0.4 * q, 0.5 - 0.4 * q[:, [1, 2, 0]]], 1)


@pytest.fixture(scope="module")
def sphere_mc() -> M.MeshCascade:
    return M.extract_cascades(sphere_sdf(), 40, array="numpy")[0]


@pytest.fixture(scope="module")
def small_sphere(sphere_mc: M.MeshCascade) -> tuple[np.ndarray, np.ndarray]:
    return M.simplify(sphere_mc.vertices, sphere_mc.faces, 400, backend="fast-simplification")


@pytest.fixture(scope="module")
def baked(small_sphere: tuple[np.ndarray, np.ndarray]) -> tuple[M.UVAtlas, M.BakedTextures]:
    v, f = small_sphere
    atlas = M.uv_atlas(v, f, texture_size=128, padding=2)
    return atlas, M.bake_textures(v, f, atlas, linear_colour, ssaa=2, gutter=8)


@pytest.fixture(scope="module")
def mlp_weights() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {"net.0.weight": torch.randn(32, 6, generator=g), "net.1.weight": torch.randn(3, 32, generator=g) * 0.3}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory, small_sphere: tuple[np.ndarray, np.ndarray],
             baked: tuple[M.UVAtlas, M.BakedTextures], mlp_weights: dict[str, torch.Tensor]
             ) -> tuple[Path, list[M.TexturedCascade]]:
    v, f = small_sphere
    atlas, tex = baked
    far_v = (v * 5.0 + np.array([0.0, 0.0, 8.0])).astype(np.float32)  # a second cascade: same layout, far away
    cascades = [M.textured_cascade(v, f, atlas, tex), M.textured_cascade(far_v, f, atlas, tex)]
    folder = tmp_path_factory.mktemp("viewer") / "asset"
    M.export_viewer(folder, cascades, mlp_weights, bound=2.0)
    return folder, cascades


# ------------------------------------------------------------------------------------------------ contraction
@pytest.mark.parametrize("kind", ["linf", "l2"])
def test_contract_inverse_identity_inside_and_bounded(kind: str) -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2000, 3)) * np.exp(rng.uniform(-3, 7, (2000, 1)))  # |x| up to ~1e3
    c = M.contract(x, kind)
    assert np.all(M.contraction_norm(c, kind) < 2.0)
    np.testing.assert_allclose(M.uncontract(c, kind), x, rtol=1e-9, atol=1e-12)
    inner = M.contraction_norm(x, kind)[:, 0] <= 1.0
    np.testing.assert_array_equal(c[inner], x[inner])
    ct = M.contract(torch.from_numpy(x), kind)
    np.testing.assert_allclose(ct.numpy(), c, rtol=1e-12)
    np.testing.assert_allclose(M.uncontract(ct, kind).numpy(), x, rtol=1e-9, atol=1e-12)
    far = M.uncontract(np.array([[2.0, 0.0, 0.0], [3.0, 0.0, 0.0]]), kind)  # the image of infinity: finite
    assert np.all(np.isfinite(far)) and far[0, 0] > 1e5


# ------------------------------------------------------------------------------------------------ stage B
def test_marching_cubes_sphere_area_and_distance(sphere_mc: M.MeshCascade) -> None:
    v, f = sphere_mc.vertices, sphere_mc.faces
    assert sphere_mc.resolution == 40 and len(f) > 1000
    voxel = 2.0 / 39
    assert np.abs(sphere_sdf()(v)).max() <= 0.5 * voxel  # on the surface to within half a voxel
    area = face_areas(v, f).sum()
    assert abs(area / (4 * np.pi * R_SPHERE**2) - 1) < 0.02
    tri = v[f].astype(np.float64)
    normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    assert np.all((normal * tri.mean(1)).sum(1) > 0)  # wound towards the positive side (free space)


def test_outer_cascade_captures_far_sphere_torch_sdf() -> None:
    centre = np.array([4.0, 0.5, 0.0])

    def sdf(p: torch.Tensor) -> torch.Tensor:
        assert isinstance(p, torch.Tensor) and p.dtype == torch.float32
        return (p - torch.from_numpy(centre).float()).norm(dim=-1) - 1.5

    inner, outer = M.extract_cascades(sdf, 48)  # array="torch" (default)
    assert len(inner.faces) == 0  # the inner cube [-1, 1]^3 cannot see it (nearest point at x = 2.5)
    assert len(outer.faces) > 200 and outer.bound == 2.0
    # each vertex lies on the sphere to within one contracted voxel's world size at its distance (|dx/dc| = |x|^2)
    m = np.abs(outer.vertices).max(1)
    world_voxel = (4.0 / 47) * m**2
    err = np.abs(np.linalg.norm(outer.vertices - centre, axis=1) - 1.5)
    assert np.all(err <= world_voxel)
    # the mesh is a closed sphere: every edge has two faces
    e = np.sort(np.concatenate([outer.faces[:, [0, 1]], outer.faces[:, [1, 2]], outer.faces[:, [2, 0]]]), 1)
    _, counts = np.unique(e, axis=0, return_counts=True)
    assert np.all(counts == 2)


def test_cascade_boundary_overlaps_without_gap() -> None:
    def plane(p: np.ndarray) -> np.ndarray:  # a ground plane crossing both cascades
        return p[..., 1] - 0.05

    for res in (33, 40):  # outer spacing 0.125 (> the 0.1 band of inner_cut 0.9) and 0.103
        inner, outer = M.extract_cascades(plane, res, array="numpy")
        ri = np.abs(inner.vertices[:, [0, 2]]).max(1)
        ro = np.abs(outer.vertices[:, [0, 2]]).max(1)
        assert ri.max() == pytest.approx(1.0, abs=1e-6)  # inner reaches its box
        assert 1.0 - 2 * 4.0 / (res - 1) < ro.min() <= 1.0  # outer starts inside it: overlap, no crack
    np.testing.assert_allclose(outer.vertices[ro <= 1.0, 1], 0.05, atol=1e-5)  # where contraction is identity
    # far edge: nothing at the image of infinity (within one voxel of |c| = 2)
    c = M.contract(outer.vertices.astype(np.float64))
    assert np.abs(c).max() < 2.0 - 4.0 / 32 + 1e-6


def test_no_contraction_cascades_are_nested_boxes() -> None:
    assert M.cascade_bounds("none", 4.0) == [1.0, 2.0, 4.0]
    assert M.cascade_bounds("linf") == [1.0, 2.0]
    out = M.extract_cascades(sphere_sdf(r=3.6), 24, contraction="none", bound=4.0, array="numpy")
    assert [len(c.faces) > 0 for c in out] == [False, False, True]  # beyond the [-2, 2]^3 corners (2 sqrt 3)
    assert np.abs(np.linalg.norm(out[2].vertices, axis=1) - 3.6).max() < 0.5 * 8.0 / 23


def test_remove_small_components() -> None:
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 1, 0], [5, 5, 5], [6, 5, 5], [5, 6, 5]], dtype=np.float32)
    f = np.array([[0, 1, 2], [1, 3, 2], [4, 5, 6]])
    v2, f2 = M.remove_small_components(v, f, min_faces=2)
    assert len(f2) == 2 and len(v2) == 4 and f2.max() == 3


# ------------------------------------------------------------------------------------------------ culling
def _one_camera(eye: tuple[float, float, float], size: int = 64, focal: float = 40.0) -> Cameras:
    return Cameras(["a.png"], size, size, focal, focal, size / 2, size / 2,
                   look_at_c2w(np.array(eye), np.zeros(3))[None])


def test_camera_mvp_matches_pinhole_projection() -> None:
    cams = Cameras(["a.png"], 80, 60, 50.0, 45.0, 37.0, 33.0, look_at_c2w(np.array([1.0, 0.7, 3.0]), np.zeros(3))[None])
    pts = np.random.default_rng(1).uniform(-0.5, 0.5, (20, 3))
    uv, _ = cams.project(0, pts)
    clip = project(torch.from_numpy(pts).float(), M.camera_mvp(cams, 0)).double().numpy()
    sx = (clip[:, 0] / clip[:, 3] + 1) * 40
    sy = (1 - clip[:, 1] / clip[:, 3]) * 30
    np.testing.assert_allclose(np.stack([sx, sy], 1), uv, atol=1e-3)


def test_cull_removes_hidden_face_keeps_visible_and_dilation_readds() -> None:
    v = np.array([
        [-0.5, -0.5, 1.0], [0.5, -0.5, 1.0], [0.5, 0.5, 1.0], [-0.5, 0.5, 1.0],  # occluder quad (faces 0, 1)
        [-0.2, -0.2, 0.0], [0.2, -0.2, 0.0], [0.0, 0.2, 0.0],  # hidden behind it (face 2)
        [1.0, -0.25, 0.0], [1.0, 0.25, 0.0],  # face 3: shares vertex 5 with face 2, sticks out to the side
        [1.6, -0.2, 0.0], [2.0, -0.2, 0.0], [1.8, 0.2, 0.0],  # face 4: separate, visible
        [0.0, 0.0, 5.0], [0.1, 0.0, 5.0], [0.0, 0.1, 5.0],  # face 5: behind the camera
    ], dtype=np.float32)
    f = np.array([[0, 1, 2], [0, 2, 3], [4, 5, 6], [5, 7, 8], [9, 10, 11], [12, 13, 14]])
    cams = _one_camera((0.0, 0.0, 3.0))
    out = M.cull_invisible(v, f, cams, dilation=0)
    np.testing.assert_array_equal(out.seen, [True, True, False, True, True, False])
    assert len(out.faces) == 4 and len(out.vertices) == 10
    np.testing.assert_array_equal(out.vertices[out.faces], v[f[out.kept]])
    ring = M.cull_invisible(v, f, cams, dilation=1)
    np.testing.assert_array_equal(ring.kept, [True, True, True, True, True, False])  # face 2 touches face 3


# ------------------------------------------------------------------------------------------------ stage C
@pytest.mark.parametrize("backend", ["fast-simplification", "pymeshlab"])
def test_simplify_meets_budget_and_keeps_shape(sphere_mc: M.MeshCascade, backend: str) -> None:
    v, f = M.simplify(sphere_mc.vertices, sphere_mc.faces, 500, backend=backend)
    assert 450 <= len(f) <= 500
    assert v.dtype == np.float32 and f.max() == len(v) - 1
    r = R_SPHERE
    assert np.abs(np.linalg.norm(v, axis=1) - r).max() < 0.02 * r  # QEM places vertices slightly outside
    # two-sided Hausdorff / Chamfer: 5k samples of each surface against 200k samples of the other (spec 9: <= 2 % r)
    dense_in = cKDTree(surface_samples(sphere_mc.vertices, sphere_mc.faces, 200_000, 1))
    dense_out = cKDTree(surface_samples(v, f, 200_000, 2))
    d_ab, _ = dense_out.query(surface_samples(sphere_mc.vertices, sphere_mc.faces, 5000, 3))
    d_ba, _ = dense_in.query(surface_samples(v, f, 5000, 4))
    assert max(d_ab.max(), d_ba.max()) < 0.02 * r
    assert 0.5 * (d_ab.mean() + d_ba.mean()) < 0.01 * r
    same_v, same_f = M.simplify(v, f, 1000, backend=backend)  # within budget: unchanged
    np.testing.assert_array_equal(same_f, f)


# ------------------------------------------------------------------------------------------------ atlas
def test_atlas_covers_faces_in_unit_square_without_overlap(small_sphere: tuple[np.ndarray, np.ndarray],
                                                           baked: tuple[M.UVAtlas, M.BakedTextures]) -> None:
    import xatlas

    v, f = small_sphere
    atlas = baked[0]
    assert atlas.uv_faces.shape == f.shape and atlas.corner_uvs.shape == (len(f), 3, 2)
    assert atlas.uvs.min() >= 0.0 and atlas.uvs.max() <= 1.0
    np.testing.assert_array_equal(v[atlas.vmapping][atlas.uv_faces], v[f])  # remapped vertices = same faces
    assert np.all(uv_areas(atlas.corner_uvs.astype(np.float64)) * 128 * 128 > 1e-3)  # every face has a uv triangle of positive area
    assert atlas.effective_padding >= 1.0
    # vt = (u, 1 - v) of xatlas's own output with the same options (deterministic: no seed)
    a = xatlas.Atlas()
    a.add_mesh(v, f.astype(np.uint32))
    co, po = xatlas.ChartOptions(), xatlas.PackOptions()
    co.max_iterations, po.resolution, po.padding = 0, 128, 2
    a.generate(chart_options=co, pack_options=po)
    _, _, raw = a[0]
    np.testing.assert_array_equal(atlas.uvs[:, 0], raw[:, 0])
    np.testing.assert_array_equal(atlas.uvs[:, 1], (1.0 - raw[:, 1]).astype(np.float32))
    again = M.uv_atlas(v, f, texture_size=128, padding=2)
    np.testing.assert_array_equal(again.uvs, atlas.uvs)
    # no texel claimed by two charts: depth ties go to the lower face index, so rasterising the faces in both
    # orders gives the same chart at every texel only if no texel centre lies in two charts
    charts = M.uv_charts(atlas.uv_faces, len(atlas.uvs))
    assert charts.max() >= 1
    fwd = M.rasterize_uv(atlas.uvs, atlas.uv_faces, 128, 128).face_id.numpy()
    rev = M.rasterize_uv(atlas.uvs, atlas.uv_faces[::-1].copy(), 128, 128).face_id.numpy()
    cov = fwd >= 0
    np.testing.assert_array_equal(cov, rev >= 0)
    assert cov.mean() > 0.3
    rev_orig = len(f) - 1 - rev[cov]
    np.testing.assert_array_equal(charts[fwd[cov]], charts[rev_orig])


# ------------------------------------------------------------------------------------------------ bake
def test_bake_reproduces_colour_at_face_centroids(small_sphere: tuple[np.ndarray, np.ndarray],
                                                  baked: tuple[M.UVAtlas, M.BakedTextures]) -> None:
    v, f = small_sphere
    atlas, tex = baked
    assert tex.feat0.shape == (128, 128, 3) and tex.feat0.dtype == np.uint8
    centre_uv = torch.from_numpy(atlas.corner_uvs.mean(1))
    got = torch.cat([texture_nearest(torch.from_numpy(t.astype(np.float32) / 255), centre_uv)
                     for t in (tex.feat0, tex.feat1)], 1).numpy()
    want = linear_colour(torch.from_numpy(v[f].astype(np.float64).mean(1))).numpy()
    # error budget: floor quantisation (< 1/255) + the 2x2 mean's rounding + the colour change across a texel
    # (gradient 0.4 / 0.65 per world unit per channel, texel world size from the faces' 3D / uv area ratio)
    uv_area = uv_areas(atlas.corner_uvs.astype(np.float64)) * 128**2
    texel = np.sqrt(face_areas(v, f) / uv_area)
    bound = 1.5 / 255 + (0.4 / 0.65) * texel * np.sqrt(2) * 0.75
    err = np.abs(got - want)
    assert np.all(err <= bound[:, None] + 1e-6), (err.max(), bound.min())
    assert err.mean() < 0.01


def test_bake_fills_the_gutter_from_the_charts(baked: tuple[M.UVAtlas, M.BakedTextures]) -> None:
    from scipy.ndimage import distance_transform_cdt

    atlas, tex = baked
    gutter = tex.filled & ~tex.mask
    assert gutter.sum() > 100 and tex.filled.mean() > tex.mask.mean()
    # gutter 8 supersampled texels (4-neighbour dilation) = 4 final texels in the taxicab metric
    dist = distance_transform_cdt(~tex.mask, metric="taxicab")
    for img in (tex.feat0, tex.feat1):
        assert np.all(img[dist <= 3] >= 25)  # charts and the gutter hold baked values (colours >= 0.1)
        assert np.all(img[dist >= 6] == 0) and np.all(img[~tex.filled] == 0)
        # a fully filled gutter texel holds the value of a chart texel nearby (a few texels away; where two charts'
        # fills meet, the 2 x 2 mean mixes them: allow 1 %)
        src = np.argwhere(tex.mask)
        dst = np.argwhere(gutter & (dist <= 3))
        near = cKDTree(src).query_ball_point(dst, r=4.5)
        best = np.array([np.abs(img[src[n, 0], src[n, 1]].astype(int) - img[d[0], d[1]].astype(int)).max(1).min()
                         for d, n in zip(dst, near, strict=True)])
        assert np.percentile(best, 99) <= 6


# ------------------------------------------------------------------------------------------------ files
def test_export_load_round_trip(exported: tuple[Path, list[M.TexturedCascade]],
                                mlp_weights: dict[str, torch.Tensor]) -> None:
    folder, cascades = exported
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"{s}_{c}.{e}" for c in (0, 1) for s, e in (("mesh", "obj"), ("mesh", "mtl"), ("feat0", "jpg"),
                                                       ("feat1", "jpg"))] + ["mlp.json"])
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    asset = M.load_viewer(folder)
    assert asset.cascade == 2 and asset.bound == 2.0
    for got, want in zip(asset.cascades, cascades, strict=True):
        np.testing.assert_array_equal(got.vertices, want.vertices)  # shortest float32 decimals read back exactly
        np.testing.assert_array_equal(got.uvs, want.uvs)
        np.testing.assert_array_equal(got.faces, want.faces)
        np.testing.assert_array_equal(got.uv_faces, want.uv_faces)
        for a, b in ((got.feat0, want.feat0), (got.feat1, want.feat1)):
            mse = np.mean((a.astype(np.float64) - b) ** 2)
            assert 10 * np.log10(255**2 / max(mse, 1e-12)) > 30  # JPEG quality 95, 4:2:0
    assert asset.mlp["net.0.weight"].shape == (6, 32) and asset.mlp["net.1.weight"].shape == (32, 3)
    for k, w in asset.torch_weights().items():
        torch.testing.assert_close(w, mlp_weights[k], rtol=0, atol=0)
    doc = json.loads((folder / "mlp.json").read_text())
    assert list(doc) == ["net.0.weight", "net.1.weight", "bound", "cascade"] and doc["cascade"] == 2
    assert len(doc["net.0.weight"]) == 6 and len(doc["net.0.weight"][0]) == 32


def test_obj_text_follows_viewer_conventions(exported: tuple[Path, list[M.TexturedCascade]],
                                             baked: tuple[M.UVAtlas, M.BakedTextures]) -> None:
    folder, cascades = exported
    lines = (folder / "mesh_0.obj").read_text().splitlines()
    assert lines[0] == "mtllib mesh_0.mtl" and "usemtl defaultMat" in lines
    v = np.array([ln.split()[1:] for ln in lines if ln.startswith("v ")], dtype=np.float32)
    vt = np.array([ln.split()[1:] for ln in lines if ln.startswith("vt ")], dtype=np.float32)
    f = np.array([[c.split("/") for c in ln.split()[1:]] for ln in lines if ln.startswith("f ")], dtype=np.int64)
    cas = cascades[0]
    np.testing.assert_array_equal(v, cas.vertices)
    assert f.min() == 1 and f[..., 0].max() == len(v) and f[..., 1].max() == len(vt)  # 1-based, all used
    np.testing.assert_array_equal(f[..., 0] - 1, cas.faces)
    np.testing.assert_array_equal(f[..., 1] - 1, cas.uv_faces)
    # vt = u, 1 - v of the atlas image coordinates: texel row r of the JPEG holds vt_v in [1-(r+1)/H, 1-r/H]
    atlas = baked[0]
    rast = M.rasterize_uv(vt, f[..., 1] - 1, 128, 128)
    np.testing.assert_array_equal(rast.mask.numpy(), M.rasterize_uv(atlas.uvs, atlas.uv_faces, 128, 128).mask.numpy())
    mtl = (folder / "mesh_0.mtl").read_text().splitlines()
    assert "map_Kd feat0_0.jpg" in mtl and "newmtl defaultMat" in mtl


def test_export_is_atomic_and_replaces(tmp_path: Path, exported: tuple[Path, list[M.TexturedCascade]],
                                       mlp_weights: dict[str, torch.Tensor]) -> None:
    _, cascades = exported
    folder = tmp_path / "out"
    M.export_viewer(folder, cascades, mlp_weights)
    M.export_viewer(folder, cascades[:1], mlp_weights)  # replaces: one cascade now
    assert M.load_viewer(folder).cascade == 1 and not (folder / "mesh_1.obj").exists()
    bad = {"net.0.weight": torch.zeros(30, 6), "net.1.weight": torch.zeros(3, 30)}  # H not divisible by 4
    with pytest.raises(ValueError, match="divisible by 4"):
        M.export_viewer(folder, cascades, bad)
    assert M.load_viewer(folder).cascade == 1  # the old folder is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


# ------------------------------------------------------------------------------------------------ shading
def test_viewer_shade_matches_formula_on_hand_values() -> None:
    w0 = torch.tensor([[1.0, 0.0, -1.0, 0.5], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 1.0, -1.0],
                       [0.5, 0.0, 0.0, 1.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.5, 0.0]])  # 6 x 4, as in mlp.json
    w1 = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [-1.0, 1.0, 0.5]])  # 4 x 3
    kd = torch.tensor([[0.2, 0.4, 0.9]])
    ks = torch.tensor([[0.5, 0.25, 1.0]])
    dirs = torch.tensor([[0.0, 0.0, 2.0]])  # normalised to (0, 0, 1)
    # by hand: x = [0, 0, 1, 0.5, 0.25, 1]; x W0 = [0.25, -0.25, 1.5, -0.5]; relu = [0.25, 0, 1.5, 0]
    # relu W1 = [0.25, 0, 1.5]; sigmoid = [0.562177, 0.5, 0.817574]
    spec = 1 / (1 + np.exp(-np.array([0.25, 0.0, 1.5])))
    want = np.clip(np.array([0.2, 0.4, 0.9]) + spec, 0, 1)
    np.testing.assert_allclose(M.viewer_shade(kd, ks, dirs, w0, w1).numpy()[0], want, atol=1e-6)
    np.testing.assert_allclose(M.viewer_shade(kd, ks, dirs, w0, w1, "specular").numpy()[0], spec, atol=1e-6)
    np.testing.assert_allclose(M.viewer_shade(kd, ks, dirs, w0, w1, "diffuse").numpy()[0], kd[0].numpy())
    # random values: the formula with explicit numpy (relu, sigmoid, clamp)
    g = torch.Generator().manual_seed(3)
    kd, ks, d = torch.rand(50, 3, generator=g), torch.rand(50, 3, generator=g), torch.randn(50, 3, generator=g)
    w0, w1 = torch.randn(6, 8, generator=g), torch.randn(8, 3, generator=g)
    x = np.concatenate([d.numpy() / np.linalg.norm(d.numpy(), axis=1, keepdims=True), ks.numpy()], 1)
    ref = np.clip(kd.numpy() + 1 / (1 + np.exp(-(np.maximum(x @ w0.numpy(), 0) @ w1.numpy()))), 0, 1)
    np.testing.assert_allclose(M.viewer_shade(kd, ks, d, w0, w1).numpy(), ref, atol=1e-6)


def test_render_from_exported_files_matches_direct_colour(exported: tuple[Path, list[M.TexturedCascade]]) -> None:
    folder, _ = exported
    asset = M.load_viewer(folder)
    cams = _one_camera((0.3, 0.4, 2.2), size=64, focal=70.0)
    mvp = M.camera_mvp(cams, 0, 0.05, 50.0)
    img = M.render_viewer(asset, mvp, cams.centers[0], 64, 64, mode="diffuse").numpy()
    # the direct colour of the inner sphere's surface through the same rasteriser, without textures
    cas = asset.cascades[0]
    ref, alpha = render(torch.from_numpy(cas.vertices), torch.from_numpy(cas.faces), mvp, 64, 64,
                          lambda fr: linear_colour(fr.points)[:, :3].float())
    inside = alpha.numpy()[..., 0] > 0.999
    assert inside.mean() > 0.2
    mse = np.mean((img[inside] - ref.detach().numpy()[inside]) ** 2)
    assert 10 * np.log10(1 / mse) > 32  # quantisation + JPEG + nearest sampling only


# ------------------------------------------------------------------------------------------------ footprint
def test_footprint_counts_written_bytes(exported: tuple[Path, list[M.TexturedCascade]]) -> None:
    folder, cascades = exported
    fp = M.footprint(folder)
    assert fp.disk_bytes == sum(p.stat().st_size for p in folder.iterdir())
    assert fp.mlp_bytes == (folder / "mlp.json").stat().st_size
    assert fp.disk_bytes == sum(c.disk_bytes for c in fp.cascades) + fp.mlp_bytes
    for c, (cf, cas) in enumerate(zip(fp.cascades, cascades, strict=True)):
        assert cf.files[f"feat1_{c}.jpg"] == (folder / f"feat1_{c}.jpg").stat().st_size
        assert cf.triangles == len(cas.faces) and cf.vertices == len(cas.vertices) and cf.uv_vertices == len(cas.uvs)
        assert cf.texture_sizes == [(128, 128), (128, 128)]
        assert cf.gpu_texture_bytes == 2 * 128 * 128 * 3
        assert cf.corners == len(cas.split()[0]) and len(cas.vertices) <= cf.corners <= len(cas.uvs)
        assert cf.gpu_buffer_bytes == cf.corners * 20 + cf.triangles * 12
    assert fp.mlp_gpu_bytes == (6 * 32 + 32 * 3) * 4
    assert fp.triangles == 2 * len(cascades[0].faces)
    assert fp.as_dict()["disk_bytes"] == fp.disk_bytes
