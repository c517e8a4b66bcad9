# The two commands in the README. Both build (or refresh) .venv on their own, so a fresh
# machine needs nothing but python3 (>= 3.10) and make.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= schedules.toml

.PHONY: run test lint typecheck unit bench clean

# Reinstall whenever pyproject.toml changes, so the venv never lags behind the declared deps.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/chronod --config $(CONFIG) run

test: lint typecheck unit

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q

bench: $(STAMP)
	$(BIN)/python bench/bench_schedules.py

clean:
	rm -rf $(VENV) .chronod .mypy_cache .pytest_cache .ruff_cache .hypothesis
