"""DDPS's figures (display patterns, normal maps, error against N, training curves) as PNG bytes."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cvpr24.core.reporting import figure_png
from cvpr24.core.seeding import derive_seed
from cvpr24.pipelines.ddps import model as M
from cvpr24.pipelines.ddps.nodes import FAMILY_LABELS, best_heuristic, init_runs, main_condition, summarize


def figure_patterns(patterns: dict[str, np.ndarray], runs: pd.DataFrame, dpi: int, seed: int) -> bytes:
    """Every N = 4 learning run: its initial pattern and the learned one, as 9 x 16 display images."""
    import matplotlib.pyplot as plt

    sel = runs[(runs["n_patterns"] == 4)]
    n_rows = len(sel)
    fig, axes = plt.subplots(n_rows, 9, figsize=(13, 1.05 * n_rows + 0.6), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 1, 1, 0.25, 1, 1, 1, 1]})
    for r, run in enumerate(sel.to_dict("records")):
        p0 = M.initial_pattern(run["init"], 4, seed=derive_seed(seed, "pattern", run["init"]))
        p1 = patterns[run["run_id"]]
        for k in range(4):
            for ax, p, title in ((axes[r, k], p0, "initial"), (axes[r, 5 + k], p1, "learned")):
                ax.imshow(np.clip(p[k], 0, 1), interpolation="nearest")
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(f"{title} pattern {k + 1}", fontsize=7)
        axes[r, 4].axis("off")
        label = run["run_id"].removeprefix("learned_n4_")
        axes[r, 0].set_ylabel(label, fontsize=6, rotation=0, ha="right", va="center")
    fig.suptitle("DDPS display patterns (9 x 16 superpixels, display values in [0, 1] shown as RGB): initial → learned",
                 fontsize=9)
    return figure_png(fig, dpi)


def _normal_rgb(n: np.ndarray) -> np.ndarray:
    return np.clip((-n + 1) / 2, 0, 1)  # the official visualisation of camera-facing normals


def figure_normals(maps: dict[str, np.ndarray], per_scene: pd.DataFrame, mi: dict[str, np.ndarray],
                   evaluate: dict[str, Any], n_scenes: int, dpi: int) -> bytes:
    """Normal maps (ground truth and each figure pattern set) and their angular-error maps on test scenes."""
    import matplotlib.pyplot as plt

    keys = [k for k in evaluate.get("figure_patterns", []) if k.replace(":", "__") in maps]
    names = [str(x) for x in mi["test_names"]][:n_scenes]
    h, w = (int(v) for v in mi["image_shape"])
    cond = main_condition(per_scene)
    fig, axes = plt.subplots(2 * len(names), len(keys) + 1, figsize=(2.6 * (len(keys) + 1), 4.6 * len(names)),
                             squeeze=False)
    im = None
    for s, name in enumerate(names):
        gt = mi["test_normals_full"][s]
        mask = mi["test_mask_full"][s]
        axes[2 * s, 0].imshow(_normal_rgb(gt) * mask[..., None])
        axes[2 * s, 0].set_title(f"ground truth\n{name}", fontsize=7)
        axes[2 * s + 1, 0].axis("off")
        pix, valid = mi["test_pix"][s], mi["test_valid"][s]
        for c, key in enumerate(keys, start=1):
            pred = np.zeros((h * w, 3), np.float32)
            pred[pix[valid]] = maps[key.replace(":", "__")][s][valid]
            err = np.full(h * w, np.nan)
            err[pix[valid]] = M.angular_error_deg(maps[key.replace(":", "__")][s][valid],
                                                  mi["test_normals"][s][valid])
            hit = per_scene[(per_scene["pattern"] == key) & (per_scene["scene"] == name) & (per_scene["condition"] == cond)]
            label = key.replace("learned:learned_n4_", "learned (init ").replace("heuristic:", "")
            label = label + ")" if label.startswith("learned (") else label
            shown = _normal_rgb(pred) * (np.abs(pred).sum(-1, keepdims=True) > 0)  # background black
            axes[2 * s, c].imshow(shown.reshape(h, w, 3))
            axes[2 * s, c].set_title(f"{label}\nmean {hit['mean_err'].iloc[0]:.1f}°" if len(hit) else label, fontsize=7)
            im = axes[2 * s + 1, c].imshow(err.reshape(h, w), cmap="magma", vmin=0, vmax=45)
            axes[2 * s + 1, c].set_title("angular error (deg)", fontsize=7)
        for ax in axes[2 * s: 2 * s + 2].ravel():
            ax.set_xticks([])
            ax.set_yticks([])
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.5, label="angular error (degrees)")
    fig.suptitle(f"Normals on held-out test objects ({cond} test; eroded object pixels only)", fontsize=9)
    return figure_png(fig, dpi)


def error_vs_n(per_scene: pd.DataFrame, runs: pd.DataFrame, evaluate: dict[str, Any]) -> pd.DataFrame:
    """Mean error against N: the learned patterns, the best heuristic family and the initial family."""
    summary, cond = summarize(per_scene), main_condition(per_scene)
    tri = init_runs(runs, evaluate["main_run"])
    init = runs.set_index("run_id").loc[evaluate["main_run"], "init"]

    def err(pattern: str) -> float:
        sub = summary[(summary["pattern"] == pattern) & (summary["condition"] == cond)]
        return float(sub["mean_err"].iloc[0]) if len(sub) else float("nan")

    rows = []
    for n in sorted(evaluate["n_list"]):
        if n in tri:
            rows.append({"n_patterns": n, "series": "learned", "mean_err_deg": err(f"learned:{tri[n]}")})
        bh = best_heuristic(summary, n, cond)
        if bh is not None:
            rows.append({"n_patterns": n, "series": "best heuristic (at N > 4 only the random families exist)",
                         "mean_err_deg": float(bh["mean_err"])})
        rows.append({"n_patterns": n, "series": f"{FAMILY_LABELS[init]} (initial)",
                     "mean_err_deg": err(f"heuristic:{init}:N{n}")})
    return pd.DataFrame(rows)


def figure_error_vs_n(curve: pd.DataFrame, dpi: int) -> bytes:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    for series, sub in curve.groupby("series", sort=False):
        ax.plot(sub["n_patterns"], sub["mean_err_deg"], marker="o", label=series)
    ax.set_xlabel("number of display patterns N (total capture time fixed)")
    ax.set_ylabel("mean angular error (degrees)")
    ax.set_xticks(sorted(curve["n_patterns"].unique()))
    ax.set_title("Error against number of patterns (embedded test render)\n"
                 "paper's numbers not found, so no paper curve is drawn", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return figure_png(fig, dpi)


def figure_training(history: pd.DataFrame, dpi: int) -> bytes:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.8))
    for job, sub in history.groupby("job_id"):
        if "_n4_" in job and job.count("_") <= 4:
            ax.plot(sub["step"], sub["loss"].rolling(12, min_periods=1).mean(), lw=1, label=job.removeprefix("learned_n4_"))
    ax.set_xlabel("optimisation step (batch of 2 scenes)")
    ax.set_ylabel("training loss (1 − cos)/2, 12-step mean")
    ax.set_yscale("log")
    ax.set_title("Pattern learning from different initialisations (N = 4)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    return figure_png(fig, dpi)
