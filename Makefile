# One command each: `make run` (whole pipeline on the bundled sample), `make test`, `make dev`.
# Every target creates .venv and installs the project first if needed; nothing relies on what
# happens to be installed on the machine.

# python3.11 when it is on PATH (python3 may be another version there), else python3 (checked below).
PYTHON ?= $(shell command -v python3.11 2>/dev/null || echo python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: install run test dev screenshot clean

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

$(DAGSTER_HOME)/dagster.yaml: dagster.yaml
	mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $(DAGSTER_HOME)/dagster.yaml

run: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster job execute -m recsys_dagster.definitions -j refresh_recommendations
	$(BIN)/python -m recsys_dagster.report

test: install
	$(BIN)/python -m pytest

dev: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/dagster dev -w workspace.yaml -h 127.0.0.1 -p $${DAGSTER_PORT:-3000}

# Headless-Chromium screenshot of the asset graph of a real `dagster dev` -> docs/asset-graph.png.
# Installs Debian's chromium when missing (needs root and the package mirror).
screenshot: install
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	$(BIN)/python scripts/screenshot_asset_graph.py

clean:
	rm -rf data/warehouse.duckdb data/warehouse.duckdb.dbt data/serving.duckdb data/models data/published dbt_project/target
