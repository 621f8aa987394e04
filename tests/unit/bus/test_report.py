"""BUS's claim measurements follow their definitions in paper.yaml, once per seed; the verdicts come from core's
one rule (seeds that disagree in sign are INCONCLUSIVE, a missing seed makes a claim N/A); every table cell of
ours carries its per-seed mean, std and n; the pipeline is on core's ingest, job cache and MLflow rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from cvpr24.core.claims import FAIL, INCONCLUSIVE, NA, PASS, evaluate_claims
from cvpr24.core.ingest import MissingDatasetError
from cvpr24.pipelines.bus.report import measure_claims

PAPER = yaml.safe_load((Path(__file__).parents[3] / "pipelines" / "bus" / "paper.yaml").read_text())
METRICS = ("common", "private", "h_score", "boundary_f", "small_object_iou", "pseudo_acc_raw", "pseudo_acc_refined")

# variant -> metric values at seed 0; seed 1 adds `SHIFT` to every value (so each difference is the same)
BASE = {"common": 30.0, "private": 10.0, "h_score": 15.0, "boundary_f": 20.0, "small_object_iou": 5.0}
SEED0 = {
    "source_only": {**BASE, "private": 0.0, "h_score": 0.0},
    "source_only_thr": {**BASE, "private": 4.0},
    "st_thr": BASE,
    "st_refine": {**BASE, "pseudo_acc_raw": 80.0, "pseudo_acc_refined": 83.0},
    "st_decon": {**BASE, "private": 12.0, "boundary_f": 23.0},
    "st_ro": {**BASE, "private": 11.0, "small_object_iou": 7.0},
    "st_ap": {**BASE, "private": 13.0},
    "bus": {**BASE, "h_score": 16.0},
}


def _per_run(shift: float = 1.0) -> pd.DataFrame:
    rows = []
    for seed in (0, 1):
        for variant, vals in SEED0.items():
            rec = {"variant": variant, "seed": seed, "job_id": f"{variant}_s{seed}"}
            rec.update({m: vals.get(m, np.nan) + seed * shift for m in METRICS})
            if variant == "source_only":
                rec["private"] = 0.0  # closed set: never predicts private, on every seed
            rows.append(rec)
    return pd.DataFrame(rows)


def _set(per: pd.DataFrame, variant: str, seed: int, metric: str, value: float) -> pd.DataFrame:
    per.loc[(per["variant"] == variant) & (per["seed"] == seed), metric] = value
    return per


def test_every_claim_is_declared_in_paper_yaml_and_measured():
    assert set(measure_claims(_per_run())) == {c["id"] for c in PAPER["claims"]}
    kinds = {c["id"]: c["kind"] for c in PAPER["claims"]}
    assert kinds["C1"] == "sanity" and all(k == "paper" for cid, k in kinds.items() if cid != "C1")


def test_claim_measurements_follow_their_definitions():
    m = measure_claims(_per_run())
    assert m["C1"].units == {"seed 0": 4.0, "seed 1": 5.0}  # Private(+threshold) where closed-set Private = 0
    assert m["C2"].units == {"seed 0": 1.0, "seed 1": 1.0}  # H(BUS) − H(self-training + threshold)
    assert m["C3a"].units == {"seed 0": 2.0, "seed 1": 2.0}
    assert m["C3b"].units == {"seed 0": 3.0, "seed 1": 3.0}
    assert m["C4a"].units == {"seed 0": 1.0, "seed 1": 1.0}  # the weaker of +RO (11) and +AP (13), minus 10
    assert m["C4b"].units == {"seed 0": 2.0, "seed 1": 2.0}
    assert m["C5"].units == {"seed 0": 3.0, "seed 1": 3.0}  # refined − raw pseudo-label accuracy
    assert "per seed +1.00, +1.00" in m["C2"].detail


def test_verdicts_on_the_measurements():
    c = evaluate_claims(PAPER, measure_claims(_per_run())).set_index("id")
    assert (c["verdict"] == PASS).all()
    assert c.loc["C2", "n"] == 2 and c.loc["C2", "margin"] == pytest.approx(1.0)


def test_c1_fails_when_the_closed_set_predicts_private():
    per = _set(_set(_per_run(), "source_only", 0, "private", 2.0), "source_only", 1, "private", 1.0)
    m = measure_claims(per)
    assert m["C1"].units == {"seed 0": -2.0, "seed 1": -1.0}
    assert evaluate_claims(PAPER, m).set_index("id").loc["C1", "verdict"] == FAIL


def test_seeds_that_disagree_in_sign_make_c2_and_c4a_inconclusive():
    """The embedded run's case: a positive mean carried by one seed is not a pass."""
    per = _set(_per_run(), "bus", 0, "h_score", 15.0 - 0.10)  # seed 0: −0.10, seed 1: +1.00
    per = _set(per, "st_ro", 0, "private", 10.0 - 0.14)         # +RO below the base on seed 0 only
    c = evaluate_claims(PAPER, measure_claims(per)).set_index("id")
    assert c.loc["C2", "verdict"] == INCONCLUSIVE and c.loc["C2", "margin"] > 0 and c.loc["C2", "min_margin"] < 0
    assert c.loc["C4a", "verdict"] == INCONCLUSIVE and c.loc["C4a", "passed"] is None


def test_no_gain_on_every_seed_fails_a_strict_claim():
    per = _per_run()
    for seed in (0, 1):
        per = _set(per, "st_refine", seed, "pseudo_acc_refined", 80.0 + seed)  # refined == raw
    c = evaluate_claims(PAPER, measure_claims(per)).set_index("id")
    assert c.loc["C5", "verdict"] == FAIL and c.loc["C5", "margin"] == 0


def test_a_missing_seed_or_row_makes_the_claim_na_not_a_smaller_sample():
    per = _per_run()
    per = per[~((per["variant"] == "st_ap") & (per["seed"] == 1))]  # +AP did not run on seed 1
    per = _set(per, "st_decon", 0, "boundary_f", np.nan)
    c = evaluate_claims(PAPER, measure_claims(per)).set_index("id")
    assert c.loc["C4a", "verdict"] == NA and "seed 1" in c.loc["C4a", "note"]  # no min() over a NaN
    assert c.loc["C3b", "verdict"] == NA and "seed 0" in c.loc["C3b", "note"]
    assert c.loc["C2", "verdict"] == PASS  # claims on rows that ran are unaffected
    c = evaluate_claims(PAPER, measure_claims(_per_run()[lambda d: d["variant"] != "st_refine"])).set_index("id")
    assert c.loc["C5", "verdict"] == NA


def test_table_cells_carry_per_seed_mean_std_and_n():
    from cvpr24.pipelines.bus.nodes import table_rows

    per = _per_run(shift=2.0)
    per = per[per["variant"] != "st_ap"]  # a row this profile does not run
    log = pd.DataFrame({"job_id": ["a", "b"], "seconds": [1.0, 2.0], "cached": [False, False]})
    ev = {"data_label": "toy", "threshold": 0.5}
    rows = table_rows(per, PAPER, ev, {"checkpoint_dir": "x"}, {"profile": "t"},
                      pd.DataFrame({"fingerprint": ["f"]}), log).set_index(["table", "row", "metric"])
    cell = rows.loc[("table_main", "BUS", "h_score")]
    assert cell["value"] == pytest.approx(17.0) and cell["n"] == 2 and cell["over"] == "seeds"
    assert cell["std"] == pytest.approx(np.std([16.0, 18.0], ddof=1)) and cell["source"] == "ours"
    ap = rows.loc[("table_ablation", "+ attaching private (AP)", "private")]
    assert np.isnan(ap["value"]) and ap["n"] == 0 and "st_ap" in ap["note"]
    assert rows.loc[("table_main", "Source only (closed set)", "common"), "data_fingerprint"] == "f"
    from io import StringIO

    from cvpr24.core.reporting import table_csv, table_specs

    csv = pd.read_csv(StringIO(table_csv(table_specs(PAPER)["table_main"], rows.reset_index())))
    bus = csv[csv["method"] == "BUS"].iloc[0]
    assert bus["h_score_n"] == 2 and bus["h_score_std"] == pytest.approx(cell["std"])  # the CSV has n and std
    # a NaN seed empties the cell (with a note) instead of averaging the other seed
    per = _set(per, "bus", 1, "h_score", np.nan)
    rows = table_rows(per, PAPER, ev, {}, {"profile": "t"}, pd.DataFrame({"fingerprint": ["f"]}), log)
    cell = rows.set_index(["table", "row", "metric"]).loc[("table_main", "BUS", "h_score")]
    assert np.isnan(cell["value"]) and cell["n"] == 2 and "1 of 2 seeds" in cell["note"]


def test_paper_yaml_labels_every_table_and_marks_the_readme_number_as_quoted():
    for tid, t in PAPER["tables"].items():
        assert t.get("label"), tid
    readme = PAPER["tables"]["table_readme"]["rows"][0]
    assert readme["h_score"] == 62.81 and "README" in readme["quoted_from"]


def test_pipeline_uses_core_mlflow_rows_and_no_paper_copy():
    from cvpr24.core.reporting import mlflow_rows
    from cvpr24.pipelines.bus import nodes
    from cvpr24.pipelines.bus.pipeline import create_pipeline

    assert not hasattr(nodes, "mlflow_rows")
    node = next(n for n in create_pipeline().nodes if n.name == "bus.log_runs")
    assert node.func is mlflow_rows


def test_real_source_without_roots_raises_core_missing_dataset_error():
    from cvpr24.pipelines.bus import nodes

    with pytest.raises(MissingDatasetError, match="bus.data.real"):
        nodes.ingest({"source": "real", "real": {}}, {"seed": 0})


def test_jobs_run_once_through_core_cached_job(tmp_path):
    from cvpr24.pipelines.bus import method as Me

    rng = np.random.default_rng(0)
    arrays = {"src_img": rng.integers(0, 255, (4, 16, 16, 3), dtype=np.uint8),
              "src_lab": rng.integers(0, 13, (4, 16, 16)).astype(np.uint8)}
    cfg = {"model": {"arch": "small_conv", "widths": [8, 8, 8, 8], "embed": 4}, "batch_size": 2, "jitter": 0.1,
           "optimizer": {"lr": 1e-3, "warmup": 1}, "checkpoint_every": 100, "log_every": 1,
           "pretrain": {"iterations": 2}}
    job = {"job_id": "pretrain_s0", "kind": "pretrain", "variant": "source_only", "seed": 0}
    kw = {"job": job, "arrays": arrays, "init": None, "cfg": cfg, "seed": 0, "checkpoint_root": str(tmp_path),
          "code": "c"}
    first, again = Me.run_job(**kw), Me.run_job(**kw)
    assert not first["cached"] and again["cached"]
    assert all(np.array_equal(first["student"][k].numpy(), again["student"][k].numpy()) for k in first["student"])
    assert len(list(tmp_path.glob("pretrain_s0-*/final.pt"))) == 1
