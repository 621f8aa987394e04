"""MASH's fast path with probes that stop once epsilon has settled (issue 19).

The rule needs only epsilon = |sigma_hat(0.8) - sigma_hat(0.2)| from the two probes, and only on which side
of its thresholds epsilon falls. `mash_adaptive` trains the probes in parallel (`method.run_probe`, one
thread each), pauses them every `check_every` steps from `min_fraction` of the budget on (the first pauses
come `patience - 1` checks earlier, so the window is full there), and stops them as soon as the last
`patience` epsilons give one choice, each lies at least `margin` grey levels from every threshold, and they
spread less than their distance to the nearest threshold (`probes_settled`). Otherwise the probes run to the end and epsilon is the straightforward one exactly.
`method.mash_fast` then makes the choice and trains the final run (continuing a probe where the rule picks a
probe's own setting).

`adaptive_stop` replays the same decision on a recorded trace (the pipeline's `sigma_trace`, or
`epsilon_size.py`'s), so the report can say where the probes would have stopped and whether the choice
would have changed, on every embedded image, without training anything.

Kept apart from `method.py` on purpose: the train phase's job cache is keyed by `method.py`'s code, and this
file changes no trained result.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cvpr24.core.seeding import derive_seed
from cvpr24.pipelines.mash.method import bsd_job_name, mash_fast, run_probe
from cvpr24.pipelines.mash.model import SelectionRule

#: Defaults of the adaptive probes, chosen on the pipeline's embedded traces (500 steps, width 32) and
#: replayed on the 64 px traces of `epsilon_size.py` (whose `cam_full_coffee`, falling steadily from 10 to 1.9,
#: added the spread condition), then checked on the 128 px traces and at the paper's budget by `speed.py`:
#: never stop before half the budget (early epsilon is inflated on i.i.d. noise), three agreeing checks 50
#: steps apart, each 0.5 grey levels clear of the thresholds.
ADAPTIVE = {"min_fraction": 0.5, "check_every": 50, "patience": 3, "margin": 0.5}


def in_parallel(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
    """`fn` over `items` on two threads of this process, one torch kernel thread each (the two probes at once,
    one per core, with no worker start-up); torch's thread count is restored afterwards."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            return list(pool.map(fn, items))
    finally:
        torch.set_num_threads(previous)


def probes_settled(epsilons: Sequence[float], rule: SelectionRule, *, patience: int, margin: float) -> bool:
    """True when the last `patience` epsilons all give the same choice under `rule`, each is at least
    `margin` (grey levels) away from both thresholds, and they spread less than that distance (epsilon drifts
    over training: a window that moved by more than its distance to a threshold may still cross it)."""
    if patience < 1 or len(epsilons) < patience:
        return False
    window = [float(e) for e in epsilons[-patience:]]
    if not all(math.isfinite(e) for e in window):
        return False
    choices = {rule.select(e) for e in window}
    distance = min(min(abs(e - rule.eps_low), abs(e - rule.eps_high)) for e in window)
    spread = max(window) - min(window)
    return len(choices) == 1 and distance >= margin and spread < distance


def min_steps(iterations: int, min_fraction: float, check_every: int) -> int:
    """The earliest step the probes may stop at: `min_fraction` of the budget, on the `check_every` grid."""
    return int(min(iterations, max(check_every, math.ceil(min_fraction * iterations / check_every) * check_every)))


def adaptive_stop(trace: Sequence[tuple[int, float]], rule: SelectionRule, *, iterations: int,
                  min_fraction: float, check_every: int, patience: int, margin: float) -> int:
    """Replay the adaptive probes on a recorded epsilon trace ((step, epsilon) pairs, any spacing): the step
    they would stop at, or `iterations` when they would run to the end. Only the trace points on the
    `check_every` grid count, as the online probes see only those."""
    first = min_steps(iterations, min_fraction, check_every)
    seen: list[float] = []
    for step, eps in sorted((int(s), float(e)) for s, e in trace):
        if step % check_every or step >= iterations:
            continue
        seen.append(eps)
        if step >= first and probes_settled(seen, rule, patience=patience, margin=margin):
            return step
    return int(iterations)


def mash_adaptive(noisy: np.ndarray, *, image_id: str, train: dict[str, Any], rule: SelectionRule, seed: int,
                  directory: str | Path, probe_high: float = 0.8, probe_low: float = 0.2, threads: int = 2,
                  min_fraction: float = ADAPTIVE["min_fraction"], check_every: int = ADAPTIVE["check_every"],
                  patience: int = ADAPTIVE["patience"], margin: float = ADAPTIVE["margin"]) -> dict[str, Any]:
    """MASH on one image with probes that stop when epsilon has settled (module docstring); the output,
    choice and timing of `method.mash_fast`, plus `stopped_at` (the probes' last step) and `epsilon_trace`."""
    start = time.perf_counter()
    directory = Path(directory)
    iterations = int(train["iterations"])
    seeds = {tau: derive_seed(seed, f"{image_id}__{bsd_job_name(tau, False)}") for tau in (probe_high, probe_low)}
    first = min_steps(iterations, min_fraction, check_every)
    pauses = [s for s in range(max(check_every, first - (patience - 1) * check_every), iterations, check_every)]
    trace: list[tuple[int, float]] = []
    stopped = iterations
    for step in pauses:
        high, low = in_parallel(lambda tau, step=step: run_probe(
            noisy=noisy, tau=tau, train=train, seed=seeds[tau], directory=str(directory / f"probe_{tau:g}"),
            stop_at=step), (probe_high, probe_low))
        trace.append((step, abs(float(high["residual_std"]) - float(low["residual_std"]))))
        if step >= first and probes_settled([e for _, e in trace], rule, patience=patience, margin=margin):
            stopped = step
            break
    paused_s = time.perf_counter() - start
    # The probes are paused at `stopped` (their checkpoints); mash_fast reads epsilon there (no step is
    # repeated) or, when they never settled, trains their last steps and uses the full-budget epsilon.
    out = mash_fast(noisy, image_id=image_id, train=train, rule=rule, seed=seed, directory=directory,
                    probe_steps=stopped, probe_high=probe_high, probe_low=probe_low, threads=threads)
    end = time.perf_counter()
    return {**out, "seconds": end - start, "probe_seconds": paused_s + out["probe_seconds"],
            "final_seconds": out["final_seconds"], "stopped_at": int(stopped), "epsilon_trace": trace}
