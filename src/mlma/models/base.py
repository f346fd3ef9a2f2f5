"""The contract between the agent and a forecasting model.

A model is fitted on one stream's history window and then asked, possibly many ticks later and without being
re-trained, to forecast the next tick's timestamps given the stream's *recent* history. Everything the agent
needs from a model is in :class:`Forecaster`; everything a model needs to know about the stream's clock is in
:class:`ForecastContext`.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field, replace
from typing import Protocol, Self, runtime_checkable

import numpy as np
from pandas.tseries.frequencies import to_offset

from mlma.calendar import season_length

__all__ = [
    "SpecUnavailable",
    "BaseForecaster",
    "Drivers",
    "FIT_ERRORS",
    "FleetForecaster",
    "FleetHistory",
    "ForecastContext",
    "Forecaster",
    "DriversChanged",
    "driver_view",
    "model_uses_drivers",
    "predict_each",
    "predict_fleet",
    "predict_fleet_isolated",
    "InsufficientDataError",
    "default_season_length",
    "as_datetime_array",
    "as_float_array",
    "as_exog_array",
]

class InsufficientDataError(ValueError):
    """The history cannot support the model (too short, too sparse).

    Raised by the built-in models from ``fit``; :func:`mlma.models.fit_forecaster` catches it and falls back to a
    simpler model, keeping the message as the ``fallback_reason``.
    """


class SpecUnavailable(ValueError):
    """A model spec that may well be right but needs what this Python environment lacks: a module or package
    it cannot import (an optional extra such as ``mlma[nixtla]``, a user's package not on the path, a module
    whose code raises at import, reading a config file or a variable this one lacks) or a file it cannot read
    (a model file, or one the model's constructor reads: an ``OSError``).

    Raised by :func:`mlma.models.make_forecaster`, where it is a ``ValueError`` like any spec that cannot be
    built; ``mlma init`` tells it apart, since the environment that runs the ticks may have what this one
    lacks (:func:`mlma.project.check_model_spec`).
    """


def default_season_length(freq: str) -> int:
    """The season length of a pandas frequency alias: the project's one season rule,
    :func:`mlma.calendar.season_length` (steps until the data returns to the same phase of its natural
    cycle: a day for sub-daily data, a week for daily, a year for weekly and month-based data).

    Offsets the project's calendar does not support (custom calendars, business hours) have no season: 1.

    Examples
    --------
    >>> [default_season_length(f) for f in ["h", "30min", "D", "W-MON", "MS", "QS", "YS"]]
    [24, 48, 7, 52, 12, 4, 1]
    >>> [default_season_length(f) for f in ["2D", "2W", "2MS", "3h"]]
    [7, 26, 6, 8]
    """
    _offset_or_raise(freq, "freq")
    try:
        return season_length(freq)
    except ValueError:  # an offset the calendar does not support
        return 1


def _offset_or_raise(freq: str, name: str):
    if not isinstance(freq, str) or not freq:
        raise ValueError(f"{name} must be a pandas offset alias such as 'h', 'D' or 'MS', got {freq!r}")
    try:
        return to_offset(freq)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}={freq!r} is not a pandas offset alias ({exc})") from None


def _names(value, name: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [part.strip() for part in value.split(",") if part.strip()]
    names = tuple(value)
    bad = [v for v in names if not isinstance(v, str) or not v]
    if bad:
        raise ValueError(f"{name} must be column names (non-empty strings), got {bad}")
    from mlma.data import has_control_character  # noqa: PLC0415 - mlma.data imports the models' module

    hidden = [v for v in names if has_control_character(v)]
    if hidden:  # no column of a file can be named so (check_column_names), and a log line prints it as another
        raise ValueError(f"{name} must be column names without control characters, got {hidden}")
    return names


@dataclass(frozen=True)
class Drivers:
    """The exogenous driver columns of a fleet, by when their values are known (Nixtla's vocabulary).

    Parameters
    ----------
    future
        *Future* exogenous drivers (Nixtla's ``futr_exog``): values are known in advance for the timestamps
        being forecast: a weather forecast, a planned campaign, a price list. Models use their value at the
        forecast timestamp. In live operation they are ingested ahead with ``mlma ingest --future``.
    historical
        *Historical* exogenous drivers (``hist_exog``): observed only up to the forecast origin (measured
        rain, a competitor's observed price). Models may use only values known at the origin: their lag
        ``horizon``.
    events
        Future drivers that mark *events* (a campaign, a promotion, a closure): 0 when none runs, and the
        level change a model forecasts from them is what the monitor discounts (``AgentSettings.explained_power``,
        docs/monitoring.md "The loss"), so that an event the model knows about is not taken for a degradation.
        Each must also be a future driver. They do not change what a model fits, so they are left out of the
        repr (the fit cache's address of a model: declaring an event refits nothing).

    *Static* exogenous variables (``stat_exog``: constant per stream, a zone's city) are stream attributes in
    mlma (``mlma attributes``); a per-stream model cannot learn from a constant, so they are no drivers here.

    ``X`` and ``future_X`` of the :class:`Forecaster` protocol have one column per name in :attr:`columns`:
    the future drivers, then the historical ones.

    Examples
    --------
    >>> d = Drivers(future=("temperature", "campaign"), historical="rain")
    >>> d.columns, len(d)
    (('temperature', 'campaign', 'rain'), 3)
    >>> Drivers(future=["price"], historical=["price"])
    Traceback (most recent call last):
    ...
    ValueError: driver 'price' is declared both future and historical
    >>> Drivers(future=("temperature", "campaign"), events="campaign").events
    ('campaign',)
    >>> Drivers(future=["price"], events=["campaign"])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: event driver 'campaign' must also be a future driver ...
    """

    future: tuple[str, ...] = ()
    historical: tuple[str, ...] = ()
    events: tuple[str, ...] = field(default=(), repr=False)

    def __post_init__(self) -> None:
        future = _names(self.future, "future drivers")
        historical = _names(self.historical, "historical drivers")
        both = sorted(set(future) & set(historical))
        if both:
            raise ValueError(f"driver {both[0]!r} is declared both future and historical")
        for names in (future, historical):
            if len(set(names)) != len(names):
                raise ValueError(f"driver names must be unique, got {list(names)}")
        events = _names(self.events, "event drivers")
        if len(set(events)) != len(events):
            raise ValueError(f"event driver names must be unique, got {list(events)}")
        for name in events:
            if name not in future:
                raise ValueError(f"event driver {name!r} must also be a future driver (its values known in "
                                 f"advance), got future drivers {list(future)}")
        object.__setattr__(self, "future", future)
        object.__setattr__(self, "historical", historical)
        object.__setattr__(self, "events", events)

    @property
    def columns(self) -> tuple[str, ...]:
        """Column order of ``X`` and ``future_X``: future drivers, then historical ones."""
        return self.future + self.historical

    def check_columns(self, id_col: str = "unique_id", time_col: str = "ds", target_col: str = "y") -> None:
        """Refuse a driver named like the data's id, time or target column (as the file names them, or as mlma
        does after reading it): the target as its own driver would leak the actuals into the forecasts.

        >>> Drivers(future=["temperature"]).check_columns(target_col="orders")
        >>> Drivers(future=["orders"]).check_columns(target_col="orders")
        Traceback (most recent call last):
        ...
        ValueError: driver 'orders' is the target column (target_col='orders'); a driver must be another column
        """
        roles = {id_col: ("id", "id_col"), time_col: ("time", "time_col"), target_col: ("target", "target_col"),
                 "unique_id": ("id", "id_col"), "ds": ("time", "time_col"), "y": ("target", "target_col")}
        for name in self.columns:
            if name in roles:
                role, key = roles[name]
                given = {"id_col": id_col, "time_col": time_col, "target_col": target_col}[key]
                raise ValueError(f"driver {name!r} is the {role} column ({key}={given!r}); a driver must be "
                                 "another column")

    def __len__(self) -> int:
        return len(self.future) + len(self.historical)

    def __bool__(self) -> bool:
        return len(self) > 0


NO_DRIVERS = Drivers()


@dataclass(frozen=True)
class ForecastContext:
    """What every model of a fleet knows about its stream's clock.

    Parameters
    ----------
    freq
        pandas offset alias of the stream's grid, e.g. ``"h"``, ``"30min"``, ``"D"``, ``"W-MON"``, ``"MS"``,
        ``"QS"``.
    season_length
        Grid steps in one season: 24 for hourly, 48 half-hourly, 7 daily, 52 weekly, 12 monthly, 4 quarterly,
        1 if there is no seasonality.
    horizon
        Grid steps forecast at each tick, e.g. 24 for day-ahead hourly forecasts.
    drivers
        The fleet's exogenous driver columns (:class:`Drivers`); none by default.
    driver_prior
        The fleet's estimate of each future driver's multiplicative effect (log-factor per unit), one per name
        in ``drivers.future``, NaN where the fleet has none; None (default) when there is none at all. The
        agent pools it from the fleet's fits (:meth:`BaseForecaster.driver_effects`) and passes it to the
        next fits, so that a stream whose window did not see a driver vary still applies the fleet's effect
        (ridge's ``driver_pooling``), and to the forecasts of the models already serving
        (:meth:`BaseForecaster.for_context`), so that such a driver follows the fleet's latest estimate, not the
        one of the model's fit; models that take no prior ignore it.

    Examples
    --------
    >>> ForecastContext("h", season_length=24, horizon=24)
    ForecastContext(freq='h', season_length=24, horizon=24)
    >>> ForecastContext.for_freq("MS", horizon=3)
    ForecastContext(freq='MS', season_length=12, horizon=3)
    >>> ForecastContext("h", season_length=0, horizon=24)
    Traceback (most recent call last):
    ...
    ValueError: season_length must be a positive integer, got 0
    """

    freq: str
    season_length: int
    horizon: int
    drivers: Drivers = NO_DRIVERS
    driver_prior: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        _offset_or_raise(self.freq, "freq")
        if self.drivers is None:
            object.__setattr__(self, "drivers", NO_DRIVERS)
        if not isinstance(self.drivers, Drivers):
            raise ValueError(f"drivers must be a Drivers, got {type(self.drivers).__name__}")
        if self.driver_prior is not None:
            prior = tuple(float(v) for v in np.asarray(self.driver_prior, dtype=np.float64).ravel())
            if len(prior) != len(self.drivers.future) or any(np.isinf(prior)):
                raise ValueError(f"driver_prior must hold one finite number (or NaN) per future driver "
                                 f"{list(self.drivers.future)}, got {self.driver_prior!r}")
            object.__setattr__(self, "driver_prior", prior)
        for name in ("season_length", "horizon"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))

    def __repr__(self) -> str:
        extra = f", drivers={self.drivers!r}" if self.drivers else ""
        if self.driver_prior is not None:
            extra += f", driver_prior={self.driver_prior!r}"
        return (f"ForecastContext(freq={self.freq!r}, season_length={self.season_length}, "
                f"horizon={self.horizon}{extra})")

    @classmethod
    def for_freq(cls, freq: str, horizon: int, season_length: int | None = None,
                 drivers: Drivers | None = None) -> ForecastContext:
        """Build a context, taking the season length from :func:`default_season_length` unless given."""
        if season_length is None:
            season_length = default_season_length(freq)
        return cls(freq=freq, season_length=season_length, horizon=horizon, drivers=drivers or NO_DRIVERS)


@runtime_checkable
class Forecaster(Protocol):
    """One stream's forecasting model.

    ``fit`` learns from one stream's history window and returns the model. ``predict`` forecasts
    ``future_ds`` from the stream's *recent* history ``(ds, y)``, which the agent passes at every tick because a
    model fitted several ticks ago must still use the latest lags.

    ``ds`` arrays are ``datetime64[ns]``, ascending, on the context's frequency grid but possibly with gaps
    (missing grid timestamps) and NaN in ``y``. ``future_ds`` are the grid timestamps of the next tick.
    ``min_history`` is the number of observations needed to fit.

    Exogenous drivers: ``X`` and ``future_X`` are 2-D float arrays aligned with ``ds`` and ``future_ds``,
    one column per name in ``ctx.drivers.columns`` (:class:`Drivers`: the future drivers, then the
    historical ones), NaN where a value is unknown. ``X`` holds the values observed with the history;
    ``future_X`` the values known in advance for the forecast timestamps (the historical drivers' columns are
    all NaN there: they are not known yet). The agent passes them only to a model whose
    :attr:`BaseForecaster.uses_drivers` is True (see :func:`model_uses_drivers`), and None otherwise.

    Implementations must be picklable and deterministic (same data, same forecasts).
    """

    min_history: int

    def fit(self, ds: np.ndarray, y: np.ndarray, X: np.ndarray | None = None) -> Self: ...

    def predict(
        self,
        ds: np.ndarray,
        y: np.ndarray,
        future_ds: np.ndarray,
        X: np.ndarray | None = None,
        future_X: np.ndarray | None = None,
    ) -> np.ndarray: ...


class BaseForecaster:
    """Optional base class of a :class:`Forecaster`: the hooks the agent asks a model about, with defaults.

    A model that does not subclass it is treated as having every default (for example, it gets no drivers).
    Subclasses override what differs.
    """

    @property
    def uses_drivers(self) -> bool:
        """Whether ``fit``/``predict`` use the exogenous drivers ``X``/``future_X``. Default False: the
        agent then passes None and need not look the values up."""
        return False

    @property
    def takes_driver_prior(self) -> bool:
        """Whether this model's fits depend on :attr:`ForecastContext.driver_prior` (the fleet's estimate of
        the drivers' effects). Default False. A backtest gives each policy a model service of its own only for
        such models, since each policy's agent pools its own prior and their fits then differ."""
        return False

    @property
    def fitted_drivers(self) -> Drivers | None:
        """The drivers whose values this model's ``X`` and ``future_X`` columns hold, in their order: those of
        the context it was built with, when it uses drivers. Default None: the model does not say, and gets the
        fleet's columns as they are. The model service then gives it its own columns by name when the
        project's drivers changed since (:func:`driver_view`: a driver added or the list re-ordered in
        mlma.toml), and the live agent re-fits it when one of them is no longer declared."""
        return None

    def driver_effects(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The future drivers' multiplicative effects this fit estimated, for the fleet's prior
        (:attr:`ForecastContext.driver_prior`): ``(beta, information)``, one entry per future driver, the
        log-factor per unit and its Fisher information, information 0 where the window did not see the
        driver vary (nothing learnt). Default None: the model estimates no such effects."""
        return None

    def for_context(self, ctx: ForecastContext) -> Self:
        """This model as it forecasts under the fleet's current context ``ctx`` (the model service's, whose
        :attr:`~ForecastContext.driver_prior` is the fleet's latest estimate of the drivers' effects, possibly
        newer than the one this model was fitted with). The model service asks it before each forecast of a
        model that uses drivers. It must not change this model (return a copy if anything differs), and must
        be deterministic: the same fit under the same context forecasts the same. Default: the model itself,
        whose forecasts depend on its fit alone.

        >>> class Flat(BaseForecaster):
        ...     min_history = 1
        >>> model = Flat()
        >>> model.for_context(ForecastContext("h", 24, 24)) is model
        True
        """
        return self

    @classmethod
    def predict_many(cls, models: list, history: FleetHistory) -> np.ndarray:
        """Forecast ``history.future`` for many streams in one call: row ``i`` by ``models[i]`` from stream
        ``i`` of ``history``; returns a ``(len(models), len(history.future))`` float array.

        The model service groups the streams of a tick by model class and calls this once per class (per
        shard of streams on a cluster). Every model is an instance of ``cls``. The default asks each model's
        :meth:`~Forecaster.predict` in turn (:func:`predict_each`); a subclass overrides it to forecast the
        whole fleet with array operations, and must give each stream what its own ``predict`` gives (the
        built-in ones are tested for it). Models that use drivers are not asked: they are predicted one by
        one with their driver values.
        """
        return predict_each(models, history)


class FleetHistory:
    """The recent histories of many streams on one shared frequency grid, and the timestamps to forecast.

    Row ``r`` of stream ``i`` sits in column ``column[r]`` of a grid whose consecutive columns are
    consecutive grid timestamps; the forecast timestamps ``future`` sit in columns ``future_columns``,
    after every history column. The grid is laid once for the fleet (the data already knows each row's
    place on it), so no model has to derive it again from timestamps.

    Parameters
    ----------
    ds, y
        Every stream's rows, stream after stream, each stream's ascending: timestamps and values (NaN for
        a value that is missing).
    offsets
        Stream ``i``'s rows are ``offsets[i]:offsets[i + 1]``.
    column
        Grid column of each row (at most one row per stream and column).
    future, future_columns
        The timestamps to forecast, the same for every stream, and their grid columns.

    Examples
    --------
    >>> ds = np.array(["2024-01-01T00", "2024-01-01T02", "2024-01-01T01"], dtype="datetime64[ns]")
    >>> future = np.array(["2024-01-01T03"], dtype="datetime64[ns]")
    >>> h = FleetHistory.from_histories([(ds[:2], np.array([1.0, 3.0])), (ds[2:], np.array([5.0]))], future, "h")
    >>> h.n_streams, h.values().tolist(), h.future_columns.tolist()
    (2, [[1.0, nan, 3.0, nan], [nan, 5.0, nan, nan]], [3])
    >>> [t.tolist() for t in h.stream(1)]
    [[1704070800000000000], [5.0]]
    """

    def __init__(self, ds: np.ndarray, y: np.ndarray, offsets: np.ndarray, column: np.ndarray,
                 future: np.ndarray, future_columns: np.ndarray) -> None:
        self.ds = np.asarray(ds, dtype="datetime64[ns]")
        self.y = np.asarray(y, dtype=np.float64)
        self.offsets = np.asarray(offsets, dtype=np.int64)
        self.column = np.asarray(column, dtype=np.int64)
        self.future = _read_only_copy(future)
        self.future_columns = np.asarray(future_columns, dtype=np.int64)
        n_rows = self.ds.size
        if self.y.shape != (n_rows,) or self.column.shape != (n_rows,):
            raise ValueError(f"ds, y and column must have one entry per row, got {self.ds.shape}, {self.y.shape} "
                             f"and {self.column.shape}")
        if self.offsets.ndim != 1 or self.offsets.size < 1 or self.offsets[0] != 0 or self.offsets[-1] != n_rows \
                or (np.diff(self.offsets) < 0).any():
            raise ValueError(f"offsets must rise from 0 to the number of rows ({n_rows}), got {self.offsets}")
        if self.future_columns.shape != self.future.shape:
            raise ValueError(f"future_columns must have one column per future timestamp, got "
                             f"{self.future_columns.shape} for {self.future.shape}")
        if (self.column < 0).any():
            raise ValueError("grid columns must be >= 0")
        last_history = int(self.column.max()) if n_rows else -1
        if self.future.size and int(self.future_columns.min()) <= last_history:
            raise ValueError(f"the future's grid columns (from {int(self.future_columns.min())}) must come after "
                             f"every history column (up to {last_history})")
        self.width = max(last_history + 1, int(self.future_columns.max()) + 1 if self.future.size else 0)
        self._values: np.ndarray | None = None
        self._column_ds: np.ndarray | None = None  # set by on_grid only
        self._present: np.ndarray | None = None

    @classmethod
    def on_grid(cls, values: np.ndarray, column_ds: np.ndarray, future: np.ndarray, future_columns: np.ndarray,
                present: np.ndarray | None = None) -> FleetHistory:
        """Histories given as the grid matrix itself: ``values[i, c]`` is stream ``i`` at grid column ``c``,
        whose timestamp is ``column_ds[c]``; NaN where the stream has no value and at every future column.

        A stream's rows are its finite entries, or those marked in ``present`` (same shape; a value in a
        period marked abnormal is a row whose ``y`` is NaN). :meth:`values` is the matrix as given (no copy);
        the flat ``ds``, ``y``, ``offsets`` and ``column`` are built only if something asks for them, and
        :meth:`stream` reads one row of the matrix. The model service forecasts from such histories when the
        fleet is kept as a matrix (:meth:`mlma.fleet.FleetData.from_matrix`).

        >>> values = np.array([[1.0, np.nan, 3.0, np.nan], [np.nan, 5.0, np.nan, np.nan]])
        >>> ds = np.arange(4).astype("timedelta64[h]") + np.datetime64("2024-01-01T00", "ns")
        >>> h = FleetHistory.on_grid(values, ds, ds[3:], np.array([3]))
        >>> h.n_streams, h.offsets.tolist(), h.column.tolist(), h.stream(1)[1].tolist()
        (2, [0, 2, 3], [0, 2, 1], [5.0])
        """
        values = np.asarray(values, dtype=np.float64)
        future_columns = np.asarray(future_columns, dtype=np.int64)
        column_ds = np.asarray(column_ds, dtype="datetime64[ns]")
        if values.ndim != 2 or column_ds.shape != (values.shape[1],):
            raise ValueError(f"values must be (streams x columns) with one timestamp per column, got {values.shape} "
                             f"and {column_ds.shape} timestamps")
        if present is not None and present.shape != values.shape:
            raise ValueError(f"present must have the shape of values {values.shape}, got {present.shape}")
        first_future = int(future_columns.min()) if future_columns.size else values.shape[1]
        occupied = np.isfinite(values) if present is None else present
        if occupied[:, first_future:].any():
            raise ValueError(f"the future's grid columns (from {first_future}) must come after every history "
                             "column: values has entries there")
        self = cls.__new__(cls)
        self.future = _read_only_copy(future)
        self.future_columns = future_columns
        if self.future_columns.shape != self.future.shape:
            raise ValueError(f"future_columns must have one column per future timestamp, got "
                             f"{self.future_columns.shape} for {self.future.shape}")
        self.width = values.shape[1]
        self._values, self._column_ds, self._present = values, column_ds, present
        return self

    # The row arrays of a history made on_grid: built on first use.
    _FLAT = frozenset({"ds", "y", "offsets", "column"})

    def __getattr__(self, name: str):
        # Called only for attributes not set: the flat arrays of a history made on_grid.
        if name in FleetHistory._FLAT and self.__dict__.get("_column_ds") is not None:
            values = self._values
            present = np.isfinite(values) if self._present is None else self._present
            row, column = np.nonzero(present)
            self.y, self.column, self.ds = values[row, column], column.astype(np.int64), self._column_ds[column]
            counts = np.bincount(row, minlength=values.shape[0])
            self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            return self.__dict__[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @classmethod
    def from_histories(cls, histories: list[tuple[np.ndarray, np.ndarray]], future: np.ndarray,
                       freq: str) -> FleetHistory:
        """Lay per-stream histories ``(ds, y)`` and the ``future`` timestamps on the ``freq`` grid.

        For callers that have separate histories (tests, a notebook); the model service builds its
        :class:`FleetHistory` from the fleet's own grid positions instead.
        """
        from mlma.models.features import grid_positions

        future = as_datetime_array(future, "future")
        parts = [as_datetime_array(ds) for ds, _ in histories]
        values = [as_float_array(y, ds.size) for ds, (_, y) in zip(parts, histories, strict=True)]
        order = [np.argsort(ds, kind="stable") for ds in parts]
        ds = np.concatenate([d[o] for d, o in zip(parts, order)] + [np.zeros(0, "datetime64[ns]")])
        y = np.concatenate([v[o] for v, o in zip(values, order)] + [np.zeros(0)])
        offsets = np.concatenate([[0], np.cumsum([d.size for d in parts])]).astype(np.int64)
        position = grid_positions(np.concatenate([ds, future]), freq)
        start = int(position.min()) if position.size else 0
        column = position - start
        for i in range(len(parts)):
            own = column[offsets[i]:offsets[i + 1]]
            if np.unique(own).size != own.size:
                raise ValueError(f"stream {i} has {own.size - np.unique(own).size} timestamp(s) falling on an "
                                 f"already used {freq!r} grid slot; aggregate duplicates before forecasting")
        return cls(ds, y, offsets, column[:ds.size], future, column[ds.size:])

    @property
    def n_streams(self) -> int:
        if self._column_ds is not None:
            return self._values.shape[0]
        return self.offsets.size - 1

    def stream(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Stream ``i``'s history ``(ds, y)``, as its model's ``predict`` takes it: read-only, as :attr:`future`
        is (a model that wrote into them would change what other streams' models and the scoring read)."""
        if self._column_ds is not None and "offsets" not in self.__dict__:
            row = self._values[i]
            columns = np.flatnonzero(np.isfinite(row) if self._present is None else self._present[i])
            return _read_only(self._column_ds[columns]), _read_only(row[columns])
        lo, hi = self.offsets[i], self.offsets[i + 1]
        return _read_only(self.ds[lo:hi]), _read_only(self.y[lo:hi])

    def values(self) -> np.ndarray:
        """``(n_streams, width)`` values on the grid: NaN where a stream has no value, and at the future's
        columns. Built once, on first use."""
        if self._values is None:
            out = np.full((self.n_streams, self.width), np.nan)
            rows = np.repeat(np.arange(self.n_streams), np.diff(self.offsets))
            out[rows, self.column] = self.y
            self._values = out
        return self._values

    def take(self, streams) -> FleetHistory:
        """The histories of ``streams`` (indexes into this one), on the same grid."""
        streams = np.asarray(streams, dtype=np.int64)
        if self._column_ds is not None:
            return FleetHistory.on_grid(self._values[streams], self._column_ds, self.future, self.future_columns,
                                        None if self._present is None else self._present[streams])
        counts = self.offsets[streams + 1] - self.offsets[streams]
        starts = np.repeat(self.offsets[streams] - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
        rows = starts + np.arange(int(counts.sum()))
        sub = FleetHistory(self.ds[rows], self.y[rows], np.concatenate([[0], np.cumsum(counts)]), self.column[rows],
                           self.future, self.future_columns)
        sub.width = self.width
        if self._values is not None:
            sub._values = self._values[streams]
        return sub

    def __repr__(self) -> str:
        return (f"FleetHistory({self.n_streams} streams, {self.ds.size} rows, {self.width} grid columns, "
                f"{self.future.size} to forecast)")


def _read_only(values: np.ndarray) -> np.ndarray:
    view = values.view()
    view.flags.writeable = False
    return view


def _read_only_copy(values) -> np.ndarray:
    """The forecast timestamps a history hands to every model: its own copy (not a view of the fleet's grid),
    read-only, so that a model writing into them fails alone instead of moving every stream's forecasts."""
    return _read_only(np.array(values, dtype="datetime64[ns]"))


def predict_each(models: list, history: FleetHistory) -> np.ndarray:
    """Forecast ``history.future`` with each model's own ``predict``, one stream after another: the default
    of :meth:`BaseForecaster.predict_many`, and the way for models that do not subclass it."""
    out = np.empty((len(models), history.future.size))
    if len(models) != history.n_streams:
        raise ValueError(f"{len(models)} models for {history.n_streams} streams' histories")
    for i, model in enumerate(models):
        ds, y = history.stream(i)
        y_hat = as_forecast(model.predict(ds, y, history.future), f"{type(model).__name__}.predict")
        if y_hat.shape != history.future.shape:
            raise ValueError(f"{type(model).__name__}.predict returned {y_hat.shape} forecasts for "
                             f"{history.future.shape[0]} timestamps")
        out[i] = y_hat
    return out


def predict_fleet(models: list, history: FleetHistory) -> np.ndarray:
    """Forecast every stream of ``history`` with ``models[i]``: one :meth:`BaseForecaster.predict_many` call
    per model class (models of other classes than :class:`BaseForecaster`'s go one by one). Any failure
    raises; :func:`predict_fleet_isolated` keeps one stream's failure from costing the others.

    Examples
    --------
    >>> from mlma.models import MeanForecaster, SeasonalNaive
    >>> ctx = ForecastContext("h", season_length=2, horizon=2)
    >>> ds = np.arange("2024-01-01T00", "2024-01-01T04", dtype="datetime64[h]").astype("datetime64[ns]")
    >>> y = np.array([1.0, 2.0, 3.0, 4.0])
    >>> history = FleetHistory.from_histories([(ds, y), (ds, y)], ds[-1] + np.array([1, 2], "timedelta64[h]"), "h")
    >>> models = [SeasonalNaive(ctx).fit(ds, y), MeanForecaster(ctx).fit(ds, y)]
    >>> predict_fleet(models, history).tolist()
    [[3.0, 4.0], [2.5, 2.5]]
    """
    if len(models) != history.n_streams:
        raise ValueError(f"{len(models)} models for {history.n_streams} streams' histories")
    out = np.empty((len(models), history.future.size))
    for cls, members in _class_groups(models).items():
        part = history if len(members) == history.n_streams else history.take(members)
        out[members] = _predict_class(cls, [models[i] for i in members], part)
    return out


def predict_fleet_isolated(models: list, history: FleetHistory) -> tuple[np.ndarray, dict[int, str]]:
    """:func:`predict_fleet` where one stream's failure costs only that stream's forecast.

    Returns the ``(len(models), len(history.future))`` forecasts and, by row, why a stream has none (its
    row is NaN). A class's fleet-wide call that raises or returns the wrong shape is not trusted for any of
    its streams: each is asked again alone (the same class's ``predict_many`` on that one stream, which
    must give what the fleet-wide call gives), so that only the streams whose own forecast fails lose it. A
    forecast with an infinite value, of the wrong length, or with NaN although its history holds values
    (:func:`unusable_forecast`) counts as failed: nothing downstream (scoring, the store) is handed a
    forecast the model did not really make.

    Examples
    --------
    >>> from mlma.models import SeasonalNaive
    >>> class Broken(SeasonalNaive):
    ...     def predict(self, ds, y, future_ds, X=None, future_X=None):
    ...         if y[0] < 0:
    ...             raise RuntimeError("cannot forecast a negative start")
    ...         return super().predict(ds, y, future_ds, X, future_X)
    ...     predict_many = classmethod(lambda cls, models, history: predict_each(models, history))
    >>> ctx = ForecastContext("h", season_length=2, horizon=2)
    >>> ds = np.arange("2024-01-01T00", "2024-01-01T04", dtype="datetime64[h]").astype("datetime64[ns]")
    >>> good, bad = np.array([1.0, 2.0, 3.0, 4.0]), np.array([-1.0, 2.0, 3.0, 4.0])
    >>> history = FleetHistory.from_histories([(ds, good), (ds, bad)], ds[-1] + np.array([1, 2], "timedelta64[h]"), "h")
    >>> y_hat, errors = predict_fleet_isolated([Broken(ctx).fit(ds, good), Broken(ctx).fit(ds, good)], history)
    >>> y_hat.tolist(), errors
    ([[3.0, 4.0], [nan, nan]], {1: 'RuntimeError: cannot forecast a negative start'})
    """
    if len(models) != history.n_streams:
        raise ValueError(f"{len(models)} models for {history.n_streams} streams' histories")
    out = np.full((len(models), history.future.size), np.nan)
    errors: dict[int, str] = {}
    for cls, members in _class_groups(models).items():
        part = history if len(members) == history.n_streams else history.take(members)
        try:
            out[members] = _predict_class(cls, [models[i] for i in members], part)
            continue
        except (Exception, SystemExit):  # noqa: BLE001 - the fleet-wide call failed: find the streams that fail alone
            pass
        for j, i in enumerate(members):
            try:
                out[i] = _predict_class(cls, [models[i]], part.take([j]))[0]
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - recorded for the stream; the others go on
                errors[i] = describe_error(exc)
    for i in np.flatnonzero(~np.isfinite(out).all(axis=1) | _far_from_history(out, history)).tolist():
        if i not in errors:
            problem = unusable_forecast(out[i], history.stream(i)[1])
            if problem is None:
                continue  # NaN from a history without a value: nothing to forecast from, not a failure
            errors[i] = f"{type(models[i]).__name__} {problem}"
        out[i] = np.nan
    return out, errors


def _far_from_history(out: np.ndarray, history: FleetHistory) -> np.ndarray:
    """By row, whether a forecast holds a value further from zero than :data:`IMPLAUSIBLE_FACTOR` times the
    largest of its stream's history (at least 1): the rows :func:`unusable_forecast` is asked about, found for
    the whole fleet at once (none for a history without a value other than 0: nothing to judge by).

    >>> ds = np.array(["2024-01-01T00", "2024-01-01T01"], dtype="datetime64[ns]")
    >>> h = FleetHistory.from_histories([(ds, np.array([5.0, 7.0])), (ds, np.array([np.nan, 0.0]))],
    ...                                 np.array(["2024-01-01T02"], dtype="datetime64[ns]"), "h")
    >>> _far_from_history(np.array([[8e6], [8e6]]), h).tolist()
    [True, False]
    """
    values = history.values()  # a grid-made history's own matrix: its row arrays are not built for this
    largest = (np.where(np.isfinite(values), np.abs(values), 0.0).max(axis=1) if values.shape[1]
               else np.zeros(len(out)))
    with np.errstate(invalid="ignore"):
        far = np.abs(out) > IMPLAUSIBLE_FACTOR * np.maximum(largest, 1.0)[:, None]
    return far.any(axis=1) & (largest > 0)


#: A forecast further from zero than this many times the largest value of its history (at least 1) is no
#: forecast of it: scored, its losses ran past float32's range and the stream was never tested.
IMPLAUSIBLE_FACTOR = 1e6


def unusable_forecast(y_hat: np.ndarray, y: np.ndarray) -> str | None:
    """What is wrong with a forecast, or None when nothing is: an infinite value always is; NaN is, unless the
    history ``y`` the forecast was made from holds no value at all (a model may say "no forecast" for a stream
    with nothing to forecast from; its row is left out, not escalated); and so is a value further from zero
    than :data:`IMPLAUSIBLE_FACTOR` times the largest of the history (at least 1), where the history holds a
    value other than 0 (a model's level forecast for a window of missing or abnormal values is not judged).

    >>> unusable_forecast(np.array([1.0, np.inf, np.nan]), np.array([2.0]))
    'returned 2 non-finite value(s) (inf, nan) in 3 forecasts'
    >>> unusable_forecast(np.array([np.nan, np.nan]), np.array([np.nan])) is None
    True
    >>> unusable_forecast(np.array([3.0, 1e300]), np.array([500.0, 20.0]))
    'returned 1 value(s) more than 1,000,000 times the largest of its history (500), e.g. 1e+300, in 2 forecasts'
    >>> unusable_forecast(np.array([2.5e6]), np.array([np.nan, 0.0])) is None  # nothing to judge it by
    True
    """
    bad = y_hat[~np.isfinite(y_hat)]
    if bad.size and (np.isinf(bad).any() or np.isfinite(y).any()):
        return (f"returned {bad.size} non-finite value(s) ({', '.join(sorted({str(v) for v in bad}))}) in "
                f"{y_hat.size} forecasts")
    finite = np.abs(y[np.isfinite(y)])
    largest = float(finite.max()) if finite.size else 0.0
    with np.errstate(invalid="ignore"):
        far = np.abs(y_hat) > IMPLAUSIBLE_FACTOR * max(largest, 1.0)
    if largest == 0 or not far.any():
        return None
    return (f"returned {int(far.sum())} value(s) more than {IMPLAUSIBLE_FACTOR:,.0f} times the largest of its "
            f"history ({largest:g}), e.g. {float(y_hat[far][0]):g}, in {y_hat.size} forecasts")


def as_forecast(values, who: str) -> np.ndarray:
    """A model's forecasts as float64, refusing values that are not real numbers (text, booleans, complex
    numbers), which a plain conversion would turn into numbers silently. The values are used by position: an
    index (of a Series) is not read.

    >>> as_forecast([1, 2.5], "Mine.predict").tolist()
    [1.0, 2.5]
    >>> as_forecast(np.array([1 + 2j]), "Mine.predict")
    Traceback (most recent call last):
    ...
    TypeError: Mine.predict returned complex128 values as forecasts, not real numbers
    """
    raw = np.asarray(values)
    if raw.dtype.kind == "O" and all(v is None or (isinstance(v, numbers.Real) and not isinstance(v, bool))
                                     for v in raw.ravel()):
        return raw.astype(np.float64)  # numbers and None (NaN: a failed forecast, said by the caller)
    if raw.dtype.kind in "iuf":
        return raw.astype(np.float64, copy=False)
    raise TypeError(f"{who} returned {raw.dtype} values as forecasts, not real numbers")


def _class_groups(models: list) -> dict[type, list[int]]:
    groups: dict[type, list[int]] = {}
    for i, model in enumerate(models):
        groups.setdefault(type(model), []).append(i)
    return groups


def _predict_class(cls: type, models: list, history: FleetHistory) -> np.ndarray:
    """One fleet-wide call of ``cls`` for ``models`` (all of that class), its shape checked."""
    if issubclass(cls, BaseForecaster):
        y_hat = as_forecast(cls.predict_many(models, history), f"{cls.__name__}.predict_many")
    else:
        y_hat = predict_each(models, history)
    if y_hat.shape != (len(models), history.future.size):
        raise ValueError(f"{cls.__name__}.predict_many returned shape {y_hat.shape} for {len(models)} streams "
                         f"and {history.future.size} timestamps")
    return y_hat


def describe_error(exc: BaseException) -> str:
    """One line on why a model failed: the exception's type and the first line of its message (``sys.exit`` in a
    model is said as such).

    >>> describe_error(KeyError("x")), describe_error(SystemExit(3))
    ("KeyError: 'x'", 'SystemExit(3): the model called sys.exit')
    """
    if isinstance(exc, SystemExit):
        return f"SystemExit({exc.code!r}): the model called sys.exit"
    text = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def model_driver_effects(model) -> tuple[np.ndarray, np.ndarray] | None:
    """:meth:`BaseForecaster.driver_effects`, None for a model that does not subclass :class:`BaseForecaster`."""
    return model.driver_effects() if isinstance(model, BaseForecaster) else None


def model_for_context(model, ctx: ForecastContext):
    """:meth:`BaseForecaster.for_context`: ``model`` as it forecasts under ``ctx``; the model itself for one that
    does not subclass :class:`BaseForecaster`."""
    return model.for_context(ctx) if isinstance(model, BaseForecaster) else model


class DriversChanged(ValueError):
    """A fitted model uses a driver that the fleet no longer declares, or no longer of the same kind (future or
    historical): it cannot forecast under the fleet's drivers and must be fitted again."""


def driver_view(model, ctx: ForecastContext) -> tuple[ForecastContext, np.ndarray | None]:
    """The context ``model`` forecasts under, and which columns of the fleet's ``X`` (``ctx.drivers.columns``)
    its own ``X`` columns are: None when they are the fleet's, in order (a model fitted under the fleet's
    drivers, or one that does not say: :attr:`BaseForecaster.fitted_drivers`). A model fitted before the
    fleet's drivers were re-ordered or extended gets its own columns by name, and the fleet's prior of their
    effects; :class:`DriversChanged` when one of its drivers is gone.

    >>> class Fitted(BaseForecaster):
    ...     fitted_drivers = Drivers(future=("rain", "temperature"))
    >>> now = ForecastContext("h", 24, 24, drivers=Drivers(future=("temperature", "campaign", "rain")),
    ...                       driver_prior=(0.0, 0.3, 0.1))
    >>> view, columns = driver_view(Fitted(), now)
    >>> columns.tolist(), view.drivers.future, view.driver_prior
    ([2, 0], ('rain', 'temperature'), (0.1, 0.0))
    >>> driver_view(Fitted(), ForecastContext("h", 24, 24, drivers=Drivers(future=("temperature",))))
    ... # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mlma.models.base.DriversChanged: the model was fitted with the future driver(s) ... (rain is gone)
    """
    fitted = model.fitted_drivers if isinstance(model, BaseForecaster) else None
    now = ctx.drivers
    if fitted is None or (fitted.future == now.future and fitted.historical == now.historical):
        return ctx, None
    for kind, theirs, ours in (("future", fitted.future, now.future),
                               ("historical", fitted.historical, now.historical)):
        gone = [name for name in theirs if name not in ours]
        if gone:
            raise DriversChanged(f"the model was fitted with the {kind} driver(s) {list(theirs)}; the fleet "
                                 f"declares {list(ours)} now ({', '.join(gone)} {'is' if len(gone) == 1 else 'are'} "
                                 "gone)")
    columns = np.array([now.columns.index(name) for name in fitted.columns], dtype=np.int64)
    prior = (None if ctx.driver_prior is None
             else tuple(ctx.driver_prior[now.future.index(name)] for name in fitted.future))
    drivers = Drivers(fitted.future, fitted.historical, tuple(n for n in now.events if n in fitted.future))
    return replace(ctx, drivers=drivers, driver_prior=prior), columns


def model_takes_driver_prior(model) -> bool:
    """:attr:`BaseForecaster.takes_driver_prior`, False for a model that does not subclass
    :class:`BaseForecaster`."""
    return isinstance(model, BaseForecaster) and bool(model.takes_driver_prior)


def model_uses_drivers(model) -> bool:
    """Whether the agent should pass drivers to ``model``: its :attr:`BaseForecaster.uses_drivers` hook,
    False for a model that does not subclass :class:`BaseForecaster`."""
    return isinstance(model, BaseForecaster) and bool(model.uses_drivers)


FIT_ERRORS = (InsufficientDataError, ValueError, np.linalg.LinAlgError)
"""Errors of ``fit`` that mean "this history cannot support the model": the stream falls back to a simpler one."""


class FleetForecaster(BaseForecaster):
    """Base class of models that fit many streams' models in one call (e.g. statsforecast with its ``n_jobs``).

    The model service hands each chunk of streams to :func:`mlma.models.fit_forecasters`; when the spec's
    model derives from this class, the streams whose history passed the checks go to :meth:`fit_many` of its
    class in one call. Each stream still gets its own model (one per stream, as the agent addresses them), so
    a subclass must fit every stream as if alone: the same history gives the same model, whichever streams
    share the call.

    A chunk is fitted in one call only when no stream of it has driver values ``X`` (the default
    :attr:`~BaseForecaster.uses_drivers` is False, so the model service passes none); otherwise each stream is
    fitted alone with its ``X``.
    """

    @classmethod
    def fit_many(cls, models: list, histories: list[tuple[np.ndarray, np.ndarray]]) -> list[Exception | None]:
        """Fit ``models[i]`` on ``histories[i] = (ds, y)``; returns per stream None or the fit's error.

        Errors in :data:`FIT_ERRORS` are returned (the stream falls back to a simpler model), others raised.
        The default fits one stream after another.
        """
        errors: list[Exception | None] = []
        for model, (ds, y) in zip(models, histories, strict=True):
            try:
                model.fit(ds, y)
            except FIT_ERRORS as exc:
                errors.append(exc)
            else:
                errors.append(None)
        return errors


def as_datetime_array(ds, name: str = "ds") -> np.ndarray:
    """``ds`` as a 1-D ``datetime64[ns]`` array, with a clear error for anything else."""
    try:
        arr = np.asarray(ds)
        if arr.dtype.kind != "M":
            raise TypeError
        arr = arr.astype("datetime64[ns]")
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be an array of datetime64 timestamps, got dtype "
            f"{getattr(np.asarray(ds), 'dtype', type(ds))}"
        ) from None
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if np.isnat(arr).any():
        raise ValueError(f"{name} contains NaT")
    return arr


def as_float_array(y, n: int, name: str = "y") -> np.ndarray:
    """``y`` as a 1-D float64 array of length ``n``."""
    try:
        arr = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric, got {np.asarray(y).dtype}") from None
    if arr.shape != (n,):
        raise ValueError(f"{name} must have shape ({n},) to match ds, got {arr.shape}")
    return arr


def as_exog_array(X, n: int, name: str = "X") -> np.ndarray | None:
    """Exogenous values as a 2-D float64 array with ``n`` rows, or None."""
    if X is None:
        return None
    arr = np.asarray(X, dtype=np.float64)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[0] != n:
        raise ValueError(f"{name} must have {n} rows (one per timestamp), got shape {arr.shape}")
    return arr
