"""DVC operations, for real: two `dvc repro` at once (the second refuses with DVC's lock, the first
finishes intact), and an S3-compatible remote (moto's server on loopback): push MASH's outputs, drop the
local cache and outputs, `dvc pull` restores them and `dvc repro` then has nothing to recompute."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import BIN, MASH_STAGES, REPO, run, serve

pytestmark = pytest.mark.ops
STAGE = MASH_STAGES


def _tracked(project: Path) -> list[Path]:
    """The stage outputs DVC caches (dvc.lock), i.e. what a push uploads and a pull restores."""
    lock = yaml.safe_load((project / "pipelines" / "mash" / "dvc.lock").read_text())
    return sorted({project / o["path"] for st in lock["stages"].values() for o in st.get("outs", [])
                   if (project / o["path"]).is_file() and str(o["path"]).startswith("data/")})


def _digests(paths: list[Path]) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths if p.is_file()}


def test_second_repro_refuses_cleanly_and_the_first_finishes_intact(mash_dvc):
    project, second = mash_dvc.project, mash_dvc.second
    text = second.stdout + second.stderr
    assert mash_dvc.first_running_after_second, "the first repro had finished before the second started"
    assert second.returncode != 0, text
    # DVC's repo lock ("Unable to acquire lock") or its output lock ("... is busy, it is being blocked by")
    assert re.search(r"Unable to acquire lock|is busy, it is being blocked by", text), text[-2000:]
    assert "Traceback" not in text  # a clean refusal, not a crash
    assert mash_dvc.second_s < 60
    # the first one completed every stage and left a consistent state
    assert mash_dvc.first_rc == 0
    for phase in ("ingest", "preprocess", "train", "evaluate", "report"):
        assert f"Running stage '{STAGE}:{phase}'" in mash_dvc.first_log, mash_dvc.first_log[-3000:]
    status = run([str(BIN / "dvc"), "status", STAGE], project)
    assert "up to date" in status.stdout, status.stdout
    assert (project / "reports" / "ci" / "mash" / "metrics.json").is_file()


@pytest.fixture(scope="module")
def s3_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("moto")
    with serve(lambda port: [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)], "/moto-api/",
               root / "moto.log", cwd=root, timeout=90) as url:
        yield url


AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}


def test_s3_remote_push_drop_pull_restores_without_recomputing(mash_dvc, s3_server, monkeypatch, tmp_path):
    """On a clone of the shared DVC project (the test deletes its cache and outputs)."""
    import boto3

    from tests.conftest import clone_project

    project = clone_project(mash_dvc.project, tmp_path / "s3")
    for k, v in AWS.items():
        monkeypatch.setenv(k, v)
    s3 = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    s3.create_bucket(Bucket="cvpr24-dvc")
    dvc = str(BIN / "dvc")
    run([dvc, "remote", "add", "s3store", "s3://cvpr24-dvc/store"], project, **AWS)
    run([dvc, "remote", "modify", "s3store", "endpointurl", s3_server], project, **AWS)
    outputs = project / "data" / "ci" / "mash"
    tracked = _tracked(project)
    before = _digests(tracked)
    assert len(before) >= 12, tracked

    t = time.perf_counter()
    pushed = run([dvc, "push", "-r", "s3store", STAGE], project, **AWS)
    push_s = time.perf_counter() - t
    objects = s3.list_objects_v2(Bucket="cvpr24-dvc").get("Contents", [])
    n_objects, n_bytes = len(objects), sum(o["Size"] for o in objects)
    assert n_objects >= len(set(before.values())), pushed.stdout  # identical files are stored once

    shutil.rmtree(project / ".dvc" / "cache")
    shutil.rmtree(outputs)
    missing = run([dvc, "status", STAGE], project, **AWS)
    assert "deleted" in missing.stdout or "changed outs" in missing.stdout, missing.stdout

    t = time.perf_counter()
    run([dvc, "pull", "-r", "s3store", STAGE], project, **AWS)
    pull_s = time.perf_counter() - t
    assert _digests(tracked) == before  # byte-identical
    repro = run([dvc, "repro", STAGE], project, **AWS)
    assert "Running stage" not in repro.stdout + repro.stderr, repro.stdout
    assert "up to date" in run([dvc, "status", STAGE], project).stdout

    out = REPO / "reports" / "ops"
    out.mkdir(parents=True, exist_ok=True)
    (out / "dvc_s3.json").write_text(json.dumps({
        "pipeline": "mash (ci profile)", "files": len(before), "objects": n_objects, "bytes": n_bytes,
        "push_s": round(push_s, 2), "pull_s": round(pull_s, 2),
        "note": "moto server on 127.0.0.1, measured by tests/ops/test_ops_dvc.py"}, indent=2) + "\n")
