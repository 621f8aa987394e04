"""Every package under `cvpr24/pipelines/` whose `__init__` exposes `create_pipeline()` is a pipeline named by its
folder (`kedro run --pipeline=mash`). `__default__` is the union of all of them.

A package without `create_pipeline` is a paper under construction: its components (and their unit tests) are on
main, its pipeline is not yet, so it is skipped rather than registered empty. `under_construction()` lists them.
Any error while building a registered pipeline is raised, not turned into a warning."""

from __future__ import annotations

import importlib
from pathlib import Path

from kedro.pipeline import Pipeline

PIPELINES_DIR = Path(__file__).parent / "pipelines"


def _packages() -> list[str]:
    return sorted(p.name for p in PIPELINES_DIR.iterdir() if (p / "__init__.py").is_file())


def under_construction() -> list[str]:
    """Packages under cvpr24/pipelines that do not (yet) expose create_pipeline."""
    return [n for n in _packages()
            if not hasattr(importlib.import_module(f"cvpr24.pipelines.{n}"), "create_pipeline")]


def register_pipelines() -> dict[str, Pipeline]:
    pipelines: dict[str, Pipeline] = {}
    for name in _packages():
        module = importlib.import_module(f"cvpr24.pipelines.{name}")
        if hasattr(module, "create_pipeline"):
            pipelines[name] = module.create_pipeline()
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    return pipelines
