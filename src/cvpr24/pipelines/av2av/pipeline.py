"""AV2AV as a Kedro pipeline: five phases, tagged ingest / preprocess / train / evaluate / report.

The nodes name their datasets and parameters without the paper's prefix; `paper_pipeline` wraps them in
`namespace="av2av"` and adds the MLflow node. `params:runtime` stays global."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from cvpr24.core.pipelines import paper_pipeline
from cvpr24.pipelines.av2av import evaluation as ev
from cvpr24.pipelines.av2av import fit
from cvpr24.pipelines.av2av import nodes as n
from cvpr24.pipelines.av2av import report as rp


def create_pipeline(**kwargs) -> Pipeline:
    nodes = [
        node(n.ingest, ["params:data", "params:runtime"], "raw_corpus", name="ingest", tags=["ingest"]),
        node(n.manifest, ["raw_corpus", "params:data"], "raw_manifest", name="manifest", tags=["ingest"]),
        node(n.preprocess, ["raw_corpus", "raw_manifest", "params:preprocess", "params:runtime"], "model_input",
             name="preprocess", tags=["preprocess"]),
        node(fit.train, ["model_input", "params:train", "params:runtime"], ["models", "train_log", "train_history"],
             name="train", tags=["train"]),
        node(ev.evaluate, ["models", "model_input", "params:train", "params:evaluate", "params:runtime"],
             ["translations", "unit_scores", "av_scores", "clips"], name="evaluate", tags=["evaluate"]),
        node(rp.table_rows, ["translations", "unit_scores", "av_scores", "model_input", "params:train",
                             "params:evaluate", "params:runtime"], "table_rows", name="table_rows",
             tags=["evaluate"]),
        node(rp.render, ["translations", "unit_scores", "av_scores", "clips", "table_rows", "train_log",
                         "train_history", "paper", "params:report", "params:train", "params:runtime"], "report", name="report",
             tags=["report"]),
    ]
    return paper_pipeline("av2av", nodes)
