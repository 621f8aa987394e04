"""Fixtures for the operations tests: servers started on loopback (an S3-compatible store, an MLflow
tracking server, kedro-viz), a headless system Chromium, and one project copy in which MASH's ci profile
is reproduced through DVC while tracked on the MLflow server (shared by the DVC, MLflow and UI tests so the
pipeline runs once)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO, make_project

BIN = Path(sys.executable).parent
CHROMIUM = os.environ.get("CVPR24_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"]
# a dead proxy on loopback: a tool that tries to reach the internet (kedro-viz's version check) fails at
# once instead of downloading anything; loopback itself is reached directly
OFFLINE = {"HTTP_PROXY": "http://127.0.0.1:9", "HTTPS_PROXY": "http://127.0.0.1:9",
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "KEDRO_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "1", "MPLBACKEND": "Agg", "GX_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1",
            "DVC_NO_ANALYTICS": "1", **extra}


def free_port() -> int:
    """A free port on 127.0.0.1 below 49152 (kedro-viz refuses ports in the dynamic range)."""
    import random

    for _ in range(200):
        port = random.randint(20000, 49000)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
                return port
            except OSError:
                continue
    raise RuntimeError("no free port on 127.0.0.1")


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server for {url} exited with {proc.returncode}:\n{_log(proc)}")
        try:
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=5):
                return
        except urllib.error.HTTPError as exc:
            if exc.code >= 500:
                raise AssertionError(f"{url} answered {exc.code}:\n{_log(proc)}") from exc
            time.sleep(0.5)
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"{url} did not answer within {timeout:.0f} s:\n{_log(proc)}")


def _log(proc: subprocess.Popen) -> str:
    path = getattr(proc, "log_path", None)
    return Path(path).read_text()[-4000:] if path and Path(path).exists() else ""


def start(cmd: list[str], log_path: Path, cwd: Path | None = None, **extra: str) -> subprocess.Popen:
    fh = open(log_path, "w")  # noqa: SIM115 - closed when the process is stopped
    proc = subprocess.Popen(cmd, cwd=cwd, env=env(**extra), stdout=fh, stderr=subprocess.STDOUT,
                            start_new_session=True)
    proc.log_path = str(log_path)
    proc.log_fh = fh
    return proc


def stop(proc: subprocess.Popen) -> None:
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    proc.log_fh.close()


def run(cmd: list[str], cwd: Path, timeout: int = 600, check: bool = True, **extra: str):
    proc = subprocess.run(cmd, cwd=cwd, env=env(**extra), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-5000:]}")
    return proc


def require_chromium() -> str:
    """The system Chromium (Debian's `chromium`, installed by `make browser` / .ci/run). Missing: a skip
    locally, a failure in CI (CI=true), so the browser tests can never silently not run there."""
    if Path(CHROMIUM).exists():
        return CHROMIUM
    msg = f"{CHROMIUM} not found: run `make browser` (apt-get install chromium)"
    if os.environ.get("CI"):
        pytest.fail(msg)
    pytest.skip(msg)


@pytest.fixture(scope="session")
def browser():
    exe = require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=CHROMIUM_FLAGS, headless=True)
        yield b
        b.close()


def offline_page(browser, width: int = 1600, height: int = 1000):
    """A page that may load only from loopback (fonts or analytics from elsewhere are refused)."""
    page = browser.new_page(viewport={"width": width, "height": height})

    def guard(route):
        url = route.request.url
        if url.startswith(("http://127.0.0.1", "http://localhost", "data:", "blob:", "about:")):
            return route.continue_()
        return route.abort()

    page.route("**/*", guard)
    return page


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1: SQLite backend, artifacts stored and served by the server."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = free_port()
    proc = start([str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
                  "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                  "--artifacts-destination", str(root / "artifacts"), "--serve-artifacts",
                  "--workers", "1"], root / "server.log", cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", proc, timeout=180)
        yield url
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def ops_project(tmp_path_factory, mlflow_server):
    """A project copy (git repo, DVC, params.yaml on the ci profile) whose conf/ci/mlflow.yml is the
    `team` environment's, pointed at the test's MLflow server; MASH reproduced once through `dvc repro`,
    with a second `dvc repro` started while the first holds DVC's lock (its result is recorded)."""
    if shutil.which("git") is None:
        pytest.fail("git is required for the DVC tests")
    project = make_project(tmp_path_factory.mktemp("ops"))
    params = yaml.safe_load((project / "params.yaml").read_text())
    params.update(profile="ci", data_root="data/ci", reports_root="reports/ci")
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    team = yaml.safe_load((REPO / "conf" / "team" / "mlflow.yml").read_text())
    team["server"]["mlflow_tracking_uri"] = mlflow_server
    (project / "conf" / "ci" / "mlflow.yml").write_text(yaml.safe_dump(team))
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "ci@example.invalid"],
                ["git", "config", "user.name", "ci"]):
        subprocess.run(cmd, cwd=project, check=True)

    stage = "pipelines/mash/dvc.yaml"
    start_t = time.perf_counter()
    first = start([str(BIN / "dvc"), "repro", stage], project / "repro_first.log", cwd=project)
    # the second repro starts once the first is running a stage (it holds the repo lock then)
    deadline = time.time() + 120
    while time.time() < deadline and not list((project / "data" / "ci" / "mash").glob("01_raw/*")):
        if first.poll() is not None:
            break
        time.sleep(0.2)
    second_t = time.perf_counter()
    second = run([str(BIN / "dvc"), "repro", stage], project, timeout=120, check=False)
    second_s = time.perf_counter() - second_t
    first_running_after = first.poll() is None
    first.wait(timeout=900)
    repro_s = time.perf_counter() - start_t
    first.log_fh.close()
    project_info = {
        "first_rc": first.returncode,
        "first_log": Path(first.log_path).read_text(),
        "second": second,
        "second_s": second_s,
        "first_running_after_second": first_running_after,
        "repro_s": repro_s,
    }
    if first.returncode != 0:
        raise AssertionError(f"dvc repro failed:\n{project_info['first_log'][-5000:]}")
    return project, project_info
