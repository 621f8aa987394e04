"""MagNet end to end in the ci profile: every phase runs, ShapeRef is written in the REFER layout, tables and
claims are written, MLflow holds one run per table row beside the paper's numbers, trained jobs come back from
the cache, and bad input stops the run before anything downstream is written.

The ci run is the session's `ci_run("magnet")` (one real `kedro run` subprocess); the other runs go through
KedroSession in this process."""

from __future__ import annotations

import json
import pickle

import pandas as pd
import pytest

from tests.conftest import kedro_session_fails, kedro_session_run, make_project


@pytest.fixture(scope="module")
def mg_run(ci_run):
    return ci_run("magnet")


@pytest.fixture(scope="module")
def mg_project(mg_run):
    return mg_run.project


def test_ci_run_writes_every_table_claim_and_figure(mg_run, mg_project):
    rep = mg_project / "reports" / "ci" / "magnet"
    for i in (1, 2):
        assert (rep / f"table_{i}.md").is_file() and (rep / f"table_{i}.csv").is_file()
    t1 = pd.read_csv(rep / "table_1.csv")
    ours = t1[t1["method"] == "MagNet"].iloc[0]
    assert float(ours["refcoco_val_paper"]) == pytest.approx(75.24)
    assert 0 <= float(ours["refcoco_val_ours"]) <= 100
    cris = t1[t1["method"] == "CRIS"].iloc[0]
    assert pd.isna(cris["refcoco_val_ours"])
    t2 = pd.read_csv(rep / "table_2.csv")
    assert (t2["val_miou_paper"].astype(str).str.contains("not found")).sum() >= 5
    claims = pd.read_csv(rep / "claims.csv")
    assert {"C1", "C1b", "C2", "C3", "C3b", "C4", "C5", "C6", "S1"} <= set(claims["id"])
    c4 = claims.set_index("id").loc["C4"]
    assert c4["verdict"] == "PASS", c4          # MG adds nothing at inference, even after one epoch
    metrics = json.loads((rep / "metrics.json").read_text())
    assert "MagNet" in metrics["table_1"] and "C1" in metrics["claims"]
    for fig in ("examples", "templates", "training"):
        assert (rep / "figures" / f"{fig}.png").stat().st_size > 1000
    diag = pd.read_csv(rep / "diagnostics.csv")
    assert diag["job"].iloc[0] == "pretrain" and 0 <= float(diag["pretrain_shape_acc"].iloc[0]) <= 100
    assert "### Backbone pretraining" in (rep / "README.md").read_text()
    assert mg_run.seconds < 240, f"ci run took {mg_run.seconds:.0f} s (budget 60 s on 2 idle cores)"


def test_embedded_data_is_in_the_refer_layout(mg_project):
    root = mg_project / "data" / "ci" / "magnet" / "01_raw" / "refer"
    refs = pickle.loads((root / "shaperef" / "refs(unc).p").read_bytes())
    inst = json.loads((root / "shaperef" / "instances.json").read_text())
    assert {r["split"] for r in refs} == {"train", "val", "testA", "testB"}
    ann = inst["annotations"][0]
    assert isinstance(ann["segmentation"], dict) and "counts" in ann["segmentation"]
    assert (root / "images" / "shaperef" / refs[0]["file_name"]).is_file()


def test_no_output_records_where_the_project_lives(mg_project):
    """A clone elsewhere must write the same bytes (DVC hashes them): no absolute path in the layout pointer
    or in any parquet's metadata (pandas stores DataFrame.attrs there)."""
    import pyarrow.parquet as pq
    data = mg_project / "data" / "ci" / "magnet"
    assert str(mg_project) not in (data / "01_raw" / "refer" / "layout.json").read_text()
    files = sorted(data.rglob("*.parquet"))
    assert files
    for f in files:
        meta = pq.read_metadata(f).metadata or {}
        assert not any(str(mg_project).encode() in v for v in meta.values()), f


def test_mlflow_has_one_run_per_row(mg_project):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{mg_project / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("magnet")
    runs = client.search_runs([exp.experiment_id], max_results=2000)
    ours = [r for r in runs if r.data.tags.get("source") == "ours"]
    rows = pd.read_parquet(mg_project / "data" / "ci" / "magnet" / "08_reporting" / "table_rows.parquet")
    assert len(ours) == rows.groupby(["table", "row"]).ngroups
    paper = [r for r in runs if r.data.tags.get("source") == "paper"]
    full = next(r for r in paper if r.data.tags["table"] == "table_1" and r.data.tags["row"] == "MagNet")
    assert full.data.metrics["refcoco_val"] == pytest.approx(75.24)


def test_rerun_reads_every_job_from_the_cache(mg_project, monkeypatch):
    """The train node again, in process, with the ci parameters: nothing is retrained, same predictions."""
    import numpy as np
    from kedro.config import OmegaConfigLoader

    from cvpr24.core.datasets import NpzDataset
    from cvpr24.pipelines.magnet import nodes
    from cvpr24.settings import CONFIG_LOADER_ARGS

    monkeypatch.chdir(mg_project)
    conf = OmegaConfigLoader(str(mg_project / "conf"), **{**CONFIG_LOADER_ARGS, "default_run_env": "ci"}, env="ci")
    params = conf["parameters"]
    mi = NpzDataset("data/ci/magnet/05_model_input/shaperef.npz").load()
    samples = pd.read_parquet("data/ci/magnet/05_model_input/samples.parquet")
    vocab = json.loads(open("data/ci/magnet/05_model_input/vocab.json").read())
    preds, log, _ = nodes.train(mi, samples, vocab, params["magnet"]["train"], params["magnet"]["evaluate"],
                                {**params["runtime"], "progress": False})
    assert log["cached"].all()
    saved = NpzDataset("data/ci/magnet/07_model_output/predictions.npz").load()
    assert set(saved) == set(preds)
    for k in saved:
        np.testing.assert_array_equal(saved[k], preds[k])


def test_report_phase_runs_alone(mg_project):
    rep = mg_project / "reports" / "ci" / "magnet" / "table_1.md"
    preds = mg_project / "data" / "ci" / "magnet" / "07_model_output" / "predictions.npz"
    t_pred, t_rep = preds.stat().st_mtime_ns, rep.stat().st_mtime_ns
    kedro_session_run(mg_project, "magnet", tags=["report"])
    assert preds.stat().st_mtime_ns == t_pred and rep.stat().st_mtime_ns > t_rep


def test_missing_refer_data_says_where_to_get_it(tmp_path):
    project = make_project(tmp_path / "proj")
    root = tmp_path / "nowhere"
    text = kedro_session_fails(project, "magnet", {"magnet": {"data": {"source": "real", "real": {
        "data_root": str(root), "dataset": "refcoco", "split_by": "unc",
        "image_dir": "images/mscoco/images/train2014"}}}})
    assert "nowhere" in text and "refs(unc).p" in text, text[-3000:]
    assert not (project / "data" / "ci" / "magnet" / "05_model_input").exists()
    assert not (project / "reports" / "ci" / "magnet").exists()


def test_too_long_expression_stops_before_training(tmp_path):
    project = make_project(tmp_path / "proj")
    text = kedro_session_fails(project, "magnet", {"magnet": {"preprocess": {"max_tokens": 5}}})
    assert "max_tokens=5" in text and "magnet.preprocess.max_tokens" in text, text[-3000:]
    assert not (project / "data" / "ci" / "magnet" / "05_model_input").exists()


def test_pretraining_and_a_checkpoint_are_not_both_taken(tmp_path):
    project = make_project(tmp_path / "proj")
    text = kedro_session_fails(project, "magnet", {"magnet": {"train": {"init_checkpoint": "weights.pt"}}})
    assert "magnet.train.init_checkpoint" in text and "pretrain.steps: 0" in text, text[-3000:]
    assert not (project / "data" / "ci" / "magnet" / "07_model_output").exists()
