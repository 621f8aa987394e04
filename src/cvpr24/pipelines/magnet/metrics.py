"""Referring-segmentation metrics exactly as the released evaluation computes them (spec section 4).

Per (ref, sentence) pair, at the evaluation resolution: `I = |pred ∧ gt|`, `U = |pred ∨ gt|`, IoU = I / U
(0 when U = 0, as the released `test.py` does: it adds nothing to the mean's numerator).

- mIoU = mean of the per-pair IoUs (x100);
- oIoU ("overall IoU") = Σ I / Σ U over all pairs (x100): large objects weigh more;
- Prec@X = % of pairs with IoU >= X (>=, as the released code's `this_iou >= eval_seen_ious[n]`).

The prediction is binarised `prob > 0.5` (strict, as the released code). oIoU is the Jaccard index of all
pixels pooled, so it equals torchmetrics' `binary_jaccard_index` over the concatenated masks; the per-pair
IoU equals scikit-learn's `jaccard_score` wherever U > 0 (both checked in tests/unit/magnet/test_metrics.py).
Ours are written out because the per-pair U = 0 rule and the pooling over pairs are the released code's, not
a library's default.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def binarise(prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """`prob > threshold` (strict, as the released evaluation)."""
    prob = np.asarray(prob)
    if not np.isfinite(prob).all():
        raise ValueError("predicted probabilities contain NaN or inf")
    return prob > threshold


def intersection_union(pred: np.ndarray, gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per pair I and U for boolean masks of shape (n, H, W) (or one (H, W) mask)."""
    pred, gt = np.asarray(pred).astype(bool), np.asarray(gt).astype(bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction and ground truth differ in shape: {pred.shape} vs {gt.shape}")
    if pred.ndim == 2:
        pred, gt = pred[None], gt[None]
    axes = tuple(range(1, pred.ndim))
    return (pred & gt).sum(axis=axes).astype(np.int64), (pred | gt).sum(axis=axes).astype(np.int64)


def pair_iou(inter: np.ndarray, union: np.ndarray) -> np.ndarray:
    """IoU per pair; 0 where the union is empty."""
    inter, union = np.asarray(inter, np.float64), np.asarray(union, np.float64)
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def summarise(inter: np.ndarray, union: np.ndarray) -> dict[str, float]:
    """mIoU, oIoU and Prec@0.5..0.9 (all in %) of a set of pairs; NaN when there is no pair."""
    inter, union = np.asarray(inter, np.float64), np.asarray(union, np.float64)
    if inter.size == 0:
        return {"miou": float("nan"), "oiou": float("nan"), **{f"prec@{t}": float("nan") for t in THRESHOLDS}}
    iou = pair_iou(inter, union)
    out = {"miou": 100.0 * float(iou.mean()),
           "oiou": 100.0 * float(inter.sum() / union.sum()) if union.sum() > 0 else 0.0}
    for t in THRESHOLDS:
        out[f"prec@{t}"] = 100.0 * float((iou >= t).mean())
    return out


def summarise_groups(pairs: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """`summarise` per group of a frame with columns `inter`, `union` and the `by` columns."""
    rows = []
    for key, grp in pairs.groupby(by, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        rows.append({**dict(zip(by, key, strict=True)), "n": len(grp),
                     **summarise(grp["inter"].to_numpy(), grp["union"].to_numpy())})
    return pd.DataFrame(rows)
