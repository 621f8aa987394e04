"""BUS's figures: the paper's Figure-1 view (target images, ground truth, predictions), per-class IoU beside the
paper's numbers, scores against the confidence threshold, and the training losses. Each returns PNG bytes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cvpr24.core.reporting import figure_png
from cvpr24.pipelines.bus.labels import CLASS_NAMES, PRIVATE_ID
from cvpr24.pipelines.bus.nodes import VARIANTS, summarise

# Cityscapes colours of the 13 common classes; `private` in one marked colour (pure yellow), ignore black
PALETTE = np.array([
    (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153), (250, 170, 30),
    (107, 142, 35), (152, 251, 152), (70, 130, 180), (0, 0, 142), (0, 60, 100), (0, 0, 230), (119, 11, 32),
    (255, 255, 0),
], np.uint8)
PRIVATE_COLOUR_NAME = "yellow"


def colourise(labels: np.ndarray) -> np.ndarray:
    out = np.zeros((*labels.shape, 3), np.uint8)
    known = labels < len(PALETTE)
    out[known] = PALETTE[labels[known]]
    return out



def figure_examples(examples: dict[str, np.ndarray], dpi: int) -> bytes:
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    cols = [("image", "target image"), ("gt", "ground truth"),
            ("pred_source_only_thr", "source only + threshold"),
            ("pred_st_thr", "self-training + threshold"), ("pred_bus", "BUS")]
    cols = [c for c in cols if c[0] in examples]
    n = len(examples["image"])
    fig, axes = plt.subplots(max(n, 1), len(cols), figsize=(2.0 * len(cols), 2.1 * max(n, 1)), squeeze=False)
    for r in range(n):
        gt = examples["gt"][r]
        for c, (key, title) in enumerate(cols):
            ax = axes[r, c]
            arr = examples[key][r]
            ax.imshow(arr if key == "image" else colourise(arr), interpolation="nearest")
            if key.startswith("pred_"):
                priv = gt == PRIVATE_ID
                hit = float((arr[priv] == PRIVATE_ID).mean()) if priv.any() else float("nan")
                title = f"{title}\nprivate recall {100 * hit:.0f}%"
            if r == 0 or key.startswith("pred_"):
                ax.set_title(title, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    handles = [Patch(color=PALETTE[k] / 255.0, label=CLASS_NAMES[k]) for k in range(len(CLASS_NAMES))]
    handles.append(Patch(color="black", label="ignore (255)"))
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=6, frameon=False, bbox_to_anchor=(0.5, -0.06))
    fig.suptitle(f"Target val images (seed 0): private pixels in {PRIVATE_COLOUR_NAME} (the paper's Figure 1 view)",
                 fontsize=9)
    return figure_png(fig, dpi)


def figure_iou_bars(per_run: pd.DataFrame, paper: dict[str, Any], dpi: int) -> bytes:
    import matplotlib.pyplot as plt

    s = summarise(per_run)
    show = [v for v in ("source_only_thr", "st_thr", "bus") if v in s.index]
    x = np.arange(len(CLASS_NAMES))
    width = 0.8 / max(1, len(show))
    fig, ax = plt.subplots(figsize=(10, 3.8))
    for i, v in enumerate(show):
        means = [float(s.loc[v, f"iou_{k}_mean"]) for k in range(len(CLASS_NAMES))]
        stds = [float(s.loc[v, f"iou_{k}_std"]) for k in range(len(CLASS_NAMES))]
        ax.bar(x + (i - (len(show) - 1) / 2) * width, np.nan_to_num(means), width, yerr=np.nan_to_num(stds), capsize=1.5,
               label=f"ours: {VARIANTS[v]['label']}")
    rows = {r["method"]: r for r in paper["tables"]["table_supp_baselines"]["rows"]}
    for name, marker in (("DAFormer (DAF)", "v"), ("DAF + BUS", "^")):
        r = rows.get(name, {})
        vals = [r.get(f"iou_{k}") for k in range(PRIVATE_ID)] + [r.get("private")]
        ys = [float(v) if isinstance(v, int | float) else np.nan for v in vals]
        ax.plot(x, ys, linestyle="none", marker=marker, color="k", markersize=5,
                label=f"paper, GTA5→Cityscapes: {name}")
    ax.set_xticks(x, CLASS_NAMES, rotation=40, ha="right", fontsize=8)
    ax.set_ylabel("IoU (%) on target val")
    ax.set_ylim(0, 100)
    ax.set_title("Per-class IoU (mean over seeds, error bar = std); black markers: the paper's numbers "
                 "(real data, not comparable in level)", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.3), frameon=False)
    return figure_png(fig, dpi)


def sweep_curve(sweep: pd.DataFrame) -> pd.DataFrame:
    if sweep.empty:
        return sweep
    return sweep.groupby(["variant", "threshold"], as_index=False)[["common", "private", "h_score"]].mean()


def figure_threshold(curve: pd.DataFrame, train_thres: float, dpi: int) -> bytes:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.9), sharex=True)
    for ax, metric, title in zip(axes, ("h_score", "common", "private"), ("H-Score", "Common (mIoU of 13)", "Private IoU"),
                                 strict=True):
        for variant, sub in curve.groupby("variant"):
            ax.plot(sub["threshold"], sub[metric], marker="o", markersize=3, label=VARIANTS[variant]["label"])
        ax.axvline(train_thres, color="grey", linestyle=":", linewidth=1)
        ax.set_xlabel("test-time threshold t (max softmax ≤ t → private)", fontsize=8)
        ax.set_ylabel(f"{title} (%)")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False, bbox_to_anchor=(0.5, -0.08))
    fig.suptitle(f"Scores against the confidence threshold (target val, mean over seeds); dotted: pseudo_thres = "
                 f"{train_thres:g} (paper's value)", fontsize=9)
    fig.tight_layout()
    return figure_png(fig, dpi)


def figure_losses(history: pd.DataFrame, dpi: int) -> bytes:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for job_id, sub in history.groupby("job_id"):
        if job_id.startswith("pretrain"):
            axes[0].plot(sub["step"], sub["loss_src"], label=job_id, linewidth=1)
        elif job_id.endswith("_s0") and "loss_mix" in sub:
            axes[1].plot(sub["step"], sub["loss_mix"], label=job_id, linewidth=1)
    axes[0].set_title("source-only pretraining", fontsize=9)
    axes[1].set_title("self-training runs (seed 0): mixed-image loss", fontsize=9)
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.set_ylabel("cross-entropy (nats)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6)
    return figure_png(fig, dpi)


def private_share_curve(history: pd.DataFrame) -> pd.DataFrame:
    """Per self-training row and logged step, the mean over seeds (and the seeds' std) of the private class's
    label-free training signals (method.private_signals): the teacher's private pseudo-label share, the
    student's private prediction share and the private supervision reaching the student through the
    mixed images and attaching private. Empty when the history has none (e.g. an older cached run)."""
    cols = [c for c in ("pl_private", "pred_private", "sup_mix", "sup_mic", "sup_ap") if c in history]
    if history.empty or "pl_private" not in cols:
        return pd.DataFrame(columns=["variant", "step"])
    st = history[~history["job_id"].str.startswith("pretrain")].copy()
    st["variant"] = st["job_id"].str.rsplit("_s", n=1).str[0]
    g = st.groupby(["variant", "step"])[cols]
    out = g.mean().join(g.std(ddof=1).add_suffix("_std")).reset_index()
    out.insert(2, "n_seeds", g.size().to_numpy())
    return out


def figure_private_share(curve: pd.DataFrame, dpi: int) -> bytes:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2), sharey=True)
    for variant, sub in curve.groupby("variant", sort=False):
        label = VARIANTS.get(variant, {"label": variant})["label"]
        axes[0].plot(sub["step"], 100 * sub["pl_private"], label=label, linewidth=1)
        axes[1].plot(sub["step"], 100 * sub["pred_private"], label=label, linewidth=1)
    axes[0].set_title("teacher: target pixels pseudo-labelled private", fontsize=9)
    axes[1].set_title("student: target pixels of the mixed image predicted private", fontsize=9)
    for ax in axes:
        ax.set_xlabel("self-training iteration")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("% of pixels (mean over seeds)")
    axes[1].legend(fontsize=6)
    return figure_png(fig, dpi)
