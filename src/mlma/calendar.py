"""The project's calendar: frequency, season length, tick grid, horizon and training window, in one place.

Every part of mlma that needs to know "how often", "how long a season" or "which tick" asks this module:

- :class:`Frequency` parses and normalises a pandas offset alias (``"1h"`` -> ``"h"``, ``"W"`` -> ``"W-SUN"``)
  and names its seasonal periods with the one season rule (:func:`season_length`);
- :func:`season_length` is that rule, used by the data checks, the models' :class:`~mlma.models.ForecastContext`,
  MASE scales and the monitoring policies alike;
- :class:`TickClock` is the agent's clock (frequency, tick length, origin): tick boundaries, the tick of a
  timestamp, steps per tick, the forecast horizon and the default training window. The live agent keeps it
  in its saved state, the backtest builds it from the data (:meth:`TickClock.covering`);
- :class:`TickGrid` is a finite stretch of that clock (:func:`make_tick_grid`), and :func:`on_tick_grid` says
  whether timestamps lie on the data grid a project works on.

The store keeps the project's frozen frequency and tick (``Store.clock()``, a
:class:`mlma.store.records.Clock`); :meth:`TickClock.covering` turns them into a clock once the data's first
timestamp fixes the origin.

The season rule
---------------
A season is the shortest lag, in whole steps, that comes back to the same phase of the data's natural cycle:
the shortest of a day, a week and a year (52 weeks for fixed steps, 12 months for month-based ones) that is
longer than one step. It is ``lcm(step, cycle) / step`` steps, as long as that lag spans at most a year;
otherwise there is no usable season and it is 1. So hourly data has 24 (a day), 3-hourly 8, 15-minute 96,
daily 7, weekly 52, ``2W`` 26, monthly 12, ``2MS`` 6, quarterly 4 and yearly 1. A step that does not divide the
cycle still has a season: ``2D`` data of a weekly pattern repeats every 7 steps (14 days, the same weekday)
and ``7h`` data every 24 steps (7 days, the same hour), which is what a seasonal-naive forecast and a MASE
scale must compare; ``3W`` (the same week of the year only every 3 years) and ``5MS`` get 1.

>>> [season_length(f) for f in ["h", "3h", "15min", "D", "2D", "W", "2W", "MS", "2MS", "QS", "YS"]]
[24, 8, 96, 7, 7, 52, 26, 12, 6, 4, 1]
>>> clock = TickClock.covering("h", "1D", "2024-01-03 05:00")
>>> clock.origin, clock.tick_of("2024-01-05 13:00"), clock.steps_in_tick(0), clock.horizon()
(Timestamp('2024-01-03 00:00:00'), 2, 24, 24)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

__all__ = [
    "Frequency",
    "TickClock",
    "TickGrid",
    "default_train_window",
    "grid_stamps",
    "make_tick_grid",
    "on_tick_grid",
    "season_length",
    "tick_alias",
]

_US = 1_000
_MS = 1_000_000
_SECOND = 1_000_000_000
_MINUTE = 60 * _SECOND
_HOUR = 60 * _MINUTE
_DAY = 24 * _HOUR
_WEEK = 7 * _DAY
#: A year of fixed steps is 52 weeks (the convention of weekly data: season 52).
_YEAR_OF_WEEKS = 52 * _WEEK
# 1970-01-01 (the epoch) was a Thursday; weekday numbers follow pandas (Monday = 0).
_EPOCH_WEEKDAY = 3
_WEEKDAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_NAT = np.iinfo(np.int64).min
#: Ticks scanned for the longest one when month-based ticks hold varying numbers of fixed steps (a scan of
#: 60 covers every month length and leap years several times over).
_HORIZON_SCAN = 60


def _to_ns(values: pd.Series | pd.Index) -> np.ndarray:
    """int64 nanoseconds since the epoch of a tz-naive datetime column (NaT -> the int64 minimum)."""
    return np.asarray(pd.DatetimeIndex(values).as_unit("ns").asi8)


def _month_position(ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Months since 1970-01 and the anchor of each timestamp: 0 first day of the month at midnight,
    1 last day of the month at midnight, 2 neither."""
    months = ns.view("datetime64[ns]").astype("datetime64[M]")
    start = months.astype("datetime64[ns]").view(np.int64)
    next_start = (months + 1).astype("datetime64[ns]").view(np.int64)
    anchor = np.full(len(ns), 2, dtype=np.int8)
    anchor[ns == start] = 0
    anchor[ns == next_start - _DAY] = 1
    return months.astype(np.int64), anchor


# --------------------------------------------------------------------------------------------------------
# Frequency and the season rule
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    """A frequency reduced to integers: a fixed step in nanoseconds, or a step in calendar months."""

    calendar: bool
    size: int  # nanoseconds (fixed) or months (calendar)
    weekday: int | None = None  # weekly fixed steps: the weekday of the timestamps
    anchor: str = "start"  # calendar: timestamps on the first ("start") or last ("end") day of the month
    phase: int = 0  # calendar: month index (0 = January) modulo 3 (quarters) or 12 (years)

    @property
    def phase_modulus(self) -> int:
        return _phase_modulus(self.size) if self.calendar else 1


def _phase_modulus(months: int) -> int:
    # pandas can name the month of year of yearly steps and the month within the quarter of quarterly
    # steps; other calendar steps (2MS, 5MS) carry no phase.
    return 12 if months % 12 == 0 else 3 if months % 3 == 0 else 1


def _spec_from_offset(offset: pd.DateOffset, what: str = "freq") -> _Spec:
    n = offset.n
    if n <= 0:
        raise ValueError(f"{what} must be a positive period, got {offset.freqstr!r}")
    if isinstance(offset, pd.offsets.Tick):
        return _Spec(False, int(offset.nanos))
    if type(offset) is pd.offsets.Day:
        return _Spec(False, n * _DAY)
    if type(offset) is pd.offsets.Week:
        return _Spec(False, n * _WEEK, weekday=offset.weekday)
    if type(offset) in (pd.offsets.MonthBegin, pd.offsets.MonthEnd):
        return _Spec(True, n, anchor="start" if type(offset) is pd.offsets.MonthBegin else "end",
                     phase=0)
    if type(offset) in (pd.offsets.QuarterBegin, pd.offsets.QuarterEnd):
        return _Spec(True, 3 * n, anchor="start" if type(offset) is pd.offsets.QuarterBegin else "end",
                     phase=(offset.startingMonth - 1) % 3)
    if type(offset) in (pd.offsets.YearBegin, pd.offsets.YearEnd):
        return _Spec(True, 12 * n, anchor="start" if type(offset) is pd.offsets.YearBegin else "end",
                     phase=offset.month - 1)
    raise ValueError(
        f"{what}={offset.freqstr!r} is not supported; use a fixed step (min, h, D, W-SUN ...) or a "
        f"month-based one (MS, ME, QS, QE, YS, YE)")


def _multiple(n: int, unit: str) -> str:
    return unit if n == 1 else f"{n}{unit}"


def _alias_from_spec(spec: _Spec) -> str:
    if spec.calendar:
        m = spec.size
        suffix = "S" if spec.anchor == "start" else "E"
        if m % 12 == 0:
            alias = _multiple(m // 12, "Y" + suffix) + "-" + _MONTHS[spec.phase]
            return alias.removesuffix("-JAN" if suffix == "S" else "-DEC")
        if m % 3 == 0:
            # pandas names a quarterly anchor by the first (QS) or last (QE) month of the first quarter.
            month = spec.phase if suffix == "S" else spec.phase + 9
            alias = _multiple(m // 3, "Q" + suffix) + "-" + _MONTHS[month]
            return alias.removesuffix("-JAN" if suffix == "S" else "-DEC")
        return _multiple(m, "M" + suffix)
    step = spec.size
    if step % _WEEK == 0 and spec.weekday is not None:
        return _multiple(step // _WEEK, "W") + "-" + _WEEKDAYS[spec.weekday]
    for unit, name in ((_DAY, "D"), (_HOUR, "h"), (_MINUTE, "min"), (_SECOND, "s"), (_MS, "ms"), (_US, "us")):
        if step % unit == 0:
            return _multiple(step // unit, name)
    return _multiple(step, "ns")


def _parse_offset(value: Any, what: str) -> pd.DateOffset:
    if isinstance(value, pd.offsets.BaseOffset):
        return value
    if isinstance(value, (pd.Timedelta, np.timedelta64)) or hasattr(value, "total_seconds"):
        nanos = pd.Timedelta(value).value
        if nanos <= 0:
            raise ValueError(f"{what} must be positive, got {value!r}")
        return pd.offsets.Nano(nanos) if nanos % _SECOND else to_offset(pd.Timedelta(value))
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{what} must be a pandas offset alias such as 'h', '1D', '7D' or '12MS', "
                         f"got {value!r}")
    try:
        return to_offset(value.strip())
    except ValueError:
        raise ValueError(f"{what}={value!r} is not a pandas offset alias; examples: 'h', '30min', "
                         f"'1D', '7D', 'W-SUN', 'MS', '12MS', 'QS', 'YS'") from None


_AUTO = "auto"


def _season_for_cycle(step: int, cycle: int, limit: int) -> int | None:
    """Steps until the data returns to the same phase of ``cycle``, if that lag spans at most ``limit``."""
    if cycle <= step:
        return None
    span = math.lcm(step, cycle)
    return span // step if span <= limit else None


def _season_of(spec: _Spec) -> int:
    # The shortest natural cycle longer than one step whose phase recurs within a year (see the module doc).
    if spec.calendar:
        cycles, limit = (12,), 12
    else:
        cycles, limit = (_DAY, _WEEK, _YEAR_OF_WEEKS), _YEAR_OF_WEEKS
    for cycle in cycles:
        steps = _season_for_cycle(spec.size, cycle, limit)
        if steps is not None:
            return steps
    return 1


def season_length(freq: Frequency | str) -> int:
    """The project's one season rule: steps until the data returns to the same phase of its natural cycle.

    See the module docstring for the rule and its reasons. A :class:`Frequency` built with an explicit
    ``season_length`` keeps it.

    Examples
    --------
    >>> season_length("h"), season_length("7h"), season_length("5D"), season_length("3W"), season_length("5MS")
    (24, 24, 7, 1, 1)

    Business days, which a project's data cannot have but a model may be given, follow the same rule with a
    week of five business days:

    >>> season_length("B"), season_length("2B")
    (5, 5)
    """
    if isinstance(freq, str):
        offset = _parse_offset(freq, "freq")
        if type(offset) is pd.offsets.BusinessDay:
            return _season_for_cycle(offset.n, 5, 5 * 52) or 1
    return int(Frequency.coerce(freq).season_length)


@dataclass(frozen=True)
class Frequency:
    """The sampling frequency of a fleet: a pandas offset alias plus its seasonal periods.

    Parameters
    ----------
    alias
        A pandas offset alias: fixed steps (``"15min"``, ``"30min"``, ``"h"``, ``"D"``, ``"W-SUN"``) or
        month-based ones (``"MS"``/``"ME"``, ``"QS"``/``"QE"``, ``"YS"``/``"YE"``, with anchors such as
        ``"QS-FEB"``). It is normalised (``"1h"`` -> ``"h"``, ``"QS-JAN"`` -> ``"QS"``, ``"W"`` ->
        ``"W-SUN"``).
    season_length
        Steps in the main seasonal cycle; derived by the season rule (:func:`season_length`) when None: a day
        for sub-daily data (hourly 24, half-hourly 48, 15-minute 96), a week for daily data (7), a year
        otherwise (weekly 52, monthly 12, quarterly 4, yearly 1); ``2D`` 7, ``2W`` 26, ``2MS`` 6.
    secondary_season
        Steps in a second, longer cycle; derived when ``"auto"``: a week for sub-daily data (hourly 168,
        half-hourly 336), else None.

    Examples
    --------
    >>> Frequency("h")
    Frequency(alias='h', season_length=24, secondary_season=168)
    >>> Frequency("QS-JAN").alias, Frequency("MS").season_length, Frequency("W").alias
    ('QS', 12, 'W-SUN')
    >>> Frequency("h").steps_per("1D"), Frequency("MS").steps_per("12MS")
    (24, 12)
    >>> Frequency("D").default_tick()
    <7 * Days>
    >>> Frequency("MS").grid("2024-01-01", "2024-03-31").strftime("%Y-%m-%d").tolist()
    ['2024-01-01', '2024-02-01', '2024-03-01']
    """

    alias: str
    season_length: int | None = None
    secondary_season: int | None | str = _AUTO
    _spec: _Spec = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        offset = _parse_offset(self.alias, "freq")
        spec = _spec_from_offset(offset)
        object.__setattr__(self, "_spec", spec)
        object.__setattr__(self, "alias", _alias_from_spec(spec))
        if self.season_length is None:
            object.__setattr__(self, "season_length", self._derived_season())
        elif not isinstance(self.season_length, (int, np.integer)) or self.season_length < 1:
            raise ValueError(f"season_length must be a positive integer, got {self.season_length!r}")
        if isinstance(self.secondary_season, str):
            if self.secondary_season != _AUTO:
                raise ValueError(f"secondary_season must be an integer, None or 'auto', "
                                 f"got {self.secondary_season!r}")
            object.__setattr__(self, "secondary_season", self._derived_secondary())

    @classmethod
    def coerce(cls, value: Frequency | str) -> Frequency:
        """Return ``value`` if it is a Frequency, else build one from an alias."""
        return value if isinstance(value, Frequency) else cls(value)

    # derived seasonal periods ---------------------------------------------------------------------------

    def _derived_season(self) -> int:
        return _season_of(self._spec)

    def _derived_secondary(self) -> int | None:
        # Sub-daily data has a second, weekly cycle (the season rule applied to the week), when it is longer.
        spec = self._spec
        if spec.calendar or spec.size >= _DAY:
            return None
        weekly = _season_for_cycle(spec.size, _WEEK, _YEAR_OF_WEEKS)
        return weekly if weekly is not None and weekly > self.season_length else None

    # properties -----------------------------------------------------------------------------------------

    @property
    def offset(self) -> pd.DateOffset:
        """The pandas offset of one step."""
        return to_offset(self.alias)

    @property
    def is_calendar(self) -> bool:
        """True for month-based frequencies, whose steps vary in length."""
        return self._spec.calendar

    @property
    def step(self) -> pd.Timedelta | None:
        """The length of one step for fixed frequencies; None for month-based ones."""
        return None if self._spec.calendar else pd.Timedelta(self._spec.size, unit="ns")

    @property
    def months(self) -> int | None:
        """Calendar months per step for month-based frequencies; None for fixed ones."""
        return self._spec.size if self._spec.calendar else None

    # grids ----------------------------------------------------------------------------------------------

    def grid(self, start: Any, end: Any) -> pd.DatetimeIndex:
        """Timestamps of this frequency from ``start`` to ``end`` (both inclusive).

        Fixed steps count from ``start``; month-based steps start at the first anchor at or after it.
        """
        start, end = pd.Timestamp(start), pd.Timestamp(end)
        freq = self.step if self.step is not None else self.offset
        return pd.date_range(start, end, freq=freq).as_unit("ns")

    def positions(self, ds: Any) -> np.ndarray:
        """The integer position of each timestamp on this frequency's grid (int64).

        Consecutive grid timestamps get consecutive integers, so a difference of positions counts steps:
        fixed steps count ``floor(ns / step)`` from the epoch, month-based ones months since 1970-01 (less
        the anchor's phase) divided by the step. Positions of timestamps on one grid are comparable across
        streams and calls; timestamps off the grid are floored onto it.

        Examples
        --------
        >>> ds = pd.to_datetime(["2024-01-01 00:00", "2024-01-01 01:00", "2024-01-01 05:00"])
        >>> p = Frequency("h").positions(ds); (p - p[0]).tolist()
        [0, 1, 5]
        >>> p = Frequency("QS").positions(pd.to_datetime(["2023-10-01", "2024-04-01", "2025-01-01"]))
        >>> (p - p[0]).tolist()
        [0, 2, 5]
        """
        ns = np.asarray(ds, dtype="datetime64[ns]").view(np.int64).reshape(-1)
        spec = self._spec
        if spec.calendar:
            months = ns.view("datetime64[ns]").astype("datetime64[M]").view(np.int64)
            return (months - spec.phase) // spec.size
        return ns // spec.size

    def at_positions(self, positions: np.ndarray, like: Any) -> np.ndarray:
        """The grid timestamps (``datetime64[ns]``) at ``positions`` (see :meth:`positions`), on the grid
        through the timestamp ``like``: the inverse of :meth:`positions` for timestamps on that grid.

        >>> f = Frequency("W-SUN"); sunday = np.datetime64("2024-01-07", "ns")
        >>> f.at_positions(f.positions([sunday]) + 1, sunday).astype("datetime64[D]").tolist()
        [datetime.date(2024, 1, 14)]
        """
        positions = np.asarray(positions, dtype=np.int64)
        spec = self._spec
        like = np.datetime64(pd.Timestamp(like).as_unit("ns").value, "ns")
        base = self.positions(np.array([like]))[0]
        if spec.calendar:
            like_month = like.astype("datetime64[M]").astype(np.int64)
            months = (like_month + (positions - base) * spec.size).astype("datetime64[M]")
            if spec.anchor == "start":
                return months.astype("datetime64[ns]")
            return (months + 1).astype("datetime64[ns]") - np.timedelta64(1, "D")
        return (like.view(np.int64) + (positions - base) * spec.size).view("datetime64[ns]")

    def between(self, start: Any, end: Any) -> np.ndarray:
        """Timestamps of this frequency in ``[start, end)`` (``datetime64[ns]``): fixed steps count from
        ``start`` (``W-XXX`` ones from its first such weekday), month-based ones take their anchors.

        >>> Frequency("h").between("2024-01-01 00:00", "2024-01-01 03:00").astype(str).tolist()
        ['2024-01-01T00:00:00.000000000', '2024-01-01T01:00:00.000000000', '2024-01-01T02:00:00.000000000']
        """
        start, end = pd.Timestamp(start).as_unit("ns"), pd.Timestamp(end).as_unit("ns")
        spec = self._spec
        if spec.calendar:
            return pd.date_range(start, end, freq=self.offset, inclusive="left").as_unit("ns").to_numpy()
        first = start.value
        if spec.weekday is not None:  # pandas rolls W-XXX forward to that weekday, keeping the time of day
            first += ((spec.weekday - (_EPOCH_WEEKDAY + first // _DAY)) % 7) * _DAY
        return np.arange(first, end.value, spec.size, dtype=np.int64).view("datetime64[ns]")

    def future(self, last: Any, h: int) -> pd.DatetimeIndex:
        """The ``h`` timestamps that follow ``last``.

        Examples
        --------
        >>> Frequency("h").future("2024-01-01 23:00", 2).strftime("%d %H:%M").tolist()
        ['02 00:00', '02 01:00']
        """
        if h < 0:
            raise ValueError(f"h must be >= 0, got {h}")
        last = pd.Timestamp(last)
        freq = self.step if self.step is not None else self.offset
        return pd.date_range(last, periods=h + 1, freq=freq)[1:].as_unit("ns")

    def default_tick(self) -> pd.DateOffset:
        """The tick this frequency is monitored in by default.

        A tick is the batch of actuals that arrive together and whose losses are tested together:
        sub-daily data: one day; daily: one week (Monday to Sunday); weekly: four weeks; monthly: twelve
        months; quarterly: four quarters; yearly: one year. See ``docs/data.md`` for the reasons.
        """
        spec = self._spec
        if spec.calendar:
            months = math.lcm(spec.size, 12)
            modulus = spec.phase_modulus
            if modulus == 1:
                return pd.offsets.MonthBegin(months)
            # A period stamped at its end (QE-DEC, YE-JUN) starts the month after the previous end.
            first_month = (spec.phase + (1 if spec.anchor == "end" else 0)) % modulus
            if spec.size % 12 == 0:
                return pd.offsets.YearBegin(months // 12, month=first_month + 1)
            return pd.offsets.QuarterBegin(months // 3, startingMonth=first_month + 1)
        step = spec.size
        if step < _DAY:
            cycle = _DAY
        elif step < _WEEK:
            cycle = _WEEK
        else:
            cycle = 4 * _WEEK
        return pd.offsets.Day(math.lcm(step, cycle) // _DAY)

    def steps_per(self, tick: str | pd.DateOffset) -> int:
        """How many steps of this frequency one tick holds.

        Raises ValueError when the tick is not a whole number of steps, or holds a varying number of them
        (month-based ticks over fixed steps).
        """
        tick_spec = _spec_from_offset(_parse_offset(tick, "tick"), "tick")
        spec = self._spec
        if spec.calendar != tick_spec.calendar:
            kind = "month-based" if tick_spec.calendar else "fixed-length"
            raise ValueError(f"a {kind} tick {_alias_from_spec(tick_spec)!r} holds a varying or fractional "
                             f"number of {self.alias!r} steps")
        if tick_spec.size % spec.size:
            raise ValueError(f"tick {_alias_from_spec(tick_spec)!r} is not a whole number of {self.alias!r} "
                             f"steps")
        return tick_spec.size // spec.size


# --------------------------------------------------------------------------------------------------------
# Ticks
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TickGrid:
    """A finite stretch of the agent's clock: consecutive ticks, tick ``k`` covering
    ``[boundaries[k], boundaries[k + 1])`` (see :class:`TickClock` for the unbounded clock).

    Examples
    --------
    >>> grid = TickGrid(pd.DatetimeIndex(["2024-01-01", "2024-01-02", "2024-01-03"]), pd.offsets.Day(1))
    >>> len(grid), grid.bounds(1)
    (2, (Timestamp('2024-01-02 00:00:00'), Timestamp('2024-01-03 00:00:00')))
    >>> grid.tick_of(pd.to_datetime(["2024-01-01 23:00", "2024-01-02 00:00", "2024-01-05 00:00"])).tolist()
    [0, 1, -1]
    """

    boundaries: pd.DatetimeIndex
    tick: pd.DateOffset

    def __post_init__(self) -> None:
        boundaries = pd.DatetimeIndex(self.boundaries).as_unit("ns")
        if len(boundaries) < 2:
            raise ValueError("a TickGrid needs at least two boundaries (one tick)")
        if not boundaries.is_monotonic_increasing or not boundaries.is_unique:
            raise ValueError("tick boundaries must be strictly increasing")
        object.__setattr__(self, "boundaries", boundaries)

    def __len__(self) -> int:
        return len(self.boundaries) - 1

    @property
    def starts(self) -> pd.DatetimeIndex:
        """The first instant of each tick."""
        return self.boundaries[:-1]

    def bounds(self, k: int) -> tuple[pd.Timestamp, pd.Timestamp]:
        """Start (inclusive) and end (exclusive) of tick ``k``; negative ``k`` counts from the end."""
        n = len(self)
        if not -n <= k < n:
            raise IndexError(f"tick {k} is outside the grid of {n} ticks")
        k = k % n
        return self.boundaries[k], self.boundaries[k + 1]

    def tick_of(self, ds: Any) -> np.ndarray:
        """The tick index of each timestamp; -1 for timestamps outside the grid."""
        values = _to_ns(pd.DatetimeIndex(np.atleast_1d(pd.to_datetime(ds))))
        edges = np.asarray(self.boundaries.asi8)
        k = np.searchsorted(edges, values, side="right") - 1
        k[(values < edges[0]) | (values >= edges[-1]) | (values == _NAT)] = -1
        return k.astype(np.int64)


def _tick_layout(offset: pd.DateOffset) -> tuple[bool, int, int]:
    """(calendar, size, origin): fixed ticks are ``size`` ns long counted from ``origin`` ns; calendar ticks
    are ``size`` months long and start in months congruent to ``origin`` modulo ``size``."""
    spec = _spec_from_offset(offset, "tick")
    if spec.calendar:
        t = type(offset)
        if t in (pd.offsets.MonthBegin, pd.offsets.MonthEnd):
            origin = 0
        elif t is pd.offsets.QuarterBegin:
            origin = offset.startingMonth - 1
        elif t is pd.offsets.QuarterEnd:
            origin = offset.startingMonth % 12
        elif t is pd.offsets.YearBegin:
            origin = offset.month - 1
        else:  # YearEnd: the year starts the month after its last month
            origin = offset.month % 12
        return True, spec.size, origin % spec.size
    size = spec.size
    if type(offset) is pd.offsets.Week:
        first_day = 0 if offset.weekday is None else (offset.weekday + 1) % 7  # W-SUN weeks run Mon..Sun
        origin = ((first_day - _EPOCH_WEEKDAY) % 7) * _DAY
    elif size % _WEEK == 0:
        origin = ((0 - _EPOCH_WEEKDAY) % 7) * _DAY  # weeks start on Monday
    else:
        origin = 0  # midnight
    return False, size, origin


def make_tick_grid(df_or_ds: Any, tick: str | pd.DateOffset, *, freq: Frequency | str) -> TickGrid:
    """Cut time into ticks aligned to the calendar, covering every timestamp of the data.

    Days start at midnight, weeks on Monday (or the day after a ``W-XXX`` anchor), months on the 1st,
    quarters and years on their first month (``12MS`` and ``YS`` start in January, ``YS-JUL`` in July).
    Alignment depends only on the tick, not on where the data starts, so a growing data set keeps its
    grid.

    Parameters
    ----------
    df_or_ds
        A frame with a ``ds`` column, or timestamps.
    tick
        A pandas offset or alias: ``"1D"``, ``"7D"``, ``"W-SUN"``, ``"28D"``, ``"MS"``, ``"12MS"``,
        ``"QS"``, ``"YS"``...
    freq
        The data's frequency; the tick must hold a whole number of its steps (month-based ticks over
        fixed steps are allowed: their ticks hold varying numbers of steps).

    Examples
    --------
    >>> ds = pd.date_range("2024-01-03 05:00", "2024-01-17", freq="h")
    >>> grid = make_tick_grid(ds, "7D", freq="h")
    >>> [str(b.date()) for b in grid.boundaries], len(grid)
    (['2024-01-01', '2024-01-08', '2024-01-15', '2024-01-22'], 3)
    >>> months = pd.date_range("1982-04-01", "1984-02-01", freq="MS")
    >>> [str(b.date()) for b in make_tick_grid(months, "12MS", freq="MS").boundaries]
    ['1982-01-01', '1983-01-01', '1984-01-01', '1985-01-01']
    """
    offset = _parse_offset(tick, "tick")
    frequency = Frequency.coerce(freq)
    calendar, size, origin = _tick_layout(offset)
    _check_tick(frequency, offset)

    if isinstance(df_or_ds, pd.DataFrame):
        if "ds" not in df_or_ds.columns:
            raise ValueError(f"make_tick_grid needs a 'ds' column; columns present: "
                             f"{', '.join(repr(str(c)) for c in df_or_ds.columns)}")
        values = df_or_ds["ds"]
    else:
        values = df_or_ds
    idx = pd.DatetimeIndex(np.atleast_1d(pd.to_datetime(values)))
    if idx.tz is not None:
        raise ValueError("timestamps must be tz-naive (validate converts time zones to UTC)")
    ns = _to_ns(idx)
    ns = ns[ns != _NAT]
    if len(ns) == 0:
        raise ValueError("make_tick_grid needs at least one timestamp")
    lo, hi = int(ns.min()), int(ns.max())
    if calendar:
        m_lo = int(np.datetime64(lo, "ns").astype("datetime64[M]").astype(np.int64))
        m_hi = int(np.datetime64(hi, "ns").astype("datetime64[M]").astype(np.int64))
        first = m_lo - ((m_lo - origin) % size)
        n_ticks = (m_hi - first) // size + 1
        months = first + size * np.arange(n_ticks + 1)
        edges = months.astype("datetime64[M]").astype("datetime64[ns]")
    else:
        first = lo - ((lo - origin) % size)
        n_ticks = (hi - first) // size + 1
        edges = (first + size * np.arange(n_ticks + 1, dtype=np.int64)).view("datetime64[ns]")
    return TickGrid(pd.DatetimeIndex(edges), offset)


def on_tick_grid(ds: Any, freq: Frequency | str, tick: str | pd.DateOffset) -> np.ndarray:
    """Whether each timestamp lies on the grid a project of this frequency and tick works on.

    The grid starts at the tick boundaries (midnight, Monday, the 1st...; see :func:`make_tick_grid`) and
    steps by ``freq``: hourly data on the hour, daily data at midnight, ``W-SUN`` data on Sundays at
    midnight, ``MS`` data on the first of the month.

    >>> on_tick_grid(pd.to_datetime(["2024-01-01 10:00", "2024-01-01 10:30"]), "h", "1D").tolist()
    [True, False]
    >>> on_tick_grid(pd.to_datetime(["2024-03-01", "2024-03-15"]), "MS", "12MS").tolist()
    [True, False]
    """
    frequency = Frequency.coerce(freq)
    ns = _to_ns(pd.DatetimeIndex(np.atleast_1d(pd.to_datetime(ds))))
    spec = frequency._spec
    if spec.calendar:
        months, where = _month_position(ns)
        on = where == (0 if spec.anchor == "start" else 1)
        return on & ((months - spec.phase) % spec.size == 0)
    return (ns - _grid_phase(spec, _parse_offset(tick, "tick"))) % spec.size == 0


def grid_offsets(ds: Any, freq: Frequency | str, tick: str | pd.DateOffset) -> np.ndarray | None:
    """How far each timestamp lies after the grid of :func:`on_tick_grid` (ns; 0 on the grid), for a frequency
    of fixed steps; None for a calendar frequency (months), whose grid is not a fixed step.

    One offset shared by a file's timestamps off the grid is a shifted clock (a time zone of +05:30, a logger
    stamping at :30), not data of another frequency.

    >>> grid_offsets(pd.to_datetime(["2024-01-01 10:30", "2024-01-01 11:30"]), "h", "1D") // 60_000_000_000
    array([30, 30])
    >>> grid_offsets(pd.to_datetime(["2024-03-01"]), "MS", "12MS") is None
    True
    """
    frequency = Frequency.coerce(freq)
    spec = frequency._spec
    if spec.calendar:
        return None
    ns = _to_ns(pd.DatetimeIndex(np.atleast_1d(pd.to_datetime(ds))))
    return (ns - _grid_phase(spec, _parse_offset(tick, "tick"))) % spec.size


def _grid_phase(spec: _Spec, tick: pd.DateOffset) -> int:
    """One instant (ns) of the data grid of fixed steps: the tick layout's origin (month-based ticks start at
    midnight), moved to the frequency's weekday for ``W-XXX`` data."""
    calendar, _, origin = _tick_layout(tick)
    phase = 0 if calendar else origin
    if spec.weekday is not None:
        phase_weekday = (_EPOCH_WEEKDAY + phase // _DAY) % 7
        phase += ((spec.weekday - phase_weekday) % 7) * _DAY
    return phase


def grid_stamps(freq: Frequency | str, tick: str | pd.DateOffset, start: Any, end: Any) -> np.ndarray:
    """The data grid's timestamps in ``[start, end)`` (``datetime64[ns]``) for a project of this frequency
    and tick: the grid :func:`on_tick_grid` accepts.

    >>> grid_stamps("W-SUN", "28D", "2024-01-01", "2024-01-29").astype("datetime64[D]").tolist()[:2]
    [datetime.date(2024, 1, 7), datetime.date(2024, 1, 14)]
    """
    frequency = Frequency.coerce(freq)
    lo, hi = pd.Timestamp(start).as_unit("ns").value, pd.Timestamp(end).as_unit("ns").value
    spec = frequency._spec
    if spec.calendar:
        return pd.date_range(pd.Timestamp(lo), pd.Timestamp(hi), freq=frequency.offset,
                             inclusive="left").as_unit("ns").to_numpy()
    phase = _grid_phase(spec, _parse_offset(tick, "tick"))
    first = lo + (phase - lo) % spec.size
    return np.arange(first, hi, spec.size, dtype=np.int64).view("datetime64[ns]")


def tick_alias(freq: Frequency | str, tick: str | pd.DateOffset | None = None) -> str:
    """The tick as the project names it (``"7D"``, ``"12MS"``...): ``tick``, else (None or "") the frequency's default
    (:meth:`Frequency.default_tick`); a tick that does not fit the frequency raises ValueError.

    >>> tick_alias("h"), tick_alias("D"), tick_alias("MS"), tick_alias("h", "1D")
    ('D', '7D', '12MS', 'D')
    >>> tick_alias("h", "90min")
    Traceback (most recent call last):
    ...
    ValueError: tick '90min' is not a whole number of 'h' steps
    """
    frequency = Frequency.coerce(freq)
    offset = frequency.default_tick() if tick is None or tick == "" else _parse_offset(tick, "tick")
    _check_tick(frequency, offset)
    return offset.freqstr


def default_train_window(freq: Frequency | str, tick: str | pd.DateOffset) -> int | None:
    """The default training window in ticks: four weeks of daily (or shorter) ticks, a year of weekly (or
    shorter) ticks, else all history (None).

    >>> default_train_window("h", "1D"), default_train_window("D", "7D"), default_train_window("MS", "12MS")
    (28, 52, None)
    """
    Frequency.coerce(freq)  # validates; the window depends on the tick's length only
    spec = _spec_from_offset(_parse_offset(tick, "tick"), "tick")
    if spec.calendar:
        return None
    if spec.size <= _DAY:
        return 28
    if spec.size <= _WEEK:
        return 52
    return None


# --------------------------------------------------------------------------------------------------------
# The agent's clock
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TickClock:
    """The agent's clock: frequency, tick length and the start of tick 0 (``origin``).

    Tick ``k`` covers ``[boundary(k), boundary(k + 1))``, for every integer ``k`` (negative before the
    origin): the clock never ends, so data that grows keeps its tick numbers. Boundaries follow the
    calendar as :func:`make_tick_grid` lays them (midnight, Monday, the 1st...), which ``origin`` must be one
    of. The live agent keeps the clock in its saved state (:meth:`to_arrays`), a backtest builds it from its
    data (:meth:`covering`).

    Examples
    --------
    >>> clock = TickClock("MS", "12MS", pd.Timestamp("1982-01-01"))
    >>> clock.boundaries(0, 2).strftime("%Y-%m-%d").tolist()
    ['1982-01-01', '1983-01-01', '1984-01-01']
    >>> clock.tick_of(pd.to_datetime(["1981-12-01", "1983-07-01"])).tolist(), clock.last_timestamp(1)
    ([-1, 1], Timestamp('1983-12-01 00:00:00'))
    >>> TickClock("h", "1D", pd.Timestamp("2024-01-01 06:00"))
    Traceback (most recent call last):
    ...
    ValueError: origin 2024-01-01 06:00:00 is not a boundary of 'D' ticks
    """

    freq: str
    tick: str
    origin: pd.Timestamp
    _frequency: Frequency = field(init=False, repr=False, compare=False)
    _layout: tuple[bool, int, int] = field(init=False, repr=False, compare=False)
    _first: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        frequency = Frequency.coerce(self.freq)
        offset = _parse_offset(self.tick, "tick")
        _check_tick(frequency, offset)
        origin = pd.Timestamp(self.origin).as_unit("ns")
        calendar, size, phase = _tick_layout(offset)
        if calendar:
            first = int(np.datetime64(origin.value, "ns").astype("datetime64[M]").astype(np.int64))
            on = origin == pd.Timestamp(np.datetime64(first, "M")) and (first - phase) % size == 0
        else:
            first = int(origin.value)
            on = (first - phase) % size == 0
        if not on:
            raise ValueError(f"origin {origin} is not a boundary of {offset.freqstr!r} ticks")
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "_frequency", frequency)
        object.__setattr__(self, "_layout", (calendar, size, phase))
        object.__setattr__(self, "_first", first)

    @classmethod
    def covering(cls, freq: Frequency | str, tick: str | pd.DateOffset | None, first: Any) -> TickClock:
        """The clock whose tick 0 holds the timestamp ``first`` (the project's oldest observation); ``tick``
        None takes the frequency's default tick."""
        frequency = Frequency.coerce(freq)
        alias = tick_alias(frequency, tick)
        grid = make_tick_grid(pd.DatetimeIndex([pd.Timestamp(first)]), alias, freq=frequency)
        return cls(frequency.alias, alias, grid.boundaries[0])

    # -- what it is made of -------------------------------------------------------------------------------
    @property
    def frequency(self) -> Frequency:
        return self._frequency

    @property
    def tick_offset(self) -> pd.DateOffset:
        return _parse_offset(self.tick, "tick")

    @property
    def season_length(self) -> int:
        """The season of the data (:func:`season_length`)."""
        return int(self._frequency.season_length)

    @property
    def tick_season(self) -> int:
        """Ticks in one season of the tick clock itself, by the same rule (:func:`season_length` of the tick):
        7 for daily ticks (a week), 1 for yearly ones. A stream's rhythm of silent ticks (a shop's weekends)
        recurs at this distance (:class:`mlma.silence.Silence`).

        >>> origin = pd.Timestamp("2024-01-01")
        >>> TickClock("h", "D", origin).tick_season, TickClock("MS", "12MS", origin).tick_season
        (7, 1)
        """
        return season_length(self.tick)

    # -- ticks --------------------------------------------------------------------------------------------
    def boundaries(self, first: int, last: int) -> pd.DatetimeIndex:
        """Starts of ticks ``first..last`` (``last`` included: it is the end of tick ``last - 1``)."""
        if last < first:
            raise ValueError(f"last ({last}) must be >= first ({first})")
        k = np.arange(int(first), int(last) + 1, dtype=np.int64)
        calendar, size, _ = self._layout
        if calendar:
            edges = (self._first + size * k).astype("datetime64[M]").astype("datetime64[ns]")
        else:
            edges = (self._first + size * k).view("datetime64[ns]")
        return pd.DatetimeIndex(edges)

    def boundary(self, k: int) -> pd.Timestamp:
        """The start of tick ``k``."""
        return self.boundaries(k, k)[0]

    def tick_of(self, ds: Any):
        """The tick each timestamp falls in (an int for one timestamp, else an int64 array)."""
        scalar = np.ndim(ds) == 0 and not isinstance(ds, (pd.Index, pd.Series, np.ndarray))
        ns = _to_ns(pd.DatetimeIndex(np.atleast_1d(pd.to_datetime(ds))))
        calendar, size, _ = self._layout
        if calendar:
            months = ns.view("datetime64[ns]").astype("datetime64[M]").view(np.int64)
            k = (months - self._first) // size
        else:
            k = (ns - self._first) // size
        return int(k[0]) if scalar else k.astype(np.int64)

    def grid(self, first: int, last: int) -> TickGrid:
        """Ticks ``first..last - 1`` as a :class:`TickGrid` (its tick ``j`` is this clock's ``first + j``)."""
        return TickGrid(self.boundaries(first, last), self.tick_offset)

    # -- the data grid inside ticks -----------------------------------------------------------------------
    def stamps(self, first: int, last: int) -> np.ndarray:
        """The data grid's timestamps of ticks ``first..last - 1`` (``datetime64[ns]``)."""
        return grid_stamps(self._frequency, self.tick, self.boundary(first), self.boundary(last))

    def steps_in_tick(self, k: int) -> int:
        """Grid timestamps in tick ``k`` (24 for a day of hourly data)."""
        return len(self.stamps(k, k + 1))

    def last_timestamp(self, k: int) -> pd.Timestamp:
        """The last grid timestamp inside tick ``k``: when it is in, the tick's actuals are complete."""
        return pd.Timestamp(self.stamps(k, k + 1)[-1])

    def complete_ticks(self, newest: Any) -> int:
        """How many ticks data whose newest timestamp is ``newest`` has reached the end of: the ticks before the
        returned one are complete (their last timestamp is in), the one it falls in only once ``newest`` is its
        last. The one rule of when a tick can run, live and in a backtest.

        >>> clock = TickClock("h", "1D", "2025-01-01")
        >>> clock.complete_ticks("2025-01-03 22:00"), clock.complete_ticks("2025-01-03 23:00")
        (2, 3)
        """
        complete = int(self.tick_of(newest))
        return complete + 1 if pd.Timestamp(newest) >= self.last_timestamp(complete) else complete

    def horizon(self) -> int:
        """Grid steps forecast at each tick: the most any tick holds (month-based ticks over fixed steps
        vary; the longest is found over the first 60 ticks)."""
        return self.most_steps(1)

    def most_steps(self, ticks: int) -> int:
        """The most grid steps any ``ticks`` consecutive ticks hold: what a training window of that many ticks
        can hold at best. Exact multiples for ticks of one length; month-based ticks over fixed steps are
        scanned over 60 windows.

        >>> TickClock("h", "1D", "2025-01-01").most_steps(28)
        672
        >>> TickClock("W-SUN", "MS", "2025-01-01").most_steps(24)  # 24 months of weeks: 105, not 24 x 5
        105
        """
        calendar, _, _ = self._layout
        if calendar == self._frequency.is_calendar:
            return self._frequency.steps_per(self.tick_offset) * int(ticks)
        edges = self.boundaries(0, _HORIZON_SCAN + int(ticks)).asi8
        step = self._frequency._spec.size
        phase = _grid_phase(self._frequency._spec, self.tick_offset)
        # Grid stamps before an instant t: ceil((t - phase) / step), counted from the phase.
        before = -((phase - edges) // step)
        return int((before[ticks:] - before[:-ticks]).max())

    def train_window(self) -> int | None:
        """The default training window in ticks (:func:`default_train_window`)."""
        return default_train_window(self._frequency, self.tick_offset)

    # -- saved with the agent's state ---------------------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"meta.freq": np.array(self.freq), "meta.tick": np.array(self.tick),
                "meta.origin": np.array(self.origin.to_datetime64(), dtype="datetime64[ns]")}

    @classmethod
    def from_arrays(cls, arrays) -> TickClock:
        return cls(str(arrays["meta.freq"]), str(arrays["meta.tick"]), pd.Timestamp(arrays["meta.origin"][()]))


def _check_tick(frequency: Frequency, offset: pd.DateOffset) -> None:
    """Raise ValueError when ticks of ``offset`` do not hold a whole number of ``frequency``'s steps
    (month-based ticks over fixed steps of at most 28 days are allowed: they hold varying numbers)."""
    calendar, _, _ = _tick_layout(offset)
    if frequency.is_calendar:
        if not calendar:
            raise ValueError(f"tick={offset.freqstr!r} is fixed-length but freq={frequency.alias!r} is "
                             f"month-based; use a month-based tick such as '12MS' or 'YS'")
        frequency.steps_per(offset)  # raises when not a whole number of steps
    elif not calendar:
        frequency.steps_per(offset)
    elif frequency.step is not None and frequency.step > pd.Timedelta(days=28):
        raise ValueError(f"tick={offset.freqstr!r} is shorter than one {frequency.alias!r} step")
