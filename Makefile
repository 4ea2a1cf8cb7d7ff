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

.PHONY: venv demo test unit integration lint typecheck fmt bench lock clean web browser

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
test: $(STAMP) web browser lint typecheck
	@mkdir -p $(PREFECT_HOME)
	$(BIN)/python -m pytest tests

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
