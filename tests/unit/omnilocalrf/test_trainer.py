"""The OmniLocalRF training loop on a tiny street: the schedule runs to the end, a killed run resumes
bit-identically, and the switches of Table 4 really switch their parts off (or on)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cvpr24.core.training import Checkpointer
from cvpr24.pipelines.omnilocalrf.data import generate_street
from cvpr24.pipelines.omnilocalrf.trainer import TrainConfig, TrainedModel, Trainer, scene_tensors

TINY = {"grid_init": 6, "grid_final": 10, "upsample_list": [1, 2], "samples_per_ray": 12, "n_views": 4,
        "patches_per_view": 2, "newest_views": 1, "bidir_patches": 1, "n_init_frames": 3, "add_frames_every": 2,
        "n_iters_per_frame": 3, "n_iters_reg": 1, "n_overlap": 1, "n_max_frames": 4, "dyn_block_iter": 2,
        "dyn_res": [8, 16], "dyn_levels": 2, "dyn_tv_grid": [4, 8], "dyn_hidden": 8, "feature_c": 8, "app_dim": 6,
        "density_n_comp": [2, 2, 2], "app_n_comp": [2, 2, 2], "checkpoint_every": 10, "log_every": 1}


@pytest.fixture(scope="module")
def scene():
    sc = generate_street(seed=0, height=16, n_frames=8, supersample=1)
    n, h, w = sc.depth.shape
    test = np.arange(n) % 4 == 0
    zeros = np.zeros((n, h, w, 2), np.float32)
    return scene_tensors(sc.images, (1.0 / sc.depth).astype(np.float32), zeros, np.zeros((n, h, w), bool), zeros,
                         np.zeros((n, h, w), bool), test, None, np.linalg.inv(sc.c2w))


def _run(scene, **over):
    torch.set_num_threads(1)
    tr = Trainer(scene, TrainConfig.from_dict({**TINY, **over}))
    tr.run(progress=False)
    return tr


def test_schedule_runs_to_the_end_with_several_local_rfs(scene):
    tr = _run(scene)
    assert len(tr.poses) == scene.n_frames and tr.schedule.finished
    assert tr.rfs.n_rfs >= 2
    np.testing.assert_allclose(tr.rfs.blending_weights.sum(1).numpy(), 1.0, atol=1e-6)
    assert torch.equal(tr.poses.c2w([0])[0], torch.eye(3, 4))          # frame 0 is the fixed world frame
    assert float(torch.linalg.vector_norm(tr.poses.t[len(tr.poses) - 1])) > 0   # later frames moved
    hist = [h for h in tr.history if "psnr" in h]
    assert np.mean([h["psnr"] for h in hist[-5:]]) > np.mean([h["psnr"] for h in hist[:5]])   # it learns


def test_killed_run_resumes_bit_identically(scene, tmp_path):
    torch.set_num_threads(1)
    cfg = TrainConfig.from_dict(TINY)
    whole = Trainer(scene, cfg)
    whole.run(progress=False)
    first = Trainer(scene, cfg)
    first.run(checkpointer=Checkpointer(tmp_path), progress=False, stop_at=23)   # "killed" at iteration 23
    assert first.iteration == 23 and not first.schedule.finished
    resumed = Trainer(scene, cfg)
    resumed.run(checkpointer=Checkpointer(tmp_path), progress=False)
    assert resumed.iteration == whole.iteration
    a, b = whole.export(), resumed.export()
    for part in ("rfs", "poses", "mask"):
        assert a[part].keys() == b[part].keys()
        for k in a[part]:
            assert torch.equal(a[part][k], b[part][k]), (part, k)


def test_switches_turn_their_parts_off(scene):
    base = _run(scene, bidirectional=False)
    no_mask = _run(scene, use_mask_module=False, bidirectional=False)
    planes = [p for p in no_mask.mask.planes]
    assert all(float(p.abs().max()) == 0 for p in planes)          # never trained: still the zero init
    assert any(float(p.abs().max()) > 0 for p in base.mask.planes)  # trained when on
    m = TrainedModel(no_mask.export(), scene)
    assert float(np.abs(m.mask(2)).max()) == 0


def test_backward_step_trains_the_previous_rf(scene):
    """With the bidirectional step the earlier RFs keep changing after their own training; without it they are
    frozen once the next RF is appended (only the newest RF's optimiser steps)."""
    snap: dict[str, dict] = {}

    def watch(tr):
        def on_step(it, metrics):
            if tr.rfs.n_rfs == 2 and "rf0" not in snap.setdefault(id(tr), {}):
                snap[id(tr)]["rf0"] = {k: v.clone() for k, v in tr.rfs.fields[0].state_dict().items()}
        return on_step

    out = {}
    for name, over in (("on", {}), ("off", {"bidirectional": False})):
        torch.set_num_threads(1)
        tr = Trainer(scene, TrainConfig.from_dict({**TINY, **over}))
        tr.run(progress=False, on_step=watch(tr))
        before = snap[id(tr)]["rf0"]
        after = tr.rfs.fields[0].state_dict()
        out[name] = max(float((after[k] - before[k]).abs().max()) for k in before)
        assert any("bidir" in h for h in tr.history) == (name == "on")
    assert out["off"] == 0.0 and out["on"] > 0.0


def test_trained_model_renders_a_test_frame(scene):
    tr = _run(scene, bidirectional=False)
    model = TrainedModel(tr.export(), scene)
    out = model.render(4)
    assert out["rgb"].shape == (16, 32, 3) and np.isfinite(out["rgb"]).all()
    assert 0 <= out["rgb"].min() and out["rgb"].max() <= 1
    assert model.c2w().shape == (scene.n_frames, 4, 4)


def test_bad_config_and_scene_are_refused(scene):
    with pytest.raises(ValueError, match="unknown OmniLocalRF training keys"):
        TrainConfig.from_dict({"n_view": 3})
    with pytest.raises(ValueError, match="n_init_frames"):
        Trainer(scene, TrainConfig.from_dict({**TINY, "n_init_frames": 8}))
