"""Per-stream settings a person changed (``streams.overrides``), read and written in one place.

The column holds a JSON object; :class:`StreamOverrides` is what its keys mean: a pin (no automatic
re-training until a time, or for ever), whether promotions wait for approval, and the monitoring parameters
``delta`` and ``cooldown_ticks`` (bounds in :data:`mlma.params.PARAMETERS`). The actions of
:mod:`mlma.control` write it; the live tick and the dashboard read it through :meth:`StreamOverrides.parse`,
so the meaning of a key, and when a pin has run out, is decided here only.

Examples
--------
>>> import datetime as dt
>>> o = StreamOverrides.parse({"pinned_until": "2026-12-24T09:30:00+00:00", "delta": 0.2})
>>> o.delta, o.needs_approval
(0.2, False)
>>> o.pinned_at(dt.datetime(2026, 12, 1)), o.pinned_at(dt.datetime(2027, 1, 1))    # naive: UTC
(True, False)
>>> StreamOverrides.parse(None) == StreamOverrides()
True
"""

from __future__ import annotations

import datetime as dt
import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd
import sqlalchemy as sa

from mlma.store import schema as S

#: The value of ``pinned_until`` for a pin without an end.
FOREVER = "forever"


def pin_stamp(when: dt.datetime) -> str:
    """How ``overrides.pinned_until`` stores an instant: ISO text in UTC to the second, so that the text
    order is the time order (the dashboard counts pins that have not run out by comparing the text with now's).

    >>> pin_stamp(dt.datetime(2026, 12, 24, 9, 30, 15, 500, tzinfo=dt.timezone.utc))
    '2026-12-24T09:30:15+00:00'
    """
    return when.astimezone(dt.timezone.utc).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class StreamOverrides:
    """One stream's overrides; a field left at its default means "the project's setting".

    Attributes
    ----------
    pinned_until
        None (not pinned), ``"forever"``, or the instant the pin runs out (:func:`pin_stamp` text).
    needs_approval
        Promotions of re-trained models wait for a person's approval.
    delta, cooldown_ticks
        The stream's own relevance margin and cool-down; None: the policy's.
    """

    pinned_until: str | None = None
    needs_approval: bool = False
    delta: float | None = None
    cooldown_ticks: int | None = None

    @classmethod
    def parse(cls, blob: Mapping[str, Any] | None) -> StreamOverrides:
        """The overrides in a stored ``streams.overrides`` object; keys this mlma does not know are ignored.

        Raises ``ValueError`` naming the key for a value of the wrong kind (only a hand-edited database has
        one: the actions check every value before writing it).
        """
        if not blob:
            return cls()
        if not isinstance(blob, Mapping):
            raise ValueError(f"streams.overrides must be a JSON object, got {blob!r}")
        until = blob.get("pinned_until")
        if until is not None and not isinstance(until, str):
            raise ValueError(f"overrides.pinned_until must be 'forever' or an ISO instant, got {until!r}")
        approval = blob.get("needs_approval", False)
        if not isinstance(approval, bool):
            raise ValueError(f"overrides.needs_approval must be true or false, got {approval!r}")
        delta = blob.get("delta")
        if delta is not None and (isinstance(delta, bool) or not isinstance(delta, numbers.Real)
                                  or not math.isfinite(delta)):
            raise ValueError(f"overrides.delta must be a finite number, got {delta!r}")
        cooldown = blob.get("cooldown_ticks")
        if cooldown is not None and (isinstance(cooldown, bool) or not isinstance(cooldown, numbers.Integral)):
            raise ValueError(f"overrides.cooldown_ticks must be an integer, got {cooldown!r}")
        return cls(until or None, approval, None if delta is None else float(delta),
                   None if cooldown is None else int(cooldown))

    def active_pin(self, now: dt.datetime) -> str | None:
        """``pinned_until`` if the pin holds at ``now`` (UTC), None for no pin or one that has run out."""
        if self.pinned_until is None or self.pinned_until == FOREVER:
            return self.pinned_until
        return self.pinned_until if self.pinned_until > pin_stamp(now) else None

    def pinned_at(self, now: dt.datetime | pd.Timestamp) -> bool:
        """Whether the stream is pinned at ``now`` (an aware instant, or naive UTC).

        >>> StreamOverrides(pinned_until="forever").pinned_at(dt.datetime(2030, 1, 1))
        True
        """
        stamp = pd.Timestamp(now)
        stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp
        return self.active_pin(stamp.to_pydatetime()) is not None


def pinned_now(now: dt.datetime, pinned: bool = True) -> sa.ColumnElement:
    """SQL: the stream is pinned at ``now`` (``pinned=False``: it is not), i.e. pinned until unpinned or until a
    time after ``now``; a pin that has run out counts as no pin, as it does for :meth:`StreamOverrides.pinned_at`."""
    until = S.streams.c.overrides["pinned_until"].as_string()
    active = sa.or_(until == FOREVER, until > pin_stamp(now))
    return sa.and_(until.is_not(None), active) if pinned else sa.or_(until.is_(None), sa.not_(active))
