"""OmniLocalRF end to end in the ci profile: the street is written in the released layout and read back by the
one loader, every run trains, tables / claims / figures are written, trained runs come back from the cache, and
bad input stops the run before anything is trained.

The ci run is the session's `ci_run("omnilocalrf")` (one real `kedro run` subprocess); the other runs go through
KedroSession in this process."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.conftest import kedro_session_fails, kedro_session_run, make_project


@pytest.fixture(scope="module")
def olrf_run(ci_run):
    return ci_run("omnilocalrf")


@pytest.fixture(scope="module")
def olrf_project(olrf_run):
    return olrf_run.project


def test_ci_run_writes_tables_claims_and_figures(olrf_run, olrf_project):
    rep = olrf_project / "reports" / "ci" / "omnilocalrf"
    for t in ("1", "2", "3", "4", "dynamic"):
        assert (rep / f"table_{t}.md").is_file() and (rep / f"table_{t}.csv").is_file()
    t1 = pd.read_csv(rep / "table_1.csv").set_index("method")
    assert float(t1.loc["Ours wo/ pose", "psnr_paper"]) == 29.93
    for row in ("Ours wo/ pose", "LocalRF wo/ pose", "Ours wo/ pose, static only"):
        assert np.isfinite(float(t1.loc[row, "psnr_ours"])), row          # measured, not the paper's number
    assert str(t1.loc["EgoNeRF", "psnr_ours"]) in ("nan", "")
    t3 = pd.read_csv(rep / "table_3.csv").set_index("method")
    assert float(t3.loc["Ours", "ate_ours"]) > 0
    claims = pd.read_csv(rep / "claims.csv", keep_default_na=False).set_index("id")
    assert {"C1", "C1b", "C2", "C2b", "C2c", "C3", "C3b", "C4", "C4b", "C5", "C5b", "C6", "C6b", "C7", "C7b",
            "S1"} <= set(claims.index)
    assert claims.loc["C1", "verdict"] in ("PASS", "FAIL", "INCONCLUSIVE")   # measured in the ci profile
    assert claims.loc["C2", "verdict"] == "N/A"                             # (d) is not a ci run
    for fig in ("panoramas", "mask", "camera_paths", "training"):
        assert (rep / "figures" / f"{fig}.png").stat().st_size > 1000
    assert "### Runs" in (rep / "README.md").read_text()
    assert olrf_run.seconds < 240, f"ci run took {olrf_run.seconds:.0f} s (budget 60 s on 2 idle cores)"


def test_street_is_written_in_the_released_layout(olrf_project):
    from cvpr24.pipelines.omnilocalrf.data import load_dataset

    raw = olrf_project / "data" / "ci" / "omnilocalrf" / "01_raw" / "street"
    for variant in ("street_on", "street_off"):
        d = load_dataset(raw / variant, test_frame_every=4)
        assert d.n_frames == 8 and d.fwd_flow is not None and d.gt is not None and d.w2c is not None
    assert (raw / "street_on" / "flow_ds" / "fwd_frame_0001.png").is_file()


def test_trained_runs_come_back_from_the_cache(olrf_project):
    kedro_session_run(olrf_project, "omnilocalrf", tags=["train"])
    log = pd.read_parquet(olrf_project / "data" / "ci" / "omnilocalrf" / "07_model_output" / "train_log.parquet")
    assert log["cached"].all(), log
    assert set(log["run"]) == {"full", "localrf", "full_static"}


def test_missing_scene_folder_says_what_to_do(tmp_path):
    project = make_project(tmp_path / "proj")
    text = kedro_session_fails(project, "omnilocalrf", {"omnilocalrf": {"data": {
        "source": "real", "real": {"root": str(tmp_path / "nowhere")}}}})
    assert "nowhere" in text and "released layout" in text, text[-3000:]
    assert not (project / "data" / "ci" / "omnilocalrf" / "05_model_input").exists()
    assert not (project / "reports" / "ci" / "omnilocalrf").exists()


def test_missing_priors_and_non_panoramic_frames_stop_before_training(tmp_path, olrf_project):
    src = olrf_project / "data" / "ci" / "omnilocalrf" / "01_raw" / "street" / "street_on"
    no_flow = tmp_path / "no_flow"
    shutil.copytree(src, no_flow)
    shutil.rmtree(no_flow / "flow_ds")
    project = make_project(tmp_path / "proj")
    text = kedro_session_fails(project, "omnilocalrf", {"omnilocalrf": {"data": {
        "source": "real", "test_frame_every": 4, "real": {"root": str(no_flow)}}}})
    assert "flow_ds" in text, text[-3000:]
    assert not (project / "data" / "ci" / "omnilocalrf" / "06_models").exists()

    square = tmp_path / "square"
    shutil.copytree(src, square)
    shutil.rmtree(square / "gt")
    for img in sorted((square / "images").iterdir()):
        Image.open(img).resize((32, 32)).save(img)
    project2 = make_project(tmp_path / "proj2")
    text = kedro_session_fails(project2, "omnilocalrf", {"omnilocalrf": {"data": {
        "source": "real", "test_frame_every": 4, "real": {"root": str(square)}}}})
    assert "32x32" in text or "2:1" in text, text[-3000:]
    assert not (project2 / "data" / "ci" / "omnilocalrf" / "06_models").exists()
