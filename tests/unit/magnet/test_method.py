"""MagNet's training job: a run killed part-way resumes from its last checkpoint and ends exactly where the
uninterrupted run ends (mid-epoch included: the epoch's permutation is part of the checkpoint)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cvpr24.core.training import Checkpointer
from cvpr24.pipelines.magnet import method as F
from cvpr24.pipelines.magnet import model as M


def _arrays(n: int = 12, size: int = 32, tokens: int = 6) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    masks = np.zeros((n, size, size), np.uint8)
    for k in range(n):
        masks[k, 4 + k % 8:14 + k % 8, 6:16] = 1
    ids = rng.integers(5, 20, (n, tokens))
    ids[:, 0], ids[:, -1] = M.CLS_ID, M.SEP_ID
    return {"images": rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8), "masks": masks,
            "image_index": np.arange(n), "ids": ids, "attn": np.ones((n, tokens), np.int64)}


CFG = {"model": {}, "lr": 1e-3, "weight_decay": 0.01, "batch": 4, "epochs": 2, "checkpoint_every": 2,
       "log_every": 1, "schedule": "cosine"}


def _mcfg() -> M.MagNetConfig:
    return M.MagNetConfig(vocab_size=20, max_tokens=6, image_size=32, dims=(8, 8, 16, 16), text_dim=16,
                          text_heads=2, mask_dim=16, dec_heads=2, dec_ffn=32, mg=True, mtp_dim=16, mtp_heads=2,
                          mtp_ffn=32, mg_pool=4, cal=True)


def test_killed_run_resumes_exactly(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    arrays, idx = _arrays(), np.arange(12)          # 3 steps per epoch, 6 steps, checkpoints at 2 and 4
    full = F.fit(arrays, idx, _mcfg(), CFG, seed=3)
    real, calls = M.MagNet.losses, {"n": 0}

    def dying(self, batch, generator):
        calls["n"] += 1
        if calls["n"] == 5:                             # killed during step 4, mid-epoch 2
            raise KeyboardInterrupt
        return real(self, batch, generator)

    ck = Checkpointer(tmp_path / "job")
    monkeypatch.setattr(M.MagNet, "losses", dying)
    with pytest.raises(KeyboardInterrupt):
        F.fit(arrays, idx, _mcfg(), CFG, seed=3, checkpointer=ck)
    monkeypatch.setattr(M.MagNet, "losses", real)
    assert ck.latest()["step"] == 4
    resumed = F.fit(arrays, idx, _mcfg(), CFG, seed=3, checkpointer=ck)
    assert [h["step"] for h in resumed["history"]] == list(range(6))
    for k, v in full["state"].items():
        torch.testing.assert_close(resumed["state"][k], v, rtol=0, atol=0, msg=k)
