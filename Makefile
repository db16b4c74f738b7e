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

# PostgreSQL for the exporter's tests: .ci/postgres.sh installs it if missing and starts (or
# reuses) a throw-away cluster; a URL already in TRAJECTORIES_TEST_POSTGRES_URL is used as is.
# Without a server those tests fail under CI=true and skip elsewhere.
test: install
	$(BIN)/ruff check .
	url="$${TRAJECTORIES_TEST_POSTGRES_URL:-$$(bash .ci/postgres.sh || true)}"; \
	TRAJECTORIES_TEST_POSTGRES_URL="$$url" $(BIN)/python -m pytest -n 2 tests

lint: install
	$(BIN)/ruff check .

bench: install
	$(BIN)/python benchmarks/simulate.py
