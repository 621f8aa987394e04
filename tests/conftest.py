"""Shared fixtures: a throw-away copy of the project (conf, pipelines, DVC files) in which pipelines run
in the `ci` profile, so tests never touch the repository's data/, reports/ or mlruns/."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import cvpr24  # noqa: F401  (first: pins the machine-independent CPU kernels before any test runs torch)

REPO = Path(__file__).resolve().parents[1]
COPY = ["pyproject.toml", "src", "conf", "pipelines", "params.yaml", "dvc.yaml", ".dvc/config", ".dvcignore",
        ".telemetry"]


def make_project(dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    for item in COPY:
        src = REPO / item
        if src.is_dir():
            shutil.copytree(src, dest / item,
                            ignore=shutil.ignore_patterns("local", "__pycache__", "*.egg-info", "dvc.lock"))
        elif src.exists():
            (dest / item).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / item)
    (dest / "conf" / "local").mkdir(exist_ok=True)
    return dest


def kedro(project: Path, *args: str, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, "-m", "kedro", *args], cwd=project, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"kedro {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


@pytest.fixture(scope="session")
def mash_ci_project(tmp_path_factory):
    """The project copy after one full `kedro run --pipeline=mash --env=ci` (and its wall time)."""
    import time

    project = make_project(tmp_path_factory.mktemp("mash_ci"))
    start = time.perf_counter()
    proc = kedro(project, "run", "--pipeline=mash", "--env=ci")
    project_seconds = time.perf_counter() - start
    (project / "ci_run_seconds.txt").write_text(f"{project_seconds:.1f}\n")
    (project / "ci_run.log").write_text(proc.stdout + proc.stderr)
    return project
