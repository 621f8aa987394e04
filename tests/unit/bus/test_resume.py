"""A training job killed mid-way resumes from its checkpoint and ends with the same weights."""

import numpy as np
import pytest
import torch

from cvpr24.core.training import Checkpointer
from cvpr24.pipelines.bus import method as Me
from cvpr24.pipelines.bus import model as M

CFG = {"model": {"arch": "small_conv", "widths": [8, 8, 8, 8], "embed": 4}, "batch_size": 2, "jitter": 0.1,
       "optimizer": {"lr": 1e-3, "warmup": 1}, "checkpoint_every": 2, "log_every": 1, "pretrain": {"iterations": 6}}


def test_interrupted_pretraining_resumes_to_the_same_weights(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (4, 16, 16, 3), dtype=np.uint8)
    lab = rng.integers(0, 13, (4, 16, 16)).astype(np.uint8)
    ref = Me.pretrain(img, lab, CFG, 0, None, "ref", False)["student"]

    real, calls = M.colour_jitter, {"n": 0}

    def dies_at_step_5(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 5:
            raise KeyboardInterrupt("simulated kill")
        return real(*args, **kwargs)

    monkeypatch.setattr(M, "colour_jitter", dies_at_step_5)
    ckpt = Checkpointer(tmp_path / "job")
    with pytest.raises(KeyboardInterrupt):
        Me.pretrain(img, lab, CFG, 0, ckpt, "killed", False)
    assert ckpt.checkpoints()  # step 4 was saved
    monkeypatch.setattr(M, "colour_jitter", real)
    out = Me.pretrain(img, lab, CFG, 0, ckpt, "resumed", False)
    assert out["history"][0]["step"] == 0 and len(out["history"]) == 6
    assert all(torch.equal(ref[k], out["student"][k]) for k in ref)
