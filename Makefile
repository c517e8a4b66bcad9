# The two commands in the README. Both build (or refresh) .venv on their own, so a fresh
# machine needs nothing but python3 (>= 3.10) and make.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= schedules.toml

.PHONY: run test lint typecheck unit bench clean browser-deps

# Reinstall whenever pyproject.toml changes, so the venv never lags behind the declared deps.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/chronod --config $(CONFIG) run

test: browser-deps lint typecheck unit

# tests/test_web_browser.py drives Debian's chromium through chromedriver. Installed here only when
# missing and only as root (CI containers, fresh VMs); otherwise that test skips with the reason,
# or fails when CHRONOD_REQUIRE_BROWSER=1.
browser-deps:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then \
		:; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y chromium chromium-driver \
			|| { apt-get update && apt-get install -y chromium chromium-driver; }; \
	else \
		echo "browser-deps: chromium/chromedriver missing and not root: browser test will skip" >&2; \
	fi

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
