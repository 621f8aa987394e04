"""MASH's per-image method: the sigma_hat trace, the paused probe, the fast path and the selection presets.
Each test fails if its part is wrong: a trace that disturbs training, a paused probe that does not continue
exactly, a fast path that returns another run's output, a preset that plans or scores the wrong run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from cvpr24.core.seeding import derive_seed
from cvpr24.core.training import Checkpointer
from cvpr24.pipelines.mash import nodes as N
from cvpr24.pipelines.mash.method import fit_bsd, mash_fast
from cvpr24.pipelines.mash.model import SelectionRule
from cvpr24.pipelines.mash.report import budget_summary, epsilon_trace

KW = {"iterations": 12, "lr": 1e-3, "width": 4, "loss": "l1", "num_predictions": 2, "lps_iteration": 4,
      "tile_size": 4, "std_block": 2, "rel_threshold": 0.5}
TRAIN = {**KW, "checkpoint_every": 100, "rel_threshold": {"rgb": 0.5, "grey": 0.1}}
PAPER = {"tau_high": 0.8, "tau_medium": 0.5, "tau_low": 0.2, "eps_low": 1.5, "eps_high": 2.5}
RELEASED = {"tau_high": 0.9, "tau_medium": 0.5, "tau_low": 0.1, "eps_low": 1.0, "eps_high": 2.0}
SELECTION = {"probe_high": 0.8, "probe_low": 0.2, "preset": "paper",
             "presets": {"paper": PAPER, "released": RELEASED}}
pytestmark = pytest.mark.usefixtures("one_thread")




def test_sigma_trace_leaves_the_run_unchanged_and_is_recorded_every_k_steps(noisy):
    plain = fit_bsd(noisy, tau=0.5, seed=3, **KW)
    traced = fit_bsd(noisy, tau=0.5, seed=3, sigma_every=4, **KW)
    np.testing.assert_array_equal(plain["denoised"], traced["denoised"])
    assert plain["residual_std"] == traced["residual_std"]
    assert [t["step"] for t in traced["sigma_trace"]] == [4, 8, 12]
    assert all(t["residual_std"] > 0 for t in traced["sigma_trace"])
    assert plain["sigma_trace"] == []


def test_a_paused_probe_continues_to_exactly_the_uninterrupted_run(tmp_path, noisy):
    full = fit_bsd(noisy, tau=0.2, seed=5, sigma_every=5, **KW)
    ckpt = Checkpointer(tmp_path / "probe")
    probe = fit_bsd(noisy, tau=0.2, seed=5, sigma_every=5, checkpointer=ckpt, stop_at=5, **KW)
    assert probe["denoised"] is None and probe["stopped_at"] == 5
    # sigma_hat at the pause is the traced value of the uninterrupted run at that step
    assert probe["residual_std"] == pytest.approx(full["sigma_trace"][0]["residual_std"], abs=0)
    resumed = fit_bsd(noisy, tau=0.2, seed=5, sigma_every=5, checkpointer=ckpt, **KW)
    np.testing.assert_array_equal(resumed["denoised"], full["denoised"])
    assert resumed["sigma_trace"] == full["sigma_trace"]


@pytest.mark.parametrize("probe_steps", [4, 12])
@pytest.mark.parametrize("eps_thresholds,expected", [((1e6, 2e6), (0.2, False, True)),
                                                      ((-2.0, -1.0), (0.8, True, False))])
def test_fast_path_returns_the_run_its_rule_picks(tmp_path, noisy, eps_thresholds, expected, probe_steps):
    """Thresholds that force the low branch (the tau 0.2 probe continues, or is already finished when the
    probes run the whole budget) or the high one (a fresh tau 0.8 + LPS run); either way the output is the
    pipeline's job of that name, bit for bit on one thread."""
    rule = SelectionRule(eps_low=eps_thresholds[0], eps_high=eps_thresholds[1])
    fast = mash_fast(noisy, image_id="img", train=TRAIN, rule=rule, seed=0, directory=tmp_path,
                     probe_steps=probe_steps, threads=1)
    tau, lps, reused = expected
    assert (fast["tau"], fast["lps"], fast["reused_probe"]) == (tau, lps, reused)
    name = f"img__bsd_t{tau:g}" + ("_lps" if lps else "")
    reference = fit_bsd(noisy, tau=tau, lps=lps, seed=derive_seed(0, name), **KW)
    np.testing.assert_array_equal(fast["denoised"], reference["denoised"])
    assert fast["seconds"] >= fast["probe_seconds"] > 0


def _jobs(sid: str, taus=((0.2, False), (0.5, False), (0.8, False), (0.8, True))) -> pd.DataFrame:
    return pd.DataFrame([{"job_id": f"{sid}__bsd_t{t:g}" + ("_lps" if lps else ""), "image_id": sid, "group": "g",
                          "kind": "bsd", "method": f"bsd_t{t:g}" + ("_lps" if lps else ""), "tau": t, "lps": lps,
                          "tile_size": 4} for t, lps in taus])


def _log(jobs: pd.DataFrame, sigma: dict[float, float]) -> pd.DataFrame:
    return pd.DataFrame({"job_id": jobs["job_id"], "seconds": 1.0, "cached": False, "shuffled_fraction": 0.0,
                         "residual_std": [sigma.get(t, 10.0) if not lps else 10.0
                                          for t, lps in zip(jobs["tau"], jobs["lps"], strict=True)]})


@pytest.mark.parametrize("eps,extra", [(2.2, ["a__bsd_t0.9_lps"]),      # paper: 0.5, released: 0.9 + LPS
                                       (0.5, ["a__bsd_t0.1"]),          # paper: 0.2, released: 0.1
                                       (1.7, []),                       # both 0.5: already planned
                                       (3.0, ["a__bsd_t0.9_lps"])])
def test_presets_plan_only_the_final_runs_they_lack(eps, extra):
    jobs = _jobs("a")
    finals = N._final_jobs(jobs, _log(jobs, {0.8: 10.0 + eps, 0.2: 10.0}), SELECTION)
    assert list(finals["job_id"]) == extra


def test_select_names_each_presets_choice_and_evaluate_scores_it():
    jobs = pd.concat([_jobs("a"), _jobs("a", ((0.9, True),))], ignore_index=True)
    log = _log(jobs, {0.8: 12.2, 0.2: 10.0})  # epsilon 2.2
    sel = N.select(jobs, log, SELECTION).iloc[0]
    assert (sel["tau"], sel["lps"], sel["mash_job"]) == (0.5, False, "a__bsd_t0.5")
    assert (sel["released_tau"], sel["released_lps"], sel["released_job"]) == (0.9, True, "a__bsd_t0.9_lps")
    with pytest.raises(ValueError, match="known presets"):
        N.select(jobs, log, {**SELECTION, "preset": "nope"})


def test_epsilon_trace_and_budget_summary():
    trace = pd.DataFrame([{"job_id": f"a__bsd_t{t}", "step": s, "residual_std": v}
                          for s, hi, lo in [(50, 11.0, 10.0), (100, 13.0, 10.0)]
                          for t, v in (("0.8", hi), ("0.2", lo))])
    sel = pd.DataFrame([{"image_id": "a", "group": "gauss_b1"}])
    eps = epsilon_trace(trace, sel, SELECTION)
    assert list(eps["epsilon"]) == [1.0, 3.0]
    assert list(eps["paper_choice"]) == ["tau 0.2", "tau 0.8 + LPS"]
    assert list(eps["released_choice"]) == ["tau 0.5", "tau 0.9 + LPS"]
    summary = budget_summary(eps, sel, "paper")
    assert list(summary["same_choice"]) == [0, 1] and list(summary["images"]) == [1, 1]


def test_full_length_probes_read_the_straightforward_epsilon(tmp_path, noisy):
    """Probes that run the whole budget give exactly the epsilon of the two full runs (the pipeline's)."""
    fast = mash_fast(noisy, image_id="img", train=TRAIN, rule=SelectionRule(), seed=0, directory=tmp_path,
                     probe_steps=12, threads=1)
    hi = fit_bsd(noisy, tau=0.8, seed=derive_seed(0, "img__bsd_t0.8"), **KW)["residual_std"]
    lo = fit_bsd(noisy, tau=0.2, seed=derive_seed(0, "img__bsd_t0.2"), **KW)["residual_std"]
    assert fast["epsilon"] == abs(hi - lo)


def test_table_5_speed_rows_average_each_variant_and_say_how_it_compares():
    from cvpr24.core.reporting import TableRows

    speed = pd.DataFrame([
        {"image_id": i, "variant": v, "seconds": sec, "time_share": sec / base, "same_choice": same,
         "psnr_difference_db": d, "date": "d", "iterations": 700, "width": 48, "size": "96x96x3"}
        for i, base in (("a", 300.0), ("b", 360.0))
        for v, sec, same, d in (("straightforward", base, True, 0.0),
                                ("straightforward, 2 threads", base / 1.5, True, 0.0),
                                ("fast, probes 210 steps", base / 3, i == "a", -4.8 if i == "b" else 0.0))])
    rows = TableRows()
    N._speed_rows(rows, speed)
    frame = pd.DataFrame(rows.records).set_index("row")
    slow = frame.filter(like="1 thread each", axis=0).iloc[0]
    two = frame.filter(like="2 threads each", axis=0).iloc[0]
    assert two["value"] == pytest.approx(220.0) and "67% of the one-thread" in two["data"]
    fast = frame.filter(like="probes 210", axis=0).iloc[0]
    assert slow["value"] == 330.0 and slow["n"] == 2
    assert fast["value"] == pytest.approx(110.0)
    assert "same choice on 1 of 2 images" in fast["data"] and "-4.80" in fast["data"] and "33%" in fast["data"]
