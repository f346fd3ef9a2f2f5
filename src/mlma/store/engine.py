"""Engines for the store: SQLite (default) or PostgreSQL, set up so that faults end in a clear error.

SQLite
    A file store waits ``timeout`` seconds (default 60; ``sqlite:///mlma.db?timeout=5`` to change it) for
    another process's write lock before it gives up with "database is locked". A store on a file system it
    cannot write (a read-only mount, a file or folder without write permission) is opened **read-only**
    (``mode=ro``; ``immutable=1`` on a read-only file system where SQLite could not even create its
    shared-memory file and no write-ahead log is pending), so commands that only read (``mlma status``,
    ``forecast``, ``audit``) work there; a command that writes is refused by SQLite ("attempt to write a
    readonly database").

PostgreSQL
    Unless the URL says otherwise, a connection gives up after ``connect_timeout`` seconds, TCP keepalives
    find a dead peer (idle 30 s, then every 10 s, 3 probes), ``tcp_user_timeout`` ends a connection whose
    sent data goes unacknowledged for 60 s, and every statement is cancelled by the server after
    ``statement_timeout`` (default 15 min). All are URL parameters, e.g.
    ``postgresql+psycopg://mlma@db/mlma?connect_timeout=5&statement_timeout=5min&keepalives_idle=15``;
    each is logged (``mlma.store.engine``) when it fires.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import sqlite3
from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa
from sqlalchemy.pool import StaticPool

from mlma.store import serial
from mlma.store.postgres_connect import POSTGRES_DEFAULTS, POSTGRES_STATEMENT_TIMEOUT  # noqa: F401 - re-exported
from mlma.store.postgres_connect import limits, log_if_timeout, with_defaults
from mlma.store.sqlite_files import sqlite_open_mode

log = logging.getLogger(__name__)

#: Seconds a SQLite connection waits for another process's write lock.
SQLITE_BUSY_TIMEOUT = 60.0
#: Every JSON column, whoever writes it, goes through the one serialiser (finite numbers, valid text).
_JSON_OPTIONS = {"json_serializer": serial.dumps, "json_deserializer": serial.loads}


def _create_private_file(path: Path) -> None:
    """Create a new SQLite file readable by its owner only (0600), in a folder created 0700 if missing.

    The store holds the fleet's data, the audit log and API token hashes: nobody else on the machine needs
    to read it. SQLite gives its ``-wal`` and ``-shm`` files the database file's permissions. An existing
    file is left as it is (its owner may have chosen group access on purpose).
    """
    if not path.parent.exists():
        path.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)
    os.chmod(path, 0o600)  # the umask may have removed bits, never added: this makes the mode exact


def make_engine(url: str | sa.URL) -> sa.Engine:
    """An engine for a SQLite or PostgreSQL URL, set up for the store's transactions."""
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise ValueError(f"url must be a database URL such as 'sqlite:///path/mlma.db' or "
                         f"'postgresql+psycopg://user@host/db', got {url!r}") from exc
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(parsed)
    if backend == "postgresql":
        return _postgres_engine(parsed)
    raise ValueError(f"unsupported database {backend!r}: use 'sqlite:///path/mlma.db' or "
                     f"'postgresql+psycopg://user@host/db'")


def missing_sqlite_file(url: str | sa.URL) -> Path | None:
    """The file of a SQLite URL when it does not exist; None when it does, or for memory and PostgreSQL.

    >>> missing_sqlite_file("sqlite:////no/such/folder/mlma.db")
    PosixPath('/no/such/folder/mlma.db')
    >>> missing_sqlite_file("sqlite://") is None, missing_sqlite_file("postgresql+psycopg://u@h/db") is None
    (True, True)
    >>> missing_sqlite_file("sqlite:///file:/no/such.db?mode=ro&uri=true") is None  # SQLite reads URIs itself
    True
    """
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        return None  # make_engine says what is wrong with it
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    if parsed.database.startswith("file:") or str(parsed.query.get("uri", "")).lower() in ("true", "1"):
        return None  # a SQLite URI filename (file:...?mode=ro): SQLite itself says what is wrong with it
    path = Path(parsed.database).expanduser()
    return None if path.exists() else path


def is_read_only(engine: sa.Engine) -> bool:
    """True when the engine opened a SQLite file read-only (see the module docstring)."""
    return bool(getattr(engine, "mlma_read_only", False))


# -- SQLite ------------------------------------------------------------------------------------------------
def _sqlite_engine(parsed: sa.URL) -> sa.Engine:
    if parsed.drivername not in ("sqlite", "sqlite+pysqlite"):
        raise ValueError(f"use the standard SQLite driver ('sqlite:///path'), got {parsed.drivername!r}")
    memory = parsed.database in (None, "", ":memory:")
    query = dict(parsed.query)
    try:
        busy = float(query.pop("timeout", SQLITE_BUSY_TIMEOUT))
    except ValueError:
        raise ValueError(f"the SQLite URL's timeout must be seconds, got {parsed.query['timeout']!r}") from None
    read_only = False
    if memory:
        # One connection shared by all users: each new connection would be an empty database.
        engine = sa.create_engine(parsed, poolclass=StaticPool, connect_args={"check_same_thread": False},
                                  **_JSON_OPTIONS)
    else:
        path = Path(parsed.database).expanduser()
        open_mode = sqlite_open_mode(path)
        read_only = open_mode is not None
        if read_only:
            uri = f"file:{quote(str(path.resolve()))}?{open_mode}"
            log.info("%s is on a file system mlma cannot write: opened read-only (%s)", path, open_mode)
            engine = sa.create_engine(parsed.set(query=query), creator=lambda: sqlite3.connect(
                        uri, uri=True, timeout=busy, check_same_thread=False), **_JSON_OPTIONS)
        else:
            _create_private_file(path)
            engine = sa.create_engine(parsed.set(query=query), connect_args={"timeout": busy}, **_JSON_OPTIONS)
    engine.mlma_read_only = read_only
    if not memory:
        folder = Path(parsed.database).expanduser().resolve().parent

        @sa.event.listens_for(engine, "handle_error")
        def _on_error(context) -> None:
            # SQLite reports a full disk as "disk is full" or, when its shared-memory file cannot grow, as a
            # "disk I/O error": say which, with the path.
            error = context.original_exception
            text = str(error).lower()
            if isinstance(error, sqlite3.OperationalError) and ("disk is full" in text or "disk i/o" in text):
                if "disk is full" in text or _nearly_full(folder):
                    raise OSError(errno.ENOSPC, "No space left on device", str(folder)) from error

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:
        # Transactions are begun by the "begin" hook below, not implicitly by the driver.
        dbapi_connection.isolation_level = None
        # SQLite's lower() folds ASCII only, so a search (ILIKE, which SQLAlchemy writes with lower() on SQLite)
        # for "über" missed "Über" where PostgreSQL found it: Python's folding, as PostgreSQL's UTF-8 locale does.
        dbapi_connection.create_function("lower", 1, _lower, deterministic=True)
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        if not memory and not read_only:
            # Readers (a dashboard) keep reading while the agent writes.
            cursor.execute("PRAGMA journal_mode = WAL")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:
        # A write transaction takes the write lock up front, so two writers queue instead of failing
        # with "database is locked" when a read lock cannot be upgraded.
        if connection.get_execution_options().get("mlma_read") or read_only:
            connection.exec_driver_sql("BEGIN")
        else:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _lower(value):
    """SQLite's lower() with Unicode case folding (text only: SQLite's own passes other values through)."""
    return value.lower() if isinstance(value, str) else value


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < (1 << 20)
    except OSError:
        return False


# -- PostgreSQL --------------------------------------------------------------------------------------------
def _postgres_engine(parsed: sa.URL) -> sa.Engine:
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername != "postgresql+psycopg":
        raise ValueError(f"PostgreSQL is supported through psycopg 3: use 'postgresql+psycopg://...', got "
                         f"{parsed.drivername!r}")
    query, statement_timeout = with_defaults(parsed.query)
    parsed = parsed.set(query=query)
    engine = sa.create_engine(parsed, pool_pre_ping=True, **_JSON_OPTIONS)
    shown = parsed.set(query={}).render_as_string(hide_password=True)
    fired_limits = limits(query, statement_timeout)

    @sa.event.listens_for(engine, "handle_error")
    def _on_error(context) -> None:
        log_if_timeout(log, context.original_exception, fired_limits, shown)

    return engine


#: What the database driver raises when the store cannot serve a statement (busy, read-only, unreachable, a
#: deadlock, a timeout), named here so that callers outside the store need not import SQLAlchemy.
StoreOperationalError = sa.exc.OperationalError


def store_trouble(exc: sa.exc.OperationalError) -> tuple[str, dict[str, str]]:
    """What a person should know of a store that failed a request (``exc``, the driver's error), and when to try
    again (an HTTP ``Retry-After``): busy, read-only, a deadlock, or unreachable. The driver's own text is left
    out (it names the database's host and port).

    >>> store_trouble(sa.exc.OperationalError("UPDATE", {}, Exception("database is locked")))[0]
    'the store is busy: another process holds its write lock (a tick committing, a long write); try again'
    """
    text = str(exc.orig or exc).lower()
    if "database is locked" in text:
        return ("the store is busy: another process holds its write lock (a tick committing, a long write); try "
                "again"), {"Retry-After": "30"}
    if "readonly" in text or "read-only" in text:
        return "the store is read-only for this server (a read-only file or file system)", {}
    if "deadlock" in text:
        return "the store stopped this change to end a deadlock with another writer; try again", {"Retry-After": "5"}
    return "the store did not answer (unreachable, or a timeout); try again in a minute", {"Retry-After": "30"}


def unreachable_reason(exc: BaseException) -> str | None:
    """Why the database could not be reached, in one line, when ``exc`` is the driver's failure to reach or use
    it (an ``OperationalError``); None for any other error, which a caller should not retry.

    >>> unreachable_reason(ValueError("x")) is None
    True
    """
    if not isinstance(exc, sa.exc.OperationalError):
        return None
    return (str(exc.orig or exc).strip().splitlines() or [type(exc).__name__])[0]


def shown_url(url: str) -> str:
    """A store URL as it may be shown in logs and messages: the password hidden.

    >>> shown_url("postgresql+psycopg://mlma:secret@db/mlma")
    'postgresql+psycopg://mlma:***@db/mlma'
    """
    return sa.make_url(url).render_as_string(hide_password=True)
