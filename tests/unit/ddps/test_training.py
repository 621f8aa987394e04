"""DDPS pattern learning: it lowers the loss, and a run killed mid-way resumes from its checkpoint to the
same patterns as an uninterrupted run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cvpr24.core.training import Checkpointer
from cvpr24.pipelines.ddps import data as D
from cvpr24.pipelines.ddps import method as F
from cvpr24.pipelines.ddps import model as M

TRAIN = {"batch_size": 2, "n_epoch": 3, "rendering_scalar": 3.25, "static_interval": 1 / 24, "monitor_gamma": 2.2,
         "noise_sigma": 0.01, "noise_model": "gaussian", "lr_light": 0.3, "step_size_light": 5,
         "lr_decay_light": 0.3, "valid_N": 1, "batch_size_valid": 2, "checkpoint_every": 2, "log_every": 1}


def _tiny_split(seed: int, n: int = 4, p: int = 40):
    """n random Lambertian 'scenes' of p pixels relit from the real display grid (distant lights)."""
    rng = np.random.default_rng(seed)
    lights = D.display_grid()
    ldir = lights.reshape(-1, 3) - np.array([0, 0, 0.5])
    ldir /= np.linalg.norm(ldir, axis=-1, keepdims=True)
    normals = rng.normal(size=(n, p, 3)) * [0.3, 0.3, 0] + [0, 0, -1]
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    alb = rng.uniform(0.3, 0.9, (n, p, 3))
    basis = np.clip(np.einsum("spk,jk->sjp", normals, ldir), 0, None)[..., None] * alb[:, None] * 0.15
    ref = np.zeros((n, p, 3))
    ref[..., 2] = 0.5
    return {"basis": M.channel_first(torch.tensor(basis, dtype=torch.float32)),
            "normals": torch.tensor(normals, dtype=torch.float32), "valid": torch.ones(n, p, dtype=torch.bool),
            "ref_points": torch.tensor(ref, dtype=torch.float32)}, lights


def test_learning_lowers_the_loss():
    data, lights = _tiny_split(0)
    out = F.fit_patterns(data=data, val=None, lights=lights, p0=M.initial_pattern("tri_random", 4, seed=0),
                         channels="rgb", train={**TRAIN, "n_epoch": 6}, seed=0)
    losses = [h["loss"] for h in out["history"]]
    assert np.mean(losses[-4:]) < 0.5 * np.mean(losses[:2])
    assert out["patterns"].shape == (4, 9, 16, 3) and (out["patterns"] >= 0).all() and (out["patterns"] <= 1).all()


class Killed(RuntimeError):
    pass


def test_killed_run_resumes_to_the_same_patterns(tmp_path):
    data, lights = _tiny_split(1)
    val, _ = _tiny_split(2, n=2)
    kw = dict(data=data, val=val, lights=lights, p0=M.initial_pattern("OLAT", 4), channels="rgb", train=TRAIN, seed=3)
    ref = F.fit_patterns(**kw)["patterns"]

    def die(step, metrics):
        if step == 3:
            raise Killed

    ckpt = Checkpointer(tmp_path / "run", keep=2)
    with pytest.raises(Killed):
        F.fit_patterns(**kw, checkpointer=ckpt, log_fn=die)
    assert ckpt.checkpoints(), "no checkpoint was written before the kill"
    resumed = F.fit_patterns(**kw, checkpointer=ckpt)
    assert np.allclose(resumed["patterns"], ref, atol=1e-6)
    assert [h["step"] for h in resumed["history"]] == list(range(6))


def test_train_run_goes_through_the_job_cache(tmp_path):
    """A finished run is stored by core.training.cached_job under its key and read back unchanged; a
    changed parameter is a different key, so it is trained again."""
    data, lights = _tiny_split(4)
    run = {"run_id": "r", "init": "OLAT", "n_patterns": 4, "channels": "rgb", "basis": "realistic"}
    kw = dict(run=run, data=data, val=None, lights=lights, seed=0, data_fp="fp", code="c", progress=False)
    train = {**TRAIN, "checkpoint_dir": str(tmp_path)}
    first = F.train_run(train=train, **kw)
    again = F.train_run(train=train, **kw)
    assert not first["cached"] and again["cached"]
    assert np.array_equal(first["patterns"], again["patterns"]) and again["history"] == first["history"]
    assert len(list(tmp_path.glob("r-*/final.pt"))) == 1
    assert not F.train_run(train={**train, "lr_light": 0.1}, **kw)["cached"]
