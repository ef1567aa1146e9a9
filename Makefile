# Two entry points for a fresh machine: `make demo` and `make test` (see README).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin

.PHONY: demo test install install-dev kafka-jars qemu chromium prometheus kubectl lint typecheck bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

install: $(BIN)/python
	$(BIN)/pip install --quiet -e .

install-dev: $(BIN)/python
	$(BIN)/pip install --quiet -e ".[dev]"

kafka-jars:
	PYTHON=$(abspath $(BIN)/python) ops/kafka/kafka.sh fetch

# qemu-x86_64 (Debian qemu-user) runs the portability tests on a CPU without AVX-512
# (docs/portability.md)
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT   = $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get
qemu:
	@command -v qemu-x86_64 >/dev/null || { \
	  $(APT) install -y -qq qemu-user || { $(APT) update -qq && $(APT) install -y -qq qemu-user; }; }

# headless Chromium and its driver (Debian) for the /docs page test (tests/test_docs_page.py)
chromium:
	@{ command -v chromium && command -v chromedriver; } >/dev/null || { \
	  $(APT) install -y -qq chromium chromium-driver || \
	  { $(APT) update -qq && $(APT) install -y -qq chromium chromium-driver; }; }

# promtool (Debian prometheus) checks and unit-tests ops/prometheus/alerts.yml
# (tests/test_observability_assets.py)
prometheus:
	@command -v promtool >/dev/null || { \
	  $(APT) install -y -qq prometheus || { $(APT) update -qq && $(APT) install -y -qq prometheus; }; }

# kubectl renders ops/k8s with its built-in kustomize (tests/test_deployment.py); Debian's
# kubernetes-client if the machine has none
kubectl:
	@command -v kubectl >/dev/null || { \
	  $(APT) install -y -qq kubernetes-client || { $(APT) update -qq && $(APT) install -y -qq kubernetes-client; }; }

demo: install
	$(BIN)/mgw up --demo

# Everything the tests need is installed and started by this target and the fixtures:
# Python packages, Kafka's jars (Maven Central), qemu-user, Chromium, promtool and kubectl, then
# pytest starts embedded PostgreSQL, Redis, Qdrant local mode and one KRaft Kafka node on loopback.
test: install-dev kafka-jars qemu chromium prometheus kubectl
	$(BIN)/python -m pytest -q

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: install-dev
	$(BIN)/mypy

bench: install-dev kafka-jars
	$(BIN)/python bench/projection_throughput.py

clean:
	rm -rf $(VENV) .mgw .pytest_cache .mypy_cache .ruff_cache
