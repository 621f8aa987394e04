"""DDPS model: each test fails if its component (pattern parameterisation, renderer, reconstructor,
gradients, loss, metric, polarization separation, schedule) is wrong."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cvpr24.pipelines.ddps import data as D
from cvpr24.pipelines.ddps import model as M


def _unit(v):
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


# ------------------------------------------------------------------------------------ patterns
def test_logit_sigmoid_round_trip_and_gamma():
    p = torch.tensor([0.01, 0.2, 0.5, 0.99], dtype=torch.float64)
    assert torch.allclose(torch.sigmoid(M.logit(p)), p, atol=1e-12)
    pat = M.DisplayPatterns(np.full((1, 2, 2, 3), 0.3))
    assert torch.allclose(pat(), torch.full((1, 2, 2, 3), 0.3, dtype=torch.float64), atol=1e-12)
    assert torch.allclose(M.radiance(pat(), 2.2), torch.full((1, 2, 2, 3), 0.3**2.2, dtype=torch.float64))


def test_olat_init_lights_exactly_the_four_corners():
    p = M.initial_pattern("OLAT", 4)
    assert p.shape == (4, 9, 16, 3)
    bright = np.argwhere(np.isclose(p[..., 0], 0.9))
    assert sorted(map(tuple, bright[:, 1:])) == [(0, 0), (0, 15), (8, 0), (8, 15)]
    assert len(bright) == 4 and np.isclose(p[p < 0.5], 0.1).all()


def test_two_pattern_families_pad_with_base_value_and_mono_ties_channels():
    p = M.initial_pattern("tri_gradient", 4)
    assert np.allclose(p[2:], 0.1) and p.min() >= 0.01 and p.max() <= 0.99
    m = M.initial_pattern("mono_random", 3, seed=1)
    assert np.allclose(m[..., 0], m[..., 2])
    mono = M.DisplayPatterns(np.random.default_rng(0).uniform(0.1, 0.9, (2, 9, 16, 3)), "mono")
    out = mono()
    assert mono.theta.shape == (2, 9, 16, 1) and torch.equal(out[..., 0], out[..., 1])


# ------------------------------------------------------------------------------------ renderer
def test_lambertian_sphere_matches_closed_form():
    """A white Lambertian sphere lit by one point light: rendered intensity = rho k cos / d^2 with the
    sphere's analytic normals and points (independent of the generator's numeric gradients)."""
    h, w, f, depth, r = 40, 48, 150.0, 0.5, 0.05
    x, y = D.pixel_grid(h, w, f, depth)
    pts, n, mask = D.surface(lambda a, b: np.where(r**2 - a**2 - b**2 > 0, np.sqrt(np.clip(r**2 - a**2 - b**2, 0, None)),
                                                   np.nan), x, y, depth)
    light = np.array([[0.1, -0.3, 0.1]])
    d, s = M.render_components(pts[mask], n[mask], np.full((mask.sum(), 3), 0.7), light, energy=2.0,
                               specular=False)
    zc = np.sqrt(r**2 - x[mask] ** 2 - y[mask] ** 2)
    X = np.stack([x[mask], y[mask], depth - zc], -1)
    n_true = (X - np.array([0, 0, depth])) / r
    to_l = light[0] - X
    dist = np.linalg.norm(to_l, axis=-1)
    expect = 0.7 * 2.0 * np.clip((n_true * to_l).sum(-1) / dist, 0, None) / dist**2
    inner = D.erode(mask, 3)[mask]
    assert np.allclose(d[0, inner, 0], expect[inner], rtol=1e-4, atol=1e-7)
    assert np.abs(s).max() == 0
    # the brightest point faces the light
    assert expect.max() > 0 and np.argmax(d[0, :, 0]) == np.argmax(expect)


def test_sphere_normals_equal_analytic():
    h, w, f, depth, r = 32, 38, 72.0, 0.5, 0.05
    x, y = D.pixel_grid(h, w, f, depth)
    pts, n, mask = D.surface(lambda a, b: np.where(r**2 - a**2 - b**2 > 0, np.sqrt(np.clip(r**2 - a**2 - b**2, 0, None)),
                                                   np.nan), x, y, depth)
    inner = D.erode(mask, 3)
    analytic = (pts[inner] - np.array([0, 0, depth])) / r
    assert np.abs(n[inner] - analytic).max() < 1e-3
    assert (n[inner][:, 2] < 0).all()  # facing the camera: negative z


def test_relight_is_linear_and_flip_mirrors_columns():
    g = torch.Generator().manual_seed(0)
    basis = torch.rand(2, 6, 5, 3, generator=g, dtype=torch.float64)
    pa, pb = (torch.rand(3, 2, 3, 3, generator=g, dtype=torch.float64) for _ in range(2))
    basis = M.channel_first(basis)
    lhs = M.relight(basis, pa + pb, 0.7)
    assert torch.allclose(lhs, M.relight(basis, pa, 0.7) + M.relight(basis, pb, 0.7), atol=1e-10)
    # a pattern lighting only column 0 weights the basis images of the mirrored column (cols - 1)
    basis = torch.zeros(1, 9 * 16, 1, 3, dtype=torch.float64)
    basis[0, 15, 0] = 1.0  # row 0, column 15
    basis = M.channel_first(basis)
    light = torch.zeros(1, 9, 16, 3, dtype=torch.float64)
    light[0, 0, 0] = 1.0
    assert M.relight(basis, light, 1.0, column_flip=True).sum() == 3
    assert M.relight(basis, light, 1.0, column_flip=False).sum() == 0


def test_exposure_splits_capture_time():
    assert math.isclose(M.exposure(4), 3.25 / 96, rel_tol=1e-9)
    assert math.isclose(M.exposure(8), M.exposure(4) / 2, rel_tol=1e-12)


# ------------------------------------------------------------------------------ polarization
def test_polarization_separation_recovers_diffuse_and_specular():
    rng = np.random.default_rng(0)
    d, s = rng.uniform(0, 1, (50, 3)), rng.uniform(0, 1, (50, 3))
    for phi in (0.0, 30.0, 45.0, 100.0):
        dd, ss = M.separate_polarization(*M.polarizer_images(d, s, phi))
        assert np.allclose(dd, d, atol=1e-6) and np.allclose(ss, s, atol=1e-6)
    shots = M.polarizer_images(d, np.zeros_like(d), 45.0)
    assert all(np.allclose(shots[0], x) for x in shots[1:])


# ------------------------------------------------------------------------------ reconstructor
def _distant_setup(rng, n_patterns=4, rows=3, cols=4):
    dirs = _unit(np.c_[rng.uniform(-0.6, 0.6, (rows * cols, 2)), -np.ones(rows * cols)])
    light = rng.uniform(0.05, 1.0, (n_patterns, rows, cols, 3))
    return dirs, light


def test_reconstructor_is_exact_on_noise_free_lambertian():
    """Grey patterns: the official solver scales channel c's equations by a_c = max_n I_n[c], which is
    consistent across channels only when the channels share the pattern (coloured patterns make the
    solution approximate -- the learned patterns adapt to exactly that solver)."""
    rng = np.random.default_rng(3)
    dirs, light = _distant_setup(rng)
    light = np.repeat(light[..., :1], 3, -1)
    p = 64
    n = _unit(np.c_[rng.uniform(-0.3, 0.3, (p, 2)), -np.ones(p)])
    rho = rng.uniform(0.2, 0.9, (p, 3))
    shade = np.clip(n @ dirs.T, 0, None)  # (P, J), all positive for these normals
    assert (n @ dirs.T > 0).all()
    scale = 0.05
    img = scale * np.einsum("njc,pj,pc->npc", light.reshape(4, -1, 3), shade, rho)
    normal, albedo = M.photometric_stereo(torch.from_numpy(img)[None], torch.from_numpy(light),
                                          torch.from_numpy(np.broadcast_to(dirs, (p, *dirs.shape)).copy()),
                                          scale, delta=1e-14)
    err = M.angular_error_deg(normal[0].numpy(), n)
    assert err.max() < 1e-3
    assert np.allclose(albedo[0].numpy(), rho, atol=1e-4)


def test_reconstructor_whole_sphere_with_144_olat():
    """Exact normals of a Lambertian sphere image from all 144 one-light patterns (distant lights)."""
    lights = D.display_grid()
    h, w, f, depth, r = 24, 28, 60.0, 0.5, 0.05
    x, y = D.pixel_grid(h, w, f, depth)
    pts, n, mask = D.surface(lambda a, b: np.where(r**2 - a**2 - b**2 > 0, np.sqrt(np.clip(r**2 - a**2 - b**2, 0, None)),
                                                   np.nan), x, y, depth)
    sel = D.erode(mask, 3)
    nn = n[sel]
    ldir = _unit(lights.reshape(-1, 3) - np.array([0, 0, depth]))
    img = (nn @ ldir.T).T[:, :, None] * np.array([0.5, 0.6, 0.7])  # shadow-free, linear
    olat = np.eye(144).reshape(144, 9, 16, 1).repeat(3, -1)
    normal, _ = M.photometric_stereo(torch.from_numpy(img)[None], torch.from_numpy(olat),
                                     torch.from_numpy(np.broadcast_to(ldir, (len(nn), 144, 3)).copy()), delta=1e-14)
    assert M.angular_error_deg(normal[0].numpy(), nn).max() < 1e-3


def test_reconstructor_degenerate_pixels_are_finite():
    light = torch.rand(4, 3, 4, 3, dtype=torch.float64)
    dirs = torch.from_numpy(_unit(np.random.default_rng(0).normal(size=(2, 12, 3))))
    img = torch.zeros(1, 4, 2, 3, dtype=torch.float64)
    normal, albedo = M.photometric_stereo(img, light, dirs)
    assert torch.isfinite(normal).all() and torch.isfinite(albedo).all()
    same = torch.full((4, 3, 4, 3), 0.5, dtype=torch.float64)  # identical patterns: rank deficient
    normal, _ = M.photometric_stereo(torch.rand(1, 4, 2, 3, dtype=torch.float64), same, dirs)
    assert torch.isfinite(normal).all()


def test_gradient_of_the_whole_chain_matches_finite_differences():
    """gradcheck (float64) of the loss with respect to the pattern logits through gamma, relighting,
    the reconstructor (both its images and its light vectors) and the cosine loss on a tiny instance."""
    g = torch.Generator().manual_seed(0)
    rows, cols, n_pat, p = 2, 3, 2, 5
    basis = M.channel_first(0.2 + torch.rand(1, rows * cols, p, 3, generator=g, dtype=torch.float64))
    dirs = torch.from_numpy(_unit(np.c_[np.random.default_rng(1).uniform(-0.5, 0.5, (p, rows * cols, 2)),
                                        -np.ones((p, rows * cols, 1))]))
    target = torch.from_numpy(_unit(np.c_[np.random.default_rng(2).uniform(-0.3, 0.3, (p, 2)), -np.ones((p, 1))]))[None]
    mask = torch.ones(1, p, dtype=torch.bool)

    def loss(theta):
        light = M.radiance(torch.sigmoid(theta), 2.2)
        img = M.capture(M.relight(basis, light, 0.05))
        normal, _ = M.photometric_stereo(img, light, dirs, albedo=False)
        return M.cosine_loss(normal, target, mask)

    theta = (torch.randn(n_pat, rows, cols, 3, generator=g, dtype=torch.float64) * 0.5).requires_grad_()
    assert torch.autograd.gradcheck(loss, (theta,), eps=1e-6, atol=1e-7, rtol=1e-3)
    (grad,) = torch.autograd.grad(loss(theta), theta)
    assert grad.abs().max() > 0


# -------------------------------------------------------------------------------- loss, metric
def test_cosine_loss_and_angular_error():
    n = torch.tensor([[[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    assert M.cosine_loss(n, n, torch.ones(1, 3, dtype=torch.bool)) == 0
    assert torch.isclose(M.cosine_loss(n, -n, torch.ones(1, 3, dtype=torch.bool)), torch.tensor(1.0))
    mask = torch.tensor([[True, False, False]])
    other = n.clone()
    other[0, 1:] = -other[0, 1:]  # wrong only where masked out
    assert M.cosine_loss(other, n, mask) == 0
    mask2 = torch.tensor([[True, True, False]])
    assert torch.isclose(M.cosine_loss(other, n, mask2), torch.tensor(0.5))  # divided by the mask count
    assert np.isclose(M.angular_error_deg(np.array([1.0, 0, 0]), np.array([0, 1.0, 0])), 90)
    assert np.isclose(M.angular_error_deg(np.array([0, 0, -1.0]), np.array([0, 0, -1.0])), 0)


def test_step_lr_schedule_counts_epochs():
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=0.3)
    sched = M.step_lr_schedule(opt, 5, 0.3, steps_per_epoch=12)
    lrs = {}
    for step in range(12 * 11):
        if step % 12 == 0:
            lrs[step // 12] = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.3) and lrs[4] == pytest.approx(0.3)
    assert lrs[5] == pytest.approx(0.09) and lrs[10] == pytest.approx(0.027)


def test_solve3_matches_linalg_solve():
    g = torch.Generator().manual_seed(0)
    m = torch.randn(50, 3, 3, generator=g, dtype=torch.float64)
    a = m @ m.transpose(-1, -2) + 0.1 * torch.eye(3, dtype=torch.float64)
    b = torch.randn(50, 3, generator=g, dtype=torch.float64)
    assert torch.allclose(M.solve3(a, b), torch.linalg.solve(a, b), atol=1e-9)


def _lstsq_normals(img, light, dirs):
    """The reconstructor's 3N equations a_c m_{n,c}^T x = I_n[c] per pixel, solved by np.linalg.lstsq."""
    n, p = img.shape[1], img.shape[2]
    w = light.reshape(n, -1, 3)  # (N, J, 3c)
    out = []
    for q in range(p):
        m = np.einsum("njc,jk->nck", w, dirs[q])  # (N, 3c, 3k)
        a = img[0, :, q].max(0)  # (3c,)
        x = np.linalg.lstsq((m * a[None, :, None]).reshape(-1, 3), img[0, :, q].reshape(-1), rcond=None)[0]
        out.append(x / np.linalg.norm(x))
    return np.array(out)


@pytest.mark.parametrize("case", ["well_posed", "dim_olat", "flat_gray"])
def test_ridge_solve_equals_least_squares(case):
    """The ridge is relative to the Gram matrix's trace: a well-posed system (any brightness) is solved as
    plain least squares (< 0.1 deg), and so is flat gray's cond(A) ~ 1e3 system (the old absolute ridge
    moved those normals by ~3-11 deg median)."""
    rng = np.random.default_rng(7)
    p, rows, cols = 40, 3, 4
    dirs = _unit(np.concatenate([rng.uniform(-0.6, 0.6, (p, rows * cols, 2)), -np.ones((p, rows * cols, 1))], -1))
    if case == "flat_gray":
        light = np.clip(rng.normal(0.5, 0.01, (4, rows, cols, 3)), 0, 1) ** 2.2
    elif case == "dim_olat":
        light = np.zeros((4, rows, cols, 3))
        for k, (r, c) in enumerate(((0, 0), (0, cols - 1), (rows - 1, 0), (rows - 1, cols - 1))):
            light[k, r, c] = 1.0
    else:
        light = rng.uniform(0.05, 1.0, (4, rows, cols, 3))
    img = np.abs(rng.normal(1.0, 0.3, (1, 4, p, 3))) * (1e-4 if case == "dim_olat" else 0.05)
    ref = _lstsq_normals(img, light, dirs)
    if case != "flat_gray":
        assert max(np.linalg.cond(np.einsum("njc,jk->nck", light.reshape(4, -1, 3), dirs[q]).reshape(-1, 3))
                   for q in range(p)) < 100
    normal, _ = M.photometric_stereo(torch.from_numpy(img), torch.from_numpy(light), torch.from_numpy(dirs),
                                     albedo=False)
    assert M.angular_error_deg(normal[0].numpy(), ref).max() < 0.1
