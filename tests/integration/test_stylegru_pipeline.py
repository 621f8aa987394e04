"""StyleGRU end to end in the ci profile: every phase runs, the SynthTalk layout is FF++'s, tables and claims
are written, MLflow holds one run per table row beside the paper's numbers, trained jobs come back from the
cache, and bad input stops the run before anything downstream is written.

The ci run is the session's `ci_run("stylegru")` (one real `kedro run` subprocess); the other runs go through
KedroSession in this process."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from tests.conftest import kedro_session_fails, kedro_session_run, make_project


@pytest.fixture(scope="module")
def sg_run(ci_run):
    return ci_run("stylegru")


@pytest.fixture(scope="module")
def sg_project(sg_run):
    return sg_run.project


def test_ci_run_writes_every_table_claim_and_figure(sg_run, sg_project):
    rep = sg_project / "reports" / "ci" / "stylegru"
    for i in range(1, 6):
        assert (rep / f"table_{i}.md").is_file() and (rep / f"table_{i}.csv").is_file()
    t1 = pd.read_csv(rep / "table_1.csv")
    ours = t1[t1["method"] == "Ours (StyleGRU+SAM)"].iloc[0]
    assert float(ours["cdf_paper"]) == 89.0
    assert 0 <= float(ours["cdf_ours"]) <= 100 and 0 <= float(ours["ffpp_ours"]) <= 100
    lip = t1[t1["method"] == "LipForensics"].iloc[0]
    assert lip["cdf_paper"] == "not found" and pd.isna(lip["cdf_ours"])
    claims = pd.read_csv(rep / "claims.csv")
    assert {f"C{i}" for i in range(0, 9)} <= set(claims["id"])
    metrics = json.loads((rep / "metrics.json").read_text())
    assert "Ours (StyleGRU+SAM)" in metrics["table_1"] and "C3" in metrics["claims"]
    for fig in ("flow_variance", "roc", "strip", "training"):
        assert (rep / "figures" / f"{fig}.png").stat().st_size > 1000
    aucs = pd.read_csv(rep / "aucs.csv")
    assert {"ffpp", "cdf", "dfd", "fsh", "dfo", "heldout"} <= set(aucs["set"])
    assert sg_run.seconds < 240, f"ci run took {sg_run.seconds:.0f} s (budget 60 s on 2 idle cores)"


def test_embedded_layout_is_ffpp(sg_project):
    root = sg_project / "data" / "ci" / "stylegru" / "01_raw" / "synthtalk"
    ff = root / "FaceForensics++"
    split = json.loads((ff / "splits" / "train.json").read_text())
    a, b = split[0]
    assert (ff / "original_sequences" / "youtube" / "raw" / "frames" / f"{a}.npy").is_file()
    assert (ff / "manipulated_sequences" / "Deepfakes" / "raw" / "frames" / f"{a}_{b}.npy").is_file()
    assert (ff / "manipulated_sequences" / "Deepfakes" / "raw" / "frames" / f"{b}_{a}.npy").is_file()
    assert (root / "Celeb-DF-v2-synth" / "List_of_testing_videos.txt").is_file()


def test_mlflow_has_one_run_per_row(sg_project):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{sg_project / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("stylegru")
    runs = client.search_runs([exp.experiment_id], max_results=2000)
    ours = [r for r in runs if r.data.tags.get("source") == "ours"]
    rows = pd.read_parquet(sg_project / "data" / "ci" / "stylegru" / "08_reporting" / "table_rows.parquet")
    assert len(ours) == rows.groupby(["table", "row"]).ngroups
    paper = [r for r in runs if r.data.tags.get("source") == "paper"]
    full = next(r for r in paper if r.data.tags["table"] == "table_1" and r.data.tags["row"] == "Ours (StyleGRU+SAM)")
    assert full.data.metrics["cdf"] == pytest.approx(89.0)


def test_rerun_reads_every_job_from_the_cache(sg_project, monkeypatch):
    """The train node again, in process, with the ci parameters: nothing is retrained, same logits."""
    from kedro.config import OmegaConfigLoader

    from cvpr24.core.datasets import NpzDataset
    from cvpr24.pipelines.stylegru import nodes
    from cvpr24.settings import CONFIG_LOADER_ARGS

    monkeypatch.chdir(sg_project)
    conf = OmegaConfigLoader(str(sg_project / "conf"), **{**CONFIG_LOADER_ARGS, "default_run_env": "ci"}, env="ci")
    params = conf["parameters"]
    mi = NpzDataset("data/ci/stylegru/05_model_input/clips.npz").load()
    clips = pd.read_parquet("data/ci/stylegru/05_model_input/clips.parquet")
    preds, log, _ = nodes.train(mi, clips, params["stylegru"]["train"], {**params["runtime"], "progress": False})
    assert log[log["kind"] != "lr"]["cached"].all()
    saved = pd.read_parquet("data/ci/stylegru/07_model_output/predictions.parquet")
    pd.testing.assert_frame_equal(preds.reset_index(drop=True), saved.reset_index(drop=True))


def test_report_phase_runs_alone(sg_project):
    rep = sg_project / "reports" / "ci" / "stylegru" / "table_1.md"
    preds = sg_project / "data" / "ci" / "stylegru" / "07_model_output" / "predictions.parquet"
    t_pred, t_rep = preds.stat().st_mtime_ns, rep.stat().st_mtime_ns
    kedro_session_run(sg_project, "stylegru", tags=["report"])
    assert preds.stat().st_mtime_ns == t_pred and rep.stat().st_mtime_ns > t_rep


def test_missing_real_dataset_says_where_to_get_it(tmp_path):
    project = make_project(tmp_path / "proj")
    root = tmp_path / "nowhere"
    text = kedro_session_fails(project, "stylegru",
                               {"stylegru": {"data": {"source": "real", "real": {"ffpp_root": str(root)}}}})
    assert "nowhere" in text and "FaceForensics++" in text, text[-3000:]
    assert not (project / "data" / "ci" / "stylegru" / "05_model_input").exists()
    assert not (project / "reports" / "ci" / "stylegru").exists()
