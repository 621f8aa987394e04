"""CMS's claim measurements follow their definitions in paper.yaml, per dataset and seed; the verdicts come
from core's one rule; a missing seed makes a claim N/A; table cells carry n and std over seeds; the K table
names its rows by the datasets we ran; the main table's baseline rows are quoted with their source."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from cvpr24.core.claims import FAIL, INCONCLUSIVE, NA, PASS, evaluate_claims
from cvpr24.core.reporting import table_specs
from cvpr24.pipelines.cms.nodes import table_rows
from cvpr24.pipelines.cms.report import measure_claims

PAPER = yaml.safe_load((Path(__file__).parents[3] / "pipelines" / "cms" / "paper.yaml").read_text())
DATA = {"datasets": {"digits": {"kind": "digits", "n_classes": 10}, "glyphs": {"kind": "glyphs", "n_classes": 24}}}
GROUPS = {"cifar100": "digits", "cub": "glyphs", "imagenet100": None, "scars": None, "aircraft": None,
          "herbarium19": None, "generic": "digits", "fine": "glyphs"}
ACC = {  # row -> (all, old, new); seed 1 adds 1 point everywhere
    "cms_gt": (60.0, 70.0, 50.0), "cms_alpha0": (55.0, 60.0, 45.0), "kmeans": (50.0, 55.0, 40.0),
    "gcd": (52.0, 60.0, 42.0), "cms_no_ims": (58.0, 65.0, 48.0), "cms_est": (57.0, 66.0, 47.0),
    "cms_ssk": (59.0, 66.0, 49.0), "cms_k4": (50.0, 55.0, 45.0),
}


def _results():
    rows = []
    for d in DATA["datasets"]:
        for seed in (0, 1):
            for row, (a, o, n) in ACC.items():
                rec = {"dataset": d, "seed": seed, "row": row, "all": a + seed, "old": o + seed, "new": n + seed, "k": 10}
                if row == "cms_gt":
                    rec.update(ims_t=2, ims_iterations=4, ims_best_all=a + seed + 0.5)
                rows.append(rec)
    return pd.DataFrame(rows)


def _curves():
    return pd.DataFrame([{"dataset": d, "seed": s, "curve": "purity", "x": int(lab == "z"), "label": lab,
                          "y": 80.0 + 2 * (lab == "z")} for d in DATA["datasets"] for s in (0, 1) for lab in "vz"])


def _train_log():
    k = {"digits": (9, 11), "glyphs": (24, 30)}
    return pd.DataFrame([{"dataset": d, "variant": "cms", "seed": s, "k_est": k[d][s]} for d in k for s in (0, 1)])


def _measure(results=None, curves=None, log=None):
    return measure_claims(_results() if results is None else results, _curves() if curves is None else curves,
                          _train_log() if log is None else log, DATA, GROUPS)


def test_every_claim_is_declared_in_paper_yaml_and_measured():
    assert set(_measure()) == {c["id"] for c in PAPER["claims"]}


def test_claim_measurements_follow_their_definitions():
    m = _measure()
    assert m["C1"].units == {"digits/s0": 5.0, "digits/s1": 5.0}  # generic dataset only
    assert m["C1b"].units == {"glyphs/s0": 5.0, "glyphs/s1": 5.0}  # fine-grained dataset only
    assert set(m["C2"].units.values()) == {10.0} and len(m["C2"].units) == 4  # dataset x seed
    assert len(m["C2b"].units) == 16 and m["C2b"].units["digits/s0/gcd/new"] == pytest.approx(8.0)
    assert set(m["C3"].units.values()) == {2.0}
    assert set(m["C4"].units.values()) == {2.0}
    assert m["C5"].units == pytest.approx({"digits/s0": 10.0, "digits/s1": 10.0, "glyphs/s0": 0.0, "glyphs/s1": 25.0})
    assert set(m["C5b"].units.values()) == {-3.0}
    assert set(m["C6"].units.values()) == {1.0}
    assert set(m["C7"].units.values()) == {20.0}
    assert set(m["C8"].units.values()) == {-0.5}  # the picked step is 0.5 pt below the best step IMS ran


def test_verdicts_on_the_measurements():
    c = evaluate_claims(PAPER, _measure()).set_index("id")
    assert (c.drop(index="C2")["verdict"] == PASS).all()
    assert c.loc["C2", "verdict"] == PASS and c.loc["C2", "margin"] == pytest.approx(10.0 - 5.0)
    assert c.loc["C5", "n"] == 4 and c.loc["C5", "min_margin"] == pytest.approx(30.0 - 25.0)
    assert c.loc["C8", "kind"] == "sanity"


def test_seeds_that_disagree_are_inconclusive_and_consistent_misses_fail():
    res = _results()
    no_ims = res["row"] == "cms_no_ims"
    res.loc[no_ims & (res["seed"] == 1), "all"] = 99.0  # IMS hurts on seed 1 of both datasets
    c = evaluate_claims(PAPER, _measure(res)).set_index("id")
    assert c.loc["C4", "verdict"] == INCONCLUSIVE and c.loc["C4", "passed"] is None
    res.loc[no_ims, "all"] = 99.0
    c = evaluate_claims(PAPER, _measure(res)).set_index("id")
    assert c.loc["C4", "verdict"] == FAIL and c.loc["C4", "margin"] < 0


def test_ims_stopping_check_can_fail():
    res = _results()
    res.loc[res["row"] == "cms_gt", "ims_best_all"] += 5.0  # the best step is 5.5 pt above the picked one
    c = evaluate_claims(PAPER, _measure(res)).set_index("id")
    assert c.loc["C8", "verdict"] == FAIL


def test_a_missing_seed_makes_the_claim_na_not_a_smaller_sample():
    res = _results()
    res = res[~((res["dataset"] == "digits") & (res["row"] == "cms_alpha0") & (res["seed"] == 1))]
    c = evaluate_claims(PAPER, _measure(res)).set_index("id")
    assert c.loc["C1", "verdict"] == NA and "digits/s1" in c.loc["C1", "note"]
    res = _results()
    res.loc[(res["row"] == "cms_gt") & (res["dataset"] == "glyphs"), "ims_best_all"] = float("nan")
    c = evaluate_claims(PAPER, _measure(res)).set_index("id")
    assert c.loc["C8", "verdict"] == NA  # no nanmin: the NaN is not dropped


def _rows():
    ev = {"column_datasets": GROUPS, "k": 8}
    manifest = pd.DataFrame({"fingerprint": ["f"]})
    return table_rows(_results(), _train_log(), PAPER, DATA, ev, {"profile": "t"}, manifest)


def test_table_cells_carry_n_and_std_over_seeds():
    rows = _rows().set_index(["table", "row", "metric"])
    cms = rows.loc[("gcd", "CMS", "cifar100_all")]
    assert cms["value"] == 60.5 and cms["n"] == 2 and cms["over"] == "seeds" and cms["std"] == pytest.approx(0.7071, 1e-3)
    assert pd.isna(rows.loc[("gcd", "CMS", "imagenet100_all"), "value"])
    assert "full profile" in rows.loc[("gcd", "CMS", "imagenet100_all"), "note"]
    assert pd.isna(rows.loc[("gcd", "SimGCD", "cub_all"), "value"])  # not reproduced: says why
    assert rows.loc[("k_study", "CMS, k=4 in training", "generic_all"), "n"] == 2


def test_k_estimation_rows_are_named_by_our_datasets():
    k = _rows().query("table == 'k_estimation'").set_index(["row", "metric"])
    paper_rows = {r["dataset"] for r in PAPER["tables"]["k_estimation"]["rows"]}
    assert set(k.index.get_level_values(0)) == {"digits-gcd (embedded)", "glyphs-gcd (embedded)"} | paper_rows
    assert "not run in this profile" in k.loc[("CIFAR-100", "k_est"), "note"]  # the paper's row, not ours
    assert k.loc[("digits-gcd (embedded)", "k_est"), "value"] == 10.0
    assert k.loc[("digits-gcd (embedded)", "k_est"), "n"] == 2
    assert k.loc[("glyphs-gcd (embedded)", "k_err"), "value"] == pytest.approx(12.5)
    assert k.loc[("digits-gcd (embedded)", "k_gt"), "value"] == 10.0


def test_every_table_has_a_label_and_quoted_rows_name_their_source():
    for spec in table_specs(PAPER).values():
        assert PAPER["tables"][spec.table_id].get("label") and spec.title
    gcd = {r["method"]: r for r in PAPER["tables"]["gcd"]["rows"]}
    assert gcd["k-means"]["cub_all"] == 34.3 and "SEAL" in gcd["k-means"]["quoted_from"]
    assert gcd["ORCA"]["cifar100_all"] == "not found"  # the two sources conflict
    assert "quoted_from" not in gcd["CMS"] and gcd["CMS"]["cifar100_all"] == 82.3
