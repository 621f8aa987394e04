"""StyleGRU's claim measurements on hand-made AUC tables: per-seed differences, N/A when a job did not run,
the Figure 1 ratios on the levels each generator smooths, the cross-manipulation claims per manipulation."""

from __future__ import annotations

import numpy as np
import pandas as pd

from cvpr24.pipelines.stylegru import report
from cvpr24.pipelines.stylegru import synth as S


def _aucs(values: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    rows = []
    for (job, s), per_seed in values.items():
        for seed, auc in enumerate(per_seed):
            rows.append({"job": job, "kind": "x", "seed": seed, "set": s, "auc": auc, "n_real": 1, "n_fake": 1})
    return pd.DataFrame(rows)


def _flow() -> pd.DataFrame:
    rows = []
    for m in ("Deepfakes", "X-CDF"):
        for lvl in range(9):
            smooth = lvl in S.SMOOTHED_LEVELS[m]
            rows.append({"latents": "encoder", "dataset": "ffpp", "method": m, "level": lvl,
                         "ratio": 0.5 if smooth else 1.0, "var_fake": 1.0, "var_real": 1.0})
    return pd.DataFrame(rows)


def test_ablation_claims_are_per_seed_differences_of_the_cross_mean():
    vals = {}
    for c in ("cdf", "dfd", "fsh", "dfo"):
        vals[("s2_full", c)] = [80.0, 90.0]
        vals[("s2_content", c)] = [70.0, 89.0]
    vals[("s2_full", "ffpp")] = [99.0, 98.0]
    vals[("s2_content", "ffpp")] = [98.0, 99.5]
    m = report.measure_claims(_aucs(vals), _flow(), np.full(9, 0.9))
    assert m["C3"].units == {"seed 0": 10.0, "seed 1": 1.0}
    assert m["C3b"].units == {"seed 0": 1.0, "seed 1": 1.5}
    assert m["C2"].units == {} and "not run" in m["C2"].note
    assert m["C1"].units == {"Deepfakes": 0.5, "X-CDF": 0.5} and m["C1b"].units == {"Deepfakes": 1.0, "X-CDF": 1.0}
    assert m["C0"].units["level 0"] == 0.9


def test_cross_manipulation_claims_per_held_out_manipulation():
    vals = {("s2_full_woDeepfakes", "heldout"): [85.0, 95.0], ("s2_content_woDeepfakes", "heldout"): [92.0, 92.0]}
    m = report.measure_claims(_aucs(vals), _flow(), np.ones(9))
    assert m["C7"].units == {"Deepfakes": 10.0}
    assert m["C7b"].units == {"Deepfakes": -2.0}
    assert m["C5"].units == {}


def test_levels_claim_takes_the_best_single_group():
    vals = {}
    for c in ("cdf", "dfd", "fsh", "dfo"):
        vals[("s1_flow_total_triplet", c)] = [80.0]
        for g, v in (("coarse", 70.0), ("middle", 82.0), ("fine", 60.0)):
            vals[(f"s1_flow_{g}_triplet", c)] = [v]
    m = report.measure_claims(_aucs(vals), _flow(), np.ones(9))
    assert m["C5"].units == {"seed 0": -2.0}
