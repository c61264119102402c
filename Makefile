# K2 Pipelines. `make demo` and `make test` work on a fresh machine from a clean clone.
SHELL := /bin/bash
UV := python3 -m uv
VENV := .venv
K2 := $(VENV)/bin/k2

.PHONY: install kafka-jars spark-jars chromium test-packages test-services demo dev test bench clean

# compiled bytecode: these machines set PYTHONDONTWRITEBYTECODE=1, so nothing else ever caches it, and every k2
# command, Dagster run and test subprocess would compile its imports again (a drain run's start: 14.5 CPU s from
# source, 7.7 compiled; `k2 bench runs`). K2 itself is an editable install, compiled here as it changes.
$(VENV)/.installed: pyproject.toml uv.lock
	$(UV) --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	$(UV) sync --frozen --compile-bytecode --extra spark
	touch $@

install: $(VENV)/.installed kafka-jars
	$(VENV)/bin/python -m compileall -q -j 0 k2_pipelines

kafka-jars: $(VENV)/.installed
	$(K2) kafka fetch

# Spark's Iceberg runtime and JDBC drivers, for the tests and tables handed to Spark (pyspark has the rest)
spark-jars: $(VENV)/.installed
	$(K2) spark fetch

# Debian's Chromium renders the data-quality reports in the tests
chromium:
	command -v chromium >/dev/null || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# what else the suite runs for real, from Debian: promtool (checks and unit-tests the alert rules), the
# Pushgateway, docker-compose (reads the stack's file: no Docker engine runs here). package:command pairs
TEST_PACKAGES := prometheus:promtool prometheus-pushgateway:prometheus-pushgateway docker-compose:docker-compose
test-packages:
	@missing=""; for entry in $(TEST_PACKAGES); do command -v $${entry#*:} >/dev/null || missing="$$missing $${entry%%:*}"; done; \
	[ -z "$$missing" ] || { SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); $$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing >/dev/null; }

# the production shape the suite runs K2 against: Debian's PostgreSQL, and an S3 server built from the Go module proxy
test-services:
	bash scripts/postgres.sh
	bash scripts/s3.sh

demo: install
	$(K2) demo

dev: install
	$(K2) dev

test: install spark-jars chromium test-packages test-services
	$(VENV)/bin/ruff check k2_pipelines k2_pipelines_tests
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m pytest

bench: install
	$(K2) bench asx

clean:
	-$(K2) kafka stop
	rm -rf .k2
