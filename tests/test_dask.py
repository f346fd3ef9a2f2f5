"""Re-training on a real Dask cluster: a LocalCluster of two worker processes, one thread each.

Checks that fits through Dask equal inline fits, that a backtest on ``dask://`` gives the inline result and
closes its client, that a chunk's data travels as one task, that a worker killed mid-chunk loses and
duplicates no re-training, and that a chunk that fails names its streams.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import signal
import sys
import threading
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from mlma.backtest import BacktestConfig, run_backtest
from mlma.data import make_tick_grid
from mlma.fleet import FleetData
from mlma.models import ForecastContext, RidgeForecaster
from mlma.simulate import simulate_platform
from mlma.training import (
    ChunkFitError,
    DaskExecutor,
    ExecutorUnavailableError,
    InlineExecutor,
    ModelKey,
    ModelService,
    make_executor,
    split_chunks,
)

try:
    import distributed
except ImportError:  # pragma: no cover - depends on the environment
    distributed = None
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail("dask[distributed] is not importable, but CI must run the cluster tests: "
                    "install mlma[dask] (the dev extra includes it)", pytrace=False)

needs_dask = pytest.mark.skipif(distributed is None, reason="dask[distributed] is not installed "
                                "(pip install 'mlma[dask]'); the Dask executor tests need a LocalCluster")

CTX = ForecastContext("h", season_length=24, horizon=24)
END_TICK = 15  # ridge needs 9 days of hourly history; 16 days leave room and one tick to forecast


class SlowRidge(RidgeForecaster):
    """Ridge that takes ``delay`` seconds per fit and leaves ``started-``/``done-`` files naming its process.

    The files tell the test which worker process is in the middle of a fit, and afterwards whether a fit
    was cut short.
    """

    def __init__(self, ctx: ForecastContext, marker_dir: str | None = None, delay: float = 0.0, **options):
        super().__init__(ctx, **options)
        self.marker_dir, self.delay = marker_dir, delay

    def fit(self, ds, y, X=None):
        tag = f"{os.getpid()}-{uuid.uuid4().hex}"
        if self.marker_dir:
            Path(self.marker_dir, f"started-{tag}").touch()
        time.sleep(self.delay)
        fitted = super().fit(ds, y, X)
        if self.marker_dir:
            Path(self.marker_dir, f"done-{tag}").touch()
        return fitted


class FailingRidge(RidgeForecaster):
    """Ridge that raises for histories whose mean exceeds ``fail_above``: an error no fallback covers."""

    def __init__(self, ctx: ForecastContext, fail_above: float = np.inf, **options):
        super().__init__(ctx, **options)
        self.fail_above = fail_above

    def fit(self, ds, y, X=None):
        if np.nanmean(y) > self.fail_above:
            raise RuntimeError(f"refusing a history with mean {np.nanmean(y):.3f}")
        return super().fit(ds, y, X)


# -- fixtures -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fleet() -> FleetData:
    frame = simulate_platform(8, 17, seed=3).data
    grid = make_tick_grid(frame, "1D", freq="h")
    return FleetData(frame, "h", grid.boundaries)


@pytest.fixture(scope="module")
def cluster():
    if distributed is None:
        pytest.skip("dask[distributed] is not installed (pip install 'mlma[dask]')")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=logging.CRITICAL) as local:
        yield local


@pytest.fixture()
def client(cluster):
    with distributed.Client(cluster, set_as_default=False) as c:
        c.wait_for_workers(2, timeout=60)  # a worker killed by an earlier test is restarted by its nanny
        yield c


def _fit_chunk_tasks(dask_scheduler) -> int:
    """Distinct ``_fit_chunk`` tasks the scheduler has seen (runs on the scheduler)."""
    return len({entry[0] for entry in dask_scheduler.transition_log
                if isinstance(entry[0], str) and entry[0].startswith("_fit_chunk-")})


def _n_clients(dask_scheduler) -> int:
    return len([c for c in dask_scheduler.clients if c != "fire-and-forget"])


def _keys(fleet: FleetData) -> list[ModelKey]:
    return [ModelKey(s, END_TICK) for s in range(fleet.n_streams)]


def _predictions(service: ModelService, keys: list[ModelKey]) -> np.ndarray:
    return np.stack([service.predict(k, END_TICK + 1) for k in keys])


# -- tests ----------------------------------------------------------------------------------------------


def test_missing_dask_is_a_clear_error_naming_address_and_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # makes `from distributed import ...` fail
    with pytest.raises(ExecutorUnavailableError, match=r"scheduler-host:8786.*mlma\[dask\]"):
        make_executor("dask://scheduler-host:8786")


def test_unknown_or_empty_specs_are_rejected():
    with pytest.raises(ValueError, match="names no scheduler"):
        make_executor("dask://")
    with pytest.raises(ValueError, match="process:zero"):
        make_executor("process:zero")
    with pytest.raises(ValueError, match="got int"):
        make_executor(8786)


@needs_dask
def test_unreachable_scheduler_is_a_clear_error_naming_the_address():
    started = time.perf_counter()
    with pytest.raises(ExecutorUnavailableError, match=r"tcp://127\.0\.0\.1:9 within 1 s"):
        make_executor("dask://127.0.0.1:9", connect_timeout=1)  # port 9 (discard) is not a Dask scheduler
    assert time.perf_counter() - started < 15


@needs_dask
def test_fits_through_dask_equal_inline_fits_one_task_per_chunk(cluster, client, fleet):
    keys = _keys(fleet)
    inline = ModelService(fleet, "ridge", CTX, train_window_ticks=14)
    inline.fit(keys)

    before = client.run_on_scheduler(_fit_chunk_tasks)
    executor = make_executor(cluster.scheduler_address.replace("tcp://", "dask://"))
    assert isinstance(executor, DaskExecutor) and executor.slots == 2
    service = ModelService(fleet, "ridge", CTX, train_window_ticks=14, executor=executor, chunk_size=64)
    fitted = service.fit(keys)
    executor.shutdown()

    assert [f.key for f in fitted] == keys
    assert service.fits_done == len(keys)
    # A chunk's streams travel together: 8 streams make 2 tasks (one per worker thread), not 8.
    assert client.run_on_scheduler(_fit_chunk_tasks) - before == len(split_chunks(keys, 64, 2)) == 2
    np.testing.assert_allclose(_predictions(service, keys), _predictions(inline, keys), rtol=1e-10, atol=1e-10)
    assert [f.fallback_reason for f in fitted] == [inline.get(k).fallback_reason for k in keys]


@needs_dask
def test_a_client_passed_in_stays_open_and_an_owned_one_is_closed(cluster, client):
    borrowed = make_executor(client)
    assert borrowed.submit(sum, [1, 2, 3]).result() == 6
    borrowed.shutdown()
    assert client.status == "running"

    owned = make_executor(cluster.scheduler_address)
    owned.shutdown()
    assert owned.client.status == "closed"


@needs_dask
def test_backtest_on_dask_gives_the_inline_summary_and_closes_its_client(cluster, client):
    frame = simulate_platform(6, 20, seed=1).data
    settings = dict(policies=["never", "always"], model="ridge", sample_streams=0)
    inline = run_backtest(frame, BacktestConfig(**settings))

    clients_before = client.run_on_scheduler(_n_clients)
    tasks_before = client.run_on_scheduler(_fit_chunk_tasks)
    on_dask = run_backtest(frame, BacktestConfig(**settings, executor=f"dask://{cluster.scheduler_address[6:]}"))

    assert client.run_on_scheduler(_fit_chunk_tasks) > tasks_before  # the fits did run on the cluster
    for row_inline, row_dask in zip(inline.summary, on_dask.summary):
        assert row_dask["policy"] == row_inline["policy"]
        assert row_dask["mae"] == pytest.approx(row_inline["mae"], rel=1e-9)
        assert row_dask["retrains"] == row_inline["retrains"]
        assert row_dask["initial_fits"] == row_inline["initial_fits"]
    assert on_dask.summary[1]["retrains"] > 0
    # run_backtest shut the executor down, which closed the client it had opened.
    deadline = time.monotonic() + 10
    while client.run_on_scheduler(_n_clients) > clients_before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.run_on_scheduler(_n_clients) == clients_before


@needs_dask
def test_a_stream_whose_fit_raises_fails_alone_named_and_its_chunk_is_kept(client, fleet):
    """A model's error (not one it falls back from) for one stream costs that stream's model only, on the
    cluster as inline: the error names the stream and the model's message; every other model is stored."""
    keys = _keys(fleet)
    means = [np.nanmean(fleet.history(k.stream, k.end_tick, 14).y) for k in keys]
    worst = int(np.argmax(means))
    threshold = float(np.sort(means)[-2] + np.sort(means)[-1]) / 2  # only the busiest stream fails
    service = ModelService(fleet, FailingRidge, CTX, train_window_ticks=14, executor=make_executor(client),
                           model_params={"fail_above": threshold})

    with pytest.raises(ChunkFitError) as caught:
        service.fit(keys)

    error = caught.value
    assert error.stream_ids == [str(fleet.ids[worst])] and error.failed_chunks == 0
    assert str(fleet.ids[worst]) in str(error) and "RuntimeError: refusing a history" in str(error)
    assert service.failures == {keys[worst]: service.failures[keys[worst]]}
    assert "refusing a history" in service.failures[keys[worst]]
    stored = {k for k in keys if k in service._models}
    assert stored == set(keys) - {keys[worst]}
    assert service.fits_done == len(stored)


@needs_dask
def test_a_worker_killed_mid_chunk_loses_and_duplicates_no_retraining(client, fleet, tmp_path):
    keys = _keys(fleet)
    params = {"marker_dir": str(tmp_path), "delay": 0.25}
    inline = ModelService(fleet, SlowRidge, CTX, train_window_ticks=14, model_params={"delay": 0.0})
    inline.fit(keys)

    pids = set(client.run(os.getpid).values())
    service = ModelService(fleet, SlowRidge, CTX, train_window_ticks=14, executor=make_executor(client),
                           chunk_size=2, model_params=params)  # 4 chunks of 2 streams, about 0.5 s each
    with ThreadPoolExecutor(1) as runner:
        job = runner.submit(service.fit, keys)
        victim = None
        deadline = time.monotonic() + 30
        while victim is None and time.monotonic() < deadline and not job.done():
            started = {int(p.name.split("-")[1]) for p in tmp_path.glob("started-*")}
            victim = next(iter(started & pids), None)
            time.sleep(0.01)
        assert victim is not None, "no worker started a fit"
        os.kill(victim, signal.SIGKILL)
        fitted = job.result(timeout=60)

    # The kill hit a fit in progress: the victim started a fit it never finished.
    started = {p.name.split("-", 1)[1] for p in tmp_path.glob("started-*")}
    done = {p.name.split("-", 1)[1] for p in tmp_path.glob("done-*")}
    assert any(tag.startswith(f"{victim}-") for tag in started - done)
    # Every stream got exactly one model, equal to the inline one.
    assert [f.key for f in fitted] == keys
    assert service.fits_done == len(keys) and len(service._models) == len(keys)
    np.testing.assert_allclose(_predictions(service, keys), _predictions(inline, keys), rtol=1e-10, atol=1e-10)


def test_live_ticks_on_a_dask_cluster_by_address_equal_inline_ticks(cluster, tmp_path):
    """`[agent] executor = "dask://host:port"`: the live agent re-trains on the cluster, with the same result."""
    import re

    from mlma.control import Operations
    from mlma.live import LiveAgent
    from mlma.project import init_project, load_config
    from mlma.simulate import simulate_platform
    from mlma.store import Store

    frame = simulate_platform(12, 33, seed=5, event_rate=3).data
    address = "dask://" + cluster.scheduler_address.split("://", 1)[1]
    outcomes = []
    for name, executor in (("inline", "inline"), ("dask", address)):
        root = tmp_path / name
        init_project(root, model="ridge")
        text = re.sub(r'(?m)^executor = .*$', f'executor = "{executor}"', (root / "mlma.toml").read_text())
        (root / "mlma.toml").write_text(re.sub(r"(?m)^initial_ticks = .*$", "initial_ticks = 30", text))
        config = load_config(root)
        with Store.open(config.store_url) as store:
            store.ingest_frame(frame, "all")
            with LiveAgent(config, store=store) as live:
                live.step()                                           # start-up: 12 first fits
                Operations(store).force_retrain(sorted(frame["unique_id"].unique())[:6], direct=True,
                                                by="user:test")
                results = live.catch_up()                             # re-trains the 6 on the executor
            assert results[0].summary.retrains == 6
            with store.engine.connect() as conn:
                versions = conn.exec_driver_sql("SELECT stream_id, version, artifact_sha256 FROM model_versions "
                                                "ORDER BY stream_id, version").all()
            outcomes.append(([tuple(v) for v in versions],
                             store.forecasts(store.last_done_tick())["y_hat"].round(9).tolist()))
    assert outcomes[0] == outcomes[1]


def _predict_shard_tasks(dask_scheduler) -> int:
    """Distinct ``_predict_shard`` tasks the scheduler has seen (runs on the scheduler)."""
    return len({entry[0] for entry in dask_scheduler.transition_log
                if isinstance(entry[0], str) and entry[0].startswith("_predict_shard-")})


@needs_dask
def test_forecasts_and_retraining_decisions_on_the_cluster_equal_inline_ones(client):
    """A tick's forecasting and re-training both run as stream shards on the workers; every forecast (bit
    for bit) and every decision equals the inline agent's, re-trainings and their challenger checks included."""
    from mlma.agent import Agent
    from mlma.policy import make_policy

    frame = simulate_platform(8, 20, seed=2, event_rate=3).data
    grid = make_tick_grid(frame, "1D", freq="h")
    fleet = FleetData(frame, "h", grid.boundaries)
    scale = fleet.seasonal_naive_scale(24, before_tick=10)

    def run(executor):
        service = ModelService(fleet, "ridge", CTX, train_window_ticks=10, executor=executor)
        # alpha 0.2: the tests-only default (q = 0.01) re-trains nothing in 10 ticks of 8 zones, and the
        # test is about re-trainings and their checks too.
        agent = Agent(make_policy("mlma:alpha=0.2"), service, season_length=24, scale=scale)
        agent.start(10)
        forecasts, decisions = [agent.forecast.copy()], []
        for k in range(10, fleet.n_ticks):
            report = agent.tick(k)
            decisions.append((report.retrained.copy(), report.promoted.copy(), report.decision.verdict.copy(),
                              [str(r) for r in report.decision.reason]))
            forecasts.append(None if agent.forecast is None else agent.forecast.copy())
        return forecasts, decisions

    inline_forecasts, inline_decisions = run(InlineExecutor())
    shards_before = client.run_on_scheduler(_predict_shard_tasks)
    fits_before = client.run_on_scheduler(_fit_chunk_tasks)
    with DaskExecutor(client) as executor:
        assert executor.slots == 2
        dask_forecasts, dask_decisions = run(executor)
    # Each tick's forecasts went to both workers (two shards), and so did the fits.
    assert client.run_on_scheduler(_predict_shard_tasks) - shards_before >= 2 * (fleet.n_ticks - 10)
    assert client.run_on_scheduler(_fit_chunk_tasks) > fits_before
    assert sum(int(r.sum()) for r, *_ in inline_decisions) > 0  # the policy did re-train
    for (a, b) in zip(inline_forecasts[:-1], dask_forecasts[:-1]):
        np.testing.assert_array_equal(a, b)
    assert inline_forecasts[-1] is None and dask_forecasts[-1] is None
    for inline, on_dask in zip(inline_decisions, dask_decisions):
        for a, b in zip(inline, on_dask):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


class ForecastFailingRidge(RidgeForecaster):
    """Ridge whose forecasts raise for histories whose median exceeds ``fail_above`` (in ``predict`` and in
    the fleet-wide call, which then fails for its whole shard): an error inside a shard on a worker."""

    def __init__(self, ctx: ForecastContext, fail_above: float = np.inf, **options):
        super().__init__(ctx, **options)
        self.fail_above = fail_above

    def predict(self, ds, y, future_ds, X=None, future_X=None):
        if np.nanmedian(y) > self.fail_above:
            raise RuntimeError("refusing to forecast the marked stream")
        return super().predict(ds, y, future_ds, X, future_X)

    @classmethod
    def predict_many(cls, models, history):
        for i, model in enumerate(models):
            if np.nanmedian(history.stream(i)[1]) > model.fail_above:
                raise RuntimeError("refusing to forecast the marked stream")
        return super().predict_many(models, history)


@needs_dask
def test_a_forecast_failing_inside_a_shard_on_the_cluster_costs_only_its_stream(client):
    """Forecasts in shards on two workers, one stream's model raising there: the tick goes on, every other
    stream's forecast equals the inline one of the same models, and the failing stream is named."""
    frame = simulate_platform(8, 17, seed=3).data
    bad = sorted(frame["unique_id"].unique())[3]
    frame.loc[frame["unique_id"] == bad, "y"] += 1e6
    marked = FleetData(frame, "h", make_tick_grid(frame, "1D", freq="h").boundaries)
    keys = [ModelKey(s, 12) for s in range(marked.n_streams)]
    spec = ForecastFailingRidge(CTX, fail_above=5e5)
    inline = ModelService(marked, spec, CTX, train_window_ticks=10)
    inline.fit(keys)
    expected = inline.predict_many(keys, 13, on_error="skip")
    s_bad = int(np.flatnonzero(marked.ids == bad)[0])
    assert set(k.stream for k, _ in inline.forecast_failures) == {s_bad}
    with DaskExecutor(client) as executor:
        service = ModelService(marked, spec, CTX, train_window_ticks=10, executor=executor, parallel_threshold=1)
        service._models = dict(inline._models)
        shards_before = client.run_on_scheduler(_predict_shard_tasks)
        got = service.predict_many(keys, 13, on_error="skip")
        assert client.run_on_scheduler(_predict_shard_tasks) - shards_before == 2  # forecast on the workers
    np.testing.assert_array_equal(got, expected)
    assert np.isnan(got[s_bad]).all() and np.isfinite(np.delete(got, s_bad, axis=0)).all()
    assert service.forecast_failures == {(keys[s_bad], 13): "RuntimeError: refusing to forecast the marked stream"}


class HangingRidge(RidgeForecaster):
    """Ridge whose fit of the stream with the highest mean hangs (sleeps ``hang`` seconds): a fit that never
    ends on its worker, which Dask cannot stop."""

    def __init__(self, ctx: ForecastContext, hang_above: float = np.inf, hang: float = 0.0, **options):
        super().__init__(ctx, **options)
        self.hang_above, self.hang = hang_above, hang

    def fit(self, ds, y, X=None):
        if np.nanmean(y) > self.hang_above:
            time.sleep(self.hang)
        return super().fit(ds, y, X)


@needs_dask
def test_a_fit_that_hangs_on_the_cluster_costs_its_chunk_and_the_forecasts_do_not_wait_behind_it(cluster, fleet):
    """fit_timeout bounds the fits on a cluster, and the forecasts that follow: they are not sent to workers
    that may still run the abandoned fit (before, they queued behind it, and the tick waited for ever)."""
    keys = _keys(fleet)
    means = [np.nanmean(fleet.history(k.stream, k.end_tick, 14).y) for k in keys]
    threshold = float(np.sort(means)[-2] + np.sort(means)[-1]) / 2  # only the busiest stream hangs
    with distributed.Client(cluster, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=60)
        executor = DaskExecutor(client)
        service = ModelService(fleet, HangingRidge, CTX, train_window_ticks=14, executor=executor, fit_timeout=8,
                               model_params={"hang_above": threshold, "hang": 120.0})
        started = time.monotonic()
        fitted = service.fit(keys, on_error="skip")
        served = [k for k, f in zip(keys, fitted) if f is not None]
        forecasts = service.predict_many(served, END_TICK + 1)
        took = time.monotonic() - started
        # End the worker that still sleeps in the abandoned fit (its nanny starts another).
        busy = [worker for worker, tasks in client.processing().items() if tasks]
        for pid in client.run(os.getpid, workers=busy).values():
            os.kill(pid, signal.SIGKILL)
    assert service.timed_out and len(served) < len(keys)
    assert all("no result within fit_timeout=8 s" in service.failures[k] for k in keys if k not in served)
    assert np.isfinite(forecasts).all()
    assert took < 60, f"the fits and forecasts took {took:.0f} s; the hung fit sleeps 120 s"


def _running_fit_chunks(dask_scheduler) -> list[str]:
    return [key for key, task in dask_scheduler.tasks.items()
            if isinstance(key, str) and key.startswith("_fit_chunk-") and task.state in ("processing", "waiting")]


@needs_dask
def test_a_fit_the_cluster_dropped_says_so_not_a_bare_cancelled_error(cluster, fleet):
    """A scheduler lost mid-tick (or another client's cancel) drops the tasks, and each stream's fit failed with
    a bare "CancelledError", which mlma never asked for: the error now says the cluster dropped the task."""
    keys = _keys(fleet)[:2]
    with distributed.Client(cluster, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=60)
        service = ModelService(fleet, HangingRidge, CTX, train_window_ticks=14, executor=DaskExecutor(client),
                               model_params={"hang_above": -np.inf, "hang": 5.0})

        fit_returned = threading.Event()

        def cancel_while_fitting() -> None:
            # Every chunk, each as the scheduler learns of it: the service submits its chunks one by one, and a
            # canceller that stopped after the first cancel let a later chunk be fitted (a flaky test).
            while not fit_returned.wait(0.05):
                running = client.run_on_scheduler(_running_fit_chunks)
                if running:
                    client.cancel([distributed.Future(key, client) for key in running], force=True)

        canceller = threading.Thread(target=cancel_while_fitting)
        canceller.start()
        try:
            fitted = service.fit(keys, on_error="skip")
        finally:
            fit_returned.set()
            canceller.join()
    assert fitted == [None, None]
    for key in keys:
        assert service.failures[key].startswith("CancelledError"), service.failures
        assert "(the Dask cluster dropped the task: its scheduler at tcp://" in service.failures[key]
    assert service.executor_failures == set(keys)  # the cluster's doing: not counted against the streams


class HangsOnAHugeLevel(RidgeForecaster):
    """Ridge whose fit hangs (two minutes) for a history whose level is above a million: the stream a test
    scales so, picked by its data since a backtest gives its model no options."""

    def fit(self, ds, y, X=None):
        if np.nanmean(y) > 1e6:
            time.sleep(120)
        return super().fit(ds, y, X)


@needs_dask
def test_a_backtest_on_the_cluster_with_a_fit_timeout_ends_and_scores_the_other_streams():
    """A backtest on a cluster had no fit timeout: a stream whose fit hung kept the run waiting for good. With
    ``fit_timeout`` the hung fit fails, its worker is restarted, and every other stream is scored."""
    frame = simulate_platform(6, 17, seed=3).data
    culprit = frame["unique_id"].unique()[2]
    frame.loc[frame["unique_id"] == culprit, "y"] *= 1e7
    # A cluster of its own: the shared one may still be restarting a worker an earlier test killed, and fits
    # queued behind a missing worker time out as well.
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=logging.CRITICAL) as cluster:
        config = BacktestConfig(policies=["never"], model=HangsOnAHugeLevel, initial_ticks=14,
                                executor=cluster.scheduler_address, fit_timeout=3, frontier=False, bootstrap=0,
                                sample_streams=0)
        started = time.monotonic()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # the restarted worker is named in a warning
            result = run_backtest(frame, config)
        took = time.monotonic() - started
    scored = result.per_stream.set_index("unique_id")["n_scored"]
    assert scored[culprit] == 0
    # The culprit's start-up chunk-mates fail once with it and get their models at the next tick.
    assert (scored.drop(index=culprit) >= 2 * 24).all() and (scored == 3 * 24).any(), scored
    assert took < 90, f"{took:.0f} s; the hung fit sleeps 120 s"


def test_an_address_that_answers_but_is_no_scheduler_is_refused_in_bounded_time():
    """The Dask dashboard's port (an HTTP server) for the scheduler's: the client's handshake never ended."""
    import http.server

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def open_files() -> int:
        return len(os.listdir("/proc/self/fd"))

    try:
        started = time.monotonic()
        with pytest.raises(ExecutorUnavailableError, match=r"answers, but no Dask scheduler replied within 3 s"):
            make_executor(f"dask://127.0.0.1:{server.server_address[1]}", connect_timeout=2)
        assert time.monotonic() - started < 30
        # Each attempt left a thread and its sockets behind, and `mlma run` tries again every round.
        threads, files = threading.active_count(), open_files()
        for _ in range(3):
            with pytest.raises(ExecutorUnavailableError):
                make_executor(f"dask://127.0.0.1:{server.server_address[1]}", connect_timeout=1)
        time.sleep(0.5)  # the server's handler threads see the closed connections
        assert threading.active_count() <= threads and open_files() <= files
    finally:
        server.shutdown()


def test_an_address_that_answers_in_another_protocol_or_is_malformed_is_one_clear_error():
    """A server that answers any bytes with "HTTP/1.1 400 Bad Request" (nginx, an outbound proxy): Dask read the
    reply as a message length and the tick ended in a traceback, "MemoryError: Unable to allocate 3.07 EiB". A
    scheduler address without a port, or with something after it, failed later with a ValueError traceback."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))

    def answer() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                try:
                    conn.recv(1024)
                    conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
                except OSError:
                    pass

    threading.Thread(target=answer, daemon=True).start()
    try:
        with pytest.raises(ExecutorUnavailableError, match=r"answers, but not as a Dask scheduler \(its handshake "
                                                           r"failed: \w+\); is it another service"):
            make_executor(f"dask://127.0.0.1:{listener.getsockname()[1]}", connect_timeout=2)
    finally:
        listener.close()
    for spec in ("dask://127.0.0.1:8786/extra", "dask://127.0.0.1:99999", "tcp://host:port", "dask://:8786"):
        with pytest.raises(ValueError, match="the scheduler's address must be host or host:port"):
            make_executor(spec)


@needs_dask
def test_a_live_agent_makes_a_new_client_after_its_scheduler_was_lost(cluster, tmp_path):
    """Dask closes a client whose scheduler stayed away longer than it waits; `mlma run` kept that client and
    failed every tick after the cluster came back ("Client is closed"). The agent now makes a new one."""
    from mlma.live import LiveAgent
    from mlma.project import init_project, load_config
    from mlma.training import executor_usable

    root = tmp_path / "p"
    init_project(root, model="ridge")
    config = load_config(root)
    address = "dask://" + cluster.scheduler_address.split("://", 1)[1]
    with LiveAgent(config, executor=address) as live:
        first = live.executor()
        assert executor_usable(first)
        first.client.close()  # as Dask does after its reconnection attempts failed
        assert not executor_usable(first)
        second = live.executor()
        assert second is not first and executor_usable(second) and second.submit(sum, [1, 2]).result() == 3


@needs_dask
def test_a_scheduler_lost_before_the_fits_fails_them_named_and_the_forecasts_are_made_here(cluster, fleet):
    """The tick died in asking the lost scheduler for its workers, and the fleet got no forecasts at all; now
    the fits fail (named, the champions keep serving) and the serving models forecast in this process."""
    keys = _keys(fleet)
    inline = ModelService(fleet, RidgeForecaster, CTX, train_window_ticks=14)
    inline.fit(keys)
    client = distributed.Client(cluster, set_as_default=False)
    executor = DaskExecutor(client)
    client.close()  # the scheduler is gone, for this client
    service = ModelService(fleet, RidgeForecaster, CTX, train_window_ticks=14, executor=executor)
    assert service.fit([ModelKey(0, END_TICK - 1)], on_error="skip") == [None]
    assert service.failures[ModelKey(0, END_TICK - 1)].startswith("ClosedClientError: Client is closed")
    assert service.executor_failures == {ModelKey(0, END_TICK - 1)}
    service._models.update(inline._models)  # the models serving before the cluster was lost
    np.testing.assert_allclose(service.predict_many(keys, END_TICK + 1), inline.predict_many(keys, END_TICK + 1))


@needs_dask
def test_fits_on_a_scheduler_without_workers_fail_saying_so_and_are_not_the_streams_doing(fleet):
    """The fits on a cluster whose workers were all gone failed after ``fit_timeout`` saying "the workers were
    busy", and counted towards each stream's ``fit_failure_limit`` (the whole fleet escalated after three
    ticks): they say the cluster has no workers now, and are the executor's failures."""
    keys = _keys(fleet)[:3]
    with distributed.LocalCluster(n_workers=0, processes=True, dashboard_address=None,
                                  silence_logs=logging.CRITICAL) as empty, \
            distributed.Client(empty, set_as_default=False) as client:
        service = ModelService(fleet, RidgeForecaster, CTX, train_window_ticks=14, executor=DaskExecutor(client),
                               fit_timeout=2)
        assert service.fit(keys, on_error="skip") == [None] * len(keys)
        address = empty.scheduler_address
    for key in keys:
        assert (f"its chunk had not started (the Dask cluster at {address} has no workers: start one with 'dask "
                f"worker {address}')") in service.failures[key], service.failures[key]
    assert service.executor_failures == set(keys)


# -- one stream's hang or crash on the cluster: its chunk's other streams, and later tasks, are spared ------------


@pytest.fixture(scope="module", autouse=True)
def _lost_workers_are_not_closed_while_restarting():
    """A LocalCluster (a SpecCluster) closes the nanny of a worker that left ``lost-worker-timeout`` (15 s) before
    if no worker of its name is there at that instant: a worker restarted by mlma (or by its nanny after a kill)
    15 s after it last left was lost for good. Not so for ``dask worker`` processes; kept away from the tests."""
    if distributed is None:
        yield
        return
    import dask

    with dask.config.set({"distributed.deploy.lost-worker-timeout": "1h"}):
        yield


class DyingRidge(RidgeForecaster):
    """Ridge whose fit of the stream with the highest mean ends its worker process (as the out-of-memory killer
    or a crash in native code would); in a Dask worker only."""

    def __init__(self, ctx: ForecastContext, die_above: float = np.inf, **options):
        super().__init__(ctx, **options)
        self.die_above = die_above

    def fit(self, ds, y, X=None):
        import multiprocessing

        if np.nanmean(y) > self.die_above and multiprocessing.current_process().name != "MainProcess":
            os._exit(9)
        return super().fit(ds, y, X)


def _busiest(fleet: FleetData, keys: list[ModelKey]) -> tuple[int, float]:
    """The stream whose window has the highest mean, and a threshold only it is above."""
    means = np.array([np.nanmean(fleet.history(k.stream, k.end_tick, 14).y) for k in keys])
    top, second = np.sort(means)[-1], np.sort(means)[-2]
    return int(np.argmax(means)), float(top + second) / 2


class KilledWorker(Exception):
    """Named as Dask's, which mlma tells by name."""


class BlamingCluster(concurrent.futures.Executor):
    """An executor that blames as Dask's scheduler does: a worker holds more tasks than it has threads, and its
    death counts against every task it held, running or waiting. Tasks sent within a short while of each other
    (``delays``: one per batch, the last repeated) are held together; when one of them holds the ``culprit``
    stream (whose fit kills its workers), all of them end with ``KilledWorker``, else each is fitted.
    Deterministic, where a real cluster only sometimes queues a healthy task behind the culprit. ``slots``: the
    threads it says it has (mlma cuts that many chunks)."""

    def __init__(self, culprit: int, slots: int = 1, delays: tuple[float, ...] = (0.05,)) -> None:
        self.culprit, self.slots, self.delays = culprit, slots, list(delays)
        self.lock = threading.Lock()
        self.held: list[tuple[concurrent.futures.Future, object, tuple]] = []
        self.timer: threading.Timer | None = None

    def submit(self, fn, /, *args, **kwargs) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self.lock:
            self.held.append((future, fn, args))
            if self.timer is None:
                delay = self.delays.pop(0) if len(self.delays) > 1 else self.delays[0]
                self.timer = threading.Timer(delay, self._settle)
                self.timer.daemon = True
                self.timer.start()
        return future

    def _settle(self) -> None:
        with self.lock:
            held, self.held, self.timer = self.held, [], None
        streams = {job[0].stream for _, _, (_, _, _, chunk, _) in held for job in chunk}
        for future, fn, args in held:
            if not future.set_running_or_notify_cancel():
                continue  # abandoned by the service's deadline
            if self.culprit in streams:
                future.set_exception(KilledWorker("attempted to run the task 4 times; all 4 workers died"))
            else:
                future.set_result(fn(*args))


@pytest.mark.parametrize("slots", [1, 8], ids=["one chunk of eight", "eight chunks of one"])
def test_only_the_fit_that_kills_its_workers_is_blamed_not_those_queued_behind_it(fleet, slots):
    """Dask blames every task a dying worker held, also those only waiting behind the fit that killed it: the
    streams re-fitted alone after a KilledWorker could end with it too, and a healthy stream was named as the
    one whose fit kills its workers (seen as a flaky cluster test); chunks of one stream each (as many streams
    as threads, or suspects) were blamed at once. When two or more are blamed, they are fitted again one at a
    time: only the culprit fails."""
    keys = _keys(fleet)
    culprit = 5
    cluster = BlamingCluster(culprit, slots=slots)
    service = ModelService(fleet, RidgeForecaster, CTX, train_window_ticks=14, executor=cluster,
                           parallel_threshold=1, fit_timeout=60)
    fitted = service.fit(keys, on_error="skip")
    assert [f is None for f in fitted] == [k.stream == culprit for k in keys], service.failures
    assert list(service.failures) == [keys[culprit]]
    error = service.failures[keys[culprit]]
    assert error.startswith("KilledWorker:") and "its fit ends the workers that run it" in error, error
    assert service.suspects == [culprit]


def test_streams_the_deadline_left_untold_apart_are_not_blamed_and_say_why(fleet):
    """The one-at-a-time round runs within the same fit_timeout: when the time runs out before it could tell the
    streams apart, none of them is named as the one whose fit kills its workers; the unsent ones say that several
    ended with KilledWorker and there was no time to tell which."""
    keys = _keys(fleet)
    # The chunk and the first single fit come back at once; the next single fit outlasts the deadline.
    cluster = BlamingCluster(5, slots=8, delays=(0.05, 0.05, 5.0))
    service = ModelService(fleet, RidgeForecaster, CTX, train_window_ticks=14, executor=cluster,
                           parallel_threshold=1, fit_timeout=1.0)
    fitted = service.fit(keys, on_error="skip")
    failed = [k for k, f in zip(keys, fitted) if f is None]
    assert len(failed) == len(keys) - 1, service.failures  # the first single fit came back
    untold = [k for k in failed if "to tell whose fit kills its workers" in service.failures[k]]
    assert len(untold) == len(keys) - 2, service.failures  # all but the fitted one and the one in flight
    assert all("KilledWorker" in service.failures[k] for k in untold)
    assert not any("its fit ends the workers that run it" in e for e in service.failures.values())
    # Still the streams' failures, not the executor's: the culprit is among them, and must reach its limit.
    assert not service.executor_failures


@needs_dask
def test_a_hung_fit_on_the_cluster_restarts_its_worker_and_costs_its_chunk_mates_once(cluster, fleet):
    """A cancelled task keeps running on its worker: the scheduler saw the thread free and sent it the next
    ticks' chunks and forecast shards, which timed out behind the hung fit, every tick. The worker is now
    restarted (and named), and the streams of the hung chunk are suspects whose next fits run one per task:
    the chunk's healthy streams fail once, told they may only have shared a chunk with a hung fit; then only the
    culprit fails, fitted alone."""
    keys, later = _keys(fleet), [ModelKey(s, END_TICK - 1) for s in range(fleet.n_streams)]
    worst, threshold = _busiest(fleet, keys)
    assert _busiest(fleet, later)[0] == worst and _busiest(fleet, later)[1] < threshold
    with distributed.Client(cluster, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=60)
        executor = DaskExecutor(client)
        service = ModelService(fleet, HangingRidge, CTX, train_window_ticks=14, executor=executor, fit_timeout=2,
                               model_params={"hang_above": threshold, "hang": 120.0})
        restarted = (r"the Dask worker\(s\) tcp://\S+ at tcp://\S+ held tasks given up on after fit_timeout=2 s "
                     r"\(a fit that hung, in this tick or an earlier one\); restarted them")
        with pytest.warns(RuntimeWarning, match=restarted):
            first = service.fit(keys, on_error="skip")
        chunk = [k for k, f in zip(keys, first) if f is None]
        assert len(chunk) == 4 and keys[worst] in chunk  # 8 streams on 2 threads: chunks of 4
        for key in chunk:
            assert "on Dask worker tcp://" in service.failures[key] and "(restarted)" in service.failures[key]
            if key != keys[worst]:
                assert "may only have shared its chunk of 4 streams with a fit that hung" in service.failures[key]
        assert set(service.suspects) == {k.stream for k in chunk}

        with pytest.warns(RuntimeWarning, match=restarted):  # the next tick: the culprit hangs again, alone
            second = service.fit(later, on_error="skip")
        alone = service.failures[later[worst]]
        assert alone.startswith("TimeoutError: no result within fit_timeout=2 s on Dask worker tcp://"), alone
        assert alone.endswith("(restarted) (fitted alone)"), alone
        # The other streams of the chunk got their models, but for one the scheduler may have queued behind the
        # culprit on its one-thread worker: not blamed (still to be told), and the culprit, proven now, goes last.
        failed = {k.stream: service.failures[k] for k, f in zip(later, second) if f is None}
        assert set(failed) - {worst} <= {k.stream for k in chunk} and len(failed) <= 2, failed
        assert all("its chunk had not started" in failed[s] for s in set(failed) - {worst}), failed
        assert service.suspects in ([worst], [*(set(failed) - {worst}), worst]), service.suspects

        # No worker still runs an abandoned fit: a healthy fleet's fits all come back, well within the limit.
        healthy = ModelService(fleet, RidgeForecaster, CTX, train_window_ticks=14, executor=executor, fit_timeout=10)
        healthy.fit([ModelKey(s, END_TICK - 2) for s in range(fleet.n_streams)])
        assert not any(client.run(lambda dask_worker: len(dask_worker.state.executing)).values())


@needs_dask
def test_a_fit_that_kills_its_workers_fails_alone_on_the_cluster(client, fleet):
    """A chunk whose fit kept killing its workers failed with KilledWorker for every stream in it, naming none.
    Its streams are fitted again at once, one per task: only the culprit fails, and its error says so."""
    keys = _keys(fleet)
    worst, threshold = _busiest(fleet, keys)
    service = ModelService(fleet, DyingRidge, CTX, train_window_ticks=14, executor=make_executor(client),
                           fit_timeout=120, model_params={"die_above": threshold})
    started = time.monotonic()
    fitted = service.fit(keys, on_error="skip")
    took = time.monotonic() - started
    assert [f is None for f in fitted] == [k.stream == worst for k in keys]
    error = service.failures[keys[worst]]
    assert error.startswith("KilledWorker:") and "the stream was fitted alone to find it: its fit ends the " \
                                                  "workers that run it" in error, error
    assert service.suspects == [worst]
    assert took < 90, f"{took:.0f} s"


@needs_dask
def test_a_worker_still_in_an_abandoned_task_is_restarted_when_a_forecast_shard_waits_behind_it(cluster, fleet):
    """A worker left running a cancelled task (a hung fit of a tick stopped by Ctrl-C, or of an mlma before this
    one) made every later tick wait fit_timeout for the forecast shard queued behind it, then forecast it here.
    The shard's worker is now restarted, named, and the next forecasts come back from the cluster in time."""
    keys, earlier = _keys(fleet), [ModelKey(s, END_TICK - 1) for s in range(fleet.n_streams)]
    with distributed.Client(cluster, set_as_default=False) as client:
        client.wait_for_workers(2, timeout=60)
        service = ModelService(fleet, RidgeForecaster, CTX, train_window_ticks=14, executor=DaskExecutor(client),
                               fit_timeout=2, predict_chunk_size=1)  # a shard per stream: some on each worker
        service.fit(keys + earlier)
        stuck = sorted(client.scheduler_info()["workers"])[0]
        hung = client.submit(time.sleep, 120, workers=[stuck], pure=False)
        deadline = time.monotonic() + 30
        while not any(client.run(lambda dask_worker: len(dask_worker.state.executing), workers=[stuck]).values()):
            assert time.monotonic() < deadline, "the sleeping task never started"
            time.sleep(0.05)
        hung.cancel()  # the scheduler now sees the worker free; its thread still sleeps
        with pytest.warns(RuntimeWarning) as caught:
            first = service.predict_many(keys, END_TICK + 1)
        said = [str(w.message) for w in caught]
        assert any(f"the Dask worker(s) {stuck} at " in m and "restarted them" in m for m in said), said
        assert any(m.startswith("forecasting a shard of 1 stream(s) on DaskExecutor failed with TimeoutError: no "
                                "forecasts within fit_timeout=2 s") for m in said), said
        assert np.isfinite(first).all()  # the shards behind it were forecast in this process
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message="forecasting a shard", category=RuntimeWarning)
            second = service.predict_many(earlier, END_TICK)
        assert np.isfinite(second).all()
