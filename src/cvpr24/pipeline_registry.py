"""Every package under `cvpr24/pipelines/` that exposes `create_pipeline()` is a pipeline named by its
folder (`kedro run --pipeline=mash`). `__default__` is the union of all of them."""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline


def register_pipelines() -> dict[str, Pipeline]:
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum(pipelines.values(), Pipeline([]))
    return pipelines
