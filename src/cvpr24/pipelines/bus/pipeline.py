"""BUS as a Kedro pipeline: five phases, tagged ingest / preprocess / train / evaluate / report."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node, pipeline

from cvpr24.core.reporting import mlflow_rows
from cvpr24.pipelines.bus import nodes as n
from cvpr24.pipelines.bus.report import render


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(n.ingest, ["params:bus.data", "params:runtime"], ["bus.raw", "bus.raw_manifest"],
                 name="bus_ingest", tags=["ingest"]),
            node(n.preprocess, ["bus.raw", "bus.raw_manifest", "params:bus.preprocess", "params:bus.data"],
                 ["bus.model_input", "bus.target_train_hidden_labels", "bus.jobs"],
                 name="bus_preprocess", tags=["preprocess"]),
            node(n.train, ["bus.jobs", "bus.model_input", "params:bus.train", "params:runtime"],
                 ["bus.models", "bus.job_log", "bus.train_history"], name="bus_train", tags=["train"]),
            node(n.evaluate,
                 ["bus.jobs", "bus.models", "bus.model_input", "bus.target_train_hidden_labels",
                  "params:bus.evaluate", "params:bus.train"],
                 ["bus.per_run", "bus.threshold_sweep", "bus.examples"], name="bus_evaluate", tags=["evaluate"]),
            node(n.table_rows,
                 ["bus.per_run", "bus.paper", "params:bus.evaluate", "params:bus.train", "params:runtime",
                  "bus.raw_manifest", "bus.job_log"],
                 "bus.table_rows", name="bus_table_rows", tags=["evaluate"]),
            node(mlflow_rows, ["bus.table_rows", "bus.paper"], "bus.mlflow_runs", name="bus_log_runs",
                 tags=["evaluate"]),
            node(render,
                 ["bus.per_run", "bus.threshold_sweep", "bus.examples", "bus.table_rows", "bus.job_log",
                  "bus.train_history", "bus.paper", "params:bus.report", "params:bus.evaluate", "params:bus.train",
                  "params:runtime"],
                 "bus.report", name="bus_report", tags=["report"]),
        ]
    )
