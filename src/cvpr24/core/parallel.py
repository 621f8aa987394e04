"""Run independent jobs (e.g. one small network per image) on a pool of worker processes.

Small convolutional networks use two CPU threads poorly: two single-thread processes train about 35 %
faster than one two-thread process on this project's 2-core machines (benchmarks/README.md). Each job
must be a module-level function of picklable arguments and must seed itself from its own key, so the
results do not depend on the worker count or the completion order. A worker that dies (killed, out of
memory) fails the whole map with a clear error instead of hanging.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

import torch
from tqdm.auto import tqdm

T = TypeVar("T")


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)


def map_jobs(
    fn: Callable[..., T],
    jobs: Sequence[dict[str, Any]],
    *,
    workers: int = 1,
    threads: int = 2,
    desc: str = "jobs",
    progress: bool = True,
) -> list[T]:
    """`[fn(**job) for job in jobs]`, in the order of `jobs`, on `workers` processes.

    `threads` is the machine's thread budget; each of `workers` processes gets `threads // workers`.
    """
    workers = max(1, min(int(workers), len(jobs) or 1))
    bar = tqdm(total=len(jobs), desc=desc, disable=not progress, mininterval=1.0)
    try:
        if workers == 1:
            results = []
            for job in jobs:
                results.append(fn(**job))
                bar.update(1)
            return results
        per_worker = max(1, int(threads) // workers)
        ctx = mp.get_context("spawn")
        results: list[Any] = [None] * len(jobs)
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(per_worker,)
        ) as pool:
            futures = {pool.submit(fn, **job): i for i, job in enumerate(jobs)}
            try:
                for fut in as_completed(futures):
                    results[futures[fut]] = fut.result()
                    bar.update(1)
            except BrokenProcessPool as exc:
                for f in futures:
                    f.cancel()
                raise RuntimeError(
                    f"{desc}: a worker process died (killed or out of memory) while running jobs; "
                    "finished jobs are cached, so running the same command again resumes"
                ) from exc
        return results
    finally:
        bar.close()
