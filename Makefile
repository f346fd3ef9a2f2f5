# Every target builds .venv from nothing if it is missing, so a fresh clone needs only `make demo` / `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast test-nixtla install browser prometheus clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/mlma demo --out demo-output

# The dashboard's browser tests drive Debian's chromium (Playwright's own browser download is not used).
# apt waits up to 10 minutes for a lock another apt holds (a machine's start-up upgrades, a second checkout's
# `make`) instead of failing at once (scripts/apt-get-waiting.sh: `update`'s lock too).
APT_GET := bash "$(CURDIR)/scripts/apt-get-waiting.sh"
browser:
	@command -v chromium >/dev/null 2>&1 || [ ! -x /usr/bin/apt-get ] || [ "$$(id -u)" != 0 ] || \
	  (echo "installing chromium for the browser tests" && $(APT_GET) update -qq && \
	   DEBIAN_FRONTEND=noninteractive $(APT_GET) install -y -qq chromium chromium-driver >/dev/null)

# The alert-rule and dashboard tests (tests/test_grafana.py) run promtool and a real Prometheus: Debian's
# package, unpacked into .mlma-cache/prometheus rather than installed, so no Prometheus service is set up.
PROMETHEUS_DIR := .mlma-cache/prometheus
prometheus:
	@command -v promtool >/dev/null 2>&1 || [ -x $(PROMETHEUS_DIR)/usr/bin/promtool ] || [ ! -x /usr/bin/apt-get ] || \
	  (echo "unpacking Debian's prometheus package (promtool) for the alert-rule tests" && \
	   { [ "$$(id -u)" != 0 ] || $(APT_GET) update -qq; } && mkdir -p $(PROMETHEUS_DIR) && cd $(PROMETHEUS_DIR) && \
	   $(APT_GET) download -qq prometheus >/dev/null 2>&1 && dpkg-deb -x prometheus_*.deb . && rm prometheus_*.deb)

# statsforecast and mlforecast pin pandas < 3 while mlma's own environment runs pandas 3, so the Nixtla
# adapters are tested in an environment of their own (the `nixtla` extra, as a Nixtla user installs it),
# together with the data module, whose parsing differs between pandas 2 and 3.
NIXTLA_VENV := .venv-nixtla
NIXTLA_STAMP := $(NIXTLA_VENV)/.installed
$(NIXTLA_STAMP): pyproject.toml
	$(PYTHON) -m venv $(NIXTLA_VENV)
	$(NIXTLA_VENV)/bin/pip install --quiet --upgrade pip
	$(NIXTLA_VENV)/bin/pip install --quiet -e '.[nixtla,data]' 'pytest>=8'
	touch $(NIXTLA_STAMP)

NIXTLA_TESTS := tests/test_nixtla.py src/mlma/models/nixtla.py tests/test_data.py
test-nixtla: $(NIXTLA_STAMP)
	$(NIXTLA_VENV)/bin/python -m pytest -p no:cacheprovider $(NIXTLA_TESTS)

test: $(STAMP) browser prometheus $(NIXTLA_STAMP)
	$(BIN)/python -m pytest
	$(NIXTLA_VENV)/bin/python -m pytest -p no:cacheprovider $(NIXTLA_TESTS)

# The inner loop: SQLite only, no browser, no long simulations (markers set in tests/conftest.py).
# `make test` stays the full suite; run it before pushing.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not postgres and not browser"

clean:
	rm -rf $(VENV) $(NIXTLA_VENV) demo-output .pytest_cache .mlma-cache
