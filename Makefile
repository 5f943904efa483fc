PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test
# Strict editable installs link the files that exist at install time; a new module needs a
# reinstall. This file changes only when the set of source files does.
SOURCES_LIST := $(VENV)/.sources
SOURCES := $(shell find actorhub namespaces tasks -name '*.py' -o -name '*.pyi' -o -name 'py.typed' 2>/dev/null | sort)

.PHONY: run test lint typecheck unit protos clean FORCE

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(SOURCES_LIST): FORCE | $(BIN)/python
	@echo "$(SOURCES)" | cmp -s - $@ || echo "$(SOURCES)" > $@

$(STAMP_RUN): pyproject.toml $(SOURCES_LIST) | $(BIN)/python
	$(BIN)/pip install -q -e . --config-settings editable_mode=strict
	touch $@

$(STAMP_TEST): pyproject.toml $(SOURCES_LIST) | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]' --config-settings editable_mode=strict
	touch $@ $(STAMP_RUN)

run: $(STAMP_RUN)
	$(BIN)/python examples/quickstart.py

test: lint typecheck unit

lint: $(STAMP_TEST)
	$(BIN)/ruff check actorhub tasks namespaces tests examples protos

# From inside .venv, so mypy reads the installed tree, where tasks/ and namespaces/ sit
# inside actorhub/ as they do at run time, not the source tree where they do not.
typecheck: $(STAMP_TEST)
	cd $(VENV) && bin/mypy --config-file ../pyproject.toml -p actorhub

# The pytest script, not `python -m pytest`: the latter puts the source tree first on sys.path.
unit: $(STAMP_TEST)
	$(BIN)/pytest -q

protos: $(STAMP_TEST)
	$(BIN)/python protos/generate.py

clean:
	rm -rf $(VENV) build *.egg-info
