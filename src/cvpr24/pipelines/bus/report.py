"""BUS's measurements; core renders the tables, the claims' verdicts and the report (core/CONTRACT.md).

`measure_claims` returns each claim of `pipelines/bus/paper.yaml` once per seed (`{"seed 0": value, ...}`):
what a claim says, its threshold and its verdict are data and core's (`cvpr24.core.claims`). A row or seed
that did not run gives NaN, so the claim is N/A rather than decided on the other seeds. The figures are
drawn in `figures.py`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cvpr24.core.claims import Measurement, evaluate_claims
from cvpr24.core.reporting import Figure, build_report
from cvpr24.pipelines.bus.figures import (
    PRIVATE_COLOUR_NAME,
    figure_examples,
    figure_iou_bars,
    figure_losses,
    figure_private_share,
    figure_threshold,
    private_share_curve,
    sweep_curve,
)
from cvpr24.pipelines.bus.labels import CLASS_NAMES
from cvpr24.pipelines.bus.nodes import VARIANTS, per_seed

BASE = "st_thr"  # self-training + threshold: the row every part of BUS is compared with


def _mean(values: pd.Series) -> float:
    return float(values.mean(skipna=False)) if len(values) else float("nan")


def _seeds(diff: pd.Series) -> str:
    return "per seed " + ", ".join(f"{v:+.2f}" for v in diff.tolist())


def _gain(per_run: pd.DataFrame, variant: str, metric: str, base: str = BASE) -> Measurement:
    """metric(variant) − metric(base), per seed."""
    a, b = per_seed(per_run, variant, metric), per_seed(per_run, base, metric)
    d = a - b
    return Measurement(d, f"{_mean(a):.2f} vs {_mean(b):.2f} ({_seeds(d)})")


def measure_claims(per_run: pd.DataFrame) -> dict[str, Measurement]:
    """Each claim's quantity per seed; the claims themselves (threshold, direction, units) are in paper.yaml."""
    m: dict[str, Measurement] = {}
    p0, p1 = per_seed(per_run, "source_only", "private"), per_seed(per_run, "source_only_thr", "private")
    m["C1"] = Measurement(p1.where(p0 == 0, -p0), f"Private {_mean(p0):.2f} (closed set) → {_mean(p1):.2f} "
                                                   f"(+ threshold)")
    m["C2"] = _gain(per_run, "bus", "h_score")
    m["C3a"] = _gain(per_run, "st_decon", "private")
    m["C3b"] = _gain(per_run, "st_decon", "boundary_f")
    ro, ap, base = (per_seed(per_run, v, "private") for v in ("st_ro", "st_ap", BASE))
    worst = pd.concat([ro, ap], axis=1).min(axis=1, skipna=False) - base  # a NaN part stays NaN
    m["C4a"] = Measurement(worst, f"+RO {_mean(ro):.2f}, +AP {_mean(ap):.2f} vs {_mean(base):.2f} "
                                  f"({_seeds(worst)})")
    m["C4b"] = _gain(per_run, "st_ro", "small_object_iou")
    raw, ref = (per_seed(per_run, "st_refine", k) for k in ("pseudo_acc_raw", "pseudo_acc_refined"))
    m["C5"] = Measurement(ref - raw, f"{_mean(ref):.2f}% vs {_mean(raw):.2f}% ({_seeds(ref - raw)})")
    return m


def what_the_numbers_show(per_run: pd.DataFrame) -> str:
    """A few sentences written from the numbers themselves (means over seeds)."""
    s = per_run.groupby("variant").mean(numeric_only=True)
    if s["h_score"].isna().all():
        return "- No row has an H-Score in this run."
    best = s["h_score"].idxmax()
    lines = [f"- Best H-Score: **{VARIANTS[best]['label']}** ({s.loc[best, 'h_score']:.2f}; Common "
             f"{s.loc[best, 'common']:.2f}, Private {s.loc[best, 'private']:.2f})."]
    if {"source_only", BASE} <= set(s.index):
        lines.append(f"- Self-training moves Common from {s.loc['source_only', 'common']:.2f} (source only) to "
                     f"{s.loc[BASE, 'common']:.2f}; its open-set pseudo-labels leave Private at "
                     f"{s.loc[BASE, 'private']:.2f}.")
    if {BASE, "source_only_thr"} <= set(s.index) and s.loc[BASE, "private"] < 0.5 * s.loc["source_only_thr", "private"]:
        lines.append("- On this data and schedule the `private` output collapses during self-training: the student "
                     "never makes it its argmax, although the teacher keeps pseudo-labelling private pixels. Issue 13 "
                     "measured the two causes on the earlier default profile: a self-training schedule too short to "
                     "learn a new class (150 iterations did not learn it even from perfect private labels) and "
                     "private pseudo-labels that fell mostly on common-class pixels (class boundaries, confused "
                     "common classes), so that there was no consistent private class to learn from the target "
                     "(pipelines/bus/README.md).")
    moves = {v: float(s.loc[v, "private"] - s.loc[BASE, "private"])
             for v in ("st_refine", "st_decon", "st_ro", "st_ap", "bus") if v in s.index and BASE in s.index}
    moves = {v: d for v, d in moves.items() if np.isfinite(d)}  # a row without a value is not "the largest"
    if moves:
        top = max(moves, key=lambda v: abs(moves[v]))
        lines.append(f"- The largest move of Private by one of BUS's parts: {moves[top]:+.2f} points "
                     f"({VARIANTS[top]['label']}) over self-training + threshold; the claims' per-seed values say "
                     "whether that exceeds seed noise.")
    return "\n".join(lines)


def this_run(per_run: pd.DataFrame, job_log: pd.DataFrame, train: dict[str, Any], ev: dict[str, Any]) -> str:
    pre = job_log["job_id"].str.startswith("pretrain")
    cached = "; some jobs read back from the job cache" if job_log["cached"].any() else ""
    return (f"Data: {ev['data_label']}. Seeds {sorted(int(x) for x in per_run['seed'].unique())}; one source-only "
            f"network per seed ({int(train['pretrain']['iterations'])} iterations) gives both source-only rows "
            f"(closed set, and with the test-time threshold {ev['threshold']:g}) and initialises every "
            f"self-training run of that seed ({int(train['selftrain']['iterations'])} iterations each). Training "
            f"time: {job_log.loc[pre, 'seconds'].sum():.0f} s pretraining + {job_log.loc[~pre, 'seconds'].sum():.0f} s "
            f"self-training (CPU-seconds summed over jobs{cached}).")


def runs_table(per_run: pd.DataFrame) -> pd.DataFrame:
    runs = per_run.copy()
    runs.insert(1, "row", runs["variant"].map(lambda v: VARIANTS[v]["label"]))
    keep = ["variant", "row", "seed", "common", "private", "h_score", "boundary_f", "small_object_iou",
            "pseudo_acc_raw", "pseudo_acc_refined"]
    return runs[[c for c in keep if c in runs.columns] + [f"iou_{k}" for k in range(len(CLASS_NAMES))]]


def render(per_run: pd.DataFrame, sweep: pd.DataFrame, examples: dict[str, np.ndarray], rows: pd.DataFrame,
           job_log: pd.DataFrame, history: pd.DataFrame, paper: dict[str, Any], params: dict[str, Any],
           ev: dict[str, Any], train: dict[str, Any], runtime: dict[str, Any]) -> dict[str, str | bytes]:
    """All report files as {relative path: content}: measurements and figures here, the rest core's."""
    dpi = int(params.get("figure_dpi", 110))
    claims = evaluate_claims(paper, measure_claims(per_run))
    curve = sweep_curve(sweep)
    figures = [
        Figure("examples", f"Target val images (seed {ev['figure_seed']}), ground truth and predictions; private "
               f"pixels in {PRIVATE_COLOUR_NAME} (the paper's Figure 1 view).", figure_examples(examples, dpi)),
        Figure("per_class_iou", "Per-class IoU on target val (mean over seeds, error bar = std); black markers: "
               "the paper's numbers (real data, not comparable in level).", figure_iou_bars(per_run, paper, dpi)),
        Figure("threshold_sweep", "H-Score, Common and Private against the test-time confidence threshold "
               "(mean over seeds).", figure_threshold(curve, float(train["selftrain"]["pseudo_thres"]), dpi)),
    ]
    if not history.empty:
        figures.append(Figure("losses", "Training losses (source-only pretraining; seed-0 self-training runs).",
                              figure_losses(history, dpi)))
    share = private_share_curve(history)
    if not share.empty:
        figures.append(Figure("private_share", "The private class over self-training, per row (mean over seeds): "
                              "share of target pixels the teacher pseudo-labels private (confidence <= "
                              f"{float(train['selftrain']['pseudo_thres']):g}) and share the student predicts "
                              "private. Training signals only, no labels.", figure_private_share(share, dpi)))
    runs = runs_table(per_run)
    shown = [c for c in runs.columns if not c.startswith("iou_") and c != "variant"]
    sections = [("This run", this_run(per_run, job_log, train, ev)),
                ("What the numbers show", what_the_numbers_show(per_run)),
                ("Every run (per seed)", runs[shown].round(2).to_markdown(index=False))]
    return build_report("bus", paper, rows, claims, profile=runtime.get("profile", "base"), figures=figures,
                        sections=sections, files={"runs.csv": runs.to_csv(index=False),
                                                  "plots/threshold_sweep.csv": curve.to_csv(index=False),
                                                  **({"plots/private_share.csv": share.to_csv(index=False)}
                                                     if not share.empty else {})})
