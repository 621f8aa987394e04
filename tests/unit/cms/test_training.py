"""CMS fine-tuning: the memory bank (both views, refreshed once per epoch, no gradient), resume after an
interruption, and data-parallel training (world_size 2 on CPU, gloo) equal to single-process training."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cvpr24.core.seeding import derive_seed
from cvpr24.pipelines.cms import method as M
from cvpr24.pipelines.cms import model as Mo

HEAD = {"out_dim": 8, "hidden_dim": 16, "bottleneck_dim": 4}
AUG = {"max_shift": 1, "max_rot_deg": 5, "scale": [0.95, 1.05], "noise": 0.02, "cutout": 2, "cutout_p": 0.3}


def _spec(tmp=None, epochs=2, batch=8, name="cms", alpha=0.5):
    g = torch.Generator().manual_seed(0)
    n = 32
    y = np.repeat(np.arange(4), n // 4)
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.3 + torch.as_tensor(y, dtype=torch.float32)[:, None, None, None] / 4
    labelled = np.zeros(n, bool)
    labelled[(y < 2) & (np.arange(n) % 2 == 0)] = True
    torch.manual_seed(0)
    net = Mo.build_net(1, [4, 8, 8], HEAD, [1, 2, 2])
    net.backbone.set_standardisation(x)
    return {"images": x, "labels": y, "labelled": labelled, "heldout_x": x[:12], "heldout_y": y[:12], "n_old": 2,
            "n_classes": 4, "variant": {"name": name, "alpha": alpha, "k": 3},
            "train": {"lr": 0.05, "momentum": 0.9, "weight_decay": 5e-5, "eta_min_factor": 1e-3, "batch_size": batch,
                      "epochs": epochs, "tau": 0.3, "tau_sup": 0.07, "sup_weight": 0.35, "checkpoint_every": 3,
                      "log_every": 1, "selection": {"k_patience": 5}},
            "model": {"widths": [4, 8, 8], "strides": [1, 2, 2], "head": HEAD}, "aug": AUG,
            "backbone": net.backbone.state_dict(), "backbone_key": "test", "seed": 0,
            "checkpoint_dir": str(tmp) if tmp else None, "linkage_backend": "scipy", "max_exact_n": 1000,
            "threads": 1, "progress": False}


def test_memory_bank_has_both_views_no_grad_and_is_refreshed_once_per_epoch(monkeypatch):
    net = Mo.build_net(1, [4, 8, 8], HEAD, [1, 2, 2])
    x = torch.rand(10, 1, 8, 8)
    bank = M.build_bank(net, x, torch.Generator().manual_seed(0), M._aug_kwargs(AUG))
    assert bank.shape == (20, 8) and bank.grad_fn is None and not bank.requires_grad
    assert not torch.allclose(bank[:10], bank[10:])  # two different augmented views of every image
    calls = []
    real = M.build_bank
    monkeypatch.setattr(M, "build_bank", lambda *a, **k: calls.append(1) or real(*a, **k))
    out = M.fit_cms(_spec(epochs=3))
    assert len(calls) == 3 == out["refreshes"]  # once per epoch, not per step (4 steps per epoch here)
    assert out["steps"] == 12
    assert M.fit_cms(_spec(epochs=2, alpha=0.0, name="a0"))["refreshes"] == 0  # no bank without mean shift


def _initial_state(spec):
    """The network fit_cms starts from: its seeded head initialisation plus the given backbone."""
    torch.manual_seed(derive_seed(int(spec["seed"]), "cms_head_init"))
    net = Mo.build_net(1, spec["model"]["widths"], HEAD, spec["model"]["strides"])
    net.backbone.load_state_dict(spec["backbone"])
    return net.state_dict()


def _moved_head(out, spec):
    initial = _initial_state(spec)
    return [k for k in initial if k.startswith("head.mlp") and not torch.equal(out["final_state"][k], initial[k])]


def test_training_moves_weights_and_selects_a_checkpoint(monkeypatch):
    spec = _spec(epochs=2)
    out = M.fit_cms(spec)
    assert 0 <= out["best_epoch"] < 2 and out["k_est"] >= 3
    assert _moved_head(out, spec)  # the trained head differs from the head it started from
    monkeypatch.setattr(M, "train_loop", lambda **kw: [])  # zero steps: the same check must fail
    assert not _moved_head(M.fit_cms(_spec(epochs=2)), spec)


def test_interrupted_run_resumes_to_the_same_weights(tmp_path, monkeypatch):
    ref = M.fit_cms(_spec(tmp_path / "ref", epochs=2))
    real, n = Mo.cms_total_loss, {"calls": 0}

    def dying(*a, **k):
        n["calls"] += 1
        if n["calls"] == 7:  # after the checkpoint at step 6
            raise KeyboardInterrupt("simulated kill")
        return real(*a, **k)

    monkeypatch.setattr(M, "cms_total_loss", dying)
    with pytest.raises(KeyboardInterrupt):
        M.fit_cms(_spec(tmp_path / "killed", epochs=2))
    monkeypatch.setattr(M, "cms_total_loss", real)
    assert list((tmp_path / "killed").glob("*/step_*.pt"))
    resumed = M.fit_cms(_spec(tmp_path / "killed", epochs=2))
    assert not resumed["cached"]
    for k, v in ref["best_state"].items():
        assert torch.equal(v, resumed["best_state"][k]), k
    again = M.fit_cms(_spec(tmp_path / "killed", epochs=2))
    assert again["cached"]


@pytest.mark.slow
def test_two_data_parallel_workers_match_one_process():
    """world_size 2 (gloo): same global batch, same augmentations, all-gathered embeddings and memory bank,
    loss x world size so that DDP's gradient average equals the single-process gradient."""
    spec = _spec(epochs=2)
    single = M.fit_cms_parallel(spec, world_size=1)
    double = M.fit_cms_parallel(spec, world_size=2, threads=1)
    for k, v in single["final_state"].items():
        torch.testing.assert_close(double["final_state"][k], v, rtol=1e-4, atol=1e-5, msg=k)
    assert double["refreshes"] == single["refreshes"] == 2
    assert double["k_est"] == single["k_est"]
