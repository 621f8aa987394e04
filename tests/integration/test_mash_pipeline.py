"""MASH end to end in the ci profile: every phase runs, tables and claims are written, MLflow holds one
run per table row beside the paper's numbers, single phases re-run alone, and bad input stops the run
before anything downstream is written.

The ci run is the session's `ci_run("mash")` (one real `kedro run` subprocess); the phase re-runs and
the bad-input runs go through KedroSession in this process; one bad-input run stays a CLI subprocess (the
command exits non-zero with the fix in its output)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.conftest import kedro, kedro_session_fails, kedro_session_run, make_project


@pytest.fixture(scope="module")
def mash_run(ci_run):
    return ci_run("mash")


def test_ci_run_writes_every_table_and_claim(mash_run):
    rep = mash_run.reports
    for i in range(1, 6):
        assert (rep / f"table_{i}.md").is_file() and (rep / f"table_{i}.csv").is_file()
    t1 = pd.read_csv(rep / "table_1.csv")
    row = t1[t1["method"] == "MASH"].iloc[0]
    assert row["sidd_val_psnr_paper"] == 35.06
    assert 5 < float(row["sidd_val_psnr_ours"]) < 60  # measured, not the paper's number
    assert float(row["sidd_val_psnr_ours"]) != 35.06
    # a row that needs pretrained weights says so instead of showing a number
    score = t1[t1["method"] == "ScoreDVI"].iloc[0]
    assert pd.isna(score["sidd_val_psnr_ours"]) and "pretrained" in score["sidd_val_psnr_note"]
    claims = pd.read_csv(rep / "claims.csv")
    assert list(claims["id"]) == [f"C{i}" for i in range(1, 9)]
    metrics = json.loads((rep / "metrics.json").read_text())
    assert "MASH" in metrics["table_1"] and set(metrics["claims"]) == {f"C{i}" for i in range(1, 9)}
    assert (rep / "figures" / "psnr_vs_tau.png").stat().st_size > 1000
    assert mash_run.seconds < 120, f"ci run took {mash_run.seconds:.0f} s (budget 60 s on 2 cores, 2x slack for a loaded machine)"


def test_mlflow_has_one_run_per_row_and_the_paper_runs(mash_run):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=mash_run.mlflow_uri)
    exp = client.get_experiment_by_name("mash")
    runs = client.search_runs([exp.experiment_id], max_results=2000)
    ours = [r for r in runs if r.data.tags.get("source") == "ours"]
    paper = [r for r in runs if r.data.tags.get("source") == "paper"]
    rows = pd.read_parquet(mash_run.data / "08_reporting" / "table_rows.parquet")
    assert len(ours) == rows.groupby(["table", "row"]).ngroups
    assert len(paper) >= 13 + 1 + 4 + 5 + 7
    mash_t1 = next(r for r in ours if r.data.tags["table"] == "table_1" and r.data.tags["row"] == "MASH")
    expect = rows.query("table == 'table_1' and row == 'MASH' and metric == 'sidd_val_psnr'")["value"].iloc[0]
    assert mash_t1.data.metrics["sidd_val_psnr"] == pytest.approx(expect)
    assert mash_t1.data.tags["profile"] == "ci" and mash_t1.data.tags["git_commit"]
    assert mash_t1.data.tags["data_fingerprint"]
    paper_t1 = next(r for r in paper if r.data.tags["table"] == "table_1" and r.data.tags["row"] == "MASH")
    assert paper_t1.data.metrics["sidd_val_psnr"] == 35.06


def test_single_phase_runs_alone(mash_run):
    rep = mash_run.reports / "table_1.md"
    trained = mash_run.data / "07_model_output" / "denoised.npz"
    t_train, t_rep = trained.stat().st_mtime_ns, rep.stat().st_mtime_ns
    kedro_session_run(mash_run.project, "mash", tags=["report"])
    assert trained.stat().st_mtime_ns == t_train
    assert rep.stat().st_mtime_ns > t_rep


def test_rerun_reads_trained_jobs_from_cache(mash_run):
    kedro_session_run(mash_run.project, "mash", tags=["train"])
    log = pd.read_parquet(mash_run.data / "07_model_output" / "job_log.parquet")
    assert log["cached"].all()


@pytest.mark.unit
def test_nan_input_stops_before_anything_downstream(tmp_path, monkeypatch):
    from cvpr24.core.validation import DataValidationError
    from cvpr24.pipelines.mash import data as D
    from cvpr24.pipelines.mash import nodes

    real = D.add_correlated_noise

    def poisoned(*args, **kwargs):
        out = real(*args, **kwargs)
        out[5, 5, 0] = np.nan
        return out

    monkeypatch.setattr(D, "add_correlated_noise", poisoned)
    data = {"source": "embedded", "crop_size": 32, "clip": False,
            "gauss": {"sigma": 25.0, "k": 3, "betas": [0.0], "crops": [{"name": "camera", "top": 0, "left": 0}]},
            "camera": {"presets": [], "crops": []}}
    with pytest.raises(DataValidationError) as err:
        nodes.ingest(data, {"seed": 0})
    assert "gauss_b0_camera" in str(err.value) and "n_nonfinite" in str(err.value)


def _nothing_downstream(project):
    assert not (project / "data" / "ci" / "mash" / "05_model_input").exists()
    assert not (project / "reports" / "ci" / "mash").exists()


def test_missing_dataset_says_where_to_get_it(tmp_path):
    """Through the CLI: the command exits non-zero and its output names the folder and the dataset."""
    project = make_project(tmp_path / "proj")
    missing = tmp_path / "nowhere" / "sidd"
    params = f"mash.data.source=real,mash.data.real.sidd_val.root={missing}"
    proc = kedro(project, "run", "--pipeline=mash", "--env=ci", f"--params={params}", check=False)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    flat = "".join(text.split())  # the CLI's rich traceback wraps long paths at the terminal width
    assert "".join(str(missing).split()) in flat and "SIDD" in text, text[-3000:]
    _nothing_downstream(project)


def test_wrong_shape_dataset_is_rejected_with_the_file_named(tmp_path):
    import scipy.io

    project = make_project(tmp_path / "proj")
    root = tmp_path / "sidd"
    root.mkdir()
    bad = np.zeros((2, 3, 64, 64), np.uint8)  # missing the colour axis
    scipy.io.savemat(root / "ValidationNoisyBlocksSrgb.mat", {"ValidationNoisyBlocksSrgb": bad})
    scipy.io.savemat(root / "ValidationGtBlocksSrgb.mat", {"ValidationGtBlocksSrgb": bad})
    text = kedro_session_fails(project, "mash",
                               {"mash": {"data": {"source": "real", "real": {"sidd_val": {"root": str(root)}}}}})
    assert "ValidationNoisyBlocksSrgb.mat" in text, text[-3000:]
    _nothing_downstream(project)
