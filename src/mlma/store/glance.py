"""A quick look at a store: what ``mlma status`` shows, read without SQLAlchemy, Alembic or pandas.

Opening a :class:`~mlma.store.Store` imports SQLAlchemy, and its frames pandas: most of a second before
the first query, for a command that reads a dozen rows. :func:`glance` reads the same facts directly through
the database's driver in one read-only transaction, so they are one consistent snapshot: :mod:`sqlite3` for a
SQLite file (opened as :mod:`mlma.store.engine` would open it, read-only where it cannot be written), psycopg
for PostgreSQL (connected with the engine's parameters and limits, :mod:`mlma.store.postgres_connect`; a
``REPEATABLE READ READ ONLY`` transaction, instants compared with the server's clock as the store does).

It answers only when it can answer exactly as the store would; otherwise it returns None and the caller
uses :class:`~mlma.store.Store`. That is the case for an in-memory store, a file that does not exist, a
URL only SQLAlchemy should read (:func:`~mlma.store.postgres_connect.plain_connection`), and a database
without mlma's schema or whose schema revision is not :data:`mlma.store.migrate.SCHEMA_REVISION` (the store's
own check then says what is wrong, in its words). A PostgreSQL server that cannot be reached or used is
reported as the store reports it: psycopg's ``OperationalError`` is raised, after the engine's log line when
one of its limits fired. ``tests/test_cli.py`` checks that ``mlma status`` prints the same through both paths.

Examples
--------
>>> import tempfile, os
>>> from mlma.store import Store
>>> path = os.path.join(tempfile.mkdtemp(), "mlma.db")
>>> Store.create(f"sqlite:///{path}").close()
>>> view = glance(f"sqlite:///{path}")
>>> view.n_streams, view.done_ticks, view.newest_ds, view.lock is None
(0, 0, None, True)
>>> glance("sqlite://") is None
True
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import logging
import sqlite3
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, unquote, urlsplit

from mlma.store.migrate import SCHEMA_REVISION, VERSION_TABLE
from mlma.store.postgres_connect import Connection, log_if_timeout, plain_connection
from mlma.store.sqlite_files import sqlite_open_mode

UTC = dt.timezone.utc
#: A PostgreSQL limit that fires is logged where the store's engine logs it, whichever path connected.
_ENGINE_LOG = logging.getLogger("mlma.store.engine")
#: The URL schemes of the standard SQLite driver (as :func:`mlma.store.engine.make_engine` accepts them).
_SQLITE_SCHEMES = ("sqlite", "sqlite+pysqlite")


@dataclass(frozen=True)
class TickRow:
    """One row of the ticks table, as ``mlma status`` shows it."""

    tick: int
    status: str
    attempts: int
    error: str | None
    end_ds: dt.datetime | None
    summary: dict | None


@dataclass(frozen=True)
class NextTick:
    """The tick after the last one done: its bounds, and the grid timestamp whose actual completes it.

    Each tick records the next one in its summary (``next_tick``), so that telling whether it is due needs
    no clock arithmetic (pandas), only the newest observation.

    >>> t = NextTick(5, "2025-01-06 00:00:00", "2025-01-07 00:00:00", "2025-01-06 23:00:00")
    >>> t.due(dt.datetime(2025, 1, 6, 23)), t.due(dt.datetime(2025, 1, 6, 22))
    (True, False)
    >>> t.not_complete(dt.datetime(2025, 1, 6, 22))
    'tick 5 (2025-01-06 00:00:00 to 2025-01-07 00:00:00) is not complete: the newest actual is at 2025-01-06 22:00:00'
    """

    tick: int
    start: str
    end: str
    complete_at: str

    def due(self, newest: dt.datetime) -> bool:
        return newest >= dt.datetime.fromisoformat(self.complete_at)

    def not_complete(self, newest: Any) -> str:
        return (f"tick {self.tick} ({self.start} to {self.end}) is not complete: the newest actual is at "
                f"{newest}")

    def to_summary(self) -> dict[str, Any]:
        return {"tick": self.tick, "start": self.start, "end": self.end, "complete_at": self.complete_at}

    @classmethod
    def from_summary(cls, summary: dict | None) -> NextTick | None:
        """The next tick recorded in a tick's summary; None for a summary written before it was recorded."""
        value = (summary or {}).get("next_tick")
        return None if not isinstance(value, dict) else cls(int(value["tick"]), str(value["start"]),
                                                             str(value["end"]), str(value["complete_at"]))


@dataclass(frozen=True)
class Glance:
    """What ``mlma status`` shows about a store (see :func:`glance`)."""

    read_only: bool
    n_streams: int
    n_ingests: int
    last_ingest_at: dt.datetime | None
    done_ticks: int
    last_done: TickRow | None
    last_unfinished: TickRow | None
    newest_ds: dt.datetime | None
    open_escalations: int
    lock: tuple[str, dt.datetime] | None
    saved_states: list[tuple[int, str | None]] = field(default_factory=list)
    #: The data time before which the store was pruned (``Store.kept_from``); None: it keeps everything.
    kept_from: dt.datetime | None = None
    #: Rows older than ``kept_from`` remain: a prune stopped part way (``Store.prune_unfinished``).
    prune_unfinished: bool = False


#: The member of a state's blob naming the parts saved apart from it (``mlma.store.state.StagedPart``), in
#: order: ``{"ids": [...], "sha256": [...]}``, so that the blob's own hash covers theirs.
PARTS_MEMBER = "store.parts.json"


def state_part_references(blob: bytes) -> tuple[list[int], list[str]]:
    """The ids and sha256 of the parts a state's blob names; two empty lists for a state saved whole. The
    blob's own hash is the caller's to check first.

    >>> state_part_references(b"not a zip archive")
    ([], [])
    """
    try:
        with zipfile.ZipFile(io.BytesIO(bytes(blob))) as archive:
            if PARTS_MEMBER not in archive.namelist():
                return [], []
            named = json.loads(archive.read(PARTS_MEMBER))
        return [int(i) for i in named["ids"]], [str(s) for s in named["sha256"]]
    except (zipfile.BadZipFile, ValueError, KeyError, TypeError):
        return [], []  # not this format, or damaged: the blob's own hash check says what is wrong


def parts_damage(blob: bytes, parts: dict[int, bytes]) -> str | None:
    """None when every part a state's blob names is among ``parts`` (id -> bytes) and its bytes match the
    SHA-256 the blob records for it (not the one stored beside the part), else why not.

    >>> parts_damage(b"a state saved whole", {}) is None
    True
    """
    for i, sha in zip(*state_part_references(blob)):
        if i not in parts:
            return f"its part {i} (state_parts) is missing"
        if hashlib.sha256(parts[i]).hexdigest() != sha:
            return f"its part {i} does not match the SHA-256 the state records for it"
    return None


def saved_states_damage(saved: list[tuple[int, str, bytes]],
                        read_parts: Callable[[list[int]], dict[int, bytes]]) -> list[tuple[int, str | None]]:
    """For each saved state ``(tick, sha256, blob)``: its tick, and None if its blob and the parts it names
    match the SHA-256 recorded for them, else why not. ``read_parts(ids)`` reads the bytes of the named parts
    (one call for all states); they are hashed, not decoded.

    >>> saved_states_damage([(3, hashlib.sha256(b"abc").hexdigest(), b"abc")], lambda ids: {})
    [(3, None)]
    """
    named = sorted({i for _, _, blob in saved for i in state_part_references(blob)[0]})
    parts = read_parts(named) if named else {}
    return [(int(tick), state_damage(blob, sha) or parts_damage(blob, parts)) for tick, sha, blob in saved]


def state_damage(blob: bytes, sha256: str) -> str | None:
    """None when a saved agent state's bytes match the SHA-256 recorded with them, else why not.

    >>> state_damage(b"abc", hashlib.sha256(b"abc").hexdigest()) is None
    True
    >>> state_damage(b"abd", hashlib.sha256(b"abc").hexdigest())
    'its bytes do not match the SHA-256 recorded with them'
    """
    if hashlib.sha256(bytes(blob)).hexdigest() == sha256:
        return None
    return "its bytes do not match the SHA-256 recorded with them"


def sqlite_file(url: str) -> tuple[Path, float | None] | None:
    """The file and busy timeout of a plain SQLite file URL, or None for any other URL.

    >>> sqlite_file("sqlite:///data/mlma.db?timeout=5")
    (PosixPath('data/mlma.db'), 5.0)
    >>> sqlite_file("sqlite://") is None, sqlite_file("postgresql://h/db") is None
    (True, True)
    """
    parts = urlsplit(url)
    if parts.scheme not in _SQLITE_SCHEMES or parts.netloc or not parts.path.startswith("/"):
        return None
    database = unquote(parts.path[1:])
    if database in ("", ":memory:"):
        return None
    query = dict(parse_qsl(parts.query))
    if set(query) - {"timeout"}:
        return None  # options only the full engine understands
    try:
        timeout = float(query["timeout"]) if "timeout" in query else None
    except ValueError:
        return None  # the store's own open gives the clear error
    return Path(database).expanduser(), timeout


def glance(url: str) -> Glance | None:
    """What ``mlma status`` shows about the store at ``url``, or None when only :class:`Store` can say it
    (see the module docstring)."""
    target = sqlite_file(url)
    if target is not None:
        return _glance_sqlite(*target)
    connection = plain_connection(url)
    return None if connection is None else _glance_postgres(connection)


def _glance_sqlite(path: Path, timeout: float | None) -> Glance | None:
    if not path.is_file():
        return None
    mode = sqlite_open_mode(path)
    uri = f"file:{quote(str(path.resolve()))}" + (f"?{mode}" if mode else "")
    connection = sqlite3.connect(uri, uri=True, timeout=60.0 if timeout is None else timeout,
                                 isolation_level=None)
    try:
        connection.execute("BEGIN")  # one snapshot for every read below
        try:
            return _read(connection, read_only=mode is not None, now=dt.datetime.now(UTC))
        finally:
            connection.execute("COMMIT")
    except sqlite3.DatabaseError:
        return None  # not a store this path understands: the store's open says why
    finally:
        connection.close()


def _glance_postgres(target: Connection) -> Glance | None:
    import psycopg  # here, not above: a SQLite store's status does not pay its import (0.15 s)

    try:
        with psycopg.connect(autocommit=True, **target.kwargs) as connection:
            connection.read_only = True
            connection.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # one snapshot for all reads
            with connection.transaction():
                # The server's clock, as the store's (agents and this command may run on other hosts).
                now, = connection.execute("SELECT clock_timestamp()").fetchone()
                return _read(connection, read_only=False, now=now.astimezone(UTC))
    except psycopg.OperationalError as exc:
        # Unreachable, timed out, refused: what the store would raise, logged as its engine logs it.
        log_if_timeout(_ENGINE_LOG, exc, target.limits, target.shown)
        raise
    except psycopg.Error:
        return None  # no mlma schema, no permission, ...: the store's open says why


def _read(db: Any, *, read_only: bool, now: dt.datetime) -> Glance | None:
    """The facts, from an open read transaction of ``db`` (a :mod:`sqlite3` or psycopg connection: the SQL
    below is the same on both, and the values are converted by :func:`_timestamp` and :func:`_instant`)."""
    revision = db.execute(f"SELECT version_num FROM {VERSION_TABLE}").fetchall()
    if revision != [(SCHEMA_REVISION,)]:
        return None
    ingests, last_ingest = db.execute("SELECT count(*), max(at) FROM ingests").fetchone()
    done, = db.execute("SELECT count(*) FROM ticks WHERE status = 'done'").fetchone()
    last_done = _tick_row(db, "status = 'done'")
    # A tick before the last done one will not run again (the start-up tick moves as data arrives).
    unfinished = _tick_row(db, "status <> 'done' AND tick > (SELECT coalesce(max(tick), -1) FROM ticks "
                               "WHERE status = 'done')")
    newest, = db.execute("SELECT max(ds) FROM observations").fetchone()
    kept = db.execute("SELECT kept_from FROM retention").fetchone()
    kept_from = None if kept is None else _timestamp(kept[0])
    # As Store.prune_unfinished: the oldest row of each pruned table, one step down its ds index.
    oldest = [db.execute(f"SELECT min(ds) FROM {table}").fetchone()[0]
              for table in ("observations", "driver_values", "observation_revisions")] if kept_from else []
    rows_left = any(value is not None and _timestamp(value) < kept_from for value in oldest)
    escalations = db.execute("SELECT status, silenced_until FROM escalations "
                             "WHERE status IN ('open', 'silenced')").fetchall()
    # A silenced escalation whose silence has passed counts as open again (as Store.escalations says).
    open_now = sum(1 for status, until in escalations
                   if status == "open" or (until is not None and _instant(until) <= now))
    lock = db.execute("SELECT holder, expires_at FROM locks WHERE name = 'tick'").fetchone()
    lock = None if lock is None or _instant(lock[1]) <= now else (lock[0], _instant(lock[1]))
    saved = db.execute("SELECT tick, sha256, blob FROM agent_state ORDER BY tick DESC").fetchall()
    # The ids are integers parsed from the states' own blobs, so they can stand in the statement.
    states = saved_states_damage(saved, lambda ids: {int(i): bytes(blob) for i, blob in db.execute(
        f"SELECT id, blob FROM state_parts WHERE id IN ({', '.join(str(int(i)) for i in ids)})")})
    return Glance(read_only=read_only, n_streams=db.execute("SELECT count(*) FROM streams").fetchone()[0],
                  n_ingests=ingests, last_ingest_at=_instant(last_ingest), done_ticks=done, last_done=last_done,
                  last_unfinished=unfinished, newest_ds=_timestamp(newest), open_escalations=open_now, lock=lock,
                  saved_states=states, kept_from=kept_from, prune_unfinished=rows_left)


def _tick_row(db: Any, where: str) -> TickRow | None:
    # The summary as JSON text on both databases (JSONB on PostgreSQL), parsed as the store parses it.
    row = db.execute(f"SELECT tick, status, attempts, error, end_ds, CAST(summary AS TEXT) FROM ticks "
                     f"WHERE {where} ORDER BY tick DESC LIMIT 1").fetchone()
    if row is None:
        return None
    tick, status, attempts, error, end_ds, summary = row
    return TickRow(int(tick), status, int(attempts), error, _timestamp(end_ds),
                   None if summary is None else _json(summary))


def _json(text: str) -> Any:
    # Tokens an older mlma may have written (NaN, Infinity) read as None, as mlma.store.serial.loads does.
    return json.loads(text, parse_constant=lambda _: None)


def _timestamp(value: str | dt.datetime | None) -> dt.datetime | None:
    """A data timestamp (naive): as SQLAlchemy's SQLite dialect stores it, or as psycopg reads it."""
    if value is None or isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(value)


def _instant(value: str | dt.datetime | None) -> dt.datetime | None:
    """A wall-clock instant as an aware UTC datetime: stored in UTC without an offset on SQLite, read in the
    session's time zone from PostgreSQL."""
    if value is None:
        return None
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
