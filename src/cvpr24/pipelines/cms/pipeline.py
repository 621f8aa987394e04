"""CMS as a Kedro pipeline: five phases, tagged ingest / preprocess / train / evaluate / report.

The nodes name their datasets and parameters without the paper's prefix; `namespace="cms"` adds it
(`paper` -> catalog entry `cms.paper`, `params:train` -> `cms.train` in conf/*/parameters/cms.yml, node
`train` -> `cms.train`), and groups the nodes in kedro-viz. `params:runtime` stays global."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from cvpr24.core.pipelines import paper_pipeline
from cvpr24.pipelines.cms import nodes as n
from cvpr24.pipelines.cms.report import render


def create_pipeline(**kwargs) -> Pipeline:
    nodes = [
        node(n.ingest, ["params:data", "params:runtime"], ["raw", "raw_manifest"], name="ingest", tags=["ingest"]),
        node(n.preprocess, ["raw", "raw_manifest", "params:data", "params:preprocess"],
             ["model_input", "split_manifest"], name="preprocess", tags=["preprocess"]),
        node(n.pretrain, ["model_input", "params:data", "params:pretrain", "params:head", "params:train",
                          "params:runtime"],
             ["pretrained", "pretrain_history"], name="pretrain", tags=["train"]),
        node(n.train, ["model_input", "pretrained", "params:data", "params:train", "params:head", "params:evaluate",
                       "params:runtime"],
             ["weights", "train_log", "train_history"], name="train", tags=["train"]),
        node(n.evaluate, ["model_input", "pretrained", "weights", "train_log", "params:data", "params:head",
                          "params:evaluate", "params:runtime"],
             ["results", "curves", "embeddings"], name="evaluate", tags=["evaluate"]),
        node(n.table_rows, ["results", "train_log", "paper", "params:data", "params:evaluate", "params:runtime",
                            "raw_manifest"],
             "table_rows", name="table_rows", tags=["evaluate"]),
        node(render, ["results", "curves", "embeddings", "train_log", "table_rows", "paper", "params:report",
                      "params:data", "params:evaluate.column_datasets", "params:runtime"],
             "report", name="report", tags=["report"]),
    ]
    return paper_pipeline("cms", nodes)
