"""vid-TLDR's claim measurements follow their definitions in paper.yaml (per schedule, setting or seed); the
verdicts come from core's one rule; the table rows carry per-clip / per-run values with their n."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cvpr24.core.claims import FAIL, INCONCLUSIVE, NA, PASS, evaluate_claims
from cvpr24.pipelines.vidtldr.nodes import table_rows
from cvpr24.pipelines.vidtldr.report import gflops_at_drop, measure_claims, render

PAPER = yaml.safe_load((Path(__file__).parents[3] / "pipelines" / "vidtldr" / "paper.yaml").read_text())
EV = {"vidtldr_schedules": [[2], [4]], "ablation_schedules": [1], "main_schedule": [4],
      "timing": {"batch": 4, "warmup": 1, "iters": 2}}

# setting_id, family, variant, gflops, acc_test, acc_clutter, timed, clips/s per timing round
SETTINGS = [
    ("base", "base", "base", 10.0, 90.0, 85.0, True, [10.0, 12.0]),
    ("vidtldr_[2]", "vidtldr", "full", 6.5, 89.5, 84.0, True, [14.0, 16.0]),
    ("vidtldr_[4]", "vidtldr", "full", 5.0, 80.0, 80.0, True, [15.0, 18.0]),
    ("tome_r1", "tome", "tome", 8.0, 88.0, 83.0, True, [12.0, 13.0]),
    ("tome_r2", "tome", "tome", 6.0, 75.0, 70.0, True, [14.5, 17.0]),
    ("tome_r3", "tome", "tome", 4.0, 60.0, 55.0, True, [20.0, 24.0]),
    ("tome_schedule_[4]", "control", "tome_schedule", 4.9, 79.0, 78.0, False, []),
    ("no_saliency_[4]", "ablation", "no_saliency", 5.0, 78.0, 77.0, False, []),
    ("no_background_drop_[4]", "ablation", "no_background_drop", 5.0, 81.0, 79.0, False, []),
    ("random_[4]", "control", "random", 4.8, 82.0, 76.0, False, []),
]


def _sweep(override: dict | None = None) -> pd.DataFrame:
    rows = []
    for sid, fam, var, g, acc, clut, timed, runs in SETTINGS:
        sched = sid.split("_")[-1] if "[" in sid else "[]"
        tput = float(np.median(runs)) if runs else float("nan")
        rows.append({"setting_id": sid, "row": sid, "family": fam, "variant": var, "schedule": sched, "timed": timed,
                     "gflops": g, "gflops_counted": g, "gflops_rel": 10 * g, "acc_test": acc, "acc_clutter": clut,
                     "throughput_runs": json.dumps(runs), "throughput_clips_per_seconds": tput,
                     "walltime_speedup": tput / 11.0, "weights_hash_before": "ab", "weights_hash_after": "ab"})
    sweep = pd.DataFrame(rows)
    for (sid, col), value in (override or {}).items():
        sweep.loc[sweep["setting_id"] == sid, col] = value
    return sweep


def _saliency(**kw) -> pd.DataFrame:
    return pd.DataFrame([{"auroc": 0.8, "auroc_clips": 10, "fg_fraction": 0.2, "fg_fraction_zeroed": 0.06,
                          "zeroed_fg_ratio": 0.3, "weights_unchanged": True, **kw}])


def _verdicts(sweep=None, saliency=None) -> pd.DataFrame:
    m = measure_claims(_sweep() if sweep is None else sweep, _saliency() if saliency is None else saliency,
                       PAPER, EV, seed=0)
    return evaluate_claims(PAPER, m).set_index("id")


def test_every_claim_is_declared_in_paper_yaml_and_measured():
    m = measure_claims(_sweep(), _saliency(), PAPER, EV, seed=0)
    assert set(m) == {c["id"] for c in PAPER["claims"]}
    kinds = {c["id"]: c["kind"] for c in PAPER["claims"]}
    assert kinds["V1"] == kinds["V8"] == "sanity" and kinds["V6"] == "paper"


def test_training_free_and_saliency_claims():
    c = _verdicts()
    assert (c.loc["V1", "verdict"], c.loc["V2a", "verdict"], c.loc["V2b", "verdict"], c.loc["V2c", "verdict"]) == (
        PASS, PASS, PASS, PASS)
    c = _verdicts(saliency=_saliency(weights_unchanged=False, auroc=0.6, zeroed_fg_ratio=0.9))
    assert c.loc["V1", "verdict"] == FAIL and c.loc["V2a", "verdict"] == PASS and c.loc["V2b", "verdict"] == FAIL
    assert c.loc["V2c", "verdict"] == FAIL
    assert _verdicts(saliency=_saliency(auroc=float("nan"))).loc["V2a", "verdict"] == NA


def test_v3_one_value_per_schedule_in_the_gflops_band():
    c = _verdicts()
    assert c.loc["V3", "n"] == 1 and c.loc["V3", "mean"] == pytest.approx(-0.5)  # 89.5 − 90 at 65 % GFLOPs
    assert c.loc["V3", "verdict"] == PASS


def test_v4_against_tome_interpolated_at_the_same_gflops():
    c = _verdicts()  # vid-TLDR [4] at 5 GFLOPs: 80 vs ToMe halfway between 60 (4) and 75 (6) = 67.5
    assert c.loc["V4", "n"] == 1 and c.loc["V4", "mean"] == pytest.approx(12.5) and c.loc["V4", "verdict"] == PASS
    short = _sweep()
    short = short[short["setting_id"] != "tome_r3"]  # ToMe's curve no longer reaches 5 GFLOPs: N/A, not dropped
    c = _verdicts(sweep=short)
    assert c.loc["V4", "verdict"] == NA and "does not reach" in c.loc["V4", "note"]


def test_v4b_gflops_saved_at_a_one_point_drop():
    sweep = _sweep()
    gv = gflops_at_drop(sweep[sweep["family"].isin(["base", "vidtldr"])], 90.0, 1.0)
    assert gv == pytest.approx(5 + 9 * 1.5 / 9.5)  # crossing between 80 (5) and 89.5 (6.5)
    c = _verdicts()
    assert c.loc["V4b", "mean"] == pytest.approx(100 * (9.0 - gv) / 10) and c.loc["V4b", "verdict"] == PASS


def test_v5_background_drop_on_clutter():
    c = _verdicts()
    assert c.loc["V5a", "mean"] == pytest.approx(1.0) and c.loc["V5a", "verdict"] == PASS  # 80 − 79 on clutter
    assert c.loc["V5b", "mean"] == pytest.approx(-1.0) and c.loc["V5b", "verdict"] == FAIL  # best 84 vs base 85
    nan = _verdicts(sweep=_sweep({("vidtldr_[2]", "acc_clutter"): float("nan")}))
    assert nan.loc["V5b", "verdict"] == NA  # a missing clutter value is never skipped by the max


def test_v6_is_directional_against_saliency_off_and_random_drop():
    c = _verdicts()  # 80 − 78 (s=1) = +2, 80 − 82 (random) = −2: the controls disagree
    assert c.loc["V6", "n"] == 2 and c.loc["V6", "verdict"] == INCONCLUSIVE
    assert "no_saliency" in c.loc["V6", "values"] and "random" in c.loc["V6", "values"]
    c = _verdicts(sweep=_sweep({("random_[4]", "acc_test"): 85.0, ("no_saliency_[4]", "acc_test"): 80.0}))
    assert c.loc["V6", "verdict"] == FAIL  # equal to s=1 is not "> 0"
    c = _verdicts(sweep=_sweep({("random_[4]", "acc_test"): 70.0}))
    assert c.loc["V6", "verdict"] == PASS
    missing = _sweep()
    assert _verdicts(sweep=missing[missing["setting_id"] != "random_[4]"]).loc["V6", "verdict"] == NA


def test_v7_throughput_and_v8_flop_accounting():
    c = _verdicts()
    assert c.loc["V7_time", "mean"] == pytest.approx(-1.0) and c.loc["V7_time", "verdict"] == PASS
    assert c.loc["V7b_time", "n"] == 2 and c.loc["V7b_time", "verdict"] == PASS  # [4] at 50 %, r3 at 40 %
    assert c.loc["V8", "n"] == len(SETTINGS) and c.loc["V8", "verdict"] == PASS
    c = _verdicts(sweep=_sweep({("tome_r2", "gflops_counted"): 5.0}))
    assert c.loc["V8", "verdict"] == INCONCLUSIVE  # one setting 20 % off: the others still agree


def _per_clip(sweep: pd.DataFrame, n: int = 20) -> pd.DataFrame:
    rows = []
    for s in sweep.itertuples():
        for split, acc in (("test", s.acc_test), ("clutter", s.acc_clutter)):
            k = int(round(acc / 100 * n))
            rows.append(pd.DataFrame({"setting_id": s.setting_id, "split": split, "clip": np.arange(n),
                                      "label": 0, "correct": np.arange(n) < k}))
    return pd.concat(rows, ignore_index=True)


def test_table_rows_carry_per_clip_and_per_run_values():
    sweep = _sweep()
    ev = {**EV, "tome_r": [1, 2, 3]}
    manifest = pd.DataFrame({"split": ["test"] * 20, "fingerprint": "fp"})
    rows = table_rows(sweep, _per_clip(sweep), _saliency(), manifest, PAPER, ev,
                      {"width": 8, "depth": 2}, {}, {"profile": "test"})
    t3 = rows[rows["table"] == "table_3"].set_index(["row", "metric"])
    top1 = t3.loc[("vid-TLDR", "top1")]
    assert top1["value"] == pytest.approx(80.0) and top1["n"] == 20 and top1["over"] == "clips"
    drop = t3.loc[("vid-TLDR", "top1_drop")]
    assert drop["value"] == pytest.approx(10.0) and drop["n"] == 20  # paired per clip: base − vid-TLDR
    tput = t3.loc[("vid-TLDR", "throughput_clips_per_seconds")]
    assert tput["n"] == 2 and tput["value"] == pytest.approx(16.5) and tput["over"] == "timing runs"
    assert t3.loc[("vid-TLDR", "walltime_speedup")]["value"] == pytest.approx((15 / 10 + 18 / 12) / 2)
    assert t3.loc[("vid-TLDR", "gflops")]["over"] == "" and t3.loc[("ToMe", "gflops")]["value"] == 6.0  # closest, first on a tie
    t4 = rows[rows["table"] == "table_4"].set_index(["row", "metric"])
    assert ("without saliency weighting", "top1") in t4.index and "throughput_clips_per_seconds" not in set(
        rows[rows["table"] == "table_4"]["metric"])
    t1 = rows[rows["table"] == "table_1"]
    assert t1["value"].isna().all() and t1["note"].str.contains("not run in this profile").all()
    assert set(rows["table"]) == set(PAPER["tables"])


def test_render_writes_the_contract_files(tmp_path):
    sweep = _sweep()
    manifest = pd.DataFrame({"split": ["test"] * 20, "fingerprint": "fp"})
    ev = {**EV, "tome_r": [1, 2, 3]}
    rows = table_rows(sweep, _per_clip(sweep), _saliency(), manifest, PAPER, ev, {"width": 8, "depth": 2}, {},
                      {"profile": "test"})
    train_log = pd.DataFrame([{"source": "trained here (embedded)", "val_acc": 90.0, "test_acc": 90.0}])
    files = render(sweep, _saliency(), {}, rows, train_log, PAPER, {"figure_dpi": 40}, ev, {}, {"profile": "test"})
    readme = files["README.md"]
    order = [readme.index(h) for h in ("## What differs", "## Tables", "## Claims", "## Figures",
                                       "## Reading the results", "## How to regenerate")]
    assert order == sorted(order)
    assert "### Table 1:" in readme and "### Retrieval leaderboard:" in readme
    assert "quoted from" in files["table_1.md"] and "(n=20)" in files["table_3.md"]
    claims = pd.read_csv(__import__("io").StringIO(files["claims.csv"])).set_index("id")
    assert claims.loc["V6", "verdict"] == INCONCLUSIVE and claims.loc["V1", "kind"] == "sanity"
    metrics = json.loads(files["metrics.json"])
    assert metrics["table_3"]["vid-TLDR"]["top1_n"] == 20 and metrics["claims"]["V8"]["verdict"] == PASS
    assert not math.isnan(metrics["table_3"]["vid-TLDR"]["top1"])
    assert {"sweep.csv", "plots/accuracy_vs_gflops.csv", "figures/accuracy_vs_gflops.png"} <= set(files)
