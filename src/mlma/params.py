"""What a person may set, and within which bounds: per-stream parameters and dates, checked in one place.

Every surface (the CLI, the REST API, the web page, Python) changes the fleet through
:class:`mlma.control.Operations`, and ``Operations`` checks what it is given here before anything is
written. A value outside its bound is refused with a message naming the parameter, the bound and the
streams it was meant for; nothing is stored.

The bounds come from what the agent can hold and what is sane:

- ``cooldown_ticks`` ends up in the policy's 32-bit per-stream counters (``tick + cooldown_ticks``); far
  below that limit, 10,000 ticks is 27 years of daily ticks or 14 months of hourly ones.
- ``delta`` is a relative rise of the mean loss, at most 100 (a hundredfold); it must be finite (JSON has
  no infinity, and an infinite margin is a pin in disguise: use ``pin``).
- Dates are ISO 8601 (``2025-02-01``, ``2025-02-01T06:00``, ``2025-02-01 06:00:00``), read as a data file's
  timestamps are (:func:`iso_timestamp`, docs/data.md): ``01/02/2025`` is 1 February to some people and
  2 January to others, and is refused, as are ``now`` and ``today``.
- Data times (abnormal periods, ``mlma prune --before``) must lie within :data:`DATA_TIME_RANGE`, far inside the
  nanosecond timestamps the data are handled in (1677-2262), which wrap silently beyond that, and carry a UTC
  offset exactly when the project's timestamps came with one (:func:`data_time`).
- Wall-clock instants that end something (a pin, a silence) must lie in the future, at most
  :data:`MAX_UNTIL` ahead.

Examples
--------
>>> check_params({"delta": 0.1, "cooldown_ticks": 3}, "stream:zone-1")
{'delta': 0.1, 'cooldown_ticks': 3}
>>> check_params({"cooldown_ticks": 2**62}, "stream zone-1")  # doctest: +NORMALIZE_WHITESPACE
Traceback (most recent call last):
...
mlma.params.ParameterError: parameter cooldown_ticks must be the cool-down in ticks, a whole number from 0 to
10000 (for stream zone-1), got 4611686018427387904
>>> data_time("2609-01-01", "start", time_zones="naive")
Traceback (most recent call last):
...
mlma.params.ParameterError: start must be a data time from 1900-01-01 to 2199-12-31, got '2609-01-01'
"""

from __future__ import annotations

import datetime as dt
import math
import numbers
from dataclasses import dataclass
from typing import Any

import pandas as pd

from mlma.data import read_timestamp  # the data files' reading of timestamps


class ParameterError(ValueError):
    """A parameter or a date outside what mlma accepts; the message names it, its bound and its target."""


@dataclass(frozen=True)
class Bound:
    """One overridable parameter: its type, inclusive bounds (None: none) and what it means."""

    name: str
    kind: type
    low: float | None
    high: float | None
    meaning: str
    explanation: str

    def describe(self) -> str:
        if self.kind is bool:
            return "true or false"
        what = "a whole number" if self.kind is int else "a finite number"
        return f"{what} from {self.low:g} to {self.high:g}"

    def check(self, value: Any, target: str) -> Any:
        """``value`` converted to this parameter's type, or a :class:`ParameterError`."""
        ok = True
        if self.kind is bool:
            ok = isinstance(value, bool)
        elif isinstance(value, bool) or not isinstance(value, numbers.Real):
            ok = False
        elif self.kind is int:
            if isinstance(value, float):  # 3.0 from JSON is 3; 3.5 or 1e20 are checked against the bound below
                ok = math.isfinite(value) and value.is_integer()
            if ok:
                value = int(value)
        elif isinstance(value, numbers.Integral):  # compared before float(): a 400-digit integer overflows it
            ok = self.low <= value <= self.high
            value = float(value) if ok else value
        else:
            value = float(value)
            ok = math.isfinite(value)
        if ok and self.kind is not bool:
            ok = self.low <= value <= self.high
        if not ok:
            raise ParameterError(f"parameter {self.name} must be {self.meaning}, {self.describe()} (for {target}), "
                                 f"got {_shown(value)}")
        return value


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:24]}... ({len(text)} characters)"


#: The per-stream parameters a person may override (``set-params``, ``require-approval``), with their bounds.
#: docs/api.md shows this table; ``python -m mlma.params`` prints it.
PARAMETERS: dict[str, Bound] = {b.name: b for b in (
    Bound("delta", float, 0.0, 100.0, "the relevance margin",
          "a rise of the mean loss beyond (1 + delta) times the reference is a degradation"),
    Bound("cooldown_ticks", int, 0, 10_000, "the cool-down in ticks",
          "ticks without a new trigger after a re-training"),
    Bound("needs_approval", bool, None, None, "whether promotions wait", "promotions wait for a person's approval"),
)}
#: Data times (abnormal periods) must lie in [low, high).
DATA_TIME_RANGE = (pd.Timestamp("1900-01-01"), pd.Timestamp("2200-01-01"))
#: How far ahead a pin or a silence may end.
MAX_UNTIL = dt.timedelta(days=3650)


def check_params(params: Any, target: str) -> dict[str, Any]:
    """Check overrides (None: restore the project's default) for ``target`` (e.g. ``stream:zone-1``)."""
    if not isinstance(params, dict) or not params:
        raise ParameterError(f"no parameters given; overridable: {', '.join(PARAMETERS)}")
    clean = {}
    for key, value in params.items():
        if key not in PARAMETERS:
            raise ParameterError(f"unknown parameter {key!r}; overridable: {', '.join(PARAMETERS)}")
        clean[key] = None if value is None else PARAMETERS[key].check(value, target)
    return clean


def iso_timestamp(value: Any, what: str, kind: str, example: str) -> tuple[pd.Timestamp, bool]:
    """``value`` read as a data file's time column is (:mod:`mlma.data`, docs/data.md): ISO 8601 text (year
    first) or a datetime, never guessed; ``(stamp, zoned)``, the stamp tz-naive (converted to UTC when it carried
    a UTC offset or zone, then ``zoned``). A refusal names ``what``, the accepted form and, for a date written day
    or month first, both of its readings.

    >>> iso_timestamp("2025-02-01 06:00", "start", "data time", "2025-02-01")
    (Timestamp('2025-02-01 06:00:00'), False)
    >>> iso_timestamp("2025-02-01T06:00+05:00", "start", "data time", "2025-02-01")
    (Timestamp('2025-02-01 01:00:00'), True)
    >>> iso_timestamp("01/02/2025", "start", "data time", "2025-02-01")  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    mlma.params.ParameterError: start must be an ISO 8601 data time such as 2025-02-01, got '01/02/2025'; day and
    month could be swapped ('01/02/2025' is 1 February read day first, 2 January read month first)
    """
    refused = f"{what} must be an ISO 8601 {kind} such as {example}, got {_shown(value)}"
    text = value.strip() if isinstance(value, str) else value
    stamp, zoned, why_not = read_timestamp(text)  # the data files' own reading: ISO 8601 or datetimes, else NaT
    if pd.isna(stamp) and isinstance(text, str) and not why_not:
        # ISO 8601 but outside the nanosecond range the data path keeps (2609-01-01): said as out of range by the
        # callers' bounds, not as a form that is not ISO.
        try:
            wide = pd.to_datetime(text, format="ISO8601")
        except (ValueError, TypeError, OverflowError):
            wide = pd.NaT
        if not pd.isna(wide) and not pd.Timestamp.min <= wide.tz_localize(None) <= pd.Timestamp.max:
            return wide.tz_localize(None) if wide.tzinfo is None else wide.tz_convert(None), wide.tzinfo is not None
    if pd.isna(stamp):
        raise ParameterError(refused + (f"; {why_not}" if why_not else ""))
    if stamp.nanosecond:  # the store keeps microseconds: the time applied would not be the one given
        raise ParameterError(f"{what} must not be finer than a microsecond, got {_shown(value)}")
    return stamp, zoned


def data_time_as_given(value: Any, what: str) -> tuple[pd.Timestamp, bool]:
    """A data time in ISO 8601 (:func:`iso_timestamp`) within :data:`DATA_TIME_RANGE`: ``(stamp, zoned)``, the
    stamp tz-naive in nanoseconds (in UTC if ``zoned``). Whether a zone fits the project: :func:`data_time`."""
    stamp, zoned = iso_timestamp(value, what, "data time", "2025-02-01 or 2025-02-01 06:00")
    low, high = DATA_TIME_RANGE
    if not low <= stamp < high:
        raise ParameterError(f"{what} must be a data time from {low:%Y-%m-%d} to "
                             f"{high - pd.Timedelta(days=1):%Y-%m-%d}, got {_shown(value)}")
    return stamp.as_unit("ns"), zoned


def data_time(value: Any, what: str, *, time_zones: str | None) -> pd.Timestamp:
    """A data time (tz-naive, nanoseconds) within :data:`DATA_TIME_RANGE`, written as a data file's timestamps
    are (ISO 8601 text or a datetime) and of the project's kind, as a data file's must be: ``time_zones`` is
    :meth:`mlma.store.Store.time_zones` (``"zoned"``: with an offset, converted to UTC; ``"naive"``: without;
    None, before any checked actuals: without, as nothing tells yet which clock the project's data are on).

    >>> data_time("2025-02-01T06:00Z", "start", time_zones="zoned")
    Timestamp('2025-02-01 06:00:00')
    >>> data_time("2025-02-01T06:00+05:00", "start", time_zones="naive")  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    mlma.params.ParameterError: start must have no UTC offset or time zone: this project's timestamps are tz-naive,
    on the clock of its files (converted to UTC, it would be shifted by its offset); give e.g. 2025-02-01 06:00,
    got '2025-02-01T06:00+05:00'
    """
    stamp, zoned = data_time_as_given(value, what)
    if zoned and time_zones != "zoned":
        why = ("this project's timestamps are tz-naive, on the clock of its files (converted to UTC, it would be "
               "shifted by its offset)" if time_zones == "naive" else
               "no checked file of actuals tells yet which clock this project's timestamps are on (ingest its "
               "actuals first)")
        raise ParameterError(f"{what} must have no UTC offset or time zone: {why}; give e.g. 2025-02-01 06:00, "
                             f"got {_shown(value)}")
    if not zoned and time_zones == "zoned":
        raise ParameterError(f"{what} must carry its UTC offset: this project's timestamps came with time zones and "
                             f"are kept in UTC (read as UTC, a local time would be shifted by its offset); give e.g. "
                             f"2025-02-01T06:00+01:00, or Z for UTC (2025-02-01T06:00Z), got {_shown(value)}")
    return stamp


def instant(value: Any, what: str) -> dt.datetime:
    """A wall-clock instant in ISO 8601 (:func:`iso_timestamp`) in UTC, a naive one taken as UTC."""
    stamp, _ = iso_timestamp(value, what, "date-time", "2026-12-24T00:00 (UTC unless it carries an offset)")
    return stamp.tz_localize("UTC").to_pydatetime()


def future_instant(value: Any, what: str, now: dt.datetime | None = None) -> dt.datetime:
    """A wall-clock instant (:func:`instant`) after ``now`` and at most :data:`MAX_UNTIL` ahead."""
    return check_future(instant(value, what), what, value, now)


def check_future(when: dt.datetime, what: str, given: Any, now: dt.datetime | None = None) -> dt.datetime:
    now = now or dt.datetime.now(dt.timezone.utc)
    if when <= now:
        raise ParameterError(f"{what} must be in the future (now is {now:%Y-%m-%d %H:%M} UTC), got {given!r}")
    if when > now + MAX_UNTIL:
        raise ParameterError(f"{what} must be at most {MAX_UNTIL.days} days ahead (until "
                             f"{now + MAX_UNTIL:%Y-%m-%d}), got {given!r}")
    return when


#: Row ids are 64-bit in the store.
MAX_ROW_ID = 2**63 - 1


def row_ids(values: Any, what: str) -> list[int]:
    """Whole numbers from 1 to 2^63 - 1 (what the store's id columns hold), or a :class:`ParameterError`.

    >>> row_ids([3, "4"], "escalation ids")
    [3, 4]
    >>> row_ids([2**70], "escalation ids")  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    mlma.params.ParameterError: escalation ids are whole numbers from 1 to 9223372036854775807,
    got 1180591620717411303424
    """
    out = []
    for value in values:
        try:
            number = int(value)
        except (TypeError, ValueError, OverflowError):
            number = None
        if number is None or isinstance(value, bool) or number != value and not isinstance(value, str) \
                or not 1 <= number <= MAX_ROW_ID:
            raise ParameterError(f"{what} are whole numbers from 1 to {MAX_ROW_ID}, got {_shown(value)}")
        out.append(number)
    return out


def markdown_table() -> str:
    """The bounds as the Markdown table docs/api.md shows (a test keeps the two equal)."""
    rows = ["| parameter | accepted values | meaning |", "| --- | --- | --- |"]
    rows += [f"| `{b.name}` | {b.describe()} | {b.explanation} |" for b in PARAMETERS.values()]
    low, high = DATA_TIME_RANGE
    rows.append(f"| `start`, `end` of an abnormal period | data times from {low:%Y-%m-%d} to "
                f"{high - pd.Timedelta(days=1):%Y-%m-%d}, end after start | the period's data times |")
    rows.append(f"| `until` of a pin or a silence | an instant in the future, at most {MAX_UNTIL.days} days ahead "
                f"| when the pin or silence ends |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
