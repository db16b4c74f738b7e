# The two set-up commands of README: `make demo` and `make test`.
# Each creates .venv on first use and installs the project (torch pinned to the CPU build).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo-output

.PHONY: install demo test lint bench

$(BIN)/trajectories: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

install: $(BIN)/trajectories

demo: install
	$(BIN)/trajectories demo --out $(DEMO_DIR) --overwrite

test: install
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -n 2 tests

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python benchmarks/simulate.py
