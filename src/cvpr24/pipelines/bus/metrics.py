"""OSDA-SS metrics (spec section 4) and the extra measurements behind the claims (section 9).

- `confusion_matrix`: one 14 x 14 matrix accumulated over every pixel of every image (ignore 255).
- `iou_per_class`, `open_set_scores`: per-class IoU, Common = mean IoU of the 13 common classes,
  Private = IoU of class 13, H-Score = their harmonic mean (0 when either is 0, as `statistics.harmonic_mean`).
- `boundary_fscore`: F-score of predicted vs true private-class boundary pixels, matched within a tolerance.
- `small_object_iou`: IoU of the thing classes restricted to small ground-truth thing objects (and a thin
  band around them), so that a small-object improvement is not drowned by large ones.
"""

from __future__ import annotations

import statistics

import numpy as np
from scipy import ndimage

from cvpr24.pipelines.bus.labels import IGNORE_ID, NUM_CLASSES, PRIVATE_ID, THING_IDS


def confusion_matrix(gt: np.ndarray, pred: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Rows = ground truth, columns = prediction; pixels with gt 255 are skipped."""
    gt, pred = np.asarray(gt).ravel().astype(np.int64), np.asarray(pred).ravel().astype(np.int64)
    if gt.shape != pred.shape:
        raise ValueError(f"ground truth and prediction differ in size: {gt.shape} vs {pred.shape}")
    keep = gt != IGNORE_ID
    if np.any((gt[keep] < 0) | (gt[keep] >= num_classes)):
        raise ValueError(f"ground-truth ids outside 0..{num_classes - 1} and {IGNORE_ID}: {np.unique(gt[keep])}")
    if np.any((pred < 0) | (pred >= num_classes)):
        raise ValueError(f"predicted ids outside 0..{num_classes - 1}")
    return np.bincount(gt[keep] * num_classes + pred[keep], minlength=num_classes ** 2).reshape(num_classes, num_classes)


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """IoU per class (NaN for a class absent from both ground truth and prediction)."""
    tp = np.diag(cm).astype(np.float64)
    denom = cm.sum(0) + cm.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / denom, np.nan)


def h_score(common: float, private: float) -> float:
    """Harmonic mean of Common and Private (both in %); 0 when either is 0."""
    if common <= 0 or private <= 0:
        return 0.0
    return float(statistics.harmonic_mean([common, private]))


def open_set_scores(cm: np.ndarray) -> dict[str, float]:
    """{'iou_<k>': per-class IoU in %, 'common', 'private', 'h_score'} from a 14 x 14 confusion matrix."""
    iou = 100.0 * iou_per_class(cm)
    common = float(np.nanmean(iou[:PRIVATE_ID]))
    private = float(np.nan_to_num(iou[PRIVATE_ID]))
    out = {f"iou_{k}": float(v) for k, v in enumerate(iou)}
    out.update(common=common, private=private, h_score=h_score(common, private))
    return out


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Boundary pixels of a (B, H, W) boolean mask: in the mask with a 4-neighbour outside it."""
    er = ndimage.binary_erosion(mask, structure=np.array([[[0, 1, 0], [1, 1, 1], [0, 1, 0]]], bool),
                                border_value=0)
    return mask & ~er


def boundary_fscore(gt: np.ndarray, pred: np.ndarray, cls: int = PRIVATE_ID, tolerance: int = 2) -> dict[str, float]:
    """Boundary F-score of class `cls` over a batch (B, H, W): a predicted boundary pixel is correct if a
    true boundary pixel lies within `tolerance` pixels (chessboard distance), and vice versa for recall.
    Pixels whose ground truth is 255 are excluded from both boundaries."""
    valid = gt != IGNORE_ID
    bg, bp = _boundary(gt == cls) & valid, _boundary(pred == cls) & valid
    st = np.zeros((1, 2 * tolerance + 1, 2 * tolerance + 1), bool)
    st[0] = True
    near_g = ndimage.binary_dilation(bg, structure=st)
    near_p = ndimage.binary_dilation(bp, structure=st)
    n_p, n_g = int(bp.sum()), int(bg.sum())
    precision = float((bp & near_g).sum() / n_p) if n_p else 0.0
    recall = float((bg & near_p).sum() / n_g) if n_g else 0.0
    f = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {"boundary_precision": 100 * precision, "boundary_recall": 100 * recall, "boundary_f": 100 * f}


def small_object_mask(gt: np.ndarray, max_pixels: int, things: tuple[int, ...] = THING_IDS, band: int = 1) -> np.ndarray:
    """Pixels of ground-truth thing objects (8-connected components per class) smaller than `max_pixels`,
    grown by `band` pixels so that false positives right around them count too."""
    out = np.zeros(gt.shape, bool)
    st = np.zeros((3, 3, 3), bool)
    st[1] = True
    for c in things:
        comps, n = ndimage.label(gt == c, structure=st)
        if n == 0:
            continue
        sizes = np.bincount(comps.ravel())
        small = np.nonzero((sizes < max_pixels) & (np.arange(sizes.size) > 0))[0]
        out |= np.isin(comps, small)
    if band > 0:
        out = ndimage.binary_dilation(out, structure=st, iterations=band)
    return out


def small_object_iou(gt: np.ndarray, pred: np.ndarray, max_pixels: int, things: tuple[int, ...] = THING_IDS) -> float:
    """Mean IoU (%) over thing classes inside `small_object_mask` (classes absent there are skipped)."""
    region = small_object_mask(gt, max_pixels, things)
    if not region.any():
        return float("nan")
    cm = confusion_matrix(np.where(region, gt, IGNORE_ID), pred)
    iou = iou_per_class(cm)
    return float(100.0 * np.nanmean(iou[list(things)]))


def pixel_accuracy(gt: np.ndarray, pred: np.ndarray) -> float:
    keep = gt != IGNORE_ID
    return float(100.0 * (gt[keep] == pred[keep]).mean()) if keep.any() else float("nan")
