# payesh — the two commands a newcomer runs are `make demo` and `make test`.
# Everything is installed into .venv from the pinned requirements.lock; nothing is
# assumed on the machine but Python 3.11, make and gcc.

PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv
UV_VERSION := 0.13.9
STAMP  := $(VENV)/.installed

# uv reads the machine's own CA store (as pip does), so installs work behind a proxy
# whose CA the machine trusts.
export UV_SYSTEM_CERTS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 180
export PREFECT_HOME := $(CURDIR)/data/prefect-home
export DO_NOT_TRACK := 1

.PHONY: venv demo test unit integration lint typecheck fmt bench lock clean

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"
	$(UV) pip sync --quiet --python $(BIN)/python requirements.lock
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	touch $(STAMP)

## Generate the demo city offline and monitor it end to end.
demo: $(STAMP)
	@mkdir -p $(PREFECT_HOME)
	$(BIN)/payesh demo

## Lint, type-check, then unit + integration tests.
test: $(STAMP) lint typecheck
	@mkdir -p $(PREFECT_HOME)
	$(BIN)/python -m pytest tests

unit: $(STAMP)
	@mkdir -p $(PREFECT_HOME)
	$(BIN)/python -m pytest tests/unit

integration: $(STAMP)
	@mkdir -p $(PREFECT_HOME)
	$(BIN)/python -m pytest tests/integration

lint: $(STAMP)
	$(BIN)/ruff check src flows tests benchmarks
	$(BIN)/ruff format --check src flows tests benchmarks

fmt: $(STAMP)
	$(BIN)/ruff format src flows tests benchmarks
	$(BIN)/ruff check --fix src flows tests benchmarks

typecheck: $(STAMP)
	$(BIN)/mypy

## Decode floor vs. end-to-end flow on the demo city (see benchmarks/README.md).
bench: $(STAMP)
	@mkdir -p $(PREFECT_HOME)
	$(BIN)/python benchmarks/run.py

## Re-resolve pinned dependencies (needs the package registry).
lock: $(STAMP)
	$(UV) pip compile pyproject.toml --extra dev -p 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) data/demo data/store
