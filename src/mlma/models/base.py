"""The contract between the agent and a forecasting model.

A model is fitted on one stream's history window and then asked, possibly many ticks later and without being
re-trained, to forecast the next tick's timestamps given the stream's *recent* history. Everything the agent
needs from a model is in :class:`Forecaster`; everything a model needs to know about the stream's clock is in
:class:`ForecastContext`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Self, runtime_checkable

import numpy as np
from pandas.tseries.frequencies import to_offset

from mlma.calendar import season_length

__all__ = [
    "BaseForecaster",
    "Drivers",
    "FIT_ERRORS",
    "FleetForecaster",
    "ForecastContext",
    "Forecaster",
    "model_uses_drivers",
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
    """

    future: tuple[str, ...] = ()
    historical: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        future = _names(self.future, "future drivers")
        historical = _names(self.historical, "historical drivers")
        both = sorted(set(future) & set(historical))
        if both:
            raise ValueError(f"driver {both[0]!r} is declared both future and historical")
        for names in (future, historical):
            if len(set(names)) != len(names):
                raise ValueError(f"driver names must be unique, got {list(names)}")
        object.__setattr__(self, "future", future)
        object.__setattr__(self, "historical", historical)

    @property
    def columns(self) -> tuple[str, ...]:
        """Column order of ``X`` and ``future_X``: future drivers, then historical ones."""
        return self.future + self.historical

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

    def __post_init__(self) -> None:
        _offset_or_raise(self.freq, "freq")
        if self.drivers is None:
            object.__setattr__(self, "drivers", NO_DRIVERS)
        if not isinstance(self.drivers, Drivers):
            raise ValueError(f"drivers must be a Drivers, got {type(self.drivers).__name__}")
        for name in ("season_length", "horizon"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))

    def __repr__(self) -> str:
        extra = f", drivers={self.drivers!r}" if self.drivers else ""
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
