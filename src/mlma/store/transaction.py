"""One write transaction that callers outside the store can span: a change and its audit entry commit together.

A person's action (:mod:`mlma.control`), a move of the registry's champion alias or a new API token is a
change *and* the audit entry that says who made it and why; neither may be there without the other.
:meth:`mlma.store.Store.transaction` opens a write transaction and yields a :class:`Transaction`: a handle
with the writes such actions need, each a named operation on the store's tables (no SQL leaves the store).
Everything done through the handle commits when the ``with`` block ends, or is rolled back if it raises;
the handle refuses to be used afterwards.

Examples
--------
>>> from mlma.store import Store
>>> store = Store.create("sqlite://")
>>> ids = store.stream_ids(["a", "b"])
>>> with store.transaction() as tx:
...     changed = tx.merge_overrides({int(i): {"needs_approval": True} for i in ids})
...     entry = tx.audit("user:ana", "require-approval", "streams:2", {"streams": 2}, streams=changed)
>>> changed, store.audit_log(stream="b")["action"].tolist(), store.stream_overrides()[0].needs_approval
([0, 1], ['require-approval'], True)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import sqlalchemy as sa

from mlma.store import bulk, lock
from mlma.store import schema as S
from mlma.store import tokens
from mlma.store.overrides import StreamOverrides
from mlma.store.records import ChampionMove, NewVersion, check_actor, check_reason
from mlma.store.store import MovesMade, move_champions, record_versions
from mlma.store.tokens import TokenInfo

if TYPE_CHECKING:
    from mlma.store.store import Store


class TransactionClosed(RuntimeError):
    """A :class:`Transaction` was used after its ``with`` block ended."""


class Transaction:
    """The writes of one transaction; built by :meth:`mlma.store.Store.transaction` only.

    ``now`` is the transaction's instant (the server's clock on PostgreSQL), the time every row it writes
    carries.
    """

    def __init__(self, store: Store, conn: sa.Connection) -> None:
        self._store = store
        self._conn: sa.Connection | None = conn
        self.now: dt.datetime = store._now(conn)

    def _connection(self) -> sa.Connection:
        if self._conn is None:
            raise TransactionClosed("this transaction has ended; open a new one with store.transaction()")
        return self._conn

    def _close(self) -> None:
        self._conn = None

    # -- the audit log ------------------------------------------------------------------------------------
    def audit(self, actor: str, action: str, target: str | None = None, params: Mapping[str, Any] | None = None,
              reason: str | None = None, *, streams: Sequence[int] | None = None) -> int:
        """Append an audit entry (see :meth:`mlma.store.Store.add_audit`); returns its id."""
        return self._store._audit(self._connection(), self.now, actor, action, target, params, reason,
                                  streams=streams)

    # -- per-stream settings and queued actions -----------------------------------------------------------
    def merge_overrides(self, changes: Mapping[int, Mapping[str, Any] | None]) -> list[int]:
        """Merge overrides into streams by id (a key set to None is removed; a stream's None clears all);
        ``KeyError`` for an unknown id, ``ValueError`` naming a known key whose value is of the wrong kind
        (the keys' meaning is :class:`~mlma.store.overrides.StreamOverrides`'). Returns the ids whose overrides
        changed (a stream already so is left as it is)."""
        for change in changes.values():
            StreamOverrides.parse({k: v for k, v in (change or {}).items() if v is not None})
        return self._store._merge_json("overrides", changes, conn=self._connection())

    def add_abnormal_periods(self, stream_ids: Sequence[int | None], start: dt.datetime, end: dt.datetime, *,
                             by: str, reason: str | None = None) -> list[int | None]:
        """Mark ``start <= ds < end`` abnormal for each stream id (None: the whole fleet) that has no active
        period of those bounds yet (a request sent twice marked each stream twice, and the fleet's count of
        periods doubled; two at once on PostgreSQL could both find none: they take turns); returns the ids marked
        now."""
        check_actor(by)
        a = S.abnormal_periods
        lock.one_writer_at_a_time(self._connection(), "abnormal_periods")
        marked = set(self._connection().execute(
            sa.select(a.c.stream_id).where(a.c.start_ds == start, a.c.end_ds == end, a.c.cancelled_at.is_(None))
        ).scalars())
        new = list(dict.fromkeys(None if i is None else int(i) for i in stream_ids if i not in marked))
        if not new:
            return []
        ids = np.array(new, dtype=object)
        self._insert_made("abnormal_periods", {"stream_id": "int?", "start_ds": "ds", "end_ds": "ds"},
                          {"stream_id": ids, "start_ds": [start] * len(ids), "end_ds": [end] * len(ids)}, by, reason)
        return new

    def cancel_abnormal_periods(self, period_ids: Sequence[int]) -> list[int]:
        """Cancel the active abnormal periods among ``period_ids``; returns the ids of those that were active."""
        a = S.abnormal_periods
        return self._update(a, period_ids, a.c.cancelled_at.is_(None), cancelled_at=self.now)

    def queue_actions(self, stream_ids: Sequence[int], kind: str, params: Mapping[str, Any], *, by: str,
                      reason: str | None = None) -> int:
        """Queue one ``pending`` action of ``kind`` for each stream id (the next tick carries them out)."""
        if kind not in S.STREAM_ACTION_KINDS:
            raise ValueError(f"kind must be one of {S.STREAM_ACTION_KINDS}, got {kind!r}")
        ids = np.fromiter((int(i) for i in stream_ids), dtype=np.int64)  # any iterable: a list, a set, dict keys
        return self._insert_made("stream_actions", {"stream_id": "int", "kind": "text", "params": "json",
                                                    "status": "text"},
                                 {"stream_id": ids, "kind": [kind] * len(ids), "params": [dict(params)] * len(ids),
                                  "status": ["pending"] * len(ids)}, by, reason)

    def actions_taken_up(self, action_ids: Sequence[int]) -> dict[int, int]:
        """The pending actions among ``action_ids`` that a running tick took up (id -> tick): it carries them
        out when it commits, so they can no longer be cancelled. Their rows stay locked until this transaction
        ends, so that no tick takes up one of the others meanwhile (PostgreSQL; SQLite's write transaction
        holds the whole database).

        A tick marked ``running`` runs only while its agent holds the tick lock (:func:`mlma.store.lock.live_holder`:
        not when the lease ran out, nor when that agent's process on this host no longer runs): one killed
        mid-tick carries nothing out, and its next attempt takes up only the actions still pending. Should an
        agent taken so only have stalled, its commit finds the actions cancelled and is refused
        (:meth:`mlma.store.Store.write_tick`)."""
        t, ticks = S.stream_actions, S.ticks
        conn = self._connection()
        rows = [row for chunk in bulk.id_chunks(sorted(set(int(i) for i in action_ids)))
                for row in conn.execute(sa.select(t.c.id, t.c.applied_tick)
                                        .where(t.c.id.in_(chunk), t.c.status == "pending")
                                        .order_by(t.c.id).with_for_update())]
        taken = {int(r.id): int(r.applied_tick) for r in rows if r.applied_tick is not None}
        if not taken:
            return {}
        holder = lock.live_holder(conn, "tick", self.now)
        if holder is None:
            return {}
        # Only the agent that began a tick (begin_tick records it) carries out what it took up: another holding
        # the lock now (about to run that tick again, or collecting artifacts) is not running that attempt.
        running = {int(r.tick) for r in conn.execute(
            sa.select(ticks.c.tick, ticks.c.agent_id).where(ticks.c.tick.in_(set(taken.values())),
                                                            ticks.c.status == "running"))
            if r.agent_id is None or r.agent_id == holder}
        return {i: k for i, k in taken.items() if k in running}

    def unknown_ids(self, table: str, ids: Sequence[int]) -> list[int]:
        """The ids among ``ids`` (in their order) that no row of ``table`` has: ``"stream_actions"`` or
        ``"abnormal_periods"``, whose rows a person cancels by id."""
        if table not in ("stream_actions", "abnormal_periods"):
            raise ValueError(f"table must be 'stream_actions' or 'abnormal_periods', got {table!r}")
        t, conn = S.metadata.tables[table], self._connection()
        known = {int(i) for chunk in bulk.id_chunks(sorted(set(int(i) for i in ids)))
                 for i in conn.execute(sa.select(t.c.id).where(t.c.id.in_(chunk))).scalars()}
        return [int(i) for i in ids if int(i) not in known]

    def streams_of(self, table: str, ids: Sequence[int]) -> tuple[list[int], bool]:
        """The streams the rows ``ids`` of ``table`` (``"stream_actions"`` or ``"abnormal_periods"``) are about,
        and whether one of them is about the whole fleet (a fleet-wide abnormal period): what an action on those
        rows touched, for its audit entry."""
        if table not in ("stream_actions", "abnormal_periods"):
            raise ValueError(f"table must be 'stream_actions' or 'abnormal_periods', got {table!r}")
        t, conn = S.metadata.tables[table], self._connection()
        found = [s for chunk in bulk.id_chunks(sorted(set(int(i) for i in ids)))
                 for s in conn.execute(sa.select(t.c.stream_id).where(t.c.id.in_(chunk))).scalars()]
        return sorted({int(s) for s in found if s is not None}), any(s is None for s in found)

    def cancel_actions(self, action_ids: Sequence[int]) -> list[int]:
        """Cancel the pending actions among ``action_ids``; returns the ids of those that were pending (see
        :meth:`actions_taken_up` for those a running tick is carrying out). One a tick took up that is no longer
        running is no longer its (``applied_tick`` cleared)."""
        t = S.stream_actions
        return self._update(t, action_ids, t.c.status == "pending", status="cancelled", applied_at=self.now,
                            applied_tick=None)

    def _made_by(self, by: str, reason: str | None) -> dict[str, Any]:
        """Who added a row, when and why: the columns every row a person or the agent adds carries."""
        check_actor(by)
        return {"created_at": self.now, "created_by": by, "reason": check_reason(reason)}

    def _insert_made(self, table: str, columns: Mapping[str, str], data: Mapping[str, Any], by: str,
                     reason: str | None) -> int:
        """Insert rows a person adds (``data``'s columns of ``columns``' kinds, :func:`mlma.store.bulk.insert_rows`)
        with who added them, when and why; returns how many. COPY on PostgreSQL: a holiday marked on a city's
        100,000 zones, or their forced re-trainings, is one statement, not 100,000 inserts."""
        n = len(next(iter(data.values())))
        made = self._made_by(by, reason)
        return bulk.insert_rows(self._connection(), table,
                                {**columns, "created_at": "utc", "created_by": "str", "reason": "str"},
                                {**data, **{key: [value] * n for key, value in made.items()}})

    def _update(self, table: sa.Table, ids: Sequence[int], still: sa.ColumnElement[bool], **values: Any) -> list[int]:
        """Set ``values`` on the rows among ``ids`` that ``still`` holds for; returns their ids, in order."""
        conn = self._connection()
        return sorted(int(i) for chunk in bulk.id_chunks(ids)
                      for i in conn.execute(sa.update(table).where(table.c.id.in_(chunk), still).values(**values)
                                            .returning(table.c.id)).scalars())

    # -- the model registry's rows -----------------------------------------------------------------------
    def record_versions(self, items: Sequence[NewVersion], tick: int | None = None) -> np.ndarray:
        """Record model versions, numbering each stream's on from its latest; returns the numbers."""
        return record_versions(self._store, self._connection(), items, self.now, tick)

    def move_champions(self, moves: Sequence[ChampionMove], tick: int | None = None) -> MovesMade:
        """Point streams' champion alias at versions, appending to the history; users' moves are audited;
        returns the moves made and their audit entries. A move whose
        :attr:`~mlma.store.ChampionMove.if_serving` no longer holds raises :class:`~mlma.store.ChampionMoved`
        (nothing moved); one whose version serves already is left out."""
        return move_champions(self._store, self._connection(), moves, self.now, tick)

    # -- API tokens ----------------------------------------------------------------------------------------
    def add_token(self, name: str, role: str, token_sha256: str, *, by: str) -> TokenInfo:
        """Record a new API token by its sha256; ``ValueError`` if a token has that name already."""
        check_actor(by)
        if role not in S.ROLES:
            raise ValueError(f"role must be one of {', '.join(S.ROLES)}, got {role!r}")
        return tokens.insert(self._connection(), self.now, name, role, token_sha256, by)

    def revoke_token(self, name: str, *, last_admin: bool = False) -> int | None:
        """Revoke the active token called ``name`` (its sessions end with it); its id, or None if none. The last
        active admin token only with ``last_admin`` (:class:`~mlma.store.tokens.LastAdminError`)."""
        return tokens.revoke(self._connection(), self.now, name, last_admin=last_admin)
