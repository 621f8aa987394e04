"""vid-TLDR's report phase: the claims checked on our data, the figures, and the table files."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd

from cvpr24.core.reporting import (
    claims_markdown,
    compose_table,
    figure_png,
    metrics_json,
    table_csv,
    table_markdown,
    table_specs,
)
from cvpr24.pipelines.vidtldr.data import CLASSES
from cvpr24.pipelines.vidtldr.nodes import _interp, schedule_name


def _claim(cid, claim, check, measured, margin, note="", passed=None) -> dict[str, Any]:
    if passed is None:
        passed = None if margin is None or not np.isfinite(margin) else bool(margin >= 0)
    return {"id": cid, "claim": claim, "check": check, "measured": measured,
            "margin": float("nan") if margin is None else float(margin), "passed": passed, "note": note}


def _curve(sweep: pd.DataFrame, family: str, col: str = "acc_test") -> pd.DataFrame:
    base = sweep[sweep["setting_id"] == "base"]
    return pd.concat([base, sweep[sweep["family"] == family]]).sort_values("gflops")[["gflops", col, "row"]]


def gflops_at_drop(curve: pd.DataFrame, base_acc: float, drop: float, col: str = "acc_test") -> float:
    """The smallest GFLOPs at which the method's (piecewise-linear) accuracy curve stays >= base - drop."""
    xs, ys = curve["gflops"].to_numpy(), curve[col].to_numpy()
    order = np.argsort(xs)
    xs, ys = xs[order], ys[order]
    target = base_acc - drop
    best = float("nan")
    for i in range(len(xs) - 1, -1, -1):  # walk from the most expensive point down while above target
        if ys[i] >= target:
            best = xs[i]
            continue
        if i + 1 < len(xs) and ys[i + 1] >= target:  # crossing between i and i+1
            best = xs[i] + (target - ys[i]) * (xs[i + 1] - xs[i]) / (ys[i + 1] - ys[i])
        break
    return float(best)


def check_claims(sweep: pd.DataFrame, saliency: pd.DataFrame, ev: dict[str, Any], p: dict[str, Any]) -> pd.DataFrame:
    out = []
    base = sweep[sweep["setting_id"] == "base"].iloc[0]
    b_acc, b_g = float(base["acc_test"]), float(base["gflops"])
    v = sweep[sweep["family"] == "vidtldr"].sort_values("gflops")
    tome = _curve(sweep, "tome")
    sal = saliency.iloc[0]
    # V1 training-free
    same = bool(sal["weights_unchanged"])
    out.append(_claim("V1", "vid-TLDR is training-free", "weights hash identical before and after every setting",
                      f"hash {base['weights_hash_before']} -> {base['weights_hash_after']}", 0.0 if same else -1.0,
                      passed=same))
    # V2 saliency
    auc = float(sal.get("auroc", np.nan))
    out.append(_claim("V2a", "attention sharpness falls on the object (beats chance)",
                      "per-clip AUROC of layer-0 sharpness vs object tokens − 0.5 > 0", f"AUROC {auc:.3f}",
                      auc - 0.5, passed=None if not np.isfinite(auc) else bool(auc > 0.5)))
    ratio = float(sal.get("zeroed_fg_ratio", np.nan))
    thr = float(p["v2_auroc"])
    m = min(auc - thr, float(p["v2_zeroed_ratio"]) - ratio) if np.isfinite(auc) else float("nan")
    out.append(_claim("V2b", "saliency finds the object already in the first layer (spec thresholds)",
                      f"AUROC ≥ {thr} and (object share among zeroed tokens / overall) ≤ {p['v2_zeroed_ratio']}",
                      f"AUROC {auc:.3f}; zeroed-token object ratio {ratio:.3f}", m))
    # V3 competitive accuracy at 60-70 % GFLOPs
    lo, hi = p["v3_gflops_rel"]
    band = v[(v["gflops_rel"] >= lo) & (v["gflops_rel"] <= hi)]
    pick = band if not band.empty else v.iloc[[int((v["gflops_rel"] - (lo + hi) / 2).abs().argmin())]]
    best = pick.loc[pick["acc_test"].idxmax()]
    tol = float(p["v3_tolerance"])
    out.append(_claim("V3", "vid-TLDR reduces FLOPs with competitive accuracy",
                      f"at {lo}-{hi} % of base GFLOPs: top-1 ≥ base − {tol} pt",
                      f"{best['row']}: {best['acc_test']:.1f} % at {best['gflops_rel']:.0f} % GFLOPs "
                      f"(base {b_acc:.1f} %)", float(best["acc_test"]) - (b_acc - tol),
                      "" if not band.empty else "no vid-TLDR point in the band: the closest one is used"))
    # V4 equal FLOPs
    low = v[v["gflops_rel"] <= float(p["v4_max_gflops_rel"])].sort_values("gflops").head(3)
    diffs = [float(r.acc_test) - _interp(float(r.gflops), tome["gflops"].to_numpy(), tome["acc_test"].to_numpy())
             for r in low.itertuples()]
    finite = sorted([d for d in diffs if np.isfinite(d)], reverse=True)
    need, mg = int(p["v4_points"]), float(p["v4_margin"])
    m4 = finite[need - 1] - mg if len(finite) >= need else float("nan")
    out.append(_claim("V4", "at equal FLOPs vid-TLDR keeps more accuracy than ToMe",
                      f"top-1(vid-TLDR) − top-1(ToMe, interpolated at the same GFLOPs) ≥ {mg} pt on ≥ {need} of the "
                      f"{len(low)} lowest-GFLOPs points (≤ {p['v4_max_gflops_rel']} % of base)",
                      "differences " + ", ".join(f"{d:+.1f}" for d in diffs) + " pt", m4,
                      "" if len(finite) >= need else "ToMe's constant-r curve does not reach these GFLOPs"))
    drop = float(p["v4b_drop"])
    gv, gt = gflops_at_drop(_curve(sweep, "vidtldr"), b_acc, drop), gflops_at_drop(tome, b_acc, drop)
    out.append(_claim("V4b", "at a given accuracy drop vid-TLDR saves more FLOPs than ToMe",
                      f"GFLOPs(ToMe) − GFLOPs(vid-TLDR) at a {drop} pt drop, in % of base, > 0",
                      f"vid-TLDR {100 * gv / b_g:.0f} %, ToMe {100 * gt / b_g:.0f} % of base GFLOPs",
                      100 * (gt - gv) / b_g, passed=None if not np.isfinite(gt - gv) else bool(gt > gv)))
    # V5 clutter
    if "acc_clutter" in sweep and sweep["acc_clutter"].notna().any():
        bc = float(base["acc_clutter"])
        bestc = float(v["acc_clutter"].max())
        strong = v.sort_values("gflops").head(2)
        nobg = [sweep[sweep["setting_id"] == f"no_background_drop_{schedule_name(json.loads(s))}"]
                for s in strong["schedule"]]
        gaps = [float(a) - float(b["acc_clutter"].iloc[0]) for a, b in zip(strong["acc_clutter"], nobg, strict=True)
                if not b.empty]
        m5 = min([bestc - (bc - float(p["v5_tolerance"]))] + gaps) if gaps else float("nan")
        out.append(_claim("V5", "dropping background tokens helps on cluttered video",
                          f"best vid-TLDR clutter top-1 ≥ base − {p['v5_tolerance']} pt, and vid-TLDR ≥ without "
                          "background drop at the 2 strongest reductions",
                          f"best {bestc:.1f} vs base {bc:.1f} %; gaps to w/o background drop "
                          + ", ".join(f"{g:+.1f}" for g in gaps) + " pt", m5,
                          "" if gaps else "the background-drop ablation is not run at the strongest schedules"))
    # V6 saliency beyond the schedule
    strongest = v.sort_values("gflops").iloc[0]
    ctrl = sweep[sweep["setting_id"] == f"tome_schedule_{schedule_name(json.loads(strongest['schedule']))}"]
    if not ctrl.empty:
        d6 = float(strongest["acc_test"]) - float(ctrl["acc_test"].iloc[0])
        out.append(_claim("V6", "saliency matters beyond the merge schedule (issue #3 control)",
                          f"top-1(vid-TLDR) − top-1(ToMe with the same schedule) ≥ −{p['v6_tolerance']} pt",
                          f"{strongest['row']}: {strongest['acc_test']:.1f} vs {ctrl['acc_test'].iloc[0]:.1f} % "
                          f"(difference {d6:+.1f} pt)", d6 + float(p["v6_tolerance"]),
                          "the difference itself is the report item; the check is a tolerance"))
    # V7 throughput (timing: the id contains "time" so CI's deterministic comparison skips it)
    timed = sweep[sweep["timed"]].sort_values("gflops", ascending=False)
    from scipy.stats import spearmanr

    rho = float(spearmanr(timed["gflops"], timed["throughput_clips_per_seconds"]).statistic)
    half = timed[timed["gflops_rel"] <= 50.0]
    sp = float(half["walltime_speedup"].max()) if not half.empty else float("nan")
    need_sp = float(p["v7_speedup"])
    m7 = min(-rho - 0.5, sp - need_sp) if np.isfinite(sp) else -rho - 0.5
    out.append(_claim("V7_time", "throughput rises as FLOPs fall (CPU wall clock)",
                      f"Spearman rho(GFLOPs, clips/s) ≤ −0.5 over {len(timed)} settings, and ≥ {need_sp}x speed-up "
                      "at ≤ 50 % GFLOPs", f"rho {rho:+.2f}; best speed-up at ≤ 50 % GFLOPs {sp:.2f}x", m7,
                      "wall-clock on a shared CPU: noisy; excluded from the CI comparison"))
    # V8 FLOP accounting
    rel = (sweep["gflops"] - sweep["gflops_counted"]).abs() / sweep["gflops_counted"]
    out.append(_claim("V8", "FLOP accounting is right",
                      f"analytic GFLOPs vs torch FlopCounterMode / 2 within {p['v8_tolerance']:.0%} for every setting",
                      f"max relative difference {rel.max():.2e} over {len(sweep)} settings",
                      float(p["v8_tolerance"]) - float(rel.max())))
    return pd.DataFrame(out)


# ------------------------------------------------------------------------------------------- figures
COLORS = {"base": "black", "vidtldr": "tab:red", "tome": "tab:blue"}


def figure_accuracy_vs_gflops(sweep: pd.DataFrame, dpi: int) -> bytes:
    import matplotlib.pyplot as plt

    splits = [c for c in ("acc_test", "acc_clutter") if c in sweep and sweep[c].notna().any()]
    fig, axes = plt.subplots(1, len(splits), figsize=(5.4 * len(splits), 4.0), squeeze=False)
    names = {"acc_test": "test split", "acc_clutter": "clutter test split"}
    for ax, col in zip(axes[0], splits, strict=True):
        for fam, label in (("vidtldr", "vid-TLDR (front-loaded schedules)"), ("tome", "ToMe (constant r per layer)")):
            c = _curve(sweep, fam, col)
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


# -------------------------------------------------------------------------------------------- render
def render(sweep: pd.DataFrame, saliency: pd.DataFrame, example: dict[str, np.ndarray], rows: pd.DataFrame,
           train_log: pd.DataFrame, paper: dict[str, Any], params: dict[str, Any], ev: dict[str, Any],
           model: dict[str, Any], runtime: dict[str, Any]) -> dict[str, str | bytes]:
    """All report files as {relative path: content}."""
    files: dict[str, str | bytes] = {}
    claims = check_claims(sweep, saliency, ev, params)
    dpi = int(params.get("figure_dpi", 110))
    profile = runtime.get("profile", "base")
    tl = train_log.iloc[0]
    summary = [f"# vid-TLDR: regenerated tables ({profile} profile)", "",
               f"Paper: {paper['citation']}", "",
               "Each table keeps the layout of the paper's table; `(paper)` columns hold the paper's numbers where "
               "a public source gives them (the spec could read only fragments: every other paper cell says "
               "`not found`), `(ours)` columns this run's. Our numbers come from a small video ViT trained once on "
               "the embedded salient-sprites videos and then reduced training-free, not from UMT/VideoMAE on the "
               "paper's datasets: compare directions and gaps, not absolute values. Regenerate with `make repro` "
               "(or `kedro run --pipeline=vidtldr`).", "",
               f"Model: {tl['source']}; base top-1 on val {tl.get('val_acc', float('nan')):.1f} %, "
               f"test {tl.get('test_acc', float('nan')):.1f} %.", ""]
    for table_id, spec in table_specs(paper).items():
        display, notes = compose_table(spec, rows)
        md = table_markdown(spec, display, notes)
        files[f"{table_id}.md"] = md
        files[f"{table_id}.csv"] = table_csv(spec, rows)
        summary += [md, ""]
    files["claims.md"] = claims_markdown(claims)
    files["claims.csv"] = claims.to_csv(index=False)
    summary += [claims_markdown(claims)]
    cols = ["row", "family", "gflops", "gflops_counted", "gflops_rel", "tokens_per_layer", "acc_test", "acc_clutter",
            "throughput_clips_per_seconds", "walltime_speedup"]
    sweep_out = sweep[[c for c in cols if c in sweep]]
    files["sweep.csv"] = sweep_out.to_csv(index=False)
    sal = saliency.iloc[0]
    summary += ["## Every setting", "", sweep_out.round(4).to_markdown(index=False), "",
                "## Saliency against the object masks (test split, layer-0 attention)", "",
                saliency.round(4).to_markdown(index=False), "",
                f"AUROC {sal.get('auroc', float('nan')):.3f} (chance 0.5): how well the layer-0 attention sharpness "
                "ranks the object's tokens above the rest, averaged over clips.", ""]
    curve = sweep[sweep["family"].isin(["base", "vidtldr", "tome"])][["family", "row", "gflops", "acc_test"]]
    files["plots/accuracy_vs_gflops.csv"] = curve.assign(mflops=curve["gflops"] * 1e3).to_csv(index=False)
    files["figures/accuracy_vs_gflops.png"] = figure_accuracy_vs_gflops(sweep, dpi)
    summary += ["## Figures", "", "![accuracy against GFLOPs](figures/accuracy_vs_gflops.png)", ""]
    if example:
        files["figures/saliency_and_merging.png"] = figure_saliency(example, model, dpi)
        summary += ["![saliency and merged token groups](figures/saliency_and_merging.png)", ""]
    files["README.md"] = "\n".join(summary)
    files["metrics.json"] = metrics_json(rows, claims)
    return files
