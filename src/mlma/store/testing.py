"""Helpers for testing code that uses the store: a throw-away PostgreSQL schema, a lock holder process.

The PostgreSQL server is taken from ``MLMA_TEST_POSTGRES_URL`` (default
``postgresql+psycopg://postgres@127.0.0.1:5432/test``). Each :func:`postgres_schema` creates a schema with
a unique name (process id and random suffix), points the connection's ``search_path`` at it, and drops it
with everything in it afterwards, so test runs on one server never see each other's tables.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator

import sqlalchemy as sa

DEFAULT_POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def postgres_url() -> str:
    """The server tests use."""
    return os.environ.get("MLMA_TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL)


def postgres_unavailable(url: str | None = None, timeout: int = 3) -> str | None:
    """None if the PostgreSQL server answers, else the reason it cannot be used."""
    url = url or postgres_url()
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install 'psycopg[binary]')"
    engine = sa.create_engine(url, connect_args={"connect_timeout": timeout}, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable here"
        shown = sa.make_url(url).render_as_string(hide_password=True)
        return f"PostgreSQL at {shown} is unreachable: {type(exc).__name__}: {str(exc).splitlines()[0]}"
    finally:
        engine.dispose()
    return None


@contextlib.contextmanager
def postgres_schema(url: str | None = None, prefix: str = "mlma_test") -> Iterator[str]:
    """A URL whose connections work in a new, uniquely named schema; the schema is dropped afterwards."""
    url = url or postgres_url()
    name = f"{prefix}_{os.getpid()}_{secrets.token_hex(4)}"
    admin = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{name}"'))
        scoped = sa.make_url(url).update_query_dict({"options": f"-csearch_path={name}"})
        yield scoped.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{name}" CASCADE'))
        admin.dispose()


def hold_lock(url: str, holder: str, ttl: float, acquired, release, outcome) -> None:
    """Run in another process: take the tick lock, signal ``acquired``, keep it until ``release`` is set.

    ``outcome`` (a queue) receives "acquired" or the LockHeld message. With heartbeats off the lease
    simply runs out after ``ttl`` if the process is killed, like a crashed agent's.
    """
    from mlma.store import LockHeld, Store

    store = Store.open(url)
    try:
        lease = store.acquire_lock(holder, ttl)
    except LockHeld as exc:
        outcome.put(str(exc))
        acquired.set()
        return
    outcome.put("acquired")
    acquired.set()
    release.wait(60)
    lease.release()
    store.close()


def gone_agent() -> str:
    """The lock holder name of an mlma agent on this host whose process no longer runs (a child that exited and
    was reaped): what an agent killed with SIGKILL leaves in the ``locks`` row."""
    import subprocess
    import sys

    from mlma.lock_holder import agent_identity

    child = subprocess.Popen([sys.executable, "-c", ""])
    child.wait()
    return agent_identity().replace(f":{os.getpid()}", f":{child.pid}", 1)


def serve_first_models(store, stream_ids, spec: str = "naive") -> None:
    """Record a first model version of each stream and put it in service, as the start-up tick does; its artifact
    hash names no file. For tests of what needs a model to serve (a queued re-training), not of the models."""
    from mlma.store.records import ChampionMove, NewVersion

    ids = [int(s) for s in stream_ids]
    with store.transaction() as tx:
        numbers = tx.record_versions([NewVersion(s, "0" * 64, 1, spec) for s in ids])
        tx.move_champions([ChampionMove(s, int(v), "agent") for s, v in zip(ids, numbers)])
