# webpacs: `make serve` runs the PACS on the embedded default, `make test` runs every check and test.
# Both set themselves up first (virtualenv, install, system tools), so they work on a fresh machine.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: serve test lint typecheck imports unit setup system-packages viewer openapi bench clean

serve: setup viewer
	$(BIN)/webpacs serve

test: setup system-packages viewer lint typecheck imports unit

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

# What the interop tests run against: DCMTK (a DIMSE peer nobody here wrote).
system-packages:
	@command -v storescu >/dev/null 2>&1 || { \
	  echo "installing DCMTK (Debian package dcmtk)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dcmtk >/dev/null; }
	@# The browser tests drive Debian's chromium (Playwright's own browser download is not used).
	@test -x /usr/bin/chromium || { \
	  echo "installing Chromium (Debian package chromium)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

# The OHIF viewer served at /viewer/: a pinned prebuilt @ohif/app from the npm registry, rebased
# to /viewer/ (never committed; a no-op when already installed). Needs npm.
viewer: setup
	@command -v npm >/dev/null 2>&1 || { \
	  echo "installing npm (Debian package npm)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq npm >/dev/null; }
	@$(BIN)/python ui/install_viewer.py

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

imports: setup
	$(BIN)/lint-imports

unit: setup
	$(BIN)/pytest

openapi: setup
	$(BIN)/webpacs openapi --output openapi/webpacs.yaml

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache ui/viewer-dist
