# Every target builds .venv from nothing if it is missing, so a fresh clone needs only `make demo` / `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast install browser clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mlma demo --out demo-output

# The dashboard's browser tests drive Debian's chromium (Playwright's own browser download is not used).
browser:
	@command -v chromium >/dev/null 2>&1 || [ ! -x /usr/bin/apt-get ] || [ "$$(id -u)" != 0 ] || \
	  (echo "installing chromium for the browser tests" && apt-get update -qq && \
	   DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null)

test: $(STAMP) browser
	$(BIN)/python -m pytest

# The inner loop: SQLite only, no browser, no long simulations (markers set in tests/conftest.py).
# `make test` stays the full suite; run it before pushing.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not postgres and not browser"

clean:
	rm -rf $(VENV) demo-output .pytest_cache
