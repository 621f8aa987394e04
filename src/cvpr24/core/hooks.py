"""Kedro hooks of the core library (registered in `cvpr24.settings`).

`DistributedHooks` reads the `runtime.distributed` block of the run's conf (`conf/<env>/parameters.yml`)
once the Kedro context exists, so every `cvpr24.core.distributed.launch` in that run uses its nodes,
rendezvous endpoint and backend; see `cvpr24.core.distributed.DistributedSettings`.
"""

from __future__ import annotations

import logging

from kedro.framework.hooks import hook_impl

from cvpr24.core import distributed

log = logging.getLogger(__name__)


class DistributedHooks:
    @hook_impl
    def after_context_created(self, context) -> None:
        runtime = context.params.get("runtime", {}) or {}
        settings = distributed.configure(distributed.settings_from_params(runtime.get("distributed") or {}))
        if settings.nnodes > 1:
            log.info("distributed: %d nodes, rendezvous at %s (job %s)", settings.nnodes,
                     settings.rdzv_endpoint, distributed._run_id(settings, settings.nnodes))
