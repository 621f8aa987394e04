"""`make repro` says where it is, and `make tour`'s project copy (cvpr24.core.repro)."""

from __future__ import annotations

import io
import subprocess

import yaml

from cvpr24.core import repro as R


def test_progress_names_the_paper_the_stage_and_the_elapsed_time():
    p = R.Progress(R.ROOT, out=io.StringIO(), start=0.0)
    n = len(p.papers)
    assert n >= 5 and "mash" in p.papers
    line = p.line("Running stage 'pipelines/mash/dvc.yaml:train':")
    assert line is not None and f"paper 1/{n} mash: stage train (3/5)" in line  # k: in the order DVC runs them
    assert line.startswith("==> [")  # elapsed time in brackets
    assert p.line("Stage 'pipelines/bus/dvc.yaml:ingest' didn't change, skipping") is None
    assert f"paper 2/{n} cms: stage report (5/5)" in p.line("Running stage 'pipelines/cms/dvc.yaml:report':")
    assert f"paper 1/{n} mash: stage report" in p.line("Running stage 'pipelines/mash/dvc.yaml:report':")
    assert "stage index" in p.line("Running stage 'index':")
    assert p.line("some kedro log line") is None
    summary = p.summary(0)
    assert "4 stage(s) ran, 1 up to date" in summary and "finished" in summary
    assert "FAILED (exit 3)" in p.summary(3)


def test_repro_passes_dvc_output_through_with_progress_lines(tmp_path, monkeypatch):
    """The wrapper streams the command's output and adds its own lines; the exit status is DVC's."""
    fake = tmp_path / "bin"
    fake.mkdir()
    script = fake / "dvc"
    script.write_text("#!/bin/sh\necho \"Running stage 'pipelines/mash/dvc.yaml:ingest':\"\necho done\nexit 7\n")
    script.chmod(0o755)
    monkeypatch.setattr(R.shutil, "which", lambda *a, **k: str(script))
    out = io.StringIO()
    rc = R.repro([], cwd=R.ROOT, out=out)
    text = out.getvalue()
    assert rc == 7
    assert "Running stage 'pipelines/mash/dvc.yaml:ingest':" in text and "done" in text
    assert "mash: stage ingest (1/5)" in text and "FAILED (exit 7)" in text


def test_tour_copy_is_a_ci_profile_project_of_its_own(tmp_path):
    dest = R.copy_project(tmp_path / "tour")
    params = yaml.safe_load((dest / "params.yaml").read_text())
    assert params["profile"] == "ci" and params["data_root"] == "data/ci" and params["reports_root"] == "reports/ci"
    assert (dest / "pipelines" / "mash" / "dvc.yaml").is_file() and (dest / "dvc.yaml").is_file()
    assert not list(dest.glob("pipelines/*/dvc.lock"))  # the repository's base-profile locks stay out
    assert (dest / ".git").is_dir() and (dest / ".dvc" / "config").is_file()
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=dest, capture_output=True, text=True)
    assert top.stdout.strip() == str(dest.resolve())
    # a refresh keeps the copy's own record of what ran (its dvc.lock files)
    (dest / "pipelines" / "mash" / "dvc.lock").write_text("schema: '2.0'\n")
    R.copy_project(dest)
    assert (dest / "pipelines" / "mash" / "dvc.lock").read_text() == "schema: '2.0'\n"
    R.copy_project(dest, fresh=True)
    assert not (dest / "pipelines" / "mash" / "dvc.lock").exists()
