"""An executor that cannot run the fits (a Dask cluster without workers, or that lost its scheduler) is not the
streams' fault: their failed fits are not counted towards ``fit_failure_limit`` (before, every stream of the fleet
was escalated ``fit-failed`` after three ticks of outage), the outage is escalated once for the fleet
(``executor-failed``) and resolved by the agent once fits run again; a stream whose own fit fails is still
counted and escalated. The executor here is a stand-in whose tasks never start while it is down (what a cluster
without workers does); tests/test_dask.py meets a real scheduler without workers."""

from __future__ import annotations

from concurrent.futures import Executor, Future, ThreadPoolExecutor

import numpy as np
import pytest

from mlma.agent import Agent
from mlma.data import make_tick_grid
from mlma.escalations import EscalationBook
from mlma.fleet import FleetData
from mlma.models import ForecastContext, RidgeForecaster
from mlma.policy import make_policy
from mlma.simulate import simulate_platform
from mlma.training import ModelKey, ModelService

CTX = ForecastContext("h", season_length=24, horizon=24)


class Cluster(Executor):
    """Runs tasks on threads, but while :attr:`down` a task is taken and never started, as on a Dask cluster
    whose workers are gone."""

    parallel_threshold = 1

    def __init__(self) -> None:
        self.down = False
        self.threads = ThreadPoolExecutor(2)

    def submit(self, fn, /, *args, **kwargs) -> Future:
        return Future() if self.down else self.threads.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self.threads.shutdown(wait=wait, cancel_futures=cancel_futures)


class BreakableRidge(RidgeForecaster):
    """Ridge whose fit raises for the stream with the marked level while :attr:`broken` is set: a stream's own
    failing fit."""

    broken = False

    def fit(self, ds, y, X=None):
        if type(self).broken and np.nanmedian(y) > 1e6:
            raise RuntimeError("the marked stream cannot be fitted")
        return super().fit(ds, y, X)


@pytest.fixture(scope="module")
def fleet() -> FleetData:
    data = simulate_platform(6, 34, seed=6).data
    marked = sorted(data["unique_id"].unique())[2]
    data.loc[data["unique_id"] == marked, "y"] += 2e6
    return FleetData(data, "h", make_tick_grid(data, "1D", freq="h").boundaries)


def test_an_outage_of_the_executor_is_one_item_for_the_fleet_not_a_fit_failure_of_every_stream(fleet, monkeypatch):
    cluster = Cluster()
    service = ModelService(fleet, BreakableRidge, CTX, train_window_ticks=10, executor=cluster, fit_timeout=0.5)
    agent = Agent(make_policy("always"), service, season_length=24,
                  scale=fleet.seasonal_naive_scale(24, before_tick=10))
    marked = 2
    book = EscalationBook()
    down = set(range(11, 18)) | {24, 25}  # twice the limit of three failures in a row, then once more
    reports = [agent.start(10)]
    try:
        for k in range(10, 32):
            cluster.down = k in down
            monkeypatch.setattr(BreakableRidge, "broken", 27 <= k)  # the marked stream's own fit fails
            reports.append(agent.tick(k))
            book.record(k, reports[-1].escalations, reports[-1].cleared)
    finally:
        cluster.shutdown(cancel_futures=True)

    n = fleet.n_streams
    by_tick = {r.tick: r for r in reports}
    for k in sorted(down):
        assert set(by_tick[k].failed) == set(range(n)), f"tick {k}: every re-training failed"
        assert all(ModelKey(s, k) in service.executor_failures for s in range(n))
        assert all("its chunk had not started (the workers were busy" in e for e in by_tick[k].failed.values())
    raised = [(e.tick, e.kind, e.stream) for r in reports for e in r.escalations]
    outages = [x for x in raised if x[1] == "executor-failed"]
    # One item per outage, on the first tick of each; none per stream for the outage's failed fits.
    assert [t for t, _, _ in outages] == [11, 24], raised
    message = next(e.message for r in reports for e in r.escalations if e.kind == "executor-failed")
    assert message.startswith(f"{n} fit(s) of this tick could not run on the executor, through no fault")
    # Resolved by the agent at the first tick whose fits ran, for the stream that carries it.
    assert by_tick[18].cleared["executor-failed"].tolist() == [outages[0][2]]
    assert by_tick[26].cleared["executor-failed"].tolist() == [outages[1][2]]
    assert not any("executor-failed" in by_tick[k].cleared for k in by_tick if k not in (18, 26))
    still_open = [item.kind for item, tick in zip(book.items, book.resolved_tick) if tick is None]
    assert "executor-failed" not in still_open, still_open
    # A stream's own failures still count: the marked one is escalated at its third failure in a row, alone.
    failed_fits = [x for x in raised if x[1] == "fit-failed"]
    assert failed_fits == [(29, "fit-failed", marked)], raised
    assert by_tick[29].failures_in_a_row == {marked: 3}
    assert agent.fit_failures[np.arange(n) != marked].tolist() == [0] * (n - 1)


def test_a_live_outage_item_a_person_resolved_while_it_lasts_is_raised_again(tmp_path):
    """The fleet's executor-failed item was raised once per outage: resolved by a person while the cluster was
    still down, nothing said so again (the failed fits count against no stream). The live agent raises it anew
    at the next tick whose fits fail; it is resolved by the agent once the fits run."""
    from mlma.control import Operations
    from mlma.live import LiveAgent
    from mlma.project import load_config
    from mlma.store import Store
    from test_live import FIRST_TICK, day_chunks, make_project

    data = simulate_platform(4, FIRST_TICK + 5, seed=6).data
    root = make_project(tmp_path / "p", policy='"always"', fit_timeout_seconds="1")
    config = load_config(root)
    cluster = Cluster()
    outages = []
    try:
        with Store.open(config.store_url) as store, LiveAgent(config, store=store, executor=cluster) as live:
            ops = Operations(store)
            for i, chunk in enumerate(day_chunks(data, FIRST_TICK)):
                store.ingest_frame(chunk, f"day-{i}")
                cluster.down = i in (1, 2, 3)
                live.step()
                items = store.escalations().query("kind == 'executor-failed'")
                outages.append(sorted(items["status"]))
                if i == 1:
                    ops.resolve(items["id"].tolist(), by="user:ana", reason="the cluster is being restarted")
    finally:
        cluster.shutdown(cancel_futures=True)
    # Raised at the first failing tick; resolved by a person; raised again at the next failing tick, once;
    # resolved by the agent at the first tick whose fits ran.
    assert outages == [[], ["open"], ["open", "resolved"], ["open", "resolved"], ["resolved", "resolved"],
                       ["resolved", "resolved"]], outages
