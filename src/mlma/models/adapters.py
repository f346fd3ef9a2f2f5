"""Turn any scikit-learn-style regressor into a Forecaster."""

from __future__ import annotations

import copy
import importlib
import inspect

import numpy as np

from mlma.models.base import ForecastContext, SpecUnavailable
from mlma.models.regression import FeatureForecaster

__all__ = ["SklearnForecaster", "import_object", "is_regressor_like"]

# Options of the adapter itself; everything else given to the factory goes to the regressor.
ADAPTER_OPTIONS = frozenset(
    {"lags", "windows", "calendar", "calendar_encoding", "target_transform", "level_window", "min_train_rows",
     "holidays", "use_drivers", "relative_drivers", "driver_effect", "driver_alpha", "driver_pooling"}
)


def import_object(path: str):
    """Import ``"package.module:Name"`` or ``"package.module.Name"``.

    Raises
    ------
    ValueError
        Naming the path and why the import failed: :class:`~mlma.models.SpecUnavailable` when the module
        cannot be imported here (not installed, not on the path) or its own code raised while importing
        (a ``NameError``, a ``SyntaxError``, a config file or variable it reads missing here), a plain
        ``ValueError`` when the path is malformed or the module has no such name.

    Examples
    --------
    >>> import_object("sklearn.linear_model:Ridge").__name__
    'Ridge'
    >>> import_object("sklearn.linear_model.Ridge").__name__
    'Ridge'
    """
    if not isinstance(path, str) or not path.strip():
        raise ValueError(f"an import path such as 'package.module:Class' is required, got {path!r}")
    path = path.strip()
    if ":" in path:
        module_name, _, qualname = path.partition(":")
    else:
        module_name, _, qualname = path.rpartition(".")
    if not module_name or not qualname:
        raise ValueError(f"{path!r} is not an import path of the form 'package.module:Class'")
    try:
        obj = importlib.import_module(module_name)
    except ImportError as exc:
        raise SpecUnavailable(f"cannot import module {module_name!r} for {path!r}: {exc}") from None
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the module's own code failed, not a missing module
        # A module that reads a file, a variable or a service at import may import where the ticks run, and a
        # bug in it is the user's to see by name: said, never a traceback (nor an exit, for a SystemExit).
        raise SpecUnavailable(f"importing {module_name!r} for {path!r} raised {type(exc).__name__}: "
                              f"{_first_line(exc)}") from None
    for part in qualname.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"module {module_name!r} has no attribute {qualname!r} (from {path!r})") from None
    return obj


def _first_line(exc: BaseException) -> str:
    """An exception's message on one line (a SyntaxError's names the file and line)."""
    return (str(exc).strip().splitlines() or [""])[0]


def is_regressor_like(obj) -> bool:
    """Whether ``obj`` (a class or an instance) looks like a scikit-learn regressor: ``fit(X, y)`` and
    ``predict(X)``, where predict takes one data argument (a Forecaster's takes ``ds, y, future_ds``)."""
    predict = getattr(obj, "predict", None)
    if not callable(getattr(obj, "fit", None)) or not callable(predict):
        return False
    try:
        params = list(inspect.signature(predict).parameters.values())
    except (TypeError, ValueError):
        return True
    if isinstance(obj, type) and params and params[0].name == "self":
        params = params[1:]
    names = {p.name for p in params}
    if "future_ds" in names:
        return False
    required = [p for p in params if p.default is inspect.Parameter.empty
                and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(required) <= 1


#: What a scikit-learn estimator that is not a regressor predicts, for the message that refuses it.
_PREDICTS = {"classifier": "class labels", "clusterer": "cluster labels", "outlier_detector": "inlier/outlier marks"}


def _sklearn_kind(estimator) -> str | None:
    """The kind scikit-learn's tags give an estimator (``"regressor"``, ``"classifier"``, ``"clusterer"``...), or
    None when it has none (a regressor of another library that only has fit and predict).

    >>> from sklearn.cluster import KMeans
    >>> from sklearn.linear_model import Ridge
    >>> _sklearn_kind(KMeans()), _sklearn_kind(Ridge()), _sklearn_kind(object())
    ('clusterer', 'regressor', None)
    """
    from sklearn.base import BaseEstimator
    from sklearn.utils import get_tags

    if not isinstance(estimator, BaseEstimator):
        return None
    try:
        return get_tags(estimator).estimator_type
    except Exception:  # noqa: BLE001 - a third-party estimator's tags may be broken; it is then taken on trust
        return None


class SklearnForecaster(FeatureForecaster):
    """Any scikit-learn-style regressor on the shared direct-strategy features.

    The regressor is cloned at each ``fit`` (so one prototype serves every stream) and, when it has a
    ``random_state`` left at None, seeded with 0 so that fits are reproducible.

    Parameters
    ----------
    estimator
        A regressor instance, a regressor class (instantiated with ``estimator_params``), or an import path
        such as ``"sklearn.ensemble.RandomForestRegressor"``.
    ctx
        The stream's clock.
    estimator_params
        Parameters for the regressor's constructor when ``estimator`` is a class or a path, or to set on a
        clone of an instance.
    **feature_options
        ``lags``, ``windows``, ``calendar``, ``calendar_encoding`` (default ``"onehot"``, which suits linear
        models and trees alike), ``target_transform`` (default ``"local"``), ``level_window``,
        ``min_train_rows``, ``holidays``, ``use_drivers``: see :class:`~mlma.models.regression.FeatureForecaster`.
        The regressor sees the context's drivers as columns like any other feature.

    Examples
    --------
    >>> from sklearn.linear_model import LinearRegression
    >>> ctx = ForecastContext("h", season_length=24, horizon=24)
    >>> ds = np.arange("2024-01-01", "2024-02-01", dtype="datetime64[h]").astype("datetime64[ns]")
    >>> y = 10 + 5 * np.sin(2 * np.pi * np.arange(ds.size) / 24)
    >>> model = SklearnForecaster(LinearRegression(), ctx).fit(ds, y)
    >>> future = ds[-1] + np.arange(1, 25) * np.timedelta64(1, "h")
    >>> truth = 10 + 5 * np.sin(2 * np.pi * np.arange(ds.size, ds.size + 24) / 24)
    >>> bool(np.abs(model.predict(ds, y, future) - truth).max() < 0.01)
    True
    """

    def __init__(self, estimator, ctx: ForecastContext, estimator_params: dict | None = None, **feature_options):
        super().__init__(ctx, **feature_options)
        estimator_params = dict(estimator_params or {})
        if isinstance(estimator, str):
            estimator = import_object(estimator)
        if isinstance(estimator, type):
            if not is_regressor_like(estimator):
                raise ValueError(f"{estimator.__module__}.{estimator.__qualname__} is not a regressor "
                                 "(it needs fit(X, y) and predict(X))")
            try:
                estimator = estimator(**estimator_params)
            except TypeError as exc:
                raise ValueError(f"cannot build {estimator.__qualname__} with {estimator_params}: {exc}") from None
        else:
            if not is_regressor_like(estimator):
                raise ValueError(f"{type(estimator).__qualname__} is not a regressor "
                                 "(it needs fit(X, y) and predict(X))")
            estimator = _clone(estimator)
            if estimator_params:
                if not hasattr(estimator, "set_params"):
                    raise ValueError(f"{type(estimator).__qualname__} has no set_params for {estimator_params}")
                estimator.set_params(**estimator_params)
        kind = _sklearn_kind(estimator)
        if kind not in (None, "regressor"):
            raise ValueError(f"{type(estimator).__qualname__} is a scikit-learn {kind}, not a regressor: its "
                             f"predictions would be {_PREDICTS.get(kind, 'no forecasts')}")
        self.estimator = estimator

    def _fit_matrix(self, Z: np.ndarray, t: np.ndarray) -> None:
        est = _clone(self.estimator)
        if hasattr(est, "get_params") and "random_state" in est.get_params(deep=False):
            if est.get_params(deep=False)["random_state"] is None:
                est.set_params(random_state=0)
        est.fit(Z, t)
        self.estimator_ = est

    def _predict_matrix(self, Z: np.ndarray) -> np.ndarray:
        return np.asarray(self.estimator_.predict(Z), dtype=np.float64).reshape(-1)


def _clone(estimator):
    try:
        from sklearn.base import clone

        return clone(estimator)
    except (ImportError, TypeError, RuntimeError):
        return copy.deepcopy(estimator)
