"""The committed dvc.lock files describe the code at HEAD: no stage's code, parameters or command changed
since the reports were regenerated. Data deps and outputs are not checked (a fresh clone has no data/ and an
empty DVC cache); what is checked is exactly what would make `make repro` re-run a stage on unchanged main."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CODE_PREFIXES = ("src/", "conf/", "pipelines/", "params.yaml")


def stale_stages(status: dict) -> dict[str, list[str]]:
    """{stage: [what changed]} for code, parameter or command changes in a `dvc status --json` document."""
    out: dict[str, list[str]] = {}
    for stage, entries in status.items():
        for entry in entries:
            if isinstance(entry, str):  # "changed command", "always changed"
                if entry != "always changed":
                    out.setdefault(stage, []).append(entry)
                continue
            for path, how in (entry.get("changed deps") or {}).items():
                if path.startswith(CODE_PREFIXES):
                    out.setdefault(stage, []).append(f"{path}: {how}")
    return out


def test_stale_stage_detection():
    status = {"a:train": [{"changed deps": {"src/x.py": "modified", "data/y.npz": "deleted"}},
                          {"changed outs": {"data/z": "not in cache"}}],
              "b:report": [{"changed outs": {"reports/b": "deleted"}}],
              "c:ingest": ["changed command"]}
    assert stale_stages(status) == {"a:train": ["src/x.py: modified"], "c:ingest": ["changed command"]}


def test_committed_dvc_lock_matches_the_code_at_head():
    dvc = Path(sys.executable).with_name("dvc")
    proc = subprocess.run([str(dvc), "status", "--json"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    stale = stale_stages(json.loads(proc.stdout or "{}"))
    assert not stale, ("dvc.lock is stale for these stages (the code changed after the reports were made): "
                       f"{json.dumps(stale, indent=1)}\nRun `make repro` and commit the reports and dvc.lock.")
