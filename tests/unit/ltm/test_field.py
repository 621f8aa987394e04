"""LTM's stage A (`ltm/field.py`): the NeuS opacity and renderer (plane depth, weights), the double-sphere
pretraining, the colour field's viewer layout, the field's contraction, camera rays, training (loss goes down,
bit-exact resume, NaN error), config and input validation. Tiny sizes throughout."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from cvpr24.core.validation import DataValidationError
from cvpr24.pipelines.ltm import field as FL
from cvpr24.pipelines.ltm import mesh as M
from cvpr24.pipelines.ltm import scene as S
from cvpr24.pipelines.ltm.colmap import Cameras, look_at_c2w

pytestmark = pytest.mark.usefixtures("one_thread")

TINY_SCENE = S.GardenLiteConfig(n_views=9, width=16, height=12, supersample=1, sparse_points=40,
                                surface_samples=300, surface_resolution=48)
# a tiny neural stage A: small grids and MLPs, few rays and samples
TINY = dict(sdf_resolutions=(8, 16), colour_resolutions=(8, 16), sdf_channels=2, colour_channels=2, sdf_hidden=16,
            colour_hidden=16, rays_per_step=64, uniform_samples=16, importance_samples=8, eikonal_points=128,
            iterations=30, warmup_iters=3, diffuse_only_iters=10, pretrain_iters=20, pretrain_points=512,
            checkpoint_every=10, log_every=5)


@pytest.fixture(scope="module")
def tiny_scene(tmp_path_factory: pytest.TempPathFactory) -> S.SceneData:
    root = S.write_scene_folder(tmp_path_factory.mktemp("ltm_field") / "garden",
                                S.generate_garden_lite(TINY_SCENE))
    return S.load_scene_folder(root)


class PlaneSDF(nn.Module):
    """s = z0 - z (free space at z < z0), with a fixed, large inv_s."""

    def __init__(self, z0: float, inv_s: float) -> None:
        super().__init__()
        self.z0, self._inv_s = z0, inv_s

    def sdf_c(self, c: torch.Tensor) -> torch.Tensor:
        return self.z0 - c[..., 2]

    def inv_s(self) -> torch.Tensor:
        return torch.tensor(self._inv_s)


def state_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ------------------------------------------------------------------------------------------------ NeuS
def test_neus_alpha_in_unit_interval_and_zero_in_free_space() -> None:
    g = torch.Generator().manual_seed(0)
    s = torch.randn(5000, generator=g) * 2
    cos = torch.rand(5000, generator=g) * 2 - 1
    delta = torch.rand(5000, generator=g) * 0.5
    for ratio in (0.0, 0.5, 1.0):
        for inv_s in (1.0, 20.0, 1e4):
            a = FL.neus_alpha(s, cos, delta, inv_s, ratio)
            assert torch.all((a >= 0) & (a <= 1))
    # far in front of a surface (s >> 0): transparent; a section crossing it head-on with sharp inv_s: opaque
    assert FL.neus_alpha(torch.tensor([1.0]), torch.tensor([-1.0]), torch.tensor([0.1]), 1e3).item() < 1e-4
    assert FL.neus_alpha(torch.tensor([0.0]), torch.tensor([-1.0]), torch.tensor([0.1]), 1e3).item() > 0.99
    # ratio 1 with cos = -1 is the NeuS section formula on s -/+ delta / 2
    a = FL.neus_alpha(torch.tensor([0.02]), torch.tensor([-1.0]), torch.tensor([0.1]), 50.0, 1.0)
    p, n = torch.sigmoid(torch.tensor(0.07 * 50)), torch.sigmoid(torch.tensor(-0.03 * 50))
    assert a.item() == pytest.approx(float((p - n + 1e-5) / (p + 1e-5)), rel=1e-6)


@pytest.mark.parametrize("cos_estimate", FL.COS_ESTIMATES)
def test_plane_depth_and_weights_sum_to_one(cos_estimate: str) -> None:
    cfg = FL.FieldConfig(uniform_samples=64, importance_samples=64, far_radius=6.0, cos_estimate=cos_estimate)
    g = torch.Generator().manual_seed(1)
    n = 64
    o = torch.tensor([0.1, -0.2, -0.5]).expand(n, 3).clone()
    d = torch.randn(n, 3, generator=g) * 0.3 + torch.tensor([0.0, 0.0, 1.0])
    d = d / d.norm(dim=-1, keepdim=True)
    z0 = 0.4
    # rays that meet the plane inside the unit box, where the contracted plane z = z0 is the world plane
    hit = o + ((z0 - o[:, 2]) / d[:, 2])[:, None] * d
    keep = (d[:, 2] > 0.3) & (hit.abs().amax(-1) < 0.95)
    o, d = o[keep], d[keep]
    assert len(d) > 20
    out = FL.render_rays(PlaneSDF(z0, 5e3), None, o, d, cfg)
    want = (z0 - o[:, 2]) / d[:, 2]
    torch.testing.assert_close(out["depth"], want, atol=1e-2, rtol=0)
    assert torch.all(out["acc"] > 0.99) and torch.all(out["acc"] < 1.0 + 1e-5)
    assert torch.all(out["weights"] >= 0)
    # the same plane seen from the far side of the scene (inside the contracted region) still renders its depth
    o2 = torch.tensor([0.0, 0.0, -3.0]).expand(len(d), 3)
    hit2 = o2 + ((z0 - o2[:, 2]) / d[:, 2])[:, None] * d
    k2 = hit2.abs().amax(-1) < 0.95
    assert k2.sum() > 5
    out2 = FL.render_rays(PlaneSDF(z0, 5e3), None, o2[k2], d[k2], cfg)
    torch.testing.assert_close(out2["depth"], (z0 - o2[k2, 2]) / d[k2, 2], atol=1e-2, rtol=0)


def test_schedules() -> None:
    cfg = FL.FieldConfig(iterations=1000, warmup_iters=100)
    assert FL.normal_epsilon(0, cfg) == pytest.approx(0.1)
    assert FL.normal_epsilon(500, cfg) == pytest.approx(1e-4)
    assert FL.normal_epsilon(250, cfg) == pytest.approx(0.05)
    assert FL.normal_epsilon(None, cfg) == 1e-4
    assert FL.cos_anneal_ratio(0, cfg) == 0.0 and FL.cos_anneal_ratio(None, cfg) == 1.0
    assert FL.lr_factor(0, cfg) == pytest.approx(0.01)
    assert FL.lr_factor(100, cfg) == pytest.approx(1.0)
    assert FL.lr_factor(999, cfg) == pytest.approx(0.1)


# ------------------------------------------------------------------------------------------------ fields
def test_double_sphere_pretraining_signs() -> None:
    cfg = FL.FieldConfig(**{**TINY, "pretrain_iters": 300, "pretrain_points": 2048})
    sdf = FL.build_fields(cfg)[0]                      # seeded (a bare SDFField(cfg) draws from the global RNG)
    mse = FL.pretrain_double_sphere(sdf, cfg)
    assert mse < 0.01                                   # measured 0.00928: RMS < 0.1 contracted units
    g = torch.Generator().manual_seed(2)
    dirs = torch.randn(500, 3, generator=g)
    dirs = dirs / dirs.norm(dim=-1, keepdim=True)
    with torch.no_grad():  # |p| = |x| / bound
        for p, sign in ((0.3, -1), (1.0, 1), (1.9, -1), (0.75, 1), (1.15, 1)):  # 0.75 / 1.15: cameras at 1.5 / 2.3
            s = sdf(dirs * p * cfg.bound)
            assert torch.all(s * sign > 0), (p, s.min().item(), s.max().item())
    # the target itself: |x| - 1 inside the unit box, positive at the cameras, negative far away
    x = torch.tensor([[0.3, 0.0, 0.0], [0.0, 0.9, 0.0], [2.0, 0.0, 0.0], [8.0, 0.0, 0.0]])
    t = FL.double_sphere_target(x, cfg)
    assert t[0].item() == pytest.approx(-0.7) and t[1].item() == pytest.approx(-0.1)
    assert t[2] > 0 and t[3] < 0


def test_field_contraction_is_identity_in_unit_box() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.rand(1000, 3, generator=g) * 2 - 1
    far = torch.randn(1000, 3, generator=g) * 50
    for kind in ("linf", "l2"):
        cfg = FL.FieldConfig(**TINY, contraction=kind)
        sdf, colour = FL.build_fields(cfg)
        inside = x if kind == "linf" else x[x.norm(dim=-1) <= 1]
        for f in (sdf, colour):
            torch.testing.assert_close(f.contract(inside), inside, atol=0, rtol=0)
            c = f.contract(far)
            assert torch.all(c.abs().amax(-1) < 2.0) and torch.all(f.to_grid(c).abs() <= 1.0)
        with torch.no_grad():
            torch.testing.assert_close(sdf(inside), sdf.sdf_c(inside))
            torch.testing.assert_close(colour.features(inside), colour.features_c(inside))


def test_viewer_weights_reproduce_shade() -> None:
    cfg = FL.FieldConfig(**TINY)
    colour = FL.build_fields(cfg)[1]
    with torch.no_grad():  # a head that is not saturated, so the comparison means something
        colour.specular[2].weight.normal_(0, 0.5, generator=torch.Generator().manual_seed(4))
    w = colour.viewer_weights()
    assert w["net.0.weight"].shape == (32, 6) and w["net.1.weight"].shape == (3, 32)
    g = torch.Generator().manual_seed(5)
    x = torch.rand(300, 3, generator=g) * 4 - 2
    d = torch.randn(300, 3, generator=g)
    with torch.no_grad():
        feats = colour.features(x)
        assert feats.shape == (300, 6) and torch.all((feats >= 0) & (feats <= 1))
        mine = colour.shade(feats, d)
        spec = colour.specular_term(feats, d)
        assert spec.std() > 0.01  # view-dependent
        torch.testing.assert_close(colour(x, d), mine)
        torch.testing.assert_close(colour(x, d, diffuse_only=True), feats[:, :3])
    viewer = M.viewer_shade(feats[:, :3], feats[:, 3:], d, w["net.0.weight"].T, w["net.1.weight"].T)
    torch.testing.assert_close(viewer, mine, atol=1e-6, rtol=0)
    # the exporter accepts them as they are (torch layout)
    assert set(M._check_mlp(w)) == set(M.MLP_KEYS)


def test_numpy_helpers(tiny_scene: S.SceneData) -> None:
    cfg = FL.FieldConfig(**TINY)
    sdf, colour = FL.build_fields(cfg)
    fn, cfn = FL.sdf_numpy(sdf, chunk=100), FL.colour_numpy(colour, chunk=100)
    pts = np.random.default_rng(0).uniform(-1, 1, (250, 3))
    a, b = fn(pts), fn(torch.from_numpy(pts).float())
    assert a.shape == (250,) and np.allclose(a, b)
    with torch.no_grad():
        np.testing.assert_allclose(a, sdf(torch.from_numpy(pts).float()).numpy(), atol=1e-6)
    assert cfn(pts).shape == (250, 6)
    cas = M.extract_cascades(fn, 12)  # usable as extract_cascades' sdf_fn
    assert len(cas) == 2
    # the analytic SDF behind the same interface is the scene's SDF
    ana = FL.AnalyticSDF.from_scene_folder(tiny_scene.root)
    np.testing.assert_allclose(FL.sdf_numpy(ana)(pts), S.GardenLite().sdf(pts), atol=1e-5)


# ------------------------------------------------------------------------------------------------ rays
def test_principal_point_ray_is_the_forward_axis() -> None:
    c2w = np.stack([look_at_c2w([1.5, 0.5, 0.3], [0.0, 0.1, 0.0]), look_at_c2w([-2.0, 1.0, 1.0], [0.2, 0.0, 0.1])])
    cams = Cameras(["a.png", "b.png"], 9, 7, [8.0, 11.0], [8.5, 10.0], 4.5, 3.5, c2w)  # (cx, cy) = pixel (3, 4)
    o, d = FL.camera_rays(cams, [0, 1])
    assert o.shape == (2 * 63, 3)
    for k in range(2):
        i = k * 63 + 3 * 9 + 4
        np.testing.assert_allclose(d[i].numpy(), cams.forward[k], atol=1e-6)
        np.testing.assert_allclose(o[i].numpy(), cams.centers[k], atol=1e-6)
        # every ray projects back to its pixel centre (row-major order, +0.5 convention)
        uv, z = cams.project(k, (o[k * 63:(k + 1) * 63] + d[k * 63:(k + 1) * 63]).double().numpy())
        rr, cc = np.meshgrid(np.arange(7) + 0.5, np.arange(9) + 0.5, indexing="ij")
        np.testing.assert_allclose(uv, np.stack([cc.ravel(), rr.ravel()], 1), atol=1e-4)
        assert np.all(z > 0)
    assert torch.allclose(d.norm(dim=-1), torch.ones(126))


# ------------------------------------------------------------------------------------------------ training
def test_training_lowers_the_loss(tiny_scene: S.SceneData) -> None:
    # judged on every pixel of the training views (a 64-ray batch's loss is too noisy to compare two steps of)
    start = FL.train_stage_a(tiny_scene, FL.FieldConfig(**{**TINY, "iterations": 1}), progress=False)
    res = FL.train_stage_a(tiny_scene, FL.FieldConfig(**{**TINY, "iterations": 40}), progress=False)
    before = FL.evaluate_views(start.sdf, start.colour, tiny_scene, tiny_scene.train_ids, start.config)["mean_psnr"]
    after = FL.evaluate_views(res.sdf, res.colour, tiny_scene, tiny_scene.train_ids, res.config)["mean_psnr"]
    assert after > before + 0.5, (before, after)     # measured 12.07 -> 12.82 dB
    assert res.history[-1]["step"] == 40
    assert res.history[-1]["eikonal"] > 0 and isinstance(res.sdf, FL.SDFField) and res.pretrain_mse is not None
    ana0 = FL.train_stage_a(tiny_scene, FL.FieldConfig.ci(iterations=1), progress=False)
    ana = FL.train_stage_a(tiny_scene, FL.FieldConfig.ci(iterations=80), progress=False)
    assert isinstance(ana.sdf, FL.AnalyticSDF) and ana.history[-1]["eikonal"] == 0.0
    before = FL.evaluate_views(ana0.sdf, ana0.colour, tiny_scene, tiny_scene.train_ids, ana0.config)["mean_psnr"]
    after = FL.evaluate_views(ana.sdf, ana.colour, tiny_scene, tiny_scene.train_ids, ana.config)["mean_psnr"]
    assert after > before + 0.5, (before, after)     # measured 10.59 -> 11.64 dB
    out = FL.render_view(ana.sdf, ana.colour, tiny_scene.cameras, 0, ana.config, chunk=50)
    assert out["rgb"].shape == (12, 16, 3) and np.all(out["acc"] > 0.98)  # every garden-lite ray ends on a surface


def test_resume_is_bit_exact(tiny_scene: S.SceneData, tmp_path: Path) -> None:
    cfg = FL.FieldConfig(**{**TINY, "iterations": 20, "checkpoint_every": 10})
    whole = FL.train_stage_a(tiny_scene, cfg, checkpoint_path=tmp_path / "whole.pt", progress=False)

    class Stop(Exception):
        pass

    def stop_after_10(rec: dict[str, float]) -> None:
        if rec["step"] > 10:
            raise Stop

    path = tmp_path / "split.pt"
    with pytest.raises(Stop):
        FL.train_stage_a(tiny_scene, cfg, checkpoint_path=path, progress=False, log_fn=stop_after_10)
    assert path.is_file() and not list(tmp_path.glob(".split.pt.*"))  # no temporary left behind
    resumed = FL.train_stage_a(tiny_scene, cfg, checkpoint_path=path, progress=False)
    assert resumed.resumed_from == 10
    for a, b in ((whole.sdf, resumed.sdf), (whole.colour, resumed.colour)):
        sa, sb = state_tensors(a), state_tensors(b)
        assert sa.keys() == sb.keys()
        for k in sa:
            assert torch.equal(sa[k], sb[k]), k
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in whole.history]
    assert strip == [{k: v for k, v in h.items() if k != "seconds"} for h in resumed.history]
    # a finished checkpoint returns at once with the same fields; another config refuses it
    again = FL.train_stage_a(tiny_scene, cfg, checkpoint_path=path, progress=False)
    assert again.resumed_from == 20 and torch.equal(again.colour.grid.levels[0], whole.colour.grid.levels[0])
    with pytest.raises(ValueError, match="another configuration"):
        FL.train_stage_a(tiny_scene, cfg.replace(seed=1), checkpoint_path=path, progress=False)


def test_nan_loss_names_the_step_and_the_fix(tiny_scene: S.SceneData) -> None:
    cfg = FL.FieldConfig(**{**TINY, "lr_grid": 1e30, "lr_mlp": 1e30, "warmup_iters": 0, "pretrain_iters": 0})
    with pytest.raises(FloatingPointError, match=r"at step \d+.*lower the learning rates"):
        FL.train_stage_a(tiny_scene, cfg, progress=False)


def test_input_validation(tiny_scene: S.SceneData) -> None:
    bad = SimpleNamespace(cameras=tiny_scene.cameras, images=tiny_scene.images[:, :-1],
                          train_ids=tiny_scene.train_ids, test_ids=tiny_scene.test_ids)
    with pytest.raises(DataValidationError, match="16x11 but its camera is 16x12"):
        FL.train_stage_a(bad, FL.FieldConfig(**TINY), progress=False)
    short = SimpleNamespace(cameras=tiny_scene.cameras, images=tiny_scene.images[:-1],
                            train_ids=tiny_scene.train_ids, test_ids=tiny_scene.test_ids)
    with pytest.raises(DataValidationError, match="8 images but 9 cameras"):
        FL.train_stage_a(short, FL.FieldConfig(**TINY), progress=False)


def test_config_from_dict() -> None:
    cfg = FL.FieldConfig.from_dict({"sdf_resolutions": [8, 16], "iterations": 5})
    assert cfg.sdf_resolutions == (8, 16) and cfg.iterations == 5
    assert FL.FieldConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"unknown stage-A \(FieldConfig\) keys \['iters'\]"):
        FL.FieldConfig.from_dict({"iters": 5})
    with pytest.raises(ValueError, match="divisible by 4"):
        FL.FieldConfig(specular_hidden=30)
    with pytest.raises(ValueError, match="contraction"):
        FL.FieldConfig(contraction="box")
    assert not math.isnan(FL.FieldConfig.ci().analytic_inv_s)
