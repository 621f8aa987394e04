"""Metrics of spec section 4 and the claims' measurements."""

import numpy as np
import pytest

from cvpr24.pipelines.bus import metrics as Mt


def test_harmonic_mean_on_the_papers_numbers():
    assert Mt.h_score(66.09, 29.23) == pytest.approx(40.53, abs=0.005)


def test_h_score_is_zero_when_private_is_zero():
    assert Mt.h_score(70.0, 0.0) == 0.0


def test_confusion_matrix_over_all_pixels_ignores_255():
    gt = np.array([[0, 0, 13, 255]])
    pred = np.array([[0, 1, 13, 5]])
    cm = Mt.confusion_matrix(gt, pred)
    assert cm.sum() == 3 and cm[0, 0] == 1 and cm[0, 1] == 1 and cm[13, 13] == 1


def test_open_set_scores_by_hand():
    # two images accumulated into ONE matrix (not a mean of per-image scores)
    gt = np.array([[[0, 0, 13, 13]], [[1, 1, 1, 13]]])
    pred = np.array([[[0, 13, 13, 13]], [[1, 1, 0, 13]]])
    s = Mt.open_set_scores(Mt.confusion_matrix(gt, pred))
    iou0, iou1, iou13 = 1 / 3, 2 / 3, 3 / 4
    assert s["iou_0"] == pytest.approx(100 * iou0)
    assert s["iou_1"] == pytest.approx(100 * iou1)
    assert s["common"] == pytest.approx(100 * (iou0 + iou1) / 2)  # absent classes are NaN, skipped
    assert s["private"] == pytest.approx(100 * iou13)
    c, p = 100 * (iou0 + iou1) / 2, 100 * iou13
    assert s["h_score"] == pytest.approx(2 * c * p / (c + p))


def test_confusion_matrix_rejects_mismatched_sizes_and_unknown_ids():
    with pytest.raises(ValueError, match="differ in size"):
        Mt.confusion_matrix(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="outside"):
        Mt.confusion_matrix(np.full((1, 2), 20), np.zeros((1, 2)))


def test_boundary_fscore_perfect_and_shifted():
    gt = np.zeros((1, 16, 16), int)
    gt[0, 3:9, 3:9] = 13
    assert Mt.boundary_fscore(gt, gt)["boundary_f"] == pytest.approx(100.0)
    far = np.zeros_like(gt)
    far[0, 13:16, 13:16] = 13  # a blob far from the true boundary
    assert Mt.boundary_fscore(gt, far)["boundary_f"] == 0.0
    near = np.roll(gt, 1, axis=2)  # one pixel off: inside the 2 px tolerance
    assert Mt.boundary_fscore(gt, near, tolerance=2)["boundary_f"] == pytest.approx(100.0)


def test_small_object_iou_sees_only_small_things():
    gt = np.zeros((1, 20, 20), int)
    gt[0, 2:4, 2:4] = 9       # a 4-pixel car: small
    gt[0, 10:20, 0:20] = 10   # a 200-pixel bus: not small
    pred = gt.copy()
    pred[0, 2:4, 2:4] = 0     # the small car is missed, the bus is perfect
    assert Mt.small_object_iou(gt, pred, max_pixels=100) == pytest.approx(0.0)
    assert Mt.small_object_iou(gt, gt, max_pixels=100) == pytest.approx(100.0)
