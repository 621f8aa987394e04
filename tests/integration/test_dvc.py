"""DVC drives the phases: `dvc repro` runs every stage, a second one runs nothing, and an experiment
(`dvc exp run -S <params file>:<key>=<value>`) that changes a report parameter re-runs only the report
stage and is listed by `dvc exp show` with its metrics. Run on the ci profile in a throw-away copy of the
project (the `mash_dvc` session fixture, shared with the lock, S3 and MLflow-server tests of tests/ops)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import MASH_STAGES, REPO, clone_project, dvc, git_commit

MASH = MASH_STAGES
PAPERS = sorted(p.parent.name for p in (REPO / "pipelines").glob("*/dvc.yaml"))


def ran_stages(proc) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", proc.stdout + proc.stderr))


def test_repro_runs_every_stage_then_nothing(mash_dvc):
    # one paper's stages (a plain `dvc repro` runs every paper's: minutes even in the ci profile; the index
    # stage's wiring is checked statically below)
    first = set(re.findall(r"Running stage '([^']+)'", mash_dvc.first_log))
    assert {f"{MASH}:{s}" for s in ("ingest", "preprocess", "train", "evaluate", "report")} <= first
    assert (mash_dvc.project / "reports" / "ci" / "mash" / "table_1.md").is_file()

    second = dvc(mash_dvc.project, "repro", MASH)
    assert ran_stages(second) == set(), second.stdout

    shown = dvc(mash_dvc.project, "metrics", "show").stdout
    assert "table_1.MASH.sidd_val_psnr" in shown or "MASH" in shown


def test_experiment_reruns_only_the_report_and_is_listed_with_its_metrics(mash_dvc, tmp_path):
    """`dvc exp run -S` on a paper's parameter file: only the stage that reads the key re-runs, the file
    keeps its comments, and `dvc exp show` lists the experiment with the parameter and the metrics."""
    project = clone_project(mash_dvc.project, tmp_path / "exp")
    git_commit(project, "baseline: mash reproduced on the ci profile")
    params = project / "conf" / "base" / "parameters" / "mash.yml"
    before = params.read_text()
    assert "figure_dpi: 110" in before

    exp = dvc(project, "exp", "run", MASH, "-n", "dpi100", "-S",
              "conf/base/parameters/mash.yml:mash.report.figure_dpi=100")
    assert ran_stages(exp) == {f"{MASH}:report"}, exp.stdout + exp.stderr
    text = params.read_text()
    assert "figure_dpi: 100" in text and text.count("#") == before.count("#")  # edited in place, comments kept

    shown = json.loads(dvc(project, "exp", "show", "--json").stdout)
    exps = [e for rev in shown for e in (rev.get("experiments") or [])]
    runs = [r for e in exps for r in (e.get("revs") or [])]
    named = [r for r in runs if r.get("name") == "dpi100"]
    assert named, json.dumps(shown)[:3000]
    data = named[0]["data"]
    assert data["params"]["conf/base/parameters/mash.yml"]["data"]["mash"]["report"]["figure_dpi"] == 100
    metrics = data["metrics"]["reports/ci/mash/metrics.json"]["data"]
    assert "table_1" in metrics and "MASH" in metrics["table_1"]
    table = dvc(project, "exp", "show", "--no-pager", "--md").stdout
    assert "dpi100" in table


@pytest.mark.unit
@pytest.mark.parametrize("path", sorted(str(p.relative_to(REPO)) for p in REPO.glob("conf/*/parameters/*.yml")
                                         if p.stem in PAPERS))
def test_dvc_can_set_every_parameter_file(path, tmp_path):
    """`dvc exp run -S <file>:<key>=<value>` parses the file with OmegaConf and resolves every `${...}`
    in it (Kedro's `${globals:...}` is unknown to DVC: "Unsupported interpolation type globals"), so the
    papers' parameter files hold plain values; a key set through DVC's own override code changes that
    value only and keeps the comments. (The train phases' checkpoint folders, which need the profile's
    data root, are in conf/base/parameters/checkpoints.yml, a file no experiment sets.)"""
    from dvc.utils.hydra import apply_overrides

    src = REPO / path
    text = src.read_text()
    assert "${" not in text, f"{path} holds an interpolation `dvc exp run -S` cannot resolve"
    doc = yaml.safe_load(text) or {}

    def first_leaf(d: dict, prefix: str = "") -> tuple[str, object] | None:
        for k, v in d.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                if (hit := first_leaf(v, f"{key}.")) is not None:
                    return hit
            elif isinstance(v, int | float | str) and not isinstance(v, bool) and "." not in str(k):
                return key, v
        return None

    leaf = first_leaf(doc)
    # every paper's parameter file has a scalar a user could set; one without is broken, not skippable
    assert leaf is not None, f"{path} has no scalar parameter for `dvc exp run -S` to set"
    key, value = leaf
    new = value + 1 if isinstance(value, int | float) else f"{value}x"
    copy = tmp_path / Path(path).name
    shutil.copy2(src, copy)
    apply_overrides(copy, [f"{key}={new}"])
    got = yaml.safe_load(copy.read_text())
    node = got
    for part in key.split("."):
        node = node[part]
    assert node == new
    if "#" in text:
        assert "#" in copy.read_text()


@pytest.mark.unit
def test_every_paper_stage_reads_its_parameter_blocks():
    """Each stage of `pipelines/<slug>/dvc.yaml` lists keys of `conf/base/parameters/<slug>.yml` that exist
    there (an experiment on a key re-runs exactly the stages that list it)."""
    for slug in PAPERS:
        stages = yaml.safe_load((REPO / "pipelines" / slug / "dvc.yaml").read_text())["stages"]
        params = yaml.safe_load((REPO / "conf" / "base" / "parameters" / f"{slug}.yml").read_text())
        for name, stage in stages.items():
            for entry in stage.get("params", []):
                if not isinstance(entry, dict):
                    continue
                for file, keys in entry.items():
                    assert file == f"conf/base/parameters/{slug}.yml", (slug, name, file)
                    for key in keys:
                        node = params
                        for part in key.split("."):
                            assert isinstance(node, dict) and part in node, f"{slug}:{name} lists {key}"
                            node = node[part]


@pytest.mark.unit
def test_index_stage_depends_on_every_implemented_paper():
    """`dvc repro` regenerates everything only if the index stage depends on each paper's report: every
    `pipelines/<slug>/dvc.yaml` must have its README, claims and metrics among the index's deps."""
    root = yaml.safe_load((REPO / "dvc.yaml").read_text())
    deps = set(root["stages"]["index"]["deps"])
    assert len(PAPERS) >= 5
    for slug in PAPERS:
        for name in ("README.md", "claims.csv", "metrics.json"):
            assert f"${{reports_root}}/{slug}/{name}" in deps, f"index stage lacks {slug}/{name}"
