"""MASH's adaptive probes (`fast.py`): the stopping rule, its replay on a trace, and the online fast path."""

from __future__ import annotations

import numpy as np
import pytest

from cvpr24.core.seeding import derive_seed
from cvpr24.pipelines.mash.fast import adaptive_stop, mash_adaptive, min_steps, probes_settled
from cvpr24.pipelines.mash.method import fit_bsd, mash_fast
from cvpr24.pipelines.mash.model import SelectionRule

KW = {"iterations": 12, "lr": 1e-3, "width": 4, "loss": "l1", "num_predictions": 2, "lps_iteration": 4,
      "tile_size": 4, "std_block": 2, "rel_threshold": 0.5}
TRAIN = {**KW, "checkpoint_every": 100, "rel_threshold": {"rgb": 0.5, "grey": 0.1}}
RULE = SelectionRule()  # thresholds 1.5 / 2.5
pytestmark = pytest.mark.usefixtures("one_thread")




@pytest.mark.parametrize("eps,patience,margin,expected", [
    ([5.0, 6.0, 7.0], 3, 0.5, True),       # high branch, far from 2.5
    ([2.9, 2.8, 3.0], 3, 0.5, False),      # 2.8 is within 0.5 of 2.5
    ([2.9, 2.8, 3.0], 3, 0.2, True),       # ... but not within 0.2 (spread 0.2 < distance 0.3)
    ([0.4, 3.5, 0.3], 3, 0.5, False),      # clear of the thresholds, two choices
    ([3.5, 0.4, 0.3], 2, 0.5, True),       # only the last two count
    ([0.4, 0.3], 3, 0.5, False),           # window not full yet
    ([2.0, 2.0, 2.0], 3, 0.5, True),       # middle band, 0.5 from both thresholds
    ([2.0, 2.0, float("nan")], 3, 0.5, False),
    ([4.4, 3.7, 3.3], 3, 0.5, False),      # falling by more than its distance to 2.5: may still cross
    ([3.6, 3.7, 3.3], 3, 0.5, True),       # spread 0.4 < distance 0.8
])
def test_probes_settled(eps, patience, margin, expected):
    assert probes_settled(eps, RULE, patience=patience, margin=margin) is expected


def test_min_steps_on_the_check_grid():
    assert min_steps(700, 0.5, 50) == 350
    assert min_steps(500, 0.5, 50) == 250
    assert min_steps(500, 0.33, 50) == 200   # rounded up to the grid
    assert min_steps(12, 0.5, 50) == 12      # never past the budget


def test_adaptive_stop_replays_the_rule():
    opts = {"iterations": 500, "min_fraction": 0.5, "check_every": 50, "patience": 3, "margin": 0.5}
    high = [(s, 6.0) for s in range(50, 501, 50)]
    assert adaptive_stop(high, RULE, **opts) == 250                      # settled long before: stops at half
    wandering = [(s, 4.6 if s < 200 else 0.8) for s in range(50, 501, 50)]
    assert adaptive_stop(wandering, RULE, **opts) == 300                 # three low checks: 200, 250, 300
    near = [(s, 1.3) for s in range(50, 501, 50)]
    assert adaptive_stop(near, RULE, **opts) == 500                      # within the margin: runs to the end
    off_grid = [(s, 6.0) for s in range(25, 501, 25)]
    assert adaptive_stop(off_grid, RULE, **opts) == 250                  # 25-step points are not seen online
    assert adaptive_stop(high, RULE, **{**opts, "min_fraction": 0.8}) == 400


def test_adaptive_probes_that_never_settle_are_the_full_fast_path(tmp_path, noisy):
    """With an unreachable margin the probes run the whole budget: the output is mash_fast's with full
    probes (and so the straightforward one), bit for bit."""
    out = mash_adaptive(noisy, image_id="img", train=TRAIN, rule=RULE, seed=0, directory=tmp_path / "a",
                        threads=1, min_fraction=0.25, check_every=3, patience=2, margin=1e9)
    full = mash_fast(noisy, image_id="img", train=TRAIN, rule=RULE, seed=0, directory=tmp_path / "b",
                     probe_steps=12, threads=1)
    assert out["stopped_at"] == 12
    assert [s for s, _ in out["epsilon_trace"]] == [3, 6, 9]
    assert out["epsilon"] == full["epsilon"]
    assert (out["tau"], out["lps"]) == (full["tau"], full["lps"])
    np.testing.assert_array_equal(out["denoised"], full["denoised"])


def test_adaptive_probes_stop_where_settled_and_read_the_paused_epsilon(tmp_path, noisy):
    """With no margin and one check the probes stop at the first allowed pause; epsilon is the one a probe
    paused there reads, and the last trace point; a probe continued to the end is the full run."""
    rule = SelectionRule(eps_low=1e6, eps_high=2e6)  # always the low branch: the tau 0.2 probe continues
    out = mash_adaptive(noisy, image_id="img", train=TRAIN, rule=rule, seed=0, directory=tmp_path / "a",
                        threads=1, min_fraction=0.5, check_every=3, patience=1, margin=0.0)
    assert out["stopped_at"] == 6 and out["epsilon_trace"][-1][0] == 6
    paused = mash_fast(noisy, image_id="img", train=TRAIN, rule=rule, seed=0, directory=tmp_path / "b",
                       probe_steps=6, threads=1)
    assert out["epsilon"] == paused["epsilon"] == out["epsilon_trace"][-1][1]
    assert (out["tau"], out["lps"], out["reused_probe"]) == (0.2, False, True)
    reference = fit_bsd(noisy, tau=0.2, seed=derive_seed(0, "img__bsd_t0.2"), **KW)
    np.testing.assert_array_equal(out["denoised"], reference["denoised"])


def test_adaptive_replay_matches_the_online_decision(tmp_path, noisy):
    """The report replays the rule on the pipeline's sigma_hat trace; online and replay stop at the same step."""
    opts = {"min_fraction": 0.25, "check_every": 3, "patience": 2, "margin": 0.0}
    rule = SelectionRule(eps_low=0.0, eps_high=1e6)  # everything in the middle band: settles at once
    out = mash_adaptive(noisy, image_id="img", train=TRAIN, rule=rule, seed=0, directory=tmp_path,
                        threads=1, **opts)
    hi = fit_bsd(noisy, tau=0.8, seed=derive_seed(0, "img__bsd_t0.8"), sigma_every=3, **KW)["sigma_trace"]
    lo = fit_bsd(noisy, tau=0.2, seed=derive_seed(0, "img__bsd_t0.2"), sigma_every=3, **KW)["sigma_trace"]
    trace = [(h["step"], abs(h["residual_std"] - w["residual_std"])) for h, w in zip(hi, lo, strict=True)]
    assert adaptive_stop(trace, rule, iterations=12, **opts) == out["stopped_at"] == 6
    assert dict(trace)[6] == pytest.approx(out["epsilon"], abs=0)


def test_report_joins_sizes_and_replays_each_trace():
    """The report's epsilon-by-size frame keeps this run's traces and only the committed sizes measured at the
    same budget; the replay gives one row per image and size, with the choice at the stop and at the end."""
    import pandas as pd

    from cvpr24.pipelines.mash.report import adaptive_replay, epsilon_by_size

    steps = range(50, 501, 50)
    eps_trace = pd.DataFrame({"image_id": "a", "group": "g", "step": list(steps), "epsilon": 6.0})
    selection = pd.DataFrame({"image_id": ["a"], "group": ["g"], "epsilon": [5.5]})
    other = pd.DataFrame({"image_id": "a", "group": "g", "size": 64, "iterations": [500] * 10 + [700] * 10,
                          "width": 32, "step": list(steps) * 2,
                          "epsilon": [4.4 - 0.4 * i for i in range(10)] * 2, "epsilon_final": 1.6})
    train = {"iterations": 500, "width": 32}
    sizes = epsilon_by_size(selection, eps_trace, other, train, 96)
    assert sorted(sizes["size"].unique()) == [64, 96] and len(sizes) == 20   # the 700-step rows dropped
    sel = {"probe_high": 0.8, "probe_low": 0.2, "preset": "paper",
           "presets": {"paper": {"tau_high": 0.8, "tau_medium": 0.5, "tau_low": 0.2, "eps_low": 1.5, "eps_high": 2.5}}}
    replay = adaptive_replay(sizes, sel, 500).set_index("size")
    assert replay.loc[96, "stopped_at"] == 250 and bool(replay.loc[96, "same_choice"])
    # the 64 px trace falls 0.4 a check from 4.4 to 0.8: it never settles, so epsilon is the final one
    assert replay.loc[64, "stopped_at"] == 500 and replay.loc[64, "choice_at_stop"] == "tau 0.5"
