"""StyleGRU training helpers and the evaluate phase on tiny inputs: encoder R², the augmented view, the
official triplet sampler, stage 1 learning a separable cue, the flow-variance detector, the job plan, the
test sets of each job and one score per video."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from cvpr24.pipelines.stylegru import method as F
from cvpr24.pipelines.stylegru import nodes


def test_r2_per_level_is_one_for_perfect_and_zero_for_the_mean():
    rng = np.random.default_rng(0)
    true = rng.normal(size=(200, 9, 8))
    assert np.allclose(F.r2_per_level(true, true), 1.0)
    assert np.allclose(F.r2_per_level(np.broadcast_to(true.mean(0), true.shape), true), 0.0, atol=1e-12)
    noisy = true.copy()
    noisy[:, 4] += rng.normal(size=(200, 8))
    r2 = F.r2_per_level(noisy, true)
    assert r2[4] < 0.2 and np.allclose(np.delete(r2, 4), 1.0)


def test_augmented_view_flips_and_shifts_every_frame_alike():
    rng = np.random.default_rng(0)
    clip = rng.integers(0, 255, (5, 12, 12, 3), dtype=np.uint8)
    assert (F.augmented_view(clip, np.random.default_rng(1), jitter=0) == clip[:, :, ::-1]).all()
    aug = F.augmented_view(clip, np.random.default_rng(1), jitter=2)
    assert aug.shape == clip.shape
    flipped = clip[:, :, ::-1]
    for dy in range(-2, 3):       # one shift explains every frame's interior
        for dx in range(-2, 3):
            inner = aug[:, 2:-2, 2:-2]
            if (inner == flipped[:, 2 + dy:10 + dy, 2 + dx:10 + dx]).all():
                return
    pytest.fail("no single crop shift maps the flipped clip onto the augmented view")


def test_triplet_sampler_labels():
    labels = np.array([0] * 10 + [1] * 30)
    a, p, n, view, y = F._sample_triplets(labels, 500, torch.Generator().manual_seed(0))
    assert (labels[a.numpy()] == y.numpy()).all() and (labels[p.numpy()] == y.numpy()).all()
    assert (labels[n.numpy()] == 1 - y.numpy()).all()
    assert 0.4 < y.float().mean() < 0.6 and 0.4 < view.float().mean() < 0.6   # y ~ U{0,1}, coin-flip view


def test_style_input_flow_and_latent():
    lat = torch.arange(2 * 5 * 9 * 8, dtype=torch.float32).reshape(2, 5, 9, 8)
    flow = F.style_input(lat, {"levels": "total", "input": "flow"})
    assert flow.shape == (2, 4, 72) and torch.allclose(flow, torch.full_like(flow, 72.0))
    latent = F.style_input(lat, {"levels": "coarse", "input": "latent"})
    assert latent.shape == (2, 4, 24) and torch.equal(latent, lat[:, 1:, :3].reshape(2, 4, 24))


def _toy_clips(n: int, rng, steps: int = 8):
    """Reals with lively flow, fakes with smooth flow at levels 2-5: the cue StyleGRU must find."""
    lat = rng.normal(size=(n, steps, 9, 8)).astype(np.float32)
    label = np.arange(n) % 2
    lat[label == 1, :, 2:6] = np.cumsum(0.05 * rng.normal(size=((label == 1).sum(), steps, 4, 8)), axis=1)
    return {"latents": lat, "latents_r": lat + 0.01 * rng.normal(size=lat.shape).astype(np.float32),
            "label": label}


def test_stage1_learns_a_flow_cue():
    rng = np.random.default_rng(0)
    tr, va = _toy_clips(128, rng), _toy_clips(64, rng)
    cfg = {"model": {"hidden": 16, "layers": 1, "head_hidden": 16}, "lr": 3e-3, "margin": 1.0, "batch": 32,
           "epochs": 8, "triplets": 256, "log_every": 50}
    out = F.fit_stage1(tr, va, {"id": "t", "input": "flow", "levels": "total", "loss": "triplet"}, cfg, seed=0,
                       progress=False)
    assert out["best_val_acc"] > 0.85
    net = F.stylegru_from(out, cfg)
    logits, emb = F.stylegru_outputs(net, va["latents"], {"input": "flow", "levels": "total"})
    assert logits.shape == (64,) and emb.shape == (64, 2 * 1 * 16)   # 2 directions x 1 layer x hidden


def test_flow_variance_features_and_detector():
    rng = np.random.default_rng(0)
    tr = _toy_clips(200, rng)
    feats = F.flow_variance_features(tr["latents"])
    assert feats.shape == (200, 9)
    assert feats[tr["label"] == 1, 3].mean() < feats[tr["label"] == 0, 2].mean() - 3
    clf = F.fit_flow_variance_lr(tr, seed=0)
    te = _toy_clips(100, rng)
    score = clf.decision_function(F.flow_variance_features(te["latents"]))
    assert ((score > 0) == te["label"]).mean() > 0.95


def test_plan_jobs_ids_unique_and_loo_refers_to_loo_stage1():
    plan = nodes.plan_jobs({"level_groups": ["coarse", "middle", "fine"], "loo_methods": ["Deepfakes", "FaceSwap"]})
    ids = [j["id"] for js in plan.values() for j in js]
    assert len(ids) == len(set(ids))
    s1 = {j["id"]: j for j in plan["stage1"]}
    for j in plan["stage2"]:
        if j["stage1"]:
            assert j["stage1"] in s1 and s1[j["stage1"]]["exclude"] == j["exclude"]
    assert {"s2_full_woDeepfakes", "s2_content_woFaceSwap", "s1_flow_fine_triplet_woDeepfakes"} <= set(ids)


def _videos():
    rows = [("ffpp", "Origin", 0), ("ffpp", "Origin", 0), ("ffpp", "Deepfakes", 1), ("ffpp", "FaceSwap", 1),
            ("cdf", "Origin", 0), ("cdf", "X-CDF", 1)]
    return pd.DataFrame(rows, columns=["dataset", "method", "label"])


def test_eval_sets_of_a_leave_one_out_job_hold_only_reals_and_the_held_out_fakes():
    v = _videos()
    loo = nodes.eval_sets(v, "Deepfakes")
    assert list(loo) == ["heldout"] and loo["heldout"].tolist() == [True, True, True, False, False, False]
    sets = nodes.eval_sets(v, None)
    assert sets["ffpp"].tolist() == [True] * 4 + [False] * 2
    assert sets["ffpp:FaceSwap"].tolist() == [True, True, False, True, False, False]
    assert sets["cdf"].tolist() == [False] * 4 + [True, True]


def test_evaluate_scores_each_video_once():
    clips = pd.DataFrame({"sample_id": [f"v{i}#{k}" for i in range(4) for k in range(3)],
                          "video_id": [f"v{i}" for i in range(4) for _ in range(3)],
                          "dataset": "cdf", "method": ["Origin"] * 6 + ["X-CDF"] * 6,
                          "label": [0] * 6 + [1] * 6, "split": "test", "clip": [0, 1, 2] * 4})
    # video v1 (real) has one confident-fake clip; its mean logit still ranks below the fakes
    logit = [-2, -2, -2, -3, -3, 5, 1, 1, 1, 2, 2, 2]
    preds = pd.DataFrame({"job": "s2_full", "kind": "detector", "seed": 0, "sample_id": clips["sample_id"],
                          "logit": np.array(logit, np.float32)})
    mi = {"latents": np.zeros((12, 4, 9, 8), np.float32)}
    aucs, _ = nodes.evaluate(preds, clips, mi, {"aggregation": "mean_logit"}, {"loo_methods": []})
    row = aucs[aucs["set"] == "cdf"].iloc[0]
    assert (row["n_real"], row["n_fake"]) == (2, 2) and row["auc"] == 100.0
