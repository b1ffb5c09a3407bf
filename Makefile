# webpacs: `make serve` runs the PACS on the embedded default, `make test` runs every check and test.
# Both set themselves up first (virtualenv, install, system tools), so they work on a fresh machine.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: serve test lint typecheck imports unit setup system-packages openapi bench clean

serve: setup
	$(BIN)/webpacs serve

test: setup system-packages lint typecheck imports unit

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
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
