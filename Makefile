PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.installed-run
STAMP_TEST := $(VENV)/.installed-test

.PHONY: run test lint typecheck unit protos bench soak clean bytecode

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# An editable install of the tree itself: tasks/ and namespaces/ are inside actorhub/ through
# links, so the checkout and the installed package are one tree and new modules need nothing.
$(STAMP_RUN): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(STAMP_TEST): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'
	touch $@ $(STAMP_RUN)

# Bytecode for the tree, as pip writes it for an installed wheel: an editable install writes
# none, and where PYTHONDONTWRITEBYTECODE is set every process would compile every module it
# imports at each start (about a third of a cluster's start-up). Cheap when it is up to date.
bytecode: $(STAMP_RUN)
	@$(BIN)/python -m compileall -q -j 0 actorhub examples >/dev/null

run: $(STAMP_RUN) bytecode
	$(BIN)/python examples/quickstart.py

test: lint typecheck unit

lint: $(STAMP_TEST)
	$(BIN)/ruff check .

typecheck: $(STAMP_TEST)
	$(BIN)/mypy

unit: $(STAMP_TEST) bytecode
	@# tests/test_multihost.py simulates hosts with network namespaces (`ip`, from iproute2).
	@command -v ip >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -q && apt-get install -y -q iproute2; } \
		|| echo "no iproute2: tests/test_multihost.py will be skipped"
	@# tests/test_dashboard_page.py opens the dashboard's page in Debian's chromium (through Playwright).
	@[ -x /usr/bin/chromium ] || { [ "$$(id -u)" = 0 ] && apt-get update -q && apt-get install -y -q chromium; } \
		|| echo "no chromium (root installs it here): tests/test_dashboard_page.py will fail"
	$(BIN)/python -m pytest -q

protos: $(STAMP_TEST)
	$(BIN)/python protos/generate.py

# Not part of `make test`: rewrites BENCHMARKS.md from a run of ../shared/bench/vs-ray.
bench: $(STAMP_TEST) bytecode
	$(BIN)/python tests/perf/write_benchmarks.py --own-metrics --cross-node --gateway

# Not part of `make test`: sync-call latency under 100 loading callers, and the 10-minute soak
# with each process's memory at start and end (issue 8); see tests/perf/README.md.
soak: $(STAMP_TEST) bytecode
	$(BIN)/python tests/perf/load_latency.py
	$(BIN)/python tests/perf/soak.py

clean:
	rm -rf $(VENV) build *.egg-info
