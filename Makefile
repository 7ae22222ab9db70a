# Sharpness & Poisoning Workbench: make lab | make app | make test | make test-fast | make lint | make demo
# Each target creates .venv when missing and (re)installs the project when pyproject.toml changed,
# so all of them work on a fresh clone and again on a machine where .venv already exists.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.workbench-installed
PORT   ?= 8888
PYTEST_ARGS ?=
# test processes (pytest-xdist; each test file stays in one process, so its fixtures and order hold)
TEST_WORKERS ?= 2

APP_PORT ?= 8866

.PHONY: lab test test-fast lint demo install bench clean-runs app

$(STAMP): pyproject.toml
	@if [ ! -x "$(BIN)/python" ] || ! "$(BIN)/python" -c "import sys" >/dev/null 2>&1; then \
		echo "creating $(VENV)"; rm -rf "$(VENV)"; $(PYTHON) -m venv "$(VENV)"; fi
	"$(BIN)/python" -m pip install --upgrade pip
	"$(BIN)/python" -m pip install -e '.[dev]'
	@touch "$(STAMP)"

install: $(STAMP)

lab: $(STAMP)
	"$(BIN)/workbench" lab --port $(PORT)

test: $(STAMP)
	"$(BIN)/python" -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# the fast tier: everything not marked slow or browser (under 3 minutes on 2 cores)
test-fast: $(STAMP)
	"$(BIN)/python" -m pytest -n $(TEST_WORKERS) --dist loadfile -m "not slow and not browser" $(PYTEST_ARGS)

lint: $(STAMP)
	"$(BIN)/ruff" check workbench tests benchmarks

app: $(STAMP)
	"$(BIN)/workbench" app --port $(APP_PORT)

demo: $(STAMP)
	"$(BIN)/workbench" demo --root runs/demo

bench: $(STAMP)
	"$(BIN)/python" benchmarks/bench_sam_step.py
	"$(BIN)/python" benchmarks/bench_dashboard.py
	"$(BIN)/python" benchmarks/bench_hessian.py
	"$(BIN)/python" benchmarks/bench_poison.py
	"$(BIN)/python" benchmarks/bench_targeted.py
	"$(BIN)/python" benchmarks/bench_epic.py
	"$(BIN)/python" benchmarks/bench_bilevel.py

clean-runs:
	rm -rf runs
