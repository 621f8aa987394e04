"""DDPS's claim measurements follow their definitions in paper.yaml, one value per held-out test object (and
per N / initialisation / test where the claim ranges over them); verdicts come from core's one rule, a
missing value makes a claim N/A (counted, never dropped); table cells carry their per-scene n and std."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from cvpr24.core.claims import FAIL, INCONCLUSIVE, NA, PASS, evaluate_claims, tally
from cvpr24.pipelines.ddps.nodes import table_rows
from cvpr24.pipelines.ddps.report import measure_claims

PAPER = yaml.safe_load((Path(__file__).parents[3] / "pipelines" / "ddps" / "paper.yaml").read_text())
EVALUATE = {"main_run": "learned_n4_tri_random", "n_list": [2, 4, 8], "figure_patterns": []}
REPORT = {"specular_rho_s": 0.2}
RUNS = pd.DataFrame([
    {"run_id": "learned_n4_tri_random", "init": "tri_random", "n_patterns": 4, "channels": "rgb", "basis": "realistic"},
    {"run_id": "learned_n4_OLAT", "init": "OLAT", "n_patterns": 4, "channels": "rgb", "basis": "realistic"},
    {"run_id": "learned_n2_tri_random", "init": "tri_random", "n_patterns": 2, "channels": "rgb", "basis": "realistic"},
    {"run_id": "learned_n8_tri_random", "init": "tri_random", "n_patterns": 8, "channels": "rgb", "basis": "realistic"},
    {"run_id": "learned_n4_mono", "init": "mono_random", "n_patterns": 4, "channels": "mono", "basis": "realistic"},
    {"run_id": "learned_n4_simplified", "init": "tri_random", "n_patterns": 4, "channels": "rgb",
     "basis": "simplified"},
])
BASE = {  # mean error (deg) under the full test on scene a; scene b adds 2, each condition its offset
    "heuristic:tri_random:N4": 30, "heuristic:OLAT:N4": 40, "heuristic:mono_complementary:N4": 20,
    "heuristic:tri_random:N2": 25, "heuristic:tri_random:N8": 35,
    "learned:learned_n4_tri_random": 10, "learned:learned_n4_OLAT": 14, "learned:learned_n2_tri_random": 15,
    "learned:learned_n8_tri_random": 8, "learned:learned_n4_simplified": 13, "learned:learned_n4_mono": 11,
}
COND = {"full": 0.0, "mixed": 2.0, "calib": 1.0, "relit": 3.0, "full_noisefree": -1.0, "mixed_noisefree": 0.5}
SCENES = {"a": (0.0, 0.3), "b": (2.0, 0.1)}  # offset, rho_s (a is specular)


def _per_scene() -> pd.DataFrame:
    rows = []
    for pattern, base in BASE.items():
        kind, rest = pattern.split(":", 1)
        family = rest.split(":")[0] if kind == "heuristic" else RUNS.set_index("run_id").loc[rest, "init"]
        n = int(rest.split(":N")[1]) if kind == "heuristic" else int(RUNS.set_index("run_id").loc[rest, "n_patterns"])
        for cond, dc in COND.items():
            for scene, (ds, rho) in SCENES.items():
                e = base + dc + ds
                rows.append({"pattern": pattern, "kind": kind, "family": family, "n_patterns": n,
                             "run_id": rest if kind == "learned" else "", "channels": "rgb", "basis": "",
                             "condition": cond, "scene": scene, "rho_s": rho, "mean_err": e, "median_err": e - 1,
                             "acc10": 50.0, "acc20": 70.0, "acc30": 90.0, "n_pixels": 100})
    for scene, (_, rho) in SCENES.items():
        rows.append({"pattern": "reference:sanity_olat144", "kind": "reference", "family": "OLAT-144",
                     "n_patterns": 144, "run_id": "", "channels": "rgb", "basis": "", "condition": "sanity",
                     "scene": scene, "rho_s": rho, "mean_err": 1e-4, "median_err": 1e-4, "acc10": 100.0,
                     "acc20": 100.0, "acc30": 100.0, "n_pixels": 100})
    return pd.DataFrame(rows)


def _claims(per_scene=None, runs=RUNS):
    m = measure_claims(_per_scene() if per_scene is None else per_scene, runs, EVALUATE, REPORT)
    return evaluate_claims(PAPER, m).set_index("id")


def test_every_claim_is_declared_in_paper_yaml_and_measured():
    m = measure_claims(_per_scene(), RUNS, EVALUATE, REPORT)
    assert set(m) == {c["id"] for c in PAPER["claims"]}
    kinds = {c["id"]: c["kind"] for c in PAPER["claims"]}
    assert kinds["K7"] == "sanity" and all(k == "paper" for cid, k in kinds.items() if cid != "K7")


def test_claim_measurements_follow_their_definitions():
    m = measure_claims(_per_scene(), RUNS, EVALUATE, REPORT)
    # K1: per (N, scene) best heuristic (by mean) − learned: N=2 tri random, N=4 mono complementary
    assert m["K1"].units == {"N=2: a": 10, "N=2: b": 10, "N=4: a": 10, "N=4: b": 10, "N=8: a": 27, "N=8: b": 27}
    assert m["K1b"].units == {"tri_random: a": 20, "tri_random: b": 20, "OLAT: a": 26, "OLAT: b": 26}
    assert m["K1c"].units == pytest.approx({"a": 100 * (1 - 10 / 20), "b": 100 * (1 - 12 / 22)})
    assert m["K2"].units == pytest.approx({"a": 5 - 2, "b": 5 - 2})  # std of [30, 40] − std of [10, 14]
    assert m["K2b"].units == {"a": 35 - 14, "b": 35 - 14}  # median initial − worst learned
    assert m["K3"].units == {"a": 10, "b": 10}  # under the calibration error
    assert m["K4"].units == {"full: a": 10, "full: b": 10, "relit: a": 10, "relit: b": 10}
    assert m["K5"].units == {"a": 2.0}  # specular objects only; mixed − separated
    assert m["K6"].units == {"a": 3, "b": 3}
    assert m["K7"].units == {"a": 1e-4, "b": 1e-4}
    assert m["K8"].units == {"N=2→4: a": 5, "N=2→4: b": 5, "N=4→8: a": 2, "N=4→8: b": 2}
    assert "mono complementary" in m["K1"].detail


def test_verdicts_on_the_measurements_and_tallies_apart():
    c = _claims()
    assert (c["verdict"] == PASS).all()
    assert c.loc["K7", "kind"] == "sanity" and c.loc["K7", "margin"] == pytest.approx(1.0 - 1e-4)
    assert c.loc["K1c", "margin"] == pytest.approx((50 + 100 * (1 - 12 / 22)) / 2 - 5)
    counts = tally(c.reset_index(), "paper")
    assert counts[PASS] == len(PAPER["claims"]) - 1 and tally(c.reset_index(), "sanity")[PASS] == 1


def test_scenes_that_disagree_make_a_claim_inconclusive_and_consistent_misses_fail():
    per = _per_scene()
    sel = (per["pattern"] == "learned:learned_n4_simplified") & (per["condition"] == "full")
    per.loc[sel & (per["scene"] == "a"), "mean_err"] = 5.0  # simplified wins on a, loses on b
    assert _claims(per).loc["K6", "verdict"] == INCONCLUSIVE
    per.loc[sel, "mean_err"] = 1.0
    c = _claims(per)
    assert c.loc["K6", "verdict"] == FAIL and c.loc["K6", "margin"] < 0


def test_a_missing_value_makes_the_claim_na_and_it_stays_counted():
    per = _per_scene()
    per = per[~((per["pattern"] == "learned:learned_n8_tri_random") & (per["scene"] == "b"))]
    c = _claims(per)
    assert c.loc["K1", "verdict"] == NA and "N=8: b" in c.loc["K1", "note"]
    assert c.loc["K8", "verdict"] == NA and c.loc["K8", "n"] == 4
    per = _per_scene()
    per.loc[per["scene"] == "a", "rho_s"] = 0.0  # no specular test object
    runs = RUNS[RUNS["basis"] != "simplified"]
    c = _claims(per, runs)
    assert c.loc["K5", "verdict"] == NA and "rho_s" in c.loc["K5", "note"]
    assert c.loc["K6", "verdict"] == NA and "simplified" in c.loc["K6", "note"]
    assert len(c) == len(PAPER["claims"])  # never left out of the tally
    assert tally(c.reset_index(), "paper")[NA] == 2


def test_table_cells_carry_per_scene_n_and_std():
    manifest = pd.DataFrame({"fingerprint": ["f"]})
    rows = table_rows(_per_scene(), RUNS, pd.DataFrame(), PAPER, EVALUATE, {"runs": []}, {"profile": "t"}, manifest)
    t = rows.set_index(["table", "row", "metric"])
    ours = t.loc[("table_1", "DDPS (learned)", "mean_err")]
    assert ours["value"] == 11 and ours["n"] == 2 and ours["over"] == "scenes" and ours["std"] == pytest.approx(2 ** 0.5)
    best = t.loc[("table_3", "4", "best_heuristic_err")]
    assert best["value"] == 21 and "mono complementary" in best["data"]
    assert t.loc[("table_4", "calibration error (light positions + N(0, 1 cm) in the reconstructor)",
                  "learned_err"), "value"] == 12
    psfcn = t.loc[("table_5", "PS-FCN", "mean_err")]
    assert pd.isna(psfcn["value"]) and "pretrained" in psfcn["note"]
    wood = t.loc[("table_5", "Woodham least squares, 144 OLAT images", "mean_err")]
    assert pd.isna(wood["value"]) and "144 OLAT" in wood["note"]  # no reference rows in this frame
    no_n8 = table_rows(_per_scene(), RUNS[RUNS["run_id"] != "learned_n8_tri_random"], pd.DataFrame(), PAPER,
                       EVALUATE, {"runs": []}, {"profile": "t"}, manifest).set_index(["table", "row", "metric"])
    assert "no learning run with 8 patterns" in no_n8.loc[("table_3", "8", "learned_err"), "note"]


def test_report_never_puts_a_paper_number_beside_ours():
    from cvpr24.core.reporting import build_report

    manifest = pd.DataFrame({"fingerprint": ["f"]})
    rows = table_rows(_per_scene(), RUNS, pd.DataFrame(), PAPER, EVALUATE, {"runs": []}, {"profile": "t"}, manifest)
    out = build_report("ddps", PAPER, rows, _claims().reset_index(), profile="t")
    assert "Paper numbers available beside ours: 0 of" in out["README.md"]
    t1 = pd.read_csv(__import__("io").StringIO(out["table_1.csv"]))
    assert (t1["mean_err_paper"].dropna() == "not found").all()


def test_pipeline_logs_through_core_mlflow_rows_and_init_is_lazy():
    from cvpr24.core.reporting import mlflow_rows
    from cvpr24.pipelines.ddps.pipeline import create_pipeline

    funcs = {n.name: n.func for n in create_pipeline().nodes}
    assert funcs["ddps.log_runs"] is mlflow_rows
    init = (Path(__file__).parents[3] / "src" / "cvpr24" / "pipelines" / "ddps" / "__init__.py").read_text()
    assert "from cvpr24.pipelines.ddps.pipeline import" not in init.split("def create_pipeline")[0]
