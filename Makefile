PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test

.PHONY: run test lint typecheck unit protos clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e . --config-settings editable_mode=strict
	touch $@

$(STAMP_TEST): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=strict
	touch $@ $(STAMP_RUN)

run: $(STAMP_RUN)
	$(BIN)/python examples/quickstart.py

test: $(STAMP_TEST) lint typecheck unit

lint: $(STAMP_TEST)
	$(BIN)/ruff check actorhub tasks namespaces tests examples protos

typecheck: $(STAMP_TEST)
	$(BIN)/mypy

unit: $(STAMP_TEST)
	$(BIN)/python -m pytest -q

protos: $(STAMP_TEST)
	$(BIN)/python protos/generate.py

clean:
	rm -rf $(VENV) build *.egg-info
