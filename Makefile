# The two commands in the README, `make run` and `make test`, build (or refresh) .venv on their own
# from the lock file, so a fresh machine needs nothing but python3 (>= 3.10) and make, and gets
# exactly the package versions CI tested. docs/development.md explains every target.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
LOCK   := requirements/dev.lock
STAMP  := $(VENV)/.installed-stamp
CONFIG ?= schedules.toml
# Process and browser tests start real daemons, workers, servers and Chromium: minutes, not seconds.
FAST   := not process and not browser

.PHONY: run test quick lint typecheck unit lock lock-check drift drift-newest drift-lowest \
	bench clean browser-deps

# Reinstall whenever the lock or pyproject.toml changes, so the venv never lags behind them.
# --require-hashes: only the exact files the lock names; --no-build-isolation: the editable
# install builds with the locked setuptools instead of whatever is newest on PyPI today.
$(STAMP): $(LOCK) pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes --no-deps -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/chronod --config $(CONFIG) run

# The whole suite. browser-deps may install Debian's chromium (~500 MB) when run as root: set
# CHRONOD_SKIP_BROWSER=1 to skip that install and the browser test.
test: browser-deps lock-check lint typecheck unit

# The inner loop: lint, types and every test that starts no daemon and no browser (~1-2 min).
quick: lock-check lint typecheck
	$(BIN)/pytest -q -m "$(FAST)"

browser-deps:
	@if [ -n "$$CHRONOD_SKIP_BROWSER" ]; then \
		echo "browser-deps: CHRONOD_SKIP_BROWSER set: not installing chromium" >&2; \
	elif [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then \
		:; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "browser-deps: installing Debian's chromium and chromium-driver (~500 MB) for the browser test" >&2; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -q chromium chromium-driver >/dev/null \
			|| { apt-get update -q && apt-get install -y -q chromium chromium-driver >/dev/null; }; \
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

# Refresh the lock from pyproject.toml's ranges (newest releases they admit). Commit the result
# only after `make test` passed with it.
lock: $(STAMP)
	$(BIN)/python -m tests.lockfile write $(LOCK)

# Fails when pyproject.toml's dependencies changed since the lock was written.
lock-check: $(STAMP)
	$(BIN)/python -m tests.lockfile check $(LOCK)

# The fast suite against the newest and against the lowest releases pyproject.toml admits, each in
# a venv of its own: an upstream release that breaks chronod, or a floor that no longer works,
# fails here by name (package and version) before users meet it.
drift: drift-newest drift-lowest

drift-newest drift-lowest: drift-%: $(STAMP)
	$(BIN)/python -m tests.lockfile drift $* .venv-$*
	.venv-$*/bin/pytest -q -p no:cacheprovider -m "$(FAST)"

bench: $(STAMP)
	$(BIN)/python -m bench.bench_schedules

clean:
	rm -rf $(VENV) .venv-newest .venv-lowest .chronod .mypy_cache .pytest_cache .ruff_cache .hypothesis
