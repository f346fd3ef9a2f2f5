"""Fixtures shared by the test files, and the markers `make test-fast` deselects by.

Two markers are set here rather than in each file, so that no test can forget them:

- ``postgres``: the test needs the PostgreSQL server, because it asks for the ``postgres_server`` fixture or
  is the ``"postgresql"`` case of a backend parameter (the store, API, metrics, registry and alert tests run
  once per backend);
- ``browser``: the test drives chromium (``tests/test_browser.py``).

``make test-fast`` runs ``pytest -m "not slow and not postgres and not browser"``: SQLite only, no browser,
no long simulations. ``make test`` runs everything.
"""

from __future__ import annotations

import os

import pytest

from mlma.store.testing import postgres_unavailable, postgres_url


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    """A fresh store, once on SQLite and once on PostgreSQL (a schema of its own); a test file may define its
    own ``store`` instead."""
    from mlma.store import Store
    from mlma.store.testing import postgres_schema

    if request.param == "sqlite":
        with Store.create(f"sqlite:///{tmp_path / 'mlma.db'}") as opened:
            yield opened
    else:
        with postgres_schema(request.getfixturevalue("postgres_server")) as url, Store.create(url) as opened:
            yield opened


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The URL of the machine's PostgreSQL; skipped when it is down, but a failure in CI."""
    reason = postgres_unavailable()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; in CI (CI=true) the PostgreSQL tests must run, not be skipped")
        pytest.skip(reason)
    return postgres_url()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "postgres: needs the PostgreSQL server (set by conftest.py)")
    config.addinivalue_line("markers", "browser: drives a real browser (set by conftest.py)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        callspec = getattr(item, "callspec", None)
        if "postgres_server" in item.fixturenames or (callspec and "postgresql" in callspec.params.values()):
            item.add_marker(pytest.mark.postgres)
        if item.path.name == "test_browser.py":
            item.add_marker(pytest.mark.browser)
