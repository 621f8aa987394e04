"""DDPS as a Kedro pipeline: five phases, tagged ingest / preprocess / train / evaluate / report."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node, pipeline

from cvpr24.core.reporting import mlflow_rows
from cvpr24.pipelines.ddps import nodes as n
from cvpr24.pipelines.ddps.report import render


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(n.ingest, ["params:ddps.data", "params:ddps.train", "params:runtime"],
                 ["ddps.raw_layout", "ddps.scene_truth", "ddps.raw_manifest"], name="ddps_ingest", tags=["ingest"]),
            node(n.preprocess,
                 ["ddps.raw_layout", "ddps.scene_truth", "ddps.raw_manifest", "params:ddps.preprocess",
                  "params:ddps.data", "params:ddps.train"],
                 ["ddps.model_input", "ddps.runs"], name="ddps_preprocess", tags=["preprocess"]),
            node(n.train, ["ddps.runs", "ddps.model_input", "params:ddps.train", "params:runtime"],
                 ["ddps.patterns", "ddps.train_log", "ddps.train_history"], name="ddps_train", tags=["train"]),
            node(n.evaluate,
                 ["ddps.runs", "ddps.patterns", "ddps.model_input", "params:ddps.evaluate", "params:ddps.train",
                  "params:runtime"],
                 ["ddps.per_scene", "ddps.normal_maps"], name="ddps_evaluate", tags=["evaluate"]),
            node(n.table_rows,
                 ["ddps.per_scene", "ddps.runs", "ddps.train_log", "ddps.paper", "params:ddps.evaluate",
                  "params:ddps.train", "params:runtime", "ddps.raw_manifest"],
                 "ddps.table_rows", name="ddps_table_rows", tags=["evaluate"]),
            node(mlflow_rows, ["ddps.table_rows", "ddps.paper"], "ddps.mlflow_runs",
                 name="ddps_log_runs", tags=["evaluate"]),
            node(render,
                 ["ddps.per_scene", "ddps.table_rows", "ddps.patterns", "ddps.runs", "ddps.normal_maps",
                  "ddps.model_input", "ddps.train_history", "ddps.paper", "params:ddps.report",
                  "params:ddps.evaluate", "params:runtime"],
                 "ddps.report", name="ddps_report", tags=["report"]),
        ]
    )
