"""Benchmarks and fallbacks: the seasonal naive and the mean forecast."""

from __future__ import annotations

from typing import Self

import numpy as np

from mlma.models.base import BaseForecaster, FleetHistory, ForecastContext, as_datetime_array, as_float_array
from mlma.models.features import forward_fill, forward_fill_rows, regularise, seasonal_ffill, seasonal_ffill_rows

__all__ = ["SeasonalNaive", "MeanForecaster"]


def _check_ctx(ctx) -> ForecastContext:
    if not isinstance(ctx, ForecastContext):
        raise ValueError(f"ctx must be a ForecastContext, got {type(ctx).__name__}")
    return ctx


def _finite_mean(y: np.ndarray) -> float:
    finite = y[np.isfinite(y)]
    return float(finite.mean()) if finite.size else float("nan")


class SeasonalNaive(BaseForecaster):
    """Forecast each timestamp by the value one season before it.

    When that value is missing (a gap, or a horizon longer than a season) the value at the same phase of an
    earlier season is used; when no season has one, the last observed value; with no observation at all in
    the history given to ``predict``, the mean of the fitted history.

    Parameters
    ----------
    ctx
        The stream's clock.
    season_length
        Overrides ``ctx.season_length``.

    Examples
    --------
    >>> ctx = ForecastContext("D", season_length=3, horizon=3)
    >>> ds = np.arange("2024-01-01", "2024-01-07", dtype="datetime64[D]").astype("datetime64[ns]")
    >>> y = np.array([1.0, 2.0, 3.0, 4.0, np.nan, 6.0])
    >>> future = ds[-1] + np.arange(1, 4) * np.timedelta64(1, "D")
    >>> SeasonalNaive(ctx).fit(ds, y).predict(ds, y, future).tolist()
    [4.0, 2.0, 6.0]
    """

    def __init__(self, ctx: ForecastContext, season_length: int | None = None):
        self.ctx = _check_ctx(ctx)
        m = ctx.season_length if season_length is None else season_length
        if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
            raise ValueError(f"season_length must be a positive integer, got {season_length!r}")
        self.season_length = int(m)

    @property
    def min_history(self) -> int:
        """One season of observations."""
        return self.season_length

    def fit(self, ds: np.ndarray, y: np.ndarray, X: np.ndarray | None = None) -> Self:
        ds = as_datetime_array(ds)
        y = as_float_array(y, ds.size)
        self.level_ = _finite_mean(y)
        self.n_train_ = int(np.isfinite(y).sum())
        return self

    def predict(self, ds, y, future_ds, X=None, future_X=None) -> np.ndarray:
        ds = as_datetime_array(ds)
        y = as_float_array(y, ds.size)
        future_ds = as_datetime_array(future_ds, "future_ds")
        if future_ds.size == 0:
            return np.zeros(0)
        grid = regularise(ds, y, self.ctx.freq, future_ds=future_ds)
        rows = grid.future_rows
        seasonal = seasonal_ffill(grid.y, self.season_length)
        before = rows - self.season_length
        out = np.where(before >= 0, seasonal[np.maximum(before, 0)], np.nan)
        last = forward_fill(grid.y)
        before = rows - 1
        out = np.where(np.isnan(out) & (before >= 0), last[np.maximum(before, 0)], out)
        return np.where(np.isnan(out), getattr(self, "level_", np.nan), out)

    @classmethod
    def predict_many(cls, models: list, history: FleetHistory) -> np.ndarray:
        """Every stream's :meth:`predict` at once, with array operations over the fleet's grid.

        The same values: a forecast column ``c`` takes the last observed value at the phase of ``c - m``
        (every later grid column of that phase is a forecast column, so the last one in the history is the
        one :meth:`predict` finds), else the last observed value, else the fitted level.
        """
        if cls.predict is not SeasonalNaive.predict:
            return super().predict_many(models, history)  # a subclass forecasts its own way: ask it
        out = np.empty((len(models), history.future.size))
        if not models or not history.future.size:
            return out
        columns = history.future_columns
        past = history.values()[:, : int(columns.min())]  # the history's columns
        seasons = np.array([model.season_length for model in models])
        levels = np.array([getattr(model, "level_", np.nan) for model in models], dtype=np.float64)
        last = _last_finite(past)
        for season in np.unique(seasons):
            members = np.flatnonzero(seasons == season)
            grid = past[members] if members.size < len(models) else past
            by_phase, pad = _last_finite_by_phase(grid, int(season))
            before = columns - season
            phase = (before + pad) % season
            part = np.where(before >= 0, by_phase[:, phase], np.nan)
            part = np.where(np.isnan(part) & (columns >= 1), last[members, None], part)
            out[members] = np.where(np.isnan(part), levels[members, None], part)
        return out


def _last_finite(values: np.ndarray) -> np.ndarray:
    """The last finite value of each row of a 2-D array (NaN for a row without one)."""
    finite = np.isfinite(values)
    if values.shape[1] == 0:
        return np.full(values.shape[0], np.nan)
    last = values.shape[1] - 1 - np.argmax(finite[:, ::-1], axis=1)
    return np.where(finite.any(axis=1), values[np.arange(values.shape[0]), last], np.nan)


def _last_finite_by_phase(values: np.ndarray, season: int) -> tuple[np.ndarray, int]:
    """``(rows, season)``: each row's last finite value at each phase, the phase of column ``j`` being
    ``(j + pad) % season`` with ``pad`` (returned) the columns added in front to fill whole seasons."""
    n, width = values.shape
    seasons = -(-width // season)
    pad = seasons * season - width
    if seasons == 0:
        return np.full((n, season), np.nan), pad
    table = np.full((n, seasons * season), np.nan)
    table[:, pad:] = values
    table = table.reshape(n, seasons, season)
    finite = np.isfinite(table)
    last = seasons - 1 - np.argmax(finite[:, ::-1, :], axis=1)
    picked = np.take_along_axis(table, last[:, None, :], axis=1)[:, 0, :]
    return np.where(finite.any(axis=1), picked, np.nan), pad


class MeanForecaster(BaseForecaster):
    """Forecast the mean of the most recent observations, flat over the horizon.

    Parameters
    ----------
    ctx
        The stream's clock (only used for validation).
    window
        Number of most recent finite observations averaged at predict time; ``None`` averages all of the
        history passed in. With none, the mean of the fitted history is used.

    Examples
    --------
    >>> ctx = ForecastContext("h", season_length=24, horizon=2)
    >>> ds = np.arange("2024-01-01T00", "2024-01-01T04", dtype="datetime64[h]").astype("datetime64[ns]")
    >>> m = MeanForecaster(ctx, window=2).fit(ds, np.array([1.0, 2.0, np.nan, 6.0]))
    >>> m.predict(ds, np.array([1.0, 2.0, np.nan, 6.0]), ds[-1:] + np.array([1, 2], dtype="timedelta64[h]"))
    array([4., 4.])
    """

    min_history = 1

    def __init__(self, ctx: ForecastContext, window: int | None = None):
        self.ctx = _check_ctx(ctx)
        if window is not None and (isinstance(window, bool) or not isinstance(window, (int, np.integer))
                                   or window < 1):
            raise ValueError(f"window must be a positive integer or None, got {window!r}")
        self.window = None if window is None else int(window)

    def _mean(self, y: np.ndarray) -> float:
        finite = y[np.isfinite(y)]
        if self.window is not None:
            finite = finite[-self.window:]
        return float(finite.mean()) if finite.size else float("nan")

    def fit(self, ds: np.ndarray, y: np.ndarray, X: np.ndarray | None = None) -> Self:
        ds = as_datetime_array(ds)
        y = as_float_array(y, ds.size)
        self.level_ = self._mean(y)
        self.n_train_ = int(np.isfinite(y).sum())
        return self

    def predict(self, ds, y, future_ds, X=None, future_X=None) -> np.ndarray:
        ds = as_datetime_array(ds)
        y = as_float_array(y, ds.size)
        future_ds = as_datetime_array(future_ds, "future_ds")
        level = self._mean(y[np.argsort(ds, kind="stable")])
        if np.isnan(level):
            level = getattr(self, "level_", np.nan)
        return np.full(future_ds.size, level)
