"""CMS as a Kedro pipeline: five phases, tagged ingest / preprocess / train / evaluate / report."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node, pipeline

from cvpr24.core.reporting import mlflow_rows
from cvpr24.pipelines.cms import nodes as n
from cvpr24.pipelines.cms.report import render


def create_pipeline(**kwargs) -> Pipeline:
    return pipeline(
        [
            node(n.ingest, ["params:cms.data", "params:runtime"], ["cms.raw", "cms.raw_manifest"],
                 name="cms_ingest", tags=["ingest"]),
            node(n.preprocess, ["cms.raw", "cms.raw_manifest", "params:cms.data", "params:cms.preprocess"],
                 ["cms.model_input", "cms.split_manifest"], name="cms_preprocess", tags=["preprocess"]),
            node(n.pretrain, ["cms.model_input", "params:cms.data", "params:cms.pretrain", "params:cms.head",
                              "params:cms.train", "params:runtime"],
                 ["cms.pretrained", "cms.pretrain_history"], name="cms_pretrain", tags=["train"]),
            node(n.train, ["cms.model_input", "cms.pretrained", "params:cms.data", "params:cms.train",
                           "params:cms.head", "params:cms.evaluate", "params:runtime"],
                 ["cms.weights", "cms.train_log", "cms.train_history"], name="cms_train", tags=["train"]),
            node(n.evaluate, ["cms.model_input", "cms.pretrained", "cms.weights", "cms.train_log", "params:cms.data",
                              "params:cms.head", "params:cms.evaluate", "params:runtime"],
                 ["cms.results", "cms.curves", "cms.embeddings"], name="cms_evaluate", tags=["evaluate"]),
            node(n.table_rows, ["cms.results", "cms.train_log", "cms.paper", "params:cms.data", "params:cms.evaluate",
                                "params:runtime", "cms.raw_manifest"],
                 "cms.table_rows", name="cms_table_rows", tags=["evaluate"]),
            node(mlflow_rows, ["cms.table_rows", "cms.paper"], "cms.mlflow_runs", name="cms_log_runs",
                 tags=["evaluate"]),
            node(render, ["cms.results", "cms.curves", "cms.embeddings", "cms.train_log", "cms.table_rows",
                          "cms.paper", "params:cms.report", "params:cms.data",
                          "params:cms.evaluate.column_datasets", "params:runtime"],
                 "cms.report", name="cms_report", tags=["report"]),
        ]
    )
