"""LTM's torch rasteriser (`ltm/raster.py`): coverage, depth test, perspective-correct barycentrics, near-plane
handling, gradients (interpolate, antialias), the optimisation property stage D needs, NEAREST texturing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cvpr24.pipelines.ltm import raster as R

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------------ helpers
def px_to_ndc(pts: np.ndarray, height: int, width: int) -> np.ndarray:
    """Pixel coordinates (sx, sy) (row 0 at the top, centres at +0.5) -> NDC (x, y)."""
    return np.stack([2.0 * pts[:, 0] / width - 1.0, 1.0 - 2.0 * pts[:, 1] / height], 1)


def ortho_vertices(pts_px: list[list[float]], height: int, width: int, z: float | list[float] = 0.0,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """World = NDC vertices for an identity MVP (w = 1)."""
    xy = px_to_ndc(np.asarray(pts_px, dtype=np.float64), height, width)
    zz = np.broadcast_to(np.asarray(z, dtype=np.float64), (len(pts_px),))
    return torch.tensor(np.column_stack([xy, zz]), dtype=dtype)


def pixel_centres(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    return cols + 0.5, rows + 0.5


def line_distances(a: np.ndarray, b: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Signed distances of the points (x, y) to the line through a and b (pixel units)."""
    d = b - a
    return (d[0] * (y - a[1]) - d[1] * (x - a[0])) / np.hypot(*d)


def signed_edge_distances(tri_px: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """(3, H, W) signed distances of the points to the triangle's edges, positive inside (either winding)."""
    area = np.cross(tri_px[1] - tri_px[0], tri_px[2] - tri_px[0])
    return np.stack([np.sign(area) * line_distances(tri_px[(i + 1) % 3], tri_px[(i + 2) % 3], x, y)
                     for i in range(3)])


def render_mask(verts: torch.Tensor, faces: torch.Tensor, height: int, width: int, **kw) -> tuple:
    """White (1-channel) mesh on black through render() with the identity MVP."""
    return R.render(verts, faces, torch.eye(4, dtype=verts.dtype), height, width,
                    lambda fr: torch.ones_like(fr.points[:, :1]), 0.0, **kw)


# ------------------------------------------------------------------------------------------------ coverage
@pytest.mark.parametrize("winding", [[0, 1, 2], [0, 2, 1]])
def test_triangle_covers_exactly_the_pixel_centres_inside(winding: list[int]) -> None:
    height, width = 13, 17  # not square: catches x/y swaps
    tri = np.array([[1.3, 2.2], [15.7, 5.1], [6.2, 12.4]])
    x, y = pixel_centres(height, width)
    dist = signed_edge_distances(tri, x, y)
    assert np.abs(dist).min() > 1e-3  # no centre on an edge: the expected set is unambiguous
    expected = (dist > 0).all(0)
    rast = R.rasterize(R.project(ortho_vertices(tri.tolist(), height, width), torch.eye(4)),
                       torch.tensor([winding]), height, width)
    assert rast.face_id.shape == (height, width) and rast.face_id.dtype == torch.int64
    np.testing.assert_array_equal(rast.face_id.numpy() == 0, expected)
    assert (rast.face_id[~torch.from_numpy(expected)] == -1).all()
    assert torch.isinf(rast.depth[~rast.mask]).all() and (rast.bary[~rast.mask] == 0).all()
    b = rast.bary[rast.mask]
    torch.testing.assert_close(b.sum(1), torch.ones(len(b)))
    assert (b >= 0).all()


def test_quad_of_two_triangles_covers_the_rectangle_without_cracks_or_overlap() -> None:
    height, width = 12, 16
    rect = [[2.25, 1.75], [13.75, 1.75], [13.75, 9.25], [2.25, 9.25]]
    verts = ortho_vertices(rect, height, width)
    faces = torch.tensor([[0, 1, 2], [0, 2, 3]])
    rast = R.rasterize(R.project(verts, torch.eye(4)), faces, height, width)
    x, y = pixel_centres(height, width)
    inside = (x > 2.25) & (x < 13.75) & (y > 1.75) & (y < 9.25)
    np.testing.assert_array_equal(rast.mask.numpy(), inside)
    # each covered pixel is attributed to a triangle that contains its centre
    for f in (0, 1):
        tri = np.asarray(rect)[faces[f].numpy()]
        dist = signed_edge_distances(tri, x, y)
        assert (dist[:, rast.face_id.numpy() == f] > -1e-6).all()


@pytest.mark.parametrize("jitter", [0.0, 0.12])
def test_grid_mesh_is_watertight(jitter: float) -> None:
    """A triangulated grid over the whole screen covers every pixel centre. Without jitter the grid lines and
    diagonals run exactly through pixel centres (dyadic coordinates, exact arithmetic): edges must be inclusive
    and shared edges evaluated consistently, or those centres fall through the cracks."""
    height = width = 16
    cols = torch.tensor([-1.0, 3.0, 7.0, 11.0, 15.0, 19.0])  # pixel columns/rows of the grid lines (4 px cells)
    g = 2.0 * (cols + 0.5) / width - 1.0
    n = len(g)
    gx, gy = torch.meshgrid(g, g, indexing="xy")
    xy = torch.stack([gx, gy], -1).reshape(-1, 2)
    interior = ((gx.abs() < 1.0) & (gy.abs() < 1.0)).reshape(-1)
    gen = torch.Generator().manual_seed(0)
    xy[interior] += jitter * (torch.rand(int(interior.sum()), 2, generator=gen) - 0.5)
    verts = torch.cat([xy, torch.zeros(len(xy), 1)], 1)
    quads = [(r * n + c, r * n + c + 1, (r + 1) * n + c + 1, (r + 1) * n + c) for r in range(n - 1)
             for c in range(n - 1)]
    faces = torch.tensor([f for a, b, c, d in quads for f in ([a, b, c], [a, c, d])])
    rast = R.rasterize(R.project(verts, torch.eye(4)), faces, height, width)
    assert rast.mask.all()


# ------------------------------------------------------------------------------------------------ depth test
@pytest.mark.parametrize("swap", [False, True])
def test_nearer_triangle_wins_regardless_of_face_order(swap: bool) -> None:
    height, width = 10, 12
    near = [[1.2, 1.1], [9.7, 2.3], [3.1, 8.6]]
    far = [[2.6, 0.7], [11.4, 7.9], [0.8, 9.3]]
    verts = torch.cat([ortho_vertices(near, height, width, -0.4), ortho_vertices(far, height, width, 0.3)])
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    if swap:
        faces = faces.flip(0)
    rast = R.rasterize(R.project(verts, torch.eye(4)), faces, height, width)
    x, y = pixel_centres(height, width)
    in_near = (signed_edge_distances(np.asarray(near), x, y) > 0).all(0)
    in_far = (signed_edge_distances(np.asarray(far), x, y) > 0).all(0)
    near_id, far_id = (1, 0) if swap else (0, 1)
    assert (in_near & in_far).sum() > 10
    got = rast.face_id.numpy()
    assert (got[in_near] == near_id).all()
    assert (got[in_far & ~in_near] == far_id).all()
    assert (got[~in_near & ~in_far] == -1).all()
    torch.testing.assert_close(rast.depth[torch.from_numpy(in_near)], torch.full((int(in_near.sum()),), -0.4))


@pytest.mark.parametrize("swap", [False, True])
def test_equal_depth_goes_to_the_lower_face_index(swap: bool) -> None:
    height, width = 10, 12
    a = [[1.2, 1.1], [9.7, 2.3], [3.1, 8.6]]
    b = [[2.6, 0.7], [11.4, 7.9], [0.8, 9.3]]
    # z = 0.5, w = 1: the interpolated NDC depth is exactly 0.5 in both triangles (a true tie)
    verts = torch.cat([ortho_vertices(a, height, width, 0.5), ortho_vertices(b, height, width, 0.5)])
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    if swap:
        faces = faces.flip(0)
    rast = R.rasterize(R.project(verts, torch.eye(4)), faces, height, width, max_candidates=1)  # chunked too
    x, y = pixel_centres(height, width)
    both = (signed_edge_distances(np.asarray(a), x, y) > 0).all(0) & (signed_edge_distances(np.asarray(b), x, y)
                                                                      > 0).all(0)
    assert both.sum() > 10
    assert (rast.face_id.numpy()[both] == 0).all()


# ------------------------------------------------------------------------------------------------ perspective
def ray_plane_points(mvp: torch.Tensor, tri: torch.Tensor, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Per pixel centre, in float64: the intersection (H, W, 3) of the line through the pixel centre (unprojected
    with the inverse MVP) with the triangle's plane, and that point's barycentrics (H, W, 3)."""
    inv = torch.linalg.inv(mvp.double()).numpy()
    x, y = pixel_centres(height, width)
    ndc = np.stack([2 * x / width - 1, 1 - 2 * y / height], -1)
    def unproject(zn: float) -> np.ndarray:
        h = np.concatenate([ndc, np.full(ndc.shape[:2] + (1,), zn), np.ones(ndc.shape[:2] + (1,))], -1) @ inv.T
        return h[..., :3] / h[..., 3:]
    o, d = unproject(-1.0), unproject(1.0)
    d = d - o
    t3 = tri.double().numpy()
    n = np.cross(t3[1] - t3[0], t3[2] - t3[0])
    s = ((t3[0] - o) @ n) / (d @ n)
    p = o + s[..., None] * d
    m = np.stack([t3[0] - t3[2], t3[1] - t3[2]], 1)  # (3, 2)
    uv = np.linalg.lstsq(m, (p - t3[2]).reshape(-1, 3).T, rcond=None)[0].T.reshape(height, width, 2)
    bary = np.concatenate([uv, 1 - uv.sum(-1, keepdims=True)], -1)
    return p, bary


def test_barycentrics_are_perspective_correct() -> None:
    height, width = 20, 24
    mvp = R.perspective(50.0, width / height, 0.1, 20.0) @ R.look_at((0.3, 0.4, 2.5), (0.0, 0.0, 0.0))
    tri = torch.tensor([[-1.0, -0.8, -1.5], [1.2, -0.5, 0.8], [-0.2, 1.0, -0.3]])  # strongly tilted
    clip = R.project(tri, mvp)
    rast = R.rasterize(clip, torch.tensor([[0, 1, 2]]), height, width)
    p, bary = ray_plane_points(mvp, tri, height, width)
    inside = (bary > 1e-4).all(-1)
    outside = (bary < -1e-4).any(-1)
    assert inside.sum() > 60
    assert rast.mask.numpy()[inside].all() and not rast.mask.numpy()[outside].any()
    pts = R.interpolate(tri, rast, torch.tensor([[0, 1, 2]]))
    m = rast.mask.numpy()
    err = np.abs(pts.detach().numpy()[m] - p[m]).max()
    assert err < 1e-5
    # the test has teeth: screen-space (affine) barycentrics would be off by far more
    naive = rast.bary / clip[:, 3]  # undo the perspective correction: b_screen ~ b / w
    naive = (naive / naive.sum(-1, keepdim=True))[rast.mask]
    assert np.abs((naive @ tri).numpy() - p[m]).max() > 1e-2


def test_triangle_reaching_behind_the_camera_is_rasterised_and_clipped_at_the_near_plane() -> None:
    """A ground triangle under the camera (one vertex behind it): exact homogeneous rasterisation, per-pixel
    near/far clipping; cull_straddling=True culls it."""
    height, width = 18, 24
    near, far = 1.2, 50.0
    eye = np.array([0.0, 1.0, 0.0])
    view = R.look_at(eye, (0.0, 0.4, -2.0))
    mvp = R.perspective(70.0, width / height, near, far) @ view
    tri = torch.tensor([[-20.0, 0.0, 5.0], [20.0, 0.0, 5.0], [0.0, 0.0, -30.0]])
    clip = R.project(tri, mvp)
    assert (clip[:, 3] > 0).sum() == 1  # two vertices behind the camera
    rast = R.rasterize(clip, torch.tensor([[0, 1, 2]]), height, width)
    p, bary = ray_plane_points(mvp, tri, height, width)
    view_depth = -(np.concatenate([p, np.ones(p.shape[:2] + (1,))], -1) @ view.double().numpy().T)[..., 2]
    hit = (view_depth > 0) & (bary > 1e-4).all(-1)  # the ray meets the triangle in front of the camera
    inside = hit & (view_depth > near * 1.001) & (view_depth < far)
    clipped = hit & (view_depth < near * 0.999)
    assert inside.sum() > 60 and clipped.sum() > 10  # both the visible ground and the near-clipped band exist
    m = rast.mask.numpy()
    assert m[inside].all() and not m[clipped].any() and not m[~hit].any()
    pts = R.interpolate(tri, rast, torch.tensor([[0, 1, 2]])).numpy()
    rel = np.linalg.norm(pts[m] - p[m], axis=-1) / np.linalg.norm(p[m] - eye, axis=-1)
    assert rel.max() < 1e-5
    assert not R.rasterize(clip, torch.tensor([[0, 1, 2]]), height, width, cull_straddling=True).mask.any()


# ------------------------------------------------------------------------------------------------ gradients
def test_interpolate_gradients_match_finite_differences() -> None:
    height, width = 6, 7
    mvp = (R.perspective(60.0, width / height, 0.1, 10.0) @ R.look_at((0.2, 0.3, 2.0), (0.0, 0.0, 0.0))).double()
    verts = torch.tensor([[-0.9, -0.7, -0.4], [0.8, -0.5, 0.3], [0.1, 0.9, -0.2],
                          [-0.3, -0.2, 0.6], [0.9, 0.4, 0.1], [-0.5, 0.8, 0.5]], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [3, 4, 5]])
    attr = torch.randn(6, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def f(v: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        return R.interpolate(a, R.rasterize(R.project(v, mvp), faces, height, width), faces)

    rast = R.rasterize(R.project(verts, mvp), faces, height, width)
    assert set(rast.face_id.unique().tolist()) == {-1, 0, 1}  # both faces and the background are seen
    v, a = verts.clone().requires_grad_(), attr.clone().requires_grad_()
    assert torch.autograd.gradcheck(f, (v, a), eps=1e-6, atol=1e-7, rtol=1e-4)
    f(v, a).sum().backward()
    assert v.grad.abs().sum() > 1e-2  # the vertex positions do get a gradient through the barycentrics


def test_antialias_gives_silhouette_gradient_toward_the_target() -> None:
    height, width = 16, 16
    tri = [[3.3, 2.6], [12.8, 4.3], [6.1, 13.2]]
    faces = torch.tensor([[0, 1, 2]])
    target, _ = render_mask(ortho_vertices([[x + 0.5, y] for x, y in tri], height, width), faces, height, width)
    v = ortho_vertices(tri, height, width).requires_grad_()
    img, alpha = render_mask(v, faces, height, width)
    assert torch.equal(img, alpha)  # white on black: the colour is the antialiased coverage
    loss = ((img - target) ** 2).sum()
    loss.backward()
    gx = v.grad[:, 0]
    assert gx.sum() < -0.1 * v.grad.abs().sum()  # d loss / d(shift right) < 0: the edges move right
    with torch.no_grad():
        step = v - 0.01 * v.grad / v.grad.norm()
        assert ((render_mask(step, faces, height, width)[0] - target) ** 2).sum() < loss
    # without the silhouette term a flat colour gives no gradient at all
    v2 = v.detach().clone().requires_grad_()
    img2, _ = R.render(v2, faces, torch.eye(4), height, width, lambda fr: 1.0 + 0.0 * fr.points[:, :1], 0.0,
                       geometry_grad="surface")
    torch.testing.assert_close(img2, img.detach())
    ((img2 - target) ** 2).sum().backward()
    assert v2.grad.abs().max() == 0


def covered_area(a: np.ndarray, b: np.ndarray, inside: np.ndarray, col: int, row: int) -> float:
    """Exact area of pixel (row, col)'s unit square on the side of the line a-b that contains ``inside``."""
    sign = np.sign(line_distances(a, b, inside[0], inside[1]))
    poly = [(col, row), (col + 1, row), (col + 1, row + 1), (col, row + 1)]
    out = []
    for i, p in enumerate(poly):  # Sutherland-Hodgman against one half-plane
        q = poly[(i + 1) % 4]
        dp, dq = sign * line_distances(a, b, p[0], p[1]), sign * line_distances(a, b, q[0], q[1])
        if dp >= 0:
            out.append(p)
        if dp * dq < 0:
            s = dp / (dp - dq)
            out.append((p[0] + s * (q[0] - p[0]), p[1] + s * (q[1] - p[1])))
    if len(out) < 3:
        return 0.0
    xs, ys = np.array(out).T
    return 0.5 * abs(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1)))


@pytest.mark.parametrize("transpose", [False, True])
@pytest.mark.parametrize("side", [1.0, -1.0])
def test_antialias_equals_box_filtered_coverage_where_an_edge_crosses_a_pixel(transpose: bool, side: float) -> None:
    """One straight silhouette edge (slope 0.52, the rest of the triangle off screen): every pixel that the edge
    crosses from top to bottom (left to right when transposed) gets exactly the covered area of its square,
    every pixel the edge does not touch stays 0 or 1."""
    height = width = 16
    a, b = np.array([1.37, -4.0]), np.array([13.77, 20.0])
    far = (a + b) / 2 + side * 40.0 * np.array([1.0, -0.517])  # far away on one side of the edge
    tri = np.stack([a, b, far])
    if transpose:
        tri = tri[:, ::-1].copy()
    img, _ = render_mask(ortho_vertices(tri.tolist(), height, width), torch.tensor([[0, 1, 2]]), height, width)
    got = img[..., 0].numpy()
    along, across = (1, 0) if transpose else (0, 1)  # the edge is mostly parallel to the `across` axis
    p0, p1 = tri[0], tri[1]
    checked = 0
    for row in range(height):
        for col in range(width):
            exact = covered_area(p0, p1, tri[2], col, row)
            cell = np.array([col, row])
            # where the edge meets the square's two sides perpendicular to `across`
            meets = [p0[along] + (e - p0[across]) * (p1[along] - p0[along]) / (p1[across] - p0[across])
                     for e in (cell[across], cell[across] + 1)]
            if exact in (0.0, 1.0):
                assert got[row, col] == exact, (row, col)
            elif all(cell[along] <= m <= cell[along] + 1 for m in meets):
                assert abs(got[row, col] - exact) < 1e-5, (row, col, got[row, col], exact)
                checked += 1
    assert checked >= 6


def test_only_boundary_and_fold_edges_are_antialiased() -> None:
    height, width = 12, 14
    eye = torch.eye(4)

    def by_face(fr: R.Fragments) -> torch.Tensor:  # a flat colour per face
        return (fr.face_id == 0).float()[:, None]

    # an interior edge (a quad's diagonal, both faces facing the same way) is no silhouette: no blending at all
    quad = ortho_vertices([[-3.0, -2.0], [17.0, -2.5], [16.5, 14.0], [-2.5, 13.0]], height, width)
    img, _ = R.render(quad, torch.tensor([[0, 1, 2], [0, 2, 3]]), eye, height, width, by_face)
    assert set(img.unique().tolist()) == {0.0, 1.0}
    # a fold (the second face shares edge 0-1 and lies on the same side of it, behind): the edge is a silhouette,
    # antialiased exactly like the boundary of the first face alone
    tri = [[2.3, 1.7], [11.6, 3.4], [5.2, 10.6]]
    verts = torch.cat([ortho_vertices(tri, height, width, -0.5), ortho_vertices([[6.0, 6.0]], height, width, 0.5)])
    alone, _ = render_mask(verts, torch.tensor([[0, 1, 2]]), height, width)
    folded, _ = render_mask(verts, torch.tensor([[0, 1, 2], [1, 0, 3]]), height, width)
    assert ((alone > 0) & (alone < 1)).sum() > 10
    torch.testing.assert_close(folded, alone)


def test_antialias_blends_with_the_occluding_silhouette_not_the_hidden_one() -> None:
    """A far face (colour 0.2) ends at x = 8.4 px, under a near face (colour 1.0) that starts at x = 8.3 px: the
    pixel [8, 9] sees 0.3 px of the far face and 0.7 px of the near one, whatever the face order."""
    height, width = 6, 16
    near = [[8.3, -30.0], [8.3, 40.0], [40.0, 3.0]]
    far = [[8.4, -30.0], [8.4, 40.0], [-30.0, 3.0]]
    for order in ([0, 1], [1, 0]):
        verts = torch.cat([ortho_vertices(near, height, width, -0.5), ortho_vertices(far, height, width, 0.5)])
        colour = torch.tensor([[1.0]] * 3 + [[0.2]] * 3)
        faces = torch.tensor([[0, 1, 2], [3, 4, 5]])[order]
        img, alpha = R.render(verts, faces, torch.eye(4), height, width, lambda fr: fr.attr, 0.0, attr=colour)
        torch.testing.assert_close(img[:, 7, 0], torch.full((height,), 0.2))
        torch.testing.assert_close(img[:, 8, 0], torch.full((height,), 0.7 * 1.0 + 0.3 * 0.2))
        torch.testing.assert_close(img[:, 9, 0], torch.full((height,), 1.0))
        assert (alpha == 1).all()


def test_render_gradient_matches_finite_differences_on_a_smooth_loss() -> None:
    """Antialiased render with per-vertex colours, float64, central differences vs autograd w.r.t. positions."""
    height, width = 12, 14
    pts = [[2.3, 1.6], [12.2, 3.3], [5.2, 10.7], [11.7, 9.6]]
    # the loss is smooth only while no edge passes a pixel centre or a pixel-side midpoint (t = 1/2): keep clear
    grid = np.stack(np.meshgrid(np.arange(0, width + 0.5, 0.5), np.arange(0, height + 0.5, 0.5)), -1)
    for a, b in [(0, 1), (1, 2), (2, 0), (1, 3), (3, 2)]:
        assert np.abs(line_distances(np.asarray(pts[a]), np.asarray(pts[b]), grid[..., 0], grid[..., 1])).min() > 1e-3
    verts = ortho_vertices(pts, height, width, z=[0.1, -0.2, 0.3, 0.0], dtype=torch.float64)
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    colours = torch.tensor([[1.0, 0.2], [0.3, 0.9], [0.6, 0.5], [0.1, 0.4]], dtype=torch.float64)
    weights = torch.randn(height, width, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    eye = torch.eye(4, dtype=torch.float64)

    def loss(v: torch.Tensor) -> torch.Tensor:
        rgb, alpha = R.render(v, faces, eye, height, width, lambda fr: fr.attr, 0.25, attr=colours)
        return (weights * rgb).sum() + (rgb**2).sum() + alpha.sum()

    v = verts.clone().requires_grad_()
    loss(v).backward()
    fd = torch.zeros_like(verts)
    h = 1e-6
    for i in range(verts.shape[0]):
        for j in range(2):
            dv = torch.zeros_like(verts)
            dv[i, j] = h
            fd[i, j] = (loss(verts + dv) - loss(verts - dv)) / (2 * h)
    torch.testing.assert_close(v.grad[:, :2], fd[:, :2], rtol=1e-5, atol=1e-6)
    assert fd[:, :2].abs().min() > 1e-2  # every screen coordinate matters


def test_adam_through_render_recovers_a_shifted_triangle() -> None:
    """Stage D's property: silhouettes alone pull a triangle 2 px off onto its target within 0.3 px."""
    height, width = 24, 24
    faces = torch.tensor([[0, 1, 2]])
    goal = [[5.3, 4.6], [19.2, 7.4], [9.7, 19.1]]
    target, _ = render_mask(ortho_vertices(goal, height, width), faces, height, width)
    start = ortho_vertices([[x - 2.0, y + 1.0] for x, y in goal], height, width)
    offset = torch.zeros(3, 2, requires_grad=True)
    opt = torch.optim.Adam([offset], lr=0.01)  # NDC units: 0.12 px
    topo = R.edge_topology(faces)
    for _ in range(80):
        opt.zero_grad()
        v = start + torch.cat([offset, torch.zeros(3, 1)], 1)
        img, _ = render_mask(v, faces, height, width, topology=topo)
        ((img - target) ** 2).sum().backward()
        opt.step()
    final = (start[:, :2] + offset.detach()).numpy()
    err_px = np.abs(final - px_to_ndc(np.asarray(goal), height, width)) * np.array([width / 2, height / 2])
    assert err_px.max() < 0.3, err_px


def test_render_is_deterministic_under_torch_deterministic_mode() -> None:
    height, width = 10, 12
    verts = ortho_vertices([[1.5, 1.2], [10.3, 2.7], [4.2, 9.1], [11.1, 8.3]], height, width, z=[0, 0.1, 0.2, 0])
    faces = torch.tensor([[0, 1, 2], [1, 3, 2]])
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        grads = []
        for _ in range(2):
            v = verts.clone().requires_grad_()
            rgb, _ = R.render(v, faces, torch.eye(4), height, width, lambda fr: fr.points.abs(), (0.1, 0.2, 0.3))
            rgb.square().sum().backward()
            grads.append(v.grad)
    finally:
        torch.use_deterministic_algorithms(before)
    assert torch.equal(grads[0], grads[1]) and grads[0].abs().sum() > 0


# ------------------------------------------------------------------------------------------------ topology
def test_edge_topology_of_a_quad() -> None:
    topo = R.edge_topology(torch.tensor([[0, 1, 2], [0, 2, 3]]))
    # face 0's edge opposite vertex 1 is (2, 0), shared with face 1 whose opposite vertex there is 3
    assert topo.neighbour.tolist() == [[-1, 1, -1], [-1, -1, 0]]
    assert topo.neighbour_opposite.tolist() == [[-1, 3, -1], [-1, -1, 1]]


# ------------------------------------------------------------------------------------------------ textures
def test_texture_nearest_texel_centres_v_flip_and_gradient() -> None:
    ht, wt = 3, 4
    tex = torch.arange(ht * wt * 2, dtype=torch.float32).view(ht, wt, 2).requires_grad_()
    rows, cols = torch.meshgrid(torch.arange(ht), torch.arange(wt), indexing="ij")
    uv = torch.stack([(cols + 0.5) / wt, 1.0 - (rows + 0.5) / ht], -1)  # OBJ vt of every texel centre
    torch.testing.assert_close(R.texture_nearest(tex, uv), tex.detach())
    # v up: v near 1 is the top row of the image array, v near 0 the bottom row; clamped at the borders
    probe = torch.tensor([[0.1, 0.99], [0.1, 0.01], [0.0, 1.0], [1.0, 0.0], [0.74, 0.5], [0.76, 0.5]])
    got = R.texture_nearest(tex, probe)
    expected = tex.detach()[[0, 2, 0, 2, 1, 1], [0, 0, 0, 3, 2, 3]]
    torch.testing.assert_close(got, expected)
    got.sum().backward()
    counts = torch.zeros(ht, wt)
    for r, c in [(0, 0), (2, 0), (0, 0), (2, 3), (1, 2), (1, 3)]:
        counts[r, c] += 1
    torch.testing.assert_close(tex.grad, counts[..., None].expand(ht, wt, 2))
