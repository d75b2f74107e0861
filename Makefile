# ecr-pullthrough: `make` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
IMAGE ?= ecr-pullthrough:dev

.PHONY: help venv lint controlplane node-bed test test-unit test-e2e test-node demo demo-cluster bench lock image chart-docs clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  make %-13s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed ## Create the virtualenv with the package and its dev tools

lint: venv ## ruff, mypy (strict), the import-layer contract, hadolint, shellcheck
	$(BIN)/ruff check webhook tests
	$(BIN)/ruff format --check webhook tests
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile
	$(BIN)/shellcheck -s sh docker/install.sh
	$(BIN)/shellcheck .ci/run

controlplane: ## Build (or reuse from ~/.cache) etcd, kube-apiserver, helm and the reference oracle; ~11 min cold on 2 cores
	$(PYTHON) tests/controlplane/build.py etcd kube-apiserver helm reference-oracle

node-bed: ## Install containerd, runc, docker-registry when missing (as root) and build the kubelet and crane; ~7 min cold
	$(PYTHON) tests/node/install.py
	$(PYTHON) tests/controlplane/build.py kubelet crane

test: lint controlplane node-bed ## Run every test: lint, unit, property, end-to-end and node (what CI runs)
	$(BIN)/pytest -p no:cacheprovider
	$(MAKE) --no-print-directory test-node

test-unit: venv ## Unit and property tests only (no control plane)
	$(BIN)/pytest -p no:cacheprovider -m 'not e2e'

test-e2e: venv controlplane ## End-to-end tests against a local kube-apiserver only
	$(BIN)/pytest -p no:cacheprovider -m e2e

test-node: venv controlplane node-bed ## Pods pulled through an ECR stand-in by a real kubelet, in a private namespace (root); then demo-cluster --once
	$(BIN)/python -m tests.node.enter $(BIN)/pytest -p no:cacheprovider -m node tests/node --deselect tests/node/test_demo_cluster.py
	$(BIN)/python -m tests.node.enter $(BIN)/pytest -p no:cacheprovider -m node tests/node/test_demo_cluster.py

demo: venv ## Run the webhook locally on a throwaway certificate and show a sample pod rewritten
	$(BIN)/ecr-pullthrough demo

demo-cluster: venv controlplane node-bed ## The whole product on one machine (root, Linux): pods really pulled through the cache; DEMO_ARGS=--once exits after printing
	$(BIN)/python -m tests.node.enter $(BIN)/python -m tests.node.demo $(DEMO_ARGS)

bench: venv ## Measure decisions, webhook throughput and latency, controller sync times; writes bench-results.json
	$(BIN)/python -m tests.bench --output bench-results.json

chart-docs: venv ## Regenerate the values table of chart/README.md from values.yaml comments
	$(BIN)/python -m tests.chart_docs

# pip-compile lives in its own throwaway venv (under build/, removed by `make clean`), never in .venv.
# It runs on Python 3.11, the image's Python, so that version markers resolve as they will in the image.
LOCK_PYTHON ?= python3.11
LOCK_TOOL := build/locktool

$(LOCK_TOOL)/bin/pip-compile:
	$(LOCK_PYTHON) -m venv $(LOCK_TOOL)
	$(LOCK_TOOL)/bin/pip install --quiet --upgrade pip 'pip-tools==7.6.2'

lock: $(LOCK_TOOL)/bin/pip-compile ## Re-pin requirements.lock (runtime deps with hashes); LOCK_FLAGS=--upgrade for newest
	CUSTOM_COMPILE_COMMAND='make lock' $(LOCK_TOOL)/bin/pip-compile --quiet --generate-hashes --strip-extras \
		--allow-unsafe --no-emit-index-url --no-emit-find-links $(LOCK_FLAGS) -o requirements.lock pyproject.toml

image: ## Build the container image (needs Docker)
	docker build -t $(IMAGE) .

clean: ## Remove the virtualenv and build leftovers (not the control-plane cache)
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .hypothesis bench-results.json
