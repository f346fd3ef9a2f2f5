"""Grid regularisation and the lag / rolling-mean / calendar features shared by the regression models.

The feature models use a *direct* strategy: one regression for all steps of the horizon, using only lags of at
least ``horizon`` steps (and rolling means that end ``horizon`` steps back), so every feature of every
forecast row is known at the forecast origin and no recursion is needed (Ben Taieb et al., 2012, "A review and
comparison of strategies for multi-step ahead time series forecasting", Expert Systems with Applications 39).

Each history is first placed on its frequency grid (:func:`regularise`) so that lag ``k`` means ``k`` grid
steps even when timestamps are missing. A lag whose value is missing takes the most recent value at the same
phase of the season before it (:func:`seasonal_ffill`), so a zone's missing hour borrows yesterday's value at
that hour; a rolling mean whose window is empty takes the last available one.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pandas.tseries import offsets as _off
from pandas.tseries.frequencies import to_offset

from mlma.calendar import Frequency
from mlma.models.base import ForecastContext

__all__ = [
    "FreqInfo",
    "freq_info",
    "grid_positions",
    "Grid",
    "regularise",
    "seasonal_ffill",
    "forward_fill",
    "seasonal_ffill_rows",
    "forward_fill_rows",
    "calendar_codes",
    "FeatureSpec",
    "FeatureBuilder",
    "holiday_flags",
    "check_holiday_country",
    "supported_calendar",
]

_NS_PER_DAY = 86_400 * 10**9
_MONTHLY = (_off.MonthBegin, _off.MonthEnd, _off.BusinessMonthBegin, _off.BusinessMonthEnd)
_QUARTERLY = (_off.QuarterBegin, _off.QuarterEnd, _off.BQuarterBegin, _off.BQuarterEnd)
_YEARLY = (_off.YearBegin, _off.YearEnd, _off.BYearBegin, _off.BYearEnd)

CALENDAR_CARDINALITY = {"day_of_week": 7, "month": 12, "quarter": 4}


@dataclass(frozen=True)
class FreqInfo:
    """How a pandas frequency maps timestamps to integer grid positions.

    Exactly one of ``step_ns`` (a fixed step: ticks, days, weeks) and ``months`` (month-based offsets) is set;
    neither for other offsets (business days, custom calendars), which are placed with ``pd.date_range``.
    """

    freq: str
    step_ns: int | None
    months: int | None

    @property
    def is_subdaily(self) -> bool:
        return self.step_ns is not None and self.step_ns < _NS_PER_DAY

    @property
    def is_daily(self) -> bool:
        """Calendar or business days."""
        return self.step_ns == _NS_PER_DAY or isinstance(to_offset(self.freq), _off.BusinessDay)

    @property
    def steps_per_day(self) -> int | None:
        if self.is_subdaily and _NS_PER_DAY % self.step_ns == 0:
            return _NS_PER_DAY // self.step_ns
        return None

    @property
    def steps_per_week(self) -> int | None:
        if self.step_ns is not None and (7 * _NS_PER_DAY) % self.step_ns == 0:
            return 7 * _NS_PER_DAY // self.step_ns
        return None


@functools.lru_cache(maxsize=256)
def freq_info(freq: str) -> FreqInfo:
    """Classify a pandas offset alias (cached: every forecast of a fleet asks for the same one).

    Examples
    --------
    >>> freq_info("30min").step_ns // 60_000_000_000, freq_info("30min").steps_per_day
    (30, 48)
    >>> freq_info("W-MON").steps_per_week, freq_info("QS").months
    (1, 3)
    """
    try:
        frequency = Frequency(freq)  # the project's calendar knows every frequency a project's data can have
    except ValueError:
        frequency = None
    if frequency is not None:
        step = frequency.step
        return FreqInfo(freq, step_ns=None if step is None else int(step.value), months=frequency.months)
    offset = to_offset(freq)  # business days and other offsets a model may be given directly
    for classes, months in ((_MONTHLY, 1), (_QUARTERLY, 3), (_YEARLY, 12)):
        if isinstance(offset, classes):
            return FreqInfo(freq, step_ns=None, months=months * offset.n)
    try:
        step = pd.Timedelta(offset).value
    except (ValueError, TypeError):
        return FreqInfo(freq, step_ns=None, months=None)
    return FreqInfo(freq, step_ns=int(step), months=None)


def grid_positions(ds: np.ndarray, freq: str | FreqInfo) -> np.ndarray:
    """Integer position of each timestamp on the ``freq`` grid.

    Consecutive grid timestamps get consecutive integers, so differences of positions count grid steps.
    Timestamps off the grid are floored onto it. Positions are absolute for fixed-step and month-based
    frequencies; for other offsets (e.g. business days) they are relative to the earliest timestamp, so
    compare only positions computed in one call.

    Examples
    --------
    >>> ds = np.array(["2024-01-01T00", "2024-01-01T01", "2024-01-01T05"], dtype="datetime64[ns]")
    >>> p = grid_positions(ds, "h"); (p - p[0]).tolist()
    [0, 1, 5]
    >>> ms = np.array(["2024-01-01", "2024-03-01", "2025-01-01"], dtype="datetime64[ns]")
    >>> p = grid_positions(ms, "MS"); (p - p[0]).tolist()
    [0, 2, 12]
    """
    info = freq if isinstance(freq, FreqInfo) else freq_info(freq)
    ds = np.asarray(ds, dtype="datetime64[ns]")
    if info.step_ns is not None:
        return ds.view(np.int64) // info.step_ns
    if info.months is not None:
        return ds.astype("datetime64[M]").view(np.int64) // info.months
    if ds.size == 0:
        return np.zeros(0, dtype=np.int64)
    grid = pd.date_range(start=ds.min(), end=ds.max(), freq=info.freq)
    if len(grid) == 0 or grid[0] > ds.min():
        # The earliest timestamp is off the grid: start one step before it so that flooring works.
        grid = pd.date_range(end=ds.max(), start=ds.min() - to_offset(info.freq), freq=info.freq)
    return np.searchsorted(grid.values, ds, side="right").astype(np.int64) - 1


def forward_fill(values: np.ndarray) -> np.ndarray:
    """Replace each NaN by the last finite value before it (leading NaN stay NaN).

    Examples
    --------
    >>> forward_fill(np.array([np.nan, 1.0, np.nan, 3.0, np.nan])).tolist()
    [nan, 1.0, 1.0, 3.0, 3.0]
    """
    values = np.asarray(values, dtype=np.float64)
    idx = np.where(np.isfinite(values), np.arange(values.size), -1)
    np.maximum.accumulate(idx, out=idx)
    out = values[np.maximum(idx, 0)]
    out[idx < 0] = np.nan
    return out


def seasonal_ffill(values: np.ndarray, season_length: int) -> np.ndarray:
    """Replace each NaN by the most recent finite value at the same phase of an earlier season.

    With ``season_length=1`` this is an ordinary forward fill. Values without any earlier same-phase value stay
    NaN.

    Examples
    --------
    >>> v = np.array([1.0, 2.0, 3.0, np.nan, 5.0, np.nan, np.nan, np.nan, np.nan])
    >>> seasonal_ffill(v, 3).tolist()
    [1.0, 2.0, 3.0, 1.0, 5.0, 3.0, 1.0, 5.0, 3.0]
    """
    values = np.asarray(values, dtype=np.float64)
    n, m = values.size, int(season_length)
    if m <= 1:
        return forward_fill(values)
    rows = -(-n // m)
    padded = np.full(rows * m, np.nan)
    padded[:n] = values
    table = padded.reshape(rows, m)
    idx = np.where(np.isfinite(table), np.arange(rows)[:, None], -1)
    np.maximum.accumulate(idx, axis=0, out=idx)
    filled = table[np.maximum(idx, 0), np.arange(m)[None, :]]
    filled[idx < 0] = np.nan
    return filled.reshape(-1)[:n]


def forward_fill_rows(values: np.ndarray) -> np.ndarray:
    """:func:`forward_fill` of each row of a 2-D array (many streams on one grid) at once.

    Examples
    --------
    >>> forward_fill_rows(np.array([[np.nan, 1.0, np.nan], [2.0, np.nan, 3.0]])).tolist()
    [[nan, 1.0, 1.0], [2.0, 2.0, 3.0]]
    """
    values = np.asarray(values, dtype=np.float64)
    idx = np.where(np.isfinite(values), np.arange(values.shape[1])[None, :], -1)
    np.maximum.accumulate(idx, axis=1, out=idx)
    out = np.take_along_axis(values, np.maximum(idx, 0), axis=1)
    out[idx < 0] = np.nan
    return out


def seasonal_ffill_rows(values: np.ndarray, season_length: int) -> np.ndarray:
    """:func:`seasonal_ffill` of each row of a 2-D array at once.

    Which values share a phase depends only on their distance (a multiple of the season), so a row that
    starts with NaN columns before its first value gets the same values as the row's own grid would.

    Examples
    --------
    >>> v = np.array([[1.0, 2.0, 3.0, np.nan, 5.0, np.nan, np.nan], [np.nan, np.nan, 1.0, np.nan, np.nan, np.nan, 4.0]])
    >>> seasonal_ffill_rows(v, 3).tolist()
    [[1.0, 2.0, 3.0, 1.0, 5.0, 3.0, 1.0], [nan, nan, 1.0, nan, nan, 1.0, 4.0]]
    """
    values = np.asarray(values, dtype=np.float64)
    n, width = values.shape
    m = int(season_length)
    if m <= 1:
        return forward_fill_rows(values)
    seasons = -(-width // m)
    padded = np.full((n, seasons * m), np.nan)
    padded[:, :width] = values
    table = padded.reshape(n, seasons, m)
    idx = np.where(np.isfinite(table), np.arange(seasons)[None, :, None], -1)
    np.maximum.accumulate(idx, axis=1, out=idx)
    filled = np.take_along_axis(table, np.maximum(idx, 0), axis=1)
    filled[idx < 0] = np.nan
    return filled.reshape(n, -1)[:, :width]


@dataclass
class Grid:
    """One stream's history (and optionally its forecast timestamps) laid on the frequency grid.

    ``y`` covers grid positions ``start .. start + len(y) - 1`` with NaN where nothing was observed and at
    every forecast position. ``hist_rows``/``future_rows`` are the grid indices of the given timestamps.
    """

    start: int
    y: np.ndarray
    hist_rows: np.ndarray
    future_rows: np.ndarray | None = None


def regularise(
    ds: np.ndarray, y: np.ndarray, freq: str | FreqInfo, future_ds: np.ndarray | None = None, *,
    positions: np.ndarray | None = None, future_positions: np.ndarray | None = None,
) -> Grid:
    """Place a history (and the timestamps to forecast) on the frequency grid.

    Parameters
    ----------
    ds, y
        The history: timestamps (any order) and values; NaN values count as missing.
    freq
        pandas offset alias, or a :class:`FreqInfo`.
    future_ds
        Timestamps to forecast; the grid is extended to cover them, with NaN values.
    positions, future_positions
        The grid positions of ``ds`` and ``future_ds`` when the caller knows them already (the agent's
        :class:`~mlma.fleet.FleetData` holds every row's position on the fleet's grid): no timestamp is
        converted then. Any integers that count grid steps will do; only differences matter.

    Raises
    ------
    ValueError
        If two history timestamps fall on the same grid slot.

    Examples
    --------
    >>> ds = np.array(["2024-01-01T00", "2024-01-01T01", "2024-01-01T03"], dtype="datetime64[ns]")
    >>> g = regularise(ds, np.array([1.0, 2.0, 4.0]), "h", future_ds=ds[-1:] + np.timedelta64(2, "h"))
    >>> g.y.tolist(), g.hist_rows.tolist(), g.future_rows.tolist()
    ([1.0, 2.0, nan, 4.0, nan, nan], [0, 1, 3], [5])
    >>> g2 = regularise(ds, np.array([1.0, 2.0, 4.0]), "h", positions=np.array([7, 8, 10]),
    ...                 future_positions=np.array([12]))
    >>> g2.y.tolist() == g.y.tolist(), g2.start
    (False, 7)
    """
    if future_ds is not None and future_positions is None and positions is not None:
        raise ValueError("give future_positions with positions (or neither)")
    if positions is None:
        info = freq if isinstance(freq, FreqInfo) else freq_info(freq)
        ds = np.asarray(ds, dtype="datetime64[ns]")
        stamps = ds if future_ds is None else np.concatenate([ds, np.asarray(future_ds, dtype="datetime64[ns]")])
        pos = grid_positions(stamps, info)
        name = info.freq
    else:
        pos = np.asarray(positions, dtype=np.int64)
        if future_positions is not None:
            pos = np.concatenate([pos, np.asarray(future_positions, dtype=np.int64)])
        name = freq.freq if isinstance(freq, FreqInfo) else freq
    n_hist = len(ds) if positions is None else len(positions)
    if pos.size == 0:
        has_future = future_ds is not None or future_positions is not None
        return Grid(0, np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64) if has_future else None)
    start = int(pos.min())
    rows = pos - start
    hist_rows = rows[:n_hist]
    # Histories arrive sorted: strictly increasing rows prove there is no shared slot without a sort.
    if n_hist > 1 and not (np.diff(hist_rows) > 0).all():
        shared = n_hist - np.unique(hist_rows).size
        if shared:
            raise ValueError(
                f"ds has {shared} timestamp(s) falling on an already used "
                f"{name!r} grid slot; aggregate duplicates before forecasting"
            )
    values = np.full(int(rows.max()) + 1, np.nan)
    values[hist_rows] = y
    has_future = future_ds is not None or future_positions is not None
    return Grid(start, values, hist_rows, rows[n_hist:] if has_future else None)


def calendar_codes(ds: np.ndarray, name: str, info: FreqInfo) -> np.ndarray:
    """Integer calendar codes of timestamps: ``slot_of_day``, ``day_of_week`` (Monday = 0), ``month`` (0-11)
    or ``quarter`` (0-3).

    Examples
    --------
    >>> ds = np.array(["2024-01-01T00:30", "2024-06-15T13:00"], dtype="datetime64[ns]")  # a Monday, a Saturday
    >>> [calendar_codes(ds, c, freq_info("30min")).tolist() for c in ("slot_of_day", "day_of_week", "month")]
    [[1, 26], [0, 5], [0, 5]]
    """
    ds = np.asarray(ds, dtype="datetime64[ns]")
    if name == "slot_of_day":
        if not info.is_subdaily:
            raise ValueError(f"slot_of_day needs a sub-daily frequency, got {info.freq!r}")
        ns = ds.view(np.int64)
        return (ns % _NS_PER_DAY) // info.step_ns
    if name == "day_of_week":
        return (ds.astype("datetime64[D]").view(np.int64) + 3) % 7  # 1970-01-01 was a Thursday
    if name == "month":
        return ds.astype("datetime64[M]").view(np.int64) % 12
    if name == "quarter":
        return (ds.astype("datetime64[M]").view(np.int64) % 12) // 3
    raise ValueError(f"unknown calendar feature {name!r}; choose from slot_of_day, day_of_week, month, quarter")


def _split_country(country: str) -> tuple[str, str | None]:
    code, _, subdiv = country.strip().partition("-")
    return code.upper(), (subdiv.upper() or None)


def check_holiday_country(country) -> str:
    """Validate a public-holiday calendar name for the ``holidays`` package: an ISO 3166-1 country code,
    optionally with a subdivision (``"DE"``, ``"US-CA"``, ``"AU-VIC"``). Returns it normalised.

    Examples
    --------
    >>> check_holiday_country("de"), check_holiday_country("AU-VIC")
    ('DE', 'AU-VIC')
    >>> check_holiday_country("XX")
    Traceback (most recent call last):
    ...
    ValueError: holidays='XX': the holidays package has no calendar for country 'XX' (use an ISO 3166-1 code such as 'DE', optionally with a subdivision: 'US-CA')
    >>> check_holiday_country("DE-XX")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: holidays='DE-XX': country 'DE' has no subdivision 'XX' in the holidays package (it has ...)
    """
    import holidays

    if not isinstance(country, str) or not country.strip():
        raise ValueError(f"holidays must be a country code such as 'DE' or 'US-CA', got {country!r}")
    code, subdiv = _split_country(country)
    try:
        holidays.country_holidays(code, years=2000)
    except NotImplementedError:
        raise ValueError(f"holidays={country!r}: the holidays package has no calendar for country {code!r} (use "
                         "an ISO 3166-1 code such as 'DE', optionally with a subdivision: 'US-CA')") from None
    except (ValueError, KeyError) as exc:
        raise ValueError(f"holidays={country!r}: {exc}") from None
    if subdiv is not None:
        try:
            holidays.country_holidays(code, subdiv=subdiv, years=2000)
        except (NotImplementedError, ValueError, KeyError):
            known = sorted(holidays.country_holidays(code, years=2000).subdivisions)
            raise ValueError(f"holidays={country!r}: country {code!r} has no subdivision {subdiv!r} in the holidays "
                             f"package" + (f" (it has {', '.join(known[:12])}" + (", ..." if len(known) > 12 else "")
                                           + ")" if known else "")) from None
    return code if subdiv is None else f"{code}-{subdiv}"


def holiday_flags(ds: np.ndarray, country: str) -> np.ndarray:
    """1.0 where the timestamp's date is a public holiday of ``country`` (see :func:`check_holiday_country`),
    else 0.0. Holidays are known years ahead, so this is a calendar feature of the forecast timestamp.

    Examples
    --------
    >>> ds = np.array(["2024-12-24", "2024-12-25", "2024-12-26T13:00"], dtype="datetime64[ns]")
    >>> holiday_flags(ds, "DE").tolist()
    [0.0, 1.0, 1.0]
    """
    import holidays

    ds = np.asarray(ds, dtype="datetime64[ns]")
    if ds.size == 0:
        return np.zeros(0)
    days = ds.astype("datetime64[D]")
    years = range(int(str(days.min())[:4]), int(str(days.max())[:4]) + 1)
    code, subdiv = _split_country(country)
    calendar = holidays.country_holidays(code, subdiv=subdiv, years=years)
    dates = np.array(sorted(calendar.keys()), dtype="datetime64[D]")
    return np.isin(days, dates).astype(np.float64)


# Grid steps of one cycle of each calendar feature, as a timedelta: a feature is estimable from a window that
# spans at least two cycles.
_CALENDAR_CYCLE = {
    "slot_of_day": np.timedelta64(1, "D"),
    "day_of_week": np.timedelta64(7, "D"),
    "month": np.timedelta64(365, "D"),
    "quarter": np.timedelta64(365, "D"),
}


def supported_calendar(calendar: tuple[str, ...], ds: np.ndarray, min_cycles: int = 2) -> tuple[str, ...]:
    """The calendar features whose cycle the timestamps ``ds`` span at least ``min_cycles`` times.

    A month-of-year dummy fitted on one year of data is estimated from a single occurrence of each month, at
    the window's edge: it mostly fits the noise of that month, and re-trainings that move the window shift
    all such coefficients at once. The default models therefore keep a calendar feature only when their
    training window holds two cycles of it.

    Examples
    --------
    >>> year = np.arange("2024-01-01", "2024-12-30", dtype="datetime64[D]").astype("datetime64[ns]")
    >>> supported_calendar(("day_of_week", "month"), year)
    ('day_of_week',)
    >>> two = np.arange("2023-01-01", "2024-12-31", dtype="datetime64[D]").astype("datetime64[ns]")
    >>> supported_calendar(("day_of_week", "month"), two)
    ('day_of_week', 'month')
    """
    ds = np.asarray(ds, dtype="datetime64[ns]")
    if ds.size == 0:
        return ()
    # The span counts the last timestamp's own step, so 730 daily rows are two years.
    span = ds.max() - ds.min() + (np.diff(np.sort(ds)).min() if ds.size > 1 else np.timedelta64(0, "ns"))
    # 3 % slack: 24 monthly rows span 728 days, not 730.
    return tuple(name for name in calendar if span >= 0.97 * min_cycles * _CALENDAR_CYCLE[name])


def _default_calendar(info: FreqInfo) -> tuple[str, ...]:
    if info.is_subdaily:
        return ("slot_of_day", "day_of_week") if info.steps_per_day else ("day_of_week",)
    if info.is_daily:
        return ("day_of_week", "month")
    if info.step_ns is not None and info.steps_per_week == 1:
        return ("month",)
    if info.months == 1:
        return ("month",)
    if info.months == 3:
        return ("quarter",)
    return ()


def _default_lags(ctx: ForecastContext, info: FreqInfo) -> tuple[int, ...]:
    h, m = ctx.horizon, ctx.season_length
    if m == 1:
        return tuple(range(h, h + 4))
    first = m * (-(-h // m))  # the first whole-season lag that is known at the origin
    if info.is_subdaily:
        last = max(first, info.steps_per_week or 7 * m)  # daily lags up to a week: the weekly cycle
    elif info.is_daily:
        last = first + 3 * m  # four weeks
    elif m <= 12:
        last = first + m  # two years of monthly or quarterly data
    else:
        last = first  # one year of weekly data
    return tuple(sorted({h, *range(first, last + 1, m)}))


def _default_windows(ctx: ForecastContext, info: FreqInfo) -> tuple[int, ...]:
    m = ctx.season_length
    if m == 1:
        return (4,)
    if info.is_subdaily and info.steps_per_week and info.steps_per_week != m:
        return (m, info.steps_per_week)
    if info.is_daily:
        return (m, 4 * m)
    return (m,)


#: How each list of a :class:`FeatureSpec` is written in a model spec, for the message when it is not a list.
_EXAMPLES = {"lags": "[24, 168]", "windows": "[24]", "calendar": "[day_of_week]"}


def _listed(name: str, given: Any) -> tuple:
    """``given`` as a tuple, or an error saying how to write it: ``ridge:lags=7`` was "'int' object is not
    iterable", and ``calendar=day_of_week`` an unknown calendar feature 'd'."""
    if isinstance(given, (str, bytes, int, float)):
        raise ValueError(f"{name} must be a list, e.g. {name}={_EXAMPLES[name]}, got {given!r}")
    return tuple(given)


@dataclass(frozen=True)
class FeatureSpec:
    """Which features a regression model is given.

    Parameters
    ----------
    freq, season_length, horizon
        As in :class:`~mlma.models.ForecastContext`.
    lags
        Lags in grid steps, each at least ``horizon`` so that it is known at the forecast origin.
    windows
        Widths of rolling means of the values ending ``horizon`` steps before the target.
    calendar
        Calendar features of the target timestamp (see :func:`calendar_codes`).
    calendar_encoding
        ``"onehot"`` (one column per category: linear models) or ``"ordinal"`` (one integer column: trees).
    holidays
        A public-holiday calendar (``"DE"``, ``"US-CA"``; see :func:`check_holiday_country`): adds a 0/1
        column that marks the target timestamps falling on a public holiday. None: no such column.
    future_drivers, historical_drivers
        Names of the exogenous drivers (:class:`~mlma.models.Drivers`): a future driver's column is its value
        at the target timestamp; a historical driver's is its value ``horizon`` steps before the target (the
        last one known at the origin). Missing driver values take the last known value on the grid.

    Examples
    --------
    >>> spec = FeatureSpec.for_context(ForecastContext("h", 24, 24))
    >>> spec.lags, spec.windows, spec.calendar
    ((24, 48, 72, 96, 120, 144, 168), (24, 168), ('slot_of_day', 'day_of_week'))
    >>> FeatureSpec.for_context(ForecastContext("D", 7, 14)).lags
    (14, 21, 28, 35)
    >>> FeatureSpec.for_context(ForecastContext("h", 24, 24), lags=[1, 24])
    Traceback (most recent call last):
    ...
    ValueError: lags must all be >= horizon=24 (direct strategy: known at the origin), got [1]
    """

    freq: str
    season_length: int
    horizon: int
    lags: tuple[int, ...]
    windows: tuple[int, ...]
    calendar: tuple[str, ...]
    calendar_encoding: str = "onehot"
    holidays: str | None = None
    future_drivers: tuple[str, ...] = ()
    historical_drivers: tuple[str, ...] = ()
    info: FreqInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "info", freq_info(self.freq))
        try:
            lags = tuple(int(k) for k in self.lags)
        except (TypeError, ValueError):  # text from a spec ("lightgbm:lags=x"): named, not int()'s message
            raise ValueError(f"lags must be whole numbers of steps, got {self.lags!r}") from None
        short = [k for k in lags if k < self.horizon]
        if short:
            raise ValueError(
                f"lags must all be >= horizon={self.horizon} (direct strategy: known at the origin), got {short}"
            )
        if not lags and not self.windows:
            raise ValueError("give at least one lag or one window")
        bad = [w for w in self.windows if int(w) < 1]
        if bad:
            raise ValueError(f"windows must be positive widths, got {bad}")
        if self.calendar_encoding not in ("onehot", "ordinal"):
            raise ValueError(f"calendar_encoding must be 'onehot' or 'ordinal', got {self.calendar_encoding!r}")
        for name in self.calendar:
            if name not in CALENDAR_CARDINALITY and name != "slot_of_day":
                raise ValueError(
                    f"unknown calendar feature {name!r}; choose from slot_of_day, day_of_week, month, quarter"
                )
            if name == "slot_of_day" and not self.info.steps_per_day:
                raise ValueError(f"slot_of_day needs a sub-daily frequency dividing a day, got {self.freq!r}")
        if self.holidays is not None:
            object.__setattr__(self, "holidays", check_holiday_country(self.holidays))
        object.__setattr__(self, "future_drivers", tuple(self.future_drivers))
        object.__setattr__(self, "historical_drivers", tuple(self.historical_drivers))
        object.__setattr__(self, "lags", tuple(sorted(set(lags))))
        object.__setattr__(self, "windows", tuple(sorted({int(w) for w in self.windows})))
        object.__setattr__(self, "calendar", tuple(self.calendar))

    @classmethod
    def for_context(
        cls,
        ctx: ForecastContext,
        *,
        lags=None,
        windows=None,
        calendar=None,
        calendar_encoding: str = "onehot",
        holidays: str | None = None,
        use_drivers: bool = True,
    ) -> FeatureSpec:
        """Default features for a context; any of ``lags``, ``windows``, ``calendar`` may be overridden.

        Defaults: lag ``horizon`` plus whole-season lags from the first one known at the origin, up to one week
        for sub-daily data, four weeks for daily data, two seasons for monthly and quarterly data and one for
        weekly data; rolling means over one season and one week (sub-daily), one and four weeks (daily) or one
        season; the calendar features that fit the frequency (slot of the day and day of the week for sub-daily
        data, day of the week and month for daily, month for weekly and monthly, quarter for quarterly; a model
        keeps only those its training window spans twice, see :func:`supported_calendar`); the context's
        drivers unless ``use_drivers`` is False.
        """
        info = freq_info(ctx.freq)
        drivers = ctx.drivers if use_drivers else None
        return cls(
            freq=ctx.freq,
            season_length=ctx.season_length,
            horizon=ctx.horizon,
            lags=_default_lags(ctx, info) if lags is None else _listed("lags", lags),
            windows=_default_windows(ctx, info) if windows is None else _listed("windows", windows),
            calendar=_default_calendar(info) if calendar is None else _listed("calendar", calendar),
            calendar_encoding=calendar_encoding,
            holidays=holidays,
            future_drivers=drivers.future if drivers else (),
            historical_drivers=drivers.historical if drivers else (),
        )

    def with_calendar(self, calendar: tuple[str, ...]) -> FeatureSpec:
        """This spec with other calendar features."""
        return FeatureSpec(self.freq, self.season_length, self.horizon, self.lags, self.windows, tuple(calendar),
                           self.calendar_encoding, self.holidays, self.future_drivers, self.historical_drivers)

    @property
    def n_drivers(self) -> int:
        return len(self.future_drivers) + len(self.historical_drivers)

    @property
    def lookback(self) -> int:
        """Grid steps of history behind the first row that has every lag and window (rolling means may
        still be partial there: they average whatever their window holds)."""
        return max(max(self.lags, default=0), self.horizon)

    def cardinality(self, name: str) -> int:
        if name == "slot_of_day":
            return int(self.info.steps_per_day)
        return CALENDAR_CARDINALITY[name]

    @property
    def n_value_features(self) -> int:
        """Number of columns computed from past values (lags, then windows); they lead the matrix."""
        return len(self.lags) + len(self.windows)

    def feature_names(self, relative_drivers: bool = False) -> list[str]:
        names = [f"lag_{k}" for k in self.lags] + [f"mean_{w}_lag_{self.horizon}" for w in self.windows]
        for name in self.calendar:
            if self.calendar_encoding == "onehot":
                names += [f"{name}={c}" for c in range(self.cardinality(name))]
            else:
                names.append(name)
        if self.holidays:
            names.append(f"holiday_{self.holidays}")
        drivers = list(self.future_drivers) + [f"{d}_lag_{self.horizon}" for d in self.historical_drivers]
        if relative_drivers:
            drivers = [f"{d}-recent_mean" for d in drivers]
        return names + drivers + [f"{d}*seasonal" for d in drivers]

    @property
    def seasonal_lags(self) -> tuple[int, ...]:
        """The whole-season lags (all lags when there is no seasonality or none is a whole season)."""
        m = self.season_length
        whole = tuple(k for k in self.lags if m > 1 and k % m == 0)
        return whole or self.lags


class FeatureBuilder:
    """Build design matrices for training (history rows) and forecasting (future rows) from a FeatureSpec.

    Column order: lags, rolling means, calendar (and the holiday flag), drivers, drivers x seasonal reference.
    ``level_window`` names one rolling-mean width whose value (the local level) is also returned, for models
    that normalise by it; ``relative_drivers`` takes each driver relative to its mean over that window.

    Examples
    --------
    >>> ctx = ForecastContext("D", season_length=2, horizon=1)
    >>> fb = FeatureBuilder(FeatureSpec(ctx.freq, 2, 1, lags=(1, 2), windows=(2,), calendar=()))
    >>> ds = np.arange("2024-01-01", "2024-01-07", dtype="datetime64[D]").astype("datetime64[ns]")
    >>> d = fb.training(ds, np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0]))
    >>> d.features.tolist()[:2], d.target.tolist()[:2]
    ([[2.0, 1.0, 1.5], [3.0, 2.0, 2.5]], [3.0, 4.0])
    """

    def __init__(self, spec: FeatureSpec, level_window: int | None = None, relative_drivers: bool = False):
        self.spec = spec
        if level_window is None:
            level_window = max(spec.windows) if spec.windows else spec.season_length
        self.level_window = int(level_window)
        self.relative_drivers = bool(relative_drivers)

    def _value_features(self, grid: Grid, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        spec, y = self.spec, grid.y
        lags = np.asarray(spec.lags, dtype=np.int64)
        filled = seasonal_ffill(y, spec.season_length)
        cols = np.empty((rows.size, spec.n_value_features + 1))
        if lags.size:
            idx = rows[:, None] - lags[None, :]
            cols[:, : lags.size] = np.where(idx >= 0, filled[np.maximum(idx, 0)], np.nan)
        # Windows average the season-filled values too, so that a missing peak hour does not drag the mean
        # down: the window keeps the same mix of phases whatever is missing.
        finite = np.isfinite(filled)
        csum = np.concatenate([[0.0], np.cumsum(np.where(finite, filled, 0.0))])
        ccount = np.concatenate([[0], np.cumsum(finite)])
        end = rows - spec.horizon  # last grid index inside each window
        widths = list(spec.windows) + [self.level_window]
        for j, w in enumerate(widths):
            means = _trailing_means(csum, ccount, w)
            cols[:, lags.size + j] = np.where(end >= 0, means[np.maximum(end, 0)], np.nan)
        return cols[:, :-1], cols[:, -1]

    def value_features_rows(self, values: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`_value_features` of many streams at once: ``values`` is ``(n_streams, width)`` on one grid,
        ``rows`` the grid columns to build; returns ``(n_streams, len(rows), n_value_features)`` features and
        the ``(n_streams, len(rows))`` local levels, equal to each stream's own."""
        spec = self.spec
        lags = np.asarray(spec.lags, dtype=np.int64)
        n = values.shape[0]
        filled = seasonal_ffill_rows(values, spec.season_length)
        cols = np.empty((n, rows.size, spec.n_value_features + 1))
        if lags.size:
            idx = rows[:, None] - lags[None, :]
            cols[:, :, : lags.size] = np.where(idx >= 0, filled[:, np.maximum(idx, 0)], np.nan)
        finite = np.isfinite(filled)
        # Columns before a stream's first value add exact zeros, so each sum is the stream's own.
        csum = np.concatenate([np.zeros((n, 1)), np.cumsum(np.where(finite, filled, 0.0), axis=1)], axis=1)
        ccount = np.concatenate([np.zeros((n, 1), dtype=np.int64), np.cumsum(finite, axis=1)], axis=1)
        end = rows - spec.horizon
        # The last finite column at or before each window's end: a window with nothing in it takes the mean
        # of the last window that had something, the one ending ``width - 1`` columns after that column.
        last = np.where(finite[:, np.maximum(end, 0)], np.maximum(end, 0)[None, :], -1)
        if (last < 0).any():
            seen = np.maximum.accumulate(np.where(finite, np.arange(filled.shape[1])[None, :], -1), axis=1)
            last = seen[:, np.maximum(end, 0)]
        widths = list(spec.windows) + [self.level_window]
        stream = np.arange(n)[:, None]
        for j, w in enumerate(widths):
            at = np.minimum(np.maximum(end, 0)[None, :], last + w - 1)  # the window whose mean is taken
            hi = at + 1
            lo = np.maximum(hi - w, 0)
            with np.errstate(invalid="ignore", divide="ignore"):
                means = (csum[stream, hi] - csum[stream, lo]) / (ccount[stream, hi] - ccount[stream, lo])
            cols[:, :, lags.size + j] = np.where((end >= 0)[None, :] & (last >= 0), means, np.nan)
        return cols[:, :, :-1], cols[:, :, -1]

    def calendar_features(self, ds: np.ndarray) -> np.ndarray:
        """The calendar (and holiday) columns of timestamps ``ds``: the same for every stream of a spec."""
        return self._calendar(np.asarray(ds, dtype="datetime64[ns]"))

    def _calendar(self, ds: np.ndarray) -> np.ndarray:
        spec = self.spec
        blocks = []
        for name in spec.calendar:
            codes = calendar_codes(ds, name, spec.info)
            if spec.calendar_encoding == "onehot":
                blocks.append((codes[:, None] == np.arange(spec.cardinality(name))[None, :]).astype(np.float64))
            else:
                blocks.append(codes[:, None].astype(np.float64))
        if spec.holidays:
            blocks.append(holiday_flags(ds, spec.holidays)[:, None])
        return np.hstack(blocks) if blocks else np.zeros((ds.size, 0))

    def _drivers(self, grid: Grid, rows: np.ndarray, X: np.ndarray | None, future_X: np.ndarray | None) -> np.ndarray:
        """Driver columns of ``rows``: future drivers at the row, historical ones ``horizon`` steps before it;
        each driver placed on the grid and forward-filled, so a missing value takes the last known one.

        With ``relative_drivers`` each value is taken relative to the driver's mean over the level window
        (the ``level_window`` steps ending ``horizon`` steps before the row), as the target is relative to
        the local level: the level already carries yesterday's weather and a running campaign, so what moves
        the target away from it is the driver's change (a campaign starting, a cold front arriving)."""
        spec = self.spec
        n_f, n = len(spec.future_drivers), spec.n_drivers
        if n == 0:
            return np.zeros((rows.size, 0))
        on_grid = np.full((grid.y.size, n), np.nan)
        if X is not None:
            on_grid[grid.hist_rows] = X
        if future_X is not None and grid.future_rows is not None:
            on_grid[grid.future_rows, :n_f] = future_X[:, :n_f]
        out = np.empty((rows.size, n))
        end = rows - spec.horizon
        for j in range(n):
            filled = forward_fill(on_grid[:, j])
            at = rows if j < n_f else end
            out[:, j] = np.where(at >= 0, filled[np.maximum(at, 0)], np.nan)
            if self.relative_drivers:
                finite = np.isfinite(filled)
                csum = np.concatenate([[0.0], np.cumsum(np.where(finite, filled, 0.0))])
                ccount = np.concatenate([[0], np.cumsum(finite)])
                means = _trailing_means(csum, ccount, self.level_window)
                out[:, j] -= np.where(end >= 0, means[np.maximum(end, 0)], np.nan)
        return out

    def _check_drivers(self, X: np.ndarray | None, name: str) -> None:
        expected = self.spec.n_drivers
        got = 0 if X is None else X.shape[1]
        if expected and X is None:
            return  # no values at all: every driver column is NaN, handled like a missing value
        if got != expected:
            raise ValueError(f"{name} has {got} column(s); the features expect {expected} driver(s) "
                             f"{list(self.spec.future_drivers + self.spec.historical_drivers)}")

    def training(self, ds: np.ndarray, y: np.ndarray, X: np.ndarray | None = None) -> Design:
        """Rows of the history whose target and features are all known. ``X``: the drivers' values aligned
        with ``ds`` (future drivers, then historical ones)."""
        self._check_drivers(X, "X")
        grid = regularise(ds, y, self.spec.info)
        rows = grid.hist_rows
        values, level = self._value_features(grid, rows)
        drivers = self._drivers(grid, rows, X, None)
        parts = [values, self._calendar(ds), drivers, self._interactions(values, drivers)]
        features = np.hstack(parts)
        target = grid.y[rows]
        keep = np.isfinite(target) & np.isfinite(features).all(axis=1) & np.isfinite(level)
        return Design(features[keep], target[keep], level[keep], self.spec.n_value_features,
                      np.asarray(ds, dtype="datetime64[ns]")[keep], drivers.shape[1], np.flatnonzero(keep))

    def forecasting(
        self, ds: np.ndarray, y: np.ndarray, future_ds: np.ndarray, future_X: np.ndarray | None = None,
        X: np.ndarray | None = None,
    ) -> Design:
        """Rows of ``future_ds``; features that cannot be built (no data at all) are NaN. ``X``: the history's
        driver values; ``future_X``: the future drivers' values known for ``future_ds``."""
        self._check_drivers(X, "X")
        self._check_drivers(future_X, "future_X")
        grid = regularise(ds, y, self.spec.info, future_ds=future_ds)
        values, level = self._value_features(grid, grid.future_rows)
        future_ds = np.asarray(future_ds, dtype="datetime64[ns]")
        drivers = self._drivers(grid, grid.future_rows, X, future_X)
        parts = [values, self._calendar(future_ds), drivers, self._interactions(values, drivers)]
        return Design(np.hstack(parts), None, level, self.spec.n_value_features, future_ds, drivers.shape[1])

    def _interactions(self, values: np.ndarray, drivers: np.ndarray) -> np.ndarray:
        """Each driver times the row's seasonal reference (the mean of its whole-season lags): demand drivers
        mostly act in proportion to the demand of the hour (rain adds a share of the dinner peak, little at
        4 am), which a linear model can only fit through such a product."""
        if drivers.shape[1] == 0:
            return drivers
        positions = [self.spec.lags.index(k) for k in self.spec.seasonal_lags]
        lagged = values[:, positions]
        finite = np.isfinite(lagged)
        with np.errstate(invalid="ignore", divide="ignore"):
            reference = np.where(finite, lagged, 0.0).sum(axis=1) / finite.sum(axis=1)
        return drivers * reference[:, None]


@dataclass
class Design:
    """A design matrix: ``features`` (rows x columns), ``target`` (None for forecast rows), the local
    ``level`` of each row, how many leading columns are computed from past values, the rows' timestamps, and how
    many trailing columns are driver x seasonal-reference products (scaled like values, never offset); for
    training rows, each row's index in the history passed to :meth:`FeatureBuilder.training`."""

    features: np.ndarray
    target: np.ndarray | None
    level: np.ndarray
    n_value_features: int
    ds: np.ndarray | None = None
    n_interactions: int = 0
    positions: np.ndarray | None = None


def _trailing_means(csum: np.ndarray, ccount: np.ndarray, width: int) -> np.ndarray:
    """Mean of the finite values in the ``width`` grid steps ending at each index; an empty window takes the
    last non-empty window's mean."""
    n = csum.size - 1
    hi = np.arange(1, n + 1)
    lo = np.maximum(hi - width, 0)
    count = ccount[hi] - ccount[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        means = (csum[hi] - csum[lo]) / count
    means[count == 0] = np.nan
    return forward_fill(means)

