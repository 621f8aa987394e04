"""DVC drives the phases: `dvc repro` runs every stage, a second one runs nothing, and a report-only
parameter change re-runs only the report stage (and the index that depends on it). Run on the ci
profile in a throw-away copy of the project."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import make_project

pytestmark = pytest.mark.slow


def dvc(project: Path, *args: str) -> str:
    bindir = Path(sys.executable).parent
    env = {**os.environ, "PATH": f"{bindir}:{os.environ['PATH']}", "KEDRO_DISABLE_TELEMETRY": "true",
           "MPLBACKEND": "Agg"}
    proc = subprocess.run([str(bindir / "dvc"), *args], cwd=project, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc.stdout + proc.stderr


def ran_stages(output: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", output))


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory):
    if shutil.which("git") is None:
        pytest.fail("git is required for the DVC tests")
    project = make_project(tmp_path_factory.mktemp("dvc"))
    params = yaml.safe_load((project / "params.yaml").read_text())
    params.update(profile="ci", data_root="data/ci", reports_root="reports/ci")
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    return project


MASH = "pipelines/mash/dvc.yaml"


def test_repro_then_noop_then_report_only(dvc_project):
    # one paper's stages (a plain `dvc repro` runs every paper's: minutes even in the ci profile; the index
    # stage's wiring is checked statically below)
    first = dvc(dvc_project, "repro", MASH)
    assert {"pipelines/mash/dvc.yaml:ingest", "pipelines/mash/dvc.yaml:train",
            "pipelines/mash/dvc.yaml:report"} <= ran_stages(first)
    assert (dvc_project / "reports" / "ci" / "mash" / "table_1.md").is_file()

    second = dvc(dvc_project, "repro", MASH)
    assert ran_stages(second) == set(), second

    base = dvc_project / "conf" / "base" / "parameters" / "mash.yml"
    text = base.read_text()
    assert "figure_dpi: 110" in text
    base.write_text(text.replace("figure_dpi: 110", "figure_dpi: 90"))
    third = dvc(dvc_project, "repro", MASH)
    ran = ran_stages(third)
    # only the report re-ran
    assert ran == {"pipelines/mash/dvc.yaml:report"}, third

    shown = dvc(dvc_project, "metrics", "show")
    assert "table_1.MASH.sidd_val_psnr" in shown or "MASH" in shown


def test_index_stage_depends_on_every_implemented_paper():
    """`dvc repro` regenerates everything only if the index stage depends on each paper's report: every
    `pipelines/<slug>/dvc.yaml` must have its README, claims and metrics among the index's deps."""
    from tests.conftest import REPO

    root = yaml.safe_load((REPO / "dvc.yaml").read_text())
    deps = set(root["stages"]["index"]["deps"])
    slugs = sorted(p.parent.name for p in (REPO / "pipelines").glob("*/dvc.yaml"))
    assert len(slugs) >= 5
    for slug in slugs:
        for name in ("README.md", "claims.csv", "metrics.json"):
            assert f"${{reports_root}}/{slug}/{name}" in deps, f"index stage lacks {slug}/{name}"
