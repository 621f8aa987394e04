"""OmniLocalRF local TensoRFs (spec 2.2): VM field sizes, volume rendering identities (an opaque sample, an empty
field, a thin shell at a known distance, the mask alpha in front), appearance only above the weight threshold,
upsampling, the voxel schedule, gradients, a tiny overfit, the regularisers, per-frame exposure, and progressive
allocation of RFs along a camera path (a new RF exactly when the drift / window condition holds)."""

from __future__ import annotations

import math

import pytest
import torch

from cvpr24.pipelines.omnilocalrf import camera as C
from cvpr24.pipelines.omnilocalrf import tensorf as T

pytestmark = pytest.mark.usefixtures("one_thread")


def small_field(grid: int = 8, seed: int = 0, **kw) -> T.TensoRFVM:
    torch.manual_seed(seed)
    args = dict(density_n_comp=(2, 2, 2), app_n_comp=(3, 3, 3), app_dim=6, feature_c=16)
    args.update(kw)
    return T.TensoRFVM(grid, generator=torch.Generator().manual_seed(seed), **args)


def unit_rays(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g), dim=-1)
    return torch.zeros(n, 3), d


class ShellField(T.TensoRFVM):
    """Density feature +100 on a thin spherical shell |x| in (r0 - h, r0 + h) around the origin, -100 elsewhere
    (the shell lies in the uncontracted region |x| <= 1; grid coordinates are contracted / 2)."""

    def __init__(self, r0: float, h: float, value: float = 100.0, **kw) -> None:
        super().__init__(4, density_n_comp=(1, 1, 1), app_n_comp=(2, 2, 2), app_dim=4, feature_c=8, **kw)
        self.r0, self.h, self.value = r0, h, value

    def density_feature(self, xyz_norm: torch.Tensor) -> torch.Tensor:
        r = torch.linalg.vector_norm(xyz_norm * 2, dim=-1)
        inside = (r - self.r0).abs() < self.h
        return torch.where(inside, torch.full_like(r, self.value), torch.full_like(r, -self.value))


# ------------------------------------------------------------------ sizes


def test_default_field_has_the_official_shapes_and_parameter_count():
    f = T.TensoRFVM()
    assert f.grid_size == (64, 64, 64)
    for planes, lines, c in ((f.density_plane, f.density_line, 8), (f.app_plane, f.app_line, 24)):
        assert [tuple(p.shape) for p in planes] == [(1, c, 64, 64)] * 3
        assert [tuple(ln.shape) for ln in lines] == [(1, c, 64, 1)] * 3
    assert f.basis_mat.weight.shape == (27, 72) and f.basis_mat.bias is None
    mlp = f.render_module
    assert [tuple(m.weight.shape) for m in (mlp.mlp[0], mlp.mlp[2], mlp.mlp_view[0])] == [(128, 27), (128, 128),
                                                                                         (3, 131)]
    assert torch.all(mlp.mlp_view[0].bias == 0)
    n_grid = 3 * 8 * (64 * 64 + 64) + 3 * 24 * (64 * 64 + 64)
    n_mlp = 27 * 128 + 128 + 128 * 128 + 128 + 131 * 3 + 3
    assert sum(p.numel() for p in f.parameters()) == n_grid + 72 * 27 + n_mlp == 421796
    assert 0.05 < float(f.density_plane[0].detach().std()) < 0.15  # 0.1 randn
    assert f.n_samples == 219 and T.TensoRFVM(640, (1, 1, 1), (1, 1, 1), 3, 4).n_samples == 2214
    assert f.aabb.tolist() == [[-2.0] * 3, [2.0] * 3]
    # a non-cubic grid keeps the axis convention: mode 0 plane = (N_y, N_x), line = N_z
    g = T.TensoRFVM((4, 5, 6), (1, 1, 1), (1, 1, 1), 2, 4)
    assert g.grid_size == (4, 5, 6) and tuple(g.density_plane[0].shape[-2:]) == (5, 4)
    assert tuple(g.density_line[0].shape[-2:]) == (6, 1) and tuple(g.app_plane[2].shape[-2:]) == (6, 5)


# ------------------------------------------------------------------ volume rendering


def test_single_opaque_sample_takes_all_weight_and_gives_its_colour_and_distance():
    field = ShellField(r0=0.5, h=0.03)
    rays_o, rays_d = unit_rays(64)
    out = T.render_rays(field, rays_o, rays_d, n_samples=60)  # N = 10: t = 0.1, 0.2, ..., 1.0, then disparity
    k = 4
    assert out.z_vals[0, k].item() == pytest.approx(0.5, abs=1e-6)
    torch.testing.assert_close(out.weights[:, k], torch.ones(64), atol=1e-5, rtol=0)
    assert out.weights[:, :k].abs().max() < 1e-6 and out.weights[:, k + 1:].abs().max() < 1e-6
    torch.testing.assert_close(out.acc, torch.ones(64), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.depth, torch.full((64,), 0.5), atol=1e-5, rtol=0)
    xyz = field.normalize_coord(rays_d * out.z_vals[:, k:k + 1])
    colour = field.shade(field.app_feature(xyz), rays_d)
    torch.testing.assert_close(out.rgb, colour, atol=1e-5, rtol=0)
    assert int(out.app_mask.sum()) == 64  # only the shell sample was shaded
    # depth is sum w t / |d|: the same rays with |d| = 2 report half the distance (same samples along the ray)
    out2 = T.render_rays(field, rays_o, 2 * rays_d, n_samples=60)
    torch.testing.assert_close(out2.depth, torch.full((64,), 0.25), atol=1e-5, rtol=0)
    torch.testing.assert_close(out2.rgb, out.rgb)


@pytest.mark.parametrize("r0", [0.3, 0.8])
def test_depth_of_a_thin_opaque_shell_is_its_radius_from_an_offset_camera(r0):
    # camera off the centre: the shell is hit at the analytic ray-sphere distance, recovered to the sample spacing
    field = ShellField(r0=r0, h=0.02)
    g = torch.Generator().manual_seed(3)
    o = torch.tensor([0.05, -0.03, 0.02]).expand(32, 3)
    d = torch.nn.functional.normalize(torch.randn(32, 3, generator=g), dim=-1)
    out = T.render_rays(field, o, d, n_samples=6 * 400)  # linear spacing 1/400 in [0.1, 1.1)
    b = (o * d).sum(-1)
    r_in = r0 - 0.02  # the camera is inside: the first opaque sample is just past the inner surface
    t_hit = -b + torch.sqrt(b ** 2 - (o * o).sum(-1) + r_in ** 2)
    assert (out.depth - t_hit).abs().max() < 1 / 400 + 1e-4
    torch.testing.assert_close(out.acc, torch.ones(32), atol=1e-4, rtol=0)


def test_empty_field_is_transparent_and_shows_the_background():
    field = small_field(density_shift=-200.0)
    rays_o, rays_d = unit_rays(16)
    out = T.render_rays(field, rays_o, rays_d)
    assert out.acc.abs().max() < 1e-6 and out.rgb.abs().max() < 1e-6
    torch.testing.assert_close(out.t_last, torch.ones(16))
    assert int(out.app_mask.sum()) == 0
    white = T.render_rays(field, rays_o, rays_d, background=1.0)
    torch.testing.assert_close(white.rgb, torch.ones(16, 3))
    grey = T.render_rays(field, rays_o, rays_d, background=torch.tensor([0.2, 0.4, 0.6]))
    torch.testing.assert_close(grey.rgb, torch.tensor([[0.2, 0.4, 0.6]]).expand(16, 3))
    blocked = T.render_rays(field, rays_o, rays_d, fin_alpha_block=True)  # the last alpha forced to 1
    torch.testing.assert_close(blocked.acc, torch.ones(16))


def test_weights_sum_to_acc_at_most_one_and_transmittance_is_the_rest():
    field = small_field()
    with torch.no_grad():
        for p in list(field.density_plane) + list(field.density_line):
            p.mul_(10.0)
    rays_o = torch.randn(128, 3, generator=torch.Generator().manual_seed(1)) * 0.5
    _, rays_d = unit_rays(128, seed=2)
    out = T.render_rays(field, rays_o, rays_d, jitter=True, generator=torch.Generator().manual_seed(0))
    assert out.weights.min() >= 0 and out.weights[:, -1].abs().max() == 0  # the last sample is invalid
    torch.testing.assert_close(out.weights.sum(-1), out.acc)
    assert out.acc.max() <= 1 + 1e-6 and out.acc.min() > 0.05
    torch.testing.assert_close(out.acc + out.t_last, torch.ones(128), atol=1e-5, rtol=0)
    assert torch.all(out.depth > 0.1) and torch.all(out.rgb >= 0) and torch.all(out.rgb <= out.acc[:, None] + 1e-6)
    assert torch.all(out.z_vals[:, 1:] > out.z_vals[:, :-1])


def test_appearance_is_evaluated_only_where_the_weight_exceeds_the_threshold():
    field = small_field()
    with torch.no_grad():
        for p in list(field.density_plane) + list(field.density_line):
            p.mul_(6.0)
    calls: list[int] = []
    inner = field.app_feature

    def counting(xyz: torch.Tensor) -> torch.Tensor:
        calls.append(xyz.shape[0])
        return inner(xyz)

    field.app_feature = counting  # type: ignore[method-assign]
    rays_o, rays_d = unit_rays(64)
    out = T.render_rays(field, rays_o, rays_d)
    n_above = int((out.weights > 1e-3).sum())
    assert calls == [n_above] and 0 < n_above < out.weights.numel()
    assert torch.equal(out.app_mask, out.weights > 1e-3)
    # the result equals shading every sample and zeroing the colours below the threshold
    xyz = field.normalize_coord(C.contract(rays_d[:, None] * out.z_vals[..., None]))
    dirs = rays_d[:, None].expand_as(xyz)
    rgb_all = field.shade(inner(xyz.reshape(-1, 3)), dirs.reshape(-1, 3)).view(*xyz.shape[:2], 3)
    ref = (out.weights[..., None] * rgb_all * out.app_mask[..., None]).sum(1)
    torch.testing.assert_close(out.rgb, ref, atol=1e-6, rtol=0)
    calls.clear()
    T.render_rays(field, rays_o, rays_d, weight_threshold=2.0)
    assert calls == []


def test_mask_alpha_in_front_scales_the_colour_weights_but_not_the_depth():
    field = small_field()
    with torch.no_grad():
        for p in list(field.density_plane) + list(field.density_line):
            p.mul_(8.0)
    rays_o, rays_d = unit_rays(32)
    m = torch.rand(32, generator=torch.Generator().manual_seed(5))
    base = T.render_rays(field, rays_o, rays_d)
    out = T.render_rays(field, rays_o, rays_d, lead_alpha=m, weight_threshold=0.0)
    ref = T.render_rays(field, rays_o, rays_d, weight_threshold=0.0)
    torch.testing.assert_close(out.weights, ref.weights * (1 - m[:, None]), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.rgb, ref.rgb * (1 - m[:, None]), atol=1e-6, rtol=0)
    torch.testing.assert_close(out.depth, base.depth)
    torch.testing.assert_close(out.t_last, ref.t_last * (1 - m), atol=1e-6, rtol=0)
    full = T.render_rays(field, rays_o, rays_d, lead_alpha=torch.ones(32))
    assert full.acc.abs().max() < 1e-6 and full.rgb.abs().max() < 1e-6 and int(full.app_mask.sum()) == 0


# ------------------------------------------------------------------ upsampling and schedule


def test_upsampling_keeps_the_field_at_the_new_grid_nodes_and_resizes_the_parameters():
    field = small_field(grid=9)
    nodes17 = T.TensoRFVM(17, (1, 1, 1), (1, 1, 1), 2, 4).grid_points().reshape(-1, 3)
    nodes9 = field.grid_points().reshape(-1, 3)
    dirs = torch.nn.functional.normalize(torch.ones(1, 3), dim=-1)
    with torch.no_grad():
        before17, before9 = field.query(nodes17, dirs), field.query(nodes9, dirs)
        field.upsample((17, 17, 17))
        after17, after9 = field.query(nodes17, dirs), field.query(nodes9, dirs)
    assert field.grid_size == (17, 17, 17) and field.n_samples > small_field(grid=9).n_samples
    assert tuple(field.app_plane[1].shape) == (1, 3, 17, 17) and tuple(field.density_line[2].shape) == (1, 2, 17, 1)
    for b, a in zip(before17 + before9, after17 + after9, strict=True):  # nested grids: old nodes are new nodes
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    # a non-nested resolution: the values at the NEW nodes are still those of the old field
    nodes = T.TensoRFVM((12, 13, 14), (1, 1, 1), (1, 1, 1), 2, 4).grid_points().reshape(-1, 3)
    with torch.no_grad():
        before = field.query(nodes, dirs)
        field.upsample((12, 13, 14))
        after = field.query(nodes, dirs)
    assert field.grid_size == (12, 13, 14)
    for b, a in zip(before, after, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    opt = field.make_optimizer()
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(field.parameters()))


def test_voxel_schedule_matches_the_official_numbers():
    sched = T.n_voxel_schedule()
    assert sched == {100: 101 ** 3, 150: 161 ** 3, 200: 255 ** 3, 250: 404 ** 3, 300: 640 ** 3}
    assert [T.n_to_reso(n) for n in sched.values()] == [(n, n, n) for n in (101, 161, 255, 404, 640)]
    assert [T.n_to_reso(n, code_truncation=True) for n in sched.values()] == [T.n_to_reso(n) for n in sched.values()]
    assert T.n_to_reso(64 ** 3) == (64, 64, 64)
    assert T.n_to_reso(28 ** 3) == (28, 28, 28) and T.n_to_reso(28 ** 3, code_truncation=True) == (27, 27, 27)
    assert T.scale_schedule(sched, 7) == {700: 101 ** 3, 1050: 161 ** 3, 1400: 255 ** 3, 1750: 404 ** 3,
                                          2100: 640 ** 3}
    small = T.n_voxel_schedule(16 ** 3, 64 ** 3, (4, 6, 8, 10, 12))
    assert [round(v ** (1 / 3)) for v in small.values()] == [21, 28, 37, 49, 64]


# ------------------------------------------------------------------ gradients and a tiny fit


def test_gradients_reach_planes_lines_basis_and_mlp():
    field = small_field()
    with torch.no_grad():
        for p in list(field.density_plane) + list(field.density_line):
            p.mul_(6.0)
    rays_o, rays_d = unit_rays(64)
    out = T.render_rays(field, rays_o, rays_d)
    (out.rgb.sum() + 0.01 * out.depth.sum()).backward()
    for name, p in field.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def sphere_target(h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """ERP rays from the origin and their analytic colours: a sphere (centre (0.1, 0, 0.6), radius 0.3) shaded by
    its normal, in front of a latitude/longitude-coloured environment."""
    d = C.erp_directions(h, w).reshape(-1, 3)
    c, r = torch.tensor([0.1, 0.0, 0.6]), 0.3
    b = (d * c).sum(-1)
    disc = b ** 2 - (c * c).sum() + r ** 2
    hit = disc > 0
    t = b - torch.sqrt(disc.clamp(min=0))
    normal = torch.nn.functional.normalize(d * t[:, None] - c, dim=-1)
    env = torch.stack([0.5 + 0.4 * d[:, 0], 0.5 + 0.4 * d[:, 1], 0.3 + 0.2 * d[:, 2]], dim=-1)
    return d, torch.where(hit[:, None], 0.5 + 0.5 * normal, env)


def test_a_tiny_field_fits_an_erp_view_of_a_sphere():
    dirs, target = sphere_target(16, 32)
    field = small_field(grid=16, density_n_comp=(4, 4, 4), app_n_comp=(8, 8, 8), app_dim=12, feature_c=32)
    opt = field.make_optimizer(0.02, 5e-3)
    origins = torch.zeros_like(dirs)
    gen = torch.Generator().manual_seed(0)

    def psnr() -> float:
        with torch.no_grad():
            mse = ((T.render_rays(field, origins, dirs).rgb - target) ** 2).mean()
        return -10 * math.log10(float(mse))

    start = psnr()
    for _ in range(100):
        out = T.render_rays(field, origins, dirs, jitter=True, generator=gen)
        loss = (out.rgb - target).abs().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    end = psnr()
    assert end > start + 6.0 and end > 20.0, (start, end)


# ------------------------------------------------------------------ regularisers


def test_regularisers_match_their_definitions():
    field = small_field(grid=6)
    with torch.no_grad():
        for p in list(field.density_plane) + list(field.density_line) + list(field.app_plane):
            p.fill_(0.3)
    assert T.tv_loss_density(field) == 0 and T.tv_loss_app(field) > 0  # app lines are still random
    field = small_field(grid=6)
    plane, line = field.density_plane[0], field.density_line[0]
    rows = ((plane[..., 1:, :] - plane[..., :-1, :]) ** 2).mean()
    cols = ((plane[..., 1:] - plane[..., :-1]) ** 2).mean()
    manual = 2 * (rows + cols) * 1e-2 + 2 * ((line[:, :, 1:] - line[:, :, :-1]) ** 2).mean() * 1e-3
    assert manual > 0
    parts = [T.tv_2d(p.transpose(0, 1)) * 1e-2 + T.tv_2d(ln.transpose(0, 1)) * 1e-3
             for p, ln in zip(field.density_plane, field.density_line, strict=True)]
    torch.testing.assert_close(parts[0], manual)
    torch.testing.assert_close(T.tv_loss_density(field), sum(parts))
    nodes = field.grid_points().reshape(-1, 3)
    with torch.no_grad():
        dense = torch.sqrt(field.density(nodes).clamp(min=1e-5)).mean()
    torch.testing.assert_close(T.density_l1(field), dense)
    tv, l1 = T.tensorf_regularisers(field, decay=0.5)
    torch.testing.assert_close(tv, 0.5 * (T.tv_loss_density(field) + 0.1 * T.tv_loss_app(field)))
    torch.testing.assert_close(l1, 1e-3 * T.density_l1(field))  # the code does not decay the L1 term
    _, l1_decayed = T.tensorf_regularisers(field, decay=0.5, decay_l1=True)
    torch.testing.assert_close(l1_decayed, 0.5 * l1)
    assert torch.isfinite(T.density_l1(field, "code"))


# ------------------------------------------------------------------ exposure


def test_test_frames_use_the_mean_of_their_neighbours_exposure():
    g = torch.Generator().manual_seed(0)
    ex = torch.eye(3) + 0.1 * torch.randn(6, 3, 3, generator=g)
    got = T.test_frame_exposure(ex, torch.tensor([0, 3, 5]))
    torch.testing.assert_close(got[0], ex[1])
    torch.testing.assert_close(got[1], (ex[2] + ex[4]) / 2)
    torch.testing.assert_close(got[2], ex[4])
    quirk = T.test_frame_exposure(ex, torch.tensor([0, 3, 5]), code_quirk=True)
    torch.testing.assert_close(quirk[:2], got[:2])
    torch.testing.assert_close(quirk[2], (ex[4] + ex[5]) / 2)
    assert not T.test_frame_exposure(ex.requires_grad_(), torch.tensor([2])).requires_grad
    rfs = T.LocalRFs(lambda: small_field(grid=2), n_init_frames=3)
    assert all(torch.equal(e, torch.eye(3)) for e in rfs.exposure)
    rgb = torch.rand(4, 3)
    e = torch.diag(torch.tensor([2.0, 1.0, 0.5])).expand(4, 3, 3)
    torch.testing.assert_close(T.apply_exposure(rgb, e), rgb * torch.tensor([2.0, 1.0, 0.5]))


# ------------------------------------------------------------------ local RFs and progressive allocation


def tiny_factory() -> T.TensoRFVM:
    return T.TensoRFVM(2, (1, 1, 1), (1, 1, 1), 2, 4)


def run_schedule(positions: list[torch.Tensor], **kw) -> tuple[T.LocalRFs, list[int], list[int], list[float]]:
    """Drive LocalRFs + ProgressiveSchedule along a camera path (frame k at positions[k]); returns the RFs, the
    newest frame index whenever refinement started, the refinement lengths and the drift one frame earlier."""
    n_init = kw.pop("n_init_frames")
    rfs = T.LocalRFs(tiny_factory, n_init_frames=n_init, n_overlap=kw["n_overlap"])
    sched = T.ProgressiveSchedule(len(positions), n_init_frames=n_init, upsample_per_frame={}, **kw)
    n_frames = n_init
    refine_at, lengths, drift_before = [], [], []
    refining_ticks = 0
    for it in range(100000):
        tick = sched.optimizer_tick(rfs.n_training_frames())
        refining_ticks += sched.is_refining
        ev = sched.progress(it, float(rfs.dist_to_last_rf(positions[n_frames - 1])), tick.can_add_rf)
        if ev.start_refine:
            refine_at.append(n_frames - 1)
            drift_before.append(float(rfs.dist_to_last_rf(positions[n_frames - 2])))
        if ev.add_frame:
            rfs.append_frame()
            n_frames += 1
        assert sched.active[1] == n_frames == rfs.n_frames
        if ev.append_rf or ev.finished:
            lengths.append(refining_ticks)
            refining_ticks = 0
        if ev.append_rf:
            first = rfs.append_rf(ev.n_added_frames, positions[n_frames - 1])
            assert first == sched.active[0]
        if ev.finished:
            return rfs, refine_at, lengths, drift_before
    raise AssertionError("the schedule never finished")


def test_a_new_rf_starts_exactly_when_the_camera_drifts_past_max_drift():
    step = 0.125  # exact in binary: the drift one frame before each switch is exactly max_drift (not > it)
    path = [torch.tensor([0.0, 0.0, step * k]) for k in range(30)]
    rfs, refine_at, lengths, drift_before = run_schedule(
        path, n_init_frames=2, add_frames_every=2, n_overlap=3, max_drift=1.0, n_max_frames=100,
        n_iters_per_frame=3, n_iters_reg=1)
    assert refine_at == [9, 18, 27, 29]  # the last one: no frame left
    assert drift_before[:3] == [1.0, 1.0, 1.0]
    assert rfs.n_rfs == 4
    torch.testing.assert_close(rfs.world2rf[:, 2], torch.tensor([0.0, -9 * step, -18 * step, -27 * step]))
    assert lengths[:3] == [3 * 10 - 1, 3 * (10 - 7 + 9) - 1, 3 * 12 - 1]  # n_iters_per_frame x window - 1
    bw = rfs.blending_weights
    assert bw.shape == (30, 4)
    torch.testing.assert_close(bw.sum(1), torch.ones(30))
    torch.testing.assert_close(bw[7:10, 1], torch.tensor([1 / 3, 2 / 3, 1.0]))  # the overlap ramp
    torch.testing.assert_close(bw[7:10, 0], torch.tensor([2 / 3, 1 / 3, 0.0]))
    assert rfs.first_training_frame(1) == 7 and rfs.first_training_frame(3) == 25
    assert rfs.pose_linked_rf[:12] == [0] * 10 + [1] * 2


def test_a_new_rf_starts_when_the_window_is_full_even_without_drift():
    path = [torch.zeros(3) for _ in range(14)]
    rfs, refine_at, _, _ = run_schedule(path, n_init_frames=2, add_frames_every=1, n_overlap=2, max_drift=1.0,
                                        n_max_frames=6, n_iters_per_frame=3, n_iters_reg=1)
    assert refine_at == [5, 9, 13]
    assert rfs.n_rfs == 3
    assert T.should_refine(has_left_frames=True, n_added_frames=3, dist_to_last_rf=5.0, window_size=10,
                           n_overlap=3, max_drift=1.0, n_max_frames=100) is False  # needs > n_overlap added
    assert T.should_refine(has_left_frames=False, n_added_frames=0, dist_to_last_rf=0.0, window_size=1)


def test_blending_weights_offsets_and_the_blended_render():
    torch.manual_seed(0)
    rfs = T.LocalRFs(lambda: small_field(grid=4), n_init_frames=2, n_overlap=4)
    for _ in range(6):
        rfs.append_frame()
    assert rfs.first_training_frame() == 0 and rfs.n_training_frames() == 8
    first = rfs.append_rf(n_added_frames=6, last_t=torch.tensor([0.5, 0.0, 1.5]))
    assert first == 4 and rfs.n_rfs == 2
    torch.testing.assert_close(rfs.blending_weights[4:, 1], torch.tensor([0.25, 0.5, 0.75, 1.0]))
    torch.testing.assert_close(rfs.blending_weights.sum(1), torch.ones(8))
    torch.testing.assert_close(rfs.world2rf[1], torch.tensor([-0.5, 0.0, -1.5]))
    assert float(rfs.dist_to_last_rf(torch.tensor([0.5, 0.0, 2.5]))) == pytest.approx(1.0)
    with pytest.raises(ValueError):
        rfs.append_rf(n_added_frames=0, last_t=torch.zeros(3))
    # the blend of frame 5 = 0.5 RF0 + 0.5 RF1, each rendered from the camera moved into its frame
    dirs = C.erp_directions(4, 8).reshape(-1, 3)
    c2w = torch.cat([torch.eye(3), torch.tensor([[0.2], [0.0], [1.0]])], 1).expand(32, 3, 4)
    blend = rfs.blending_weights[5:6].expand(32, 2)
    with torch.no_grad():
        got = rfs.render_static(dirs, c2w, blend)
        parts = [T.render_rays(rfs.fields[m], (c2w[:, :, 3] + rfs.world2rf[m]), dirs) for m in range(2)]
    torch.testing.assert_close(got["rgb"], 0.5 * parts[0].rgb.clamp(0, 1) + 0.5 * parts[1].rgb.clamp(0, 1))
    torch.testing.assert_close(got["depth"], 0.5 * parts[0].depth + 0.5 * parts[1].depth)


def test_refinement_scales_the_upsample_keys_and_the_decay_by_the_window():
    sched = T.ProgressiveSchedule(10, n_init_frames=4, add_frames_every=1, n_overlap=0, n_iters_per_frame=5,
                                  n_iters_reg=2, upsample_per_frame={1: 8 ** 3, 2: 10 ** 3})
    sched.is_refining = True  # e.g. the window holds 4 frames and refinement just started
    ticks = [sched.optimizer_tick(4) for _ in range(19)]
    assert [k for k, t in enumerate(ticks) if t.upsample_to] == [4, 8]  # rf_iter before the increment
    assert ticks[4].upsample_to == 8 ** 3 and ticks[8].upsample_to == 10 ** 3
    assert sched.n_iters == 20 and sched.n_iters_reg == 8
    assert [t.regularize for t in ticks[:10]] == [True] * 8 + [False] * 2
    assert ticks[0].lr_factor == 1.0 and ticks[1].lr_factor == pytest.approx(0.1 ** (1 / 20))
    assert ticks[1].lr_cam_factor == pytest.approx(0.01 ** (1 / 20))
    assert ticks[1].lr_dynmlp_factor == pytest.approx(1e-3 ** (1 / 20))
    assert [t.can_add_rf for t in ticks] == [False] * 18 + [True]  # rf_iter >= n_iters - 1 after 19 steps
