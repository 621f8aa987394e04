"""MagNet as a Kedro pipeline: five phases, tagged ingest / preprocess / train / evaluate / report.

The nodes name their datasets and parameters without the paper's prefix; `paper_pipeline` wraps them in
`namespace="magnet"` (`paper` -> catalog entry `magnet.paper`, `params:train` -> `magnet.train`) and adds
the MLflow node. `params:runtime` stays global."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from cvpr24.core.pipelines import paper_pipeline
from cvpr24.pipelines.magnet import nodes as n
from cvpr24.pipelines.magnet.report import render


def create_pipeline(**kwargs) -> Pipeline:
    nodes = [
        node(n.ingest, ["params:data", "params:preprocess", "params:runtime"], ["raw_layout", "raw_manifest"],
             name="ingest", tags=["ingest"]),
        node(n.preprocess, ["raw_layout", "raw_manifest", "params:preprocess", "params:evaluate"],
             ["model_input", "samples", "vocab"], name="preprocess", tags=["preprocess"]),
        node(n.train, ["model_input", "samples", "vocab", "params:train", "params:evaluate", "params:runtime"],
             ["predictions", "train_log", "train_history"], name="train", tags=["train"]),
        node(n.evaluate, ["predictions", "model_input", "samples"], ["pairs", "scores"],
             name="evaluate", tags=["evaluate"]),
        node(n.table_rows, ["scores", "paper", "params:train", "params:runtime", "raw_manifest"],
             "table_rows", name="table_rows", tags=["evaluate"]),
        node(render,
             ["scores", "pairs", "predictions", "train_log", "train_history", "table_rows", "model_input", "samples",
              "vocab", "paper", "params:report", "params:runtime"],
             "report", name="report", tags=["report"]),
    ]
    return paper_pipeline("magnet", nodes)
