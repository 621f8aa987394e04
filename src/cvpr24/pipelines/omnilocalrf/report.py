"""OmniLocalRF's claim measurements and figures; core renders the tables, verdicts and the README.

`measure_claims` returns each claim of `pipelines/omnilocalrf/paper.yaml` per test frame (or as one value per run);
every number comes from the evaluate phase's renders of the trained runs.
"""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from cvpr24.core.claims import Measurement, evaluate_claims  # noqa: E402
from cvpr24.core.reporting import Figure, build_report, figure_png  # noqa: E402
from cvpr24.pipelines.omnilocalrf import metrics as MT  # noqa: E402
from cvpr24.pipelines.omnilocalrf.nodes import per_frame  # noqa: E402


def _frames(s: pd.Series, detail: str) -> Measurement:
    return Measurement({f"frame {k}": float(v) for k, v in s.items()}, detail)


def _one(value: float, detail: str) -> Measurement:
    return Measurement({"scene": float(value)}, detail)


def measure_claims(scores: pd.DataFrame, runs: pd.DataFrame) -> dict[str, Measurement]:
    have = set(scores["row"]) if not scores.empty else set()
    r = runs.set_index("row")

    def p(row: str, metric: str = "psnr") -> pd.Series:
        return per_frame(scores, row, metric)

    def missing(*names: str) -> Measurement | None:
        gone = [n for n in names if n not in have]
        return Measurement({}, note=f"{', '.join(gone)} not run in this profile") if gone else None

    def diff(cid: str, a: str, b: str, metric: str = "psnr") -> None:
        m[cid] = missing(a, b) or _frames(p(a, metric) - p(b, metric),
                                          f"{metric.upper()} {p(a, metric).mean():.2f} ({a}) vs "
                                          f"{p(b, metric).mean():.2f} dB ({b})")

    m: dict[str, Measurement] = {}
    diff("C1", "full", "localrf")
    diff("C1b", "full", "localrf", "dyn_psnr")
    diff("C2", "full", "no_mask")
    diff("C2b", "full", "no_eq11")
    if "no_eq11" in r.index and "full" in r.index and "mask_uncertainty" in r.columns:
        a, b = float(r.loc["no_eq11", "mask_uncertainty"]), float(r.loc["full", "mask_uncertainty"])
        m["C2c"] = _one(a - b, f"mean M(1 - M) over the training pixels: {a:.4f} without Eq. 11, {b:.4f} full")
    else:
        m["C2c"] = Measurement({}, note="no_eq11 or full not run in this profile")
    diff("C3", "full", "no_eq7")
    if not missing("no_forward", "no_backward", "no_eq7"):
        best = np.minimum(p("no_forward"), p("no_backward"))
        m["C3b"] = _frames(best - p("no_eq7"), f"PSNR (a) {p('no_forward').mean():.2f}, (c) "
                                               f"{p('no_backward').mean():.2f}, (b) {p('no_eq7').mean():.2f} dB")
    else:
        m["C3b"] = missing("no_forward", "no_backward", "no_eq7")
    diff("C4", "no_forward", "full")
    diff("C4b", "no_backward", "full")
    for cid, key, what in (("C5", "mask_iou", "all dynamic objects"),
                           ("C5b", "mask_iou_photographer", "the photographer")):
        if "full" in r.index and key in r.columns and not pd.isna(r.loc["full", key]):
            m[cid] = _one(float(r.loc["full", key]), f"IoU of M > 0.5 with the true mask of {what}, training frames")
        else:
            m[cid] = Measurement({}, note="the full run (with its mask module) is not in this profile")
    diff("C6", "full_static", "full")
    diff("C6b", "full_static", "full")
    if {"full", "localrf"} <= set(r.index) and "ate" in r.columns:
        a, b = float(r.loc["localrf", "ate"]), float(r.loc["full", "ate"])
        m["C7"] = _one(a - b, f"ATE {b:.4f} (full) vs {a:.4f} (LocalRF equivalent)")
    else:
        m["C7"] = Measurement({}, note="full or localrf not run in this profile")
    if {"full", "full_static"} <= set(r.index) and "ate" in r.columns:
        a, b = float(r.loc["full", "ate"]), float(r.loc["full_static", "ate"])
        m["C7b"] = _one(a / b if b > 0 else np.nan, f"ATE {a:.4f} on the dynamic video vs {b:.4f} on the static twin")
    else:
        m["C7b"] = Measurement({}, note="full or full_static not run in this profile")
    if not scores.empty:
        gap = (scores["psnr_ws"] - scores["psnr"]).abs()
        m["S1"] = Measurement({f"{a} frame {b}": float(v) for a, b, v in zip(scores["row"], scores["frame"], gap,
                                                                            strict=True)},
                              f"largest |PSNR_WS - PSNR| {gap.max():.2f} dB over every run and test frame")
    else:
        m["S1"] = Measurement({}, note="no scores")
    return m


# ------------------------------------------------------------------------------------------- figures
def _panel(ax, img, title: str, xlabel: str = "") -> None:
    ax.imshow(img)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=7)
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=7)


def figure_panoramas(renders: dict[str, np.ndarray], scores: pd.DataFrame, test_frames: list[int], dpi: int,
                     k: int = 2) -> bytes:
    cols = [("input", "input (photographer, pedestrians)"), ("full", "OmniLocalRF (ours)"),
            ("localrf", "LocalRF equivalent"), ("gt_static", "static ground truth")]
    cols = [c for c in cols if c[0] in renders]
    n = min(k, len(test_frames))
    fig, axes = plt.subplots(n, len(cols), figsize=(3.0 * len(cols), 1.75 * n), squeeze=False)
    for i in range(n):
        for j, (key, label) in enumerate(cols):
            xl = ""
            if key in ("full", "localrf"):
                s = scores[(scores["row"] == key) & (scores["frame"] == test_frames[i])]
                if not s.empty:
                    xl = f"PSNR {float(s['psnr'].iloc[0]):.2f} dB, dynamic px {float(s['dyn_psnr'].iloc[0]):.2f} dB"
            _panel(axes[i, j], renders[key][i], label if i == 0 else "", xl)
        axes[i, 0].set_ylabel(f"test frame {test_frames[i]}", fontsize=7)
    fig.tight_layout()
    return figure_png(fig, dpi)


def figure_mask(renders: dict[str, np.ndarray], runs: pd.DataFrame, dpi: int, frames: tuple[int, ...] = (2, 9)
                ) -> bytes | None:
    if "mask_full" not in renders or "gt_dyn" not in renders:
        return None
    r = runs.set_index("row")
    picks = [f for f in frames if f < len(renders["mask_full"])] or [0]
    fig, axes = plt.subplots(len(picks), 3, figsize=(9, 1.75 * len(picks)), squeeze=False)
    for i, f in enumerate(picks):
        _panel(axes[i, 0], renders["train_input"][f], "training frame" if i == 0 else "")
        axes[i, 1].imshow(renders["mask_full"][f], cmap="magma", vmin=0, vmax=255)
        axes[i, 1].set_xticks([])
        axes[i, 1].set_yticks([])
        if i == 0:
            axes[i, 1].set_title(f"learned mask M (IoU {float(r.loc['full', 'mask_iou']):.2f} over all training "
                                 "frames)", fontsize=7)
        _panel(axes[i, 2], renders["gt_dyn"][f], "true dynamic mask" if i == 0 else "")
        axes[i, 2].images[0].set_cmap("gray")
    fig.tight_layout()
    return figure_png(fig, dpi)


def figure_paths(renders: dict[str, np.ndarray], runs: pd.DataFrame, dpi: int) -> bytes | None:
    if "gt_c2w" not in renders:
        return None
    gt = renders["gt_c2w"]
    r = runs.set_index("row")
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.plot(gt[:, 0, 3], gt[:, 2, 3], "k-o", ms=3, lw=1.5, label="true path")
    for name, colour in (("full", "tab:blue"), ("localrf", "tab:orange")):
        key = f"c2w_{name}"
        if key not in renders:
            continue
        aligned, _ = MT.align_poses(renders[key], gt)
        ate = float(r.loc[name, "ate"]) if name in r.index else float("nan")
        ax.plot(aligned[:, 0, 3], aligned[:, 2, 3], "-x", ms=3, lw=1, color=colour,
                label=f"{'OmniLocalRF' if name == 'full' else 'LocalRF equivalent'} (ATE {ate:.3f})")
    ax.set_xlabel("x (scene units; the street's width axis)")
    ax.set_ylabel("z (scene units; walking direction)")
    ax.set_title("Camera paths seen from above, estimates after Sim(3) alignment", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_aspect("equal", adjustable="datalim")
    fig.tight_layout()
    return figure_png(fig, dpi)


def figure_training(history: pd.DataFrame, dpi: int) -> bytes | None:
    if history.empty or "psnr" not in history:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 3.2))
    for name in ("full", "localrf", "no_mask", "no_eq7"):
        h = history[(history["run"] == name) & history["psnr"].notna()]
        if not h.empty:
            ax.plot(h["step"], h["psnr"].rolling(5, min_periods=1).mean(), lw=1, label=name)
    ax.set_xlabel("iteration")
    ax.set_ylabel("training-batch PSNR (dB, input frames)")
    ax.set_title("Training: PSNR of the composited colour on the input batch (rolling mean of 5 logs)", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return figure_png(fig, dpi)


def render(scores: pd.DataFrame, runs: pd.DataFrame, renders: dict[str, np.ndarray], train_log: pd.DataFrame,
           history: pd.DataFrame, rows: pd.DataFrame, model_input: dict[str, np.ndarray], paper: dict[str, Any],
           params: dict[str, Any], runtime: dict[str, Any]) -> dict[str, str | bytes]:
    """All report files as {relative path: content}: measurements and figures here, the rest core's."""
    dpi = int(params.get("figure_dpi", 110))
    claims = evaluate_claims(paper, measure_claims(scores, runs))
    test_frames = [int(k) for k in np.flatnonzero(model_input["on_test"])]
    figures = [Figure("panoramas", "Test panoramas: the input frame (photographer and pedestrians), OmniLocalRF, "
                                   "the LocalRF equivalent (mask module and bidirectional step off) and the static "
                                   "ground truth; PSNR over the whole frame and over the true dynamic pixels.",
                      figure_panoramas(renders, scores, test_frames, dpi))]
    for name, caption, png in (
            ("mask", "The motion mask M learned by the full model on training frames, beside the true dynamic "
                     "pixels (photographer and pedestrians).", figure_mask(renders, runs, dpi)),
            ("camera_paths", "Estimated camera centres (x-z plane) of the full model and the LocalRF equivalent, "
                             "Sim(3)-aligned to the true path.", figure_paths(renders, runs, dpi)),
            ("training", "Training-batch PSNR against iterations (the input frames, dynamic objects included).",
             figure_training(history, dpi))):
        if png is not None:
            figures.append(Figure(name, caption, png))
    per_run = train_log.merge(runs, left_on="run", right_on="row", how="left", suffixes=("", "_eval"))
    keep = [c for c in ("run", "variant", "iterations", "rfs", "seconds", "cached", "eval_seconds", "ate", "rpe_t",
                        "rpe_r", "mask_iou", "mask_iou_photographer", "mask_uncertainty") if c in per_run.columns]
    sections = [("Runs", "One row per run: iterations of the progressive schedule, local RFs allocated, training and "
                         "evaluation seconds (0 / cached when the job cache held the result), pose errors and mask "
                         "quality:\n\n" + per_run[keep].round(4).to_markdown(index=False))]
    files = {"scores.csv": scores.to_csv(index=False), "runs.csv": runs.to_csv(index=False)}
    return build_report("omnilocalrf", paper, rows, claims, profile=runtime.get("profile", "base"), figures=figures,
                        sections=sections, files=files)
