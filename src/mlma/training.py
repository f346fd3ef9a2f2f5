"""Fitting and predicting many streams' models, in chunks, through a ``concurrent.futures`` executor.

:class:`ModelService` is the agent's only way to a model. A model is addressed by a :class:`ModelKey`: the
stream and the last tick of its training window. Two fits with the same key see the same data and, the
built-in models being deterministic, give the same model; so when several agents replay the same history
(a backtest comparing policies) each fit is done once and every agent that uses it is charged its measured
seconds, as if it had done the fit itself.

The unit of work is a *chunk* of streams: one task carries the histories of all its streams and returns
their fitted models, so the data of a chunk crosses the network once, whatever the executor. Executors:
:class:`InlineExecutor` (this process), a local process pool, and :class:`DaskExecutor` (a Dask cluster,
``pip install 'mlma[dask]'``); see :func:`make_executor` and ``docs/cluster.md``.
"""

from __future__ import annotations

import collections
import concurrent.futures.process
import dataclasses
import functools
import math
import pickle
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, CancelledError, Executor, Future, ProcessPoolExecutor, wait
from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from mlma.data import range_bounds
from mlma.executor_spec import check_executor_spec, scheduler_address
from mlma.project import MAX_FIT_TIMEOUT_SECONDS
from mlma.fleet import FleetData
from mlma.models import (
    FleetHistory,
    ForecastContext,
    check_train_window,
    fallback_cause,
    fit_forecasters,
    make_forecaster,
    model_uses_drivers,
    predict_fleet_isolated,
    spec_name,
)
from mlma.models.base import (describe_error, driver_view, model_for_context, model_takes_driver_prior,
                              unusable_forecast)

DEFAULT_PARALLEL_THRESHOLD = 32
"""Fewer missing fits than this run inline on an executor given without a ``parallel_threshold`` of its own (a
caller's thread or process pool); mlma's own pools and clusters take every fit (``parallel_threshold = 1``)."""

DEFAULT_PREDICT_CHUNK = 512
"""Most streams forecast in one fleet-wide call (one shard on a cluster): large enough that the per-call
costs vanish, small enough to bound the memory of the grid and feature arrays and to keep a shard of hourly
streams with a 28-day window (about 9 MB with ridge models) under Dask's 10 MB warning for large tasks."""


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
    #: The fall-back was taken only because the history is shorter than the model needs (see
    #: :class:`mlma.models.FitOutcome`): a new stream's expected start, which clears itself.
    short_history: bool = False

    @property
    def fallback_cause(self) -> str | None:
        """Why it fell back, in a few words (:func:`mlma.models.fallback_cause`); None when it did not."""
        return fallback_cause(self.fallback_reason, self.short_history)


def _implausible_drivers(X: np.ndarray | None, future_X: np.ndarray | None, names, future_ds,
                         factor: float) -> str | None:
    """Why a forecast must not be made from these future driver values, or None: a value further outside what
    the stream's history window holds of that driver than ``factor`` times their scale (the rule ``y`` is
    checked by at ingest, :func:`mlma.data.range_bounds`; 0: not checked), which a model would extrapolate into
    an absurd forecast (a unit error, an overflow). A driver the window holds no value of, or only zeros, is
    not judged.

    >>> X, names = np.array([[0.0, 10.0], [1.0, 20.0]]), ("campaign", "temp")
    >>> when = np.array(["2025-01-01T05"], "M8[ns]")
    >>> _implausible_drivers(X, np.array([[12.0, 25.0]]), names, when, 100.0)
    >>> print(_implausible_drivers(X, np.array([[8000.0, 25.0]]), names, when, 100.0))  # doctest: +ELLIPSIS
    the future value of driver 'campaign' at 2025-01-01 05:00 is 8000, far outside ... window (0 to 1; ...
    """
    if X is None or future_X is None or not X.size or not future_X.size or not factor:
        return None
    known = np.isfinite(X)
    with np.errstate(invalid="ignore"):
        lo = np.where(known.any(axis=0), np.where(known, X, np.inf).min(axis=0), np.nan)
        hi = np.where(known.any(axis=0), np.where(known, X, -np.inf).max(axis=0), np.nan)
    low, high = range_bounds(lo, hi, factor)
    far = (future_X < low) | (future_X > high)
    if not far.any():
        return None
    row, c = np.argwhere(far)[0]
    when = pd.Timestamp(np.asarray(future_ds)[row]).strftime("%Y-%m-%d %H:%M")
    return (f"the future value of driver {names[c]!r} at {when} is {future_X[row, c]:.6g}, far outside the values "
            f"of the stream's window ({lo[c]:.6g} to {hi[c]:.6g}; value_range_factor {factor:g}): a unit or file "
            "error? Correct it with mlma ingest --future")


class ExecutorUnavailableError(ValueError):
    """The executor that was asked for cannot be built: a missing extra, or a cluster that does not answer.

    A ``ValueError`` because it is a problem of configuration (the spec, the environment), which the
    command line reports without a traceback; the underlying error is chained as ``__cause__``.
    """


class ChunkFitError(RuntimeError):
    """Fits failed: a chunk of streams as a whole on the executor (an error of the executor, a lost worker, a
    timeout), or single streams whose own fit failed (:class:`FitFailure`; then ``failed_chunks`` is 0).

    Attributes
    ----------
    stream_ids
        ``unique_id`` of every stream in the failed chunk (or of each stream that failed alone).
    keys
        Their :class:`ModelKey` s.
    failed_chunks
        How many chunks of the same call failed (this error describes the first of them).
    """

    def __init__(self, message: str, *, stream_ids: list[str], keys: list[ModelKey], failed_chunks: int = 1):
        super().__init__(message)
        self.stream_ids = stream_ids
        self.keys = keys
        self.failed_chunks = failed_chunks


class InlineExecutor(Executor):
    """Runs each submitted call at once in this process: the executor for small fleets and for tests."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future: Future = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
            future.set_exception(exc)
        return future


def _check_dask_handshake(address: str, timeout: float) -> None:
    """Raise :class:`ExecutorUnavailableError` unless a Dask server at ``address`` completes Dask's handshake
    within ``timeout`` seconds.

    A client whose handshake never ends cannot be stopped: each attempt at a port that answers but is no
    scheduler (a web server) left a thread and its sockets behind, and ``mlma run`` tries again every round.
    Dask's own ``connect`` bounds the handshake and closes the connection when it fails.
    """
    import asyncio
    import socket
    from urllib.parse import urlsplit

    from distributed.comm import connect

    async def handshake() -> None:
        # connect bounds reaching the address, not the handshake after it (a web server never answers it).
        comm = await asyncio.wait_for(connect(address, timeout=timeout), timeout + 1.0)
        await comm.close()

    outcome: dict = {}

    def run() -> None:  # a thread of its own: the caller may be inside an event loop
        try:
            asyncio.run(handshake())
        except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread below
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="mlma-dask-handshake", daemon=True)
    thread.start()
    thread.join(timeout + 5.0)  # connect's own timeout ends it well before
    error = outcome.get("error")
    if not thread.is_alive() and error is None:
        return
    if error is not None and not isinstance(error, Exception):  # KeyboardInterrupt, SystemExit
        raise error
    # Reached but silent, or not reached: a plain TCP connection tells them apart.
    parts = urlsplit(address)
    try:
        with socket.create_connection((parts.hostname, parts.port), timeout=min(timeout, 5.0)):
            answers = True
    except (OSError, ValueError, TypeError):
        answers = False
    if answers and error is not None and not isinstance(error, (OSError, TimeoutError)):
        # It answered in another protocol: an HTTP server's "HTTP/1.1 400" read as a message length made Dask
        # ask for 3 EiB (MemoryError), with a traceback.
        raise ExecutorUnavailableError(f"{address} answers, but not as a Dask scheduler (its handshake failed: "
                                       f"{type(error).__name__}); is it another service, a web server or a proxy?"
                                       ) from None
    if answers:
        raise _silent_scheduler(address, timeout + 1.0) from error
    raise _unreachable_scheduler(address, timeout, error) from error


def _silent_scheduler(address: str, waited: float) -> ExecutorUnavailableError:
    """The error for an address that answers but never completes Dask's handshake or serves a client."""
    return ExecutorUnavailableError(
        f"{address} answers, but no Dask scheduler replied within {waited:g} s: is it another service "
        f"(the Dask dashboard's port, 8787 by default, instead of the scheduler's, 8786)?")


def _unreachable_scheduler(address: str, timeout: float, error: BaseException | None) -> ExecutorUnavailableError:
    """The error for a scheduler address that could not be reached within ``timeout`` seconds."""
    return ExecutorUnavailableError(
        f"cannot reach the Dask scheduler at {address} within {timeout:g} s ({error}); start one with "
        f"'dask scheduler' and workers with 'dask worker {address}', or check the host and port")


class DaskExecutor(Executor):
    """A ``concurrent.futures`` executor on a Dask cluster, through ``distributed.Client.get_executor``.

    Each submitted call is one Dask task whose arguments travel with it (for :class:`ModelService`: one
    chunk of streams with their histories). Calls are submitted as impure (``pure=False``): two identical
    submissions are two tasks, as with any other executor. When a worker dies, the scheduler runs its tasks
    again elsewhere and the caller gets each result once (up to ``distributed.scheduler.allowed-failures``
    deaths per task; then the task fails with ``KilledWorker``).

    Parameters
    ----------
    client
        A connected ``distributed.Client``.
    close_client
        Close ``client`` on :meth:`shutdown`. True for a client this executor created
        (:meth:`connect`), False for one the caller passed in and still owns.

    Examples
    --------
    Not run as a doctest, since it starts processes (``tests/test_dask.py`` does it on a LocalCluster)::

        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=2, threads_per_worker=1) as cluster, Client(cluster) as client:
            with DaskExecutor(client) as executor:
                assert executor.submit(sum, [1, 2, 3]).result() == 6
    """

    parallel_threshold = 1
    """Every fit goes to the cluster once one was asked for: the driver may be a small machine, and a task's
    overhead (milliseconds) is small beside a fit."""

    def __init__(self, client, *, close_client: bool = False) -> None:
        self.client = client
        self.close_client = close_client
        self._executor = client.get_executor(pure=False)
        self._closed = False
        # Workers found able to run mlma's tasks (retire_unfit_workers checks only those that joined since).
        self._checked: set[str] = set()
        # Calls not done yet: shutdown(cancel_futures=True) stops them on their workers.
        self._running: set[Future] = set()
        self._running_lock = threading.Lock()
        wrap = getattr(self._executor, "_wrap_future", None)
        if wrap is not None:
            # The concurrent.futures Future handed back hides its Dask task; its key finds the worker of a task
            # given up on (placed). Without the hook (another Dask version) no worker is named.
            def keyed(future, wrap=wrap):
                wrapped = wrap(future)
                wrapped.dask_key = future.key
                return wrapped

            self._executor._wrap_future = keyed

    @classmethod
    def connect(cls, address: str, *, timeout: float = 10.0) -> DaskExecutor:
        """Connect to the scheduler at ``address`` (``tcp://host:port``) with a client this executor owns.

        Raises
        ------
        ExecutorUnavailableError
            When Dask is not installed or the scheduler does not answer within ``timeout`` seconds; the
            message names the address.
        """
        Client = _import_dask_client(address)
        _check_dask_handshake(address, timeout)
        # Dask's timeout covers reaching the address, not a handshake that never ends: a service that is no
        # scheduler (its dashboard's port, 8787, for 8786) kept the client waiting for ever. The check above
        # finds that without leaving a connection open; this deadline stays for a server that completes Dask's
        # handshake but never serves a client.
        made: dict = {}

        def connect() -> None:
            try:
                made["client"] = Client(address, timeout=timeout, set_as_default=False)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread below
                made["error"] = exc

        thread = threading.Thread(target=connect, name="mlma-dask-connect", daemon=True)
        thread.start()
        thread.join(timeout + 5.0)
        if thread.is_alive():
            raise _silent_scheduler(address, timeout + 5.0)
        error = made.get("error")
        if isinstance(error, (OSError, TimeoutError)):
            raise _unreachable_scheduler(address, timeout, error) from error
        if error is not None:
            raise error
        client = made["client"]
        executor = cls(client, close_client=True)
        executor.check_workers()
        return executor

    @property
    def address(self) -> str:
        return self.client.scheduler.address

    def why_cancelled(self) -> str:
        """Why a task mlma never cancelled came back cancelled, for its error: the cluster dropped it (a bare
        ``CancelledError`` said nothing)."""
        try:
            address = self.address
        except Exception:  # noqa: BLE001 - a client too far gone to name its scheduler
            address = "its address"
        return (f" (the Dask cluster dropped the task: its scheduler at {address} was lost or restarted while the "
                "task ran, or another client cancelled it; the next tick connects again)")

    @property
    def n_workers(self) -> int | None:
        """Workers in the cluster now; None when the scheduler cannot be asked."""
        try:
            return len(self.client.nthreads())
        except Exception:  # noqa: BLE001 - a scheduler gone, a client closed
            return None

    @property
    def slots(self) -> int:
        """Worker threads in the cluster now (at least 1): the number of chunks that can run at once."""
        return max(1, sum(self.client.nthreads().values()))

    @property
    def usable(self) -> bool:
        """Whether this executor can still take work: not shut down, and its client still connected (Dask closes
        one that lost its scheduler for longer than it waits to reconnect, and a closed client never connects
        again: a new executor must be made)."""
        return not self._closed and self._connected

    @property
    def _connected(self) -> bool:
        return self.client.status in ("running", "connecting")

    def check_workers(self) -> None:
        """Warn when the cluster has no worker yet; fail when no worker can import mlma, and warn when some
        cannot: :class:`ModelService` retires those before it sends work (:meth:`retire_unfit_workers`, which
        also checks the workers that join later), and the fits run on the others (before, one such worker
        failed every tick of the whole fleet).
        """
        results = self.client.run(_mlma_version, on_error="return")
        if not results:
            warnings.warn(f"the Dask scheduler at {self.address} has no workers yet; fits wait until one joins "
                          f"(start one with 'dask worker {self.address}')", RuntimeWarning, stacklevel=3)
            return
        broken = {w: r for w, r in results.items() if isinstance(r, BaseException)}
        if broken:
            worker, error = next(iter(broken.items()))
            what = (f"{len(broken)} of {len(results)} Dask workers at {self.address} cannot run mlma (first: "
                    f"{worker}: {type(error).__name__}: {error}); install the same mlma on every worker")
            if len(broken) == len(results):
                raise ExecutorUnavailableError(what)
            warnings.warn(f"{what}; they are retired before any fit is sent, and the fits run on the others",
                          RuntimeWarning, stacklevel=3)
        local = _mlma_version()
        other = sorted({v for v in results.values() if not isinstance(v, BaseException) and v != local})
        if other:
            warnings.warn(f"Dask workers at {self.address} run mlma {', '.join(other)}, this process {local}; "
                          "fits may differ from local ones", RuntimeWarning, stacklevel=3)

    def retire_unfit_workers(self, *task_objects, probe: Callable[[], object] | None = None
                             ) -> tuple[str | None, bool]:
        """Check the workers that joined since the last check: each must import mlma and unpickle
        ``task_objects`` (what the tasks about to be sent carry besides their data: the function, the model
        spec, the context), and run ``probe`` (sent with them; :class:`ModelService` builds an unfitted model
        of its spec: a user's model module, an extra or a model file missing on the worker). A worker that
        cannot unpickle does not fail the task: Dask cannot read it, and the worker drops its connection and
        closes, at the first task it gets, and every such end counts against the task (``KilledWorker`` after
        ``distributed.scheduler.allowed-failures``, blaming the task's streams); one that cannot build the
        model fails every stream's fit it gets. So it is retired now (closed with its nanny), before any task
        reaches it.

        Returns what is wrong, naming the workers (None when nothing is), and whether no worker can run the
        tasks: then none is retired (the tasks themselves are at fault, or the whole cluster's environment)
        and the caller does not send them; the workers are checked again at the next call.
        """
        import cloudpickle  # a dependency of Dask

        try:
            workers = set(self.client.nthreads())
        except Exception:  # noqa: BLE001 - a scheduler gone: the submissions fail, each chunk named
            return None, False
        self._checked &= workers  # a worker that left, and may come back at that address, is checked again
        new = sorted(workers - self._checked)
        if not new:
            return None, False
        blob = cloudpickle.dumps((task_objects, probe))

        def unpickles(blob):  # sent by value: it runs where mlma may not be importable
            import pickle

            try:
                _, probe = pickle.loads(blob)
                if probe is not None:
                    probe()
            except Exception as exc:  # noqa: BLE001 - what the worker would fail with at the task
                return f"{type(exc).__name__}: {exc}"
            return None

        try:
            results = self.client.run(unpickles, blob, workers=new, on_error="return")
        except Exception:  # noqa: BLE001 - a scheduler gone: the submissions fail, each chunk named
            return None, False
        # An error of the call itself (a worker that left meanwhile) is no verdict: checked again next time.
        broken = {w: r for w, r in results.items() if isinstance(r, str)}
        self._checked |= {w for w, r in results.items() if r is None}
        if not broken:
            return None, False
        worker, error = next(iter(broken.items()))
        what = (f"mlma is not importable on Dask worker(s) {', '.join(sorted(broken))} at {self.address}, or "
                f"cannot unpickle mlma's tasks or build the model there ({worker}: {error})")
        fix = f"install this mlma ({_mlma_version()}) and the model's code in the workers' environment"
        if not self._checked:
            return f"{what}; no worker of the cluster can run the fits: {fix}", True
        try:
            self.client.retire_workers(list(broken), close_workers=True)
        except Exception as exc:  # noqa: BLE001 - each task that reaches them runs again on another worker
            return f"{what}; they could not be retired ({describe_error(exc)}): {fix}", False
        return (f"{what}; retired them, since each would close at its first task (its tasks run on the other "
                f"workers): {fix}"), False

    def submit(self, fn, /, *args, **kwargs) -> Future:
        future = self._executor.submit(fn, *args, **kwargs)
        with self._running_lock:
            self._running.add(future)
        future.add_done_callback(self._done)
        return future

    def _done(self, future: Future) -> None:
        with self._running_lock:
            self._running.discard(future)

    def placed(self, futures: list[Future]) -> list[tuple[str, bool] | None] | None:
        """Where each of ``futures`` (from :meth:`submit`) is, by the scheduler: its worker and whether it is
        executing there (as heard at the workers' last heartbeat, half a second apart on a small cluster) or
        waits there behind other work; None for a task still in the scheduler's queue. None when the scheduler
        cannot tell (it is gone, or the futures carry no key)."""
        keys = [getattr(future, "dask_key", None) for future in futures]
        if None in keys:
            return None

        def where(dask_scheduler, keys):  # runs on the scheduler, which need not have mlma: sent by value
            on = {}
            for key in keys:
                task = dask_scheduler.tasks.get(key)
                worker = None if task is None else task.processing_on
                if worker is not None:
                    on[key] = (worker.address, task in worker.executing)
            return on

        try:
            on = self.client.run_on_scheduler(where, keys=keys)
        except Exception:  # noqa: BLE001 - a scheduler that is gone, or that refuses to run code
            return None
        return [on.get(key) for key in keys]

    def restart_workers(self, workers: list[str], timeout: float = 20.0) -> str | None:
        """Restart ``workers`` through their nannies, waiting up to ``timeout`` seconds for them to be back (a
        cancelled task that is still running keeps its worker's thread for good: the scheduler sees the thread
        free and gives it more work, which waits behind it). None when done, else why not.

        A nanny gives its worker 4 seconds to stop before it kills it, so a restart takes about 5 seconds."""
        try:
            result = self.client.restart_workers(list(workers), timeout=timeout, raise_for_error=False)
        except Exception as exc:  # noqa: BLE001 - a worker without a nanny (ValueError), a scheduler gone
            return describe_error(exc)
        bad = {worker: status for worker, status in result.items() if status != "OK"}
        return ", ".join(f"{worker}: {status}" for worker, status in bad.items()) or None

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Wait for (or cancel) submitted calls, then close the client if this executor created it.

        Cancelled calls that are running are stopped: a worker keeps running a cancelled task to its end (a
        fit stopped by Ctrl-C: into the next tick, a hung one for good), so the workers that hold them are
        restarted through their nannies (about 5 s), named in a warning."""
        if self._closed:
            return
        self._closed = True
        if self._connected and cancel_futures:
            self._stop_running()
        if self._connected:  # a closed client's calls are gone with it
            self._executor.shutdown(wait=wait and not cancel_futures)
        if self.close_client:
            self.client.close()

    close = shutdown

    def _stop_running(self) -> None:
        """Cancel the calls not done, and restart the workers that hold them (running, or queued there)."""
        with self._running_lock:
            running = list(self._running)
        found = self.placed(running) if running else None
        for future in running:
            future.cancel()
        workers = sorted({place[0] for place in found or () if place})
        if not workers:
            return
        problem = self.restart_workers(workers)
        said = "restarted them" if problem is None else f"they could not be restarted ({problem}): restart them"
        warnings.warn(f"the Dask worker(s) {', '.join(workers)} at {self.address} were running calls cancelled at "
                      f"shutdown (a tick stopped by Ctrl-C or an error); {said}, so that they do not keep running "
                      "them", RuntimeWarning, stacklevel=4)

    def __repr__(self) -> str:
        owner = "own client" if self.close_client else "caller's client"
        return f"DaskExecutor({self.address!r}, {owner})"


def _import_dask_client(address: str):
    try:
        from distributed import Client
    except ImportError as exc:
        raise ExecutorUnavailableError(
            f"the executor for the Dask cluster at {address} needs Dask, which is not installed: "
            "pip install 'mlma[dask]'"
        ) from exc
    return Client


def _mlma_version() -> str:
    """The mlma version of the process this runs in (run on Dask workers to check their environment)."""
    import mlma

    return getattr(mlma, "__version__", "unknown")


def make_executor(spec=None, *, connect_timeout: float = 10.0) -> Executor:
    """Build an executor from a short spec.

    Parameters
    ----------
    spec
        ``None`` or ``"inline"``: this process. ``"process"`` or ``"process:N"``: a local pool of N worker
        processes (default: all cores). ``"dask://host:port"`` or ``"tcp://host:port"``: the Dask scheduler
        at that address (needs ``mlma[dask]``); the executor's client is closed by ``shutdown()``. A
        ``distributed.Client``: its cluster, the client left open for the caller. An ``Executor``: itself.
    connect_timeout
        Seconds to wait for a Dask scheduler to answer.

    Raises
    ------
    ExecutorUnavailableError
        When Dask is not installed or the scheduler does not answer (a ``ValueError``).
    ValueError
        For an unknown spec.

    Examples
    --------
    >>> type(make_executor("inline")).__name__
    'InlineExecutor'
    >>> make_executor("spark://host:7077")
    Traceback (most recent call last):
    ...
    ValueError: unknown executor 'spark://host:7077'; use 'inline', 'process[:N]', 'dask://host:port' or a distributed.Client
    """
    if spec is None:
        return InlineExecutor()
    if isinstance(spec, Executor):
        return spec
    if _is_dask_client(spec):
        return DaskExecutor(spec, close_client=False)
    if not isinstance(spec, str):
        raise ValueError(f"executor must be a spec string, an Executor or a distributed.Client, got "
                         f"{type(spec).__name__}")
    spec = check_executor_spec(spec)
    if spec == "inline":
        return InlineExecutor()
    if spec == "process" or spec.startswith("process:"):
        _, _, workers = spec.partition(":")
        return _process_pool(int(workers) if workers else None)
    return DaskExecutor.connect(scheduler_address(spec), timeout=connect_timeout)


def _process_pool(workers: int | None) -> ProcessPoolExecutor:
    """A local process pool whose workers exit when the process that made it dies, even by SIGKILL.

    A killed ``mlma tick`` cannot shut its pool down, and its workers would otherwise wait for work on
    their queue for ever. Each worker watches its parent (:func:`_exit_with_parent`). On Linux it also asks
    the kernel for SIGKILL when its parent goes (``PR_SET_PDEATHSIG``), which works even while a fit holds
    the interpreter; the kernel ties that to the *thread* that forked the worker, so it is used only when
    the pool is made on the main thread and its workers are forked there and then.
    """
    import multiprocessing
    import os
    import threading

    eager = (threading.current_thread() is threading.main_thread()
             and multiprocessing.get_start_method(allow_none=False) == "fork")
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_exit_with_parent, initargs=(os.getpid(), eager))
    # Every fit goes to the pool once one was asked for, as on a cluster: a batch of a few fits run in this
    # process took the agent (or the backtest) down with a model that crashes (native code, os._exit, the
    # out-of-memory killer), which is what a pool is asked for. The workers live as long as the pool, so a
    # small batch costs a task's pickling, not a process start.
    pool.parallel_threshold = 1
    if eager:
        pool.submit(int).result()  # a fork pool starts all its workers at the first task: fork them here
    return pool


def _exit_with_parent(parent: int, death_signal: bool, poll_seconds: float = 0.5) -> None:
    """Worker initializer: exit as soon as ``parent`` (the process that made the pool) is gone; and leave
    Ctrl-C to the parent (a terminal sends SIGINT to the whole process group: each worker would print a
    traceback of its own, while the parent ends the pool itself when it stops). SIGTERM keeps its default
    action (a forked worker would otherwise inherit the agent's handler): Python's pool ends its workers
    with it when one of them died."""
    import os
    import signal
    import sys
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    launcher = os.getppid()
    if death_signal and sys.platform.startswith("linux") and launcher == parent:
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass  # the watchdog below still ends the worker

    def orphaned() -> bool:
        if os.getppid() != launcher:
            return True  # re-parented: the process that forked this worker is gone
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        return False

    def watch() -> None:
        while True:
            time.sleep(poll_seconds)
            if orphaned():
                os._exit(1)

    if orphaned():
        os._exit(1)
    threading.Thread(target=watch, daemon=True, name="mlma-parent-watch").start()


def _pool_broken(executor: Executor) -> bool:
    """Whether ``executor`` is a process pool that broke (a worker died: a crash in a model, out of memory, a
    kill): it takes no more work, and its owner replaces it (:func:`terminate_executor`, then a new one)."""
    return isinstance(executor, ProcessPoolExecutor) and bool(getattr(executor, "_broken", False))


def _submit(executor: Executor, fn, *args) -> Future:
    """``executor.submit``; a pool that broke earlier, or a cluster that went away, gives a failed future (its
    chunk fails, named, like the chunks a worker's death failed) instead of an error that stops the whole
    call."""
    try:
        return executor.submit(fn, *args)
    except Exception as exc:  # noqa: BLE001 - a broken pool, a cluster gone (a closed client): that chunk fails
        return _failed(exc)


def _failed(exc: BaseException) -> Future:
    """A future that failed with ``exc``: the outcome of a task that could not be sent."""
    failed: Future = Future()
    failed.set_exception(exc)
    return failed


def terminate_executor(executor: Executor) -> None:
    """Shut ``executor`` down without waiting for running work; a process pool's workers are killed.

    ``ProcessPoolExecutor.shutdown`` cannot stop a task that is running, so a hung fit would keep the
    process alive at exit; its worker processes are terminated instead (the pool is unusable afterwards).
    """
    if isinstance(executor, ProcessPoolExecutor):
        workers = list((executor._processes or {}).values())
        executor.shutdown(wait=False, cancel_futures=True)
        for process in workers:
            if process.is_alive():
                process.kill()
        for process in workers:
            process.join(timeout=5)
        # The pool's manager thread closes its wake-up pipe once it sees its workers gone; if the interpreter
        # exits meanwhile, CPython (3.11) writes to the closed pipe at exit and prints "Bad file descriptor".
        manager = getattr(executor, "_executor_manager_thread", None)
        if manager is not None:
            manager.join(timeout=5)
            # Still closing after that (a loaded machine: CI saw it once): the exit hook must not wake it, whose
            # check of the pipe and write race with the thread's close. The thread ends by itself (workers gone).
            concurrent.futures.process._threads_wakeups.pop(manager, None)
    elif hasattr(executor, "shutdown"):
        executor.shutdown(wait=False, cancel_futures=True)


def _is_dask_client(obj) -> bool:
    # Checked by name so that no Dask import is needed to recognise the other specs.
    return any(c.__name__ == "Client" and c.__module__.startswith("distributed") for c in type(obj).__mro__)


def _slots(executor: Executor) -> int:
    """How many chunks ``executor`` runs at once (1 when unknown, or when a cluster cannot be asked: its
    submissions then fail, each chunk named)."""
    if isinstance(executor, ProcessPoolExecutor):
        return executor._max_workers
    try:
        return max(1, int(getattr(executor, "slots", 1)))  # an executor may say how many (DaskExecutor does)
    except Exception:  # noqa: BLE001 - a cluster whose scheduler is gone: the chunks fail when submitted
        return 1


def executor_usable(executor: Executor | None) -> bool:
    """Whether ``executor`` can take work: not a process pool that broke, not a Dask executor whose client
    was closed (its scheduler was lost for good). An owner makes a new one otherwise."""
    if isinstance(executor, ProcessPoolExecutor):
        return not _pool_broken(executor)
    if isinstance(executor, DaskExecutor):
        return executor.usable
    return executor is not None


def split_chunks(jobs: list, chunk_size: int, min_chunks: int = 1) -> list[list]:
    """Cut ``jobs`` into chunks of at most ``chunk_size``, at least ``min_chunks`` of them, sizes within one.

    Even sizes keep the last chunk from being a straggler; ``min_chunks`` (the executor's parallel slots)
    keeps every worker busy when fewer than ``slots x chunk_size`` streams need a fit.

    Examples
    --------
    >>> [len(c) for c in split_chunks(list(range(100)), 64)]
    [50, 50]
    >>> [len(c) for c in split_chunks(list(range(10)), 64, min_chunks=4)]
    [3, 3, 2, 2]
    >>> split_chunks([], 64)
    []
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size!r}")
    if not jobs:
        return []
    n_chunks = min(len(jobs), max(math.ceil(len(jobs) / chunk_size), min_chunks))
    base, extra = divmod(len(jobs), n_chunks)
    chunks, start = [], 0
    for i in range(n_chunks):
        stop = start + base + (i < extra)
        chunks.append(jobs[start:stop])
        start = stop
    return chunks


def fleet_history(fleet: FleetData, streams, target_tick: int, window_ticks: int | None) -> FleetHistory:
    """The histories the models of ``streams`` forecast tick ``target_tick`` from, on the fleet's grid.

    Stream ``i``'s rows are what ``fleet.history(streams[i], target_tick - 1, window_ticks)`` gives (values in
    periods marked abnormal are NaN); their grid columns come from the fleet's own positions, so nothing is
    placed on a grid again.
    """
    streams = np.asarray(streams, dtype=np.int64)
    return fleet_history_shards(fleet, streams, target_tick, window_ticks, [np.arange(streams.size)])[0]


def fleet_history_shards(fleet: FleetData, streams, target_tick: int, window_ticks: int | None,
                         shards: list) -> list[FleetHistory]:
    """:func:`fleet_history` of ``streams``, cut into ``shards`` (lists of indexes into ``streams``): shard
    ``i`` is what ``fleet_history(fleet, streams, ...).take(shards[i])`` gives, on the same grid columns and
    width, but built shard by shard (:class:`HistoryGrid`).

    Why: the fleet-wide arrays of 10,000 hourly streams with a 28-day window are 50 MB each, and each fresh
    array that large is new memory from the kernel (page faults; with transparent huge pages, sometimes a
    compaction stall): that made the live tick's forecast several times slower than the backtest's. A
    shard's arrays (512 streams: about 3 MB) reuse the process's heap.
    """
    grid = HistoryGrid(fleet, streams, target_tick, window_ticks)
    return [grid.shard(shard) for shard in shards]


class HistoryGrid:
    """The grid columns the histories of ``streams`` sit on when forecasting ``target_tick``: column 0 is the
    earliest row of any of them (or the tick's first timestamp), the same for every shard of them.

    :meth:`shard` builds one shard's :class:`FleetHistory`. From a fleet built on a matrix
    (:meth:`FleetData.from_matrix`) it is a block of that matrix (:meth:`FleetHistory.on_grid`), with no
    flat rows; from a fleet of rows, the rows. Both give the same histories (the tests compare them).
    """

    def __init__(self, fleet: FleetData, streams, target_tick: int, window_ticks: int | None) -> None:
        self.fleet = fleet
        self.streams = streams = np.asarray(streams, dtype=np.int64)
        self.future = fleet.tick_timestamps(target_tick)  # checks that the tick is loaded
        j = int(target_tick) - fleet.tick_base
        self.future_position = np.arange(fleet.tick_grid_start[j], fleet.tick_grid_start[j + 1], dtype=np.int64)
        first, last = int(self.future_position[0]), None
        if fleet.matrix is not None:
            self.a, self.b = fleet.history_columns(int(target_tick) - 1, window_ticks)
            occupied = np.zeros(self.b - self.a, dtype=bool)
            for lo in range(0, streams.size, 4096):  # in chunks: a boolean temporary of the chunk's block
                occupied |= np.isfinite(fleet.matrix[streams[lo:lo + 4096], self.a:self.b]).any(axis=0)
            used = np.flatnonzero(occupied) + self.a + fleet.matrix_offset
            if used.size:
                first, last = min(first, int(used[0])), int(used[-1])
        else:
            self.hi = fleet.row_at_tick[streams, j]
            start_tick = fleet.tick_base if window_ticks is None else int(target_tick) - int(window_ticks)
            if start_tick <= fleet.tick_base:
                self.lo = fleet.offsets[streams]
            else:
                self.lo = fleet.row_at_tick[streams, start_tick - fleet.tick_base]
            self.counts = self.hi - self.lo
            some = self.counts > 0
            if some.any():
                first = min(first, int(fleet.grid_pos[self.lo[some]].min()))
                last = int(fleet.grid_pos[self.hi[some] - 1].max())
        self.first = first
        last_column = -1 if last is None else last - first
        self.width = max(last_column + 1, int(self.future_position[-1]) - first + 1 if self.future_position.size else 0)

    def shard(self, shard) -> FleetHistory:
        """The histories of ``streams[shard]``."""
        shard = np.asarray(shard, dtype=np.int64)
        fleet = self.fleet
        if fleet.matrix is not None:
            return self._block(self.streams[shard])
        c, start = self.counts[shard], self.lo[shard]
        offsets = np.zeros(shard.size + 1, dtype=np.int64)
        np.cumsum(c, out=offsets[1:])
        rows = np.arange(int(offsets[-1]), dtype=np.int64)
        rows += np.repeat(start - offsets[:-1], c)
        y = fleet.y[rows]
        y[fleet.row_abnormal[rows]] = np.nan
        column = fleet.grid_pos[rows]
        column -= self.first
        history = FleetHistory(fleet.ds[rows], y, offsets, column, self.future, self.future_position - self.first)
        history.width = self.width
        return history

    def _block(self, streams: np.ndarray) -> FleetHistory:
        fleet = self.fleet
        a = self.first - fleet.matrix_offset  # the first column in use (>= self.a when any is)
        n_history = max(self.b - a, 0)
        values = np.full((streams.size, self.width), np.nan)
        present = None
        if n_history:
            values[:, :n_history] = fleet.matrix[streams, a:self.b]
            abnormal = fleet.abnormal_matrix
            if abnormal is not None:  # a value in an abnormal period is a row with a NaN y
                marked = abnormal[streams, a:self.b]
                if marked.any():
                    present = np.zeros(values.shape, dtype=bool)
                    present[:, :n_history] = np.isfinite(values[:, :n_history])
                    values[:, :n_history][marked] = np.nan
        column_ds = fleet.timestamps_at(self.first + np.arange(self.width, dtype=np.int64))
        return FleetHistory.on_grid(values, column_ds, self.future, self.future_position - self.first, present)


def _predict_shard(models: list, history: FleetHistory) -> tuple[np.ndarray, dict[int, str]]:
    """Forecast one shard of streams (runs on a worker, so it takes and returns plain data): the forecasts
    and, by row, why a stream has none (:func:`~mlma.models.predict_fleet_isolated`)."""
    return predict_fleet_isolated(models, history)


class ForecastError(RuntimeError):
    """Forecasting failed for some streams; names them (``stream_ids``)."""

    def __init__(self, message: str, *, stream_ids: list[str]):
        super().__init__(message)
        self.stream_ids = stream_ids


#: The former name, when only a whole shard could fail.
ForecastShardError = ForecastError


def _shown(ids: list[str], most: int = 20) -> str:
    """Stream ids for a message: the first ``most``, then how many more."""
    return ", ".join(ids[:most]) + (f" and {len(ids) - most} more" if len(ids) > most else "")


@dataclass(frozen=True)
class FitFailure:
    """One stream's fit that failed: its model raised an error it does not fall back from (a bug in the model,
    ``sys.exit``), the fitted model cannot be pickled (mlma stores and ships models pickled), or, fitted alone,
    it hung or killed its worker. The other streams of its chunk keep their models. ``by_executor``: the
    executor failed it, not the stream's fit (:attr:`ModelService.executor_failures`)."""

    key: ModelKey
    error: str
    by_executor: bool = False


class _Overdue(TimeoutError):
    """A task not back within ``fit_timeout`` (:meth:`ModelService._result_by`), told apart from any other
    TimeoutError an executor may raise."""


def _killed_worker(error: BaseException) -> bool:
    """Whether ``error`` is Dask's ``KilledWorker``: the task's workers kept dying while they ran it (out of
    memory, a crash), up to ``distributed.scheduler.allowed-failures`` times. Told by name: no Dask import."""
    return type(error).__name__ == "KilledWorker"


def _why_not_started(executor: Executor) -> str:
    """Why a task had not started by its deadline: a Dask cluster without workers, else busy workers."""
    if isinstance(executor, DaskExecutor) and executor.n_workers == 0:
        return f"the Dask cluster at {executor.address} has no workers: start one with 'dask worker {executor.address}'"
    return "the workers were busy, with a fit that hung or with more fits than fit_timeout allows"


def _lost_by_executor(error: BaseException, executor: Executor) -> bool:
    """Whether a task's ``error`` is the executor's, not its fit's: a Dask cluster dropped the task (its scheduler
    was lost or restarted, another client cancelled it) or its client is closed or cut off. Told by name, as
    :func:`_killed_worker`: no Dask import."""
    if not isinstance(executor, DaskExecutor):
        return False
    return (isinstance(error, CancelledError) or type(error).__name__ in ("ClosedClientError", "CommClosedError")
            or not executor.usable)


def _in_suspect_order(jobs: list, suspects: dict[int, None]) -> list:
    """The jobs of ``suspects``' streams, in the suspects' order."""
    order = {stream: i for i, stream in enumerate(suspects)}
    return sorted((job for job in jobs if job[0].stream in order), key=lambda job: order[job[0].stream])


_KILLED_ALONE = ("; the stream was fitted alone to find it: its fit ends the workers that run it (out of memory, a "
                 "crash)")


def _fit_chunk(spec, ctx: ForecastContext, params: dict, jobs: list,
               pickled: bool = True) -> list[FittedModel | FitFailure]:
    """Fit one chunk of streams; runs inside a worker, so it takes and returns plain data.

    BLAS is held to one thread: parallelism comes from chunks, and small per-stream matrices run several
    times slower when BLAS threads compete for the same cores. One stream's error costs only that stream:
    when the chunk's call raises, each stream is fitted again alone; and when the models will be ``pickled``,
    each is pickled once here (about a thousandth of a fit's time), so that a model that cannot be is that
    stream's failure, not its chunk's (a pool pickles the chunk's result whole; the registry and the fit
    cache pickle every model they store).
    """
    with threadpool_limits(limits=1):
        try:
            # One call for the chunk: models that fit many streams at once (statsforecast) do so.
            outcomes = fit_forecasters(spec, ctx, [(ds, y, X) for _, ds, y, X in jobs], params=params)
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - a user's model: isolated to its stream below
            outcomes = [exc] if len(jobs) == 1 else [_fit_alone(spec, ctx, params, job) for job in jobs]
    return [_fitted_or_failure(job[0], o, pickled) for job, o in zip(jobs, outcomes, strict=True)]


def _fit_alone(spec, ctx: ForecastContext, params: dict, job: tuple):
    _, ds, y, X = job
    try:
        return fit_forecasters(spec, ctx, [(ds, y, X)], params=params)[0]
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the stream's own failure
        return exc


def _fitted_or_failure(key: ModelKey, outcome, pickled: bool) -> FittedModel | FitFailure:
    if isinstance(outcome, BaseException):
        return FitFailure(key, f"the model's fit raised {describe_error(outcome)}")
    try:
        if pickled:
            pickle.dumps(outcome.model, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as exc:  # noqa: BLE001 - any pickling error of a user's model
        return FitFailure(key, f"the fitted model cannot be pickled ({describe_error(exc)}); mlma stores and "
                               "ships models with pickle")
    return FittedModel(key, outcome.model, outcome.cpu_seconds, outcome.fallback_reason, outcome.n_train,
                       outcome.short_history)


class FitCache:
    """Fitted models on disk, so that backtests of the same data (other policies, other settings, a re-run)
    fit each model once across runs.

    A fit is stored under a digest of everything it depends on: the stream's id, its training window's
    timestamps and values, and its driver values for a model that uses drivers (the data fingerprint: any
    changed, added or masked row gives another key), the model spec and parameters, the forecast context
    (frequency, season, horizon, drivers), the versions of mlma and of
    numpy, scikit-learn and LightGBM, the source code of :mod:`mlma.models`, of a custom model's module and of
    the user's classes in its class's MRO and its estimator parameters' (not the standard library's or an
    installed package's), and a ``pickle:`` spec's file content. Not in the key (docs/backtest.md lists them):
    modules the model's code only imports, classes without a source file, an ``mlforecast:`` spec's function
    module, code edited while the process runs. The entry keeps the
    fit's measured CPU seconds, so a cached run charges each policy what the fit cost when it was made and
    gives the same results as an uncached one.

    Entries live in one SQLite file (``fits.sqlite``) in ``directory``; models are pickled, so only use a
    cache directory you trust. A model spec given as an object whose ``repr`` is not stable (it shows a
    memory address) cannot be addressed; such fits are not cached.

    Parameters
    ----------
    directory
        Folder of the cache (created if needed); share it between runs on the same data.
    """

    FILE = "fits.sqlite"

    def __init__(self, directory) -> None:
        import sqlite3
        from pathlib import Path

        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.directory / self.FILE, timeout=60)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS fits (key TEXT PRIMARY KEY, model BLOB NOT NULL)")
            self._db.commit()
        except (OSError, sqlite3.Error) as exc:
            raise ValueError(f"cannot use {self.directory} as a fit cache: {exc}") from exc

    def close(self) -> None:
        self._db.close()

    @staticmethod
    def context_digest(spec, ctx: ForecastContext, params: dict) -> str | None:
        """The part of every key that depends on the model, not the data; ``None`` if it cannot be stable."""
        import hashlib
        import json

        text = spec if isinstance(spec, str) else repr(spec)
        if " at 0x" in text:
            return None
        parts = {"spec": text, "params": repr(sorted((params or {}).items())), "ctx": repr(ctx),
                 "code": _model_code_digest(spec)}
        return hashlib.blake2b(json.dumps(parts, sort_keys=True).encode(), digest_size=20).hexdigest()

    @staticmethod
    def key(context: str, stream_id, ds: np.ndarray, y: np.ndarray, X: np.ndarray | None = None) -> str:
        """The address of one fit: the model's digest, the stream and its window's data (driver values
        ``X`` included, for a model that uses them)."""
        import hashlib

        h = hashlib.blake2b(context.encode(), digest_size=20)
        h.update(repr(stream_id).encode())
        h.update(np.ascontiguousarray(np.asarray(ds).astype("datetime64[ns]").view(np.int64)).tobytes())
        h.update(np.ascontiguousarray(np.asarray(y, dtype=np.float64)).tobytes())
        if X is not None:
            X = np.asarray(X, dtype=np.float64)
            h.update(repr(X.shape).encode())
            h.update(np.ascontiguousarray(X).tobytes())
        return h.hexdigest()

    def load(self, keys: list[str]) -> dict[str, tuple]:
        """Stored ``(model, seconds, fallback_reason, n_train, short_history)`` by key, for the keys present."""
        import pickle

        found: dict[str, tuple] = {}
        for start in range(0, len(keys), 500):
            batch = keys[start:start + 500]
            rows = self._db.execute(f"SELECT key, model FROM fits WHERE key IN ({','.join('?' * len(batch))})",
                                    batch).fetchall()
            for key, blob in rows:
                try:
                    found[key] = pickle.loads(blob)
                except Exception:  # noqa: BLE001 - an unreadable entry (e.g. another library version): refit
                    continue
        return found

    def store(self, entries: dict[str, tuple]) -> None:
        import pickle

        if not entries:
            return
        rows = [(key, pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)) for key, value in entries.items()]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO fits (key, model) VALUES (?, ?)", rows)


def _model_code_digest(spec) -> str:
    """A digest of the code a fit runs: mlma.models' sources, library versions, a custom model's module, the
    sources of its class and of the user's classes it derives from, and a ``pickle:`` spec's file content."""
    import hashlib
    import importlib.util
    from importlib import metadata

    h = hashlib.blake2b(digest_size=20)
    for name in ("mlma", "numpy", "scikit-learn", "lightgbm"):
        try:
            h.update(f"{name}={metadata.version(name)};".encode())
        except metadata.PackageNotFoundError:
            h.update(f"{name}=none;".encode())
    files = sorted(Path(__file__).with_name("models").glob("*.py"))
    if isinstance(spec, str) and spec.strip().startswith("pickle:"):
        # The spec names a file whose content is the model: the same path with new bytes is another model.
        path = Path(spec.strip()[len("pickle:"):].strip()).expanduser()
        try:
            h.update(b"pickle:" + hashlib.blake2b(path.read_bytes(), digest_size=20).digest())
        except OSError as exc:  # the fit will fail on it too; a later readable file gives another key
            h.update(f"pickle-unreadable:{type(exc).__name__}".encode())
    elif isinstance(spec, str) and ":" in spec:
        module = spec.split(":", 1)[1 if spec.startswith("sklearn:") else 0]
        module = module.rsplit(".", 1)[0] if spec.startswith("sklearn:") else module
        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            found = None
        if found is not None and found.origin and found.origin.endswith(".py"):
            files.append(Path(found.origin))
    files += _user_class_files(_spec_object(spec))
    # A file named twice (the spec's module is the class's) is hashed once.
    for path in dict.fromkeys(path.resolve() for path in files):
        h.update(path.name.encode())
        try:
            h.update(path.read_bytes())
        except OSError as exc:
            h.update(f"unreadable:{type(exc).__name__}".encode())
    return h.hexdigest()


def _spec_object(spec):
    """The object a model spec names (a class, an instance, a function), without fitting anything; ``None`` for
    a built-in, a Nixtla spec or one that does not load (its fits fail and are not cached)."""
    from mlma.models.adapters import import_object

    from mlma.model_names import BUILTIN_MODELS

    if not isinstance(spec, str):
        return spec
    key = spec.strip()
    if key.partition(":")[0].strip().lower().replace("_", "-") in BUILTIN_MODELS:
        return None  # 'ridge:alpha=2' names mlma's ridge with options, not a module 'ridge' to import
    try:
        if key.startswith("pickle:"):
            from mlma.models.factory import _unpickle

            # The model's class lives outside the pickle: its source is part of the fit too. _unpickle is the
            # factory's memoised loader (keyed by path and mtime), so the fits load the file no second time.
            path = Path(key[len("pickle:"):].strip()).expanduser().resolve()
            return _unpickle(str(path), path.stat().st_mtime_ns)
        if key.startswith("sklearn:"):
            path = key[len("sklearn:"):].strip()
            if ":" not in path and not path.startswith("sklearn.") and "." in path:
                try:
                    return import_object("sklearn." + path)
                except Exception:  # noqa: BLE001 - not scikit-learn's: the user's own path, tried below
                    pass
            return import_object(path)
        if key.startswith(("statsforecast:", "mlforecast:")) or ":" not in key:
            return None
        module, _, rest = key.partition(":")
        return import_object(f"{module}:{rest.partition(':')[0]}")
    except Exception:  # noqa: BLE001 - a spec that does not load fails its fits, which are never cached
        return None


def _user_class_files(obj) -> list[Path]:
    """Source files of ``obj``'s class (or of ``obj``, a class or function) and of every class in its MRO that
    is the user's: not the standard library's nor an installed package's (their versions are not ours to
    track, and hashing them would read half of site-packages); mlma's own are hashed already."""
    import inspect
    import site
    import sys
    import sysconfig

    if obj is None:
        return []
    if inspect.isclass(obj):
        owners = list(obj.__mro__)
    elif inspect.isfunction(obj):
        owners = [obj]
    else:
        owners = list(type(obj).__mro__)
        # A scikit-learn pipeline (or any estimator holding others) is an installed class around the user's
        # steps: the classes of its parameters' estimators are part of the fit too.
        params = obj.get_params(deep=True) if callable(getattr(obj, "get_params", None)) else {}
        for value in params.values() if isinstance(params, dict) else ():
            if hasattr(value, "fit") and not inspect.isclass(value):
                owners += list(type(value).__mro__)
    roots = [sysconfig.get_paths().get(key) for key in ("stdlib", "platstdlib", "purelib", "platlib")]
    roots += [*site.getsitepackages(), site.getusersitepackages()]
    installed = {Path(root).resolve() for root in roots if root}
    files = []
    for owner in owners:
        module = sys.modules.get(getattr(owner, "__module__", None) or "")
        origin = getattr(module, "__file__", None)
        if not origin or not origin.endswith(".py"):
            continue  # a built-in or compiled class: no source to read
        path = Path(origin).resolve()
        if any(path.is_relative_to(root) for root in installed):
            continue
        files.append(path)
    return files


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
        Where fits run (see :func:`make_executor`); the service does not shut it down.
    chunk_size
        Most streams in one unit of work. Fits are cut into even chunks, at least one per parallel slot of
        the executor (worker processes, or threads of a Dask cluster).
    parallel_threshold
        Fewer missing fits than this run inline; default: the executor's ``parallel_threshold`` attribute
        (1 for :class:`DaskExecutor`), else :data:`DEFAULT_PARALLEL_THRESHOLD`.
    fit_timeout
        Seconds one call of :meth:`fit` may wait for its chunks, the refits one stream per task after a worker's
        death included (``None``: no limit; a Dask worker's restart, :meth:`_abandon`, comes on top). Chunks not
        back in time count as failed, and their streams become :attr:`suspects`; see :attr:`timed_out`.
    fit_cache
        A :class:`FitCache` (or its directory) consulted before fitting and filled after: fits survive the
        run. Not for live operation, where each fit is new data.
    predict_chunk_size
        Most streams forecast in one fleet-wide call (:meth:`predict_many`); on an executor of several
        slots, the streams are cut into at least one shard per slot.
    window_steps
        The most grid steps ``n`` consecutive ticks hold (the agent's clock's
        :meth:`~mlma.calendar.TickClock.most_steps`), to refuse a training window too short for the model
        (:func:`mlma.models.check_train_window`); default ``n * ctx.horizon``, exact for ticks of one length.
    shard_forecasts
        Send the forecasts to the executor in shards when it has several slots. Default (None): on a Dask
        executor only; a local process pool forecasts slower than this process (the models and histories
        would be pickled to it and back).
    stores_models
        The caller pickles the fitted models (the live agent's registry): a model that cannot be pickled is
        then its stream's failed fit. Fits on a local pool, and with a fit cache, are checked anyway; an
        inline backtest keeps models in memory and does not need it.
    renew_executor
        For the owner of a process pool: ends the pool (broken: a worker died) and returns a fresh one, which
        the service then uses. With it, the streams of chunks a dead worker failed are fitted again one per
        task, so that only the stream that kills its worker fails (:meth:`_collect`).
    fit_suspects
        Streams (indices) whose next fits run one per task, put last (:attr:`suspects`): those the previous
        calls could not clear (a live agent keeps them in its state from tick to tick).
    driver_range_factor
        A forecast is not made from a future driver value further outside the stream's window than this many
        times its scale (:func:`mlma.data.range_bounds`; the project's ``[data] value_range_factor``, as ``y``
        is checked by at ingest); its stream's forecast fails, naming the driver and the value. 0: not checked.
    """

    def __init__(self, fleet: FleetData, spec, ctx: ForecastContext, *, train_window_ticks: int | None,
                 executor: Executor | None = None, chunk_size: int = 64, model_params: dict | None = None,
                 parallel_threshold: int | None = None, fit_timeout: float | None = None,
                 fit_cache: FitCache | str | None = None, predict_chunk_size: int = DEFAULT_PREDICT_CHUNK,
                 shard_forecasts: bool | None = None, window_steps: Callable[[int], int] | None = None,
                 stores_models: bool = False, renew_executor: Callable[[], Executor] | None = None,
                 driver_range_factor: float = 100.0, fit_suspects=()) -> None:
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size!r}")
        if isinstance(predict_chunk_size, bool) or not isinstance(predict_chunk_size, int) or predict_chunk_size < 1:
            raise ValueError(f"predict_chunk_size must be a whole number >= 1, got {predict_chunk_size!r}")
        self.predict_chunk_size = predict_chunk_size
        if shard_forecasts not in (None, True, False):
            raise ValueError(f"shard_forecasts must be True, False or None, got {shard_forecasts!r}")
        #: Whether forecasts go to the executor in shards (when it has several slots). By default only on a
        #: Dask cluster: a local process pool forecasts slower than this process, since the models and
        #: histories must be pickled to it and back (docs/benchmarks.md, bench_forecast.py).
        self.shard_forecasts = (isinstance(executor, DaskExecutor) if shard_forecasts is None
                                else shard_forecasts)
        self.fleet = fleet
        self.spec = spec
        self.ctx = ctx
        self.train_window_ticks = train_window_ticks
        self.executor = executor or InlineExecutor()
        self._inline = InlineExecutor()
        self.chunk_size = chunk_size
        self.model_params = model_params or {}
        self.stores_models = stores_models
        self.renew_executor = renew_executor
        # A spec no history can fix (unknown, not importable, a missing extra) fails here, naming it, rather
        # than as a fit failure of every stream.
        probe = make_forecaster(spec, ctx, **self.model_params)
        # So does a window the model can never be fitted on: every stream would serve a fall-back for ever.
        check_train_window(probe, ctx, train_window_ticks, name=spec_name(spec), steps_in=window_steps)
        if parallel_threshold is None:
            parallel_threshold = getattr(self.executor, "parallel_threshold", DEFAULT_PARALLEL_THRESHOLD)
        self.parallel_threshold = parallel_threshold
        if fit_timeout is not None and not 0 < fit_timeout <= MAX_FIT_TIMEOUT_SECONDS:  # NaN too
            raise ValueError(f"fit_timeout must be a number of seconds above 0 and at most "
                             f"{MAX_FIT_TIMEOUT_SECONDS:,} (30 days), or None for no limit, got {fit_timeout!r}")
        self.fit_timeout = fit_timeout
        self.driver_range_factor = float(driver_range_factor)
        #: Why the fit of a key failed, for keys :meth:`fit` gave up on (``on_error="skip"``).
        self.failures: dict[ModelKey, str] = {}
        #: The keys of :attr:`failures` the executor failed, not their streams' fits: the cluster dropped the
        #: task or cannot be reached, no worker can run mlma, or no worker took the task before ``fit_timeout``
        #: (none there, or all busy with other fits). The agent does not count them against the stream.
        self.executor_failures: set[ModelKey] = set()
        #: Why the forecast of ``(key, target_tick)`` failed, for forecasts :meth:`predict_many` gave up on.
        self.forecast_failures: dict[tuple[ModelKey, int], str] = {}
        #: Whether a fit ran past ``fit_timeout``: its worker may still be busy, so a process pool should
        #: be torn down rather than reused (see :func:`terminate_executor`).
        self.timed_out = False
        # Streams (indices) whose next fit runs in a task of its own, after the chunks (see suspects), in the
        # order they are sent: a dict for its order.
        self._suspects: dict[int, None] = dict.fromkeys(int(s) for s in fit_suspects)
        self._models: dict[ModelKey, FittedModel] = {}
        self._predictions: dict[tuple[ModelKey, int], np.ndarray] = {}
        # Counterfactual forecasts (predict_at_baseline) by (model, tick, event columns).
        self._baselines: dict[tuple, np.ndarray] = {}
        self.fits_done = 0
        #: Fits done on :attr:`executor` (not in this process, as calls with few fits are): that it ran any
        #: tells the agent it works again after :attr:`executor_failures`.
        self.fits_on_executor = 0
        #: Fits taken from :attr:`fit_cache` instead of being done.
        self.fits_cached = 0
        #: Fits (done or from the cache) that fell back to a simpler model, by cause
        #: (:func:`mlma.models.fallback_cause`): what a backtest's forecasts were really made by.
        self.fallbacks: collections.Counter[str] = collections.Counter()
        if fit_cache is not None and not isinstance(fit_cache, FitCache):
            fit_cache = FitCache(fit_cache)
        self.fit_cache = fit_cache
        self._cache_context = (FitCache.context_digest(spec, ctx, self.model_params)
                               if fit_cache is not None else None)
        # Drivers are looked up only for a model that uses them (BaseForecaster.uses_drivers).
        self.wants_drivers = bool(ctx.drivers) and model_uses_drivers(probe)
        #: Whether the fits depend on the fleet's prior of the drivers' effects (set_driver_prior).
        self.takes_driver_prior = self.wants_drivers and model_takes_driver_prior(probe)
        #: Future driver values missing at forecast time and filled by the fallback (see
        #: FleetData.future_driver_values), per target tick.
        self.driver_fills: dict[int, int] = {}
        #: The streams (indices) whose values of each future driver were filled, per target tick: the
        #: newest two target ticks only (a tick forecasts the next one), for :meth:`driver_fill_message`.
        self.driver_fill_streams: dict[int, dict[str, set[int]]] = {}

    @property
    def suspects(self) -> list[int]:
        """Streams (indices) whose next fit runs in a task of its own, sent after the chunks, in this order: they
        were in a chunk that ran past ``fit_timeout`` (which of its streams hung cannot be told), or their own fit
        hung or killed its worker, fitted alone (those go last: a task queued behind a hung fit on its worker
        would time out with it). Fitted alone, the healthy ones succeed (and leave the list) and only the culprit
        fails again; the fleet's other streams keep their chunks."""
        return list(self._suspects)

    def _suspect(self, streams, *, proven: bool = False) -> None:
        """Add ``streams`` to :attr:`suspects`: at the end if ``proven`` (fitted alone and failed: a culprit), else
        where they are (or at the end when new)."""
        for stream in streams:
            if proven:
                self._suspects.pop(int(stream), None)
            self._suspects.setdefault(int(stream))

    def set_driver_prior(self, prior) -> None:
        """Give the fits and forecasts from now on the fleet's estimate of the future drivers' effects
        (:attr:`ForecastContext.driver_prior`; None: none). A fit shrinks its drivers' effects toward it; a
        model already fitted keeps its own estimates of the drivers its window saw vary and forecasts the
        others with this prior (:meth:`~mlma.models.BaseForecaster.for_context`), so the forecasts memoised
        under the previous prior are dropped. The fit cache keys follow the context, so a fit made under
        another prior is not served from it."""
        prior = None if prior is None else tuple(float(v) for v in prior)
        old = self.ctx.driver_prior
        # NaN (no estimate yet for a driver) equals NaN here: an unchanged prior keeps the context, the
        # cache's digest of it and the memoised forecasts.
        if (prior is None) == (old is None) and (prior is None or np.array_equal(prior, old, equal_nan=True)):
            return
        self.ctx = dataclasses.replace(self.ctx, driver_prior=prior)
        self._predictions.clear()
        self._baselines.clear()
        if self.fit_cache is not None:
            self._cache_context = FitCache.context_digest(self.spec, self.ctx, self.model_params)

    def refit(self, keys: list[ModelKey]) -> list[FittedModel | None]:
        """Fit ``keys`` again under the current context (a new :meth:`set_driver_prior`), replacing their
        models; a key whose new fit fails, or falls back to a simpler model where the first fit did not, keeps
        its model and gives None."""
        old = {k: self._models.pop(k) for k in dict.fromkeys(keys) if k in self._models}
        for memo in (self._predictions, self._baselines):  # one pass over each memo, not one per key
            for cached in [c for c in memo if c[0] in old]:
                del memo[cached]
        fitted = self.fit(keys, on_error="skip")
        for i, fm in enumerate(fitted):
            first = old.get(fm.key) if fm is not None else None
            if first is not None and fm.fallback_reason is not None and first.fallback_reason is None:
                self._models[fm.key] = first  # the prior cost the fit its model: the first fit stands
                fitted[i] = None
        for key, model in old.items():
            self._models.setdefault(key, model)
        return fitted

    def fit(self, keys: list[ModelKey], *, on_error: str = "raise") -> list[FittedModel | None]:
        """Fitted models for ``keys``, fitting only those not fitted before.

        With ``on_error="skip"`` a chunk that fails (an error on the executor, a lost worker, a timeout)
        gives ``None`` for its keys, with the reason in :attr:`failures`, and the other chunks' models are
        returned.

        Raises
        ------
        ChunkFitError
            With ``on_error="raise"`` (default), when a chunk fails on the executor, naming the chunk's
            streams. The chunks that succeeded are kept, so a retry fits only what is still missing.
        """
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        missing = [k for k in dict.fromkeys(keys) if k not in self._models]
        if missing:
            jobs = []
            for key in missing:
                hist = self.fleet.history(key.stream, key.end_tick, self.train_window_ticks)
                X = self.fleet.driver_values(key.stream, hist.ds) if self.wants_drivers else None
                jobs.append((key, hist.ds, hist.y, X))
            jobs = self._from_cache(jobs)
        if missing and jobs:
            parallel = len(jobs) >= self.parallel_threshold
            if parallel and self.renew_executor is not None and _pool_broken(self.executor):
                self.executor = self.renew_executor()  # left broken (by a forecast's shard): fresh before the fits
            executor = self.executor if parallel else self._inline
            unfit = self._retire_unfit_workers(executor)  # before the chunks are cut by the cluster's threads
            alone = _in_suspect_order(jobs, self._suspects) if parallel and self._suspects else []
            if alone:
                # Last, so that no chunk waits behind one that hangs again (a pool takes its tasks in order).
                chunks = split_chunks([job for job in jobs if job[0].stream not in self._suspects], self.chunk_size,
                                      _slots(executor)) + [[job] for job in alone]
            else:
                chunks = split_chunks(jobs, self.chunk_size, _slots(executor) if parallel else 1)
            # Pickled on the way back from a local pool, into the fit cache, or into the live registry (a Dask
            # cluster ships them with cloudpickle, which takes more).
            pickled = isinstance(executor, ProcessPoolExecutor) or self.fit_cache is not None or self.stores_models
            futures = [_submit(executor, _fit_chunk, self.spec, self.ctx, self.model_params, chunk, pickled)
                       if unfit is None else _failed(RuntimeError(unfit)) for chunk in chunks]
            try:
                self._collect(chunks, futures, executor, pickled, unrunnable=unfit is not None)
            except ChunkFitError:
                if on_error == "raise":
                    raise
            finally:
                self._to_cache(jobs)
                if executor is not self._inline:
                    self.fits_on_executor += sum(job[0] in self._models for job in jobs)
        return [self._models.get(k) for k in keys] if on_error == "skip" else [self._models[k] for k in keys]

    def _from_cache(self, jobs: list) -> list:
        """Serve what the fit cache holds; return the jobs still to fit."""
        if self.fit_cache is None or self._cache_context is None:
            return jobs
        addresses = [FitCache.key(self._cache_context, self.fleet.ids[key.stream], ds, y, X)
                     for key, ds, y, X in jobs]
        found = self.fit_cache.load(addresses)
        left = []
        for job, address in zip(jobs, addresses):
            if address in found:
                self._hold(FittedModel(job[0], *found[address]))
                self.fits_cached += 1
            else:
                left.append(job)
        return left

    def _hold(self, model: FittedModel) -> None:
        """Keep a new fit (made now, or from the fit cache), counting it in :attr:`fallbacks` if it fell back."""
        self._models[model.key] = model
        cause = model.fallback_cause
        if cause is not None:
            self.fallbacks[cause] += 1

    def _to_cache(self, jobs: list) -> None:
        if self.fit_cache is None or self._cache_context is None:
            return
        entries = {}
        for key, ds, y, X in jobs:
            fm = self._models.get(key)
            if fm is not None:
                address = FitCache.key(self._cache_context, self.fleet.ids[key.stream], ds, y, X)
                entries[address] = (fm.model, fm.seconds, fm.fallback_reason, fm.n_train, fm.short_history)
        self.fit_cache.store(entries)

    def _collect(self, chunks: list[list], futures: list[Future], executor: Executor, pickled: bool = True, *,
                 unrunnable: bool = False) -> None:
        """Store every chunk's models; then raise for the first chunk that failed, naming its streams.

        One stream's trouble costs that stream only, as far as it can be told:

        - A worker that died (a crash in a model, out of memory) fails every chunk the pool had; a Dask chunk
          whose workers kept dying fails with ``KilledWorker``. Those chunks' streams are fitted again, one
          per task, by the same deadline (:meth:`_refit_alone`; on a pool only with ``renew_executor``), so
          that only the stream whose fit kills its worker fails (else the streams that share its chunk would
          fail with it at every tick). A single stream's chunk that alone ended with ``KilledWorker`` is that
          stream's doing; when others did too, it may only have waited on a worker the culprit killed, and is
          fitted again with them.
        - A chunk not back within ``fit_timeout`` cannot tell which of its streams hung: its streams become
          :attr:`suspects`, fitted one per task next time, and their error says they may only have shared a
          chunk with a fit that hung. A chunk that had not even started when the time ran out (it waited for a
          busy worker) suspects nobody. On Dask, the workers of abandoned tasks are restarted (:meth:`_abandon`).

        Failures that are the executor's, not the streams' (a chunk that had not started by the deadline, a task
        the cluster dropped, ``unrunnable``: no worker can run mlma), go to :attr:`executor_failures` too.
        """
        failures: list[tuple[list, BaseException]] = []
        not_theirs: set[ModelKey] = set()  # the first key of each chunk the executor failed
        alone: list[FitFailure] = []  # streams whose own fit failed, in chunks that came back
        overdue: list[tuple[list, Future]] = []
        deadline = None if self.fit_timeout is None else time.monotonic() + self.fit_timeout
        for chunk, future in zip(chunks, futures):
            try:
                fitted = self._result_by(future, deadline, "result", marks_timed_out=True, cancel=False)
                expected = [job[0] for job in chunk]
                if [f.key for f in fitted] != expected:
                    raise RuntimeError(f"the executor returned models for {len(fitted)} keys, not for the "
                                       f"chunk's {len(expected)}")
            except _Overdue:
                overdue.append((chunk, future))
                continue
            except (Exception, SystemExit) as exc:  # noqa: BLE001 - re-raised below with the chunk's streams
                failures.append((chunk, exc))
                if unrunnable or _lost_by_executor(exc, executor):
                    not_theirs.add(chunk[0][0])
                continue
            self._take(fitted, alone)
        if overdue:
            for chunk, exc, started in self._overdue_failures(overdue, executor):
                failures.append((chunk, exc))
                if not started:
                    not_theirs.add(chunk[0][0])
        died = [job for chunk, exc in failures if isinstance(exc, BrokenProcessPool) for job in chunk]
        if died and self.renew_executor is None:
            died = []  # a caller's pool: nobody to make another
        killed_chunks = [chunk for chunk, exc in failures if _killed_worker(exc)]
        unclear = len(killed_chunks) > 1 or any(len(chunk) > 1 for chunk in killed_chunks)
        killed = [job for chunk in killed_chunks for job in chunk] if unclear else []
        if died or killed:
            again = {job[0] for job in died + killed}
            failures = [(chunk, exc) for chunk, exc in failures if chunk[0][0] not in again]
            if died:
                self._take(self._refit_alone(died, pickled, deadline, pool=True), alone, clears=False)
            if killed:
                # Chunks that each held one stream already ran alone at once: fitted again one at a time.
                at_once = any(len(chunk) > 1 for chunk in killed_chunks)
                self._take(self._refit_alone(killed, pickled, deadline, pool=False, at_once=at_once), alone,
                           clears=False)
        errors = []
        for chunk, exc in failures:
            error = describe_error(exc)
            if isinstance(exc, CancelledError) and isinstance(executor, DaskExecutor):
                error += executor.why_cancelled()
            errors.append(error)
            if len(chunk) == 1 and _killed_worker(exc):
                self._suspect([chunk[0][0].stream], proven=True)  # its own fit ends its workers: alone, last
                error += _KILLED_ALONE
            for key, *_ in chunk:
                self.failures[key] = error
                if chunk[0][0] in not_theirs:
                    self.executor_failures.add(key)
        for failure in alone:
            self.failures[failure.key] = failure.error
            if failure.by_executor:
                self.executor_failures.add(failure.key)
        if alone and not failures:
            ids = [str(self.fleet.ids[f.key.stream]) for f in alone]
            shown = "; ".join(f"{uid}: {f.error}" for uid, f in zip(ids[:5], alone))
            raise ChunkFitError(f"the fit of {len(ids)} stream(s) failed: {shown}"
                                + (f"; and {len(ids) - 5} more" if len(ids) > 5 else ""),
                                stream_ids=ids, keys=[f.key for f in alone], failed_chunks=0)
        if failures:
            chunk, exc = failures[0]
            chunk_keys = [job[0] for job in chunk]
            ids = [str(self.fleet.ids[k.stream]) for k in chunk_keys]
            shown = ", ".join(ids[:20]) + (f" and {len(ids) - 20} more" if len(ids) > 20 else "")
            others = (f"; {len(failures) - 1} other chunk(s) of this call failed too" if len(failures) > 1
                      else "")
            raise ChunkFitError(
                f"fitting a chunk of {len(ids)} stream(s) on {type(executor).__name__} failed with "
                f"{errors[0]}; streams: {shown}{others}",
                stream_ids=ids, keys=chunk_keys, failed_chunks=len(failures),
            ) from exc

    def _retire_unfit_workers(self, executor: Executor) -> str | None:
        """On Dask, retire the workers that joined since the last look and cannot run this service's tasks (mlma
        not importable there: :meth:`DaskExecutor.retire_unfit_workers`), named in a warning. What is wrong when
        no worker can run them (then they are not sent: each worker would close at the first), else None."""
        if not isinstance(executor, DaskExecutor):
            return None
        problem, none_can = executor.retire_unfit_workers(
            _fit_chunk, _predict_shard, self.spec, self.ctx, self.model_params, ModelKey(0, 0),
            probe=functools.partial(make_forecaster, self.spec, self.ctx, **self.model_params))
        if problem is not None and not none_can:
            warnings.warn(problem, RuntimeWarning, stacklevel=3)
        return problem if none_can else None

    def _take(self, fitted: list[FittedModel | FitFailure], alone: list[FitFailure], *, clears: bool = True) -> None:
        """Keep the models of a chunk that came back (its streams are no suspects: ``clears``), or of single
        streams (:meth:`_refit_alone`, which said who is)."""
        for model in fitted:
            if clears:
                self._suspects.pop(model.key.stream, None)
            if isinstance(model, FitFailure):
                alone.append(model)
                continue
            self._hold(model)
            self.fits_done += 1

    def _overdue_failures(self, overdue: list[tuple[list, Future]],
                          executor: Executor) -> list[tuple[list, Exception, bool]]:
        """The errors of the chunks not back by the deadline, after giving up on them (:meth:`_abandon`), and
        whether each had started; the streams of those that had started become :attr:`suspects`."""
        started, places = self._abandon([future for _, future in overdue], executor)
        limit = f"no result within fit_timeout={self.fit_timeout:g} s"
        out = []
        for (chunk, _), began, where in zip(overdue, started, places):
            if not began:
                text = f"{limit}{where}: its chunk had not started ({_why_not_started(executor)})"
            elif len(chunk) == 1:
                text = f"{limit}{where} (fitted alone)"
            else:
                text = (f"{limit}{where}; the stream may only have shared its chunk of {len(chunk)} streams with a "
                        "fit that hung: its next fit runs alone to tell")
            if began:
                self._suspect([job[0].stream for job in chunk], proven=len(chunk) == 1)
            out.append((chunk, TimeoutError(text), began))
        return out

    def _result_by(self, future: Future, deadline: float | None, what: str, *, marks_timed_out: bool = False,
                   cancel: bool = True):
        """``future``'s result, waiting until ``deadline`` (``time.monotonic()``, from ``fit_timeout``; None: for
        as long as it takes); past it the call is cancelled (unless not ``cancel``: the caller gives up on it,
        :meth:`_abandon`) and :class:`_Overdue` (a TimeoutError) says no ``what`` came. A fit's call that ran
        over ``marks_timed_out``: its worker may still be busy (:attr:`timed_out`)."""
        if deadline is None:
            return future.result()
        try:
            return future.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            if cancel:
                future.cancel()
            self.timed_out |= marks_timed_out
            raise _Overdue(f"no {what} within fit_timeout={self.fit_timeout:g} s") from None

    def _abandon(self, futures: list[Future], executor: Executor) -> tuple[list[bool], list[str]]:
        """Give up on ``futures`` (not back by the deadline): cancel them, and say which had started and where, for
        their errors (on Dask: `` on Dask worker ADDRESS (restarted)``; else empty).

        A Dask worker keeps running a cancelled task to its end (a hung fit: for good) while the scheduler sees
        its thread free and sends it the next ticks' chunks and forecast shards, which then wait behind it: the
        workers that held the tasks given up on (running them, or holding them queued behind such work) are
        restarted through their nannies, named in a warning. On a pool a future that its worker took is
        ``running``; the owner ends the pool (:attr:`timed_out`)."""
        workers: list[str | None] = [None] * len(futures)
        if isinstance(executor, DaskExecutor):
            found = executor.placed(futures)
            # Not known (the scheduler cannot be asked): counted as started, so that a hung fit's chunk is split.
            started = [True] * len(futures) if found is None else [bool(f and f[1]) for f in found]
            # A task still waiting on its worker at the deadline waited behind work that ran past it there: an
            # abandoned one of this call, or of an earlier process (a tick stopped by Ctrl-C, an older mlma).
            workers = workers if found is None else [f and f[0] for f in found]
        else:
            started = [future.running() for future in futures]  # a pool's: handed to its workers
        for future in futures:
            future.cancel()
        stuck = sorted({w for w in workers if w})
        problem = None
        if stuck:
            problem = executor.restart_workers(stuck)
            said = ("restarted them so that later tasks do not wait behind the hung work" if problem is None else
                    f"they could not be restarted ({problem}): tasks sent there wait behind the abandoned work "
                    "until they are (restart them, or run 'dask worker' with its nanny)")
            warnings.warn(f"the Dask worker(s) {', '.join(stuck)} at {executor.address} held tasks given up on after "
                          f"fit_timeout={self.fit_timeout:g} s (a fit that hung, in this tick or an earlier one); "
                          f"{said}", RuntimeWarning, stacklevel=4)
        state = " (restarted)" if problem is None else " (not restarted)"
        return started, [f" on Dask worker {w}{state}" if w else "" for w in workers]

    def _refit_alone(self, jobs: list, pickled: bool, deadline: float | None, *,
                     pool: bool, at_once: bool = True) -> list[FittedModel | FitFailure]:
        """Fit ``jobs`` (the streams of chunks that a dying worker failed) one per task, at once, by ``deadline``:
        the call's own, so that ``fit_timeout`` bounds the whole call, the retries included. :attr:`suspects` go
        last, so that a fit that hung before does not hold a worker the others need.

        After a broken ``pool`` they run on pools of one worker each ("lanes"), as many at a time as the pool
        had workers: a fit that kills its worker breaks only its own lane (named exactly; the next job gets a
        new lane), and one that hangs holds only its own. A lane whose fit has run ten times longer than the
        typical fit of this retry (at least a second) no longer counts (up to four times as many lanes), so
        that a few hung fits do not starve the rest; every lane is ended at the return. On Dask
        (``KilledWorker``) all go at once to the cluster, whose scheduler retries each task on its own; when two
        or more of them end with ``KilledWorker``, those are fitted again one at a time, since Dask also blames
        a task that only waited on a worker behind the fit that killed it (``at_once=False``: the jobs already
        ran alone at once, so one at a time from the start). Those not back by the deadline fail with a
        TimeoutError."""
        if pool:
            return self._refit_round(jobs, pickled, deadline, pool=True, width=_slots(self.executor))[0]
        # A worker without mlma that joined during the call ends at each task it gets: it may be what killed
        # the chunks (KilledWorker), and would kill the single fits too, blaming their streams.
        unfit = self._retire_unfit_workers(self.executor)
        if unfit is not None:
            return [FitFailure(job[0], f"RuntimeError: {unfit}", by_executor=True) for job in jobs]
        if at_once:
            out, killed = self._refit_round(jobs, pickled, deadline, pool=False, width=len(jobs))
        else:
            out, killed = [], list(jobs)
        if len(killed) > 1:
            # The scheduler hands a worker more tasks than it has threads, and counts a worker's death against
            # every task it held, running or waiting: a stream queued behind the fit that kills its workers
            # ends with KilledWorker too. One task at a time (of this service), only a fit that kills alone does.
            unfit = self._retire_unfit_workers(self.executor)  # one that joined meanwhile kills every task
            again = {job[0] for job in killed}
            if unfit is not None:
                retried = [FitFailure(job[0], f"RuntimeError: {unfit}", by_executor=True) for job in killed]
            else:
                unsent = (f"{len(killed)} streams fitted alone at once ended with KilledWorker (a worker died "
                          "while it held their tasks), and the time left did not suffice to fit them again one "
                          "at a time to tell whose fit kills its workers")
                retried, _ = self._refit_round(killed, pickled, deadline, pool=False, width=1, unsent=unsent)
            out = [result for result in out if result.key not in again] + retried
        return out

    def _refit_round(self, jobs: list, pickled: bool, deadline: float | None, *, pool: bool, width: int,
                     unsent: str = "a worker died fitting its chunk, and the time left did not suffice to fit "
                                   "it again alone") -> tuple[list[FittedModel | FitFailure], list]:
        """One round of :meth:`_refit_alone`: ``jobs`` fitted one per task, ``width`` tasks at a time (more
        after a broken ``pool``, for lanes held by hung fits). Returns the results and the jobs whose worker
        died (on Dask: ``KilledWorker``); the jobs the deadline left unsent fail with ``unsent``, saying why
        they were fitted again."""
        out: list[FittedModel | FitFailure] = []
        killed: list = []
        queue = collections.deque([job for job in jobs if job[0].stream not in self._suspects]
                                  + _in_suspect_order(jobs, self._suspects))
        in_flight: dict[Future, tuple] = {}  # future: (job, its lane or None, when it was sent)
        lanes: list[Executor] = []
        idle: list[Executor] = []
        took: list[float] = []  # seconds of the single fits back so far
        try:
            while queue or in_flight:
                now = time.monotonic()
                stuck = 0
                if pool and took:
                    slow = max(1.0, 10 * float(np.median(took)))
                    stuck = sum(now - sent > slow for _, _, sent in in_flight.values())
                while (queue and len(in_flight) < min(width + stuck, 4 * width)
                       and (deadline is None or time.monotonic() < deadline)):
                    job, lane = queue.popleft(), None
                    if pool:
                        lane = idle.pop() if idle else _process_pool(1)
                        if lane not in lanes:
                            lanes.append(lane)
                    in_flight[_submit(lane if pool else self.executor, _fit_chunk, self.spec, self.ctx,
                                      self.model_params, [job], pickled)] = (job, lane, time.monotonic())
                if not in_flight:
                    break  # the time ran out before the rest could be sent
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if pool and queue:
                    left = 0.5 if left is None else min(left, 0.5)  # to look for lanes held by a hung fit
                done, _ = wait(in_flight, timeout=left, return_when=FIRST_COMPLETED)
                if not done and deadline is not None and time.monotonic() >= deadline:
                    break
                for future in done:
                    job, lane, sent = in_flight.pop(future)
                    took.append(time.monotonic() - sent)
                    if self._one_back(future, job, out):
                        if pool:
                            idle.append(lane)
                    else:
                        killed.append(job)
                        if pool:
                            terminate_executor(lane)  # broken; the next job gets a new lane
                            lanes.remove(lane)
            if in_flight or queue:  # only with a deadline
                limit = f"no result within fit_timeout={self.fit_timeout:g} s"
                self.timed_out |= bool(in_flight)
                started, where = self._abandon(list(in_flight), self.executor)
                # Counted against the streams, even those the deadline left unsent or unstarted: this round follows a
                # worker's death, and the stream whose fit kills its workers may be among them (taken for the
                # executor's, it would never be fitted alone nor escalated).
                for (job, _, _), began, at in zip(in_flight.values(), started, where):
                    if began:
                        self._suspect([job[0].stream], proven=True)
                    out.append(FitFailure(job[0], f"{limit}{at} (fitted alone)"))
                out += [FitFailure(job[0], f"{limit}: {unsent}") for job in queue]
        finally:
            for lane in lanes:
                terminate_executor(lane)  # also ends a fit that hangs in it
        return out, killed

    def _one_back(self, future: Future, job: tuple, out: list) -> bool:
        """Take the result of ``job``'s task (one stream) into ``out``; False when its worker died (then the
        stream's fit killed it, and it becomes a suspect)."""
        try:
            fitted = future.result()
            if [f.key for f in fitted] != [job[0]]:
                raise RuntimeError(f"the executor returned models for {len(fitted)} keys, not for the stream's")
            out += fitted
            self._suspects.pop(job[0].stream, None)
            return True
        except BrokenProcessPool:
            error = ("the worker process fitting it died (a crash in the model's native code, os._exit, or out of "
                     "memory); the stream was fitted alone to find it")
        except (Exception, SystemExit) as exc:  # noqa: BLE001 - the stream's own failure, or the cluster's
            error = describe_error(exc)
            if not _killed_worker(exc):
                self._suspects.pop(job[0].stream, None)
                out.append(FitFailure(job[0], error, by_executor=_lost_by_executor(exc, self.executor)))
                return True
            error += _KILLED_ALONE
        self._suspect([job[0].stream], proven=True)
        out.append(FitFailure(job[0], error))
        return False

    def get(self, key: ModelKey) -> FittedModel:
        return self._models[key]

    def fitted(self, key: ModelKey) -> FittedModel | None:
        """The model of ``key`` if the service holds it, else None."""
        return self._models.get(key)

    def predict(self, key: ModelKey, target_tick: int, context_ticks: int | None = None) -> np.ndarray:
        """Forecast tick ``target_tick`` with the model ``key``, using history up to that tick's start."""
        return self.predict_many([key], target_tick, context_ticks)[0]

    def predict_many(self, keys: list[ModelKey], target_tick: int, context_ticks: int | None = None, *,
                     on_error: str = "raise") -> np.ndarray:
        """Forecast tick ``target_tick`` with each model of ``keys``: a ``(len(keys), steps)`` array.

        The streams' histories are laid on the fleet's grid once (:func:`fleet_history_shards`) and each model class
        forecasts all its streams in one call (:meth:`~mlma.models.BaseForecaster.predict_many`, vectorised
        for seasonal-naive and ridge), in calls of at most ``predict_chunk_size`` streams. With an executor
        of more than one slot that takes forecasts (``shard_forecasts``: a Dask cluster) and at least
        ``parallel_threshold`` streams (and one per slot), the calls run there as shards, at least one per
        slot; a model that uses drivers is predicted here, one stream at a time, with its driver values and
        under the fleet's current prior (:meth:`set_driver_prior`, through the model's
        :meth:`~mlma.models.BaseForecaster.for_context`). Otherwise each stream's forecast is the one its
        model's own ``predict`` gives.

        One stream's failure costs only its own forecast (:func:`~mlma.models.predict_fleet_isolated`): a
        fleet-wide call that raises is repeated stream by stream, a forecast with NaN or infinite values
        or of the wrong length counts as failed, and a shard that fails on the executor (a lost worker) is
        forecast again in this process. With ``on_error="skip"`` a failed stream's row is NaN and the reason
        is in :attr:`forecast_failures`; a failed forecast is not memoised. A stream whose history holds no
        value may get NaN (no forecast) without that counting as a failure.

        Raises
        ------
        ForecastError
            With ``on_error="raise"`` (default), when some stream's forecast failed, naming the streams.
        """
        if on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        future = self.fleet.tick_timestamps(target_tick)
        window = context_ticks if context_ticks is not None else self.train_window_ticks
        out = np.empty((len(keys), future.size))
        errors: dict[int, str] = {}
        fleetwide: list[int] = []
        for i, key in enumerate(keys):
            cached = self._predictions.get((key, target_tick))
            if cached is not None:
                out[i] = cached
            elif self.wants_drivers and model_uses_drivers(self._models[key].model):
                try:
                    out[i] = self._predict_with_drivers(key, target_tick, window, future)
                except Exception as exc:  # noqa: BLE001 - one stream's failure is recorded, the others go on
                    out[i], errors[i] = np.nan, describe_error(exc)
            else:
                fleetwide.append(i)
        if fleetwide:
            models = [self._models[keys[i]].model for i in fleetwide]
            out[fleetwide], shard_errors = self._predict_shards(models, [keys[i] for i in fleetwide], target_tick,
                                                                window)
            errors |= {fleetwide[j]: text for j, text in shard_errors.items()}
        for i, key in enumerate(keys):
            if i in errors:
                out[i] = np.nan
                self.forecast_failures[(key, target_tick)] = errors[i]
            else:
                self._predictions[(key, target_tick)] = out[i]
        if errors and on_error == "raise":
            ids = [str(self.fleet.ids[keys[i].stream]) for i in sorted(errors)]
            first = errors[min(errors)]
            raise ForecastError(f"forecasting {len(ids)} of {len(keys)} stream(s) for tick {target_tick} failed; "
                                f"streams: {_shown(ids)}; first error: {first}", stream_ids=ids)
        return out

    def predict_at_baseline(self, keys: list[ModelKey], target_tick: int, columns: tuple[str, ...],
                            context_ticks: int | None = None) -> np.ndarray:
        """Counterfactual forecasts of tick ``target_tick``: each model of ``keys`` told that the future
        drivers ``columns`` (event drivers, :attr:`~mlma.models.Drivers.events`) are at their baseline 0, the
        other drivers as served. A ``(len(keys), steps)`` array, NaN rows for the streams that need none (a
        model without drivers, or every value of ``columns`` already 0 or unknown in the tick: the served
        forecast is the counterfactual) and for a counterfactual that fails (it only discounts the monitor's
        loss; the served forecast is unaffected). Only the streams with an event ahead pay a second forecast;
        it is memoised like the served ones (the agents of several policies in a backtest share champions)."""
        future = self.fleet.tick_timestamps(target_tick)
        out = np.full((len(keys), future.size), np.nan)
        if not self.wants_drivers or not columns:
            return out
        columns = tuple(columns)
        window = context_ticks if context_ticks is not None else self.train_window_ticks
        names = self.fleet.drivers.columns
        unknown = [c for c in columns if c not in self.fleet.drivers.future]
        if unknown:
            raise ValueError(f"{unknown} are not future drivers of this fleet (future drivers: "
                             f"{list(self.fleet.drivers.future)})")
        at = [names.index(c) for c in columns]
        for i, key in enumerate(keys):
            memo = (key, target_tick, columns)
            if memo in self._baselines:
                out[i] = self._baselines[memo]
                continue
            out[i] = self._baseline_forecast(key, target_tick, window, future, at)
            self._baselines[memo] = out[i].copy()
        return out

    def _baseline_forecast(self, key: ModelKey, target_tick: int, window: int | None, future: np.ndarray,
                           at: list[int]) -> np.ndarray:
        """One stream's forecast with the driver columns ``at`` set to 0; NaN when it needs none or fails."""
        none = np.full(future.size, np.nan)
        if not model_uses_drivers(self._models[key].model):
            return none
        future_X, _ = self.fleet.future_driver_values(key.stream, target_tick, self.ctx.season_length)
        if future_X is None:
            return none
        events = future_X[:, at]
        if not (np.isfinite(events) & (events != 0)).any():
            return none
        future_X[:, at] = 0.0
        try:
            return self._predict_with_drivers(key, target_tick, window, future, future_X)
        except Exception:  # noqa: BLE001 - no counterfactual: the stream's loss is not discounted
            return none

    def _count_fills(self, stream: int, target_tick: int, filled: np.ndarray) -> None:
        """Count a stream's filled future driver values (``filled``: per future driver) for ``target_tick``."""
        self.driver_fills[target_tick] = self.driver_fills.get(target_tick, 0) + int(filled.sum())
        if target_tick not in self.driver_fill_streams:
            for old in [t for t in self.driver_fill_streams if t < target_tick - 1]:
                del self.driver_fill_streams[old]  # a long live run keeps only what a tick's warning reads
        by_driver = self.driver_fill_streams.setdefault(target_tick, {})
        for name, n in zip(self.fleet.drivers.future, filled):
            if n:
                by_driver.setdefault(name, set()).add(int(stream))

    def driver_fill_message(self, target_tick: int, most: int = 5) -> str | None:
        """What the forecasts of ``target_tick`` filled (future driver values nobody sent), naming each driver
        and its streams (the first ``most``, then how many more); None when nothing was filled. A model that uses
        drivers asks for them stream by stream (:meth:`predict_many`), in this process, so every fill is seen here.
        """
        total = self.driver_fills.get(target_tick, 0)
        if not total:
            return None
        by_driver = self.driver_fill_streams.get(target_tick, {})
        named = "; ".join(f"{name} of {len(by_driver[name]):,} stream(s) "
                          f"({_shown([str(self.fleet.ids[s]) for s in sorted(by_driver[name])], most)})"
                          for name in self.fleet.drivers.future if name in by_driver)  # in the declared order
        return (f"{total:,} future driver value(s) for tick {target_tick} were not ingested (mlma ingest --future)"
                + (f": {named}" if named else "") + "; filled with the value a season earlier or the last known one")

    def _predict_with_drivers(self, key: ModelKey, target_tick: int, window: int | None,
                              future: np.ndarray, future_X: np.ndarray | None = None) -> np.ndarray:
        """Forecast with driver values: the history's, and ``future_X`` for the tick (default: the values in
        force, missing ones filled and counted in :attr:`driver_fills`)."""
        # Under the fleet's current prior: a driver the model's window never saw vary takes the fleet's latest
        # estimate, not the one of the model's fit. A model fitted before the project's drivers were re-ordered
        # or extended gets its own columns, by name (DriversChanged when one of them is gone).
        model = self._models[key].model
        view, columns = driver_view(model, self.ctx)
        model = model_for_context(model, view)
        hist = self.fleet.history(key.stream, target_tick - 1, window)
        X = self.fleet.driver_values(key.stream, hist.ds)
        if future_X is None:
            future_X, filled = self.fleet.future_driver_fills(key.stream, target_tick, self.ctx.season_length)
            if filled.any():
                self._count_fills(key.stream, target_tick, filled)
        if columns is not None:
            X, future_X = X[:, columns], future_X[:, columns]
        problem = _implausible_drivers(X, future_X, view.drivers.columns, future, self.driver_range_factor)
        if problem is not None:
            raise ValueError(problem)
        y_hat = np.asarray(model.predict(hist.ds, hist.y, future, X, future_X), dtype=np.float64)
        if y_hat.shape != future.shape:
            raise ValueError(f"model for stream {self.fleet.ids[key.stream]!r} returned {y_hat.shape[0]} "
                             f"forecasts for {future.shape[0]} timestamps")
        problem = unusable_forecast(y_hat, hist.y)
        if problem is not None:
            raise ValueError(f"{type(model).__name__} {problem}")
        return y_hat

    def _predict_shards(self, models: list, keys: list[ModelKey], target_tick: int,
                        window: int | None) -> tuple[np.ndarray, dict[int, str]]:
        """Fleet-wide forecasts of ``models`` (of the streams of ``keys``), in shards (on the executor when it
        has several slots), with the reason by row for the streams whose forecast failed.

        Each shard's histories are built for that shard alone (:func:`fleet_history_shards`), on the grid
        the whole fleet's would have. Inside a shard each stream's failure is its own
        (:func:`predict_fleet_isolated`). A shard that fails as a whole on the executor (a lost worker, a
        model that cannot be sent there) is forecast again in this process, so that the tick does not depend
        on the cluster's health; a warning names its streams. So is one still not back ``fit_timeout`` seconds
        after the shards were sent (on Dask its worker is then restarted: it may be held by an earlier fit that
        hung, :meth:`_abandon`); and after a fit ran past ``fit_timeout`` the shards are not sent at all: its
        worker may still be busy (a cluster cannot stop a running task), and they would wait behind it.
        """
        slots = _slots(self.executor)
        parallel = (self.shard_forecasts and not self.timed_out and slots > 1
                    and len(models) >= max(self.parallel_threshold, slots)
                    and self._retire_unfit_workers(self.executor) is None)  # else made here, not sent in vain
        executor = self.executor if parallel else self._inline
        shards = split_chunks(list(range(len(models))), self.predict_chunk_size, slots if parallel else 1)
        grid = HistoryGrid(self.fleet, [key.stream for key in keys], target_tick, window)
        # In this process one shard's histories at a time: all of them at once would be the fleet's window again.
        parts = [grid.shard(shard) for shard in shards] if parallel else None
        futures = ([_submit(executor, _predict_shard, [models[i] for i in shard], part)
                    for shard, part in zip(shards, parts)] if parallel else None)
        out = np.full((len(models), self.fleet.steps_in_tick(target_tick)), np.nan)
        errors: dict[int, str] = {}
        deadline = None if self.fit_timeout is None else time.monotonic() + self.fit_timeout
        overdue: list[Future] = []
        for n_shard, shard in enumerate(shards):
            part = parts[n_shard] if parallel else grid.shard(shard)
            try:
                if parallel:
                    try:
                        values, shard_errors = self._result_by(futures[n_shard], deadline, "forecasts", cancel=False)
                    except _Overdue as exc:
                        overdue.append(futures[n_shard])
                        raise TimeoutError(str(exc)) from None  # said as the TimeoutError it is
                else:
                    values, shard_errors = executor.submit(_predict_shard, [models[i] for i in shard], part).result()
            except Exception as exc:  # noqa: BLE001 - the shard as a whole: forecast it here instead
                ids = [str(self.fleet.ids[keys[i].stream]) for i in shard]
                warnings.warn(f"forecasting a shard of {len(ids)} stream(s) on {type(executor).__name__} failed "
                              f"with {describe_error(exc)}; forecasting them in this process. Streams: "
                              f"{_shown(ids)}", RuntimeWarning, stacklevel=4)
                try:
                    values, shard_errors = _predict_shard([models[i] for i in shard], part)
                except Exception as again:  # noqa: BLE001 - nothing left to try: the shard's streams fail
                    values = np.full((len(shard), part.future.size), np.nan)
                    shard_errors = {j: describe_error(again) for j in range(len(shard))}
            out[shard] = values
            errors |= {shard[j]: text for j, text in shard_errors.items()}
        if overdue:
            self._abandon(overdue, executor)  # a Dask worker still busy (an earlier hung fit?) is restarted
        return out, errors

    def forecast_failures_of(self, keys: list[ModelKey], target_tick: int) -> dict[int, str]:
        """Why the forecasts of ``target_tick`` by ``keys`` failed, by position in ``keys`` (those that did)."""
        failures = self.forecast_failures
        return {i: failures[(key, target_tick)] for i, key in enumerate(keys) if (key, target_tick) in failures}

    def forget(self, keep: set[ModelKey], tick: int) -> None:
        """Drop models no agent uses any more and predictions for past ticks, to bound memory."""
        self._models = {k: v for k, v in self._models.items() if k in keep or k.end_tick >= tick - 1}
        self._predictions = {k: v for k, v in self._predictions.items() if k[1] > tick}
        self._baselines = {k: v for k, v in self._baselines.items() if k[1] > tick}
        self.forecast_failures = {k: v for k, v in self.forecast_failures.items() if k[1] > tick}
