"""Project-level invariants: the pipelines register, params.yaml agrees with the Kedro profiles, and
every DVC stage runs the phase it is named after."""

from __future__ import annotations

from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]


def test_params_yaml_roots_match_the_profile_globals():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    globals_ = yaml.safe_load((REPO / "conf" / params["profile"] / "globals.yml").read_text())
    assert params["data_root"] == globals_["data_root"]
    assert params["reports_root"] == globals_["reports_root"]


def test_every_pipeline_has_five_tagged_phases_and_dvc_stages():
    from kedro.framework.project import configure_project

    from cvpr24.pipeline_registry import register_pipelines, under_construction

    configure_project("cvpr24")
    pipes = register_pipelines()
    assert "mash" in pipes
    for slug in under_construction():  # components only: no pipeline may half-exist
        assert slug not in pipes and not (REPO / "src" / "cvpr24" / "pipelines" / slug / "pipeline.py").exists()
        assert not (REPO / "pipelines" / slug / "dvc.yaml").exists(), slug
    for slug, pipe in pipes.items():
        if slug == "__default__":
            continue
        tags = set().union(*(n.tags for n in pipe.nodes))
        assert {"ingest", "preprocess", "train", "evaluate", "report"} <= tags, slug
        stages = yaml.safe_load((REPO / "pipelines" / slug / "dvc.yaml").read_text())["stages"]
        assert list(stages) == ["ingest", "preprocess", "train", "evaluate", "report"]
        for phase, stage in stages.items():
            assert f"--pipeline={slug} --tags={phase} " in stage["cmd"]
        assert (REPO / "pipelines" / slug / "paper.yaml").is_file()
        assert (REPO / "pipelines" / slug / "README.md").is_file()
