"""Nixtla's statsforecast models and mlforecast pipelines as mlma models (``pip install 'mlma[nixtla]'``).

Two adapters, each one stream's :class:`~mlma.models.Forecaster` like every other mlma model, so that the agent
re-trains, checks, promotes and rolls back each stream's model on its own:

- :class:`StatsForecastModel` wraps any model of ``statsforecast.models`` (``AutoETS``, ``AutoARIMA``,
  ``MSTL``, ``AutoTheta``...). Its season length comes from the project's clock (``ForecastContext``, built
  from :class:`mlma.data.Frequency`). A chunk of streams is fitted in one ``StatsForecast.fit`` call, with
  statsforecast's own ``n_jobs`` parallelism (:class:`~mlma.models.base.FleetForecaster`). A model fitted
  ticks ago forecasts from the latest history with statsforecast's ``forward`` (the fitted parameters applied
  to the new data), as mlma's contract asks.
- :class:`MLForecastModel` wraps an ``mlforecast.MLForecast`` pipeline: a built-in default (LightGBM on
  seasonal differences with lags and a rolling mean) or one the user builds in a function named by import
  path. It is fitted per stream (a *local* model). mlforecast is usually fitted as one global model over many
  series; mlma does not do that, because a model fitted on a chunk of streams would depend on which streams
  happen to be re-trained together, so the same stream would get different models in a backtest and in live
  operation, and a roll-back of one stream would change the others.

Both work on the frequency grid: gaps and missing values in a history are filled with the value one season
earlier (else the last value) before fitting or forecasting, since neither library accepts them.

Exogenous drivers (:class:`~mlma.models.Drivers`): both adapters use the context's drivers when the model can
(:attr:`~mlma.models.BaseForecaster.uses_drivers`): every mlforecast pipeline (as dynamic features, with the
announced values as ``X_df`` when forecasting) and the statsforecast models that take exogenous regressors
(``uses_exog``: ``AutoARIMA``, ``ARIMA``, ``AutoRegressive``, ``MFLES``...; ``AutoETS`` and the other models
without them get none). Future drivers enter at the timestamp they describe (past values to fit, the values
ingested ahead to forecast); historical drivers enter lagged by the tick's horizon, so only values known at
the forecast origin are used. A driver that does not vary in the training window (or only by rounding), or that
is a linear function of those before it, cannot be estimated and is left out of that fit. ``use_drivers=False``
(``statsforecast:AutoARIMA:use_drivers=False``) ignores them.

Spec strings (``--model`` and ``[model] spec``)::

    statsforecast:AutoETS
    statsforecast:AutoARIMA:max_p=3,max_q=3
    statsforecast:MSTL:season_length=[24,168]
    statsforecast:AutoETS:model=ZZA,n_jobs=2
    mlforecast
    mlforecast:n_estimators=200
    mlforecast:my_team.pipelines:make_pipeline
    mlforecast:my_team.pipelines:make_pipeline:alpha=0.5

Parameters after the last ``:`` are ``key=value`` pairs separated by commas; values are Python literals
(numbers, strings, lists, True/False/None), and a bare word is a string.
"""

from __future__ import annotations

import ast
import copy
import inspect
import re
import sys
import warnings
from typing import Any, Self

import numpy as np
import pandas as pd

from mlma.models.base import (
    BaseForecaster,
    Drivers,
    FleetForecaster,
    ForecastContext,
    SpecUnavailable,
    as_datetime_array,
    as_exog_array,
    as_float_array,
)
from mlma.models.features import forward_fill, regularise, seasonal_ffill

__all__ = [
    "StatsForecastModel",
    "MLForecastModel",
    "default_pipeline",
    "parse_spec_params",
    "split_spec",
]

_INSTALL = "pip install 'mlma[nixtla]'"
_PARAM = re.compile(r"^\s*[A-Za-z_][A-Za-z0-9_]*\s*=")


def parse_spec_params(text: str, spec: str = "") -> dict[str, Any]:
    """``"a=1,b=[2,3],c=ZZA"`` as ``{"a": 1, "b": [2, 3], "c": "ZZA"}``.

    Commas inside brackets or quotes do not separate pairs. A value that is not a Python literal is taken as
    a string.

    Examples
    --------
    >>> parse_spec_params("season_length=[24,168],model=ZZA,damped=True")
    {'season_length': [24, 168], 'model': 'ZZA', 'damped': True}
    >>> parse_spec_params("alpha", "ridge:alpha")
    Traceback (most recent call last):
    ...
    ValueError: model spec 'ridge:alpha': parameter 'alpha' is not of the form key=value
    """
    label = spec or text
    pairs, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(text):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        elif ch == "," and depth == 0:
            pairs.append(text[start:i])
            start = i + 1
    pairs.append(text[start:])
    params: dict[str, Any] = {}
    for pair in pairs:
        if not pair.strip():
            continue
        key, eq, raw = pair.partition("=")
        key = key.strip()
        if not eq or not key.isidentifier():
            raise ValueError(f"model spec {label!r}: parameter {pair.strip()!r} is not of the form key=value")
        if key in params:
            raise ValueError(f"model spec {label!r}: parameter {key!r} is given twice")
        raw = raw.strip()
        try:
            params[key] = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            params[key] = raw
    return params


def split_spec(rest: str, spec: str) -> tuple[list[str], dict[str, Any]]:
    """Split what follows ``statsforecast:`` / ``mlforecast:`` into its ``:``-separated names and parameters.

    The parameters are the last part when it holds ``key=value`` pairs.

    Examples
    --------
    >>> split_spec("AutoARIMA:max_p=3,max_q=3", "statsforecast:AutoARIMA:max_p=3,max_q=3")
    (['AutoARIMA'], {'max_p': 3, 'max_q': 3})
    >>> split_spec("team.pipes:make:alpha=0.5", "mlforecast:team.pipes:make:alpha=0.5")
    (['team.pipes', 'make'], {'alpha': 0.5})
    >>> split_spec("n_estimators=50", "mlforecast:n_estimators=50")
    ([], {'n_estimators': 50})
    """
    parts = rest.split(":")
    params: dict[str, Any] = {}
    if parts and _PARAM.match(parts[-1]):
        params = parse_spec_params(parts.pop(), spec)
    names = [p.strip() for p in parts]
    if any(not p for p in names):
        raise ValueError(f"model spec {spec!r} has an empty part between ':'")
    return names, params


def _check_ctx(ctx) -> ForecastContext:
    if not isinstance(ctx, ForecastContext):
        raise ValueError(f"ctx must be a ForecastContext, got {type(ctx).__name__}")
    return ctx


def _check_n_jobs(n_jobs) -> int:
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, (int, np.integer)) or not (n_jobs == -1 or n_jobs >= 1):
        raise ValueError(f"n_jobs must be -1 (every core) or a whole number >= 1, got {n_jobs!r}")
    return int(n_jobs)


def _filled(values: np.ndarray, season_length: int) -> np.ndarray:
    """Gaps filled with the value one season earlier, else the last value; leading NaN stay."""
    return forward_fill(seasonal_ffill(values, season_length))


def _check_use_drivers(use_drivers) -> bool:
    if not isinstance(use_drivers, (bool, np.bool_)):
        raise ValueError(f"use_drivers must be True or False, got {use_drivers!r}")
    return bool(use_drivers)


class _GridSeries:
    """One stream's history laid on the frequency grid and filled, with the steps to forecast.

    With driver values (``X`` with the history, ``future_X`` for ``future_ds``), :attr:`X` holds them on the
    rows of :attr:`values` and :attr:`future_X` on the forecast steps ``1..steps.max()``: the future drivers
    at their own timestamps, the historical ones lagged by the context's horizon (their value at the forecast
    origin or before), gaps filled as the target's are. A leading gap stays NaN.
    """

    def __init__(self, ctx: ForecastContext, ds, y, future_ds=None, season_length: int | None = None,
                 X=None, future_X=None):
        ds = as_datetime_array(ds)
        y = as_float_array(y, ds.size)
        if future_ds is not None:
            future_ds = as_datetime_array(future_ds, "future_ds")
        grid = regularise(ds, y, ctx.freq, future_ds=future_ds)
        n_hist = int(grid.hist_rows.max()) + 1 if ds.size else 0
        season = season_length or ctx.season_length
        values = _filled(grid.y[:n_hist], season)
        finite = np.flatnonzero(np.isfinite(values))
        self.first = int(finite[0]) if finite.size else n_hist
        #: The filled history from its first finite value on.
        self.values = values[self.first:]
        #: The grid position of ``values[0]`` (:meth:`mlma.calendar.Frequency.positions`).
        self.position = int(grid.start) + self.first
        #: Grid timestamps of ``values`` (the first history timestamp is on row 0 of the grid).
        self.start = ds[0] if ds.size else None
        self.n_obs = int(np.isfinite(y).sum())
        self.steps = None
        if future_ds is not None:
            self.steps = grid.future_rows - (n_hist - 1)
            if self.steps.size and self.steps.min() < 1:
                raise ValueError("future_ds must come after the history's last timestamp")
        self.X = self.future_X = None
        if X is not None or future_X is not None:
            self._place_drivers(ctx, grid, n_hist, season, ds.size, X, future_X)

    def _place_drivers(self, ctx, grid, n_hist: int, season: int, n_ds: int, X, future_X) -> None:
        k, n_future = len(ctx.drivers.columns), len(ctx.drivers.future)
        X = as_exog_array(X, n_ds, "X")
        future_X = as_exog_array(future_X, 0 if grid.future_rows is None else grid.future_rows.size, "future_X")
        for name, values in (("X", X), ("future_X", future_X)):
            if values is not None and values.shape[1] != k:
                raise ValueError(f"{name} has {values.shape[1]} column(s); the context declares {k} driver(s) "
                                 f"{list(ctx.drivers.columns)}")
        horizon = int(self.steps.max()) if self.steps is not None and self.steps.size else 0
        table = np.full((n_hist + horizon, k), np.nan)
        if X is not None and n_ds:
            table[grid.hist_rows] = X
        if future_X is not None and grid.future_rows is not None and grid.future_rows.size:
            table[grid.future_rows, :n_future] = future_X[:, :n_future]  # historical ones are not known ahead
        lag = ctx.horizon
        lagged = np.full((table.shape[0], k - n_future), np.nan)
        if table.shape[0] > lag:  # a history shorter than the lag has no known value yet (the slice went negative)
            lagged[lag:] = table[:table.shape[0] - lag, n_future:]
        table[:, n_future:] = lagged
        table = np.column_stack([_filled(table[:, j], season) for j in range(k)]) if k else table
        self.X = table[self.first:n_hist]
        self.future_X = table[n_hist:] if self.steps is not None else None

    def timestamps(self, freq: str) -> pd.DatetimeIndex:
        stamps = pd.date_range(pd.Timestamp(self.start), periods=self.first + self.values.size, freq=freq)
        return stamps[self.first:]


# -- statsforecast ---------------------------------------------------------------------------------------
def _statsforecast_models():
    try:
        from statsforecast import models  # noqa: PLC0415 - optional extra
    except ImportError as exc:
        raise SpecUnavailable(f"statsforecast models need the statsforecast package: {_INSTALL}") from exc
    return models


#: Models whose forward() is there but does not forecast from a history other than the fitted one: AutoCES's
#: forecasts from the next days of a daily series were off by three to four orders of magnitude (a level-50 series
#: forecast at 1,500 to 67,000), finite, so nothing flagged them.
_NO_USABLE_FORWARD = {"AutoCES": "its forward() forecasts a newer history off by orders of magnitude"}


def _statsforecast_class(name: str):
    models = _statsforecast_models()
    cls = getattr(models, name, None)
    known = sorted(n for n, c in vars(models).items()
                   if isinstance(c, type) and not n.startswith("_") and callable(getattr(c, "forward", None))
                   and c.__module__ == models.__name__ and n not in _NO_USABLE_FORWARD)
    if name in _NO_USABLE_FORWARD:
        raise ValueError(f"statsforecast model {name!r} cannot forecast from a fitted model and a newer history "
                         f"({_NO_USABLE_FORWARD[name]}), which mlma needs; models that can: {', '.join(known)}")
    if isinstance(cls, type) and callable(getattr(cls, "fit", None)) and not callable(getattr(cls, "forward", None)):
        # Croston's family, TSB, ADIDA, IMAPA, MFLES: statsforecast refits them on every forecast; mlma forecasts
        # from a fitted model and the recent history (forward), which they do not have.
        raise ValueError(f"statsforecast model {name!r} cannot forecast from a fitted model and a newer history "
                         f"(it has no forward()), which mlma needs; models that can: {', '.join(known)}")
    if not (isinstance(cls, type) and callable(getattr(cls, "fit", None))):
        raise ValueError(f"statsforecast has no model {name!r}; models: {', '.join(known)}")
    return cls


class StatsForecastModel(FleetForecaster):
    """Any ``statsforecast.models`` model as one stream's Forecaster.

    Parameters
    ----------
    ctx
        The stream's clock; ``ctx.season_length`` is passed as ``season_length`` to models that take one,
        unless given in ``params``.
    name
        Name of the class in ``statsforecast.models``: ``"AutoETS"``, ``"AutoARIMA"``, ``"MSTL"``...
    n_jobs
        Processes statsforecast uses when a chunk of streams is fitted in one call (``-1``: every core). Keep
        1 with a process-pool or Dask executor, which already runs one chunk per core.
    use_drivers
        Give the context's drivers to a model that takes exogenous regressors (default True; see the module
        docstring). A stream fitted with driver values is fitted alone, not in a joint call.
    **params
        The model's own parameters (e.g. ``model="ZZA"`` for AutoETS, ``max_p=3`` for AutoARIMA).

    Examples
    --------
    >>> _ = __import__("pytest").importorskip("statsforecast")  # the examples need mlma[nixtla]
    >>> ctx = ForecastContext("D", season_length=7, horizon=7)
    >>> ds = np.arange("2024-01-01", "2024-04-01", dtype="datetime64[D]").astype("datetime64[ns]")
    >>> y = 10 + 3 * np.sin(2 * np.pi * np.arange(ds.size) / 7)
    >>> m = StatsForecastModel(ctx, "AutoETS").fit(ds, y)
    >>> m.prototype
    AutoETS
    >>> future = ds[-1] + np.arange(1, 8) * np.timedelta64(1, "D")
    >>> truth = 10 + 3 * np.sin(2 * np.pi * np.arange(ds.size, ds.size + 7) / 7)
    >>> bool(np.abs(m.predict(ds, y, future) - truth).max() < 0.1)
    True
    >>> StatsForecastModel(ctx, "AutoETS", modle="ZZA")
    Traceback (most recent call last):
    ...
    ValueError: statsforecast AutoETS does not take parameter(s) ['modle']; it takes: alias, damped, distribution, model, phi, prediction_intervals, season_length
    """

    def __init__(self, ctx: ForecastContext, name: str = "AutoETS", n_jobs: int = 1, use_drivers: bool = True,
                 **params) -> None:
        self.ctx = _check_ctx(ctx)
        self.use_drivers = _check_use_drivers(use_drivers)
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"name must name a statsforecast model such as 'AutoETS', got {name!r}")
        self.name = name.strip()
        self.n_jobs = _check_n_jobs(n_jobs)
        cls = _statsforecast_class(self.name)
        accepted = inspect.signature(cls).parameters
        unknown = sorted(set(params) - set(accepted))
        if unknown:
            raise ValueError(f"statsforecast {self.name} does not take parameter(s) {unknown}; it takes: "
                             f"{', '.join(sorted(accepted))}")
        given = "season_length" in params
        if "season_length" in accepted and not given:
            params["season_length"] = ctx.season_length
        if "season_length" in params:
            # The bound is for a spec's value; the clock's own season (86,400,000 for data every millisecond) is
            # the frequency's, which a spec may shorten.
            params["season_length"] = _season_lengths(params["season_length"], self.name, bounded=given)
        self.params = params
        try:
            self.prototype = cls(**params)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"statsforecast {self.name} with {params}: {exc}") from None
        seasons = params.get("season_length", 1)
        self.season_length = int(max(np.atleast_1d(seasons))) if seasons else 1

    @property
    def min_history(self) -> int:
        """Two seasons of observations (at least 8)."""
        return max(2 * self.season_length, 8)

    @property
    def uses_drivers(self) -> bool:
        """True when the context declares drivers and the statsforecast model takes exogenous regressors."""
        # ``uses_exog`` is statsforecast's own class attribute (False on its base class).
        return self.use_drivers and bool(self.ctx.drivers) and bool(getattr(self.prototype, "uses_exog", False))

    @property
    def fitted_drivers(self) -> Drivers | None:
        """The context's drivers, when the model uses them."""
        return self.ctx.drivers if self.uses_drivers else None

    def _series(self, ds, y, future_ds=None, X=None, future_X=None) -> _GridSeries:
        if not self.uses_drivers:
            X = future_X = None
        return _GridSeries(self.ctx, ds, y, future_ds, season_length=self.season_length, X=X, future_X=future_X)

    def fit(self, ds: np.ndarray, y: np.ndarray, X: np.ndarray | None = None) -> Self:
        series = self._series(ds, y, X=X)
        regressors = _Regressors.learn(series.X)
        fitted = _fit_one(self.prototype, series.values, self.name, regressors.history(series.X))
        self._adopt(fitted, series, regressors)
        return self

    def _adopt(self, fitted, series: _GridSeries, regressors: _Regressors | None = None) -> None:
        self.model_ = fitted
        # The season's phase the fitted seasonal states start at, for a model that replays them (see predict);
        # None for every other one (Holt, an AutoETS that chose no season, AutoTheta...): its history is read as is.
        states = _seasonal_states(fitted)
        self.phase_ = None if states is None else series.position % (states.stop - states.start)
        self.regressors_ = regressors or _Regressors.none()
        self.n_train_ = series.n_obs
        self.level_ = float(series.values.mean()) if series.values.size else float("nan")

    @classmethod
    def fit_many(cls, models: list[StatsForecastModel], histories) -> list[Exception | None]:
        """Fit every stream in one ``StatsForecast.fit`` call with the models' ``n_jobs``.

        Each series is fitted by a fresh copy of the same prototype, as :meth:`fit` does, so a stream gets the
        same model alone or in a chunk. When the call fails (one series the model cannot handle), the streams
        are fitted one by one so that only that stream falls back.
        """
        if len(models) < 2:
            return super().fit_many(models, histories)
        first = models[0]
        if any(m.name != first.name or m.params != first.params for m in models):
            return super().fit_many(models, histories)
        series = [m._series(ds, y) for m, (ds, y) in zip(models, histories, strict=True)]
        if any(s.values.size == 0 for s in series):
            return super().fit_many(models, histories)
        from statsforecast import StatsForecast  # noqa: PLC0415 - optional extra

        lengths = np.array([s.values.size for s in series])
        frame = pd.DataFrame({"unique_id": np.repeat(np.arange(len(series)), lengths),
                              "ds": np.concatenate([np.arange(n) for n in lengths]),
                              "y": np.concatenate([s.values for s in series])})
        try:
            fleet = StatsForecast(models=[first.prototype], freq=1, n_jobs=first.n_jobs).fit(frame)
        except Exception:  # noqa: BLE001 - some series broke the joint call: fit each alone, keep each error
            return super().fit_many(models, histories)
        order = np.asarray(fleet.uids, dtype=np.int64)
        errors: list[Exception | None] = [None] * len(models)
        for row, i in enumerate(order):
            try:
                models[i]._adopt(fleet.fitted_[row, 0], series[i])
            except ValueError as exc:  # a fitted model mlma cannot read (_seasonal_states): that stream falls back
                errors[i] = exc
        return errors

    def predict(self, ds, y, future_ds, X=None, future_X=None) -> np.ndarray:
        series = self._series(ds, y, future_ds, X, future_X)
        steps = series.steps
        if steps.size == 0:
            return np.zeros(0)
        if series.values.size < self.min_history:
            return _naive_forecast(self.ctx, ds, y, future_ds, self.level_)
        # A seasonal ETS's ``forward`` (AutoETS, HoltWinters) replays the new history from the fit's initial states,
        # the seasonal ones included, from its first value on: a history that starts at another phase of the
        # season than the fitted one did was read with every seasonal index shifted (daily ticks of daily data:
        # errors 7-12x the fitted model's, finite and unflagged). The seasonal states are turned to the history's
        # phase; the history is not cut to the fitted phase, which left a 104-week window of weekly data (season
        # 52) under min_history on 51 ticks of 52, served seasonal naive in the model's name. A model saved
        # before the phase was recorded has none: it is read as before.
        fitted = self.model_
        phase = getattr(self, "phase_", None)
        if phase is not None:
            fitted = _rotated(fitted, series.position - phase)
        regressors = self.regressors_
        if regressors:
            _say_unforeseen_drivers(f"statsforecast {self.name}", self.ctx, future_X)
        exog = {} if not regressors else {"X": regressors.history(series.X),
                                          "X_future": regressors.ahead(series.future_X)}
        try:
            mean = fitted.forward(y=series.values, h=int(steps.max()), **exog)["mean"]
        except Exception as exc:  # noqa: BLE001 - statsforecast raises plain Exceptions for histories it cannot use
            # Not a seasonal naive in the model's name, which nobody would hear of: the stream's forecast fails,
            # named (forecast-failed), and the agent deals with it as with any model that cannot forecast.
            raise ValueError(f"statsforecast {self.name} could not forecast from the recent history: "
                             f"{type(exc).__name__}: {exc}") from exc
        return np.asarray(mean, dtype=np.float64)[steps - 1]

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.params.items() if k != "season_length" or v != self.ctx.season_length}
        if not self.use_drivers:
            shown["use_drivers"] = False
        extra = "".join(f", {k}={v!r}" for k, v in shown.items())
        return f"StatsForecastModel({self.name!r}{extra})"


def _seasonal_states(fitted) -> slice | None:
    """Where a fitted seasonal ETS keeps its initial seasonal states in ``model_["par"]``; None for a model
    without them (another family, Holt, an AutoETS that chose no season, a season of 1).

    statsforecast's ETS (``HoltWinters`` and ``Holt`` are ``AutoETS`` with a fixed model) holds
    ``par = [alpha, beta, gamma, phi, level, trend (with one), s(0), s(-1), ..., s(1-m)]``, the states before the
    first value of the fitted history, which is read with the last of them, ``s(1-m)``.

    >>> _ = __import__("pytest").importorskip("statsforecast")  # the examples need mlma[nixtla]
    >>> from statsforecast.models import Holt, HoltWinters
    >>> y = 10 + np.sin(2 * np.pi * np.arange(28) / 7) + np.arange(28) / 10
    >>> _seasonal_states(HoltWinters(season_length=7).fit(y)), _seasonal_states(Holt(season_length=7).fit(y))
    (slice(6, 13, None), None)
    """
    models = _statsforecast_models()
    state = getattr(fitted, "model_", None)
    if not isinstance(fitted, models.AutoETS) or not isinstance(state, dict):
        return None
    components, m = state["components"], int(state["m"])
    if components[2] == "N" or m < 2:
        return None
    start = 5 + (components[1] != "N")
    if len(state["par"]) != start + m:  # another layout (a statsforecast release mlma does not know): no guess
        raise ValueError(f"statsforecast {type(fitted).__name__} {state.get('method', components)}: its fitted "
                         f"states are not laid out as mlma reads them ({len(state['par'])} parameters, expected "
                         f"{start + m} for season {m}), so a history at another phase could not be aligned")
    return slice(start, start + m)


def _rotated(fitted, shift: int):
    """``fitted`` (unchanged) when it has no seasonal states or ``shift`` is a whole number of seasons; else a
    copy whose initial seasonal states are those of a history starting ``shift`` steps later in the season.

    The first value of a history starting ``k`` steps later is read with ``s(1-m+k)``: the block
    ``s(0), ..., s(1-m)`` becomes ``s(k), ..., s(k+1-m)``, the states rolled ``k`` places (each season repeats).
    """
    states = _seasonal_states(fitted)
    if states is None:
        return fitted
    k = shift % (states.stop - states.start)
    if k == 0:
        return fitted
    par = np.array(fitted.model_["par"], dtype=np.float64)
    par[states] = np.roll(par[states], k)
    rotated = copy.copy(fitted)  # the fitted model itself is shared by later forecasts: never changed
    rotated.model_ = {**fitted.model_, "par": par}
    return rotated


#: The longest season a spec may give, in steps: a year of 15-minute data is 35,040. A model needs two seasons of
#: history; ``season_length=1e9`` was accepted, and every fit of the fleet fell back for want of two billion rows.
MAX_SEASON_LENGTH = 100_000


def _season_lengths(value, model: str, bounded: bool = True):
    """``season_length`` as statsforecast takes it: a whole number from 1 to :data:`MAX_SEASON_LENGTH`, or a list of
    them (MSTL), checked with a message naming the parameter and the model (a spec's text such as
    ``season_length=abc`` failed deep inside int()).

    >>> _season_lengths("24", "AutoETS"), _season_lengths([24, 168], "MSTL")
    (24, [24, 168])
    >>> _season_lengths(0, "AutoETS")
    Traceback (most recent call last):
    ...
    ValueError: statsforecast AutoETS: season_length must be a whole number >= 1 (or a list of them), got 0
    """
    many = isinstance(value, (list, tuple, np.ndarray))
    out = []
    for item in (value if many else [value]):
        try:
            number = int(item) if not isinstance(item, bool) and float(item) == int(float(item)) else None
        except (TypeError, ValueError, OverflowError):
            number = None
        if number is None or number < 1:
            raise ValueError(f"statsforecast {model}: season_length must be a whole number >= 1 (or a list of "
                             f"them), got {value!r}")
        if bounded and number > MAX_SEASON_LENGTH:
            raise ValueError(f"statsforecast {model}: season_length must be at most {MAX_SEASON_LENGTH:,} steps (a "
                             f"model needs two seasons of history), got {item!r}")
        out.append(number)
    if many and not out:
        raise ValueError(f"statsforecast {model}: season_length must not be an empty list")
    return out if many else out[0]


def _naive_forecast(ctx: ForecastContext, ds, y, future_ds, level: float) -> np.ndarray:
    """The forecast when the recent history is too short for the model (a stream back after a long silence):
    seasonal naive on what there is, else the fitted history's mean, so one stream never stops a tick."""
    from mlma.models.naive import SeasonalNaive  # noqa: PLC0415

    naive = SeasonalNaive(ctx)
    naive.level_ = level
    return naive.predict(ds, y, future_ds)


class _Regressors:
    """Which driver columns a fit used, and how their missing values are filled when forecasting.

    A column that does not vary over the training window (a campaign flag that never fired, a driver never
    observed), or only by rounding (a price of 9.99 stored as 9.990000000000002 on some rows), cannot be
    estimated, and a regression on it is singular: it is left out. So is one that is a linear function of the
    columns before it and a constant (a temperature given in Celsius and in Fahrenheit): ARIMA refused the
    pair as rank deficient, or, on the rounded price, forecast series of level 50-100 at 1e5 to 1e8. A value
    still missing after the grid's filling (a leading gap) takes the column's training mean.

    >>> r = _Regressors.learn(np.array([[1.0, 0.0], [3.0, 0.0], [np.nan, 0.0]]))
    >>> r.kept.tolist(), r.history(np.array([[np.nan, 5.0]])).tolist()
    ([True, False], [[2.0]])
    >>> celsius = np.array([10.0, 12.5, 9.0, 14.0])
    >>> price = np.array([9.99, 0.1 * 99.9, 9.99, 9.99])
    >>> _Regressors.learn(np.column_stack([celsius, celsius * 1.8 + 32, price])).kept.tolist()
    [True, False, False]
    >>> bool(_Regressors.learn(None))
    False
    """

    def __init__(self, kept: np.ndarray, means: np.ndarray) -> None:
        self.kept = kept
        self.means = means

    @classmethod
    def none(cls) -> _Regressors:
        return cls(np.zeros(0, dtype=bool), np.zeros(0))

    @classmethod
    def learn(cls, X: np.ndarray | None) -> _Regressors:
        if X is None or X.shape[1] == 0:
            return cls.none()
        finite = np.isfinite(X)
        with np.errstate(invalid="ignore"):
            lo = np.where(finite, X, np.inf).min(axis=0)
            hi = np.where(finite, X, -np.inf).max(axis=0)
            means = np.where(finite, X, 0.0).sum(axis=0) / np.maximum(finite.sum(axis=0), 1)
            scale = np.maximum(1.0, np.maximum(np.abs(lo), np.abs(hi)))
        kept = finite.any(axis=0) & (hi - lo > 1e-9 * scale)
        # Each kept column must add a dimension to the constant and the columns kept before it.
        filled = np.where(finite, X, means[None, :])
        basis = np.ones((X.shape[0], 1))
        for j in np.flatnonzero(kept):
            column = (filled[:, j] - means[j]) / (hi[j] - lo[j])
            residual = column - basis @ np.linalg.lstsq(basis, column, rcond=None)[0]
            if np.abs(residual).max() <= 1e-8:
                kept[j] = False
            else:
                basis = np.column_stack([basis, column])
        return cls(kept, means)

    def __bool__(self) -> bool:
        return bool(self.kept.any())

    def history(self, X: np.ndarray | None) -> np.ndarray | None:
        """The kept columns of ``X``, missing values filled; None when no column is kept."""
        if not self or X is None:
            return None
        kept = X[:, self.kept]
        return np.where(np.isfinite(kept), kept, self.means[self.kept][None, :])

    def ahead(self, future_X: np.ndarray | None) -> np.ndarray | None:
        """The same for the forecast steps."""
        return self.history(future_X)


def _say_unforeseen_drivers(model: str, ctx: ForecastContext, future_X) -> None:
    """Warn a caller of ``predict`` that gave no ``future_X`` to a model fitted with future drivers: their values
    ahead are filled from a season earlier, as a gap in them is, which is seldom what a campaign calendar says.
    The agent always passes them (and counts the values it had to fill: ``ModelService.driver_fills``)."""
    if future_X is None and ctx.drivers.future:
        warnings.warn(f"{model} was fitted with the future driver(s) {list(ctx.drivers.future)} but given no "
                      "future_X: their values ahead are filled from a season earlier; pass future_X with their "
                      "known values", RuntimeWarning, stacklevel=3)


def _fit_one(prototype, values: np.ndarray, name: str, X: np.ndarray | None = None):
    if values.size == 0:
        raise ValueError("history has no finite observation")
    model = prototype.new() if hasattr(prototype, "new") else copy.deepcopy(prototype)
    try:
        return model.fit(y=values) if X is None else model.fit(y=values, X=X)
    except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
        raise ValueError(f"statsforecast {name} fit failed: {exc}") from exc
    except Exception as exc:  # noqa: BLE001 - statsforecast raises plain Exceptions for series it cannot fit
        raise ValueError(f"statsforecast {name} fit failed: {type(exc).__name__}: {exc}") from exc


# -- mlforecast ------------------------------------------------------------------------------------------
def _mlforecast():
    try:
        import mlforecast  # noqa: PLC0415 - optional extra
    except ImportError as exc:
        raise SpecUnavailable(f"mlforecast pipelines need the mlforecast package: {_INSTALL}") from exc
    return mlforecast


def default_pipeline(ctx: ForecastContext, *, n_estimators: int = 100, learning_rate: float = 0.05,
                     num_leaves: int = 15, min_child_samples: int = 10, lags: list[int] | None = None):
    """The built-in mlforecast pipeline: LightGBM on seasonal differences, lags and a rolling mean.

    The target is differenced at the season length (at 1 without seasonality), so that the trees forecast
    the change since one season ago and a level shift or a trend does not leave them stuck at the levels
    they saw. Features: lags ``1, 2, 3`` and one season (unless ``lags`` is given), and the mean of the last
    season (of the last 3 steps without seasonality). No calendar features: the seasonal difference carries
    the season, and calendar columns that a training window cannot estimate hurt (docs/models.md). LightGBM
    runs on one thread with a fixed seed, so fits are reproducible.

    Examples
    --------
    >>> _ = __import__("pytest").importorskip("mlforecast")  # the examples need mlma[nixtla]
    >>> pipe = default_pipeline(ForecastContext("MS", season_length=12, horizon=12))
    >>> pipe.ts.lags, list(pipe.ts.transforms)[-1]
    ([1, 2, 3, 12], 'rolling_mean_lag1_window_size12')
    """
    _mlforecast()
    import lightgbm as lgb  # noqa: PLC0415
    from mlforecast import MLForecast  # noqa: PLC0415
    from mlforecast.lag_transforms import RollingMean  # noqa: PLC0415
    from mlforecast.target_transforms import Differences  # noqa: PLC0415

    m = ctx.season_length
    if lags is None:
        lags = sorted({1, 2, 3, m})
    # A bare number (lags=24) is refused by name too, not by Python's "'int' object is not iterable".
    listed = isinstance(lags, (list, tuple))
    if not listed or not lags or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in lags):
        raise ValueError(f"lags must be a list of whole numbers >= 1, got {lags!r}")
    regressor = lgb.LGBMRegressor(n_estimators=n_estimators, learning_rate=learning_rate, num_leaves=num_leaves,
                                  min_child_samples=min_child_samples, n_jobs=1, random_state=0,
                                  deterministic=True, verbose=-1)
    return MLForecast(models={"lightgbm": regressor}, freq=ctx.freq, lags=list(lags),
                      lag_transforms={1: [RollingMean(window_size=m if m > 1 else 3)]},
                      target_transforms=[Differences([m])])


def _lookback(pipeline) -> int:
    """Grid steps a pipeline looks back: its longest lag (with its rolling window) plus its differences."""
    ts = pipeline.ts
    longest = max([int(k) for k in (ts.lags or [])] + [1])
    for tfm in ts.transforms.values():
        lag, window = getattr(tfm, "lag", None), getattr(tfm, "window_size", None)
        if isinstance(lag, int):
            longest = max(longest, lag + (int(window) - 1 if isinstance(window, int) else 0))
    for target in ts.target_transforms or []:
        longest += int(sum(getattr(target, "differences", []) or []))
    return longest


def _most_steps(freq: str) -> int:
    """Grid steps of ``freq`` between the earliest and the latest timestamp pandas holds (1677 to 2262): more
    than any history has. A frequency mlma's calendar does not lay out (``B``, outside a project) has no bound.

    >>> _most_steps("h"), _most_steps("MS"), _most_steps("2D")
    (5124095, 7015, 106751)
    """
    from mlma.calendar import Frequency  # noqa: PLC0415 - as the other imports of this module's helpers

    try:
        frequency = Frequency.coerce(freq)
    except ValueError:
        return sys.maxsize
    first, last = pd.Timestamp.min, pd.Timestamp.max
    if frequency.months is not None:
        return ((last.year - first.year) * 12 + last.month - first.month) // frequency.months
    return (last.value - first.value) // frequency.step.value


class MLForecastModel(BaseForecaster):
    """An ``mlforecast.MLForecast`` pipeline fitted on one stream's history.

    Parameters
    ----------
    ctx
        The stream's clock (the pipeline's ``freq`` should be ``ctx.freq``; the built-in one is).
    pipeline
        ``None`` for :func:`default_pipeline`; else an import path ``"package.module:function"`` of a function
        that takes the :class:`ForecastContext` and ``**params`` and returns an unfitted ``MLForecast``
        (a path to an ``MLForecast`` instance works too, without params).
    min_history
        Observations needed to fit; default: the pipeline's look-back (longest lag or rolling window plus its
        differences) and two seasons (at least 12 rows to learn from).
    **params
        Keywords for the pipeline function (for the built-in one: ``n_estimators``, ``learning_rate``,
        ``num_leaves``, ``min_child_samples``, ``lags``).
    use_drivers
        Give the context's drivers to the pipeline as dynamic features (default True; see the module
        docstring): their past values to fit, the values known ahead as ``X_df`` to forecast.

    Examples
    --------
    >>> _ = __import__("pytest").importorskip("mlforecast")  # the examples need mlma[nixtla]
    >>> ctx = ForecastContext("D", season_length=7, horizon=7)
    >>> ds = np.arange("2024-01-01", "2024-07-01", dtype="datetime64[D]").astype("datetime64[ns]")
    >>> y = 10 + 3 * np.sin(2 * np.pi * np.arange(ds.size) / 7)
    >>> m = MLForecastModel(ctx, n_estimators=20).fit(ds, y)
    >>> future = ds[-1] + np.arange(1, 8) * np.timedelta64(1, "D")
    >>> m.predict(ds, y, future).shape
    (7,)
    """

    def __init__(self, ctx: ForecastContext, pipeline: str | None = None, *, min_history: int | None = None,
                 use_drivers: bool = True, **params) -> None:
        self.ctx = _check_ctx(ctx)
        self.use_drivers = _check_use_drivers(use_drivers)
        mlforecast = _mlforecast()
        self.pipeline = pipeline
        self.params = params
        if pipeline is None:
            try:
                prototype = default_pipeline(ctx, **params)
            except TypeError as exc:
                raise ValueError(f"the built-in mlforecast pipeline: {exc}") from None
        else:
            from mlma.models.adapters import import_object  # noqa: PLC0415 - avoids a cycle at import time

            target = import_object(pipeline)
            if isinstance(target, mlforecast.MLForecast):
                if params:
                    raise ValueError(f"{pipeline!r} is an MLForecast instance; parameters {sorted(params)} "
                                     "cannot be applied (name a function that builds it instead)")
                prototype = copy.deepcopy(target)
            elif callable(target):
                try:
                    prototype = target(ctx, **params)
                except TypeError as exc:
                    raise ValueError(f"mlforecast pipeline {pipeline!r} cannot be called as (ctx, **{params}): "
                                     f"{exc}") from None
            else:
                raise ValueError(f"{pipeline!r} is neither a function returning an MLForecast nor an MLForecast")
            if not isinstance(prototype, mlforecast.MLForecast):
                raise ValueError(f"mlforecast pipeline {pipeline!r} returned {type(prototype).__name__}, "
                                 "not an mlforecast.MLForecast")
        if len(prototype.models) != 1:
            raise ValueError(f"an mlforecast pipeline for mlma holds one model, got {len(prototype.models)}: "
                             f"{sorted(prototype.models)}")
        self.prototype = prototype
        self.lookback = _lookback(prototype)
        most = _most_steps(ctx.freq)
        if self.lookback >= most:
            # No history is that long, so every fit would fall back. The training window is the tighter bound,
            # but the service that knows it checks it (check_train_window); a window nobody set is lengthened.
            raise ValueError(f"the mlforecast pipeline looks back {self.lookback:,} steps of {ctx.freq!r} data "
                             f"(lags {list(prototype.ts.lags or [])} with its rolling windows and differences), "
                             f"more than any history holds ({most:,} steps span the timestamps from "
                             f"{pd.Timestamp.min:%Y} to {pd.Timestamp.max:%Y}); give lags a history can hold")
        default = self.lookback + max(2 * ctx.season_length, 12)
        if min_history is not None and (isinstance(min_history, bool) or not isinstance(min_history, int)
                                        or not 1 <= min_history < most):
            raise ValueError(f"min_history must be a whole number from 1 to {most - 1:,} (the steps of {ctx.freq!r} "
                             f"data any history can hold), got {min_history!r}")
        self.min_history = default if min_history is None else max(int(min_history), self.lookback + 1)

    @property
    def uses_drivers(self) -> bool:
        """True when the context declares drivers (and ``use_drivers`` is on)."""
        return self.use_drivers and bool(self.ctx.drivers)

    @property
    def fitted_drivers(self) -> Drivers | None:
        """The context's drivers, when the model uses them."""
        return self.ctx.drivers if self.uses_drivers else None

    def _series(self, ds, y, future_ds=None, X=None, future_X=None) -> _GridSeries:
        if not self.uses_drivers:
            X = future_X = None
        return _GridSeries(self.ctx, ds, y, future_ds, X=X, future_X=future_X)

    def _frame(self, series: _GridSeries) -> pd.DataFrame:
        frame = pd.DataFrame({"unique_id": "stream", "ds": series.timestamps(self.ctx.freq), "y": series.values})
        return self._with_drivers(frame, self.regressors_.history(series.X))

    @staticmethod
    def _with_drivers(frame: pd.DataFrame, values: np.ndarray | None) -> pd.DataFrame:
        # Plain column names: LightGBM refuses some characters a driver's name may hold.
        for j in range(0 if values is None else values.shape[1]):
            frame[f"driver_{j}"] = values[:, j]
        return frame

    def fit(self, ds: np.ndarray, y: np.ndarray, X: np.ndarray | None = None) -> Self:
        series = self._series(ds, y, X=X)
        if series.values.size <= self.lookback:
            raise ValueError(f"history spans {series.values.size} grid steps; the pipeline looks back "
                             f"{self.lookback}")
        self.regressors_ = _Regressors.learn(series.X)
        pipeline = copy.deepcopy(self.prototype)
        # static_features=[]: every driver column is dynamic, its value at each timestamp (X_df ahead).
        pipeline.fit(self._frame(series), static_features=[], cache_train_df=False)
        self.model_ = pipeline
        (self.column_,) = pipeline.models_  # the one model's name is its forecast column
        self.n_train_ = series.n_obs
        self.level_ = float(series.values.mean())
        return self

    def predict(self, ds, y, future_ds, X=None, future_X=None) -> np.ndarray:
        series = self._series(ds, y, future_ds, X, future_X)
        steps = series.steps
        if steps.size == 0:
            return np.zeros(0)
        if series.values.size <= self.lookback:
            return _naive_forecast(self.ctx, ds, y, future_ds, self.level_)
        horizon = int(steps.max())
        frame = self._frame(series)
        ahead = None
        if self.regressors_:
            _say_unforeseen_drivers("mlforecast", self.ctx, future_X)
            stamps = pd.date_range(frame["ds"].iloc[-1], periods=horizon + 1, freq=self.ctx.freq)[1:]
            ahead = self._with_drivers(pd.DataFrame({"unique_id": "stream", "ds": stamps}),
                                       self.regressors_.ahead(series.future_X))
        out = self.model_.predict(horizon, new_df=frame, X_df=ahead)
        return out[self.column_].to_numpy(dtype=np.float64)[steps - 1]

    def __repr__(self) -> str:
        extra = {**self.params, **({} if self.use_drivers else {"use_drivers": False})}
        return f"MLForecastModel({self.pipeline or 'default'!r}{''.join(f', {k}={v!r}' for k, v in extra.items())})"
