"""MASH's claim measurements follow their definitions in paper.yaml, per image (crop, seed); the verdicts
come from core's one rule; Table 4 measures every tile size on the same images and shows n."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from cvpr24.core.claims import FAIL, INCONCLUSIVE, NA, PASS, evaluate_claims
from cvpr24.pipelines.mash.report import measure_claims

PAPER = yaml.safe_load((Path(__file__).parents[3] / "pipelines" / "mash" / "paper.yaml").read_text())

PSNR = {  # group -> method -> psnr, for crops x and y
    "gauss_b0": {"bsd_t0.2": 30.0, "bsd_t0.5": 29.0, "bsd_t0.8": 28.0, "bsd_t0.8_lps": 27.5, "mash_nolps": 30.0},
    "gauss_b1": {"bsd_t0.2": 24.0, "bsd_t0.5": 25.0, "bsd_t0.8": 26.0, "bsd_t0.8_lps": 26.5, "mash_nolps": 26.0},
}


def _per_image(crops=("x", "y")):
    rows = [{"image_id": f"{group}_{crop}", "group": group, "method": method, "psnr": value + (crop == "y")}
            for crop in crops for group, methods in PSNR.items() for method, value in methods.items()]
    return pd.DataFrame(rows)


def _selection(crops=("x", "y")):
    rows = []
    for crop in crops:
        rows += [{"image_id": f"gauss_b0_{crop}", "group": "gauss_b0", "epsilon": 1.0, "tau": 0.2},
                 {"image_id": f"gauss_b1_{crop}", "group": "gauss_b1", "epsilon": 5.0, "tau": 0.8}]
    return pd.DataFrame(rows)


def test_every_claim_is_declared_in_paper_yaml_and_measured():
    m = measure_claims(_per_image(), _selection(), seed=0)
    assert set(m) == {c["id"] for c in PAPER["claims"]}


def test_claim_measurements_follow_their_definitions():
    m = measure_claims(_per_image(), _selection(), seed=0)
    assert m["C1"].units == {"gauss_b0_x": pytest.approx(2.0), "gauss_b0_y": pytest.approx(2.0)}
    assert list(m["C2"].units.values()) == pytest.approx([(26 - 24) - (28 - 30)] * 2)  # per crop
    assert m["C3"].units == {"gauss:x": 4.0, "gauss:y": 4.0}  # camera groups absent: no camera pairs
    assert list(m["C4"].units.values()) == pytest.approx([30 - 26] * 2)
    assert list(m["C5"].units.values()) == pytest.approx([0.5, 0.5])  # correlated images only (beta=1)
    assert sorted(m["C6"].units.values()) == pytest.approx([1.0, 1.0, 1.0, 1.0])
    assert list(m["C7"].units.values()) == pytest.approx([1.0, 1.0])
    assert m["C8"].units == {"seed 0": 1.0}  # both selections equal the best fixed tau


def test_verdicts_on_the_measurements():
    c = evaluate_claims(PAPER, measure_claims(_per_image(), _selection(), seed=0)).set_index("id")
    assert (c["verdict"] == PASS).all()
    assert c.loc["C1", "margin"] == pytest.approx(2.0 - 0.3) and c.loc["C1", "n"] == 2


def test_images_that_disagree_make_a_claim_inconclusive_and_consistent_misses_fail():
    per = _per_image()
    sel = (per["group"] == "gauss_b1") & (per["method"] == "bsd_t0.8_lps")
    per.loc[sel & (per["image_id"] == "gauss_b1_x"), "psnr"] = 25.0  # LPS hurts on x, helps on y
    c = evaluate_claims(PAPER, measure_claims(per, _selection(), seed=0)).set_index("id")
    assert c.loc["C5", "verdict"] == INCONCLUSIVE and c.loc["C5", "passed"] is None
    per.loc[sel, "psnr"] = 20.0
    c = evaluate_claims(PAPER, measure_claims(per, _selection(), seed=0)).set_index("id")
    assert c.loc["C5", "verdict"] == FAIL and c.loc["C5", "margin"] < 0


def test_a_missing_value_makes_the_claim_na_not_a_smaller_sample():
    per = _per_image()
    per = per[~((per["image_id"] == "gauss_b0_y") & (per["method"] == "bsd_t0.8"))]
    c = evaluate_claims(PAPER, measure_claims(per, _selection(), seed=0)).set_index("id")
    assert c.loc["C1", "verdict"] == NA and "gauss_b0_y" in c.loc["C1", "note"]
    sel = _selection()
    sel.loc[0, "epsilon"] = float("nan")
    c = evaluate_claims(PAPER, measure_claims(_per_image(), sel, seed=0)).set_index("id")
    assert c.loc["C3", "verdict"] == NA  # no np.nanmin: the NaN is not dropped


def test_table_4_uses_the_same_images_for_every_tile_size_and_reports_n():
    from cvpr24.pipelines.mash.nodes import table_rows

    images = {"cam_full_a": "cam_rgb", "cam_full_b": "cam_rgb"}
    jobs, per = [], []
    for sid, group in images.items():
        methods = ["bsd_t0.5", "bsd_t0.8_lps"] + (["bsd_t0.8_lps_s2"] if sid == "cam_full_a" else [])
        for m in methods:
            jobs.append({"job_id": f"{sid}__{m}", "image_id": sid, "group": group, "method": m, "kind": "bsd",
                         "tile_size": 2 if m.endswith("_s2") else 4})
            per.append({"image_id": sid, "group": group, "method": m, "psnr": 30.0 if sid == "cam_full_a" else 20.0,
                        "ssim": 0.5})
    jobs, per = pd.DataFrame(jobs), pd.DataFrame(per)
    log = pd.DataFrame({"job_id": jobs["job_id"], "seconds": 1.0, "cached": False})
    sel = pd.DataFrame([{"image_id": sid, "group": g, "tau": 0.5, "epsilon": 2.0, "mash_seconds": 3.0}
                        for sid, g in images.items()])
    params = {"column_groups": {"sidd_val": "cam_rgb", "sidd_bench": None, "fmdd": None, "polyu": None}}
    train = {"selection": {"preset": "paper", "presets": {"paper": {"tau_high": 0.8}}}, "width": 8, "iterations": 1}
    manifest = pd.DataFrame({"height": [32], "fingerprint": ["f"]})
    rows = table_rows(per, sel, jobs, log, PAPER, params, train, {"profile": "t"}, manifest)
    t4 = rows[rows["table"] == "table_4"].set_index("row")
    # s=4 is run on both images, s=2 on one: both rows average the same image (a), n=1
    assert t4.loc["4", "value"] == 30.0 and t4.loc["2", "value"] == 30.0
    assert t4.loc["4", "n"] == 1 and t4.loc["2", "n"] == 1 and "cam_full_a" in t4.loc["4", "data"]
    assert pd.isna(t4.loc["3", "value"]) and "not run" in t4.loc["3", "note"]
    t2 = rows[(rows["table"] == "table_2") & (rows["metric"] == "sidd_acc")].iloc[0]
    assert t2["n"] == 2  # Table 2 says how many images its percentage is of
