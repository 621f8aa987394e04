"""vid-TLDR as a Kedro pipeline: five phases, tagged ingest / preprocess / train / evaluate / report.

The nodes name their datasets and parameters without the paper's prefix; `namespace="vidtldr"` adds it
(`paper` -> catalog entry `vidtldr.paper`, `params:train` -> `vidtldr.train` in conf/*/parameters/vidtldr.yml,
node `train` -> `vidtldr.train`), and groups the nodes in kedro-viz. `params:runtime` stays global."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from cvpr24.core.pipelines import paper_pipeline
from cvpr24.pipelines.vidtldr import nodes as n
from cvpr24.pipelines.vidtldr.report import render


def create_pipeline(**kwargs) -> Pipeline:
    nodes = [
        node(n.ingest, ["params:data", "params:model", "params:runtime"], ["clips", "raw_manifest"],
             name="ingest", tags=["ingest"]),
        node(n.preprocess,
             ["clips", "raw_manifest", "params:preprocess", "params:model", "params:evaluate"],
             ["model_input", "settings"], name="preprocess", tags=["preprocess"]),
        node(n.train, ["model_input", "params:model", "params:train", "params:runtime"],
             ["weights", "train_history", "train_log"], name="train", tags=["train"]),
        node(n.evaluate,
             ["model_input", "weights", "settings", "params:model", "params:evaluate", "params:preprocess",
              "params:runtime"],
             ["sweep", "saliency", "example", "per_clip"], name="evaluate", tags=["evaluate"]),
        node(n.table_rows,
             ["sweep", "per_clip", "saliency", "raw_manifest", "paper", "params:evaluate", "params:model",
              "params:train", "params:runtime"],
             "table_rows", name="table_rows", tags=["evaluate"]),
        node(render,
             ["sweep", "saliency", "example", "table_rows", "train_log", "paper", "params:report",
              "params:evaluate", "params:model", "params:runtime"],
             "report", name="report", tags=["report"]),
    ]
    return paper_pipeline("vidtldr", nodes)
