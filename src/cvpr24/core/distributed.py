"""Data-parallel training with torch.distributed, launched by torch's elastic launcher (the engine
behind `torchrun`).

`launch(fn, args, nprocs=N)` starts N worker processes on this node (gloo on CPU, NCCL on GPU), each with
its RANK / WORLD_SIZE / LOCAL_RANK set and a process group initialised, runs `fn(*args)` in each and
returns rank 0's return value (e.g. the trained weights). The same training code runs unchanged with
N = 1 (no launcher, no process group).

Where the workers meet is configuration, not code: the `runtime.distributed` block of
`conf/<env>/parameters.yml` (see `DistributedSettings`) gives the number of nodes, the rendezvous endpoint
(`host:port` of node 0), the job id shared by all nodes, the backend and the timeout. `DistributedHooks`
(registered in the project's settings) reads it when a Kedro session starts, and `launch` uses it for every
call that does not name its own topology; `launch_from_params` does the same from an explicit block. A
Kedro node asks only for its number of workers per node (e.g. `cms.train.world_size`), so the same node runs
on one CPU, one multi-GPU node, or several nodes, with only the conf changed.

A worker that dies makes `launch` raise `DistributedWorkerError` naming the failed rank(s) instead of
hanging: the elastic agent notices the dead process and stops the others, and collective operations have
a bounded timeout (`timeout_s`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


class DistributedWorkerError(RuntimeError):
    """One or more data-parallel workers failed; the message names them and their error."""


@dataclass(frozen=True)
class DistributedSettings:
    """The `runtime.distributed` block of `conf/<env>/parameters.yml`.

    nnodes         machines taking part; every one runs the same command
    rdzv_endpoint  `host:port` of the rendezvous (node 0); None: a free port on 127.0.0.1 (one node only)
    rdzv_id        job id, identical on every node (None: derived from the endpoint)
    backend        "gloo" | "nccl" | None (NCCL when CUDA is available, else gloo)
    timeout_s      bound on the rendezvous and on every collective: a lost worker fails the run, never hangs
    local_addr     the address this node announces to the others (None: its host name)
    """

    nnodes: int = 1
    rdzv_endpoint: str | None = None
    rdzv_id: str | None = None
    backend: str | None = None
    timeout_s: float = 120.0
    local_addr: str | None = None

    def __post_init__(self):
        if int(self.nnodes) < 1:
            raise ValueError(f"runtime.distributed.nnodes must be >= 1, got {self.nnodes}")
        if int(self.nnodes) > 1 and not self.rdzv_endpoint:
            raise ValueError(
                f"runtime.distributed.nnodes is {self.nnodes} but no rdzv_endpoint is set: give node 0's "
                "host:port (e.g. rdzv_endpoint: node0.lab:29400) in conf/<env>/parameters.yml"
            )
        if self.rdzv_endpoint and ":" not in str(self.rdzv_endpoint):
            raise ValueError(f"runtime.distributed.rdzv_endpoint must be host:port, got {self.rdzv_endpoint!r}")
        if self.backend not in (None, "gloo", "nccl"):
            raise ValueError(f"runtime.distributed.backend must be gloo, nccl or null, got {self.backend!r}")


_CONFIGURED: DistributedSettings | None = None


def settings_from_params(params: Mapping[str, Any] | None) -> DistributedSettings:
    """A `DistributedSettings` from the `runtime` parameters (or their `distributed` block itself)."""
    params = dict(params or {})
    block = params["distributed"] if "distributed" in params else params
    known = {f.name for f in fields(DistributedSettings)}
    unknown = sorted(set(block or {}) - known)
    if unknown:
        raise ValueError(f"runtime.distributed has unknown keys {unknown}; known: {sorted(known)}")
    clean = {k: v for k, v in (block or {}).items() if v is not None}
    if "nnodes" in clean:
        clean["nnodes"] = int(clean["nnodes"])
    if "timeout_s" in clean:
        clean["timeout_s"] = float(clean["timeout_s"])
    return DistributedSettings(**clean)


def configure(settings: DistributedSettings | Mapping[str, Any] | None) -> DistributedSettings | None:
    """Make `settings` the topology `launch` uses when a call does not give its own (None resets)."""
    global _CONFIGURED
    if settings is not None and not isinstance(settings, DistributedSettings):
        settings = settings_from_params(settings)
    _CONFIGURED = settings
    # spawned workers and nodes started by the same shell inherit it through the environment
    if settings is None:
        os.environ.pop("CVPR24_DISTRIBUTED", None)
    else:
        import json

        os.environ["CVPR24_DISTRIBUTED"] = json.dumps(asdict(settings))
    return settings


def configured() -> DistributedSettings:
    """The settings `launch` uses by default: `configure`d ones, else single-node defaults."""
    if _CONFIGURED is not None:
        return _CONFIGURED
    raw = os.environ.get("CVPR24_DISTRIBUTED")
    if raw:
        import json

        return settings_from_params(json.loads(raw))
    return DistributedSettings()


def _run_id(settings: DistributedSettings, nnodes: int) -> str:
    if settings.rdzv_id:
        return str(settings.rdzv_id)
    if nnodes > 1:  # every node must present the same id: derive it from what they share
        return "cvpr24-" + hashlib.sha256(str(settings.rdzv_endpoint).encode()).hexdigest()[:8]
    return f"cvpr24-{uuid.uuid4().hex[:8]}"


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
    """Run `fn(*args)` data-parallel on `nprocs` workers per node; return rank 0's result (None on the
    other nodes of a multi-node job).

    `fn` must be a module-level function (workers are spawned). With `nprocs == 1 and nnodes == 1` it
    simply calls `fn(*args)` in this process. A call that leaves `nnodes` and `rdzv_endpoint` at their
    defaults takes the topology (nodes, endpoint, job id, backend, local address, timeout) from the
    configured `runtime.distributed` block (`configure`, `DistributedHooks`).
    """
    if nnodes == 1 and rdzv_endpoint is None:
        conf = configured()
        settings = replace(conf, backend=backend or conf.backend,
                           timeout_s=timeout_s if timeout_s != 120.0 else conf.timeout_s)
    else:
        settings = DistributedSettings(nnodes=nnodes, rdzv_endpoint=rdzv_endpoint, backend=backend,
                                       timeout_s=timeout_s)
    return _launch(fn, args, nprocs, settings, threads_per_worker)


def launch_from_params(fn: Callable[..., Any], args: tuple = (), *, nprocs: int = 1,
                       runtime: Mapping[str, Any] | None = None,
                       threads_per_worker: int | None = None) -> Any:
    """`launch` with the topology of a `runtime` parameters dict (its `distributed` block), e.g. a node's
    `params:runtime`."""
    return _launch(fn, args, nprocs, settings_from_params((runtime or {}).get("distributed") or {}),
                   threads_per_worker)


def _launch(fn: Callable[..., Any], args: tuple, nprocs: int, settings: DistributedSettings,
            threads_per_worker: int | None) -> Any:
    nnodes = settings.nnodes
    if nprocs <= 1 and nnodes <= 1:
        return fn(*args)
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    backend = settings.backend or default_backend()
    if threads_per_worker is not None:
        os.environ["OMP_NUM_THREADS"] = str(threads_per_worker)
    config = LaunchConfig(
        min_nodes=nnodes,
        max_nodes=nnodes,
        nproc_per_node=nprocs,
        run_id=_run_id(settings, nnodes),
        rdzv_backend="c10d",
        rdzv_endpoint=settings.rdzv_endpoint or "127.0.0.1:0",
        rdzv_configs={"timeout": int(settings.timeout_s)},
        local_addr=settings.local_addr,
        max_restarts=0,
        monitor_interval=0.5,
        start_method="spawn",
    )
    try:
        results = elastic_launch(config, _worker)(fn, args, backend, settings.timeout_s)
    except ChildFailedError as exc:
        failed = ", ".join(f"rank {r}: {_reason(f)}" for r, f in sorted(exc.failures.items()))
        raise DistributedWorkerError(
            f"data-parallel training failed on {len(exc.failures)} of {nprocs * nnodes} workers ({failed}); "
            "the other workers were stopped. Re-run the same command to resume from the last checkpoint."
        ) from exc
    return results.get(0)  # rank 0 lives on node 0; the other nodes return None
