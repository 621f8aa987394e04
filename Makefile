# The commands of the README: `make tour` (ci sizes through DVC, ~5 min), `make repro` (every table on the
# embedded data, ~90 min), `make test` (the whole suite, budget 15 min) and `make test-fast` (unit tier,
# ~1 min). Each creates .venv and installs the pinned environment if needed.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export KEDRO_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export GX_ANALYTICS_ENABLED := False
export MPLBACKEND := Agg

.PHONY: install repro tour test test-fast test-pipeline ci-check ci-baseline lint mlflow-ui mlflow-server viz \
	browser espeak test-ops bench-ddp help

# The whole suite's wall-time budget: `make test` prints the time against it; CI (CI set) fails past it.
# 900 s since 2026-12-02: on an avx2-only 2-core EPYC the suite took 848 s (install 287 s) where the avx512 machine
# of the previous sessions took 512 s (install 176 s); the goal stays 8 minutes (the DVC mash fixture, 278 s there,
# and the per-paper ci runs are the place to cut). With AV2AV the fresh-clone suite took 544-778 s (948-957 tests) on avx2 machines,
# 458 s (962 tests) on an avx512 one (2026-12-03).
TEST_BUDGET_S ?= 900
# The unit tier's (make test-fast), the edit-run loop's
TEST_FAST_BUDGET_S ?= 90
# Two workers, one per core; tests that share a session fixture (a paper's ci run, the MASH DVC project)
# stay on one worker (tests/conftest.py). TEST_WORKERS=0 runs everything in one process.
TEST_WORKERS ?= 2
PYTEST := $(BIN)/python -m pytest -q $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadgroup)

help:
	@echo "make tour      every paper's ci profile through DVC in .tour/ (~5 min): tables, claims, MLflow runs"
	@echo "make repro     regenerate every paper's tables on the embedded data (dvc repro, ~75 min)"
	@echo "make test      run the whole test suite (budget $(TEST_BUDGET_S) s)"
	@echo "make test-fast the unit tier (no multi-process tests; budget $(TEST_FAST_BUDGET_S) s): the edit-run loop"
	@echo "make test-pipeline  the pipeline tier only (each paper's ci pipeline end to end)"
	@echo "make ci-check  regenerate the ci-profile tables and compare them with reports/ci/"
	@echo "make mlflow-ui open the MLflow UI on http://127.0.0.1:5000"
	@echo "make mlflow-server  a tracking server on 127.0.0.1:5000 (SQLite, artifacts served)"
	@echo "make viz       kedro-viz on http://127.0.0.1:4141"
	@echo "make browser   install Debian's chromium (for the browser tests; needs root)"
	@echo "make espeak    install Debian's espeak-ng (AV2AV's embedded speech; needs root)"
	@echo "make test-ops  the operations tests alone (servers on loopback, headless chromium)"

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "needs $(PYTHON) (Python 3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)

# The lock pins the whole environment (transitive dependencies too); pyproject.toml pins the direct ones.
$(VENV)/.installed: $(BIN)/python pyproject.toml requirements.lock
	$(BIN)/python -m pip install -q --upgrade pip==25.3
	$(BIN)/python -m pip install -q -c requirements.lock -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# `dvc repro`, with a line per stage saying where it is (paper k of n, stage, elapsed)
repro: install espeak
	$(BIN)/python -m cvpr24.core.repro

# The newcomer's tour: a scratch copy of the project (.tour/) on the ci profile, every paper's stages and
# the index through `dvc repro`; TOUR_FLAGS=--fresh starts the copy over.
tour: install espeak
	$(BIN)/python -m cvpr24.core.repro --tour $(TOUR_FLAGS)

test: install espeak
	$(PYTEST) --time-budget=$(TEST_BUDGET_S)

# the unit tier without its few multi-process tests (marked slow; `make test` runs them)
test-fast: install
	$(PYTEST) -m "unit and not slow" --time-budget=$(TEST_FAST_BUDGET_S)

test-pipeline: install espeak
	$(PYTEST) -m pipeline

# CI: regenerate the ci-profile tables of every pipeline and fail when a metric moved beyond tolerance
# from the committed reports/ci/ values.
ci-check: install
	$(BIN)/python -m cvpr24.core.cicheck

# Re-bless reports/ci/ after an intended change (commit the result with the change).
ci-baseline: install
	$(BIN)/python -m cvpr24.core.cicheck --update

lint: install
	$(BIN)/ruff check src tests

mlflow-ui: install
	$(BIN)/kedro mlflow ui


# A shared tracking server: SQLite backend, artifacts stored and served by the server. It listens on
# loopback only; reach it from other machines through an SSH tunnel (README, "Operations").
MLFLOW_SERVER_ROOT ?= mlflow-server
mlflow-server: install
	mkdir -p $(MLFLOW_SERVER_ROOT)
	$(BIN)/mlflow server --host 127.0.0.1 --port 5000 \
		--backend-store-uri sqlite:///$(MLFLOW_SERVER_ROOT)/mlflow.db \
		--artifacts-destination $(MLFLOW_SERVER_ROOT)/artifacts --serve-artifacts

viz: install
	$(BIN)/kedro viz run --host 127.0.0.1 --port 4141 --no-browser

# Debian's chromium for the browser tests (no browser download: the system package, driven by
# Playwright's Python package through executable_path).
browser:
	@test -x /usr/bin/chromium || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }
	@/usr/bin/chromium --version

# Debian's espeak-ng (the speech synthesiser of AV2AV's embedded corpus; its library gives phoneme timings)
espeak:
	@test -e /usr/lib/x86_64-linux-gnu/libespeak-ng.so.1 -o -e /usr/lib/aarch64-linux-gnu/libespeak-ng.so.1 || \
		{ apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q espeak-ng; }
	@espeak-ng --version

test-ops: install browser
	$(PYTEST) -m ops

# DDP step time against one process (2 CPU workers, gloo)
bench-ddp: install
	$(BIN)/python benchmarks/ddp_step_time.py
