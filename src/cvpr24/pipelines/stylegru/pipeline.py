"""StyleGRU as a Kedro pipeline: five phases, tagged ingest / preprocess / train / evaluate / report.

The nodes name their datasets and parameters without the paper's prefix; `paper_pipeline` wraps them in
`namespace="stylegru"` (`paper` -> catalog entry `stylegru.paper`, `params:train` -> `stylegru.train`) and adds
the MLflow node. `params:runtime` stays global."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from cvpr24.core.pipelines import paper_pipeline
from cvpr24.pipelines.stylegru import nodes as n
from cvpr24.pipelines.stylegru.report import render


def create_pipeline(**kwargs) -> Pipeline:
    nodes = [
        node(n.ingest, ["params:data", "params:preprocess", "params:runtime"], ["raw_layout", "raw_manifest"],
             name="ingest", tags=["ingest"]),
        node(n.preprocess, ["raw_layout", "raw_manifest", "params:preprocess", "params:train", "params:runtime"],
             ["model_input", "clips", "encoder_history"], name="preprocess", tags=["preprocess"]),
        node(n.train, ["model_input", "clips", "params:train", "params:runtime"],
             ["predictions", "train_log", "train_history"], name="train", tags=["train"]),
        node(n.evaluate, ["predictions", "clips", "model_input", "params:evaluate", "params:train"],
             ["aucs", "flow_stats"], name="evaluate", tags=["evaluate"]),
        node(n.table_rows, ["aucs", "train_log", "paper", "params:train", "params:runtime", "raw_manifest"],
             "table_rows", name="table_rows", tags=["evaluate"]),
        node(render,
             ["aucs", "flow_stats", "predictions", "table_rows", "train_log", "train_history", "encoder_history", "model_input",
              "clips", "paper", "params:report", "params:runtime"],
             "report", name="report", tags=["report"]),
    ]
    return paper_pipeline("stylegru", nodes)
