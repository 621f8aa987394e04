"""What every paper's Kedro pipeline shares: the MLflow node and the namespace.

A paper's `pipeline.py` lists its own nodes with un-prefixed dataset and parameter names ("paper",
"table_rows", "params:train") and hands them to `paper_pipeline`, which adds the node that logs each table
row as an MLflow run (core's `mlflow_rows`) and wraps everything in `namespace=<slug>`, so `table_rows`
becomes `<slug>.table_rows` in the catalog and the global `params:runtime` stays un-namespaced."""

from __future__ import annotations

from collections.abc import Iterable

from kedro.pipeline import Node, Pipeline, node, pipeline

from cvpr24.core.reporting import mlflow_rows


def paper_pipeline(slug: str, nodes: Iterable[Node]) -> Pipeline:
    log_runs = node(mlflow_rows, ["table_rows", "paper"], "mlflow_runs", name="log_runs", tags=["evaluate"])
    return pipeline([*nodes, log_runs], namespace=slug, parameters={"runtime": "runtime"})
