"""The claim checks compute the margins the spec defines, from per-image metrics."""

from __future__ import annotations

import pandas as pd
import pytest

from cvpr24.pipelines.mash.report import check_claims

PARAMS = {"c1_margin_db": 0.3, "c8_min_accuracy": 0.6}


def _per_image():
    rows = []
    psnr = {  # group -> method -> psnr
        "gauss_b0": {"bsd_t0.2": 30.0, "bsd_t0.5": 29.0, "bsd_t0.8": 28.0, "bsd_t0.8_lps": 27.5, "mash_nolps": 30.0},
        "gauss_b1": {"bsd_t0.2": 24.0, "bsd_t0.5": 25.0, "bsd_t0.8": 26.0, "bsd_t0.8_lps": 26.5, "mash_nolps": 26.0},
    }
    for group, methods in psnr.items():
        for method, value in methods.items():
            rows.append({"image_id": f"{group}_x", "group": group, "method": method, "psnr": value})
    return pd.DataFrame(rows)


def _selection():
    return pd.DataFrame([
        {"image_id": "gauss_b0_x", "group": "gauss_b0", "epsilon": 1.0, "tau": 0.2},
        {"image_id": "gauss_b1_x", "group": "gauss_b1", "epsilon": 5.0, "tau": 0.8},
    ])


def test_claim_margins_follow_their_definitions():
    c = check_claims(_per_image(), _selection(), PARAMS).set_index("id")
    assert c.loc["C1", "margin"] == pytest.approx((30 - 28) - 0.3)
    assert c.loc["C2", "margin"] == pytest.approx((26 - 24) - (28 - 30))
    assert c.loc["C3", "margin"] == pytest.approx(4.0)  # camera groups absent: Gaussian part only
    assert c.loc["C4", "margin"] == pytest.approx(30 - 26)
    assert c.loc["C5", "margin"] == pytest.approx(26.5 - 26.0)  # correlated images only (beta=1)
    assert c.loc["C6", "margin"] == pytest.approx(((30 + 26) - (29 + 25)) / 2)
    assert c.loc["C7", "margin"] == pytest.approx(26 - 25)
    assert c.loc["C8", "margin"] == pytest.approx(1.0 - 0.6)  # both selections equal the best tau
    assert c["passed"].all()


def test_a_failing_claim_is_reported_with_a_negative_margin():
    per = _per_image()
    per.loc[(per.group == "gauss_b1") & (per.method == "bsd_t0.8_lps"), "psnr"] = 25.0
    c = check_claims(per, _selection(), PARAMS).set_index("id")
    assert c.loc["C5", "margin"] == pytest.approx(-1.0)
    assert c.loc["C5", "passed"] in (False,) and c.loc["C5", "passed"] is not None
