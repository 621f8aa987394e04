"""Kedro project settings: Kedro's defaults (OmegaConfigLoader, conf/base + one run env) plus the
project hooks. kedro-mlflow registers its own hook through its entry point."""

from __future__ import annotations

from kedro.config import OmegaConfigLoader

from cvpr24.hooks import DistributedHooks, RuntimeHooks

HOOKS = (RuntimeHooks(), DistributedHooks())

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "merge_strategy": {"parameters": "soft", "catalog": "soft"},
}
