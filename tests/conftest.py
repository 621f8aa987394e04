"""Shared fixtures, helpers and the test tiers.

Tiers (pytest markers, given by the folder unless a test carries its own tier marker):

- `unit`: tests/unit, plus the node-level bad-input tests of tests/integration (functions on tiny inputs,
  no pipeline run). `make test-fast` runs this tier.
- `pipeline`: tests/integration: each paper's ci pipeline end to end (Kedro, DVC, MLflow, resume).
- `ops`: tests/ops: servers on loopback (MLflow, S3, kedro-viz) and a headless system Chromium.

Session fixtures (each pipeline runs once per test session; every test that needs its outputs reads them):

- `ci_run(slug) -> CiRun`: a throw-away copy of the project after one real
  `kedro run --pipeline=<slug> --env=ci --params=runtime.threads=<TEST_THREADS>` (subprocess; the ci
  profile as `make ci-check` runs it, on the tests' thread count), with its wall time and log. `CiRun.reports` is `reports/ci/<slug>`, `CiRun.data` is `data/ci/<slug>`,
  `CiRun.catalog_path(name)` a catalog entry's file. `mash_ci_project` is `ci_run("mash").project`.
- `mlflow_server`: `mlflow server` on 127.0.0.1 (SQLite backend, artifacts served), its URL.
- `mash_dvc -> DvcRun`: a project copy (git repository, params.yaml on the ci profile, conf/ci/mlflow.yml
  pointed at `mlflow_server`) in which `dvc repro pipelines/mash/dvc.yaml` ran once, with a second
  `dvc repro` started while the first held DVC's lock (its result recorded). Shared by the DVC, lock,
  S3-remote and MLflow-server tests. A test that changes a project works on `clone_project(src, dest)`.

Helpers: `make_project(dest)` (a fresh copy: code, conf, DVC files), `kedro(project, *args)` (the CLI in a
subprocess), `kedro_session_run(project, pipeline, ...)` (the same run in this process through
KedroSession: no interpreter start-up, for phase re-runs and bad-input runs), `dvc(project, *args)`.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

# first of the project: importing cvpr24 pins the machine-independent CPU kernels before any test runs torch
from cvpr24.core.repro import CI_GLOBALS, copy_code

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# torch threads of the pipelines the tests run (`runtime.threads`). The tests check behaviour and wiring,
# not the committed ci numbers (`make ci-check` does, with the profile's own 2 threads): the ci profile's
# tiny networks train faster on one thread, and several times faster when other jobs share the 2 cores
# (two-thread kernels wait for a descheduled thread). CVPR24_TEST_THREADS=2 runs them as ci-check does.
TEST_THREADS = int(os.environ.get("CVPR24_TEST_THREADS", "1"))
TIERS = ("unit", "pipeline", "ops")
FOLDER_TIER = {"unit": "unit", "integration": "pipeline", "ops": "ops"}


# ------------------------------------------------------------------------------------------- tiers
# Each paper's pipeline tests (its ci run and the tests that read it, `test_<slug>_*.py`) get this much
# test time (a budget per paper, not a growing sum): printed after every run with `--time-budget`.
PAPER_BUDGET_S = 150


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Torch on one thread for the test: small kernels gain nothing from a second thread on the shared 2-core
    machine (only contention), and training tests stay bit-exact. Use by name or with
    `pytestmark = pytest.mark.usefixtures("one_thread")`."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def pytest_addoption(parser):
    parser.addoption("--time-budget", type=float, default=None, metavar="SECONDS",
                     help="print the suite's wall time against this budget and each paper's test time "
                          f"against {PAPER_BUDGET_S} s; past the suite's, fail under CI (CI set), warn otherwise")


def pytest_runtest_logreport(report):
    group = xdist_group_of(report.nodeid)
    if group.startswith("ci_"):
        _PAPER_SECONDS[group[3:]] = _PAPER_SECONDS.get(group[3:], 0.0) + report.duration


_PAPER_SECONDS: dict[str, float] = {}


# Under `pytest -n 2 --dist loadgroup` (make test), the tests that share a session fixture run on one
# worker, so the fixture is built once: a paper's ci-run tests (test_<slug>_*.py share `ci_run(slug)`) and
# every test of the shared MASH DVC project and its MLflow server (the files below). The scheduler sees
# node ids only, so the groups are by file; collection checks that each test using those fixtures is in
# its group's file. (xdist's own `xdist_group` marker does not reach the scheduler under pytest 9.2.)
SHARED_GROUPS = {
    "tests/integration/test_dvc.py": "mash_dvc",
    "tests/ops/test_ops_dvc.py": "mash_dvc",
    "tests/ops/test_ops_mlflow.py": "mash_dvc",
}


def xdist_group_of(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    if path in SHARED_GROUPS:
        return SHARED_GROUPS[path]
    m = re.fullmatch(r"tests/integration/test_([a-z0-9]+)_[a-z0-9_]+\.py", path)
    return f"ci_{m.group(1)}" if m else path


def _check_group(item) -> None:
    names = set(getattr(item, "fixturenames", ()))
    group = xdist_group_of(item.nodeid)
    if names & {"mash_dvc", "mlflow_server"} and group != "mash_dvc":
        raise pytest.UsageError(f"{item.nodeid} uses the shared MASH DVC project: add its file to "
                                "SHARED_GROUPS in tests/conftest.py")
    if "ci_run" in names and not group.startswith("ci_"):
        raise pytest.UsageError(f"{item.nodeid} uses ci_run: name its file tests/integration/test_<slug>_*.py "
                                "so it runs on the worker that holds that paper's run")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SharedFixtureScheduling(LoadScopeScheduling):
        """xdist's scope scheduling with the groups above as scopes (each unit-test file its own)."""

        def _split_scope(self, nodeid: str) -> str:
            return xdist_group_of(nodeid)

    return SharedFixtureScheduling(config, log)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    for item in items:
        _check_group(item)
        if any(item.get_closest_marker(t) for t in TIERS):
            continue
        parts = Path(str(item.fspath)).relative_to(REPO / "tests").parts
        tier = FOLDER_TIER.get(parts[0]) if len(parts) > 1 else "unit"
        item.add_marker(getattr(pytest.mark, tier or "unit"))


def pytest_sessionstart(session):
    session.config._cvpr24_start = time.monotonic()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # two workers on two cores: one torch thread each (two-thread kernels in two processes would
        # oversubscribe the cores and wait for each other's descheduled threads)
        import torch

        torch.set_num_threads(TEST_THREADS)


@pytest.hookimpl(trylast=True)  # after the slowest-tests list
def pytest_terminal_summary(terminalreporter, exitstatus, config):
    start = getattr(config, "_cvpr24_start", None)
    budget = config.getoption("--time-budget")
    if start is None or budget is None:
        return
    took = time.monotonic() - start
    try:
        load = " (load average {:.2f} {:.2f} {:.2f})".format(*os.getloadavg())
    except OSError:
        load = ""
    papers = sorted(s for s in _PAPER_SECONDS if (REPO / "pipelines" / s / "dvc.yaml").is_file())
    if papers:
        over = [s for s in papers if _PAPER_SECONDS[s] > PAPER_BUDGET_S]
        terminalreporter.write_line(
            f"pipeline test time per paper (budget {PAPER_BUDGET_S} s each): "
            + ", ".join(f"{s} {_PAPER_SECONDS[s]:.0f} s" for s in papers)
            + (f"; OVER: {', '.join(over)}" if over else ""), yellow=bool(over))
    line = f"test suite wall time {took:.0f} s of its {budget:.0f} s budget{load}"
    if took <= budget:
        terminalreporter.write_line(line, green=True)
        return
    verdict = "fails the run (CI)" if os.environ.get("CI") else "a warning here; CI fails"
    terminalreporter.write_line(f"{line}: OVER BUDGET ({verdict})", red=True, bold=True)


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session, exitstatus):
    # under CI a suite past its budget fails (the next paper cannot silently push it over)
    config = session.config
    budget = config.getoption("--time-budget")
    start = getattr(config, "_cvpr24_start", None)
    if budget is not None and start is not None and os.environ.get("CI"):
        if time.monotonic() - start > budget and session.exitstatus == 0:
            session.exitstatus = 1


# ------------------------------------------------------------------------------------------- helpers
def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "KEDRO_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "1", "MPLBACKEND": "Agg", "GX_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1",
            "DVC_NO_ANALYTICS": "1", **extra}


def make_project(dest: Path) -> Path:
    """A throw-away copy of the project's code, configuration and DVC files (no data, reports or runs)."""
    return copy_code(dest)


def use_ci_profile(project: Path, **extra: Any) -> None:
    """params.yaml of a project copy on the ci profile (DVC's stages then run `--env=ci` on data/ci) with
    the tests' torch threads."""
    params = yaml.safe_load((project / "params.yaml").read_text())
    params.update(CI_GLOBALS, threads=TEST_THREADS, **extra)
    (project / "params.yaml").write_text(yaml.safe_dump(params))


def git_init(project: Path) -> None:
    if shutil.which("git") is None:
        pytest.fail("git is required for the DVC tests")
    for cmd in (["git", "init", "-q"], ["git", "config", "user.email", "ci@example.invalid"],
                ["git", "config", "user.name", "ci"], ["git", "config", "commit.gpgsign", "false"]):
        subprocess.run(cmd, cwd=project, check=True)


def git_commit(project: Path, message: str) -> None:
    subprocess.run(["git", "add", "-A"], cwd=project, check=True)
    subprocess.run(["git", "commit", "-q", "--allow-empty", "-m", message], cwd=project, check=True)


def clone_project(src: Path, dest: Path) -> Path:
    """A copy of a project that already ran (git history, DVC cache, outputs) for a test that changes it;
    its MLflow tracking goes back to the local store, so the original's server stays untouched."""
    shutil.copytree(src, dest, symlinks=True, ignore=shutil.ignore_patterns("*.log", "mlruns"))
    shutil.copy2(REPO / "conf" / "ci" / "mlflow.yml", dest / "conf" / "ci" / "mlflow.yml")
    return dest


def kedro(project: Path, *args: str, timeout: int = 600, check: bool = True) -> subprocess.CompletedProcess:
    """`python -m kedro <args>` in `project` (a real CLI run in a fresh interpreter)."""
    proc = subprocess.run([sys.executable, "-m", "kedro", *args], cwd=project, env=env(), capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"kedro {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}")
    return proc


def dvc(project: Path, *args: str, timeout: int = 900, check: bool = True, **extra: str) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(BIN / "dvc"), *args], cwd=project, env=env(**extra), capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"dvc {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-5000:]}")
    return proc


def run(cmd: list[str], cwd: Path, timeout: int = 600, check: bool = True, **extra: str):
    proc = subprocess.run(cmd, cwd=cwd, env=env(**extra), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-5000:]}")
    return proc


def _torch_state():
    import random

    import numpy as np
    import torch

    return {"threads": torch.get_num_threads(),
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "warn_only": torch.is_deterministic_algorithms_warn_only_enabled(),
            "random": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _restore_torch_state(state) -> None:
    import random

    import numpy as np
    import torch

    torch.set_num_threads(state["threads"])
    torch.use_deterministic_algorithms(state["deterministic"], warn_only=state["warn_only"])
    random.setstate(state["random"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


_KEDRO_CONFIGURED = False


def configure_kedro() -> None:
    """Kedro's project settings, pipelines and logging for in-process runs, once per test process (each
    `configure_project` re-applies Kedro's logging config, which would drop pytest's log capture handlers
    in the middle of a test)."""
    global _KEDRO_CONFIGURED
    if not _KEDRO_CONFIGURED:
        from kedro.framework.project import configure_project

        configure_project("cvpr24")
        _KEDRO_CONFIGURED = True


def kedro_session_run(project: Path, pipeline: str, *, env: str = "ci", tags: list[str] | None = None,
                      params: dict[str, Any] | None = None) -> dict[str, Any]:
    """`kedro run --pipeline=<pipeline> --env=<env> [--tags] [--params]` in this process (KedroSession),
    from `project` as working directory. The process-wide state a run sets (environment, torch threads and
    determinism, random generators, MLflow's tracking URI, active experiment and run) is put back afterwards, so later
    tests see none of it. A failing node's exception propagates, as the CLI's would."""
    import mlflow
    from kedro.framework.session import KedroSession

    configure_kedro()
    params = {**(params or {})}
    params["runtime"] = {"threads": TEST_THREADS, **params.get("runtime", {})}
    saved_env, saved_cwd, saved_path = dict(os.environ), os.getcwd(), list(sys.path)
    saved_torch = _torch_state()
    saved_uri = os.environ.get("MLFLOW_TRACKING_URI")
    from mlflow.tracking import fluent as _fluent

    saved_experiment = getattr(_fluent, "_active_experiment_id", None)
    os.environ.update(KEDRO_DISABLE_TELEMETRY="true", MPLBACKEND="Agg", GX_ANALYTICS_ENABLED="False")
    os.chdir(project)
    try:
        with KedroSession.create(project_path=project, env=env, runtime_params=params) as session:
            return session.run(pipeline_name=pipeline, tags=tags)
    finally:
        while mlflow.active_run() is not None:
            mlflow.end_run("FAILED")
        _fluent._active_experiment_id = saved_experiment  # kedro-mlflow set its session experiment
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        sys.path[:] = saved_path
        _restore_torch_state(saved_torch)
        mlflow.set_tracking_uri(saved_uri or "")
        try:  # back to "no URI set" (mlflow's own default) rather than the run's sqlite store
            from mlflow.tracking._tracking_service import utils as _tsu

            _tsu._tracking_uri = saved_uri
        except (ImportError, AttributeError):  # pragma: no cover - mlflow internals moved
            pass


# ------------------------------------------------------------------------------------------- servers
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


def _log(proc: subprocess.Popen) -> str:
    path = getattr(proc, "log_path", None)
    return Path(path).read_text()[-4000:] if path and Path(path).exists() else ""


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


def start(cmd: list[str], log_path: Path, cwd: Path | None = None, **extra: str) -> subprocess.Popen:
    fh = open(log_path, "w")  # noqa: SIM115 - closed when the process is stopped
    proc = subprocess.Popen(cmd, cwd=cwd, env=env(**extra), stdout=fh, stderr=subprocess.STDOUT,
                            start_new_session=True)
    proc.log_path = str(log_path)
    proc.log_fh = fh
    return proc


@contextlib.contextmanager
def serve(argv: Callable[[int], list[str]], health: str, log_path: Path, cwd: Path | None = None,
          timeout: float = 120, **extra: str) -> Iterator[str]:
    """A server on a free loopback port for the duration of a `with` block: `argv(port)` is its command,
    `health` the path that answers once it is up; yields its base URL and stops it afterwards."""
    port = free_port()
    proc = start(argv(port), log_path, cwd=cwd, **extra)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}{health}", proc, timeout=timeout)
        yield url
    finally:
        stop(proc)


def stop(proc: subprocess.Popen) -> None:
    import signal

    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if not proc.log_fh.closed:
        proc.log_fh.close()


# ------------------------------------------------------------------------------------------- ci runs
@dataclass
class CiRun:
    """One paper's ci pipeline, run once per session in its own project copy."""

    slug: str
    project: Path
    seconds: float
    log: str

    @property
    def reports(self) -> Path:
        return self.project / "reports" / "ci" / self.slug

    @property
    def data(self) -> Path:
        return self.project / "data" / "ci" / self.slug

    @property
    def mlflow_uri(self) -> str:
        return f"sqlite:///{self.project / 'mlruns' / 'mlflow.db'}"

    def catalog_path(self, dataset: str) -> Path:
        """The file (or folder) of a catalog entry in the ci environment, dataset factories resolved
        (so a test can read an output by its dataset name however the catalog declares it)."""
        from kedro.config import OmegaConfigLoader
        from kedro.io import DataCatalog

        from cvpr24.settings import CONFIG_LOADER_ARGS

        conf = OmegaConfigLoader(str(self.project / "conf"), **{**CONFIG_LOADER_ARGS, "default_run_env": "ci"},
                                 env="ci")
        found = DataCatalog.from_config(conf["catalog"]).get(dataset)
        if found is None:
            raise KeyError(f"{dataset} is not in the ci catalog")
        desc = found._describe()
        path = desc.get("filepath") or desc.get("path")
        if path is None:
            raise KeyError(f"{dataset} ({type(found).__name__}) has no file")
        return self.project / str(path)


@pytest.fixture(scope="session")
def ci_run(tmp_path_factory):
    """`ci_run(slug)`: the paper's ci pipeline run once per session (see the module docstring)."""
    done: dict[str, CiRun | BaseException] = {}
    configure_kedro()  # here, in a fixture's setup, rather than in a test's call phase (see configure_kedro)

    def get(slug: str) -> CiRun:
        if slug not in done:
            project = make_project(tmp_path_factory.mktemp(f"ci_{slug}"))
            t0 = time.perf_counter()
            try:
                proc = kedro(project, "run", f"--pipeline={slug}", "--env=ci",
                             f"--params=runtime.threads={TEST_THREADS}")
            except BaseException as exc:  # noqa: BLE001 - every later test of this paper fails at once
                done[slug] = exc
                raise
            seconds = time.perf_counter() - t0
            (project / "ci_run.log").write_text(proc.stdout + proc.stderr)
            done[slug] = CiRun(slug, project, seconds, proc.stdout + proc.stderr)
        result = done[slug]
        if isinstance(result, BaseException):
            pytest.fail(f"the {slug} ci run failed earlier in this session: {str(result)[:3000]}")
        return result

    return get


@pytest.fixture(scope="session")
def mash_ci_project(ci_run) -> Path:
    """The project copy after one `kedro run --pipeline=mash --env=ci` (see `ci_run`)."""
    return ci_run("mash").project


# ------------------------------------------------------------------------------------------- MLflow, DVC
@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """`mlflow server` on 127.0.0.1: SQLite backend, artifacts stored and served by the server."""
    root = tmp_path_factory.mktemp("mlflow_server")
    with serve(lambda port: [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
                             "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
                             "--artifacts-destination", str(root / "artifacts"), "--serve-artifacts",
                             "--workers", "1"], "/health", root / "server.log", cwd=root, timeout=180) as url:
        yield url


MASH_STAGES = "pipelines/mash/dvc.yaml"


@dataclass
class DvcRun:
    project: Path
    first_rc: int
    first_log: str
    second: subprocess.CompletedProcess
    second_s: float
    first_running_after_second: bool
    repro_s: float
    info: dict[str, Any] = field(default_factory=dict)


@pytest.fixture(scope="session")
def mash_dvc(tmp_path_factory, mlflow_server) -> DvcRun:
    """MASH's ci profile reproduced once through `dvc repro` (see the module docstring). These tests check
    the wiring (stages, locks, remotes, tracking), not the committed ci numbers: the stages run on the
    tests' torch threads (`threads` in params.yaml, templated into each stage's command; TEST_THREADS)."""
    project = make_project(tmp_path_factory.mktemp("mash_dvc"))
    use_ci_profile(project)
    team = yaml.safe_load((REPO / "conf" / "team" / "mlflow.yml").read_text())
    team["server"]["mlflow_tracking_uri"] = mlflow_server
    (project / "conf" / "ci" / "mlflow.yml").write_text(yaml.safe_dump(team))
    git_init(project)

    start_t = time.perf_counter()
    first = start([str(BIN / "dvc"), "repro", MASH_STAGES], project / "repro_first.log", cwd=project)
    # the second repro starts once the first is running a stage (it holds the repo lock then)
    deadline = time.time() + 120
    while time.time() < deadline and not list((project / "data" / "ci" / "mash").glob("01_raw/*")):
        if first.poll() is not None:
            break
        time.sleep(0.2)
    second_t = time.perf_counter()
    second = dvc(project, "repro", MASH_STAGES, timeout=120, check=False)
    second_s = time.perf_counter() - second_t
    first_running_after = first.poll() is None
    first.wait(timeout=900)
    repro_s = time.perf_counter() - start_t
    first.log_fh.close()
    result = DvcRun(project, first.returncode, Path(first.log_path).read_text(), second, second_s,
                    first_running_after, repro_s)
    if first.returncode != 0:
        raise AssertionError(f"dvc repro failed:\n{result.first_log[-5000:]}")
    return result


def failure_text(exc: BaseException) -> str:
    """An exception's message with its causes and notes (what the CLI prints of a failed run)."""
    parts, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        parts.append(f"{type(exc).__name__}: {exc}")
        parts += list(getattr(exc, "__notes__", []) or [])
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def kedro_session_fails(project: Path, pipeline: str, params: dict[str, Any], env: str = "ci") -> str:
    """Run in-process a pipeline that must fail; the failure's text."""
    with pytest.raises(Exception) as err:  # noqa: PT011 - any error, the message is what is checked
        kedro_session_run(project, pipeline, env=env, params=params)
    return failure_text(err.value)
