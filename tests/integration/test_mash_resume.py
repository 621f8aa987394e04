"""A `kill -9` during MASH's train phase, then the same command again: the run resumes from its job
cache and checkpoints and ends with exactly the outputs of an uninterrupted run.

The train phase's inputs are the session's ci run (`ci_run("mash")`: its ingest and preprocess outputs,
copied), narrowed to the jobs of one image (its blind-spot trainings and baselines), so the two train runs
(uninterrupted, then killed and resumed) take seconds each. Every train run is a real `kedro run`
subprocess: the kill is a SIGKILL of the process group, the resume is the same command started again."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from tests.conftest import env, kedro, make_project

PARAMS = ("mash.train.iterations=80,mash.train.checkpoint_every=10,mash.train.workers=1,"
          "runtime.threads=1")
TRAIN = ["run", "--pipeline=mash", "--env=ci", "--tags=train", f"--params={PARAMS}"]


def _prepare(mash, dest):
    """A project copy holding the ci run's phase inputs of the train phase, for one image only."""
    project = make_project(dest)
    for phase in ("01_raw", "05_model_input"):
        shutil.copytree(mash.data / phase, project / "data" / "ci" / "mash" / phase)
    jobs_path = project / "data" / "ci" / "mash" / "05_model_input" / "jobs.parquet"
    jobs = pd.read_parquet(jobs_path)
    bsd_per_image = jobs[jobs["kind"] == "bsd"].groupby("image_id").size()
    image = bsd_per_image.index[bsd_per_image >= 3][-1]  # an image with enough trainings to kill part-way
    jobs[jobs["image_id"] == image].reset_index(drop=True).to_parquet(jobs_path)
    return project


def _outputs(project):
    with np.load(project / "data" / "ci" / "mash" / "07_model_output" / "denoised.npz") as f:
        return {k: f[k] for k in f.files}


def test_kill_then_rerun_matches_uninterrupted(ci_run, tmp_path):
    mash = ci_run("mash")
    ref = _prepare(mash, tmp_path / "ref")
    kedro(ref, *TRAIN)
    expected = _outputs(ref)
    assert sum("__bsd_" in k for k in expected) >= 3

    proj = _prepare(mash, tmp_path / "killed")
    proc = subprocess.Popen([sys.executable, "-m", "kedro", *TRAIN], cwd=proj, env=env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    jobs_dir = proj / "data" / "ci" / "mash" / "06_models" / "jobs"
    deadline = time.time() + 300
    # wait until some jobs are finished and one is part-way (has a numbered checkpoint), then kill -9
    while time.time() < deadline:
        finals = list(jobs_dir.glob("*/final.pt")) if jobs_dir.exists() else []
        partial = list(jobs_dir.glob("*/step_*.pt")) if jobs_dir.exists() else []
        if len(finals) >= 2 and partial:
            break
        if proc.poll() is not None:
            pytest.fail("the training run ended before it could be killed; raise the iteration count")
        time.sleep(0.05)
    else:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("no checkpoint appeared within 300 s")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (proj / "data" / "ci" / "mash" / "07_model_output" / "denoised.npz").exists()

    kedro(proj, *TRAIN)
    got = _outputs(proj)
    assert set(got) == set(expected)
    for key in expected:
        if "__bsd_" in key:  # the trained networks: bit-identical after a kill and resume
            np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
        else:  # BM3D's compiled library is not bit-deterministic between runs (~1e-5 grey levels)
            np.testing.assert_allclose(got[key], expected[key], atol=1e-3, err_msg=key)

    log = pd.read_parquet(proj / "data" / "ci" / "mash" / "07_model_output" / "job_log.parquet")
    assert log["cached"].sum() >= 2  # finished jobs were read back, not retrained
