# ecr-pullthrough: `make` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
IMAGE ?= ecr-pullthrough:dev
VERSION := $(shell sed -n 's/^version = "\(.*\)"$$/\1/p' pyproject.toml)

.PHONY: help venv lint controlplane node-bed image-bed test test-unit test-e2e test-node test-image demo demo-cluster bench lock image image-local push sbom chart-docs clean

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  make %-13s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/.installed ## Create the virtualenv with the package and its dev tools

lint: venv ## ruff, mypy (strict), the import-layer contract, hadolint, shellcheck, actionlint
	$(BIN)/ruff check webhook tests
	$(BIN)/ruff format --check webhook tests
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/hadolint Dockerfile
	$(BIN)/shellcheck -s sh docker/install.sh
	$(BIN)/shellcheck .ci/run
	$$($(PYTHON) tests/controlplane/build.py actionlint) -shellcheck $(BIN)/shellcheck .github/workflows/*.yml

controlplane: ## Build (or reuse from ~/.cache) etcd, kube-apiserver, helm, the reference oracle and promql-check; ~13 min cold on 2 cores
	$(PYTHON) tests/controlplane/build.py etcd kube-apiserver helm reference-oracle promql-check

image-bed: ## Install buildah and debootstrap when missing (as root), for the image test and `make image`
	$(PYTHON) tests/node/install.py --image

node-bed: ## Install containerd, runc, docker-registry when missing (as root) and build the kubelet and crane; ~7 min cold
	$(PYTHON) tests/node/install.py
	$(PYTHON) tests/controlplane/build.py kubelet crane

test: lint controlplane node-bed image-bed ## Run every test: lint, unit, property, end-to-end, image and node (what CI runs)
	$(BIN)/pytest -p no:cacheprovider
	$(MAKE) --no-print-directory test-node

test-unit: venv ## Unit, property and integration tests only (no control plane, no image build)
	$(BIN)/pytest -p no:cacheprovider -m 'not e2e and not image'

test-e2e: venv controlplane ## End-to-end tests against a local kube-apiserver only
	$(BIN)/pytest -p no:cacheprovider -m e2e

test-node: venv controlplane node-bed ## Pods pulled through an ECR stand-in by a real kubelet, in a private namespace (root); then demo-cluster --once
	$(BIN)/python -m tests.node.enter $(BIN)/pytest -p no:cacheprovider -m node tests/node --deselect tests/node/test_demo_cluster.py
	$(BIN)/python -m tests.node.enter $(BIN)/pytest -p no:cacheprovider -m node tests/node/test_demo_cluster.py

test-image: venv image-bed ## Build the image with buildah on local Debian bases and run it (root; ~1.5 min warm, ~2.5 cold)
	$(BIN)/pytest -p no:cacheprovider -m image tests/image

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
	CUSTOM_COMPILE_COMMAND='make lock' $(LOCK_TOOL)/bin/pip-compile --quiet --generate-hashes --strip-extras \
		--allow-unsafe --no-emit-index-url --no-emit-find-links $(LOCK_FLAGS) \
		--build-deps-for wheel --only-build-deps -o requirements-build.lock pyproject.toml

# The image is built by buildah (no daemon; as root), or by Docker with ENGINE=docker. BUILDER_IMAGE and
# RUNTIME_IMAGE replace the Dockerfile's bases (e.g. pinned by digest, or from your own mirror);
# IMAGE_FLAGS adds build flags (e.g. --platform linux/arm64). README: "The container image".
ENGINE ?= buildah
BUILDAH ?= buildah
BASE_ARGS = $(if $(BUILDER_IMAGE),--build-arg BUILDER_IMAGE=$(BUILDER_IMAGE)) \
	$(if $(RUNTIME_IMAGE),--build-arg RUNTIME_IMAGE=$(RUNTIME_IMAGE)) --build-arg VERSION=$(VERSION)
ifeq ($(ENGINE),docker)
IMAGE_BUILD = docker build
IMAGE_PUSH = docker push $(IMAGE)
else
# chroot isolation: no OCI runtime needed (crun refuses hybrid cgroups); RUN steps use the host's network.
IMAGE_BUILD = $(BUILDAH) build --isolation chroot --network host
IMAGE_PUSH = $(BUILDAH) push $(IMAGE) docker://$(IMAGE)
endif

image: ## Build the container image IMAGE (default ecr-pullthrough:dev) with buildah; ENGINE=docker for Docker
	$(IMAGE_BUILD) $(BASE_ARGS) $(IMAGE_FLAGS) --tag $(IMAGE) .

# The image test's way, and a build that needs no registry at all: Debian 12 bases made locally with
# debootstrap (cached under ~/.cache/ecr-pullthrough/image-base/), this machine's CA bundle given to pip.
HOST_CA ?= /etc/ssl/certs/ca-certificates.crt
image-local: image-bed ## Build IMAGE on local Debian 12 bases (debootstrap; buildah as root), no registry pulled
	@set -e; bases=$$($(PYTHON) tests/image/base.py --import '$(BUILDAH)'); echo "$$bases"; \
	$(MAKE) --no-print-directory image ENGINE=buildah BUILDAH='$(BUILDAH)' IMAGE='$(IMAGE)' \
		BUILDER_IMAGE=$$(echo "$$bases" | sed -n 1p) RUNTIME_IMAGE=$$(echo "$$bases" | sed -n 2p) \
		IMAGE_FLAGS="--layers=false --volume $(HOST_CA):/run/host-ca.crt:ro --build-arg PIP_CERT=/run/host-ca.crt $(IMAGE_FLAGS)"

push: image ## Build and push IMAGE=<registry>/<repository>:<tag> (log in first: buildah login / docker login)
	$(IMAGE_PUSH)

sbom: venv ## The image's CycloneDX SBOM from requirements.lock, into build/sbom.cdx.json
	mkdir -p build
	$(BIN)/cyclonedx-py requirements --output-reproducible --of JSON -o build/sbom.cdx.json requirements.lock

clean: ## Remove the virtualenv and build leftovers (not the control-plane cache)
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache .hypothesis bench-results.json
