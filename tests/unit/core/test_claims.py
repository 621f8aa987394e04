"""The one verdict rule (cvpr24.core.claims): PASS / FAIL need the mean and every seed to agree,
disagreeing seeds are INCONCLUSIVE, a missing value is N/A, sanity checks are tallied apart."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from cvpr24.core.claims import (
    FAIL,
    INCONCLUSIVE,
    NA,
    PASS,
    Measurement,
    claim_specs,
    evaluate_claims,
    tally,
    verdict,
)

PAPER = {"claims": [
    {"id": "A", "kind": "paper", "statement": "x beats y", "where": "Tab. 1", "check": "x − y",
     "direction": ">", "threshold": 0.0, "units": "dB", "over": "seeds"},
    {"id": "B", "kind": "paper", "statement": "error below 1", "where": "Sec. 4", "check": "err",
     "direction": "<=", "threshold": 1.0, "over": "seeds"},
    {"id": "S", "kind": "sanity", "statement": "loss falls", "where": "ours", "check": "drop",
     "direction": ">=", "threshold": 0.0},
]}


def spec(cid="A"):
    return claim_specs(PAPER)[cid]


@pytest.mark.parametrize("values, expected", [
    ([0.5, 0.2, 0.1], PASS),              # mean and every seed clear
    ([-0.5, -0.2], FAIL),                 # mean and every seed miss
    ([0.9, -0.1], INCONCLUSIVE),          # seeds disagree in sign, mean clears: not a pass
    ([0.1, -0.9], INCONCLUSIVE),          # seeds disagree, mean misses: not a fail either
    ([0.3], PASS),                        # single seed: the mean is that seed
    ([-0.3], FAIL),
    ([0.0], FAIL),                        # strict '>' : zero does not clear
    ([], NA),                             # nothing measured
    ([0.5, float("nan")], NA),            # one missing seed: never decided on the others
])
def test_verdict_rule(values, expected):
    assert verdict(spec(), values)["verdict"] == expected


def test_margin_direction_and_non_strict_threshold():
    b = spec("B")  # value <= 1.0
    v = verdict(b, [0.5, 1.0])
    assert v["verdict"] == PASS and v["margin"] == pytest.approx(0.25) and v["min_margin"] == 0.0
    assert verdict(b, [1.5, 2.0])["verdict"] == FAIL
    assert verdict(spec("S"), [0.0])["verdict"] == PASS  # '>=' : zero clears


def test_nan_is_not_silently_dropped_and_is_named():
    out = evaluate_claims(PAPER, {"A": Measurement({"seed 0": 1.0, "seed 1": float("nan")})}).set_index("id")
    assert out.loc["A", "verdict"] == NA and out.loc["A", "passed"] is None
    assert "seed 1" in out.loc["A", "note"]
    assert math.isnan(out.loc["A", "margin"])


def test_unmeasured_claim_is_na_and_unknown_measurement_is_an_error():
    out = evaluate_claims(PAPER, {"A": Measurement([1.0, 2.0])}).set_index("id")
    assert out.loc["B", "verdict"] == NA and "not measured" in out.loc["B", "note"]
    assert out.loc["A", "n"] == 2 and out.loc["A", "mean"] == 1.5 and out.loc["A", "passed"] is True
    with pytest.raises(ValueError, match="Z"):
        evaluate_claims(PAPER, {"Z": Measurement([1.0])})


def test_empty_measurement_keeps_its_own_reason_or_gets_a_generic_one():
    out = evaluate_claims(PAPER, {"A": Measurement({}, note="both at the floor"), "B": Measurement({})}).set_index("id")
    assert out.loc["A", "verdict"] == NA and out.loc["A", "note"].endswith("both at the floor")
    assert "to measure on" not in out.loc["A", "note"]
    assert out.loc["B", "verdict"] == NA and "to measure on in this profile" in out.loc["B", "note"]
    assert "no  " not in out.loc["B", "note"]


def test_sanity_checks_are_kept_out_of_the_paper_tally():
    out = evaluate_claims(PAPER, {"A": Measurement([1.0]), "B": Measurement([0.5, 3.0]), "S": Measurement([1.0])})
    assert tally(out, "paper") == {PASS: 1, FAIL: 0, INCONCLUSIVE: 1, NA: 0}
    assert tally(out, "sanity") == {PASS: 1, FAIL: 0, INCONCLUSIVE: 0, NA: 0}


def test_bad_claim_entries_are_named():
    with pytest.raises(ValueError, match="C9.*direction"):
        claim_specs({"claims": [{"id": "C9", "kind": "paper", "statement": "s", "where": "w", "check": "c",
                                 "direction": "=>", "threshold": 0}]})
    with pytest.raises(ValueError, match="lacks"):
        claim_specs({"claims": [{"id": "C9", "kind": "paper"}]})


def test_legacy_claims_csv_is_tallied_from_passed():
    legacy = pd.DataFrame({"id": ["C1", "C2", "C3"], "passed": [True, False, None]})
    assert tally(legacy) == {PASS: 1, FAIL: 1, INCONCLUSIVE: 0, NA: 1}
