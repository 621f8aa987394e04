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

.PHONY: install repro test ci-check ci-baseline lint mlflow-ui help

help:
	@echo "make repro     regenerate every paper's tables on the embedded data (dvc repro)"
	@echo "make test      run the test suite"
	@echo "make ci-check  regenerate the ci-profile tables and compare them with reports/ci/"
	@echo "make mlflow-ui open the MLflow UI on http://127.0.0.1:5000"

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

