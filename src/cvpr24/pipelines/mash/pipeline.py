"""MASH as a Kedro pipeline: five phases, tagged ingest / preprocess / train / evaluate / report.

The nodes name their datasets and parameters without the paper's prefix; `namespace="mash"` adds it
(`paper` -> catalog entry `mash.paper`, `params:train` -> `mash.train` in conf/*/parameters/mash.yml, node
`train` -> `mash.train`), and groups the nodes in kedro-viz. `params:runtime` stays global."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from cvpr24.core.pipelines import paper_pipeline
from cvpr24.pipelines.mash import nodes as n
from cvpr24.pipelines.mash.report import render


def create_pipeline(**kwargs) -> Pipeline:
    nodes = [
        node(n.ingest, ["params:data", "params:runtime"], ["clean", "noisy", "raw_manifest"],
             name="ingest", tags=["ingest"]),
        node(n.preprocess, ["clean", "noisy", "raw_manifest", "params:preprocess", "params:train"],
             ["model_input", "reference", "oracle_psd", "jobs"], name="preprocess", tags=["preprocess"]),
        node(n.train, ["jobs", "model_input", "oracle_psd", "params:train", "params:runtime"],
             ["job_outputs", "job_log", "train_history", "sigma_trace", "trained_jobs"], name="train",
             tags=["train"]),
        node(n.select, ["trained_jobs", "job_log", "params:train.selection"], "selection", name="select",
             tags=["train"]),
        node(n.evaluate, ["trained_jobs", "job_outputs", "selection", "model_input", "reference", "params:evaluate"],
             "per_image", name="evaluate", tags=["evaluate"]),
        node(n.table_rows,
             ["per_image", "selection", "trained_jobs", "job_log", "paper", "params:evaluate", "params:train",
              "params:runtime", "raw_manifest", "speed"],
             "table_rows", name="table_rows", tags=["evaluate"]),
        node(render,
             ["per_image", "table_rows", "selection", "sigma_trace", "job_outputs", "model_input", "reference",
              "paper", "params:report", "params:evaluate", "params:train", "params:runtime", "speed", "epsilon_size"],
             "report", name="report", tags=["report"]),
    ]
    return paper_pipeline("mash", nodes)
