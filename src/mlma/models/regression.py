"""The common body of the regression forecasters: features, target transform, imputation.

Subclasses only say how to fit a matrix and predict from one (:meth:`FeatureForecaster._fit_matrix`,
:meth:`FeatureForecaster._predict_matrix`).
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Self

import numpy as np

from mlma.models.base import (
    BaseForecaster,
    Drivers,
    FleetHistory,
    ForecastContext,
    InsufficientDataError,
    as_datetime_array,
    as_exog_array,
    as_float_array,
    predict_each,
)
from mlma.models.features import Design, FeatureBuilder, FeatureSpec, forward_fill, supported_calendar
from mlma.models.multiplier import DriverMultiplier

__all__ = ["FeatureForecaster", "TARGET_TRANSFORMS", "DRIVER_EFFECTS"]

TARGET_TRANSFORMS = ("none", "scale", "local", "ratio")
DRIVER_EFFECTS = ("additive", "multiplicative")

# Rounds of (fit the features on the deflated history, re-fit the drivers' factor) in a multiplicative fit.
_MULTIPLIER_ROUNDS = 3

# A ratio to a level near zero explodes; levels are floored at this fraction of the history's mean size.
_RATIO_FLOOR = 0.05


class FeatureForecaster(BaseForecaster):
    """Base class: a regression on lag, rolling-mean, calendar and driver features (direct strategy).

    Parameters
    ----------
    ctx
        The stream's clock.
    lags, windows, calendar, calendar_encoding
        Feature choices, see :class:`~mlma.models.features.FeatureSpec`; ``None`` takes the defaults for the
        context. The default calendar keeps, at each fit, only the features whose cycle the training rows span
        twice (no month-of-year dummies from one year of data; :func:`~mlma.models.features.supported_calendar`);
        a calendar given explicitly is fitted as given.
    holidays
        Public-holiday calendar of the streams, e.g. ``"DE"`` or ``"US-CA"`` (the ``holidays`` package): adds
        a 0/1 holiday column of the target timestamp.
    use_drivers
        Use the context's exogenous drivers (``ctx.drivers``) as features (default True). False fits the same
        model without them, e.g. to measure what they are worth.
    relative_drivers
        Take each driver relative to its own mean over the level window (default: when the target transform
        is ``"local"`` or ``"ratio"``), or as its absolute value (False). See docs/models.md for what each
        measured.
    driver_effect
        How drivers known in advance (``Drivers.future``) act: ``"additive"`` (driver columns in the regression)
        or ``"multiplicative"``: the forecast is a base forecast times ``exp(drivers . beta)``
        (:class:`~mlma.models.multiplier.DriverMultiplier`), the base fitted on the history divided by the
        drivers' factor. A campaign then lifts every stream by the same share whatever its level. Default:
        the class's (multiplicative for ridge, additive for the tree and scikit-learn models). A stream with
        negative values, or whose future drivers were never observed, is fitted additively
        (``driver_effect_`` says which was used). Historical drivers are always columns.
    driver_alpha
        Ridge penalty of the multiplicative factor (see :class:`~mlma.models.multiplier.DriverMultiplier`).
    driver_pooling
        Shrink the multiplicative factor toward the fleet's estimate (``ctx.driver_prior``, pooled by the
        agent from the fleet's fits) rather than toward no effect; a driver the window never saw vary takes
        the fleet's effect. Default True; False ignores the prior (docs/results-drivers.md "Pooling").
    target_transform
        How values are normalised before the regression. The *local level* of a row is the mean of the
        ``level_window`` values ending ``horizon`` steps before its target (known at the origin); the *scale*
        is the mean absolute value of the fitted history.

        - ``"none"``: raw values.
        - ``"scale"``: target and past-value features divided by the scale, so one set of hyper-parameters
          suits streams of any size (for scale-sensitive regressors).
        - ``"local"`` (default): the local level is subtracted from target and past-value features, which are
          then divided by the scale. The model learns deviations from the recent level, so its forecasts move
          with the level of the history passed to ``predict``, also beyond the range seen in training (which
          neither trees nor a ridge fitted on a stable period do on their own).
        - ``"ratio"``: target and past-value features divided by the local level (floored at 5 % of the
          scale): forecasts move in proportion to the level. Meant for positive series.
    level_window
        Width of the local level in grid steps; default one season (the widest window when there is no
        seasonality).
    min_train_rows
        Training rows (with target and every feature known) required by ``fit``; default two seasons, at least
        24 and at most 60.
    """

    _default_encoding = "onehot"
    _default_transform = "local"
    _default_driver_effect = "additive"

    # Fitted attributes that models pickled before multiplicative drivers existed lack.
    driver_effect_ = "additive"
    multiplier_: DriverMultiplier | None = None
    driver_pooling = False

    def __init__(
        self,
        ctx: ForecastContext,
        *,
        lags=None,
        windows=None,
        calendar=None,
        calendar_encoding: str | None = None,
        target_transform: str | None = None,
        level_window: int | None = None,
        min_train_rows: int | None = None,
        holidays: str | None = None,
        use_drivers: bool = True,
        relative_drivers: bool | None = None,
        driver_effect: str | None = None,
        driver_alpha: float = 1.0,
        driver_pooling: bool = True,
    ):
        if not isinstance(ctx, ForecastContext):
            raise ValueError(f"ctx must be a ForecastContext, got {type(ctx).__name__}")
        self.ctx = ctx
        self.lags = lags
        self.windows = windows
        self.calendar = calendar
        self.calendar_encoding = calendar_encoding or self._default_encoding
        self.target_transform = target_transform or self._default_transform
        if self.target_transform not in TARGET_TRANSFORMS:
            raise ValueError(f"target_transform must be one of {TARGET_TRANSFORMS}, got {target_transform!r}")
        if not isinstance(use_drivers, (bool, np.bool_)):
            raise ValueError(f"use_drivers must be True or False, got {use_drivers!r}")
        self.use_drivers = bool(use_drivers)
        self.spec = FeatureSpec.for_context(
            ctx, lags=lags, windows=windows, calendar=calendar, calendar_encoding=self.calendar_encoding,
            holidays=holidays, use_drivers=self.use_drivers,
        )
        self.holidays = self.spec.holidays
        self._initial_spec = self.spec
        if relative_drivers is None:
            # Drivers relative to their own recent mean when the target is relative to its level.
            relative_drivers = self.target_transform in ("local", "ratio")
        if not isinstance(relative_drivers, (bool, np.bool_)):
            raise ValueError(f"relative_drivers must be True, False or None, got {relative_drivers!r}")
        self.relative_drivers = self._relative_drivers = bool(relative_drivers)
        self.driver_effect = driver_effect or self._default_driver_effect
        if self.driver_effect not in DRIVER_EFFECTS:
            raise ValueError(f"driver_effect must be one of {DRIVER_EFFECTS}, got {driver_effect!r}")
        DriverMultiplier(driver_alpha)  # validates the penalty now rather than at the first fit
        self.driver_alpha = float(driver_alpha)
        if not isinstance(driver_pooling, (bool, np.bool_)):
            raise ValueError(f"driver_pooling must be True or False, got {driver_pooling!r}")
        self.driver_pooling = bool(driver_pooling)
        if level_window is None:
            level_window = ctx.season_length if ctx.season_length > 1 else max(self.spec.windows, default=1)
        if isinstance(level_window, bool) or not isinstance(level_window, (int, np.integer)) or level_window < 1:
            raise ValueError(f"level_window must be a positive integer, got {level_window!r}")
        self.level_window = int(level_window)
        if min_train_rows is None:
            min_train_rows = max(24, min(2 * ctx.season_length, 60))
        if isinstance(min_train_rows, bool) or not isinstance(min_train_rows, (int, np.integer)) \
                or min_train_rows < 1:
            raise ValueError(f"min_train_rows must be a positive integer, got {min_train_rows!r}")
        self.min_train_rows = int(min_train_rows)
        self._builder = FeatureBuilder(self.spec, self.level_window, self._relative_drivers)

    @property
    def min_history(self) -> int:
        """Observations needed when the history has no gaps: the feature look-back plus the training rows."""
        return self.spec.lookback + self.min_train_rows

    @property
    def uses_drivers(self) -> bool:
        """True when the context declares drivers and ``use_drivers`` is on."""
        return self.spec.n_drivers > 0

    @property
    def fitted_drivers(self) -> Drivers | None:
        """The context's drivers, when the model uses them."""
        return self.ctx.drivers if self.uses_drivers else None

    def feature_names(self) -> list[str]:
        """Names of the columns the regression sees (after fitting: the calendar features it kept; drivers
        fitted as a multiplicative factor are not columns)."""
        return self._builder.spec.feature_names(self._relative_drivers)

    @property
    def takes_driver_prior(self) -> bool:
        """Multiplicative future drivers with ``driver_pooling``: the fit shrinks toward the fleet's prior."""
        return self.driver_pooling and self.driver_effect == "multiplicative" and bool(self.ctx.drivers.future)

    def driver_effects(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The multiplicative factor's ``(beta, information)`` (:meth:`BaseForecaster.driver_effects`); None
        when the drivers act additively or ``driver_pooling`` is off (a model that takes no prior gives none,
        so a fleet of them keeps no prior and fits exactly as without pooling)."""
        if self.multiplier_ is None or not self.driver_pooling:
            return None
        return self.multiplier_.beta_.copy(), self.multiplier_.information_.copy()

    def for_context(self, ctx: ForecastContext) -> Self:
        """This model under the fleet's current context (:meth:`BaseForecaster.for_context`): with
        ``driver_pooling`` and multiplicative drivers, a future driver the training window did not see vary
        takes ``ctx.driver_prior``, the fleet's latest estimate, instead of the prior of the fit
        (:meth:`~mlma.models.multiplier.DriverMultiplier.with_prior`); drivers the window saw vary keep this
        fit's estimate inside the range of values the window saw, and take the current prior's effect per unit
        beyond it. The model itself when nothing changes (no prior, pooling off, additive drivers, the prior of
        the fit), else a shallow copy with its own factor; this model is not modified.

        Raises ValueError for a prior of other future drivers than the ones this model was fitted with.
        """
        if not isinstance(ctx, ForecastContext):
            raise ValueError(f"ctx must be a ForecastContext, got {type(ctx).__name__}")
        if self.multiplier_ is None or not self.driver_pooling or ctx.driver_prior is None:
            return self
        if ctx.drivers.future != self.ctx.drivers.future:
            raise ValueError(f"the context's prior is of the future drivers {list(ctx.drivers.future)}, this model "
                             f"was fitted with {list(self.ctx.drivers.future)}")
        multiplier = self.multiplier_.with_prior(ctx.driver_prior)
        if multiplier is self.multiplier_:
            return self
        served = copy.copy(self)
        served.multiplier_ = multiplier
        return served

    def _new_builder(self) -> FeatureBuilder:
        """The feature builder of ``self.spec``; the future drivers are left out of its columns when they act
        as a multiplicative factor."""
        spec = self.spec
        if self.driver_effect_ == "multiplicative":
            spec = dataclasses.replace(spec, future_drivers=())
        return FeatureBuilder(spec, self.level_window, self._relative_drivers)

    def _fitted_driver_effect(self, y: np.ndarray, X: np.ndarray | None) -> str:
        n_future = len(self.spec.future_drivers)
        if self.driver_effect != "multiplicative" or not n_future or X is None:
            return "additive"
        if self.dead_drivers_[:n_future].all() or np.nanmin(y, initial=0.0) < 0:
            return "additive"  # nothing to learn, or a series a factor cannot describe
        return "multiplicative"

    def _driver_matrix(self, X, n: int, name: str) -> np.ndarray | None:
        """``X`` checked against the drivers of the context; None when the model uses none."""
        X = as_exog_array(X, n, name)
        if not self.spec.n_drivers:
            if X is not None and not (self.ctx.drivers and not self.use_drivers):
                raise ValueError(f"{name} has driver values but the context declares no drivers: build the "
                                 "model with ForecastContext(..., drivers=Drivers(future=[...])) to use them")
            return None
        if X is not None and X.shape[1] != self.spec.n_drivers:
            raise ValueError(f"{name} has {X.shape[1]} column(s); {type(self).__name__} expects one per driver "
                             f"{list(self.spec.future_drivers + self.spec.historical_drivers)}")
        return X

    # -- the two hooks -------------------------------------------------------------------------------------
    def _fit_matrix(self, Z: np.ndarray, t: np.ndarray) -> None:
        raise NotImplementedError

    def _predict_matrix(self, Z: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    @classmethod
    def _predict_matrices(cls, models: list, Z: np.ndarray) -> np.ndarray:
        """``models[i]._predict_matrix(Z[i])`` for a stack ``Z`` of ``(streams, rows, columns)``; a subclass
        whose prediction is arithmetic (ridge) does all streams at once."""
        out = np.empty(Z.shape[:2])
        for i, model in enumerate(models):
            out[i] = model._predict_matrix(Z[i])
        return out

    # -- target transform ----------------------------------------------------------------------------------
    def _divisor(self, level: np.ndarray) -> np.ndarray:
        """Per-row divisor of the target and past-value features."""
        if self.target_transform == "ratio":
            return np.maximum(level, _RATIO_FLOOR * self.scale_)
        if self.target_transform == "none":
            return np.ones_like(level)
        return np.full_like(level, self.scale_)

    def _offset(self, level: np.ndarray) -> np.ndarray:
        return level if self.target_transform == "local" else np.zeros_like(level)

    def _transform(self, d: Design) -> np.ndarray:
        if self.target_transform == "none":
            return d.features
        Z = d.features.copy()
        nv = d.n_value_features
        divisor = self._divisor(d.level)[:, None]
        Z[:, :nv] = (Z[:, :nv] - self._offset(d.level)[:, None]) / divisor
        if d.n_interactions:
            Z[:, -d.n_interactions:] /= divisor
        return Z

    def _transform_target(self, target: np.ndarray, level: np.ndarray) -> np.ndarray:
        return (target - self._offset(level)) / self._divisor(level)

    def _inverse_target(self, z: np.ndarray, level: np.ndarray) -> np.ndarray:
        return self._offset(level) + z * self._divisor(level)

    # -- Forecaster protocol -------------------------------------------------------------------------------
    def fit(self, ds: np.ndarray, y: np.ndarray, X: np.ndarray | None = None) -> Self:
        ds = as_datetime_array(ds)
        y = as_float_array(y, ds.size)
        X = self._driver_matrix(X, ds.size, "X")
        if X is not None:
            # A driver never observed in this window cannot be learnt: its column is held at zero (a
            # constant gets no weight) here and at predict time.
            self.dead_drivers_ = ~np.isfinite(X).any(axis=0)
            X = np.where(self.dead_drivers_[None, :], 0.0, X)
        elif self.spec.n_drivers:
            # Fitted without driver values: every driver is dead (held at zero), the rest of the model stands.
            self.dead_drivers_ = np.ones(self.spec.n_drivers, dtype=bool)
            X = np.zeros((ds.size, self.spec.n_drivers))
        else:
            self.dead_drivers_ = np.zeros(0, dtype=bool)
        effect = self._fitted_driver_effect(y, X)
        if self.spec is not self._initial_spec or effect != self.driver_effect_:
            # A refit starts again from the default calendar (and the columns of its driver effect).
            self.spec = self._initial_spec
            self.driver_effect_ = effect
            self._builder = self._new_builder()
        if effect == "additive":
            self.multiplier_ = None
            self._fit_features(ds, y, X)
            return self
        # Multiplicative drivers: alternate between the features fitted on the history divided by the drivers'
        # factor and the factor fitted against those features' in-sample forecasts.
        n_future = len(self.spec.future_drivers)
        future = _filled_in_time(ds, X[:, :n_future])
        prior = self.ctx.driver_prior if self.driver_pooling else None
        self.multiplier_ = DriverMultiplier(self.driver_alpha, prior=prior)
        factor = np.ones(ds.size)
        for _ in range(_MULTIPLIER_ROUNDS):
            design = self._fit_features(ds, y / factor, X[:, n_future:])
            base = self._inverse_target(self._predict_matrix(self._transform(design)), design.level)
            rows = design.positions
            self.multiplier_.fit(future[rows], base, y[rows])
            factor = self.multiplier_.factor(future)
        self._fit_features(ds, y / factor, X[:, n_future:])
        return self

    def _fit_features(self, ds: np.ndarray, y: np.ndarray, X: np.ndarray | None) -> Design:
        """Fit the regression on the features of ``(ds, y, X)``; returns the training design."""
        if self.spec is not self._initial_spec:
            self.spec = self._initial_spec
            self._builder = self._new_builder()
        design = self._builder.training(ds, y, X)
        if self.calendar is None and self.spec.calendar:
            kept = supported_calendar(self.spec.calendar, design.ds)
            if kept != self.spec.calendar:
                self.spec = self.spec.with_calendar(kept)
                self._builder = self._new_builder()
                design = self._builder.training(ds, y, X)
        n = design.target.size
        if n < self.min_train_rows:
            raise InsufficientDataError(
                f"{type(self).__name__} has {n} training rows with the target and every feature known, needs "
                f"{self.min_train_rows} (history of {int(np.isfinite(y).sum())} observations, features look "
                f"back {self.spec.lookback} grid steps)"
            )
        finite = y[np.isfinite(y)]
        self.level_ = float(finite.mean())
        scale = float(np.abs(finite).mean())
        self.scale_ = scale if scale > 0 else 1.0
        Z = self._transform(design)
        t = self._transform_target(design.target, design.level)
        self.fill_values_ = Z.mean(axis=0)
        self._fit_matrix(Z, t)
        self.n_train_ = n
        return design

    def predict(self, ds, y, future_ds, X=None, future_X=None) -> np.ndarray:
        if not hasattr(self, "scale_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted: call fit first")
        ds = as_datetime_array(ds)
        y = as_float_array(y, ds.size)
        future_ds = as_datetime_array(future_ds, "future_ds")
        X = self._driver_matrix(X, ds.size, "X")
        future_X = self._driver_matrix(future_X, future_ds.size, "future_X")
        if future_ds.size == 0:
            return np.zeros(0)
        if self.spec.n_drivers:
            X = np.full((ds.size, self.spec.n_drivers), np.nan) if X is None else X
            X = np.where(self.dead_drivers_[None, :], 0.0, X)
            if future_X is not None:
                future_X = np.where(self.dead_drivers_[None, :], 0.0, future_X)
        if self.driver_effect_ == "multiplicative":
            return self._predict_multiplied(ds, y, future_ds, X, future_X)
        return self._predict_features(ds, y, future_ds, X, future_X)

    def _predict_multiplied(self, ds, y, future_ds, X, future_X) -> np.ndarray:
        """The features' forecast from the history divided by its drivers' factor, times the factor of the
        future drivers (a missing future value takes the last known one; none known: factor 1)."""
        n_future = len(self.spec.future_drivers)
        if future_X is None:
            future_X = np.full((future_ds.size, n_future), np.nan)
        both = np.concatenate([ds, future_ds])
        filled = _filled_in_time(both, np.vstack([X[:, :n_future], future_X[:, :n_future]]))
        factor = self.multiplier_.factor(filled)
        base = self._predict_features(ds, y / factor[:ds.size], future_ds, X[:, n_future:], future_X[:, n_future:])
        return base * factor[ds.size:]

    def _predict_features(self, ds, y, future_ds, X, future_X) -> np.ndarray:
        design = self._builder.forecasting(ds, y, future_ds, future_X, X)
        design.level = np.where(np.isfinite(design.level), design.level, self.level_)
        Z = self._transform(design)
        # Features with no data behind them at all (e.g. the hours a sensor never reports) take their
        # training mean, so the forecast stays finite.
        Z = np.where(np.isfinite(Z), Z, self.fill_values_[None, :])
        return self._inverse_target(self._predict_matrix(Z), design.level)

    @classmethod
    def predict_many(cls, models: list, history: FleetHistory) -> np.ndarray:
        """Every stream's :meth:`predict` at once: the lag, rolling-mean and calendar features of all streams
        are built with array operations on the fleet's grid (equal to each stream's own), then
        :meth:`_predict_matrices` predicts them. Models that use drivers are predicted one by one."""
        if cls.predict is not FeatureForecaster.predict:
            return predict_each(models, history)  # a subclass forecasts its own way: ask it
        out = np.empty((len(models), history.future.size))
        if not models or not history.future.size:
            return out
        for model in models:
            if not hasattr(model, "scale_"):
                raise RuntimeError(f"{type(model).__name__} is not fitted: call fit first")
        groups: dict[tuple, list[int]] = {}
        for i, model in enumerate(models):
            # Models fitted on shorter windows may have kept fewer calendar features: one design per spec.
            key = (model.spec, model.level_window, model.target_transform, model._relative_drivers)
            groups.setdefault(key, []).append(i)
        values = history.values()
        for members in groups.values():
            chosen = [models[i] for i in members]
            if chosen[0].spec.n_drivers:
                out[members] = predict_each(chosen, history.take(members))
                continue
            out[members] = cls._predict_group(chosen, values[members], history)
        return out

    @classmethod
    def _predict_group(cls, models: list, values: np.ndarray, history: FleetHistory) -> np.ndarray:
        """Forecasts of models that share one feature design, from their streams' ``values`` on the grid."""
        first = models[0]
        spec, builder = first.spec, first._builder
        rows = history.future_columns
        value_features, level = builder.value_features_rows(values, rows)
        fitted_level = np.array([m.level_ for m in models])[:, None]
        scale = np.array([m.scale_ for m in models])[:, None]
        level = np.where(np.isfinite(level), level, fitted_level)
        calendar = builder.calendar_features(history.future)
        Z = np.concatenate([value_features, np.broadcast_to(calendar, (len(models),) + calendar.shape)], axis=2)
        transform = first.target_transform
        if transform == "ratio":
            divisor = np.maximum(level, _RATIO_FLOOR * scale)
        elif transform == "none":
            divisor = np.ones_like(level)
        else:
            divisor = np.broadcast_to(scale, level.shape)
        offset = level if transform == "local" else np.zeros_like(level)
        if transform != "none":
            nv = spec.n_value_features
            Z[:, :, :nv] = (Z[:, :, :nv] - offset[:, :, None]) / divisor[:, :, None]
        fill = np.stack([m.fill_values_ for m in models])[:, None, :]
        Z = np.where(np.isfinite(Z), Z, fill)
        return offset + cls._predict_matrices(models, Z) * divisor


def _filled_in_time(ds: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` (rows aligned with ``ds``) with each missing value replaced by the last known one in time."""
    order = np.argsort(ds, kind="stable")
    out = np.empty_like(values, dtype=np.float64)
    for j in range(values.shape[1]):
        out[order, j] = forward_fill(values[order, j])
    return out
