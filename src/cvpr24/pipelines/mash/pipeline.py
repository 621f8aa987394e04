"""MASH as a Kedro pipeline: five phases, tagged ingest / preprocess / train / evaluate / report."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node, pipeline

from cvpr24.core.reporting import mlflow_rows
from cvpr24.pipelines.mash import nodes as n
from cvpr24.pipelines.mash.report import render


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(n.ingest, ["params:mash.data", "params:runtime"],
                 ["mash.clean", "mash.noisy", "mash.raw_manifest"], name="mash_ingest", tags=["ingest"]),
            node(n.preprocess,
                 ["mash.clean", "mash.noisy", "mash.raw_manifest", "params:mash.preprocess", "params:mash.train"],
                 ["mash.model_input", "mash.reference", "mash.oracle_psd", "mash.jobs"],
                 name="mash_preprocess", tags=["preprocess"]),
            node(n.train, ["mash.jobs", "mash.model_input", "mash.oracle_psd", "params:mash.train", "params:runtime"],
                 ["mash.job_outputs", "mash.job_log", "mash.train_history"], name="mash_train", tags=["train"]),
            node(n.select, ["mash.jobs", "mash.job_log", "params:mash.train.selection"], "mash.selection",
                 name="mash_select", tags=["train"]),
            node(n.evaluate,
                 ["mash.jobs", "mash.job_outputs", "mash.selection", "mash.model_input", "mash.reference",
                  "params:mash.evaluate"],
                 "mash.per_image", name="mash_evaluate", tags=["evaluate"]),
            node(n.table_rows,
                 ["mash.per_image", "mash.selection", "mash.jobs", "mash.job_log", "mash.paper",
                  "params:mash.evaluate", "params:mash.train", "params:runtime", "mash.raw_manifest"],
                 "mash.table_rows", name="mash_table_rows", tags=["evaluate"]),
            node(mlflow_rows, ["mash.table_rows", "mash.paper"], "mash.mlflow_runs",
                 name="mash_log_runs", tags=["evaluate"]),
            node(render,
                 ["mash.per_image", "mash.table_rows", "mash.selection", "mash.job_outputs", "mash.model_input",
                  "mash.reference", "mash.paper", "params:mash.report", "params:mash.evaluate", "params:runtime"],
                 "mash.report", name="mash_report", tags=["report"]),
        ]
    )
