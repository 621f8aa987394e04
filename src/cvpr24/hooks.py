"""Project hooks, run once the Kedro context exists, before any node runs:

- `RuntimeHooks` applies the global runtime knobs (threads, determinism, headless plotting) and warns when
  the machine-independent CPU kernels of `cvpr24.core.runtime` could not be pinned;
- `DistributedHooks` reads the `runtime.distributed` block of the run's conf (`conf/<env>/parameters.yml`),
  so every `cvpr24.core.distributed.launch` in that run uses its nodes, rendezvous endpoint and backend
  (see `cvpr24.core.distributed.DistributedSettings`)."""

from __future__ import annotations

import logging
import os

from kedro.framework.hooks import hook_impl

from cvpr24.core import distributed
from cvpr24.core import runtime as runtime_mod

log = logging.getLogger(__name__)


class RuntimeHooks:
    @hook_impl
    def after_context_created(self, context) -> None:
        os.environ.setdefault("MPLBACKEND", "Agg")
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
        runtime = context.params.get("runtime", {}) or {}
        threads = int(runtime.get("threads", 2))
        runtime_mod.apply_torch_runtime(threads, bool(runtime.get("deterministic", True)))
        if (problem := runtime_mod.check_pinned()) is not None:
            log.warning(problem)
        log.info("runtime: profile=%s threads=%d device=%s seed=%s", runtime.get("profile"), threads,
                 runtime.get("device", "cpu"), runtime.get("seed"))


class DistributedHooks:
    @hook_impl
    def after_context_created(self, context) -> None:
        runtime = context.params.get("runtime", {}) or {}
        settings = distributed.configure(distributed.settings_from_params(runtime.get("distributed") or {}))
        if settings.nnodes > 1:
            log.info("distributed: %d nodes, rendezvous at %s (job %s)", settings.nnodes,
                     settings.rdzv_endpoint, distributed._run_id(settings, settings.nnodes))
