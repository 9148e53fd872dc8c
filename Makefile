# Two commands on a fresh Debian/Ubuntu machine with Python 3.11+ and a JDK 17+:
#   make demo   installs what is missing, then runs `tsdemo up`
#   make test   installs what is missing, then runs the whole test suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
APT_PACKAGES := mosquitto mosquitto-clients influxdb kcat curl
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: setup setup-steps system-packages python-env artifacts deploy-tools demo test test-faults test-bench test-containers test-labs test-unit lint clean

# The four steps are independent (artifacts waits for python-env), so they run side by side: the Go
# builds use the CPU while pip and Maven wait on the network.
setup:
	@$(MAKE) --no-print-directory -j4 setup-steps

setup-steps: system-packages python-env artifacts deploy-tools

system-packages:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi
	@command -v java >/dev/null || { echo "a JDK 17+ is required (apt-get install openjdk-17-jdk-headless)"; exit 1; }

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

python-env: $(BIN)/python
	@$(BIN)/python -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(BIN)/pip install -q --disable-pip-version-check -e '.[dev]'

# Kafka's jars and Spark's Kafka connector, from Maven Central into .cache/ (once).
artifacts: python-env
	@# -c, not -m: deploy.servers imports this module first, and runpy warns of running it twice.
	$(BIN)/python -c 'import sys; from deploy.servers.artifacts import main; sys.exit(main())'

# kustomize and docker compose (for `docker compose config`, no engine needed), built from their Go
# modules into .cache/tools/bin once (about 5 minutes the first time).
deploy-tools:
	bash tests/support/validate/install-tools.sh

demo: setup
	$(BIN)/tsdemo up

# Test files run on TEST_PROCESSES pytest-xdist workers, a file at a time (its module fixtures, such as a
# running pipeline, stay in one worker). Two workers took the suite from about 23 to 13-17 minutes on the slower
# 2-core machines here (7.5-8 on a faster one): most of an end-to-end test waits on JVMs and on real-time streams.
TEST_PROCESSES ?= 2
test: setup
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n $(TEST_PROCESSES) --dist loadfile

# The long fault-injection suite: pauses, a TCP proxy with latency, drops and resets (about 15 min).
test-faults: setup
	$(BIN)/python -m pytest -m faults

# The benchmark harness end to end on small sizes (its wiring, not its speed; about 6 min).
test-bench: setup
	$(BIN)/python -m pytest -m bench

# Every image built and run on a real Docker engine (testcontainers), and compose brought up (CI runs it after
# `make test`): the engine that
# answers, else (root on Debian/Ubuntu) a private dockerd for the run. See deploy/images/containers.sh.
test-containers: setup
	bash deploy/images/containers.sh

# The workshop labs' commands (docs/labs/*.md), in order, against a real local stack (CI runs it last), lab 8's
# docker steps on the engine test-containers uses (started the same way; skipped where none can be had).
test-labs: setup
	bash deploy/images/containers.sh labs

test-unit: python-env
	$(BIN)/python -m pytest -m "not integration and not e2e"

lint: python-env
	$(BIN)/ruff check .

clean:
	rm -rf .tsdemo .pytest_cache
