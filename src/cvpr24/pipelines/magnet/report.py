"""MagNet's claim measurements and figures; core renders the tables, the claims' verdicts and the report.

`measure_claims` returns each claim of `pipelines/magnet/paper.yaml` once per seed: what a claim says, its
threshold and its verdict are data and core's (`cvpr24.core.claims`). Everything is measured on the
evaluation splits (val / testA / testB); nothing here feeds back into training.
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
from cvpr24.pipelines.magnet.nodes import per_seed, unpack  # noqa: E402

TEMPLATES = {"A": "attribute", "R": "relational", "O": "ordinal"}
MG_JOBS = ("mg", "mg_pool4", "mg_cam", "magnet")


def _diff(a: pd.Series | None, b: pd.Series | None, what: str, fmt: str = ".2f") -> Measurement:
    """Per-seed a − b (aligned on the seed; a seed missing on one side is NaN, never dropped)."""
    if a is None or b is None:
        return Measurement({}, note=f"{what}: not run in this profile")
    return Measurement({f"seed {k}": float(v) for k, v in (a - b).items()},
                       f"{what}: {a.mean():{fmt}} vs {b.mean():{fmt}}")


def _diag(log: pd.DataFrame, job: str, col: str) -> pd.Series | None:
    sub = log[log["job"] == job]
    return None if sub.empty or col not in sub else sub.set_index("seed")[col].sort_index()


def measure_claims(scores: pd.DataFrame, log: pd.DataFrame) -> dict[str, Measurement]:
    def s(job: str, split: str, metric: str = "miou") -> pd.Series | None:
        return per_seed(scores, job, split, metric)

    m = {"C1": _diff(s("mg", "val"), s("base", "val"), "val mIoU, +MG vs base"),
         "C1b": _diff(s("mg", "val", "oiou"), s("base", "val", "oiou"), "val oIoU, +MG vs base")}
    gains = {sp: None if s("mg", sp) is None or s("base", sp) is None else s("mg", sp) - s("base", sp)
             for sp in ("testA", "testB")}
    m["C2"] = _diff(gains["testB"], gains["testA"], "MG's mIoU gain, testB vs testA")
    m["C3"] = _diff(_diag(log, "mg", "mtp_acc_true"), _diag(log, "mg", "mtp_acc_other"),
                    "MTP accuracy (%), true mask vs another object's", ".1f")
    m["C3b"] = _diff(_diag(log, "mg", "mtp_acc_true"), _diag(log, "mg", "mtp_acc_text"),
                     "MTP accuracy (%), true mask vs text only", ".1f")
    c4, parts = {}, []
    for job in MG_JOBS:
        sub = log[log["job"] == job]
        for r in sub.to_dict("records"):
            val = abs(r["inference_params"] - r["inference_params_without_mg"]) + r["max_prob_diff_without_mg"]
            c4[f"{job} seed {r['seed']}"] = float(val)
            parts.append(f"{job} s{r['seed']}: {int(r['inference_params'])} params, max abs Δp "
                         f"{r['max_prob_diff_without_mg']:.1e}")
    m["C4"] = Measurement(c4, "; ".join(parts), note="" if c4 else "no MG job in this profile")
    m["C5"] = _diff(s("magnet", "val"), s("mg", "val"), "val mIoU, MagNet vs +MG")
    m["C6"] = _diff(_diag(log, "magnet", "alignment"), _diag(log, "mg_cam", "alignment"),
                    "cos(fg, t) − cos(bg, t), MagNet vs MG + CAM", ".3f")
    base = s("base", "val", "prec@0.5")
    m["S1"] = Measurement({} if base is None else {f"seed {k}": float(v) for k, v in base.items()},
                          "" if base is None else f"val Prec@0.5 of base {base.mean():.1f} %")
    return m


def figure_examples(pred: dict[str, np.ndarray], mi: dict[str, np.ndarray], samples: pd.DataFrame, k: int,
                    dpi: int) -> bytes:
    """Image with the expression, ground truth, base and MagNet (first seed) side by side, k per template."""
    idx = np.asarray(pred["eval_idx"])
    ev = samples.iloc[idx].reset_index(drop=True)
    size = mi["masks"].shape[-1]
    cols = [(j, lab) for j, lab in (("base", "base"), ("mg", "+MG"), ("magnet", "MagNet")) if f"{j}__s0" in pred]
    picks = [i for t in TEMPLATES for i in ev.index[ev["template"] == t][:k]] or list(ev.index[:k])
    fig, axes = plt.subplots(len(picks), 2 + len(cols), figsize=(2.0 * (2 + len(cols)), 2.1 * len(picks)),
                             squeeze=False)
    for r, i in enumerate(picks):
        row = ev.loc[i]
        img = mi["images"][mi["image_index"][idx[i]]]
        panels = [("image", img), ("ground truth", mi["masks"][idx[i]])]
        panels += [(lab, unpack(pred[f"{j}__s0"][i:i + 1], size)[0]) for j, lab in cols]
        for c, (title, arr) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(img if arr.ndim == 2 else arr)
            if arr.ndim == 2 and arr.any():   # the mask as a white outline over a darkened outside
                ax.imshow(np.where(arr.astype(bool), np.nan, 1.0), cmap="gray_r", alpha=0.55, vmin=0, vmax=1)
                ax.contour(arr.astype(float), levels=[0.5], colors="white", linewidths=1.2)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(title if r == 0 else "", fontsize=8)
        axes[r, 0].set_ylabel(f"[{row['template']}] {row['split']}", fontsize=7)
        axes[r, 1].set_xlabel(f"\"{row['sentence']}\"", fontsize=7)
    fig.tight_layout()
    return figure_png(fig, dpi)


def figure_templates(scores: pd.DataFrame, dpi: int) -> bytes:
    """mIoU per template (all evaluation splits pooled), base vs +MG, bars = mean over seeds, dots = seeds."""
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    jobs = [("base", "base", "tab:gray"), ("mg", "+MG", "tab:blue"), ("magnet", "MagNet", "tab:green")]
    for o, (job, lab, col) in enumerate(jobs):
        for t_i, t in enumerate(TEMPLATES):
            v = per_seed(scores, job, "all", "miou", template=t)
            if v is None:
                continue
            x = t_i + (o - 1) * 0.27
            ax.bar(x, v.mean(), width=0.25, color=col, label=lab if t_i == 0 else None)
            ax.scatter([x] * len(v), v, color="k", s=8, zorder=3)
    ax.set_xticks(range(len(TEMPLATES)), [f"{t} ({n})" for t, n in TEMPLATES.items()])
    ax.set_ylabel("mIoU (%)")
    ax.set_title("mIoU per expression template (val + testA + testB)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return figure_png(fig, dpi)


def figure_training(history: pd.DataFrame, dpi: int) -> bytes:
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for jid, grp in history[history["job_id"].str.endswith("/s0")].groupby("job_id", sort=True):
        ax.plot(grp["step"], grp["seg"], label=jid.split("/")[0], lw=1)
    ax.set_xlabel("training step")
    ax.set_ylabel("segmentation loss (deep-supervised sum)")
    ax.set_yscale("log")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return figure_png(fig, dpi)


def pooling_sentence(log: pd.DataFrame) -> str:
    """The issue's question: which mask-token grid (4x4 or 8x8) makes the grounding check meaningful."""
    gaps = {}
    for job, grid in (("mg_pool4", "4x4"), ("mg", "8x8")):
        sub = log[log["job"] == job]
        if not sub.empty and "mtp_acc_true" in sub:
            gaps[grid] = (sub["mtp_acc_true"] - sub["mtp_acc_other"]).mean()
    if len(gaps) < 2:
        return ""
    verdict = ("neither grid makes the check meaningful at this budget: the predictor ignores the mask"
               if max(abs(v) for v in gaps.values()) < 1.0 else
               f"the {max(gaps, key=gaps.get)} grid separates the true mask from another object's more")
    return ("\n\nMask tokens 4x4 against 8x8 (true mask − another object's mask, accuracy points, mean over "
            f"seeds): 4x4 {gaps['4x4']:+.1f}, 8x8 {gaps['8x8']:+.1f}; {verdict}.")


def grounding_table(log: pd.DataFrame) -> str:
    cols = ["mtp_acc_true", "mtp_acc_other", "mtp_acc_text", "mtp_n", "alignment"]
    sub = log[log["job"].isin(MG_JOBS + ("cal",))]
    if sub.empty:
        return "No MG job in this profile."
    have = [c for c in cols if c in sub]
    agg = sub.groupby("job")[have].agg(["mean", "std"]).round(2)
    agg.columns = [f"{a} {b}" for a, b in agg.columns]
    return agg.to_markdown()


def backbone_section(log: pd.DataFrame) -> tuple[str, str]:
    row = log[log["job"] == "pretrain"].iloc[0]
    return ("Backbone pretraining (the stand-in for the paper's ImageNet-pretrained Swin)",
            "Every referring job starts from one image encoder pretrained on dense shape and colour labels of fresh "
            "ShapeRef images (no expression, no referred object; none of them is an image of the referring splits). "
            f"On {int(row['pretrain_n_eval'])} held-out images of another seed it labels foreground pixels with the right shape "
            f"{row['pretrain_shape_acc']:.1f} % of the time (chance 25 %) and the right colour "
            f"{row['pretrain_colour_acc']:.1f} % (chance 20 %). Why: pipelines/magnet/README.md.")


def render(scores: pd.DataFrame, pairs: pd.DataFrame, pred: dict[str, np.ndarray], log: pd.DataFrame,
           history: pd.DataFrame, rows: pd.DataFrame, mi: dict[str, np.ndarray], samples: pd.DataFrame,
           vocab: dict[str, Any], paper: dict[str, Any], params: dict[str, Any],
           runtime: dict[str, Any]) -> dict[str, str | bytes]:
    """All report files as {relative path: content}: measurements and figures here, the rest core's."""
    dpi = int(params.get("figure_dpi", 110))
    claims = evaluate_claims(paper, measure_claims(scores, log))
    figures = [
        Figure("examples", "Expressions (below each image, template and split on the left), ground truth and the "
                           "predictions of base, +MG and MagNet (seed 0), threshold 0.5: each mask outlined in white, outside it darkened.",
               figure_examples(pred, mi, samples, int(params.get("figure_examples", 2)), dpi)),
        Figure("templates", "mIoU per expression template for base, +MG and MagNet (bars: mean over seeds; dots: "
                            "seeds). A = attribute, R = relational, O = ordinal.", figure_templates(scores, dpi)),
        Figure("training", "Segmentation loss per config (seed 0).", figure_training(history, dpi)),
    ]
    times = log.groupby("job")["seconds"].agg(["count", "sum"]).round(1)
    sections = [backbone_section(log)] if "pretrain_shape_acc" in log and (log["job"] == "pretrain").any() else []
    sections += [
        ("Mask Grounding: does the masked-token predictor use the mask?",
         "Accuracy (%) of the masked-token predictor on one masked colour or shape word per val expression (n "
         "expressions), given the true mask, the mask of another object of the same image, or neither (visual and "
         "mask tokens zeroed); `alignment` = mean cos(f_fg, t) − mean cos(f_bg, t) (C6). Mean and std over seeds. "
         "`mg` uses 8x8 mask tokens, `mg_pool4` 4x4.\n\n" + grounding_table(log) + pooling_sentence(log)),
        ("Jobs and training time",
         f"{len(log)} jobs ({int(log['cached'].sum())} read from the job cache); seconds of training per config "
         f"(0 when cached):\n\n{times.to_markdown()}\n\n`scores.csv` holds mIoU / oIoU / Prec@X per config, seed, "
         "split and template; `diagnostics.csv` the per-job Mask Grounding, alignment and inference-cost numbers."),
    ]
    return build_report("magnet", paper, rows, claims, profile=runtime.get("profile", "base"), figures=figures,
                        sections=sections, files={"scores.csv": scores.to_csv(index=False),
                                                  "diagnostics.csv": log.to_csv(index=False)})
