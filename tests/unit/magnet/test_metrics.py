"""MagNet's metrics (spec section 4) by hand and against scikit-learn / torchmetrics where they agree."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import jaccard_score
from torchmetrics.functional.classification import binary_jaccard_index

from cvpr24.pipelines.magnet import metrics as MT


def _square(size: int, a: int, b: int) -> np.ndarray:
    m = np.zeros((size, size), bool)
    m[a:b, a:b] = True
    return m


def test_miou_and_oiou_differ_on_small_and_big_objects():
    # pair 1: a 2x2 object, predicted 1 of 4 pixels -> IoU 0.25; pair 2: a 10x10 object, exact -> IoU 1.0
    gt = np.stack([_square(12, 0, 2), _square(12, 1, 11)])
    pred = np.stack([np.zeros((12, 12), bool), _square(12, 1, 11)])
    pred[0, 0, 0] = True
    i, u = MT.intersection_union(pred, gt)
    assert i.tolist() == [1, 100] and u.tolist() == [4, 100]
    s = MT.summarise(i, u)
    assert s["miou"] == pytest.approx(100 * (0.25 + 1.0) / 2)
    assert s["oiou"] == pytest.approx(100 * 101 / 104)
    assert s["prec@0.5"] == pytest.approx(50.0) and s["prec@0.9"] == pytest.approx(50.0)


def test_empty_union_scores_zero_and_prec_counts_equality():
    i, u = np.array([0, 1]), np.array([0, 2])        # U = 0 -> IoU 0; IoU exactly 0.5 counts at Prec@0.5
    s = MT.summarise(i, u)
    assert s["miou"] == pytest.approx(25.0)
    assert s["prec@0.5"] == pytest.approx(50.0) and s["prec@0.6"] == 0.0


def test_threshold_is_strict():
    prob = np.array([[0.5, 0.51], [0.49, 1.0]])
    assert MT.binarise(prob).tolist() == [[False, True], [False, True]]
    with pytest.raises(ValueError, match="NaN"):
        MT.binarise(np.array([np.nan]))


def test_against_sklearn_and_torchmetrics():
    rng = np.random.default_rng(0)
    gt = rng.random((6, 16, 16)) < 0.3
    pred = rng.random((6, 16, 16)) < 0.4
    i, u = MT.intersection_union(pred, gt)
    ours = MT.pair_iou(i, u)
    ref = [jaccard_score(g.ravel(), p.ravel()) for p, g in zip(pred, gt, strict=True)]
    np.testing.assert_allclose(ours, ref, rtol=1e-12)
    pooled = float(binary_jaccard_index(torch.as_tensor(pred.astype(np.int64)), torch.as_tensor(gt.astype(np.int64))))
    assert MT.summarise(i, u)["oiou"] == pytest.approx(100 * pooled, rel=1e-6)


def test_shape_mismatch_is_an_error():
    with pytest.raises(ValueError, match="shape"):
        MT.intersection_union(np.zeros((2, 4, 4), bool), np.zeros((2, 4, 5), bool))


def test_summarise_groups():
    pairs = pd.DataFrame({"split": ["a", "a", "b"], "inter": [1, 3, 0], "union": [2, 3, 5]})
    out = MT.summarise_groups(pairs, ["split"]).set_index("split")
    assert out.loc["a", "n"] == 2 and out.loc["a", "miou"] == pytest.approx(75.0)
    assert out.loc["b", "oiou"] == 0.0
