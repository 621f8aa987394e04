"""BUS as a Kedro pipeline: five phases, tagged ingest / preprocess / train / evaluate / report.

The nodes name their datasets and parameters without the paper's prefix; `namespace="bus"` adds it
(`paper` -> catalog entry `bus.paper`, `params:train` -> `bus.train` in conf/*/parameters/bus.yml, node
`train` -> `bus.train`), and groups the nodes in kedro-viz. `params:runtime` stays global."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from cvpr24.core.pipelines import paper_pipeline
from cvpr24.pipelines.bus import nodes as n
from cvpr24.pipelines.bus.report import render


def create_pipeline(**kwargs) -> Pipeline:
    nodes = [
        node(n.ingest, ["params:data", "params:runtime"], ["raw", "raw_manifest"], name="ingest", tags=["ingest"]),
        node(n.preprocess, ["raw", "raw_manifest", "params:preprocess", "params:data"],
             ["model_input", "target_train_hidden_labels", "jobs"], name="preprocess", tags=["preprocess"]),
        node(n.train, ["jobs", "model_input", "params:train", "params:runtime"],
             ["models", "job_log", "train_history"], name="train", tags=["train"]),
        node(n.evaluate,
             ["jobs", "models", "model_input", "target_train_hidden_labels", "params:evaluate", "params:train"],
             ["per_run", "threshold_sweep", "examples"], name="evaluate", tags=["evaluate"]),
        node(n.table_rows,
             ["per_run", "paper", "params:evaluate", "params:train", "params:runtime", "raw_manifest", "job_log"],
             "table_rows", name="table_rows", tags=["evaluate"]),
        node(render,
             ["per_run", "threshold_sweep", "examples", "table_rows", "job_log", "train_history", "paper",
              "params:report", "params:evaluate", "params:train", "params:runtime"],
             "report", name="report", tags=["report"]),
    ]
    return paper_pipeline("bus", nodes)
