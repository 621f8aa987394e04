"""Data-parallel training with torch.distributed, launched by torch's elastic launcher (the engine
behind `torchrun`).

`launch(fn, args, nprocs=N)` starts N worker processes on this node (gloo on CPU, NCCL on GPU), each with
its RANK / WORLD_SIZE / LOCAL_RANK set and a process group initialised, runs `fn(*args)` in each and
returns rank 0's return value (e.g. the trained weights). The same training code runs unchanged with
N = 1 (no launcher, no process group). Across nodes, set `nnodes` and a rendezvous endpoint
(`host:port` of node 0) in `conf/<env>/parameters.yml` under `runtime.distributed`.

A worker that dies makes `launch` raise `DistributedWorkerError` naming the failed rank(s) instead of
hanging: the elastic agent notices the dead process and stops the others, and collective operations have
a bounded timeout (`timeout_s`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


class DistributedWorkerError(RuntimeError):
    """One or more data-parallel workers failed; the message names them and their error."""


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def default_backend() -> str:
    return "nccl" if torch.cuda.is_available() else "gloo"


def wrap(model: torch.nn.Module) -> torch.nn.Module:
    """DistributedDataParallel around `model` when a process group is running, else `model` itself."""
    if world_size() == 1:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [torch.cuda.current_device()] if dist.get_backend() == "nccl" else None
    return DistributedDataParallel(model, device_ids=device_ids)


def shard(indices: torch.Tensor) -> torch.Tensor:
    """This rank's contiguous share of a global batch's sample indices (global batch = sum of shares)."""
    n, r = world_size(), rank()
    if len(indices) % n:
        raise ValueError(f"global batch of {len(indices)} does not split evenly over {n} workers")
    per = len(indices) // n
    return indices[r * per: (r + 1) * per]


def _worker(fn: Callable[..., Any], args: tuple, backend: str, timeout_s: float) -> Any:
    dist.init_process_group(backend=backend, timeout=timedelta(seconds=timeout_s))
    try:
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        return fn(*args)
    finally:
        dist.destroy_process_group()


def _reason(failure: Any) -> str:
    """One line per failed worker: its error's first line, or its exit code (a killed or exited process)."""
    msg = failure.message
    if isinstance(msg, dict):
        msg = msg.get("message", "")
    first = str(msg or "").strip().splitlines()[0][:300] if msg else ""
    return first or f"exit code {failure.exitcode}"


def launch(
    fn: Callable[..., Any],
    args: tuple = (),
    *,
    nprocs: int = 1,
    backend: str | None = None,
    nnodes: int = 1,
    rdzv_endpoint: str | None = None,
    timeout_s: float = 120.0,
    threads_per_worker: int | None = None,
) -> Any:
    """Run `fn(*args)` data-parallel on `nprocs` workers per node; return rank 0's result.

    `fn` must be a module-level function (workers are spawned). With `nprocs == 1 and nnodes == 1` it
    simply calls `fn(*args)` in this process.
    """
    if nprocs <= 1 and nnodes <= 1:
        return fn(*args)
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    backend = backend or default_backend()
    if threads_per_worker is not None:
        os.environ["OMP_NUM_THREADS"] = str(threads_per_worker)
    config = LaunchConfig(
        min_nodes=nnodes,
        max_nodes=nnodes,
        nproc_per_node=nprocs,
        run_id=f"cvpr24-{uuid.uuid4().hex[:8]}",
        rdzv_backend="c10d",
        rdzv_endpoint=rdzv_endpoint or "127.0.0.1:0",
        rdzv_configs={"timeout": int(timeout_s)},
        max_restarts=0,
        monitor_interval=0.5,
        start_method="spawn",
    )
    try:
        results = elastic_launch(config, _worker)(fn, args, backend, timeout_s)
    except ChildFailedError as exc:
        failed = ", ".join(f"rank {r}: {_reason(f)}" for r, f in sorted(exc.failures.items()))
        raise DistributedWorkerError(
            f"data-parallel training failed on {len(exc.failures)} of {nprocs * nnodes} workers ({failed}); "
            "the other workers were stopped. Re-run the same command to resume from the last checkpoint."
        ) from exc
    return results[0]
