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

.PHONY: venv demo test unit integration lint typecheck fmt bench lock clean web browser reliability

venv: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet "uv==$(UV_VERSION)"
	$(UV) pip sync --quiet --compile-bytecode --python $(BIN)/python requirements.lock
	$(UV) pip install --quiet --python $(BIN)/python --no-deps -e .
	$(BIN)/python -m compileall -q src flows
	touch $(STAMP)

## Generate the demo city offline and monitor it end to end.
demo: $(STAMP)
	@mkdir -p $(PREFECT_HOME)
	$(BIN)/payesh demo

## Lint, type-check, then unit + integration tests, on TEST_WORKERS processes (whole
## files per process: most tests wait on real servers, so two share two cores well).
TEST_WORKERS ?= 2

test: $(STAMP) web browser lint typecheck
	@mkdir -p $(PREFECT_HOME)
	$(BIN)/python -m pytest tests -n $(TEST_WORKERS) --dist loadfile

## The portal's front end: MapLibre GL from the npm registry (web/package-lock.json),
## copied into the package and served by `payesh serve` itself (no CDN).
WEB_VENDOR := src/payesh/portal/static/vendor
WEB_STAMP  := $(WEB_VENDOR)/.built

web: $(WEB_STAMP)

$(WEB_STAMP): web/package.json web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	mkdir -p $(WEB_VENDOR)
	cp web/node_modules/maplibre-gl/dist/maplibre-gl.js web/node_modules/maplibre-gl/dist/maplibre-gl.css \
	   web/node_modules/maplibre-gl/dist/LICENSE.txt $(WEB_VENDOR)/
	touch $(WEB_STAMP)

## Headless Chromium for the portal's browser test: Debian's package, never a download
## by Playwright (CI runs as root; elsewhere sudo is used).
browser:
	@test -x /usr/bin/chromium || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update && $$SUDO apt-get install -y --no-install-recommends chromium; }

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

## The reliability campaign's long variant (docs/reliability.md): 50 SIGKILLs of the flow,
## 5 seeds of 20 % faults, thousands of fuzzed inputs; then the page's figures are rendered
## from what the tests recorded. `make test` runs the same tests, shorter.
RELIABILITY_TESTS := tests/integration/reliability tests/integration/test_store_crash.py \
  tests/integration/test_store_readers.py tests/integration/test_ops_dask.py \
  tests/integration/test_bad_items.py tests/unit/test_properties_reliability.py \
  tests/unit/test_store_stateful.py tests/unit/test_fuzz_inputs.py

reliability: $(STAMP)
	@mkdir -p $(PREFECT_HOME) data/reliability
	rm -f data/reliability/figures-long.jsonl
	PAYESH_RELIABILITY=long $(BIN)/python -m pytest $(RELIABILITY_TESTS) -n $(TEST_WORKERS) --dist loadfile \
	  --timeout 5400
	$(BIN)/python tests/integration/reliability/render.py --variant long

## Decode floor vs. end-to-end flow on the demo city (see benchmarks/README.md).
bench: $(STAMP)
	@mkdir -p $(PREFECT_HOME)
	$(BIN)/python benchmarks/run.py

## Operations (docs/operations.md): a Prefect server, a process worker, the deployments.
## PREFECT_API_URL points the worker and `prefect deploy` at the server (default: local).
PREFECT_PORT ?= 4200
PREFECT_POOL ?= payesh-process
PREFECT_API_URL ?= http://127.0.0.1:$(PREFECT_PORT)/api
.PHONY: prefect-server prefect-worker prefect-deploy

prefect-server: $(STAMP)
	@mkdir -p $(PREFECT_HOME)
	$(BIN)/prefect server start --host 127.0.0.1 --port $(PREFECT_PORT)

prefect-worker: $(STAMP)
	@mkdir -p $(PREFECT_HOME)
	PREFECT_API_URL=$(PREFECT_API_URL) PAYESH_HOME=$(CURDIR) \
	  $(BIN)/prefect worker start --pool $(PREFECT_POOL) --type process

prefect-deploy: $(STAMP)
	PREFECT_API_URL=$(PREFECT_API_URL) PAYESH_HOME=$(CURDIR) $(BIN)/prefect --no-prompt deploy --all

## Re-resolve pinned dependencies (needs the package registry).
lock: $(STAMP)
	$(UV) pip compile pyproject.toml --extra dev -p 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) data/demo data/store
