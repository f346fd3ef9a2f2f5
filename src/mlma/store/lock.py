"""A lease-based lock in the database itself, so that two agents on one store never both run a tick.

A lock is one row of ``locks``: who holds it, a random token naming this particular lease, and when the
lease expires. Taking it is one atomic statement on both backends::

    INSERT INTO locks ... ON CONFLICT (name) DO UPDATE SET ... WHERE locks.expires_at <= now RETURNING token

so it succeeds only when there is no row or the row's lease has expired (a crashed holder). SQLite runs it
under the database's write lock (``BEGIN IMMEDIATE``), PostgreSQL under the row lock of the conflicting
row, so the guarantee holds across processes and machines, not only threads. Time is the database
server's clock on PostgreSQL, so agents on hosts with skewed clocks agree on expiry.

A live holder extends its lease with heartbeats (:class:`Lease` does so from a background thread by
default). Commits made under the lease (:meth:`mlma.store.Store.write_tick` with ``lease=``) first check,
in the same transaction and holding the lock row, that the token is still the holder's: an agent that
stalled past its lease and was taken over cannot commit a stale tick (a *fencing* check).
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
import threading
from typing import TYPE_CHECKING

import sqlalchemy as sa

from mlma.lock_holder import holder_is_dead
from mlma.store import schema as S
from mlma.store.errors import LockHeld, LockLost

if TYPE_CHECKING:
    from mlma.store.store import Store

log = logging.getLogger(__name__)

#: A held lease is renewed this many times per ``ttl`` (the heartbeat's default interval is ``ttl`` over it).
RENEWALS_PER_TTL = 3


def one_writer_at_a_time(conn: sa.Connection, what: str) -> None:
    """Make the rest of ``conn``'s transaction wait until no other transaction of this schema that called this
    with ``what`` is running, so that a read and the write it decides (is this period marked already? this name
    taken? this stream's next version number?) are not interleaved with another's.

    PostgreSQL: a transaction-scoped advisory lock, released at commit or rollback; its default isolation lets
    two transactions read before either writes. SQLite's write transactions (``BEGIN IMMEDIATE``) already run
    one at a time: nothing to do.
    """
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext(:what || '.' || current_schema()))"),
                     {"what": f"mlma.{what}"})


def renewed_lately(heartbeat_at: dt.datetime, expires_at: dt.datetime, now: dt.datetime) -> bool:
    """Whether a lease was renewed within two of its heartbeat intervals before ``now``: its holder looks alive
    (one that died stops renewing; ``mlma unlock`` breaks only such a lock without ``--force``).

    >>> t = dt.datetime(2025, 1, 1, 12, 0)
    >>> renewed_lately(t, t + dt.timedelta(minutes=60), t + dt.timedelta(minutes=39))
    True
    >>> renewed_lately(t, t + dt.timedelta(minutes=60), t + dt.timedelta(minutes=41))
    False
    """
    return now - heartbeat_at < (expires_at - heartbeat_at) * 2 / RENEWALS_PER_TTL


class Lease:
    """A held lock. Returned by :meth:`mlma.store.Store.acquire_lock` and ``Store.tick_lock``.

    Attributes
    ----------
    name, holder, token
        The lock, who holds it, and this lease's random token.
    ttl
        Seconds a lease lives after each heartbeat.
    expires_at
        When the lease expires unless renewed (database clock, UTC).
    lost
        Set when a heartbeat found the lease taken over or broken.
    """

    def __init__(self, store: Store, name: str, holder: str, token: str, ttl: float,
                 acquired_at: dt.datetime, expires_at: dt.datetime) -> None:
        self.store = store
        self.name = name
        self.holder = holder
        self.token = token
        self.ttl = ttl
        self.acquired_at = acquired_at
        self.expires_at = expires_at
        self.lost = False
        self.released = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def heartbeat(self) -> dt.datetime:
        """Extend the lease by ``ttl`` from now; raises :class:`LockLost` if it is no longer ours."""
        if self.released:
            raise LockLost(f"lease on lock {self.name!r} was released")
        with self.store._write() as conn:
            now = self.store._now(conn)
            expires = now + dt.timedelta(seconds=self.ttl)
            done = conn.execute(
                sa.update(S.locks).where(S.locks.c.name == self.name, S.locks.c.token == self.token)
                .values(heartbeat_at=now, expires_at=expires)).rowcount
        if not done:
            self.lost = True
            raise LockLost(f"lock {self.name!r} is no longer held by {self.holder!r}: the lease expired and was "
                           "taken over, or a person broke it; stop and do not commit")
        self.expires_at = expires
        return expires

    def check(self) -> None:
        """Raise :class:`LockLost` if a heartbeat already found the lease lost."""
        if self.lost:
            raise LockLost(f"lock {self.name!r} was lost by {self.holder!r} (found by a heartbeat)")

    def release(self) -> None:
        """Give the lock up (no error if it was lost meanwhile)."""
        self._stop_heartbeats()
        if self.released:
            return
        with self.store._write() as conn:
            conn.execute(sa.delete(S.locks).where(S.locks.c.name == self.name, S.locks.c.token == self.token))
        self.released = True

    # -- heartbeats in the background ---------------------------------------------------------------------
    def start_heartbeats(self, interval: float | None = None) -> None:
        """Renew the lease every ``interval`` seconds (default ``ttl / RENEWALS_PER_TTL``) from a daemon thread."""
        if self._thread is not None:
            return
        interval = self.ttl / RENEWALS_PER_TTL if interval is None else interval
        self._thread = threading.Thread(target=self._beat, args=(interval,), daemon=True,
                                        name=f"mlma-lock-{self.name}")
        self._thread.start()

    def _beat(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.heartbeat()
            except LockLost:
                log.error("lock %r lost by %r", self.name, self.holder)
                return
            except Exception:  # noqa: BLE001 - a failed beat is retried; expiry is the safety net
                log.exception("heartbeat of lock %r failed; retrying", self.name)

    def _stop_heartbeats(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def __repr__(self) -> str:
        return f"Lease(name={self.name!r}, holder={self.holder!r}, expires_at={self.expires_at.isoformat()})"


def acquire(store: Store, name: str, holder: str, ttl: float) -> Lease:
    """Take lock ``name`` for ``holder`` for ``ttl`` seconds, or raise :class:`LockHeld`."""
    if not isinstance(name, str) or not 0 < len(name) <= 64:
        raise ValueError(f"name must be a non-empty string of at most 64 characters, got {name!r}")
    if not isinstance(holder, str) or not holder.strip():
        raise ValueError(f"holder must be a non-empty string naming the agent, got {holder!r}")
    if not ttl > 0:
        raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
    token = secrets.token_hex(16)
    try:
        return _take(store, name, holder, token, float(ttl))
    except sa.exc.OperationalError as exc:
        # PostgreSQL: the holder is committing a tick (its fence holds the row) and the wait ran out: the lock
        # is held, and the caller hears so now rather than when that commit ends.
        if getattr(getattr(exc, "orig", None), "sqlstate", None) != "55P03":
            raise
    with store._read() as conn:
        held = _held(conn, name)
    if held is None:  # released meanwhile: free now
        return _take(store, name, holder, token, float(ttl))
    raise held


#: How long taking the lock waits for a row another agent holds while it commits (PostgreSQL), in ms.
ACQUIRE_WAIT_MS = 2000


def _take(store: Store, name: str, holder: str, token: str, ttl: float) -> Lease:
    with store._write() as conn:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = {ACQUIRE_WAIT_MS}")
        now = store._now(conn)
        expires = now + dt.timedelta(seconds=float(ttl))
        insert = store._insert(S.locks).values(name=name, holder=holder, token=token, acquired_at=now,
                                               heartbeat_at=now, expires_at=expires)
        excluded = insert.excluded
        statement = insert.on_conflict_do_update(
            index_elements=[S.locks.c.name],
            set_={"holder": excluded.holder, "token": excluded.token, "acquired_at": excluded.acquired_at,
                  "heartbeat_at": excluded.heartbeat_at, "expires_at": excluded.expires_at},
            where=S.locks.c.expires_at <= now,
        ).returning(S.locks.c.token)
        taken = conn.execute(statement).scalar()
        if taken != token:
            raise _held(conn, name)
    return Lease(store, name, holder, token, ttl, now, expires)


def _held(conn: sa.Connection, name: str) -> LockHeld | None:
    """The :class:`LockHeld` error naming lock ``name``'s holder (None: nobody holds it)."""
    row = conn.execute(sa.select(S.locks).where(S.locks.c.name == name)).first()
    return None if row is None else LockHeld(name, row.holder, row.acquired_at, row.heartbeat_at, row.expires_at)


def live_holder(conn: sa.Connection, name: str, now: dt.datetime) -> str | None:
    """Who holds lock ``name`` at ``now`` (the transaction's instant), or None when nobody does: the lock is free,
    its lease ran out, or its holder is an agent process on this host that no longer runs (:func:`holder_is_dead`).
    The one rule by which a holder is gone: ``mlma status`` says so, the next tick here takes such a lock over, and
    a tick it was running no longer counts as running (its taken-up actions can be cancelled)."""
    holder = conn.execute(sa.select(S.locks.c.holder).where(S.locks.c.name == name, S.locks.c.expires_at > now)
                          ).scalar()
    return None if holder is None or holder_is_dead(holder) else holder


def fence(conn: sa.Connection, lease: Lease) -> None:
    """Inside a write transaction: hold the lock row and make sure it is still ``lease``'s, or raise."""
    lease.check()
    query = sa.select(S.locks.c.token, S.locks.c.holder).where(S.locks.c.name == lease.name)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    row = conn.execute(query).first()
    if row is None or row.token != lease.token:
        lease.lost = True
        now_holder = "nobody" if row is None else repr(row.holder)
        raise LockLost(f"lock {lease.name!r} is no longer held by {lease.holder!r} (now: {now_holder}); "
                       "nothing of this transaction was committed")
