"""CMS end to end in the ci profile: every phase runs, tables and claims are written, MLflow holds one run
per table row beside the paper's numbers, a single phase re-runs alone, and bad input stops the run with a
clear error before anything downstream is written.

The ci run is the session's `ci_run("cms")` (one real `kedro run` subprocess); the report re-run and the
bad-input run go through KedroSession in this process; the node-level bad-input tests are `unit` tier."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.conftest import kedro_session_fails, kedro_session_run, make_project


@pytest.fixture(scope="module")
def cms_run(ci_run):
    return ci_run("cms")


@pytest.fixture(scope="module")
def cms_ci_project(cms_run):
    return cms_run.project


def test_ci_run_writes_every_table_claim_and_figure(cms_run, cms_ci_project):
    rep = cms_ci_project / "reports" / "ci" / "cms"
    for t in ("gcd", "inductive", "ablation", "k_study", "k_estimation", "clip"):
        assert (rep / f"table_{t}.md").is_file() and (rep / f"table_{t}.csv").is_file()
    gcd = pd.read_csv(rep / "table_gcd.csv")
    cms = gcd[gcd["method"] == "CMS"].iloc[0]
    assert float(cms["cifar100_all_paper"]) == 82.3 and float(cms["cub_new_paper"]) == 64.0
    assert 0 <= float(cms["cifar100_all_ours"]) <= 100 and float(cms["cifar100_all_ours"]) != 82.3
    assert pd.isna(cms["imagenet100_all_ours"]) and "full profile" in cms["imagenet100_all_note"]
    simgcd = gcd[gcd["method"] == "SimGCD"].iloc[0]
    assert simgcd["source"] == "quoted" and float(simgcd["cifar100_all_paper"]) == 80.1 and pd.isna(simgcd["cifar100_all_ours"])
    ind = pd.read_csv(rep / "table_inductive.csv")
    assert float(ind.iloc[0]["cifar100_all_paper"]) == 80.7 and "not implemented" in ind.iloc[0]["cifar100_all_note"]
    claims = pd.read_csv(rep / "claims.csv")
    assert list(claims["id"]) == ["C1", "C1b", "C2", "C2b", "C3", "C4", "C5", "C5b", "C6", "C7", "C8"]
    assert set(claims.columns) >= {"id", "statement", "check", "measured", "margin", "passed", "verdict", "note"}
    metrics = json.loads((rep / "metrics.json").read_text())
    assert "CMS" in metrics["gcd"] and set(metrics["claims"]) == set(claims["id"])
    for fig in ("embeddings_2d", "accuracy_vs_k", "k_estimate", "ims_steps"):
        assert (rep / "figures" / f"{fig}.png").stat().st_size > 2000
    seconds = cms_run.seconds
    assert seconds < 150, f"ci run took {seconds:.0f} s (budget 60 s on 2 cores, slack for a loaded machine)"


def test_mlflow_has_one_run_per_row_and_the_paper_runs(cms_ci_project):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{cms_ci_project / 'mlruns' / 'mlflow.db'}")
    exp = client.get_experiment_by_name("cms")
    runs = client.search_runs([exp.experiment_id], max_results=5000)
    ours = [r for r in runs if r.data.tags.get("source") == "ours"]
    paper = [r for r in runs if r.data.tags.get("source") == "paper"]
    rows = pd.read_parquet(cms_ci_project / "data" / "ci" / "cms" / "08_reporting" / "table_rows.parquet")
    assert len(ours) == rows.groupby(["table", "row"]).ngroups
    assert len(paper) >= 11  # the gcd table's rows at least
    run = next(r for r in ours if r.data.tags["table"] == "gcd" and r.data.tags["row"] == "CMS")
    expect = rows.query("table == 'gcd' and row == 'CMS' and metric == 'cifar100_all'")["value"].iloc[0]
    assert run.data.metrics["cifar100_all"] == pytest.approx(expect)
    assert run.data.tags["profile"] == "ci" and run.data.tags["data_fingerprint"]
    p = next(r for r in paper if r.data.tags["table"] == "gcd" and r.data.tags["row"] == "CMS")
    assert p.data.metrics["cifar100_all"] == 82.3


def test_report_phase_runs_alone(cms_ci_project):
    rep = cms_ci_project / "reports" / "ci" / "cms" / "table_gcd.md"
    weights = cms_ci_project / "data" / "ci" / "cms" / "06_models" / "weights.npz"
    t_w, t_rep = weights.stat().st_mtime_ns, rep.stat().st_mtime_ns
    kedro_session_run(cms_ci_project, "cms", tags=["report"])
    assert weights.stat().st_mtime_ns == t_w and rep.stat().st_mtime_ns > t_rep


def test_missing_dataset_stops_before_anything_downstream(tmp_path):
    project = make_project(tmp_path / "proj")
    missing = tmp_path / "nowhere"
    params = {"cms": {"data": {"datasets": {"digits": {"kind": "cifar100", "root": str(missing)}}}}}
    text = kedro_session_fails(project, "cms", params)
    assert str(missing) in text and "cs.toronto.edu" in text, text[-3000:]
    assert not (project / "data" / "ci" / "cms" / "05_model_input").exists()
    assert not (project / "reports" / "ci" / "cms").exists()


# --------------------------------------------------------------- bad input at the node level (fast)
DATA = {"source": "embedded", "datasets": {"digits": {"kind": "digits", "size": 16, "channels": 1, "n_classes": 10,
                                                      "old_classes": [0, 1, 2, 3, 4]}}}


def _poison(monkeypatch, fn):
    from cvpr24.pipelines.cms import data as D

    real = D.digits_gcd
    monkeypatch.setattr(D, "digits_gcd", lambda size=16: fn(*real(size)))


@pytest.mark.unit
def test_nan_image_is_named(monkeypatch):
    from cvpr24.core.validation import DataValidationError
    from cvpr24.pipelines.cms import nodes

    def nan(img, lab):
        img = img.astype(np.float32)
        img[7, 3, 3, 0] = np.nan
        return img, lab

    _poison(monkeypatch, nan)
    with pytest.raises(DataValidationError) as err:
        nodes.ingest(DATA, {"seed": 0})
    assert "digits/000007" in str(err.value) and "n_nonfinite" in str(err.value)


@pytest.mark.unit
def test_wrong_shape_and_unknown_label_are_named(monkeypatch):
    from cvpr24.core.validation import DataValidationError
    from cvpr24.pipelines.cms import nodes

    _poison(monkeypatch, lambda img, lab: (img[:, :12], lab))
    with pytest.raises(DataValidationError, match="height"):
        nodes.ingest(DATA, {"seed": 0})

    def bad_label(img, lab):
        lab = lab.copy()
        lab[11] = 42
        return img, lab

    _poison(monkeypatch, bad_label)
    with pytest.raises(DataValidationError) as err:
        nodes.ingest(DATA, {"seed": 0})
    assert "digits/000011" in str(err.value) and "label" in str(err.value)


@pytest.mark.unit
def test_corrupt_file_is_named(tmp_path):
    from cvpr24.pipelines.cms import nodes

    base = tmp_path / "cifar-100-python"
    base.mkdir()
    (base / "train").write_bytes(b"\x80\x02this is not a pickle")
    data = {"source": "real", "datasets": {"c": {"kind": "cifar100", "root": str(tmp_path), "size": 32,
                                                 "channels": 3, "n_classes": 100}}}
    with pytest.raises(Exception) as err:
        nodes.ingest(data, {"seed": 0})
    assert "train" in str(err.value) or "pickle" in str(err.value).lower()


@pytest.mark.unit
def test_empty_split_and_unknown_old_class_stop_preprocess():
    from cvpr24.core.validation import DataValidationError
    from cvpr24.pipelines.cms import nodes

    raw, manifest = nodes.ingest(DATA, {"seed": 0})
    prep = {"heldout_fraction": 0.2, "prop_train_labels": 0.0, "split_seed": 0}
    with pytest.raises(DataValidationError, match="split_sizes"):
        nodes.preprocess(raw, manifest, DATA, prep)
    bad = {"datasets": {"digits": {**DATA["datasets"]["digits"], "old_classes": [0, 11]}}}
    with pytest.raises(DataValidationError, match="11"):
        nodes.preprocess(raw, manifest, bad, {**prep, "prop_train_labels": 0.5})
