"""Fleet-level counts of a store, for ``/metrics``: each one statement aggregated in the database.

Only the small tables are read (``ticks`` with their ``summary``, ``escalations``, ``audit_log``,
``alert_notifications``, ``stream_actions``, ``streams``' row count, ``ingests``, ``locks``), never the
per-stream ones, so reading them costs the same at 100 or 100,000 streams. All counts come from one read
transaction: one consistent moment. :mod:`mlma.metrics` turns them into Prometheus series.

Examples
--------
>>> from mlma.store import Store, TickRecord, TickSummary
>>> store = Store.create("sqlite://")
>>> _ = store.write_tick(TickRecord(0, summary=TickSummary(retrains=2)))
>>> counts = read_counts(store, summary_keys=["retrains"])
>>> counts.ticks, counts.summary_sums, counts.last_done.tick, counts.tick_lock_held
({'done': (1, 1)}, {'retrains': 2.0}, 0, False)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from mlma.store import schema as S
from mlma.store.store import Store


@dataclass(frozen=True)
class LastTick:
    """The last completed tick: its number, when it started and finished (UTC) and its summary."""

    tick: int
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
    summary: Any


@dataclass(frozen=True)
class StoreCounts:
    """What :func:`read_counts` returns.

    Attributes
    ----------
    ticks
        Tick status -> (ticks, attempts summed over them).
    last_done
        The last completed tick, or None.
    summary_sums
        For each asked summary key: its sum over completed ticks (a missing or non-numeric value counts 0).
    escalations
        (status, kind, severity, count); a silence that has run out counts as ``open``.
    audit_actions
        (action, ``agent`` or ``user``, count) over the audit log.
    notifications
        (receiver, status, count) over the alert deliveries.
    pending_actions
        (kind, count) of the stream actions waiting for the next tick.
    streams
        How many streams the store knows.
    last_ingest
        When data was last ingested (UTC), or None.
    tick_lock_held
        Whether an agent holds an unexpired tick lock.
    """

    ticks: dict[str, tuple[int, int]]
    last_done: LastTick | None
    summary_sums: dict[str, float]
    escalations: list[tuple[str, str, int, int]]
    audit_actions: list[tuple[str, str, int]]
    notifications: list[tuple[str, str, int]]
    pending_actions: list[tuple[str, int]]
    streams: int
    last_ingest: dt.datetime | None
    tick_lock_held: bool


def read_counts(store: Store, *, summary_keys: Sequence[str]) -> StoreCounts:
    """The store's fleet-level counts at one moment (see :class:`StoreCounts`)."""
    with store._read() as conn:
        now = store._now(conn)
        last = _last_done_tick(conn)
        return StoreCounts(
            ticks=_tick_counts(conn),
            last_done=None if last is None else LastTick(int(last.tick), last.started_at, last.finished_at,
                                                         last.summary),
            summary_sums=_summary_sums(conn, list(summary_keys)),
            escalations=_escalation_counts(conn, now),
            audit_actions=_action_counts(conn),
            notifications=[(r, s, int(n)) for r, s, n in conn.execute(
                sa.select(S.alert_notifications.c.receiver, S.alert_notifications.c.status, sa.func.count())
                .group_by(S.alert_notifications.c.receiver, S.alert_notifications.c.status)).all()],
            pending_actions=[(k, int(n)) for k, n in conn.execute(
                sa.select(S.stream_actions.c.kind, sa.func.count()).where(S.stream_actions.c.status == "pending")
                .group_by(S.stream_actions.c.kind)).all()],
            streams=int(conn.execute(sa.select(sa.func.count()).select_from(S.streams)).scalar_one()),
            last_ingest=conn.execute(sa.select(sa.func.max(S.ingests.c.at))).scalar(),
            tick_lock_held=conn.execute(sa.select(sa.func.count()).select_from(S.locks)
                                        .where(S.locks.c.name == "tick", S.locks.c.expires_at > now)).scalar_one() > 0,
        )


def _tick_counts(conn: sa.Connection) -> dict[str, tuple[int, int]]:
    t = S.ticks
    rows = conn.execute(sa.select(t.c.status, sa.func.count(), sa.func.coalesce(sa.func.sum(t.c.attempts), 0))
                        .group_by(t.c.status)).all()
    return {r[0]: (int(r[1]), int(r[2])) for r in rows}


def _last_done_tick(conn: sa.Connection):
    t = S.ticks
    return conn.execute(sa.select(t.c.tick, t.c.started_at, t.c.finished_at, t.c.summary)
                        .where(t.c.status == "done").order_by(t.c.tick.desc()).limit(1)).first()


def _summary_sums(conn: sa.Connection, keys: list[str]) -> dict[str, float]:
    if not keys:
        return {}
    t = S.ticks
    columns = [sa.func.coalesce(sa.func.sum(t.c.summary[key].as_float()), 0.0).label(key) for key in keys]
    row = conn.execute(sa.select(*columns).where(t.c.status == "done")).one()
    return {key: float(row._mapping[key]) for key in keys}


def _escalation_counts(conn: sa.Connection, now: dt.datetime) -> list[tuple[str, str, int, int]]:
    e = S.escalations
    # A silence that has run out counts as open again, as Store.escalations() shows it.
    status = sa.case((sa.and_(e.c.status == "silenced", e.c.silenced_until.is_not(None), e.c.silenced_until <= now),
                      sa.literal("open")), else_=e.c.status).label("status")
    rows = conn.execute(sa.select(status, e.c.kind, e.c.severity, sa.func.count())
                        .group_by(status, e.c.kind, e.c.severity)).all()
    return [(r[0], r[1], int(r[2]), int(r[3])) for r in rows]


def _action_counts(conn: sa.Connection) -> list[tuple[str, str, int]]:
    a = S.audit_log
    actor = sa.case((a.c.actor == "agent", sa.literal("agent")), else_=sa.literal("user")).label("actor")
    rows = conn.execute(sa.select(a.c.action, actor, sa.func.count()).group_by(a.c.action, actor)).all()
    return [(r[0], r[1], int(r[2])) for r in rows]
