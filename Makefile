# The README's commands. `make demo` brings the whole thing up locally; `make test` runs every check CI runs.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CLUSTER_DIR ?= /tmp/managed-secrets-cluster
export MSO_CLUSTER_DIR := $(CLUSTER_DIR)

.PHONY: help install lint typecheck unit coverage integration test demo demo-down build-controlplane cluster-up cluster-down bench image clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | expand -t 22

install: $(VENV)/.installed  ## create .venv with the package and its dev/test tools

$(VENV)/.installed: pyproject.toml
	bash hack/install-debian-packages.sh
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

lint: install  ## ruff (lint + format check) and the layer contracts (import-linter)
	$(BIN)/ruff check src tests hack bench packaging
	$(BIN)/ruff format --check src tests hack bench packaging
	$(BIN)/lint-imports

typecheck: install  ## mypy --strict on src/
	$(BIN)/mypy

unit: install build-controlplane  ## fast tests: the pure logic and the reconcile service over in-memory store and cluster
	$(BIN)/pytest tests/unit -q

# The reconcile service (service/) must stay covered by the unit tests alone.
SERVICE_COVERAGE_MIN ?= 85
coverage: install build-controlplane  ## unit tests under coverage.py; prints the report and fails if service/ is under 85 %
	$(BIN)/coverage run -m pytest tests/unit -q
	$(BIN)/coverage report
	$(BIN)/coverage report --include='src/managed_secrets/service/*' --fail-under=$(SERVICE_COVERAGE_MIN)

integration: install  ## tests against a real control plane (started if KUBECONFIG does not answer)
	$(BIN)/pytest tests/integration -q

# The replica and key-service tests stop the suite's operator for their run, so in ``make test`` they get a
# control plane of their own (KUBECONFIG unset, even in CI) and run beside the rest, which mostly waits on the
# API server; the packaging tests and the SSH server-rotation tests (whose crash cases restart the operator)
# join them to even out the two lanes. (The chart
# tests stay in the main lane: beside the replica and key-service modules one of them timed out once.)
ISOLATED := tests/integration/test_replicas.py tests/integration/test_kms.py tests/integration/test_dist.py \
  tests/integration/test_ssh_hosts.py
.PHONY: integration-main integration-isolated
integration-main: install
	$(BIN)/pytest tests/integration -q $(addprefix --ignore=,$(ISOLATED))
integration-isolated: install
	env -u KUBECONFIG -u MSO_REQUIRE_EXISTING_CLUSTER $(BIN)/pytest $(ISOLATED) -q -p no:cacheprovider

# The unit tests under coverage, and beside them the cluster benchmark's smoke run (its own control plane)
# followed by the static checks; once both are done, the integration tests in two lanes. The node tests mostly
# wait on the kubelet's one-minute sync period, so they run from the start beside all of that.
test: install  ## everything: lint, types, unit tests with coverage, a cluster-benchmark smoke run, integration tests, node tests (the README's test command)
	$(MAKE) --no-print-directory -j4 --output-sync=target test-lanes

.PHONY: test-lanes test-main-lane test-isolated-lane
test-lanes: test-main-lane test-isolated-lane node-test-if-root
test-main-lane: coverage smoke-and-checks
	$(MAKE) --no-print-directory integration-main
test-isolated-lane: coverage smoke-and-checks
	$(MAKE) --no-print-directory integration-isolated

# Pods on a real local node (containerd, runc, CNI, kubelet, kube-scheduler): they need root. Mostly waiting on
# the kubelet's sync period, so they run beside the unit tests and the static checks.
.PHONY: build-node node-test node-test-if-root
build-node:  ## kubelet, kube-scheduler, containerd, CNI plugins, the pause and test images (cached; root)
	bash hack/build-node.sh
node-test: install build-controlplane build-node  ## Pods on a real local node: mounted Secrets, rotation, restart targets (root)
	$(BIN)/pytest tests/node -q -p no:cacheprovider
node-test-if-root:
	@if [ "$$(id -u)" = 0 ]; then $(MAKE) --no-print-directory node-test; \
	else echo "tests/node not run: the local node needs root (containerd, runc, iptables); run make node-test as root"; fi

.PHONY: smoke-and-checks
smoke-and-checks: install
	$(MAKE) --no-print-directory -j1 bench-smoke
	$(MAKE) --no-print-directory -j1 lint typecheck

# KMS=softhsm: the keyring sealed by a SoftHSM2 token (PKCS#11); KMS=kmsv2: by the control plane's KMS v2 plugin.
# NODE=1: the control plane gets a node (kubelet, containerd; root), so Pods run.
KMS ?=
NODE ?=
demo: install  ## local control plane + CRD + operator + examples, then show the projected Secret (KMS=softhsm|kmsv2, NODE=1)
	KMS=$(KMS) NODE=$(NODE) bash hack/demo.sh

demo-down: install  ## stop the demo operator and the local control plane
	-[ -f $(CLUSTER_DIR)/pids/operator.pid ] && kill $$(cat $(CLUSTER_DIR)/pids/operator.pid)
	$(BIN)/python hack/cluster.py down --dir $(CLUSTER_DIR)

build-controlplane:  ## build etcd, kube-apiserver, kube-controller-manager, kubectl and helm (cached)
	bash hack/build-controlplane.sh

cluster-up: install  ## start the local control plane; prints the kubeconfig path
	$(BIN)/python hack/cluster.py up --dir $(CLUSTER_DIR)

cluster-down: install  ## stop the local control plane
	$(BIN)/python hack/cluster.py down --dir $(CLUSTER_DIR)

bench: install  ## benchmarks with figures and ratios against a baseline measured in the same run
	$(BIN)/python -m bench

.PHONY: bench-cluster bench-smoke bench-ssh
bench-ssh: install  ## sshKey.hosts rotations against real sshd hosts on 127.0.0.1, beside a bare-login baseline (ARGS=--hosts 8)
	$(BIN)/python -m bench.ssh_hosts $(ARGS)
bench-cluster: install  ## the operator on its own local control plane: figures beside same-run baselines (ARGS=--quick)
	$(BIN)/python -m bench.cluster $(ARGS)

bench-smoke: install  ## the cluster benchmark's quick run (part of make test: figures printed, not asserted)
	$(BIN)/python -m bench.cluster --quick

# Release artifacts (hack/dist.py; README "Release artifacts"). DIST_URL_BASE / DIST_HOMEPAGE: the krew manifest's
# download location and homepage (placeholders by default).
DIST_DIR ?= dist
.PHONY: dist
dist: install  ## wheels and sdists (operator, plugin), the packaged chart, the krew archive and manifest in dist/
	$(BIN)/python hack/dist.py --out $(DIST_DIR)

image:  ## build the operator image with buildah from a local Debian base (no Docker; root on Debian 12)
	bash hack/build-image.sh

clean:  ## remove the venv and caches (not the Go build cache)
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache .hypothesis
