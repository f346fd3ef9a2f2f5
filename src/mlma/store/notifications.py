"""What the webhook notifier reads and writes: the escalations that want attention and the delivery log
(``alert_notifications``).

:class:`mlma.alerts.Notifier` decides what to send and sends it; :class:`NotificationLog` is its access to
the store. An escalation wants attention while it is ``open``, or ``silenced`` until a time that has passed.

Before a notification is posted, the process claims its group (:meth:`NotificationLog.claim`): a lease on a
row of the store's ``locks`` table, named after the receiver and the group key and listing the escalation ids
it sends, taken in one atomic statement (see :mod:`mlma.store.lock`). A second process that plans the same
group finds the claim and does not post it too; a claim whose process died expires with its lease.

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
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from mlma.store import schema as S
from mlma.store.errors import LockHeld
from mlma.store.lock import Lease
from mlma.store.store import Store

#: Up to this many group keys are looked up by name; beyond it (group_by stream, say) the list would outgrow
#: a statement's parameters, and the latest notification of every group of the receivers is read.
MAX_LISTED_KEYS = 500
#: The names of the ``locks`` rows that are claims of notifications start with this.
CLAIM_PREFIX = "alert-claim:"


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
    ``escalation_ids``, until ``expires_at`` (the store's clock). ``lease`` is set on a claim this
    :class:`NotificationLog` took (``mine``), None on another's found in the way."""

    receiver: str
    group_key: str
    escalation_ids: frozenset[int]
    holder: str
    expires_at: dt.datetime
    lease: Lease | None = field(default=None, repr=False, compare=False)

    @property
    def mine(self) -> bool:
        return self.lease is not None


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
        a = S.alert_notifications
        latest = (sa.select(sa.func.max(a.c.id).label("id"))
                  .where(a.c.status == "sent", a.c.receiver.in_(list(receivers))))
        if len(keys) <= MAX_LISTED_KEYS:
            latest = latest.where(a.c.group_key.in_(list(keys)))
        latest = latest.group_by(a.c.receiver, a.c.group_key).subquery()
        with self.store._read() as conn:
            rows = conn.execute(sa.select(a.c.receiver, a.c.group_key, a.c.escalation_ids, a.c.sent_at)
                                .join(latest, latest.c.id == a.c.id)).all()
        wanted = set(keys)
        return {(r.receiver, r.group_key): (frozenset(int(i) for i in (r.escalation_ids or [])), r.sent_at)
                for r in rows if r.group_key in wanted}

    def record(self, receiver: str, group_key: str, escalation_ids: Sequence[int], status: str, attempts: int,
               error: str | None, *, created_at: dt.datetime) -> None:
        """Log one delivery (``status`` sent or failed); a sent one is stamped with the store's time now."""
        with self.store._write() as conn:
            now = self.store._now(conn)
            conn.execute(sa.insert(S.alert_notifications).values(
                receiver=receiver, group_key=group_key, escalation_ids=[int(i) for i in escalation_ids],
                status=status, attempts=int(attempts), error=error, created_at=created_at,
                sent_at=now if status == "sent" else None))

    def claim(self, receiver: str, group_key: str, escalation_ids: Sequence[int], *, holder: str,
              seconds: float) -> Claim:
        """Claim the delivery of ``group_key``'s notification to ``receiver``, listing ``escalation_ids``, for
        ``seconds``: one atomic statement, which succeeds only when no live claim of the group exists (a
        lapsed one is taken over). Returns the claim taken (``mine``) or the live claim in the way.

        ``holder`` names the claiming process (shown to the others). Release a claim of one's own with
        :meth:`release` once the delivery is recorded; a claim never released (its process died) lapses
        ``seconds`` after it was taken, by the store's clock."""
        text = _claim_text(holder, receiver, group_key, escalation_ids)
        try:
            lease = self.store.acquire_lock(text, float(seconds), name=claim_name(receiver, group_key))
        except LockHeld as held:
            found = _claim_of(held.holder, held.expires_at)
            return found or Claim(receiver, group_key, frozenset(), held.holder, held.expires_at)
        return Claim(receiver, group_key, frozenset(int(i) for i in escalation_ids), holder, lease.expires_at, lease)

    def release(self, claim: Claim) -> None:
        """Give up a claim of one's own (nothing happens if it lapsed and was taken over meanwhile)."""
        if claim.lease is None:
            raise ValueError(f"not a claim of this process: {claim!r}")
        claim.lease.release()

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
