"""What the webhook notifier reads and writes: the escalations that want attention and the delivery log
(``alert_notifications``).

:class:`mlma.alerts.Notifier` decides what to send and sends it; :class:`NotificationLog` is its access to
the store. An escalation wants attention while it is ``open``, or ``silenced`` until a time that has passed.

Before a notification is posted, the process claims its group (:meth:`NotificationLog.claim_groups`): a lease
on a row of the store's ``locks`` table, named after the receiver and the group key and listing the escalation
ids it sends, taken in one atomic statement (an upsert, as :mod:`mlma.store.lock` takes a lock), for many groups
of a receiver at once, in the transaction that then reads their latest sent notifications. A second process
that plans the same group finds the claim and does not post it too; a claim whose process died expires with its
lease; a claim of the same holder (left by a delivery of its own whose outcome could not be recorded) is taken
over at once. The outcome is recorded and the claim released in one transaction (:meth:`NotificationLog.record`
with ``release``).

Examples
--------
>>> from mlma.escalations import Escalation
>>> from mlma.store import Store
>>> store = Store.create("sqlite://")
>>> _ = store.add_escalations([Escalation(stream=-1, tick=3, kind="fleet-retraining-lost", severity=2,
...                                      message="m")])
>>> log = NotificationLog(store)
>>> now, rows = log.open_escalations(min_severity=1)
>>> [(r.kind, r.tick, r.unique_id) for r in rows]
[('fleet-retraining-lost', 3, None)]
>>> log.record("ops", "kind=fleet-retraining-lost", [rows[0].id], "sent", 1, None, created_at=now)
>>> log.last_sent(["ops"], ["kind=fleet-retraining-lost"])[("ops", "kind=fleet-retraining-lost")][0]
frozenset({1})

Claims: the first process to claim a group holds it; a second one is shown the claim in its way.

>>> mine = log.claim("ops", "kind=silent", [2, 3], holder="process-a", seconds=60)
>>> mine.mine, sorted(mine.escalation_ids)
(True, [2, 3])
>>> theirs = log.claim("ops", "kind=silent", [2, 3, 4], holder="process-b", seconds=60)
>>> theirs.mine, theirs.holder, sorted(theirs.escalation_ids)
(False, 'process-a', [2, 3])
>>> sorted(log.claims(["ops"]))
[('ops', 'kind=silent')]
>>> log.release(mine)
>>> log.claim("ops", "kind=silent", [2, 3, 4], holder="process-b", seconds=60).mine
True

A holder takes over a claim of its own at once; many groups are claimed in one transaction, which also reads
their latest sent notifications:

>>> again = log.claim("ops", "kind=silent", [2, 3, 4, 5], holder="process-b", seconds=60)
>>> again.mine, sorted(again.escalation_ids)
(True, [2, 3, 4, 5])
>>> claims, last = log.claim_groups("ops", {"kind=silent": [5], "kind=fleet-retraining-lost": [1]},
...                                 holder="process-c", seconds=60)
>>> [(key, c.mine, c.holder) for key, c in sorted(claims.items())]
[('kind=fleet-retraining-lost', True, 'process-c'), ('kind=silent', False, 'process-b')]
>>> sorted(last)
['kind=fleet-retraining-lost']
>>> log.record("ops", "kind=fleet-retraining-lost", [1], "sent", 1, None, created_at=now,
...            release=claims["kind=fleet-retraining-lost"])
>>> sorted(log.claims(["ops"]))
[('ops', 'kind=silent')]
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import secrets
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from mlma.store import schema as S
from mlma.store.store import Store

#: Up to this many group keys are looked up by name; beyond it (group_by stream, say) the list would outgrow
#: a statement's parameters, and the latest notification of every group of the receivers is read.
MAX_LISTED_KEYS = 500
#: The names of the ``locks`` rows that are claims of notifications start with this.
CLAIM_PREFIX = "alert-claim:"
#: At most this many groups are claimed by one statement (six parameters each).
MAX_CLAIMED_GROUPS = 100


@dataclass(frozen=True)
class OpenEscalation:
    """An escalation that wants attention, with its stream's unique_id and attributes (None: fleet-wide)."""

    id: int
    stream_id: int | None
    unique_id: str | None
    tick: int | None
    kind: str
    severity: int
    message: str
    created_at: dt.datetime
    attributes: Mapping[str, Any]


@dataclass(frozen=True)
class Claim:
    """A process's claim to deliver the notification of one group to one receiver, listing
    ``escalation_ids``, until ``expires_at`` (the store's clock). ``token`` (the ``locks`` row's) is set on a
    claim just taken (``mine``), None on one found in the way."""

    receiver: str
    group_key: str
    escalation_ids: frozenset[int]
    holder: str
    expires_at: dt.datetime
    token: str | None = field(default=None, repr=False, compare=False)

    @property
    def mine(self) -> bool:
        return self.token is not None

    @property
    def name(self) -> str:
        """Its row of ``locks``."""
        return claim_name(self.receiver, self.group_key)


def claim_name(receiver: str, group_key: str) -> str:
    """The ``locks`` row of a group's claim: the prefix and a digest of receiver and key (64 characters).

    >>> claim_name("ops", '{kind="silent"}')  # doctest: +ELLIPSIS
    'alert-claim:...'
    >>> len(claim_name("ops", '{kind="silent"}'))
    64
    """
    digest = hashlib.sha256(json.dumps([receiver, group_key]).encode("utf-8")).hexdigest()
    return CLAIM_PREFIX + digest[:64 - len(CLAIM_PREFIX)]


def _claim_text(holder: str, receiver: str, group_key: str, escalation_ids: Sequence[int]) -> str:
    return json.dumps({"holder": holder, "receiver": receiver, "group_key": group_key,
                       "escalation_ids": sorted(int(i) for i in escalation_ids)}, ensure_ascii=False)


def _holder_prefix(holder: str) -> str:
    """How the text of every claim of ``holder`` begins (``_claim_text`` writes the holder first).

    >>> _claim_text("p-1", "ops", "k", [3]).startswith(_holder_prefix("p-1"))
    True
    >>> _claim_text("p-10", "ops", "k", [3]).startswith(_holder_prefix("p-1"))
    False
    """
    return '{"holder": ' + json.dumps(holder, ensure_ascii=False) + ","


def _claim_of(text: str, expires_at: dt.datetime) -> Claim | None:
    """The claim a ``locks`` row's holder text describes (None: not one)."""
    try:
        doc = json.loads(text)
        return Claim(str(doc["receiver"]), str(doc["group_key"]), frozenset(int(i) for i in doc["escalation_ids"]),
                     str(doc["holder"]), expires_at)
    except (ValueError, TypeError, KeyError):
        return None


class NotificationLog:
    """The notifier's reads and writes on ``store``."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def open_escalations(self, *, min_severity: int, until_tick: int | None = None
                         ) -> tuple[dt.datetime, list[OpenEscalation]]:
        """The store's time now and the escalations wanting attention at that time, of severity at least
        ``min_severity`` (and of ticks up to ``until_tick``, or of none, if given), oldest first."""
        e, st = S.escalations, S.streams
        with self.store._read() as conn:
            now = self.store._now(conn)
            active = sa.or_(e.c.status == "open", sa.and_(e.c.status == "silenced", e.c.silenced_until.is_not(None),
                                                          e.c.silenced_until <= now))
            query = (sa.select(e.c.id, e.c.stream_id, e.c.tick, e.c.kind, e.c.severity, e.c.message, e.c.created_at,
                               st.c.unique_id, st.c.attributes)
                     .outerjoin(st, st.c.id == e.c.stream_id)
                     .where(active, e.c.severity >= int(min_severity)))
            if until_tick is not None:
                query = query.where(sa.or_(e.c.tick <= int(until_tick), e.c.tick.is_(None)))
            rows = conn.execute(query.order_by(e.c.id)).all()
        return now, [OpenEscalation(int(r.id), None if r.stream_id is None else int(r.stream_id), r.unique_id,
                                    None if r.tick is None else int(r.tick), r.kind, int(r.severity), r.message,
                                    r.created_at, r.attributes or {}) for r in rows]

    def last_sent(self, receivers: Sequence[str], keys: Sequence[str]
                  ) -> dict[tuple[str, str], tuple[frozenset[int], dt.datetime]]:
        """For each (receiver, group key) among ``receivers`` and ``keys``: the escalation ids its latest sent
        notification listed, and when it was sent."""
        with self.store._read() as conn:
            return _last_sent(conn, receivers, keys)

    def record(self, receiver: str, group_key: str, escalation_ids: Sequence[int], status: str, attempts: int,
               error: str | None, *, created_at: dt.datetime, release: Claim | None = None) -> None:
        """Log one delivery (``status`` sent or failed); a sent one is stamped with the store's time now.
        ``release``: a claim of one's own (:meth:`claim_groups`) given up in the same transaction."""
        if release is not None and not release.mine:
            raise ValueError(f"not a claim of this process: {release!r}")
        with self.store._write() as conn:
            now = self.store._now(conn)
            conn.execute(sa.insert(S.alert_notifications).values(
                receiver=receiver, group_key=group_key, escalation_ids=[int(i) for i in escalation_ids],
                status=status, attempts=int(attempts), error=error, created_at=created_at,
                sent_at=now if status == "sent" else None))
            if release is not None:
                _delete_claims(conn, [release])

    def claim(self, receiver: str, group_key: str, escalation_ids: Sequence[int], *, holder: str,
              seconds: float) -> Claim:
        """Claim one group: :meth:`claim_groups` of ``{group_key: escalation_ids}``, without what was sent."""
        claims, _ = self.claim_groups(receiver, {group_key: escalation_ids}, holder=holder, seconds=seconds)
        return claims[group_key]

    def claim_groups(self, receiver: str, groups: Mapping[str, Collection[int]], *, holder: str, seconds: float
                     ) -> tuple[dict[str, Claim], dict[str, tuple[frozenset[int], dt.datetime]]]:
        """Claim the delivery of each group's notification to ``receiver`` (``groups``: the escalation ids it
        lists, by group key) for ``seconds``, in one write transaction; then, in the same transaction, read the
        latest notification of each group sent to ``receiver``, as :meth:`last_sent` does (a claim is released
        only with the outcome of its delivery recorded: one found sent here was sent by the last holder).

        A group's claim is taken by one atomic statement (an upsert, as :mod:`mlma.store.lock` takes a lock),
        which succeeds when no live claim of the group exists, when the live one lapsed (a dead process's), or
        when it is ``holder``'s own (left by a delivery whose outcome could not be recorded: ``holder`` names
        one delivering process, which delivers one group at a time). Returns, by group key, the claim taken
        (``mine``) or the live claim in the way; and the latest sent notifications found, by group key.

        ``holder`` names the claiming process (shown to the others). Release a claim of one's own with the
        outcome (:meth:`record` with ``release``) or :meth:`release`; a claim never released (its process
        died) lapses ``seconds`` after it was taken, by the store's clock."""
        if not isinstance(holder, str) or not holder.strip():
            raise ValueError(f"holder must be a non-empty string naming the process, got {holder!r}")
        if not float(seconds) > 0:
            raise ValueError(f"seconds must be a positive number, got {seconds!r}")
        wanted = {key: frozenset(int(i) for i in ids) for key, ids in groups.items()}
        # In the order of the rows' names: two processes claiming overlapping groups lock their rows (PostgreSQL)
        # in one order, and never wait for each other in a circle.
        names = sorted((claim_name(receiver, key), key) for key in wanted)
        lk = S.locks
        claims: dict[str, Claim] = {}
        with self.store._write() as conn:
            now = self.store._now(conn)
            expires = now + dt.timedelta(seconds=float(seconds))
            for start in range(0, len(names), MAX_CLAIMED_GROUPS):
                chunk = names[start:start + MAX_CLAIMED_GROUPS]
                rows = [{"name": name, "holder": _claim_text(holder, receiver, key, wanted[key]),
                         "token": secrets.token_hex(16), "acquired_at": now, "heartbeat_at": now, "expires_at": expires}
                        for name, key in chunk]
                insert = self.store._insert(lk).values(rows)
                excluded = insert.excluded
                statement = insert.on_conflict_do_update(
                    index_elements=[lk.c.name],
                    set_={"holder": excluded.holder, "token": excluded.token, "acquired_at": excluded.acquired_at,
                          "heartbeat_at": excluded.heartbeat_at, "expires_at": excluded.expires_at},
                    where=sa.or_(lk.c.expires_at <= now,
                                 lk.c.holder.startswith(_holder_prefix(holder), autoescape=True)),
                ).returning(lk.c.name, lk.c.token)
                taken = dict(conn.execute(statement).all())
                for name, key in chunk:
                    if name in taken:
                        claims[key] = Claim(receiver, key, wanted[key], holder, expires, taken[name])
                held = [name for name, _ in chunk if name not in taken]
                if held:
                    found = conn.execute(sa.select(lk.c.name, lk.c.holder, lk.c.expires_at)
                                         .where(lk.c.name.in_(held))).all()
                    keys = dict(chunk)
                    for row in found:
                        key = keys[row.name]
                        claims[key] = _claim_of(row.holder, row.expires_at) or Claim(receiver, key, frozenset(),
                                                                                     row.holder, row.expires_at)
            sent = _last_sent(conn, [receiver], list(wanted))
        last = {key: value for (_, key), value in sent.items()}
        for key in wanted:  # a row in the way that was gone when read: taken over and released meanwhile
            claims.setdefault(key, Claim(receiver, key, frozenset(), "(released)", now))
        return claims, last

    def release(self, *claims: Claim, wait: bool = True) -> None:
        """Give up claims of one's own, in one transaction (nothing happens to one that lapsed and was taken
        over meanwhile). ``wait=False``: fail at once rather than queue behind another writer (at the end of a
        process; a claim not released lapses)."""
        for claim in claims:
            if not claim.mine:
                raise ValueError(f"not a claim of this process: {claim!r}")
        if claims:
            with self.store._write() if wait else self.store._write_at_once() as conn:
                _delete_claims(conn, claims)

    def claims(self, receivers: Sequence[str]) -> dict[tuple[str, str], Claim]:
        """The live claims (anyone's) of groups of ``receivers``, by (receiver, group key)."""
        lk = S.locks
        with self.store._read() as conn:
            now = self.store._now(conn)
            rows = conn.execute(sa.select(lk.c.holder, lk.c.expires_at)
                                .where(lk.c.name.startswith(CLAIM_PREFIX, autoescape=True), lk.c.expires_at > now)
                                ).all()
        wanted = set(receivers)
        found = (_claim_of(r.holder, r.expires_at) for r in rows)
        return {(c.receiver, c.group_key): c for c in found if c is not None and c.receiver in wanted}


def _last_sent(conn: sa.Connection, receivers: Sequence[str], keys: Sequence[str]
               ) -> dict[tuple[str, str], tuple[frozenset[int], dt.datetime]]:
    a = S.alert_notifications
    latest = (sa.select(sa.func.max(a.c.id).label("id"))
              .where(a.c.status == "sent", a.c.receiver.in_(list(receivers))))
    if len(keys) <= MAX_LISTED_KEYS:
        latest = latest.where(a.c.group_key.in_(list(keys)))
    latest = latest.group_by(a.c.receiver, a.c.group_key).subquery()
    rows = conn.execute(sa.select(a.c.receiver, a.c.group_key, a.c.escalation_ids, a.c.sent_at)
                        .join(latest, latest.c.id == a.c.id)).all()
    wanted = set(keys)
    return {(r.receiver, r.group_key): (frozenset(int(i) for i in (r.escalation_ids or [])), r.sent_at)
            for r in rows if r.group_key in wanted}


def _delete_claims(conn: sa.Connection, claims: Sequence[Claim]) -> None:
    """Delete the ``locks`` rows of ``claims`` (of one's own) that still hold their tokens (in the order of their
    names, as :meth:`NotificationLog.claim_groups` takes them)."""
    lk = S.locks
    for claim in sorted(claims, key=lambda c: c.name):
        conn.execute(sa.delete(lk).where(lk.c.name == claim.name, lk.c.token == claim.token))
