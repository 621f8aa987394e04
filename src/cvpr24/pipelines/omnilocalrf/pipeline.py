"""OmniLocalRF as a Kedro pipeline: five phases, tagged ingest / preprocess / train / evaluate / report.

The nodes name their datasets and parameters without the paper's prefix; `paper_pipeline` wraps them in
`namespace="omnilocalrf"` and adds the MLflow node. `params:runtime` stays global."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from cvpr24.core.pipelines import paper_pipeline
from cvpr24.pipelines.omnilocalrf import nodes as n
from cvpr24.pipelines.omnilocalrf.report import render


def create_pipeline(**kwargs) -> Pipeline:
    nodes = [
        node(n.ingest, ["params:data", "params:runtime"], "raw_scene", name="ingest", tags=["ingest"]),
        node(n.manifest, ["raw_scene", "params:data"], "raw_manifest", name="manifest", tags=["ingest"]),
        node(n.preprocess, ["raw_scene", "raw_manifest", "params:data"], "model_input", name="preprocess",
             tags=["preprocess"]),
        node(n.train, ["model_input", "params:train", "params:runtime"], ["models", "train_log", "train_history"],
             name="train", tags=["train"]),
        node(n.evaluate, ["models", "model_input", "params:evaluate", "params:runtime"],
             ["scores", "runs", "renders"], name="evaluate", tags=["evaluate"]),
        node(n.table_rows, ["scores", "runs", "paper", "params:train", "params:runtime", "raw_manifest"],
             "table_rows", name="table_rows", tags=["evaluate"]),
        node(render, ["scores", "runs", "renders", "train_log", "train_history", "table_rows", "model_input",
                      "paper", "params:report", "params:runtime"], "report", name="report", tags=["report"]),
    ]
    return paper_pipeline("omnilocalrf", nodes)
