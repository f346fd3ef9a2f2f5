"""Fitting and predicting many streams' models, in chunks, through a ``concurrent.futures`` executor.

:class:`ModelService` is the agent's only way to a model. A model is addressed by a :class:`ModelKey`: the
stream and the last tick of its training window. Two fits with the same key see the same data and, the
built-in models being deterministic, give the same model; so when several agents replay the same history
(a backtest comparing policies) each fit is done once and every agent that uses it is charged its measured
seconds, as if it had done the fit itself.
"""

from __future__ import annotations

import time
from concurrent.futures import Executor, Future
from dataclasses import dataclass

import numpy as np
from threadpoolctl import threadpool_limits

from mlma.fleet import FleetData
from mlma.models import ForecastContext, fit_forecaster


@dataclass(frozen=True)
class ModelKey:
    """A model's identity: stream index and the last tick of its training window."""

    stream: int
    end_tick: int


@dataclass
class FittedModel:
    key: ModelKey
    model: object
    seconds: float
    fallback_reason: str | None
    n_train: int


class InlineExecutor(Executor):
    """Runs each submitted call at once in this process: the executor for small fleets and for tests."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(exc)
        return future


def make_executor(spec: str | None) -> Executor:
    """Build an executor from a short spec.

    ``None`` or ``"inline"``: this process. ``"process"`` or ``"process:N"``: a local pool of N worker
    processes (default: all cores). ``"dask://host:port"``: a Dask cluster (needs ``mlma[dask]``).

    >>> type(make_executor("inline")).__name__
    'InlineExecutor'
    """
    if spec is None or spec == "inline":
        return InlineExecutor()
    if spec.startswith("process"):
        from concurrent.futures import ProcessPoolExecutor

        _, _, workers = spec.partition(":")
        return ProcessPoolExecutor(max_workers=int(workers) if workers else None)
    if spec.startswith("dask://") or spec.startswith("tcp://"):
        try:
            from dask.distributed import Client
        except ImportError as exc:  # pragma: no cover - depends on the optional extra
            raise ValueError("the Dask executor needs the 'dask' extra: pip install 'mlma[dask]'") from exc
        address = spec.replace("dask://", "tcp://", 1)
        return Client(address).get_executor()
    raise ValueError(f"unknown executor {spec!r}; use 'inline', 'process[:N]' or 'dask://host:port'")


def _fit_chunk(spec, ctx: ForecastContext, params: dict, jobs: list) -> list:
    """Fit one chunk of streams; runs inside a worker, so it takes and returns plain data.

    BLAS is held to one thread: parallelism comes from chunks, and small per-stream matrices run several
    times slower when BLAS threads compete for the same cores.
    """
    results = []
    with threadpool_limits(limits=1):
        for key, ds, y in jobs:
            started = time.process_time()
            outcome = fit_forecaster(spec, ctx, ds, y, **params)
            seconds = time.process_time() - started
            results.append(FittedModel(key, outcome.model, seconds, outcome.fallback_reason, outcome.n_train))
    return results


class ModelService:
    """Fits and predicts the fleet's models, memoising fits and predictions by :class:`ModelKey`.

    Parameters
    ----------
    fleet
        The data the models are trained on.
    spec
        Model spec for :func:`mlma.models.make_forecaster` (``"lightgbm"``, ``"ridge"``...).
    ctx
        Frequency, season length and horizon.
    train_window_ticks
        Length of the training window in ticks; ``None`` trains on all history.
    executor
        Where fits run; chunks of ``chunk_size`` streams are one unit of work.
    """

    def __init__(self, fleet: FleetData, spec, ctx: ForecastContext, *, train_window_ticks: int | None,
                 executor: Executor | None = None, chunk_size: int = 64, model_params: dict | None = None,
                 parallel_threshold: int = 32) -> None:
        self.fleet = fleet
        self.spec = spec
        self.ctx = ctx
        self.train_window_ticks = train_window_ticks
        self.executor = executor or InlineExecutor()
        self._inline = InlineExecutor()
        self.chunk_size = chunk_size
        self.model_params = model_params or {}
        self.parallel_threshold = parallel_threshold
        self._models: dict[ModelKey, FittedModel] = {}
        self._predictions: dict[tuple[ModelKey, int], np.ndarray] = {}
        self.fits_done = 0

    def fit(self, keys: list[ModelKey]) -> list[FittedModel]:
        """Fitted models for ``keys``, fitting only those not fitted before."""
        missing = [k for k in dict.fromkeys(keys) if k not in self._models]
        if missing:
            jobs = []
            for key in missing:
                hist = self.fleet.history(key.stream, key.end_tick, self.train_window_ticks)
                jobs.append((key, hist.ds, hist.y))
            executor = self.executor if len(jobs) >= self.parallel_threshold else self._inline
            chunks = [jobs[i:i + self.chunk_size] for i in range(0, len(jobs), self.chunk_size)]
            futures = [executor.submit(_fit_chunk, self.spec, self.ctx, self.model_params, chunk)
                       for chunk in chunks]
            for future in futures:
                for fitted in future.result():
                    self._models[fitted.key] = fitted
            self.fits_done += len(jobs)
        return [self._models[k] for k in keys]

    def get(self, key: ModelKey) -> FittedModel:
        return self._models[key]

    def predict(self, key: ModelKey, target_tick: int, context_ticks: int | None = None) -> np.ndarray:
        """Forecast tick ``target_tick`` with the model ``key``, using history up to that tick's start."""
        cache_key = (key, target_tick)
        cached = self._predictions.get(cache_key)
        if cached is not None:
            return cached
        fitted = self._models[key]
        window = context_ticks if context_ticks is not None else self.train_window_ticks
        hist = self.fleet.history(key.stream, target_tick - 1, window)
        future = self.fleet.tick_timestamps(target_tick)
        y_hat = np.asarray(fitted.model.predict(hist.ds, hist.y, future), dtype=np.float64)
        if y_hat.shape != future.shape:
            raise ValueError(f"model for stream {self.fleet.ids[key.stream]!r} returned {y_hat.shape[0]} "
                             f"forecasts for {future.shape[0]} timestamps")
        self._predictions[cache_key] = y_hat
        return y_hat

    def forget(self, keep: set[ModelKey], tick: int) -> None:
        """Drop models no agent uses any more and predictions for past ticks, to bound memory."""
        self._models = {k: v for k, v in self._models.items() if k in keep or k.end_tick >= tick - 1}
        self._predictions = {k: v for k, v in self._predictions.items() if k[1] > tick}
