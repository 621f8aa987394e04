"""DDPS as a Kedro pipeline: five phases, tagged ingest / preprocess / train / evaluate / report.

The nodes name their datasets and parameters without the paper's prefix; `namespace="ddps"` adds it
(`paper` -> catalog entry `ddps.paper`, `params:train` -> `ddps.train` in conf/*/parameters/ddps.yml, node
`train` -> `ddps.train`), and groups the nodes in kedro-viz. `params:runtime` stays global."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from cvpr24.core.pipelines import paper_pipeline
from cvpr24.pipelines.ddps import nodes as n
from cvpr24.pipelines.ddps.report import render


def create_pipeline(**kwargs) -> Pipeline:
    nodes = [
        node(n.ingest, ["params:data", "params:train", "params:runtime"],
             ["raw_layout", "scene_truth", "raw_manifest"], name="ingest", tags=["ingest"]),
        node(n.preprocess,
             ["raw_layout", "scene_truth", "raw_manifest", "params:preprocess", "params:data", "params:train"],
             ["model_input", "runs"], name="preprocess", tags=["preprocess"]),
        node(n.train, ["runs", "model_input", "params:train", "params:runtime"],
             ["patterns", "train_log", "train_history"], name="train", tags=["train"]),
        node(n.evaluate, ["runs", "patterns", "model_input", "params:evaluate", "params:train", "params:runtime"],
             ["per_scene", "normal_maps"], name="evaluate", tags=["evaluate"]),
        node(n.table_rows,
             ["per_scene", "runs", "train_log", "paper", "params:evaluate", "params:train", "params:runtime",
              "raw_manifest"],
             "table_rows", name="table_rows", tags=["evaluate"]),
        node(render,
             ["per_scene", "table_rows", "patterns", "runs", "normal_maps", "model_input", "train_history", "paper",
              "params:report", "params:evaluate", "params:runtime"],
             "report", name="report", tags=["report"]),
    ]
    return paper_pipeline("ddps", nodes)
