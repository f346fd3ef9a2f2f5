"""Forecasting models: the Forecaster protocol, built-in models, adapters and the factory.

Examples
--------
>>> import numpy as np
>>> from mlma.models import ForecastContext, fit_forecaster
>>> ctx = ForecastContext("h", season_length=24, horizon=24)
>>> ds = np.arange("2024-01-01", "2024-03-01", dtype="datetime64[h]").astype("datetime64[ns]")
>>> y = 10 + 5 * np.sin(2 * np.pi * np.arange(ds.size) / 24)
>>> outcome = fit_forecaster("ridge", ctx, ds, y)
>>> outcome.spec, outcome.fallback_reason
('ridge', None)
>>> future = ds[-1] + np.arange(1, 25) * np.timedelta64(1, "h")
>>> outcome.model.predict(ds, y, future).shape
(24,)
"""

from mlma.models.adapters import SklearnForecaster, import_object
from mlma.models.base import (
    BaseForecaster,
    Drivers,
    FleetForecaster,
    FleetHistory,
    ForecastContext,
    Forecaster,
    InsufficientDataError,
    SpecUnavailable,
    default_season_length,
    model_uses_drivers,
    predict_each,
    predict_fleet,
    predict_fleet_isolated,
)
from mlma.models.factory import (
    FitOutcome,
    available_models,
    check_train_window,
    fallback_cause,
    fit_forecaster,
    fit_forecasters,
    fitting_train_window,
    make_forecaster,
    shortest_train_window,
    spec_name,
)
from mlma.models.features import FeatureBuilder, FeatureSpec, grid_positions, regularise, seasonal_ffill
from mlma.models.gbm import LightGBMForecaster
from mlma.models.linear import RidgeForecaster
from mlma.models.naive import MeanForecaster, SeasonalNaive
from mlma.models.regression import FeatureForecaster

__all__ = [
    "BaseForecaster",
    "Drivers",
    "model_uses_drivers",
    "ForecastContext",
    "Forecaster",
    "InsufficientDataError",
    "SpecUnavailable",
    "default_season_length",
    "SeasonalNaive",
    "MeanForecaster",
    "RidgeForecaster",
    "LightGBMForecaster",
    "SklearnForecaster",
    "FeatureForecaster",
    "FeatureSpec",
    "FeatureBuilder",
    "grid_positions",
    "regularise",
    "seasonal_ffill",
    "make_forecaster",
    "available_models",
    "spec_name",
    "check_train_window",
    "fallback_cause",
    "fitting_train_window",
    "shortest_train_window",
    "fit_forecaster",
    "fit_forecasters",
    "FleetForecaster",
    "FleetHistory",
    "predict_fleet",
    "predict_fleet_isolated",
    "predict_each",
    "FitOutcome",
    "import_object",
]
