"""Build models from a spec, and fit them with an explicit fallback for histories that cannot support them."""

from __future__ import annotations

import copy
import functools
import inspect
import math
import numbers
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlma.model_names import BUILTIN_MODELS
from mlma.project import MAX_TRAIN_WINDOW_TICKS
from mlma.models.adapters import ADAPTER_OPTIONS, SklearnForecaster, import_object, is_regressor_like
from mlma.models.base import (
    FIT_ERRORS,
    FleetForecaster,
    ForecastContext,
    Forecaster,
    InsufficientDataError,
    SpecUnavailable,
    as_datetime_array,
    as_float_array,
)
from mlma.models.gbm import LightGBMForecaster
from mlma.models.linear import RidgeForecaster
from mlma.models.naive import MeanForecaster, SeasonalNaive

__all__ = ["make_forecaster", "available_models", "spec_name", "spec_options", "check_train_window",
           "shortest_train_window", "fitting_train_window", "FitOutcome", "fallback_cause", "fit_forecaster",
           "fit_forecasters"]

_BUILTINS = {
    "seasonal-naive": SeasonalNaive,
    "ridge": RidgeForecaster,
    "lightgbm": LightGBMForecaster,
    "mean": MeanForecaster,
}
assert tuple(sorted(_BUILTINS)) == BUILTIN_MODELS, "mlma.model_names.BUILTIN_MODELS must name the built-ins"
_SPEC_FORMS = ("'sklearn:<module>.<Class>', 'statsforecast:<Model>[:key=value,...]', "
               "'mlforecast[:package.module:function][:key=value,...]', 'pickle:<file>' or 'package.module:Class'")


def available_models() -> list[str]:
    """Names of the built-in models accepted by :func:`make_forecaster`.

    Examples
    --------
    >>> available_models()
    ['lightgbm', 'mean', 'ridge', 'seasonal-naive']
    """
    return sorted(_BUILTINS)


def spec_name(spec) -> str:
    """A readable name for a spec: the string itself, or ``module:Class`` for a class or an instance.

    Examples
    --------
    >>> spec_name("ridge"), spec_name(SeasonalNaive)
    ('ridge', 'mlma.models.naive:SeasonalNaive')
    """
    if isinstance(spec, str):
        return spec.strip()
    cls = spec if isinstance(spec, type) else type(spec)
    return f"{cls.__module__}:{cls.__qualname__}"


def check_train_window(model: Forecaster, ctx: ForecastContext, window_ticks: int | None, *,
                       name: str | None = None, steps_in: Callable[[int], int] | None = None) -> None:
    """Refuse a training window too short for ``model`` ever to be fitted.

    A window of ``window_ticks`` ticks holds at most ``steps_in(window_ticks)`` steps of the grid (default:
    ``window_ticks * ctx.horizon``, exact for ticks of one length; the agent's clock gives the exact most for
    month-based ticks over fixed steps, :meth:`mlma.calendar.TickClock.most_steps`). A model whose
    ``min_history`` is larger falls back to a simpler model at every fit of every stream, however long the
    stream has run, so the fleet would never serve the model that was asked for: that is a configuration
    error, not a stream's trouble. ``None`` (all history) is always accepted. ``name`` names the model in the
    message (default: :func:`spec_name` of ``model``). A window nobody set is lengthened instead
    (:func:`fitting_train_window`).

    >>> ctx = ForecastContext("h", season_length=24, horizon=24)
    >>> ridge = make_forecaster("ridge", ctx)
    >>> check_train_window(ridge, ctx, 28)
    >>> check_train_window(ridge, ctx, None)
    >>> check_train_window(ridge, ctx, 10**7)
    Traceback (most recent call last):
    ...
    ValueError: train_window_ticks must be a whole number from 1 to 1,000,000 or None (all history), got 10000000
    >>> check_train_window(ridge, ctx, 7, name="ridge")
    Traceback (most recent call last):
    ...
    ValueError: train_window_ticks=7 holds at most 168 steps of 'h' data, but ridge needs 216 (its min_history): every fit would fall back to a simpler model; use a window of at least 9 ticks
    """
    if window_ticks is None:
        return
    if (isinstance(window_ticks, bool) or not isinstance(window_ticks, (int, np.integer))
            or not 1 <= window_ticks <= MAX_TRAIN_WINDOW_TICKS):
        raise ValueError(f"train_window_ticks must be a whole number from 1 to {MAX_TRAIN_WINDOW_TICKS:,} or None "
                         f"(all history), got {window_ticks!r}")
    steps = _steps_in(ctx, steps_in)(int(window_ticks))
    needs = math.ceil(model.min_history)
    if steps < needs:
        raise ValueError(f"train_window_ticks={window_ticks} holds at most {steps} steps of {ctx.freq!r} data, but "
                         f"{name or spec_name(model)} needs {needs} (its min_history): every fit would fall back to "
                         f"a simpler model; use a window of at least {shortest_train_window(model, ctx, steps_in)} "
                         f"ticks")


def shortest_train_window(model: Forecaster, ctx: ForecastContext,
                          steps_in: Callable[[int], int] | None = None) -> int:
    """The fewest ticks whose steps (``steps_in``, as in :func:`check_train_window`) hold ``model``'s
    ``min_history``.

    >>> ctx = ForecastContext("D", season_length=7, horizon=1)
    >>> shortest_train_window(make_forecaster("ridge", ctx), ctx)
    52
    """
    steps_in = _steps_in(ctx, steps_in)
    needs = math.ceil(model.min_history)
    ticks = max(1, -(-needs // max(ctx.horizon, 1)))  # no tick holds more than the horizon: a lower bound
    while steps_in(ticks) < needs:
        ticks += 1
    return ticks


def _steps_in(ctx: ForecastContext, steps_in: Callable[[int], int] | None) -> Callable[[int], int]:
    """``steps_in``, or the default of :func:`check_train_window`: ticks of one length, ``ctx.horizon`` steps."""
    return steps_in or (lambda ticks: ticks * ctx.horizon)


def fitting_train_window(model: Forecaster, ctx: ForecastContext, configured: int | None, default: int | None, *,
                         name: str | None = None, steps_in: Callable[[int], int] | None = None) -> int | None:
    """The training window a fleet of ``model`` trains on, in ticks (None: all history): ``configured`` when
    set, refused if too short (:func:`check_train_window`); else the frequency's ``default``
    (:func:`mlma.calendar.default_train_window`), lengthened to the shortest window that holds the model's
    ``min_history`` (daily data in daily ticks: four weeks are 28 rows, ridge needs 52).

    >>> ctx = ForecastContext("D", season_length=7, horizon=1)
    >>> ridge = make_forecaster("ridge", ctx)
    >>> fitting_train_window(ridge, ctx, None, 28), fitting_train_window(ridge, ctx, 60, 28)
    (52, 60)
    """
    if configured:
        check_train_window(model, ctx, configured, name=name, steps_in=steps_in)
        return int(configured)
    if default is None:
        return None
    return max(int(default), shortest_train_window(model, ctx, steps_in))


def _context_parameter(cls: type) -> str | None:
    try:
        params = inspect.signature(cls).parameters
    except (TypeError, ValueError):
        return None
    for name in ("ctx", "context"):
        if name in params:
            return name
    return None


def _build_builtin(name: str, ctx: ForecastContext, params: dict):
    cls = _BUILTINS[name]
    try:
        return cls(ctx, **params)
    except TypeError as exc:
        raise ValueError(f"bad parameters for model spec {name!r}: {exc}") from None


def _wrap_regressor(regressor, ctx: ForecastContext, params: dict, spec) -> SklearnForecaster:
    adapter = {k: v for k, v in params.items() if k in ADAPTER_OPTIONS}
    estimator_params = {k: v for k, v in params.items() if k not in ADAPTER_OPTIONS}
    try:
        return SklearnForecaster(regressor, ctx, estimator_params=estimator_params, **adapter)
    except ValueError as exc:
        raise ValueError(f"model spec {spec_name(spec)!r}: {exc}") from None


def _from_object(obj, ctx: ForecastContext, params: dict, spec) -> Forecaster:
    label = spec_name(spec)
    if isinstance(obj, type):
        if is_regressor_like(obj):
            return _wrap_regressor(obj, ctx, params, spec)
        if not (callable(getattr(obj, "fit", None)) and callable(getattr(obj, "predict", None))):
            raise ValueError(
                f"model spec {label!r} names {obj.__qualname__}, which is neither a Forecaster (fit/predict on "
                "ds, y, future_ds) nor a regressor (fit(X, y), predict(X))"
            )
        ctx_name = _context_parameter(obj)
        kwargs = dict(params)
        if ctx_name is not None:
            kwargs[ctx_name] = ctx
        try:
            model = obj(**kwargs)
        except TypeError as exc:
            raise ValueError(f"cannot instantiate model spec {label!r} with {sorted(kwargs)}: {exc}") from None
        except (ImportError, OSError) as exc:
            # A package the constructor imports, or a file it reads (weights, a config; FileNotFoundError,
            # PermissionError), is missing here: the agent's machine may have it, as a pickle: spec's file.
            raise SpecUnavailable(f"model spec {label!r}: its constructor raised {type(exc).__name__}: {exc}") \
                from None
        except Exception as exc:  # noqa: BLE001 - a user's constructor: no history would fix it
            raise ValueError(f"model spec {label!r}: its constructor raised {type(exc).__name__}: {exc}") from None
    elif isinstance(obj, Forecaster):
        if params:
            raise ValueError(f"model spec {label!r} is an instance; parameters {sorted(params)} cannot be applied")
        model = copy.deepcopy(obj)  # a fresh copy per stream: fitting one must not touch the prototype
    elif is_regressor_like(obj):
        return _wrap_regressor(obj, ctx, params, spec)
    else:
        raise ValueError(f"model spec {label!r} is neither a Forecaster nor a scikit-learn-style regressor")
    if not isinstance(model, Forecaster):
        missing = [a for a in ("fit", "predict", "min_history") if not hasattr(model, a)]
        raise ValueError(f"model spec {label!r} does not follow the Forecaster protocol (missing {missing})")
    need = getattr(model, "min_history", None)
    if isinstance(need, bool) or not isinstance(need, numbers.Real) or not math.isfinite(need) or need < 0:
        raise ValueError(f"model spec {label!r}: min_history must be a number of observations >= 0, got {need!r}")
    return model


def _build_nixtla(key: str, ctx: ForecastContext, params: dict) -> Forecaster:
    """``statsforecast:<Model>[:k=v,...]`` and ``mlforecast[:module:function][:k=v,...]`` (mlma.models.nixtla)."""
    from mlma.models import nixtla  # noqa: PLC0415 - the optional Nixtla packages load only when asked for

    family, _, rest = key.partition(":")
    names, spec_params = nixtla.split_spec(rest, key) if rest else ([], {})
    clash = sorted(set(spec_params) & set(params))
    if clash:
        raise ValueError(f"model spec {key!r}: parameter(s) {clash} given both in the spec and as parameters")
    merged = {**spec_params, **params}
    if family == "statsforecast":
        if len(names) != 1:
            raise ValueError(f"model spec {key!r}: name one statsforecast model, e.g. 'statsforecast:AutoETS' or "
                             "'statsforecast:AutoARIMA:max_p=3'")
        return nixtla.StatsForecastModel(ctx, names[0], **merged)
    if len(names) not in (0, 2):
        raise ValueError(f"model spec {key!r}: use 'mlforecast' (the built-in pipeline) or "
                         "'mlforecast:package.module:function', each optionally followed by ':key=value,...'")
    return nixtla.MLForecastModel(ctx, ":".join(names) or None, **merged)


@functools.lru_cache(maxsize=8)
def _unpickle(path: str, mtime_ns: int):
    with open(path, "rb") as handle:
        return pickle.load(handle)


def _from_pickle(key: str, ctx: ForecastContext, params: dict) -> Forecaster:
    """``pickle:/path/model.pkl``: a model or regressor saved to a file (``mlma init --from-mlflow`` writes one);
    every stream gets a copy, fitted on its own history."""
    path = Path(key[len("pickle:"):].strip()).expanduser()
    try:
        obj = _unpickle(str(path.resolve()), path.stat().st_mtime_ns)
    except OSError as exc:  # not on this machine, or not for this user: the agent's may read it
        raise SpecUnavailable(f"model spec {key!r}: cannot read {path}: {exc.strerror or exc}") from None
    except ImportError as exc:  # the pickled class's package is not installed here
        raise SpecUnavailable(f"model spec {key!r}: {path} needs a module this environment cannot import "
                              f"({type(exc).__name__}: {exc})") from None
    except (pickle.UnpicklingError, AttributeError, EOFError) as exc:
        raise ValueError(f"model spec {key!r}: {path} is not a loadable pickle ({type(exc).__name__}: {exc})") from None
    return _from_object(obj, ctx, params, key)


def make_forecaster(spec, ctx: ForecastContext, **params) -> Forecaster:
    """Build an unfitted model for one stream.

    Parameters
    ----------
    spec
        One of :func:`available_models` (``"seasonal-naive"``, ``"ridge"``, ``"lightgbm"``, ``"mean"``),
        optionally with options (``"ridge:alpha=3:holidays=DE"``, see :func:`spec_options`);
        ``"sklearn:<module>.<Class>"`` for a scikit-learn-style regressor (``"sklearn:linear_model.Ridge"`` is
        read as ``sklearn.linear_model.Ridge``); ``"package.module:Class"`` for a user class (options after
        it, ``"package.module:Class:damping=0.8"``, go to its constructor), which is
        instantiated (with ``ctx`` passed as its ``ctx`` or ``context`` argument if it has one) when it
        follows the :class:`Forecaster` protocol, or wrapped in :class:`SklearnForecaster` when it is a
        regressor. A class or an instance may also be passed directly; instances are copied.
        ``"statsforecast:<Model>"`` (e.g. ``"statsforecast:AutoETS"``, ``"statsforecast:AutoARIMA:max_p=3"``)
        for a statsforecast model and ``"mlforecast"`` or ``"mlforecast:package.module:function"`` for an
        mlforecast pipeline (:mod:`mlma.models.nixtla`, ``pip install 'mlma[nixtla]'``); ``key=value``
        pairs after the last ``:`` are the model's parameters. ``"pickle:/path/model.pkl"`` for a model or
        regressor saved to a file (a template: every stream fits its own copy).
    ctx
        The stream's clock.
    **params
        Constructor parameters. For regressors, the adapter's feature options (``lags``, ``windows``,
        ``calendar``, ``calendar_encoding``, ``target_transform``, ``level_window``, ``min_train_rows``) go to
        :class:`SklearnForecaster` and everything else to the regressor.

    Raises
    ------
    ValueError
        For an unknown spec, an import failure or bad parameters, naming the spec and what is available;
        :class:`~mlma.models.SpecUnavailable` (a ``ValueError``) when what it names cannot be imported or read
        in this environment (a missing extra, a package not on the path, a module whose code raised at import,
        a model file or a file a constructor reads, ``OSError``, not on this machine).

    Examples
    --------
    >>> ctx = ForecastContext("h", season_length=24, horizon=24)
    >>> type(make_forecaster("ridge", ctx, alpha=3.0)).__name__
    'RidgeForecaster'
    >>> make_forecaster("sklearn:linear_model.Ridge", ctx, alpha=2.0).estimator
    Ridge(alpha=2.0)
    >>> make_forecaster("prophet", ctx)
    Traceback (most recent call last):
    ...
    ValueError: unknown model spec 'prophet'; available: lightgbm, mean, ridge, seasonal-naive, or 'sklearn:<module>.<Class>', 'statsforecast:<Model>[:key=value,...]', 'mlforecast[:package.module:function][:key=value,...]', 'pickle:<file>' or 'package.module:Class'
    """
    if not isinstance(ctx, ForecastContext):
        raise ValueError(f"ctx must be a ForecastContext, got {type(ctx).__name__}")
    if not isinstance(spec, str):
        return _from_object(spec, ctx, params, spec)
    key = spec.strip()
    normalised = key.lower().replace("_", "-")
    if normalised in _BUILTINS:
        return _build_builtin(normalised, ctx, params)
    name, _, options = normalised.partition(":")
    if name in _BUILTINS and options:
        return _build_builtin(name, ctx, {**spec_options(key.partition(":")[2], spec), **params})
    if key.startswith("pickle:"):
        return _from_pickle(key, ctx, params)
    if key == "mlforecast" or key.startswith(("statsforecast:", "mlforecast:")):
        return _build_nixtla(key, ctx, params)
    if key.startswith("sklearn:"):
        path = key[len("sklearn:"):].strip()
        head, _, options = path.rpartition(":")
        if head and options and all("=" in part for part in options.split(",")):
            # Read as a module named "linear_model.Ridge", it would pass for a package missing here.
            raise ValueError(f"model spec {spec!r}: an 'sklearn:' spec takes no options after the class "
                             f"({options!r}); name the class as package.module:Class to give them, e.g. "
                             "'sklearn.linear_model:Ridge:alpha=2'")
        regressor = in_sklearn = None
        if ":" not in path and not path.startswith("sklearn.") and "." in path:
            try:
                regressor = import_object("sklearn." + path)
            except SpecUnavailable:
                pass  # no such module in scikit-learn: a path of its own
            except ValueError as exc:
                in_sklearn = exc  # scikit-learn has the module but not the name
        if regressor is None:
            try:
                regressor = import_object(path)
            except SpecUnavailable as exc:
                # "linear_model.Nope" is scikit-learn's module without the name, not a package missing here.
                raise (ValueError if in_sklearn else SpecUnavailable)(
                    f"model spec {spec!r}: {in_sklearn or exc}") from None
            except ValueError as exc:
                raise ValueError(f"model spec {spec!r}: {exc}") from None
        if not is_regressor_like(regressor):
            raise ValueError(f"model spec {spec!r} does not name a regressor with fit(X, y) and predict(X)")
        return _wrap_regressor(regressor, ctx, params, spec)
    if ":" in key:
        # "package.module:Class:damping=0.8": options after the class, as a built-in's, go to its constructor.
        module, _, rest = key.partition(":")
        cls, _, options = rest.partition(":")
        if options and all("=" in part for part in options.split(":")):
            key, params = f"{module}:{cls}", {**spec_options(options, spec), **params}
        try:
            obj = import_object(key)
        except ValueError as exc:  # the same class: a module missing here stays SpecUnavailable
            raise type(exc)(f"model spec {spec!r}: {exc}; built-ins are {', '.join(available_models())}") from None
        return _from_object(obj, ctx, params, spec)
    raise ValueError(
        f"unknown model spec {spec!r}; available: {', '.join(available_models())}, or {_SPEC_FORMS}"
    )


def spec_options(text: str, spec: str = "") -> dict:
    """Parse the options of a built-in model's spec, ``"alpha=3:holidays=DE"`` in ``"ridge:alpha=3:holidays=DE"``:
    whole numbers, decimals and true/false are converted, a list in brackets item by item (quotes around its
    words are optional), anything else stays text.

    Examples
    --------
    >>> spec_options("alpha=3:holidays=DE:use_drivers=false")
    {'alpha': 3, 'holidays': 'DE', 'use_drivers': False}
    >>> spec_options("lags=[1, 7]:windows=[7]:calendar=[day_of_week,'month']:drivers=[]")
    {'lags': [1, 7], 'windows': [7], 'calendar': ['day_of_week', 'month'], 'drivers': []}
    """
    options = {}
    for part in text.split(":"):
        name, eq, value = part.partition("=")
        if not eq or not name.strip():
            raise ValueError(f"model spec {spec or text!r}: option {part!r} is not name=value")
        value = value.strip()
        if value.startswith("[") and value.endswith("]"):
            # Documented as lags=[24, 168]; each character of the text was taken for a lag ("got ('[', '1', ...").
            items = [item.strip().strip("'\"") for item in value[1:-1].split(",")]
            parsed: Any = [_spec_scalar(item) for item in items] if any(items) else []
        else:
            parsed = _spec_scalar(value)
        options[name.strip()] = parsed
    return options


def _spec_scalar(value: str) -> Any:
    """One value of a built-in model's spec: true/false, a whole number, a decimal, or text."""
    if value.lower() in ("true", "false"):
        return value.lower() == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


@dataclass
class FitOutcome:
    """The result of :func:`fit_forecaster`.

    Attributes
    ----------
    model
        The fitted model (the requested one, or the fallback).
    spec
        Name of the model actually fitted: the requested spec, or ``"seasonal-naive"``/``"mean"`` after a
        fallback.
    fallback_reason
        Why the requested model was replaced, or None.
    seconds
        Wall-clock seconds spent, fallback included.
    n_train
        Rows (or observations) the fitted model learnt from.
    requested
        Name of the requested spec.
    short_history
        The fallback was taken because the history is shorter than the model needs (``min_history``, or its
        fit raised :class:`~mlma.models.InsufficientDataError`): the expected start of a new stream, which
        clears itself as its history grows. False for every other reason (no finite value, a constant series, a
        failed fit), which more history need not fix.
    """

    model: Forecaster
    spec: str
    fallback_reason: str | None
    seconds: float
    n_train: int
    requested: str | None = None
    cpu_seconds: float | None = None
    """CPU seconds of this process spent on the fit (a share of a joint fit's; work that statsforecast hands
    to its own worker processes with ``n_jobs > 1`` is not counted)."""
    short_history: bool = False

    @property
    def fell_back(self) -> bool:
        return self.fallback_reason is not None


def fallback_cause(reason: str | None, short_history: bool = False) -> str | None:
    """A fall-back's reason in one of a few words, to count them: ``short history``, ``no finite value``,
    ``constant series`` or ``fit failed`` (None when the fit did not fall back).

    >>> fallback_cause("history has 72 observations, lightgbm needs 216", short_history=True)
    'short history'
    >>> fallback_cause("series is constant (every observation is 3)"), fallback_cause(None)
    ('constant series', None)
    """
    if reason is None:
        return None
    if short_history:
        return "short history"
    if reason.startswith("history has no finite"):
        return "no finite value"
    if reason.startswith("series is constant"):
        return "constant series"
    return "fit failed"


def _is_simple(model) -> bool:
    return isinstance(model, (SeasonalNaive, MeanForecaster))


def fit_forecaster(
    spec, ctx: ForecastContext, ds: np.ndarray, y: np.ndarray, X: np.ndarray | None = None, *,
    params: dict | None = None, **model_params,
) -> FitOutcome:
    """Fit ``spec`` on one stream's history, falling back to a simpler model when the history cannot support it.

    The fallback is seasonal naive when the history has at least one season of observations, else the mean,
    and is taken when

    - the history has no finite value, or fewer observations than the model's ``min_history``;
    - the series is constant (every finite value equal);
    - ``fit`` raises :class:`~mlma.models.InsufficientDataError`, ``ValueError`` or a linear-algebra error
      (the message is kept).

    A fallback is never silent: ``fallback_reason`` says why. A spec that cannot be built (unknown name,
    import failure, bad parameters) raises ``ValueError`` instead, since no history would fix it.

    Parameters
    ----------
    spec, ctx
        As in :func:`make_forecaster`.
    ds, y, X
        The stream's history window (gaps and NaN allowed) and optional exogenous values.
    params, **model_params
        Model parameters, as a dict or as keywords (merged; keywords win).

    Examples
    --------
    >>> ctx = ForecastContext("h", season_length=24, horizon=24)
    >>> ds = np.arange("2024-01-01", "2024-01-03", dtype="datetime64[h]").astype("datetime64[ns]")
    >>> out = fit_forecaster("ridge", ctx, ds, np.arange(48.0))
    >>> out.spec, out.fallback_reason, out.short_history
    ('seasonal-naive', 'history has 48 observations, ridge needs 216', True)
    >>> week = np.arange("2024-01-01", "2024-01-11", dtype="datetime64[h]").astype("datetime64[ns]")
    >>> flat = fit_forecaster("ridge", ctx, week, np.ones(week.size))
    >>> flat.fallback_reason, flat.short_history
    ('series is constant (every observation is 1)', False)
    """
    started, cpu = time.perf_counter(), time.process_time()
    requested = spec_name(spec)
    model = make_forecaster(spec, ctx, **{**(params or {}), **model_params})
    ds, y, n_obs, reason, short = _check_history(model, requested, ds, y)
    if reason is None:
        try:
            model.fit(ds, y, X)
        except FIT_ERRORS as exc:
            reason, short = _fit_error_reason(requested, exc)
    outcome = _outcome(model, requested, ctx, ds, y, X, n_obs, reason, short)
    outcome.seconds, outcome.cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    return outcome


def fit_forecasters(spec, ctx: ForecastContext, histories: list[tuple], *,
                    params: dict | None = None) -> list[FitOutcome]:
    """Fit ``spec`` on many streams' histories ``(ds, y)`` or ``(ds, y, X)``, as :func:`fit_forecaster` does
    for each.

    When the spec's model derives from :class:`~mlma.models.base.FleetForecaster` (statsforecast models) and
    no history has driver values ``X``, the streams whose history passes the checks are fitted in one call of
    its class's ``fit_many``; the others fall back as in :func:`fit_forecaster`. Otherwise the streams are
    fitted one by one. The time of a joint call is shared evenly among its streams (``seconds``,
    ``cpu_seconds``).

    Examples
    --------
    >>> ctx = ForecastContext("h", season_length=24, horizon=24)
    >>> ds = np.arange("2024-01-01", "2024-01-03", dtype="datetime64[h]").astype("datetime64[ns]")
    >>> [o.spec for o in fit_forecasters("seasonal-naive", ctx, [(ds, np.arange(48.0)), (ds[:5], np.ones(5))])]
    ['seasonal-naive', 'mean']
    """
    requested = spec_name(spec)
    histories = [(h[0], h[1], h[2] if len(h) > 2 else None) for h in histories]
    first = make_forecaster(spec, ctx, **(params or {})) if histories else None
    if not isinstance(first, FleetForecaster) or any(X is not None for _, _, X in histories):
        return [fit_forecaster(spec, ctx, ds, y, X, params=params) for ds, y, X in histories]
    models = [first] + [make_forecaster(spec, ctx, **(params or {})) for _ in histories[1:]]
    clock = time.perf_counter(), time.process_time()
    checked = [_check_history(m, requested, ds, y) for m, (ds, y, _) in zip(models, histories, strict=True)]
    ready = [i for i, c in enumerate(checked) if c[3] is None]
    errors = type(models[0]).fit_many([models[i] for i in ready], [checked[i][:2] for i in ready])
    shared = ((time.perf_counter() - clock[0]) / len(models), (time.process_time() - clock[1]) / len(models))
    reasons = {i: _fit_error_reason(requested, e) for i, e in zip(ready, errors, strict=True) if e is not None}
    outcomes = []
    for i, (model, (ds, y, n_obs, reason, short)) in enumerate(zip(models, checked)):
        started, cpu = time.perf_counter(), time.process_time()
        if i in reasons:
            reason, short = reasons[i]
        outcome = _outcome(model, requested, ctx, ds, y, None, n_obs, reason, short)
        outcome.seconds = shared[0] + time.perf_counter() - started
        outcome.cpu_seconds = shared[1] + time.process_time() - cpu
        outcomes.append(outcome)
    return outcomes


def _fit_error_reason(requested: str, exc: Exception) -> tuple[str, bool]:
    """Why a fit that raised fell back, and whether only for want of data: a model that raises
    :class:`~mlma.models.InsufficientDataError` says its history is too short for it (ridge: too few rows with
    every lag known, in a history with gaps), which more history ends, as a history under ``min_history`` does;
    any other error is a failed fit.

    >>> _fit_error_reason("ridge", InsufficientDataError("8 training rows, needs 24"))
    ('ridge is short of data: 8 training rows, needs 24', True)
    >>> _fit_error_reason("ridge", ValueError("bad"))
    ('ridge fit failed: bad', False)
    """
    if isinstance(exc, InsufficientDataError):
        return f"{requested} is short of data: {exc}", True
    return f"{requested} fit failed: {exc}", False


def _check_history(model, requested: str, ds, y) -> tuple[np.ndarray, np.ndarray, int, str | None, bool]:
    """The history as arrays, its finite observations, why it cannot support ``model`` (or None), and whether
    that is only because it is shorter than the model needs."""
    ds = as_datetime_array(ds)
    y = as_float_array(y, ds.size)
    finite = np.isfinite(y)
    n_obs = int(finite.sum())
    reason, short = None, False
    if n_obs == 0:
        reason = "history has no finite observation"
    elif n_obs < model.min_history:
        reason, short = f"history has {n_obs} observations, {requested} needs {model.min_history}", True
    elif not _is_simple(model) and np.ptp(y[finite]) == 0:
        reason = f"series is constant (every observation is {y[finite][0]:g})"
    return ds, y, n_obs, reason, short


def _outcome(model, requested: str, ctx: ForecastContext, ds, y, X, n_obs: int, reason: str | None,
             short_history: bool = False) -> FitOutcome:
    """The fitted model's outcome, or the fallback's when ``reason`` says the model could not be fitted."""
    if reason is None:
        return FitOutcome(model, requested, None, 0.0, int(getattr(model, "n_train_", n_obs)), requested)
    if ctx.season_length > 1 and n_obs >= ctx.season_length:
        fallback, name = SeasonalNaive(ctx), "seasonal-naive"
    else:
        fallback, name = MeanForecaster(ctx), "mean"
    if name == requested and n_obs > 0:
        # The simple model itself was short of data: the mean is the only simpler one left.
        fallback, name = MeanForecaster(ctx), "mean"
    fallback.fit(ds, y, X)
    return FitOutcome(fallback, name, reason, 0.0, fallback.n_train_, requested, short_history=short_history)
