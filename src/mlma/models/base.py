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

__all__ = [
    "FIT_ERRORS",
    "FleetForecaster",
    "ForecastContext",
    "Forecaster",
    "InsufficientDataError",
    "default_season_length",
    "as_datetime_array",
    "as_float_array",
    "as_exog_array",
]

# Keyed by the offset's rule-code prefix, so that "W-MON", "QS-JAN", "2h" all resolve.
_SEASON_BY_PREFIX = {
    "min": None,  # depends on the multiple: one day of steps
    "h": None,
    "s": None,
    "D": 7,
    "B": 5,
    "W": 52,
    "MS": 12,
    "ME": 12,
    "BMS": 12,
    "BME": 12,
    "QS": 4,
    "QE": 4,
    "BQS": 4,
    "BQE": 4,
    "YS": 1,
    "YE": 1,
    "BYS": 1,
    "BYE": 1,
}


class InsufficientDataError(ValueError):
    """The history cannot support the model (too short, too sparse).

    Raised by the built-in models from ``fit``; :func:`mlma.models.fit_forecaster` catches it and falls back to a
    simpler model, keeping the message as the ``fallback_reason``.
    """


def default_season_length(freq: str) -> int:
    """The usual season length for a pandas frequency alias.

    Sub-daily frequencies get one day of steps (24 for ``"h"``, 48 for ``"30min"``), daily data a week, weekly
    data a year of 52 weeks, monthly 12, quarterly 4 and anything else 1 (no seasonality).

    Examples
    --------
    >>> [default_season_length(f) for f in ["h", "30min", "D", "W-MON", "MS", "QS", "YS"]]
    [24, 48, 7, 52, 12, 4, 1]
    """
    offset = _offset_or_raise(freq, "freq")
    prefix = offset.rule_code.split("-")[0]
    if prefix in _SEASON_BY_PREFIX and _SEASON_BY_PREFIX[prefix] is not None:
        return int(_SEASON_BY_PREFIX[prefix])
    try:
        step = int(np.timedelta64(offset.nanos, "ns").astype(np.int64))
    except (ValueError, AttributeError):
        return 1
    day = 86_400 * 10**9
    if 0 < step < day and day % step == 0:
        return day // step
    return 1


def _offset_or_raise(freq: str, name: str):
    if not isinstance(freq, str) or not freq:
        raise ValueError(f"{name} must be a pandas offset alias such as 'h', 'D' or 'MS', got {freq!r}")
    try:
        return to_offset(freq)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{name}={freq!r} is not a pandas offset alias ({exc})") from None


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

    def __post_init__(self) -> None:
        _offset_or_raise(self.freq, "freq")
        for name in ("season_length", "horizon"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))

    @classmethod
    def for_freq(cls, freq: str, horizon: int, season_length: int | None = None) -> ForecastContext:
        """Build a context, taking the season length from :func:`default_season_length` unless given."""
        if season_length is None:
            season_length = default_season_length(freq)
        return cls(freq=freq, season_length=season_length, horizon=horizon)


@runtime_checkable
class Forecaster(Protocol):
    """One stream's forecasting model.

    ``fit`` learns from one stream's history window and returns the model. ``predict`` forecasts
    ``future_ds`` from the stream's *recent* history ``(ds, y)``, which the agent passes at every tick because a
    model fitted several ticks ago must still use the latest lags.

    ``ds`` arrays are ``datetime64[ns]``, ascending, on the context's frequency grid but possibly with gaps
    (missing grid timestamps) and NaN in ``y``. ``future_ds`` are the grid timestamps of the next tick.
    ``X``/``future_X`` are optional exogenous values aligned with ``ds``/``future_ds`` (2-D, one column per
    variable). ``min_history`` is the number of observations needed to fit.

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


FIT_ERRORS = (InsufficientDataError, ValueError, np.linalg.LinAlgError)
"""Errors of ``fit`` that mean "this history cannot support the model": the stream falls back to a simpler one."""


class FleetForecaster:
    """Base class of models that fit many streams' models in one call (e.g. statsforecast with its ``n_jobs``).

    The model service hands each chunk of streams to :func:`mlma.models.fit_forecasters`; when the spec's
    model derives from this class, the streams whose history passed the checks go to :meth:`fit_many` of its
    class in one call. Each stream still gets its own model (one per stream, as the agent addresses them), so
    a subclass must fit every stream as if alone: the same history gives the same model, whichever streams
    share the call.
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
