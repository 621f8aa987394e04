"""`dvc repro` that says where it is, and the newcomer's tour.

`python -m cvpr24.core.repro [dvc repro arguments]` runs `dvc repro` and, before each stage, prints a line
with the elapsed time, the paper (k of n) and the stage (phase j of the paper's stages), so a 25-minute
`make repro` is never silent; at the end, how many stages ran and how long it took. DVC's own output is
passed through unchanged (progress bars included), and its exit status is returned.

`python -m cvpr24.core.repro --tour [--fresh] [--dest .tour]` is `make tour`: a scratch copy of the project
(`.tour/`, git- and DVC-ignored) switched to the `ci` profile, in which `dvc repro` runs every implemented
paper's five stages and the index, exactly as `make repro` does on the embedded data but at ci sizes
(minutes instead of half an hour; one torch thread per stage unless `--threads 2`). The copy is a DVC
project and a git repository of its own, so `dvc status`, `dvc metrics show`, `dvc exp run -S ...` and
`kedro mlflow ui --env ci` work inside it. A second `make tour` refreshes the copy's code and
configuration and re-runs only what changed (`--fresh` starts over).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]  # src/cvpr24/core -> repository root
RUNNING = re.compile(r"Running stage '([^']+)'")
SKIPPED = re.compile(r"Stage '([^']+)' didn't change, skipping")
# what a project copy needs to run the pipelines through Kedro and DVC (data, reports, mlruns are outputs)
COPY = ["pyproject.toml", "src", "conf", "pipelines", "params.yaml", "dvc.yaml", ".dvc/config", ".dvcignore",
        ".gitignore", ".telemetry"]
CI_GLOBALS = {"profile": "ci", "data_root": "data/ci", "reports_root": "reports/ci"}


def _clock(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    return f"{m // 60:d}:{m % 60:02d}:{s:02d}" if m >= 60 else f"{m:02d}:{s:02d}"


class Progress:
    """Turns DVC's `Running stage '<file>:<stage>'` lines into `paper k/n, stage j/m, elapsed` lines."""

    def __init__(self, project: Path, out=None, start: float | None = None):
        self.out = out or sys.stdout
        self.start = time.monotonic() if start is None else start
        self.papers = sorted(p.parent.name for p in project.glob("pipelines/*/dvc.yaml"))
        self.stages: dict[str, list[str]] = {}
        for slug in self.papers:
            doc = yaml.safe_load((project / "pipelines" / slug / "dvc.yaml").read_text()) or {}
            self.stages[slug] = list(doc.get("stages", {}))
        self.ran: list[str] = []
        self.skipped: list[str] = []
        self.started_papers: list[str] = []

    def line(self, text: str) -> str | None:
        m = RUNNING.search(text)
        if m is None:
            if (s := SKIPPED.search(text)) is not None:
                self.skipped.append(s.group(1))
            return None
        name = m.group(1)
        self.ran.append(name)
        elapsed = _clock(time.monotonic() - self.start)
        pm = re.fullmatch(r"pipelines/([^/]+)/dvc\.yaml:(.+)", name)
        if pm is None:  # a root stage (the index)
            return f"==> [{elapsed}] stage {name} (after the papers)"
        slug, stage = pm.groups()
        if slug not in self.started_papers:
            self.started_papers.append(slug)
        k = self.started_papers.index(slug) + 1  # in the order DVC runs them
        stages = self.stages.get(slug, [])
        j = f" ({stages.index(stage) + 1}/{len(stages)})" if stage in stages else ""
        return f"==> [{elapsed}] paper {k}/{len(self.papers)} {slug}: stage {stage}{j}"

    def summary(self, rc: int) -> str:
        took = _clock(time.monotonic() - self.start)
        state = "finished" if rc == 0 else f"FAILED (exit {rc})"
        return (f"==> dvc repro {state} after {took}: {len(self.ran)} stage(s) ran, "
                f"{len(self.skipped)} up to date")


def _env() -> dict[str, str]:
    bindir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}",
            "KEDRO_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1", "MPLBACKEND": "Agg",
            "GX_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"}


def repro(args: list[str], cwd: Path = ROOT, out=None) -> int:
    """`dvc repro <args>` in `cwd`, its output passed through, with a progress line before each stage."""
    out = out or sys.stdout
    progress = Progress(cwd, out)
    dvc = shutil.which("dvc", path=str(Path(sys.executable).parent)) or "dvc"
    proc = subprocess.Popen([dvc, "repro", *args], cwd=cwd, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    pending = b""
    while chunk := os.read(proc.stdout.fileno(), 65536):
        out.buffer.write(chunk) if hasattr(out, "buffer") else out.write(chunk.decode(errors="replace"))
        out.flush()
        pending += chunk
        *lines, pending = re.split(rb"[\r\n]", pending)
        for raw in lines:
            note = progress.line(raw.decode(errors="replace"))
            if note:
                print(note, file=out, flush=True)
    rc = proc.wait()
    print(progress.summary(rc), file=out, flush=True)
    return rc


def copy_code(dest: Path, keep_locks: bool = False) -> Path:
    """The project's code, configuration and DVC files (`COPY`) copied into `dest`; the repository's own
    dvc.lock files are never copied (a copy keeps its own record of what ran there when `keep_locks`)."""
    dest.mkdir(parents=True, exist_ok=True)
    for item in COPY:
        src, dst = ROOT / item, dest / item
        if src.is_dir():
            locks = ({p.relative_to(dst): p.read_bytes() for p in dst.rglob("dvc.lock")}
                     if keep_locks and dst.exists() else {})
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("local", "__pycache__", "*.egg-info",
                                                                    "dvc.lock"))
            for rel, data in locks.items():
                (dst / rel).write_bytes(data)
        elif src.exists():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    (dest / "conf" / "local").mkdir(exist_ok=True)
    return dest


def copy_project(dest: Path, fresh: bool = False, threads: int | None = None) -> Path:
    """The project's code and configuration copied to `dest` (outputs, DVC cache and git history of an
    earlier copy kept unless `fresh`), on the ci profile (with `threads` torch threads per stage when
    given), as a git repository of its own."""
    if fresh and dest.exists():
        shutil.rmtree(dest)
    copy_code(dest, keep_locks=True)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    params.update(CI_GLOBALS)
    if threads:
        params["threads"] = int(threads)
    (dest / "params.yaml").write_text(
        "# the tour's copy of params.yaml: the ci profile (written by python -m cvpr24.core.repro --tour)\n"
        + yaml.safe_dump(params, sort_keys=False))
    if not (dest / ".git").exists():
        for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "tour@cvpr24.invalid"],
                    ["git", "config", "user.name", "cvpr24 tour"], ["git", "config", "commit.gpgsign", "false"]):
            subprocess.run(cmd, cwd=dest, check=True)
    return dest


def _commit(dest: Path, message: str) -> None:
    subprocess.run(["git", "add", "-A"], cwd=dest, check=True)
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", message], cwd=dest, check=True,
                   stdout=subprocess.DEVNULL)


def tour(dest: Path, fresh: bool = False, threads: int | None = 1, out=None) -> int:
    out = out or sys.stdout
    start = time.monotonic()
    dest = copy_project(dest, fresh=fresh, threads=threads)
    print(f"==> the tour: every implemented paper's ci profile through DVC in {dest}", file=out, flush=True)
    rc = repro([], cwd=dest, out=out)
    if rc != 0:
        return rc
    _commit(dest, "tour: ci profile reproduced")
    rel = os.path.relpath(dest, Path.cwd())
    papers = sorted(p.parent.name for p in dest.glob("pipelines/*/dvc.yaml"))
    print(f"""
==> tour done in {_clock(time.monotonic() - start)} ({len(papers)} papers: {', '.join(papers)})
    index of the regenerated tables  {rel}/reports/ci/README.md
    one paper's tables and claims    {rel}/reports/ci/<slug>/README.md, claims.md, figures/*.png
    MLflow (a run per table row)     cd {rel} && ../.venv/bin/kedro mlflow ui --env ci
    DVC                              cd {rel} && dvc status; dvc metrics show; dvc exp show
    an experiment (seconds here)     cd {rel} && dvc exp run -S 'conf/base/parameters/mash.yml:mash.report.figure_dpi=100'
    the full tables (~25 min)        make repro""", file=out, flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--tour"]:
        parser = argparse.ArgumentParser(prog="python -m cvpr24.core.repro --tour")
        parser.add_argument("--tour", action="store_true")
        parser.add_argument("--dest", default=str(ROOT / ".tour"))
        parser.add_argument("--fresh", action="store_true", help="start from an empty copy")
        parser.add_argument("--threads", type=int, default=1,
                            help="torch threads per stage (default 1: the ci profile's tiny networks train "
                                 "faster on one thread; 2 runs them exactly as make ci-check does)")
        args = parser.parse_args(argv)
        return tour(Path(args.dest), fresh=args.fresh, threads=args.threads)
    return repro(argv)


if __name__ == "__main__":
    raise SystemExit(main())
