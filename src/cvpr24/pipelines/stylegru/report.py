"""StyleGRU's claim measurements; core renders the tables, the claims' verdicts and the report.

`measure_claims` returns each claim of `pipelines/stylegru/paper.yaml` once per seed (the ablations), per
generator (Figure 1), per held-out manipulation (cross-manipulation) or per level (the encoder): what a claim
says, its threshold and its verdict are data and core's (`cvpr24.core.claims`). Everything is measured on
test videos; nothing here feeds back into training.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cvpr24.core.claims import Measurement, evaluate_claims
from cvpr24.core.reporting import Figure, build_report
from cvpr24.pipelines.stylegru import figures as G
from cvpr24.pipelines.stylegru import synth as S
from cvpr24.pipelines.stylegru.nodes import CROSS, ROWS, TRAIN_METHODS, per_seed


def _diff(a: pd.Series | None, b: pd.Series | None, what: str, detail: str = "") -> Measurement:
    """Per-seed difference a − b (aligned on the seed; a seed missing on one side is NaN, never dropped)."""
    if a is None or b is None:
        return Measurement({}, note=f"{what} not run in this profile")
    return Measurement({f"seed {k}": v for k, v in (a - b).items()}, detail or f"{a.mean():.1f} vs {b.mean():.1f}")


def measure_claims(aucs: pd.DataFrame, flow: pd.DataFrame, r2: np.ndarray) -> dict[str, Measurement]:
    cross = [c for c in CROSS if (aucs["set"] == c).any()]

    def cm(job: str) -> pd.Series | None:
        return per_seed(aucs, job, cross) if cross else None

    m: dict[str, Measurement] = {
        "C0": Measurement({f"level {i}": float(v) for i, v in enumerate(r2)},
                          "R² per level: " + ", ".join(f"{v:.2f}" for v in r2))}
    enc = flow[flow["latents"] == "encoder"]
    smooth, keep = {}, {}
    for g, d in enc.groupby("method", sort=True):
        lv = set(S.SMOOTHED_LEVELS.get(g, ()))
        ratio = d.set_index("level")["ratio"]
        if lv:
            smooth[g] = float(ratio[ratio.index.isin(lv)].max())
        if len(lv) < len(ratio):
            keep[g] = float(ratio[~ratio.index.isin(lv)].min())
    m["C1"] = Measurement(smooth, ", ".join(f"{g} {v:.2f}" for g, v in smooth.items()))
    m["C1b"] = Measurement(keep, ", ".join(f"{g} {v:.2f}" for g, v in keep.items()))
    m["C2"] = _diff(cm(ROWS["stylegru"]), cm(ROWS["stylegru_latent"]), "StyleGRU on flow / on latent")
    m["C3"] = _diff(cm(ROWS["full"]), cm(ROWS["content"]), "full / content-only")
    ff_full, ff_content = per_seed(aucs, ROWS["full"], "ffpp"), per_seed(aucs, ROWS["content"], "ffpp")
    c3b = _diff(ff_full, ff_content, "full / content-only in-domain")
    m["C3b"] = Measurement({k: abs(v) for k, v in c3b.units.items()}, c3b.detail, note=c3b.note)
    m["C4"] = _diff(cm(ROWS["stylegru"]), cm(ROWS["stylegru_bce"]), "StyleGRU triplet / BCE-only")
    m["C4b"] = _diff(cm(ROWS["full"]), cm(ROWS["bce_full"]), "full on a triplet / BCE-only StyleGRU")
    total = cm("s1_flow_total_triplet")
    groups = {g: cm(f"s1_flow_{g}_triplet") for g in ("coarse", "middle", "fine")}
    if total is None or any(v is None for v in groups.values()):
        m["C5"] = Measurement({}, note="needs a StyleGRU per level group (stylegru.train.level_groups)")
    else:
        best = pd.concat(groups, axis=1).max(axis=1)
        m["C5"] = _diff(total, best, "levels", f"total {total.mean():.1f}; "
                        + ", ".join(f"{g} {v.mean():.1f}" for g, v in groups.items()))
    m["C6"] = _diff(cm(ROWS["full"]), cm(ROWS["add"]), "SAM / add")
    c7, c7b, parts = {}, {}, []
    for meth in TRAIN_METHODS:
        full = per_seed(aucs, f"s2_full_wo{meth}", "heldout")
        content = per_seed(aucs, f"s2_content_wo{meth}", "heldout")
        if full is None:
            continue
        c7[meth] = float(full.mean()) - 80.0
        if content is not None:
            c7b[meth] = float(full.mean() - content.mean())
        parts.append(f"{meth} {full.mean():.1f}" + (f" vs {content.mean():.1f}" if content is not None else ""))
    note = "" if c7 else "no leave-one-out run (stylegru.train.loo_methods)"
    m["C7"] = Measurement(c7, "full (vs content-only): " + ", ".join(parts), note=note)
    m["C7b"] = Measurement(c7b, "full vs content-only: " + ", ".join(parts), note=note)
    frame = per_seed(aucs, ROWS["frame"], "cdf")
    m["C8"] = Measurement({} if frame is None else {f"seed {k}": v for k, v in frame.items()},
                          "" if frame is None else f"X-CDF AUC {frame.mean():.1f}",
                          note="" if frame is not None else "X-CDF not generated in this profile")
    return m


def roc_curves(predictions: pd.DataFrame, clips: pd.DataFrame) -> dict[str, dict[str, tuple]]:
    """ROC per cross set for the full model, content-only and the per-frame CNN (first seed)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    meta = clips.set_index("sample_id")
    seed = predictions["seed"].min()
    out: dict[str, dict[str, tuple]] = {}
    names = {ROWS["full"]: "full", ROWS["content"]: "content-only", ROWS["frame"]: "frame CNN",
             ROWS["stylegru"]: "StyleGRU only"}
    for job, label in names.items():
        p = predictions[(predictions["job"] == job) & (predictions["seed"] == seed)]
        if p.empty:
            continue
        v = p.assign(video=meta.loc[p["sample_id"], "video_id"].to_numpy()).groupby("video")["logit"].mean()
        vm = meta.drop_duplicates("video_id").set_index("video_id").loc[v.index]
        for c in CROSS:
            sel = (vm["dataset"] == c).to_numpy()
            if sel.sum() and vm["label"][sel].nunique() == 2:
                fpr, tpr, _ = roc_curve(vm["label"][sel], v[sel])
                out.setdefault(c, {})[label] = (fpr, tpr, 100 * roc_auc_score(vm["label"][sel], v[sel]))
    return out


def render(aucs: pd.DataFrame, flow: pd.DataFrame, predictions: pd.DataFrame, rows: pd.DataFrame,
           train_log: pd.DataFrame, history: pd.DataFrame, encoder: pd.DataFrame, mi: dict, clips: pd.DataFrame,
           paper: dict[str, Any], params: dict[str, Any], runtime: dict[str, Any]) -> dict[str, str | bytes]:
    """All report files as {relative path: content}: measurements and figures here, the rest core's."""
    dpi = int(params.get("figure_dpi", 110))
    r2 = np.asarray(mi["encoder_r2"], float)
    claims = evaluate_claims(paper, measure_claims(aucs, flow, r2))
    k = int(params.get("figure_videos", 3))
    pick = []
    for ds, lab in (("ffpp", 0), ("ffpp", 1), ("cdf", 0), ("cdf", 1)):
        sel = clips.index[(clips["dataset"] == ds) & (clips["label"] == lab) & (clips["clip"] == 0)]
        pick += list(sel[:k] if ds == "ffpp" and lab == 1 else sel[:1])
    names = [f"{clips.loc[i, 'method']} {clips.loc[i, 'video_id'].split('/')[-1]}" for i in pick]
    figures = [
        Figure("flow_variance", "Figure 1 on our data: per-level style-flow variance of fakes relative to reals "
                                "(encoder latents; red = the levels each generator smooths, dashed = 0.8).",
               G.figure_flow_variance(flow, dpi)),
        Figure("roc", "Video-level ROC curves on the four held-out generators.",
               G.figure_roc(roc_curves(predictions, clips), dpi)),
        Figure("strip", "Real and fake clips with the style-flow magnitude per level group over time.",
               G.figure_strip(mi["frames"][pick], mi["latents"][pick], names, dpi)),
        Figure("training", "Style encoder (loss, per-level R²) and the training loss of the main jobs.",
               G.figure_training(history, encoder, r2, dpi)),
    ]
    times = train_log.groupby("kind")["seconds"].agg(["count", "sum"]).round(1)
    sections = [("Jobs and training time",
                 f"{len(train_log)} jobs ({int(train_log['cached'].sum())} read from the job cache); seconds of "
                 f"training by kind (0 when cached):\n\n{times.to_markdown()}\n\n`aucs.csv` holds every AUC "
                 "(job, seed, test set); `flow_ratios.csv` the Figure 1 numbers (encoder and true latents).")]
    return build_report("stylegru", paper, rows, claims, profile=runtime.get("profile", "base"), figures=figures,
                        sections=sections, files={"aucs.csv": aucs.to_csv(index=False),
                                                  "flow_ratios.csv": flow.to_csv(index=False)})
