"""StyleGRU's figures: Figure 1 on our data (style-flow variance, fake / real, per level), ROC curves per
held-out set, a strip of real and fake frames with their style-flow magnitude, the encoder's per-level R²
and the training curves. Each returns PNG bytes (core.reporting.figure_png)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from cvpr24.core.reporting import figure_png  # noqa: E402
from cvpr24.pipelines.stylegru import synth as S  # noqa: E402

GROUP_OF = {lvl: g for g, lvls in S.GROUPS.items() for lvl in lvls}


def figure_flow_variance(flow: pd.DataFrame, dpi: int = 110) -> bytes:
    """Figure 1 on our data: var(flow fake) / var(flow real) per level for every generator (encoder latents);
    the levels a generator smooths are filled, the others hatched; lines at the claim's 0.8 and at 1."""
    sub = flow[flow["latents"] == "encoder"]
    gens = list(dict.fromkeys(sub["method"]))
    cols = min(4, max(1, len(gens)))
    rows = int(np.ceil(len(gens) / cols)) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False, sharey=True)
    for ax, g in zip(axes.flat, gens, strict=False):
        d = sub[sub["method"] == g].sort_values("level")
        smooth = set(S.SMOOTHED_LEVELS.get(g, ()))
        colours = ["tab:red" if lvl in smooth else "tab:grey" for lvl in d["level"]]
        ax.bar(d["level"], d["ratio"], color=colours)
        ax.axhline(0.8, color="k", ls="--", lw=0.8)
        ax.axhline(1.0, color="k", lw=0.5)
        ax.set_title(g, fontsize=9)
        ax.set_xticks(range(len(d)))
        ax.set_xlabel("style level (0-2 coarse, 3-5 middle, 6-8 fine)", fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("flow variance fake / real")
    for ax in list(axes.flat)[len(gens):]:
        ax.axis("off")
    fig.suptitle("Style-flow variance of fakes relative to reals (red: levels the generator smooths)", fontsize=10)
    fig.tight_layout()
    return figure_png(fig, dpi)


def figure_roc(curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray, float]]], dpi: int = 110) -> bytes:
    """ROC curves per held-out set: {set: {row: (fpr, tpr, auc)}} (one seed)."""
    sets = list(curves)
    fig, axes = plt.subplots(1, max(1, len(sets)), figsize=(3.2 * max(1, len(sets)), 3.2), squeeze=False)
    for ax, s in zip(axes.flat, sets, strict=False):
        for row, (fpr, tpr, auc) in curves[s].items():
            ax.plot(fpr, tpr, label=f"{row} ({auc:.1f})", lw=1.2)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.5, ls=":")
        ax.set_title(s, fontsize=9)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.legend(fontsize=6, loc="lower right")
    fig.suptitle("Video-level ROC on the held-out generators (first seed; AUC % in the legend)", fontsize=10)
    fig.tight_layout()
    return figure_png(fig, dpi)


def figure_strip(frames: np.ndarray, latents: np.ndarray, names: list[str], dpi: int = 110) -> bytes:
    """Per clip (rows): four frames and the style-flow magnitude per level group over time."""
    n = len(names)
    fig, axes = plt.subplots(n, 5, figsize=(10, 1.9 * max(1, n)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 1, 1, 2.5]})
    t = frames.shape[1]
    for i in range(n):
        for j, k in enumerate(np.linspace(0, t - 1, 4).astype(int)):
            axes[i, j].imshow(frames[i, k])
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
            axes[i, j].set_title(f"t={k}", fontsize=7)
        axes[i, 0].set_ylabel(names[i], fontsize=7)
        flow = np.linalg.norm(np.diff(latents[i], axis=0), axis=-1)     # (T-1, L)
        for g, lvls in S.GROUPS.items():
            axes[i, 4].plot(flow[:, list(lvls)].mean(1), label=g, lw=1)
        axes[i, 4].set_xlabel("frame step")
        axes[i, 4].set_ylabel("|flow|", fontsize=7)
        axes[i, 4].legend(fontsize=6)
    fig.suptitle("Real and fake clips: frames and the encoder's style-flow magnitude per level group", fontsize=10)
    fig.tight_layout()
    return figure_png(fig, dpi)


def figure_training(history: pd.DataFrame, encoder: pd.DataFrame, r2: np.ndarray, dpi: int = 110) -> bytes:
    """Encoder loss and per-level R²; stage-1 and stage-2 training loss of the main jobs (first seed)."""
    fig, axes = plt.subplots(1, 3, figsize=(11, 3))
    if not encoder.empty:
        axes[0].plot(encoder["step"], encoder["loss"])
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("MSE")
    axes[0].set_title("style encoder (pSp substitute)", fontsize=9)
    axes[1].bar(range(len(r2)), r2, color=[{"coarse": "tab:blue", "middle": "tab:orange", "fine": "tab:green"}
                                           [GROUP_OF.get(i, "coarse")] for i in range(len(r2))])
    axes[1].axhline(0.8, color="k", ls="--", lw=0.8)
    axes[1].set_xlabel("style level")
    axes[1].set_ylabel("R² (held-out frames)")
    axes[1].set_title("encoder R² per level (dashed: 0.8)", fontsize=9)
    for job in sorted({j for j in history["job_id"].unique() if j.endswith("/s0") or "/s" not in j}):
        if job.split("/")[0] in ("s1_flow_total_triplet", "s2_full", "s2_content"):
            h = history[history["job_id"] == job]
            axes[2].plot(h["step"], h["loss"], label=job.split("/")[0], lw=1)
    axes[2].set_xlabel("step")
    axes[2].set_ylabel("training loss")
    axes[2].set_title("stage 1 / stage 2 (first seed)", fontsize=9)
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    return figure_png(fig, dpi)
