"""The CI gate bites: a deliberately broken method component makes `python -m cvpr24.core.cicheck` fail.

The project copy carries the committed `reports/ci/cms/metrics.json` (the baseline) and a copy of the source
with the CMS contrastive mean-shift loss's sign flipped; the copy's source shadows the installed package
through PYTHONPATH, exactly as a developer's broken edit would. `make ci-check` in `.ci/run` shows the other
half: unchanged main passes on a fresh machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO, make_project

pytestmark = pytest.mark.slow

GOOD = "return (-pos + torch.logsumexp(neg, dim=1)).mean()"
BROKEN = "return (pos - torch.logsumexp(neg, dim=1)).mean()"


def test_flipping_the_cms_loss_sign_fails_the_ci_gate(tmp_path):
    project = make_project(tmp_path / "p")
    model = project / "src/cvpr24/pipelines/cms/model.py"
    text = model.read_text()
    assert GOOD in text, "the CMS loss changed: update the break this test plants"
    model.write_text(text.replace(GOOD, BROKEN))
    (project / "reports/ci/cms").mkdir(parents=True)
    shutil.copy2(REPO / "reports/ci/cms/metrics.json", project / "reports/ci/cms/metrics.json")
    baseline = (project / "reports/ci/cms/metrics.json").read_text()
    env = {**os.environ, "PYTHONPATH": str(project / "src"), "KEDRO_DISABLE_TELEMETRY": "true", "MPLBACKEND": "Agg"}
    proc = subprocess.run([sys.executable, "-m", "cvpr24.core.cicheck", "cms"], cwd=project, env=env,
                          capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-4000:]
    assert "moved beyond tolerance" in out, out[-4000:]
    # the gate says whether the machine differs from the baseline's: "same fingerprint" on the machine that made
    # the committed values, the differing keys (e.g. cpu_isa avx512 vs avx2) on another one
    assert ("same environment fingerprint" in out
            or "environment differs from the one that made the committed values" in out), out[-4000:]
    # the committed baseline is kept, not overwritten by the broken run
    assert (project / "reports/ci/cms/metrics.json").read_text() == baseline
