"""LightGBM on lag, rolling-mean and calendar features."""

from __future__ import annotations

import numpy as np

from mlma.models.base import ForecastContext
from mlma.models.regression import FeatureForecaster

__all__ = ["LightGBMForecaster"]


class LightGBMForecaster(FeatureForecaster):
    """Gradient-boosted trees (LightGBM; Ke et al., 2017) on the shared direct-strategy features.

    Single-threaded (the agent parallelises over chunks of streams), seeded and run in LightGBM's
    deterministic mode, so the same data gives the same forecasts. The defaults keep one fit on eight weeks
    of hourly data within a few tens of milliseconds.

    Parameters
    ----------
    ctx
        The stream's clock.
    n_estimators, learning_rate, num_leaves
        The usual boosting parameters; the defaults were chosen on hourly pedestrian counts (see
        docs/models.md).
    min_child_samples
        Minimum training rows per leaf; default ``n_rows // 20`` clipped to 3..20, so that short monthly or
        quarterly histories can still be split.
    seed
        Seed of every random choice LightGBM makes.
    params
        Further LightGBM parameters, passed through (they override the ones above).
    **feature_options
        ``lags``, ``windows``, ``calendar``, ``calendar_encoding`` (default ``"ordinal"``),
        ``target_transform`` (default ``"local"``), ``level_window``, ``min_train_rows``, ``holidays``,
        ``use_drivers``: see :class:`~mlma.models.regression.FeatureForecaster`.

    Examples
    --------
    >>> ctx = ForecastContext("h", season_length=24, horizon=24)
    >>> ds = np.arange("2024-01-01", "2024-02-01", dtype="datetime64[h]").astype("datetime64[ns]")
    >>> y = 10 + 5 * np.sin(2 * np.pi * np.arange(ds.size) / 24)
    >>> model = LightGBMForecaster(ctx).fit(ds, y)
    >>> future = ds[-1] + np.arange(1, 25) * np.timedelta64(1, "h")
    >>> truth = 10 + 5 * np.sin(2 * np.pi * np.arange(ds.size, ds.size + 24) / 24)
    >>> bool(np.abs(model.predict(ds, y, future) - truth).max() < 0.5)
    True
    """

    _default_encoding = "ordinal"

    def __init__(
        self,
        ctx: ForecastContext,
        n_estimators: int = 50,
        learning_rate: float = 0.1,
        num_leaves: int = 15,
        min_child_samples: int | None = None,
        seed: int = 0,
        params: dict | None = None,
        **feature_options,
    ):
        super().__init__(ctx, **feature_options)
        for name, value in (("n_estimators", n_estimators), ("num_leaves", num_leaves),
                            ("min_child_samples", 1 if min_child_samples is None else min_child_samples)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0 < learning_rate <= 1:
            raise ValueError(f"learning_rate must be in (0, 1], got {learning_rate!r}")
        self.n_estimators = int(n_estimators)
        self.learning_rate = float(learning_rate)
        self.num_leaves = int(num_leaves)
        self.min_child_samples = None if min_child_samples is None else int(min_child_samples)
        self.seed = int(seed)
        self.params = dict(params or {})

    def lightgbm_params(self, n_rows: int = 1000) -> dict:
        """The parameters handed to ``lightgbm.train`` for ``n_rows`` training rows."""
        min_leaf = self.min_child_samples
        if min_leaf is None:
            # LightGBM's usual 20 rows per leaf leaves a few dozen monthly rows almost unsplittable.
            min_leaf = int(np.clip(n_rows // 20, 3, 20))
        return {
            "objective": "regression",
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": min_leaf,
            "num_threads": 1,
            "seed": self.seed,
            "deterministic": True,
            "force_row_wise": True,
            "feature_pre_filter": False,
            "verbosity": -1,
            **self.params,
        }

    def _fit_matrix(self, Z: np.ndarray, t: np.ndarray) -> None:
        import lightgbm as lgb

        params = self.lightgbm_params(len(t))
        data = lgb.Dataset(Z, label=t, params={"verbosity": -1, "max_bin": params.get("max_bin", 255)})
        self.booster_ = lgb.train(params, data, num_boost_round=self.n_estimators)

    def _predict_matrix(self, Z: np.ndarray) -> np.ndarray:
        return self.booster_.predict(Z, num_threads=1)
