# The two commands of the README: `make repro` regenerates every table on the embedded data,
# `make test` runs the tests. Each creates .venv and installs the pinned environment if needed.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)
export KEDRO_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export GX_ANALYTICS_ENABLED := False
export MPLBACKEND := Agg

.PHONY: install repro test ci-check ci-baseline lint mlflow-ui mlflow-server viz browser test-ops \
	bench-ddp help

help:
	@echo "make repro     regenerate every paper's tables on the embedded data (dvc repro)"
	@echo "make test      run the test suite"
	@echo "make ci-check  regenerate the ci-profile tables and compare them with reports/ci/"
	@echo "make mlflow-ui open the MLflow UI on http://127.0.0.1:5000"
	@echo "make mlflow-server  a tracking server on 127.0.0.1:5000 (SQLite, artifacts served)"
	@echo "make viz       kedro-viz on http://127.0.0.1:4141"
	@echo "make browser   install Debian's chromium (for the browser tests; needs root)"
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

repro: install
	$(BIN)/dvc repro

test: install
	$(BIN)/python -m pytest -q

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

test-ops: install browser
	$(BIN)/python -m pytest -q -m ops

# DDP step time against one process (2 CPU workers, gloo)
bench-ddp: install
	$(BIN)/python benchmarks/ddp_step_time.py
