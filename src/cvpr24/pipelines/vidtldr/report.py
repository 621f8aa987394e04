"""vid-TLDR's measurements and figures; core renders the tables, the claims' verdicts and the report.

`measure_claims` returns each claim of `pipelines/vidtldr/paper.yaml` once per unit. One model is trained
(one seed) and every setting reduces it training-free, so an accuracy gap comes once per schedule (each over
the same test clips) and a quantity of the whole run (AUROC, Spearman rho) once per seed. What a claim says,
its threshold and its verdict are data and core's (`cvpr24.core.claims`); the window a check looks at (a
GFLOPs band, an accuracy drop) is part of the claim in paper.yaml.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from cvpr24.core.claims import Measurement, evaluate_claims
from cvpr24.core.reporting import Figure, build_report
from cvpr24.pipelines.vidtldr.figures import curve, figure_accuracy_vs_gflops, figure_saliency
from cvpr24.pipelines.vidtldr.nodes import _interp, schedule_name

NAN = float("nan")


def gflops_at_drop(curve: pd.DataFrame, base_acc: float, drop: float, col: str = "acc_test") -> float:
    """The smallest GFLOPs at which the method's (piecewise-linear) accuracy curve stays >= base - drop."""
    order = np.argsort(curve["gflops"].to_numpy())
    xs, ys = curve["gflops"].to_numpy()[order], curve[col].to_numpy()[order]
    target, best = base_acc - drop, NAN
    for i in range(len(xs) - 1, -1, -1):  # walk from the most expensive point down while above target
        if ys[i] >= target:
            best = xs[i]
            continue
        if i + 1 < len(xs) and ys[i + 1] >= target:  # crossing between i and i+1
            best = xs[i] + (target - ys[i]) * (xs[i + 1] - xs[i]) / (ys[i + 1] - ys[i])
        break
    return float(best)


def _acc(sweep: pd.DataFrame, setting_id: str, col: str = "acc_test") -> float:
    hit = sweep[sweep["setting_id"] == setting_id]
    return float(hit[col].iloc[0]) if not hit.empty and col in hit else NAN


def measure_claims(sweep: pd.DataFrame, saliency: pd.DataFrame, paper: dict[str, Any], ev: dict[str, Any],
                   seed: int) -> dict[str, Measurement]:
    """Each claim's quantity per unit (schedule, setting or seed); the claims themselves are in paper.yaml."""
    spec = {c["id"]: c for c in paper["claims"]}
    unit, m = f"seed {seed}", {}
    base, sal = sweep[sweep["setting_id"] == "base"].iloc[0], saliency.iloc[0]
    b_acc, b_g = float(base["acc_test"]), float(base["gflops"])
    v = sweep[sweep["family"] == "vidtldr"].sort_values("gflops")
    tome = curve(sweep, "tome")
    m["V1"] = Measurement({unit: float(bool(sal["weights_unchanged"]))},
                          f"hash {base['weights_hash_before']} -> {base['weights_hash_after']}")
    auc = float(sal.get("auroc", NAN))
    m["V2a"] = m["V2b"] = Measurement({unit: auc}, f"AUROC {auc:.3f} over {int(sal.get('auroc_clips', 0))} clips")
    m["V2c"] = Measurement({unit: float(sal.get("zeroed_fg_ratio", NAN))},
                           f"object share {sal.get('fg_fraction_zeroed', NAN):.3f} among zeroed tokens vs "
                           f"{sal.get('fg_fraction', NAN):.3f} among all")
    lo, hi = spec["V3"]["gflops_band"]
    band = v[(v["gflops_rel"] >= lo) & (v["gflops_rel"] <= hi)]
    closest = v.iloc[[int((v["gflops_rel"] - (lo + hi) / 2).abs().argmin())]] if band.empty else band
    m["V3"] = Measurement({r.row: r.acc_test - b_acc for r in closest.itertuples()},
                          "; ".join(f"{r.row}: {r.acc_test:.1f} % at {r.gflops_rel:.0f} % GFLOPs"
                                    for r in closest.itertuples()) + f" (base {b_acc:.1f} %)",
                          note="" if not band.empty else "no vid-TLDR schedule in the band: the closest one is used")
    low = v[v["gflops_rel"] <= float(spec["V4"]["max_gflops_rel"])].head(int(spec["V4"]["points"]))
    d4 = {r.row: r.acc_test - _interp(r.gflops, tome["gflops"].to_numpy(), tome["acc_test"].to_numpy())
          for r in low.itertuples()}
    m["V4"] = Measurement(d4, ", ".join(f"{k}: {d:+.1f} pt" for k, d in d4.items()),
                          note="" if all(np.isfinite(list(d4.values()))) else
                          "ToMe's constant-r curve does not reach these GFLOPs")
    drop = float(spec["V4b"]["drop"])
    gv, gt = gflops_at_drop(curve(sweep, "vidtldr"), b_acc, drop), gflops_at_drop(tome, b_acc, drop)
    m["V4b"] = Measurement({unit: 100 * (gt - gv) / b_g},
                           f"vid-TLDR {100 * gv / b_g:.0f} %, ToMe {100 * gt / b_g:.0f} % of base GFLOPs")
    scheds = [schedule_name(ev["vidtldr_schedules"][int(i)]) for i in ev["ablation_schedules"]]
    clutter = "acc_clutter" in sweep and sweep["acc_clutter"].notna().any()
    d5 = {s: _acc(sweep, f"vidtldr_{s}", "acc_clutter") - _acc(sweep, f"no_background_drop_{s}", "acc_clutter")
          for s in scheds} if clutter else {}
    m["V5a"] = Measurement(d5, ", ".join(f"r={k}: {d:+.1f} pt" for k, d in d5.items()),
                           note="" if clutter else "no clutter split in this profile")
    best_c = float(v["acc_clutter"].max(skipna=False)) if clutter else NAN
    bc = float(base["acc_clutter"]) if clutter else NAN
    m["V5b"] = Measurement({unit: best_c - bc} if clutter else {}, f"best {best_c:.1f} vs base {bc:.1f} %")
    d6 = {f"r={s} vs {c}": _acc(sweep, f"vidtldr_{s}") - _acc(sweep, f"{c}_{s}")
          for s in scheds for c in ("no_saliency", "random")}
    tome_s = ", ".join(f"r={s}: {_acc(sweep, f'vidtldr_{s}') - _acc(sweep, f'tome_schedule_{s}'):+.1f}" for s in scheds)
    m["V6"] = Measurement(d6, ", ".join(f"{k}: {d:+.1f} pt" for k, d in d6.items())
                          + f" (vs ToMe with the same schedule: {tome_s} pt)")
    timed = sweep[sweep["timed"]]
    from scipy.stats import spearmanr

    rho = float(spearmanr(timed["gflops"], timed["throughput_clips_per_seconds"]).statistic)
    m["V7_time"] = Measurement({unit: rho}, f"rho {rho:+.2f} over {len(timed)} timed settings")
    half = timed[timed["gflops_rel"] <= float(spec["V7b_time"]["max_gflops_rel"])]
    m["V7b_time"] = Measurement(dict(zip(half["row"], half["walltime_speedup"], strict=True)),
                                ", ".join(f"{r}: {x:.2f}x" for r, x in zip(half["row"], half["walltime_speedup"],
                                                                           strict=True)))
    rel = (sweep["gflops"] - sweep["gflops_counted"]).abs() / sweep["gflops_counted"]
    m["V8"] = Measurement(dict(zip(sweep["setting_id"], rel, strict=True)),
                          f"max relative difference {rel.max(skipna=False):.2e} over {len(sweep)} settings")
    return m


def render(sweep: pd.DataFrame, saliency: pd.DataFrame, example: dict[str, np.ndarray], rows: pd.DataFrame,
           train_log: pd.DataFrame, paper: dict[str, Any], params: dict[str, Any], ev: dict[str, Any],
           model: dict[str, Any], runtime: dict[str, Any]) -> dict[str, str | bytes]:
    """All report files as {relative path: content}: measurements and figures here, the rest core's."""
    dpi = int(params.get("figure_dpi", 110))
    claims = evaluate_claims(paper, measure_claims(sweep, saliency, paper, ev, int(runtime.get("seed", 0))))
    cols = ["row", "family", "gflops", "gflops_counted", "gflops_rel", "tokens_per_layer", "acc_test", "acc_clutter",
            "throughput_clips_per_seconds", "walltime_speedup"]
    sweep_out = sweep[[c for c in cols if c in sweep]]
    curve = sweep[sweep["family"].isin(["base", "vidtldr", "tome"])][["family", "row", "gflops", "acc_test"]]
    figures = [Figure("accuracy_vs_gflops", "Top-1 against MFLOPs per clip: vid-TLDR's schedules, ToMe's constant-r "
                      "curve and the ablations / controls, all on the same weights.",
                      figure_accuracy_vs_gflops(sweep, dpi))]
    if example:
        figures.append(Figure("saliency_and_merging", "One test clip: object tokens, layer-0 sharpness, vid-TLDR's "
                              "saliency and the merged token groups.", figure_saliency(example, model, dpi)))
    tl, sal = train_log.iloc[0], saliency.iloc[0]
    sections = [("The model", f"{tl['source']}; top-1 without merging: val {tl.get('val_acc', NAN):.1f} %, "
                 f"test {tl.get('test_acc', NAN):.1f} %."),
                ("Every setting", sweep_out.round(4).to_markdown(index=False)),
                ("Saliency against the object masks (test split, layer-0 attention)",
                 saliency.round(4).to_markdown(index=False) + f"\n\nAUROC {sal.get('auroc', NAN):.3f} (chance 0.5): how "
                 "well the layer-0 attention sharpness ranks the object's tokens above the rest, mean over clips.")]
    threads = f"{ev.get('threads', 1)} thread{'s' if int(ev.get('threads', 1)) > 1 else ''}"
    notes = {"table_3": {"throughput_clips_per_seconds": f"CPU, {threads}, batch {ev['timing']['batch']}, "
                                                         f"{ev['timing']['iters']} interleaved timing rounds"}}
    return build_report("vidtldr", paper, rows, claims, profile=runtime.get("profile", "base"), figures=figures,
                        column_notes=notes, sections=sections,
                        files={"sweep.csv": sweep_out.to_csv(index=False),
                               "plots/accuracy_vs_gflops.csv": curve.assign(mflops=curve["gflops"] * 1e3)
                               .to_csv(index=False)})
