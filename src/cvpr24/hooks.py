"""Project hooks: apply the global runtime knobs (threads, determinism, headless plotting) once the Kedro
context exists, before any node runs."""

from __future__ import annotations

import logging
import os

from kedro.framework.hooks import hook_impl

log = logging.getLogger(__name__)


class RuntimeHooks:
    @hook_impl
    def after_context_created(self, context) -> None:
        os.environ.setdefault("MPLBACKEND", "Agg")
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "False")
        runtime = context.params.get("runtime", {}) or {}
        threads = int(runtime.get("threads", 2))
        import torch

        torch.set_num_threads(threads)
        if runtime.get("deterministic", True):
            torch.use_deterministic_algorithms(True, warn_only=True)
        log.info("runtime: profile=%s threads=%d device=%s seed=%s", runtime.get("profile"), threads,
                 runtime.get("device", "cpu"), runtime.get("seed"))
