"""Failures of a real Dask cluster's workers: one that joins without mlma, a tick stopped by Ctrl-C. Worker
processes are real (a LocalCluster's, or ``dask worker`` processes); the tests wait on conditions with generous
limits, not on timings."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from mlma.data import make_tick_grid
from mlma.fleet import FleetData
from mlma.models import ForecastContext, RidgeForecaster
from mlma.simulate import simulate_platform
from mlma.training import ChunkFitError, DaskExecutor, ModelKey, ModelService, make_executor, terminate_executor

distributed = pytest.importorskip("distributed", reason="dask[distributed] is not installed (pip install "
                                  "'mlma[dask]'); the cluster failure tests need real workers")

CTX = ForecastContext("h", season_length=24, horizon=24)
END_TICK = 15


@pytest.fixture(scope="module")
def fleet() -> FleetData:
    frame = simulate_platform(8, 17, seed=3).data
    grid = make_tick_grid(frame, "1D", freq="h")
    return FleetData(frame, "h", grid.boundaries)


@pytest.fixture(scope="module", autouse=True)
def _lost_workers_are_not_closed_while_restarting():
    """A LocalCluster closes the nanny of a worker that left ``lost-worker-timeout`` before if none of its name is
    back at that instant (see tests/test_dask.py): kept away from the workers these tests restart."""
    import dask

    with dask.config.set({"distributed.deploy.lost-worker-timeout": "1h"}):
        yield


def _keys(fleet: FleetData) -> list[ModelKey]:
    return [ModelKey(s, END_TICK) for s in range(fleet.n_streams)]


def _local_cluster(n_workers: int, **options):
    return distributed.LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                                    dashboard_address=None, silence_logs=logging.CRITICAL, **options)


def _wait_for(condition, what: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:g} s"
        time.sleep(0.1)


# -- a worker without mlma ----------------------------------------------------------------------------------------


def _start_worker_without_mlma(address: str, tmp_path: Path) -> subprocess.Popen:
    """A ``dask worker`` process (with its nanny) that cannot import mlma, as one started from an environment
    without it: a preload module blocks the import in the worker process."""
    hide = tmp_path / "without_mlma.py"
    hide.write_text("import sys\n\nsys.modules['mlma'] = None  # 'import mlma' now fails, as where it is missing\n")
    log = open(tmp_path / "worker-without-mlma.log", "w")  # noqa: SIM115 - the process holds it until it ends
    return subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1",
                             "--name", "without-mlma", "--preload", str(hide)], stdout=log, stderr=log)


def _address_of(client, name: str) -> str:
    return next(a for a, info in client.scheduler_info()["workers"].items() if info["name"] == name)


def _end(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def test_a_worker_that_joins_without_mlma_is_retired_named_and_the_fits_run_on_the_others(fleet, tmp_path):
    """A worker without mlma joining after the executor was made (connect checks only the workers there then)
    closed at the first task it got, each time counted against the task, and nobody was told which worker or
    why. It is now retired before any task reaches it, named in a warning, and every stream gets its model."""
    keys = _keys(fleet)
    inline = ModelService(fleet, RidgeForecaster, CTX, train_window_ticks=14)
    inline.fit(keys)
    with _local_cluster(1) as cluster, distributed.Client(cluster, set_as_default=False) as client:
        executor = DaskExecutor(client)
        assert executor.submit(sum, [1, 2]).result(timeout=60) == 3  # made, and in use, before the worker joins
        worker = _start_worker_without_mlma(cluster.scheduler_address, tmp_path)
        try:
            client.wait_for_workers(2, timeout=90)
            bad = _address_of(client, "without-mlma")
            service = ModelService(fleet, RidgeForecaster, CTX, train_window_ticks=14, executor=executor,
                                   chunk_size=1, fit_timeout=300)
            said = (rf"mlma is not importable on Dask worker\(s\) {bad} at tcp://\S+, or cannot unpickle mlma's "
                    r"tasks or build the model there \(\S+: ModuleNotFoundError: No module named 'mlma.*\); "
                    r"retired them")
            with pytest.warns(RuntimeWarning, match=said):
                fitted = service.fit(keys)
            assert worker.wait(timeout=90) is not None  # retired: the process ended with its nanny
            assert list(client.nthreads()) != [bad] and bad not in client.nthreads()
            assert [model.key for model in fitted] == keys
            np.testing.assert_allclose(service.predict_many(keys, END_TICK + 1),
                                       inline.predict_many(keys, END_TICK + 1))
        finally:
            _end(worker)


def test_a_worker_without_mlma_there_at_connect_is_retired_and_the_fits_run_on_the_others(fleet, tmp_path):
    """One worker without mlma present when the agent connected failed the connection, so every tick of the whole
    fleet, for as long as that worker stayed. It is said in a warning, retired before the first fit, and every
    stream gets its model from the healthy worker."""
    keys = _keys(fleet)
    with _local_cluster(1) as cluster, distributed.Client(cluster, set_as_default=False) as client:
        worker = _start_worker_without_mlma(cluster.scheduler_address, tmp_path)
        try:
            client.wait_for_workers(2, timeout=90)
            bad = _address_of(client, "without-mlma")
            with pytest.warns(RuntimeWarning, match=rf"1 of 2 Dask workers at \S+ cannot run mlma \(first: {bad}: "
                                                    r".*they are retired before any fit is sent"):
                executor = DaskExecutor.connect(cluster.scheduler_address, timeout=30)
            try:
                service = ModelService(fleet, RidgeForecaster, CTX, train_window_ticks=14, executor=executor,
                                       chunk_size=1, fit_timeout=300)
                with pytest.warns(RuntimeWarning, match=rf"worker\(s\) {bad} .*retired them"):
                    fitted = service.fit(keys)
                assert [model.key for model in fitted] == keys
                assert worker.wait(timeout=90) is not None  # retired: the process ended with its nanny
            finally:
                executor.shutdown()
        finally:
            _end(worker)


def test_fits_fail_at_once_naming_the_workers_when_no_worker_can_import_mlma(fleet, tmp_path):
    """A cluster whose workers were all replaced by ones without mlma (after the executor connected) left the fits
    waiting for fit_timeout, then failing as chunks that "had not started (the workers were busy)": the tick waited
    for nothing and the error blamed the wrong thing. They now fail at once, naming the worker and the cause; the
    worker is kept (the trouble is the cluster's environment) and checked again at the next call."""
    keys = _keys(fleet)
    with _local_cluster(0) as cluster, distributed.Client(cluster, set_as_default=False) as client:
        worker = _start_worker_without_mlma(cluster.scheduler_address, tmp_path)
        try:
            client.wait_for_workers(1, timeout=90)
            bad = _address_of(client, "without-mlma")
            service = ModelService(fleet, RidgeForecaster, CTX, train_window_ticks=14, executor=DaskExecutor(client),
                                   fit_timeout=60)
            started = time.monotonic()
            with pytest.raises(ChunkFitError) as caught:
                service.fit(keys)
            assert time.monotonic() - started < 50  # not fit_timeout later
            said = str(caught.value)
            assert f"failed with RuntimeError: mlma is not importable on Dask worker(s) {bad} at " in said, said
            assert "no worker of the cluster can run the fits: install this mlma" in said, said
            assert set(service.failures) == set(keys)
            assert worker.poll() is None and bad in client.nthreads()
        finally:
            _end(worker)


# -- Ctrl-C during a tick -----------------------------------------------------------------------------------------


class Sleepy(RidgeForecaster):
    """Ridge whose fit takes five minutes: still running on its worker long after the test."""

    def fit(self, ds, y, X=None):
        time.sleep(300)
        return super().fit(ds, y, X)


def _executing(client) -> list:
    """Tasks each worker is running (an error for a worker that is restarting)."""
    return list(client.run(lambda dask_worker: len(dask_worker.state.executing), on_error="return").values())


def test_after_ctrl_c_the_workers_running_the_ticks_fits_are_restarted_at_shutdown(fleet):
    """Ctrl-C stops the tick, and its owner (the live agent, a backtest) ends the executor; the cluster cancelled
    the tasks but its workers kept running the fits (Dask cannot stop a running task), burning their CPU into the
    next ticks. The workers running them are now restarted, named in a warning."""
    with _local_cluster(2) as cluster, distributed.Client(cluster, set_as_default=False) as watcher:
        watcher.wait_for_workers(2, timeout=90)
        executor = make_executor(cluster.scheduler_address)  # owned and ended, as the agent's and the backtest's
        # A time limit, so that a Ctrl-C that does not arrive fails the test instead of hanging it on the sleeps.
        service = ModelService(fleet, Sleepy, CTX, train_window_ticks=14, executor=executor, fit_timeout=240)
        main = threading.main_thread().ident
        problems = []

        def press_ctrl_c() -> None:
            # Ctrl-C is pressed whatever happens: a fit of Sleepy never ends on its own within the test's time.
            try:
                _wait_for(lambda: sum(n for n in _executing(watcher) if isinstance(n, int)) >= 1,
                          "the fits never started")
            except Exception as exc:  # noqa: BLE001 - said by the test, after the Ctrl-C
                problems.append(f"{type(exc).__name__}: {exc}")
            finally:
                signal.pthread_kill(main, signal.SIGINT)

        presser = threading.Thread(target=press_ctrl_c, daemon=True)
        # Ctrl-C raises KeyboardInterrupt, as in a terminal: a process started in the background by a
        # non-interactive shell (a CI job) inherits SIGINT ignored, and Python then keeps ignoring it.
        interrupt = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            presser.start()
            with pytest.raises(KeyboardInterrupt):
                service.fit(_keys(fleet))
            presser.join()
        finally:
            signal.signal(signal.SIGINT, interrupt)
        assert not problems, problems
        # One worker or both: the scheduler may have queued both chunks on one of them.
        said = (r"the Dask worker\(s\) tcp://\S+(, tcp://\S+)? at tcp://\S+ were running calls cancelled at "
                r"shutdown \(a tick stopped by Ctrl-C or an error\); restarted them")
        with pytest.warns(RuntimeWarning, match=said):
            terminate_executor(executor)  # what the owners do after Ctrl-C (LiveAgent.close, run_backtest)
        _wait_for(lambda: len(watcher.nthreads()) == 2 and _executing(watcher) == [0, 0],
                  "the workers still run the fits of the stopped tick", timeout=120)


def test_a_worker_without_the_users_model_module_is_retired_before_it_fails_fits(fleet, tmp_path, monkeypatch):
    """mlma imports, the tasks unpickle (the spec is text), but the user's model module is not installed on one
    worker: every fit it got failed with ModuleNotFoundError, counted against the streams. The worker check now
    builds an unfitted model of the spec there too, so it is retired, named, and every stream gets its model."""
    (tmp_path / "fleetmodels.py").write_text(
        "from mlma.models import RidgeForecaster\n\n\nclass ZoneRidge(RidgeForecaster):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))  # the LocalCluster's worker processes import it too
    keys = _keys(fleet)
    with _local_cluster(1) as cluster, distributed.Client(cluster, set_as_default=False) as client:
        executor = DaskExecutor(client)
        assert executor.submit(sum, [1, 2]).result(timeout=60) == 3
        hide = tmp_path / "without_models.py"
        hide.write_text("import sys\n\nsys.modules['fleetmodels'] = None  # not installed on this worker\n")
        log = open(tmp_path / "worker-without-models.log", "w")  # noqa: SIM115 - the process holds it
        worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", cluster.scheduler_address,
                                   "--nthreads", "1", "--name", "without-models", "--preload", str(hide)],
                                  stdout=log, stderr=log)
        try:
            client.wait_for_workers(2, timeout=90)
            bad = _address_of(client, "without-models")
            service = ModelService(fleet, "fleetmodels:ZoneRidge", CTX, train_window_ticks=14, executor=executor,
                                   chunk_size=1, fit_timeout=300)
            said = rf"worker\(s\) {bad} at tcp://\S+, or cannot unpickle mlma's tasks or build the model there"
            with pytest.warns(RuntimeWarning, match=said):
                fitted = service.fit(keys)
            assert worker.wait(timeout=90) is not None and bad not in client.nthreads()
            assert [model.key for model in fitted] == keys and not service.failures
        finally:
            _end(worker)
