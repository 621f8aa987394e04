"""vid-TLDR's figures: accuracy against GFLOPs for every setting, and one clip with its saliency and merged
token groups. PNG bytes; the report node hands them to core's `build_report`."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cvpr24.core.reporting import figure_png
from cvpr24.pipelines.vidtldr.data import CLASSES


def curve(sweep: pd.DataFrame, family: str, col: str = "acc_test") -> pd.DataFrame:
    """One method's accuracy curve, the unmerged model included, sorted by GFLOPs."""
    base = sweep[sweep["setting_id"] == "base"]
    return pd.concat([base, sweep[sweep["family"] == family]]).sort_values("gflops")[["gflops", col, "row"]]


COLORS = {"base": "black", "vidtldr": "tab:red", "tome": "tab:blue"}


def figure_accuracy_vs_gflops(sweep: pd.DataFrame, dpi: int) -> bytes:
    import matplotlib.pyplot as plt

    splits = [c for c in ("acc_test", "acc_clutter") if c in sweep and sweep[c].notna().any()]
    fig, axes = plt.subplots(1, len(splits), figsize=(5.4 * len(splits), 4.0), squeeze=False)
    names = {"acc_test": "test split", "acc_clutter": "clutter test split"}
    for ax, col in zip(axes[0], splits, strict=True):
        for fam, label in (("vidtldr", "vid-TLDR (front-loaded schedules)"), ("tome", "ToMe (constant r per layer)")):
            c = curve(sweep, fam, col)
            ax.plot(c["gflops"] * 1e3, c[col], marker="o", color=COLORS[fam], label=label)
        for variant, marker, label in (("tome_schedule", "s", "ToMe with vid-TLDR's schedule"),
                                       ("no_saliency", "^", "vid-TLDR without saliency"),
                                       ("no_background_drop", "v", "vid-TLDR without background drop"),
                                       ("random", "x", "random drop"), ("evit", "+", "EViT-style pruning")):
            sub = sweep[sweep["variant"] == variant]
            if not sub.empty:
                ax.scatter(sub["gflops"] * 1e3, sub[col], marker=marker, s=36, label=label, zorder=3)
        b = sweep[sweep["setting_id"] == "base"].iloc[0]
        ax.axhline(b[col], color="grey", lw=0.8, ls="--", label="no merging")
        ax.set_xlabel("MFLOPs per clip (1 multiply-add = 1 FLOP; analytic)")
        ax.set_ylabel(f"top-1 accuracy (%), {names[col]}")
        ax.set_title(f"Accuracy vs cost, salient-sprites {names[col]}", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle("vid-TLDR vs ToMe on the same trained tiny video ViT (paper's numbers for this plot: not found)",
                 fontsize=9)
    return figure_png(fig, dpi)


def figure_saliency(example: dict[str, np.ndarray], model: dict[str, Any], dpi: int) -> bytes:
    import matplotlib.pyplot as plt

    frames = example["frames"]
    t, hw = frames.shape[0], frames.shape[1]
    kt, kp = int(model["tubelet"]), int(model["patch"])
    gt, gh = t // kt, hw // kp

    def up(v: np.ndarray) -> np.ndarray:  # token values (N0,) -> per-frame pixels (T, H, W)
        g = v.reshape(gt, gh, gh)
        return np.repeat(np.repeat(np.repeat(g, kt, 0), kp, 1), kp, 2)

    sharp, sal, fg, groups = up(example["sharpness0"]), up(example["saliency0"]), up(example["fg"]), example["groups"]
    rng = np.random.default_rng(0)
    palette = rng.uniform(0.15, 1.0, size=(max(1, int(groups.max()) + 1), 3))
    gimg = np.where(groups[:, None] >= 0, palette[np.maximum(groups, 0)], 0.35).reshape(gt, gh, gh, 3)
    gimg = np.repeat(np.repeat(np.repeat(gimg, kt, 0), kp, 1), kp, 2)
    show = list(range(0, t, kt))
    fig, axes = plt.subplots(4, len(show), figsize=(2.1 * len(show), 8.6), squeeze=False)
    for c, f in enumerate(show):
        axes[0, c].imshow(frames[f])
        axes[0, c].contour(fg[f] >= 0.25, levels=[0.5], colors="white", linewidths=0.8)
        axes[0, c].set_title(f"frame {f}", fontsize=8)
        axes[1, c].imshow(frames[f])
        im = axes[1, c].imshow(sharp[f], cmap="inferno", alpha=0.6, vmin=0, vmax=1)
        axes[2, c].imshow(sal[f], cmap="inferno", vmin=0, vmax=1)
        axes[3, c].imshow(frames[f])
        axes[3, c].imshow(gimg[f], alpha=0.55)
        for r in range(4):
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
    axes[0, 0].set_ylabel("clip (white: object tokens)", fontsize=8)
    axes[1, 0].set_ylabel("layer-0 sharpness\n(min-max, 0-1)", fontsize=8)
    axes[2, 0].set_ylabel("vid-TLDR saliency\n(background = 0)", fontsize=8)
    axes[3, 0].set_ylabel("merged token groups\n(grey: dropped)", fontsize=8)
    fig.colorbar(im, ax=axes[1:3, :].ravel().tolist(), shrink=0.6, label="score (unitless, 0-1)")
    lab, pred = CLASSES[int(example["label"][0])], CLASSES[int(example["pred"][0])]
    fig.suptitle(f"Saliency and merging on one test clip (class {lab}, predicted {pred}; "
                 f"tokens per block {example['tokens'].tolist()})", fontsize=9)
    return figure_png(fig, dpi)
