"""MagNet's evaluate node and claim measurements on hand-built predictions and diagnostics."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cvpr24.pipelines.magnet import nodes
from cvpr24.pipelines.magnet.report import measure_claims


def _toy(size: int = 8):
    """Four eval expressions (val A, val R, testA A, testB O); base predicts nothing, mg predicts the truth on
    the relational / ordinal ones only."""
    masks = np.zeros((5, size, size), np.uint8)
    for k in range(5):
        masks[k, k:k + 2, 1:3] = 1
    samples = pd.DataFrame({"sample_id": [f"{k}_{k}" for k in range(5)],
                            "split": ["train", "val", "val", "testA", "testB"],
                            "template": ["A", "A", "R", "A", "O"]})
    idx = np.array([1, 2, 3, 4])
    gt = masks[idx].astype(bool)
    mg = gt.copy()
    mg[[0, 2]] = False
    pred = {"eval_idx": idx}
    for seed in (0, 1):
        pred[f"base__s{seed}"] = np.packbits(np.zeros_like(gt), axis=-1)
        pred[f"mg__s{seed}"] = np.packbits(mg, axis=-1)
    return pred, {"masks": masks}, samples


def test_evaluate_scores_each_job_seed_split_and_template():
    pred, mi, samples = _toy()
    pairs, scores = nodes.evaluate(pred, mi, samples)
    assert len(pairs) == 4 * 4
    mg = pairs[(pairs["job"] == "mg") & (pairs["seed"] == 0)].set_index("sample_id")
    assert mg.loc["2_2", "iou"] == 1.0 and mg.loc["1_1", "iou"] == 0.0
    assert nodes.per_seed(scores, "mg", "val", "miou").tolist() == [50.0, 50.0]
    assert nodes.per_seed(scores, "mg", "testB", "miou").tolist() == [100.0, 100.0]
    assert nodes.per_seed(scores, "mg", "all", "miou", template="R").tolist() == [100.0, 100.0]
    assert nodes.per_seed(scores, "nothing", "val", "miou") is None


def test_claims_measure_per_seed_differences():
    pred, mi, samples = _toy()
    _, scores = nodes.evaluate(pred, mi, samples)
    log = pd.DataFrame([
        {"job": "mg", "seed": s, "mtp_acc_true": 90.0 + s, "mtp_acc_other": 40.0, "mtp_acc_text": 50.0,
         "inference_params": 100.0, "inference_params_without_mg": 100.0, "max_prob_diff_without_mg": 0.0,
         "alignment": 0.1} for s in (0, 1)])
    m = measure_claims(scores, log)
    assert m["C1"].units == {"seed 0": 50.0, "seed 1": 50.0}
    assert m["C2"].units == {"seed 0": 100.0, "seed 1": 100.0}        # testB gain 100, testA gain 0
    assert m["C3"].units == {"seed 0": 50.0, "seed 1": 51.0}
    assert m["C3b"].units == {"seed 0": 40.0, "seed 1": 41.0}
    assert m["C4"].units == {"mg seed 0": 0.0, "mg seed 1": 0.0}
    assert m["C5"].units == {} and "not run" in m["C5"].note       # no MagNet job in the toy
    assert m["S1"].units == {"seed 0": 0.0, "seed 1": 0.0}


def test_inference_cost_claim_sees_a_leak():
    pred, mi, samples = _toy()
    _, scores = nodes.evaluate(pred, mi, samples)
    log = pd.DataFrame([{"job": "mg", "seed": 0, "inference_params": 120.0, "inference_params_without_mg": 100.0,
                         "max_prob_diff_without_mg": 0.25}])
    assert measure_claims(scores, log)["C4"].units["mg seed 0"] == pytest.approx(20.25)


def test_plan_runs_claim_configs_at_every_seed_and_the_rest_once():
    train = {"seeds": [0, 1], "configs": {"mg": {"mg": True}, "cam": {"cam": True}, "base": {}},
             "first_seed_only": ["cam"]}
    plan = [(j["id"], s) for j, s in nodes.plan_jobs(train)]
    assert plan == [("mg", 0), ("mg", 1), ("cam", 0), ("base", 0), ("base", 1)]
    with pytest.raises(ValueError, match="first_seed_only"):
        nodes.plan_jobs({**train, "first_seed_only": ["nope"]})
