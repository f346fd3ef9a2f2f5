"""Fixtures shared by the test files."""

from __future__ import annotations

import os

import pytest

from mlma.store.testing import postgres_unavailable, postgres_url


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """The URL of the machine's PostgreSQL; skipped when it is down, but a failure in CI."""
    reason = postgres_unavailable()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason}; in CI (CI=true) the PostgreSQL tests must run, not be skipped")
        pytest.skip(reason)
    return postgres_url()
