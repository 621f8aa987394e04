"""LTM's stage D (`ltm/refine.py`): the regularisers and diagnostics, the configuration, joint refinement
(frozen vertices, gradient paths, the loss going down, determinism, bit-exact resume, clear errors) and the
per-vertex appearance of the vertex-colour rows (render, asset bytes)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from cvpr24.pipelines.ltm import refine as R
from cvpr24.pipelines.ltm.colmap import Cameras, look_at_c2w

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------------------------ helpers
class TinyColour(nn.Module):
    """A stand-in for field.py's colour field with the same interface: features linear in x (diffuse RGB, then
    specular features; the tests keep them inside [0, 1]), the viewer's specular head without biases."""

    def __init__(self, hidden: int = 8, seed: int = 0, slope: float = 0.3, spec_dir: bool = True) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.A = nn.Parameter(torch.randn(3, 6, generator=g) * slope)
        self.b = nn.Parameter(torch.full((6,), 0.5))
        w0 = torch.randn(hidden, 6, generator=g) * 0.7
        if not spec_dir:
            w0.zero_()  # relu(0) = 0: a constant specular term (0.5), independent of the direction
        self.w0 = nn.Parameter(w0)
        self.w1 = nn.Parameter(-torch.rand(3, hidden, generator=g) - 0.3)
        self.calls = 0

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.A + self.b

    def shade(self, feats: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
        d = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        h = torch.relu(torch.cat([d, feats[:, 3:]], -1) @ self.w0.T)
        return (feats[:, :3] + torch.sigmoid(h @ self.w1.T)).clamp(0.0, 1.0)

    def forward(self, x: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.shade(self.features(x), dirs)

    def viewer_weights(self) -> dict[str, torch.Tensor]:
        return {"net.0.weight": self.w0.detach().clone(), "net.1.weight": self.w1.detach().clone()}


class FailingColour(TinyColour):
    """Raises (``mode="raise"``, a killed run) or returns NaN (``mode="nan"``) from call ``at`` on."""

    def __init__(self, at: int, mode: str, **kw) -> None:
        super().__init__(**kw)
        self.at, self.mode = at, mode

    def forward(self, x: torch.Tensor, dirs: torch.Tensor) -> torch.Tensor:
        out = super().forward(x, dirs)
        if self.calls >= self.at:
            if self.mode == "raise":
                raise KeyboardInterrupt("simulated kill")
            return out * float("nan")
        return out


def grid(n: int, size: float = 1.0, z: float = 0.0, centre=(0.0, 0.0)) -> tuple[np.ndarray, np.ndarray]:
    """A regular n x n vertex grid in the plane z, triangulated with one diagonal direction."""
    lin = np.linspace(-size / 2, size / 2, n)
    xx, yy = np.meshgrid(lin + centre[0], lin + centre[1], indexing="xy")
    v = np.stack([xx.ravel(), yy.ravel(), np.full(n * n, z)], 1).astype(np.float32)
    f = []
    for r in range(n - 1):
        for c in range(n - 1):
            a, b, d, e = r * n + c, r * n + c + 1, (r + 1) * n + c, (r + 1) * n + c + 1
            f += [[a, b, e], [a, e, d]]
    return v, np.asarray(f, dtype=np.int64)


def cameras(n: int = 3, width: int = 32, height: int = 24, dist: float = 2.2) -> Cameras:
    """n cameras around +z looking at the origin (small azimuth / elevation offsets)."""
    c2w = []
    for k in range(n):
        az = math.radians(-12.0 + 24.0 * k / max(n - 1, 1))
        eye = np.array([dist * math.sin(az), 0.15 * (k % 2), dist * math.cos(az)])
        c2w.append(look_at_c2w(eye, np.zeros(3)))
    f = 0.5 * height / math.tan(math.radians(25.0))
    return Cameras([f"v{k}.png" for k in range(n)], width, height, f, f, width / 2, height / 2, np.stack(c2w))


def scene_from(cascades, field: nn.Module, cams: Cameras) -> SimpleNamespace:
    """Target images = renders of ``cascades`` with ``field`` (uint8, like a loaded scene)."""
    with torch.no_grad():
        imgs = [R.render_model(cascades, field, cams, i).numpy() for i in range(len(cams))]
    u8 = np.clip(np.round(np.stack(imgs) * 255), 0, 255).astype(np.uint8)
    return SimpleNamespace(cameras=cams, images=u8, train_ids=np.arange(len(cams)))


def state_equal(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ------------------------------------------------------------------------------------------------ regularisers
def test_laplacian_is_zero_at_interior_vertices_of_a_flat_grid_and_matches_the_definition() -> None:
    v, f = grid(6, size=1.3, z=0.4)
    vt, ft = torch.from_numpy(v), torch.from_numpy(f)
    lap = R.uniform_laplacian(vt, ft)
    rows = np.arange(36).reshape(6, 6)
    interior = rows[1:-1, 1:-1].ravel()
    boundary = np.setdiff1d(rows.ravel(), interior)
    assert lap[interior].abs().max() < 1e-6
    assert (lap[boundary].norm(dim=1) > 1e-3).all()  # not trivially zero everywhere
    # the definition on one triangle: L_i = 2 v_i - v_j - v_k, loss = mean of the norms
    tri = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    exp = torch.stack([2 * tri[0] - tri[1] - tri[2], 2 * tri[1] - tri[0] - tri[2], 2 * tri[2] - tri[0] - tri[1]])
    loss = R.laplacian_loss(tri, torch.tensor([[0, 1, 2]]))
    torch.testing.assert_close(loss, exp.norm(dim=1).mean())
    # an edge shared by two faces counts once (unique edges, not half-edges)
    quad = torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
    lq = R.uniform_laplacian(quad, torch.tensor([[0, 1, 2], [0, 2, 3]]))
    torch.testing.assert_close(lq[0], 3 * quad[0] - quad[1] - quad[2] - quad[3])


def test_laplacian_gradient_pulls_a_spike_back() -> None:
    v, f = grid(7, size=1.0)
    centre = 3 * 7 + 3
    v = v.copy()
    v[centre, 2] = 0.3
    vt = torch.from_numpy(v).requires_grad_(True)
    ft = torch.from_numpy(f)
    flat = R.laplacian_loss(torch.from_numpy(grid(7, size=1.0)[0]), ft)
    loss = R.laplacian_loss(vt, ft)
    assert loss > flat
    loss.backward()
    assert vt.grad[centre, 2] > 0  # descent lowers the spike
    x = vt.detach().clone().requires_grad_(True)
    opt = torch.optim.SGD([x], lr=0.05)
    ring = [centre - 1, centre + 1, centre - 7, centre + 7, centre - 8, centre + 8]
    for _ in range(60):
        opt.zero_grad()
        R.laplacian_loss(x, ft).backward()
        opt.step()
    x = x.detach()
    assert float(x[centre, 2] - x[ring, 2].mean()) < 0.1  # the spike is flattened (0.3 above its ring before)


def test_normal_consistency_zero_for_a_plane_positive_for_a_fold_and_winding_free() -> None:
    v, f = grid(5, size=1.0)
    vt, ft = torch.from_numpy(v), torch.from_numpy(f)
    assert float(R.normal_consistency(vt, ft)) < 1e-6
    assert float(R.mean_dihedral_deviation(vt, ft)) < 1e-3
    # flipping the winding of half the faces changes nothing (normals oriented by the shared edge)
    f2 = f.copy()
    f2[::2] = f2[::2, ::-1]
    assert float(R.normal_consistency(vt, torch.from_numpy(f2))) < 1e-6

    # two triangles on the edge (0,0,0)-(1,0,0), folded by 90 degrees: 1 - cos 90 = 1
    pair = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0.5, 1, 0], [0.5, 0, 1]])
    faces = torch.tensor([[0, 1, 2], [1, 0, 3]])
    torch.testing.assert_close(R.normal_consistency(pair, faces), torch.tensor(1.0))
    torch.testing.assert_close(R.normal_consistency(pair, faces[:, [0, 2, 1]]), torch.tensor(1.0))
    torch.testing.assert_close(R.mean_dihedral_deviation(pair, faces), torch.tensor(90.0, dtype=torch.float64))
    # folded flat onto itself: 2; a 30-degree fold: 1 - cos 30
    flat_fold = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0.5, 1, 0], [0.5, 1, 0]])
    torch.testing.assert_close(R.normal_consistency(flat_fold, faces), torch.tensor(2.0))
    s, c = math.sin(math.radians(30)), math.cos(math.radians(30))
    fold30 = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0.5, 1, 0], [0.5, -c, s]])
    torch.testing.assert_close(R.normal_consistency(fold30, faces), torch.tensor(1 - c), atol=1e-6, rtol=0)
    # only interior edges count: the mean is over the one shared edge, not over all five edges
    assert R.mesh_topology(faces, 4).pair_edge.shape[0] == 1
    # a non-manifold edge shared by three faces contributes its three pairs
    assert R.mesh_topology(torch.tensor([[0, 1, 2], [1, 0, 3], [0, 1, 4]]), 5).pair_edge.shape[0] == 3


def test_offset_loss_weights_inner_and_outer_cascades() -> None:
    dx = torch.tensor([[1.0, 0, 0], [0, 2, 0], [0, 0, 3], [0, 0, 0]])
    outer = torch.tensor([False, False, True, True])
    # inner: mean(1, 4) = 2.5; outer: 0.1 * mean(9, 0) = 0.45
    torch.testing.assert_close(R.offset_loss(dx, outer), torch.tensor(2.5 + 0.45))
    torch.testing.assert_close(R.offset_loss(dx, outer, outer_factor=1.0), torch.tensor(2.5 + 4.5))
    torch.testing.assert_close(R.offset_loss(dx, torch.zeros(4, dtype=torch.bool)), torch.tensor(14.0 / 4))
    torch.testing.assert_close(R.offset_loss(dx, torch.ones(4, dtype=torch.bool)), torch.tensor(0.1 * 14.0 / 4))


def test_flipped_faces_counts_normals_that_turn_over() -> None:
    v, f = grid(3, size=1.0)
    after = v.copy()
    assert R.flipped_faces(torch.from_numpy(v), torch.from_numpy(after), torch.from_numpy(f)) == 0
    after[0, :2] = [0.9, 0.9]  # vertex 0 dragged across the diagonal: its two faces turn over
    n = R.flipped_faces(torch.from_numpy(v), torch.from_numpy(after), torch.from_numpy(f))
    touched = int((f == 0).any(1).sum())
    assert 1 <= n <= touched


# ------------------------------------------------------------------------------------------------ config
def test_config_round_trip_unknown_keys_and_schedule() -> None:
    cfg = R.RefineConfig.from_dict({"iterations": 10, "geometry_grad": "silhouette", "lambda_nc": 0.1})
    assert R.RefineConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="unknown.*lr_verts"):
        R.RefineConfig.from_dict({"lr_verts": 1e-3})
    with pytest.raises(ValueError, match="geometry_grad"):
        R.RefineConfig(geometry_grad="normal")
    with pytest.raises(ValueError, match="nothing to train"):
        R.RefineConfig(freeze_vertices=True, train_colour=False)
    c = R.RefineConfig(iterations=101, warmup_iters=10, warmup_start=0.01, decay_to=0.1)
    assert c.lr_factor(0) == pytest.approx(0.01)
    assert c.lr_factor(10) == pytest.approx(1.0)
    assert c.lr_factor(100) == pytest.approx(0.1)


# ------------------------------------------------------------------------------------------------ refine
def test_freeze_vertices_keeps_them_bit_identical_trains_colour_and_leaves_the_input_alone() -> None:
    cams = cameras(2)
    v, f = grid(3, size=1.2)
    target = TinyColour(seed=1)
    scene = scene_from([(v, f)], target, cams)
    field = TinyColour(seed=2)
    before = {k: t.clone() for k, t in field.state_dict().items()}
    cfg = R.RefineConfig(iterations=25, freeze_vertices=True, lr_colour=2e-2, warmup_iters=2, seed=0)
    res = R.refine([(v, f)], field, scene, cfg, progress=False)
    assert res.cascades[0][0].dtype == np.float32 and np.array_equal(res.cascades[0][0], v)
    assert np.array_equal(res.cascades[0][1], f) and not res.offsets[0].any()
    assert all(torch.equal(before[k], t) for k, t in field.state_dict().items())  # caller's module untouched
    assert not state_equal(res.colour_field, field)
    mse = [h["mse"] for h in res.history]
    assert len(mse) == 25 and np.mean(mse[-5:]) < 0.5 * np.mean(mse[:5])


def _grads(mode: str, v: np.ndarray, f: np.ndarray, field: nn.Module, cams: Cameras,
           target: torch.Tensor) -> torch.Tensor:
    vt = torch.from_numpy(v).requires_grad_(True)
    img = R.render_model([(vt, f)], field, cams, 0, geometry_grad=mode)
    ((img - target) ** 2).mean().backward()
    return vt.grad.detach()


def test_geometry_grad_variants_reach_the_vertices_by_different_paths() -> None:
    cams = cameras(1, width=24, height=20)
    # (a) a plane filling the whole frame (no silhouette in view), colour varying over the surface:
    # only the surface path carries a gradient; "silhouette" gives exactly none
    v, f = grid(5, size=6.0)
    field = TinyColour(seed=3, slope=0.05)
    target = torch.full((20, 24, 3), 0.3)
    g_sil = _grads("silhouette", v, f, field, cams, target)
    g_surf = _grads("surface", v, f, field, cams, target)
    g_both = _grads("both", v, f, field, cams, target)
    assert torch.count_nonzero(g_sil) == 0
    assert g_surf.abs().max() > 1e-6
    torch.testing.assert_close(g_both, g_surf)
    # the same through refine(): with the silhouette path only, nothing moves the vertices of the full-frame plane
    scene = SimpleNamespace(cameras=cams, images=np.full((1, 20, 24, 3), 77, np.uint8), train_ids=np.array([0]))
    moved = {}
    for mode in ("silhouette", "surface"):
        cfg = R.RefineConfig(iterations=3, warmup_iters=0, geometry_grad=mode, train_colour=False, lambda_lap=0.0,
                             lambda_nc=0.0, lambda_off=0.0)
        moved[mode] = np.abs(R.refine([(v, f)], field, scene, cfg, progress=False).offsets[0]).max()
    assert moved["silhouette"] == 0 and moved["surface"] > 0
    # (b) a small quad with a constant colour: no surface gradient; the silhouette moves the border vertices only
    v, f = grid(3, size=0.8)
    const = TinyColour(seed=3, slope=0.0, spec_dir=False)
    g_sil = _grads("silhouette", v, f, const, cams, torch.zeros(20, 24, 3))
    g_surf = _grads("surface", v, f, const, cams, torch.zeros(20, 24, 3))
    g_both = _grads("both", v, f, const, cams, torch.zeros(20, 24, 3))
    assert torch.count_nonzero(g_surf) == 0
    assert g_sil[4].abs().max() == 0  # the centre vertex is on no silhouette edge
    assert g_sil[[0, 1, 2, 3, 5, 6, 7, 8]].abs().sum(1).gt(0).sum() >= 6
    torch.testing.assert_close(g_both, g_sil)


def test_refine_moves_a_shifted_quad_onto_its_target_and_lowers_the_loss() -> None:
    cams = cameras(3)
    shift = np.array([0.12, -0.08, 0.0], dtype=np.float32)
    v, f = grid(3, size=0.9)
    field = TinyColour(seed=4, slope=0.2)
    scene = scene_from([(v + shift, f)], field, cams)
    cfg = R.RefineConfig(iterations=80, lr_vert=1e-2, extent=1.0, train_colour=False, warmup_iters=5,
                         lambda_lap=0.0, lambda_nc=0.0, lambda_off=0.0, seed=1)
    res = R.refine([(v, f)], field, scene, cfg, progress=False)
    mse = [h["mse"] for h in res.history]
    assert np.mean(mse[-5:]) < 0.1 * np.mean(mse[:5])
    # the corners fix the silhouette and follow the shift (edge midpoints may slide along their edge, the colour
    # being a function of the 3D point); the depth is only weakly constrained by the +-12 degree views
    corners = [0, 2, 6, 8]
    moved = res.cascades[0][0][corners, :2] - v[corners, :2]
    assert np.abs(moved - shift[:2]).max() < 0.04
    assert state_equal(res.colour_field, field)  # train_colour=False


def test_refine_is_deterministic_and_resumes_bit_exactly(tmp_path) -> None:
    cams = cameras(3)
    v0, f0 = grid(3, size=0.9)
    v1, f1 = grid(2, size=3.0, z=-0.5)  # an "outer" cascade behind it
    casc = [(v0, f0), (v1, f1)]
    scene = scene_from([(v0 + 0.05, f0), (v1, f1)], TinyColour(seed=5), cams)
    cfg = R.RefineConfig(iterations=8, checkpoint_every=3, lr_vert=2e-3, lr_colour=1e-2, warmup_iters=2, seed=7)
    ref = R.refine(casc, TinyColour(seed=6), scene, cfg, progress=False)
    again = R.refine(casc, TinyColour(seed=6), scene, cfg, progress=False)
    for (a, _), (b, _) in zip(ref.cascades, again.cascades, strict=True):
        assert np.array_equal(a, b)
    assert [h["view"] for h in ref.history] == [h["view"] for h in again.history]
    other = R.refine(casc, TinyColour(seed=6), scene, R.RefineConfig(**{**cfg.to_dict(), "seed": 8}),
                     progress=False)
    assert [h["view"] for h in other.history] != [h["view"] for h in ref.history]

    ckpt = tmp_path / "resume.pt"
    with pytest.raises(KeyboardInterrupt):  # killed during step 5 (0-based), after the checkpoint of step 3
        R.refine(casc, FailingColour(at=6, mode="raise", seed=6), scene, cfg, checkpoint_path=ckpt, progress=False)
    assert ckpt.is_file()
    res = R.refine(casc, TinyColour(seed=6), scene, cfg, checkpoint_path=ckpt, progress=False)
    assert res.resumed_from == 3
    for (a, fa), (b, fb) in zip(ref.cascades, res.cascades, strict=True):
        assert np.array_equal(a, b) and np.array_equal(fa, fb)
    assert state_equal(ref.colour_field, res.colour_field)
    assert [h["loss"] for h in ref.history] == [h["loss"] for h in res.history]
    assert [h["step"] for h in res.history] == list(range(8))
    # a finished checkpoint returns the result without training; another run's checkpoint is not used
    done = R.refine(casc, TinyColour(seed=6), scene, cfg, checkpoint_path=ckpt, progress=False)
    assert done.resumed_from == 8 and np.array_equal(done.cascades[0][0], ref.cascades[0][0])
    fresh = R.refine(casc, TinyColour(seed=9), scene, cfg, checkpoint_path=ckpt, progress=False)
    assert fresh.resumed_from == 0
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temporary file
    R.refine(casc, TinyColour(seed=9), scene, cfg, checkpoint_path=ckpt, progress=False, keep_final_checkpoint=False)
    assert not ckpt.exists()


def test_clear_errors_before_training_and_on_a_nan_loss() -> None:
    cams = cameras(1)
    v, f = grid(3)
    scene = scene_from([(v, f)], TinyColour(), cams)
    cfg = R.RefineConfig(iterations=4, warmup_iters=1)
    with pytest.raises(ValueError, match="empty"):
        R.refine([], TinyColour(), scene, cfg, progress=False)
    with pytest.raises(ValueError, match="no faces"):
        R.refine([(v, np.zeros((0, 3), dtype=np.int64))], TinyColour(), scene, cfg, progress=False)
    with pytest.raises(ValueError, match="cascade 1: face indices out of range"):
        R.refine([(v, f), (v, f + 9)], TinyColour(), scene, cfg, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        R.refine([(np.full_like(v, np.nan), f)], TinyColour(), scene, cfg, progress=False)
    with pytest.raises(ValueError, match="train_ids"):
        R.refine([(v, f)], TinyColour(), SimpleNamespace(**{**vars(scene), "train_ids": []}), cfg, progress=False)
    with pytest.raises(ValueError, match="unknown"):
        R.refine([(v, f)], TinyColour(), scene, {"iters": 3}, progress=False)
    with pytest.raises(FloatingPointError, match="step 2"):
        R.refine([(v, f)], FailingColour(at=3, mode="nan"), scene, cfg, progress=False)


# ------------------------------------------------------------------------------------------------ vertex colours
def test_vertex_colour_render_matches_per_pixel_shading_for_a_linear_field() -> None:
    cams = cameras(2, width=40, height=30)
    v, f = grid(12, size=1.0)
    v[:, 2] = 0.15 * np.sin(3 * v[:, 0])  # not flat: directions and positions vary
    field = TinyColour(seed=11, slope=0.25)
    with torch.no_grad():
        feats = field.features(torch.from_numpy(v))
    assert feats.min() > 0.02 and feats.max() < 0.98  # linear (no clamping) inside the mesh's range
    q = R.vertex_features(v, field)
    np.testing.assert_array_equal(q, (np.clip(feats.numpy(), 0, 1) * 255).astype(np.uint8))
    for i in range(2):
        with torch.no_grad():
            ref = R.render_model([(v, f)], field, cams, i)
        got = R.render_vertex_colour(v, f, q, field.viewer_weights(), cams, i)
        err = (got - ref).abs()
        # a linear field is interpolated exactly (perspective-correct barycentrics): what is left is the 8-bit floor
        assert err.max() < 3.0 / 255 and err.mean() < 1.2 / 255
    # a wrong direction (reversed) or wrong weights would not pass: check the test can see the specular term
    w = field.viewer_weights()
    w["net.1.weight"] = w["net.1.weight"] + 2.0
    wrong = R.render_vertex_colour(v, f, q, w, cams, 0)
    with torch.no_grad():
        assert (wrong - R.render_model([(v, f)], field, cams, 0)).abs().max() > 0.05


def test_vertex_colour_asset_round_trip_and_bytes(tmp_path) -> None:
    cams = cameras(1)
    field = TinyColour(seed=12, slope=0.2)
    v0, f0 = grid(20, size=1.0)
    v1, f1 = grid(6, size=3.0, z=-0.5)
    items = [(v, f, R.vertex_features(v, field)) for v, f in ((v0, f0), (v1, f1))]
    folder = R.write_vertex_colour_asset(tmp_path / "asset", items, field.viewer_weights())
    total = R.vertex_colour_bytes(folder)
    mlp_bytes = (folder / "mlp.json").stat().st_size
    expected = R.expected_vertex_colour_bytes(items, mlp_bytes)
    assert total == sum(p.stat().st_size for p in folder.iterdir())
    # float32 positions + int32 faces + 6 B/vertex + the MLP, plus only the npz headers (8 arrays)
    payload = sum(len(v) * 18 + len(f) * 12 for v, f, _ in items)
    assert expected == payload + mlp_bytes
    assert 0 < total - expected < 8 * 400
    asset = R.read_vertex_colour_asset(folder)
    assert asset.cascade == 2
    for (v, f, q), (rv, rf, rq) in zip(items, asset.cascades, strict=True):
        assert np.array_equal(v, rv) and np.array_equal(f, rf) and np.array_equal(q, rq)
    for k, w in field.viewer_weights().items():
        np.testing.assert_array_equal(asset.mlp[k], w.numpy())
    merged_f = np.concatenate([f0, f1 + len(v0)])
    direct = R.render_vertex_colour(np.concatenate([v0, v1]), merged_f, np.concatenate([items[0][2], items[1][2]]),
                                    field.viewer_weights(), cams, 0)
    torch.testing.assert_close(R.render_vertex_colour_asset(asset, cams, 0), direct, rtol=0, atol=0)
    # rewriting replaces the folder atomically (no temporary folder left behind)
    R.write_vertex_colour_asset(tmp_path / "asset", items[:1], field.viewer_weights())
    assert R.read_vertex_colour_asset(folder).cascade == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["asset"]
    with pytest.raises(ValueError, match="uint8"):
        R.write_vertex_colour_asset(tmp_path / "bad", [(v0, f0, items[0][2].astype(np.float32))],
                                    field.viewer_weights())
