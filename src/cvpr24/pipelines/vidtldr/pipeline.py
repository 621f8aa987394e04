"""vid-TLDR as a Kedro pipeline: five phases, tagged ingest / preprocess / train / evaluate / report."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node, pipeline

from cvpr24.core.reporting import mlflow_rows
from cvpr24.pipelines.vidtldr import nodes as n
from cvpr24.pipelines.vidtldr.report import render


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(n.ingest, ["params:vidtldr.data", "params:vidtldr.model", "params:runtime"],
                 ["vidtldr.clips", "vidtldr.raw_manifest"], name="vidtldr_ingest", tags=["ingest"]),
            node(n.preprocess,
                 ["vidtldr.clips", "vidtldr.raw_manifest", "params:vidtldr.preprocess", "params:vidtldr.model",
                  "params:vidtldr.evaluate"],
                 ["vidtldr.model_input", "vidtldr.settings"], name="vidtldr_preprocess", tags=["preprocess"]),
            node(n.train, ["vidtldr.model_input", "params:vidtldr.model", "params:vidtldr.train", "params:runtime"],
                 ["vidtldr.weights", "vidtldr.train_history", "vidtldr.train_log"],
                 name="vidtldr_train", tags=["train"]),
            node(n.evaluate,
                 ["vidtldr.model_input", "vidtldr.weights", "vidtldr.settings", "params:vidtldr.model",
                  "params:vidtldr.evaluate", "params:vidtldr.preprocess", "params:runtime"],
                 ["vidtldr.sweep", "vidtldr.saliency", "vidtldr.example", "vidtldr.per_clip"],
                 name="vidtldr_evaluate", tags=["evaluate"]),
            node(n.table_rows,
                 ["vidtldr.sweep", "vidtldr.per_clip", "vidtldr.saliency", "vidtldr.raw_manifest", "vidtldr.paper",
                  "params:vidtldr.evaluate", "params:vidtldr.model", "params:vidtldr.train", "params:runtime"],
                 "vidtldr.table_rows", name="vidtldr_table_rows", tags=["evaluate"]),
            node(mlflow_rows, ["vidtldr.table_rows", "vidtldr.paper"], "vidtldr.mlflow_runs",
                 name="vidtldr_log_runs", tags=["evaluate"]),
            node(render,
                 ["vidtldr.sweep", "vidtldr.saliency", "vidtldr.example", "vidtldr.table_rows", "vidtldr.train_log",
                  "vidtldr.paper", "params:vidtldr.report", "params:vidtldr.evaluate", "params:vidtldr.model",
                  "params:runtime"],
                 "vidtldr.report", name="vidtldr_report", tags=["report"]),
        ]
    )
