"""OmniLocalRF ERP camera geometry (spec 2.1 / 2.4): pixel centres and axes, exact projection round trip, the
seam-aware flow choice in both directions, 6D rotations, the mip-NeRF 360 contraction, ray-distance sampling,
reprojection between posed frames (identity, a rotation about y that shifts columns across the seam, an analytic
point with translation) and the wrapped bilinear look-up."""

from __future__ import annotations

import math

import pytest
import torch

from cvpr24.pipelines.omnilocalrf import camera as C

F64 = torch.float64


def rot_y(angle: float, dtype: torch.dtype = F64) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]], dtype=dtype)


def pose(rot: torch.Tensor, t: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> torch.Tensor:
    return torch.cat([rot, torch.tensor(t, dtype=rot.dtype)[:, None]], dim=1)


def random_rotations(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return C.rotation_6d_to_matrix(torch.randn(n, 3, 2, generator=g, dtype=F64))


# ------------------------------------------------------------------ directions and projection


def test_directions_are_unit_and_follow_the_axes_convention():
    h, w = 8, 16
    d = C.erp_directions(h, w, dtype=F64)
    assert d.shape == (h, w, 3)
    torch.testing.assert_close(d.norm(dim=-1), torch.ones(h, w, dtype=F64))
    eq = torch.tensor(h / 2 - 0.5, dtype=F64)

    def at(i: float, j: torch.Tensor = eq) -> torch.Tensor:
        return C.erp_pixel_to_direction(torch.tensor(i, dtype=F64), j, h, w)

    torch.testing.assert_close(at(w / 2 - 0.5), torch.tensor([0.0, 0.0, 1.0], dtype=F64))   # centre column: +z
    torch.testing.assert_close(at(-0.5), torch.tensor([0.0, 0.0, -1.0], dtype=F64))         # seam: -z
    torch.testing.assert_close(at(3 * w / 4 - 0.5), torch.tensor([1.0, 0.0, 0.0], dtype=F64))  # right of centre: +x
    torch.testing.assert_close(at(w / 2 - 0.5, torch.tensor(-0.5, dtype=F64)),
                               torch.tensor([0.0, -1.0, 0.0], dtype=F64))                    # top edge: up = -y
    # integer pixels: column 0 looks (almost) along -z, the two centre columns straddle +z symmetrically
    assert d[h // 2, 0, 2] < -0.95 and d[h // 2, w // 2, 2] > 0.95
    torch.testing.assert_close(d[:, w // 2 - 1, 0], -d[:, w // 2, 0])
    assert (d[: h // 2, :, 1] < 0).all() and (d[h // 2:, :, 1] > 0).all()


@pytest.mark.parametrize("h,w", [(4, 8), (9, 20), (64, 128)])
def test_projection_returns_the_pixel_centres_exactly(h, w):
    d = C.erp_directions(h, w, dtype=F64)
    grid = C.erp_pixel_grid(h, w, dtype=F64)
    torch.testing.assert_close(C.erp_project(d, h, w), grid, atol=1e-9, rtol=0)
    torch.testing.assert_close(C.erp_project(7.3 * d, h, w), grid, atol=1e-9, rtol=0)  # any length
    d32 = C.erp_directions(h, w)
    assert d32.dtype == torch.float32
    assert (C.erp_project(d32, h, w) - grid.float()).abs().max() < 1e-4


def test_projection_round_trip_for_random_float_pixels_near_the_seam():
    h, w = 32, 64
    g = torch.Generator().manual_seed(1)
    i = torch.cat([torch.rand(500, generator=g, dtype=F64) * w - 0.5, torch.tensor([-0.49, 0.0, w - 1.0, w - 0.51])])
    j = torch.rand(i.shape, generator=g, dtype=F64) * (h - 1)
    back = C.erp_project(C.erp_pixel_to_direction(i, j, h, w), h, w)
    torch.testing.assert_close(back, torch.stack([i, j], -1), atol=1e-9, rtol=0)


# ------------------------------------------------------------------ seam flow


def test_wrap_flow_takes_the_short_way_in_both_directions():
    w, h = 64.0, 32.0
    fx = torch.tensor([3.0, w - 3, -(w - 3), w / 2, -w / 2, 0.4 * w, -0.4 * w, 0.0], dtype=F64)
    flow = torch.stack([fx, torch.full_like(fx, h - 2)], -1)
    out = C.wrap_flow(flow, w)
    torch.testing.assert_close(out[:, 0], torch.tensor([3.0, -3, 3, w / 2, -w / 2, 0.4 * w, -0.4 * w, 0.0], dtype=F64))
    torch.testing.assert_close(out[:, 1], flow[:, 1])  # rows are not wrapped by default
    assert (C.wrap_flow(flow, w, h)[:, 1] == -2).all()


def test_points_crossing_the_seam_give_small_flow_both_ways():
    h, w = 16, 32
    j = torch.tensor(7.0, dtype=F64)
    left, right = torch.tensor(1.0, dtype=F64), torch.tensor(w - 2.0, dtype=F64)
    for src, dst, expected in [(left, right, -3.0), (right, left, 3.0)]:
        p = 2.5 * C.erp_pixel_to_direction(dst, j, h, w)
        raw = C.erp_project(p, h, w) - torch.stack([src, j])
        assert abs(raw[0].item()) > w / 2  # the naive difference goes the long way round
        torch.testing.assert_close(C.wrap_flow(raw, w)[0], torch.tensor(expected, dtype=F64))


# ------------------------------------------------------------------ 6D rotations, contraction


def test_rotation_6d_is_orthonormal_and_round_trips():
    g = torch.Generator().manual_seed(0)
    x6 = torch.randn(200, 3, 2, generator=g, dtype=F64)
    rot = C.rotation_6d_to_matrix(x6)
    eye = torch.eye(3, dtype=F64).expand(200, 3, 3)
    torch.testing.assert_close(rot.transpose(-1, -2) @ rot, eye)
    torch.testing.assert_close(torch.linalg.det(rot), torch.ones(200, dtype=F64))
    # Gram-Schmidt: first column is the normalised first input column, second lies in the span of both
    torch.testing.assert_close(rot[..., 0], x6[..., 0] / x6[..., 0].norm(dim=-1, keepdim=True))
    assert ((rot[..., 1] * x6[..., 1]).sum(-1) > 0).all()
    six = C.matrix_to_rotation_6d(rot)
    torch.testing.assert_close(six, rot[..., :2])
    torch.testing.assert_close(C.rotation_6d_to_matrix(six), rot)
    torch.testing.assert_close(C.rotation_6d_to_matrix(C.matrix_to_rotation_6d(rot_y(0.3))), rot_y(0.3))
    with pytest.raises(ValueError, match=r"\(\.\.\., 3, 2\)"):
        C.rotation_6d_to_matrix(torch.zeros(4, 6))


def test_contract_is_identity_inside_and_bounded_outside():
    g = torch.Generator().manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.randn(1000, 3, generator=g, dtype=F64), dim=-1)
    radii = torch.rand(1000, 1, generator=g, dtype=F64)
    inside = dirs * radii
    assert torch.equal(C.contract(inside), inside)
    assert torch.equal(C.contract(dirs), dirs)  # |x| = 1 exactly
    big = dirs * torch.logspace(0.01, 8, 1000, dtype=F64)[:, None]
    r = C.contract(big).norm(dim=-1)
    assert (r < 2).all() and (r > 1).all() and (r.diff() > 0).all()
    torch.testing.assert_close(C.contract(torch.tensor([0.0, 4.0, 0.0], dtype=F64)),
                               torch.tensor([0.0, 1.75, 0.0], dtype=F64))
    torch.testing.assert_close(C.contract(dirs * (1 + 1e-9)), dirs, atol=1e-8, rtol=0)  # continuous at |x| = 1
    torch.testing.assert_close(C.contract(dirs * 1e12), dirs * 2, atol=1e-9, rtol=0)


# ------------------------------------------------------------------ sampling


def test_sample_ray_distances_layout():
    z = C.sample_ray_distances(60, dtype=F64)
    n = 10
    assert z.shape == (2 * n,)
    torch.testing.assert_close(z[:n], torch.arange(n, dtype=F64) / n + 0.1)  # linear in [0, 1) + 0.1
    disparity = 1 / (z[n:] - 0.1)  # linear in disparity from 1/near = 1 towards 1/far
    torch.testing.assert_close(disparity, 1 - torch.arange(n, dtype=F64) / n * (1 - 1e-3))
    assert z[n] == pytest.approx(1.1)
    assert (z.diff() > 0).all()
    assert C.sample_ray_distances(47).shape == (14,)  # N = 47 // 6 = 7 per half
    with pytest.raises(ValueError, match="n_samples"):
        C.sample_ray_distances(5)


def test_sample_ray_distances_jitter():
    g = torch.Generator().manual_seed(3)
    z = C.sample_ray_distances(120, jitter=True, generator=g, n_rays=500, dtype=F64)
    n = 20
    assert z.shape == (500, 2 * n)
    assert (z.diff(dim=-1) > 0).all()
    assert (z[:, :n] >= 0.1).all() and (z[:, :n] < 1.1).all()
    assert (z[:, n:] >= 1.1).all() and (z[:, n:] <= 1000.1).all()
    assert not torch.equal(z[0], z[1])  # independent per ray
    bins = torch.floor((z[:, :n] - 0.1) * n)  # the jitter stays inside its stratum
    assert torch.equal(bins, torch.arange(n, dtype=F64).expand(500, n))
    shared = C.sample_ray_distances(120, jitter=True, generator=torch.Generator().manual_seed(3), dtype=F64)
    assert shared.shape == (2 * n,)  # one draw for the whole batch, as the official code
    one = C.sample_ray_distances(120, jitter=True, generator=torch.Generator().manual_seed(3), n_rays=1, dtype=F64)
    torch.testing.assert_close(shared, one[0])
    g = torch.Generator().manual_seed(3)
    first, second = torch.rand(1, n, generator=g, dtype=F64), torch.rand(1, n, generator=g, dtype=F64)
    base = torch.arange(n, dtype=F64) / n
    torch.testing.assert_close(shared[:n], base + first[0] / n + 0.1)  # draw order: linear half first
    s = base + second[0] / n
    torch.testing.assert_close(shared[n:], 1 / ((1 - s) + s / 1000) + 0.1)


# ------------------------------------------------------------------ reprojection


def test_reproject_identity_returns_the_pixel_grid():
    h, w = 12, 24
    g = torch.Generator().manual_seed(0)
    depth = torch.rand(2, h, w, generator=g, dtype=F64) * 10 + 0.1
    poses = pose(random_rotations(1)[0], (0.3, -1.0, 2.0)).expand(2, 3, 4)
    coords, valid = C.reproject(depth, poses, C.as_homogeneous(poses))
    assert coords.shape == (2, h, w, 2) and valid.all()
    torch.testing.assert_close(coords, C.erp_pixel_grid(h, w, dtype=F64).expand(2, h, w, 2), atol=1e-9, rtol=0)


@pytest.mark.parametrize("k", [3, -5, 12])
def test_reproject_rotation_about_y_shifts_columns_with_wrap(k):
    h, w = 16, 32
    g = torch.Generator().manual_seed(1)
    depth = torch.rand(h, w, generator=g, dtype=F64) * 5 + 0.5
    src = pose(torch.eye(3, dtype=F64))
    dst = pose(rot_y(2 * math.pi * k / w))  # the destination camera is turned by k columns to the right
    coords, valid = C.reproject(depth, src, dst)
    assert valid.all()
    grid = C.erp_pixel_grid(h, w, dtype=F64)
    torch.testing.assert_close(coords[..., 1], grid[..., 1], atol=1e-9, rtol=0)
    shift = torch.remainder(coords[..., 0] - grid[..., 0] + k + 0.5, w) - 0.5  # congruent to -k modulo W
    torch.testing.assert_close(shift, torch.zeros(h, w, dtype=F64), atol=1e-9, rtol=0)
    assert (coords[..., 0] >= -0.5 - 1e-9).all() and (coords[..., 0] <= w - 0.5 + 1e-9).all()


def test_reproject_rays_lands_on_the_analytic_pixel_and_depth_is_ray_distance():
    h, w = 32, 64
    point = torch.tensor([1.0, -0.4, 2.0], dtype=F64)
    rot_src, rot_dst = random_rotations(2, seed=4)
    t_src, t_dst = torch.tensor([0.2, 0.1, -0.3], dtype=F64), torch.tensor([-1.0, 0.3, 0.8], dtype=F64)
    p_src = rot_src.T @ (point - t_src)
    pix = C.erp_project(p_src, h, w)
    direction = C.erp_pixel_to_direction(pix[0], pix[1], h, w)
    depth = p_src.norm()  # distance along the ray, not z
    coords, valid = C.reproject_rays(direction[None], depth[None], pose(rot_src, tuple(t_src.tolist())),
                                     pose(rot_dst, tuple(t_dst.tolist())), h, w)
    expected = C.erp_project(rot_dst.T @ (point - t_dst), h, w)
    torch.testing.assert_close(coords[0], expected, atol=1e-9, rtol=0)
    assert valid.all()
    wrong, _ = C.reproject_rays(direction[None], p_src[2:3], pose(rot_src, tuple(t_src.tolist())),
                                pose(rot_dst, tuple(t_dst.tolist())), h, w)  # z instead of distance
    assert (wrong[0] - expected).abs().max() > 0.5


def test_reproject_validity_mask():
    h, w = 4, 8
    depth = torch.full((h, w), 2.0, dtype=F64)
    depth[0, 0], depth[0, 1], depth[0, 2] = 0.0, float("nan"), -1.0
    d = C.erp_directions(h, w, dtype=F64)[1, 3]
    dst = pose(torch.eye(3, dtype=F64), tuple((2.0 * d).tolist()))  # destination camera sits on pixel (3, 1)'s point
    _, valid = C.reproject(depth, pose(torch.eye(3, dtype=F64)), dst)
    assert not valid[0, 0] and not valid[0, 1] and not valid[0, 2] and not valid[1, 3]
    assert valid.sum() == h * w - 4


def test_depth_consistency_rejects_a_20_percent_disagreement():
    ref = torch.tensor([0.5, 0.5, 0.5, 0.5, 2.0], dtype=F64)
    depth = torch.tensor([0.5, 0.51, 0.6, 0.4, 2.0], dtype=F64)
    assert C.depth_consistent(depth, ref).tolist() == [True, True, False, False, False]  # last: beyond D_max = 1
    assert C.depth_consistent(depth, ref, margin=0.25, max_depth=3.0).tolist() == [True] * 5
    assert not C.depth_consistent(depth, ref, margin=2.0, max_depth=0.05).any()  # the code's forward values


# ------------------------------------------------------------------ bilinear look-up


def test_bilinear_sample_wraps_columns_and_clamps_rows():
    h, w = 4, 6
    img = torch.arange(h * w, dtype=F64).reshape(h, w, 1)
    at = lambda i, j: C.erp_bilinear_sample(img, torch.tensor([[i, j]], dtype=F64))[0, 0].item()  # noqa: E731
    assert at(2.0, 1.0) == img[1, 2, 0]
    assert at(2.5, 1.0) == pytest.approx((img[1, 2, 0] + img[1, 3, 0]) / 2)
    seam = (img[1, w - 1, 0] + img[1, 0, 0]) / 2
    assert at(-0.5, 1.0) == pytest.approx(seam) and at(w - 0.5, 1.0) == pytest.approx(seam)
    assert at(-0.25, 1.0) == pytest.approx(0.25 * img[1, w - 1, 0] + 0.75 * img[1, 0, 0])
    assert at(2.0, -0.5) == img[0, 2, 0] and at(2.0, h - 0.5) == img[h - 1, 2, 0]
    wrapped = C.erp_bilinear_sample(img, torch.tensor([[2.0, -0.5]], dtype=F64), wrap_rows=True)[0, 0]
    assert wrapped == pytest.approx((img[h - 1, 2, 0] + img[0, 2, 0]) / 2)
