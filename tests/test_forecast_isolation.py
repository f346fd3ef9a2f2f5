"""One stream's failing forecast never stops the fleet: a model whose ``predict`` raises, or returns NaN,
infinite values or the wrong length, costs only its own stream's forecast, in the backtest (the shared
:class:`~mlma.agent.Agent`), in live operation and on an executor whose shard fails; the stream is escalated
once (``forecast-failed``), counted, audited, and tried again at every tick."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlma.agent import Agent
from mlma.backtest import BacktestConfig, run_backtest
from mlma.data import make_tick_grid
from mlma.escalations import EscalationBook
from mlma.fleet import FleetData
from mlma.models import FleetHistory, ForecastContext, RidgeForecaster, predict_fleet, predict_fleet_isolated
from mlma.policy import Verdict, make_policy
from mlma.simulate import simulate_platform
from mlma.training import ForecastError, InlineExecutor, ModelKey, ModelService

CTX = ForecastContext("h", season_length=24, horizon=24)
MARK = 1e6  # added to the bad stream's values: the model recognises it by its level, as by a unique_id


class FragileRidge(RidgeForecaster):
    """Ridge whose forecasts fail for the marked stream while :attr:`mode` is set: ``"raise"``, ``"nan"``,
    ``"inf"`` or ``"short"`` (one value too few). Its fleet-wide call fails for every stream of a batch
    that holds the marked one, as a vectorised model's would."""

    mode: str | None = "raise"

    @staticmethod
    def _marked(y: np.ndarray) -> bool:
        return bool(np.nanmedian(y) > MARK / 2) if np.isfinite(y).any() else False

    def predict(self, ds, y, future_ds, X=None, future_X=None):
        out = super().predict(ds, y, future_ds, X, future_X)
        return self._spoil(out) if self._marked(np.asarray(y)) else out

    @classmethod
    def predict_many(cls, models, history: FleetHistory) -> np.ndarray:
        out = super().predict_many(models, history)
        marked = [i for i in range(history.n_streams) if cls._marked(history.stream(i)[1])]
        if not marked or cls.mode is None:
            return out
        if cls.mode in ("raise", "short"):
            return cls._spoil(out)  # the whole batch fails
        out[marked] = cls._spoil(out[marked])
        return out

    @classmethod
    def _spoil(cls, out: np.ndarray) -> np.ndarray:
        if cls.mode is None:
            return out
        if cls.mode == "raise":
            raise RuntimeError("z3 cannot be forecast")
        if cls.mode == "short":
            return out[..., :-1]
        out = np.array(out, dtype=np.float64)
        out[..., 1] = np.nan if cls.mode == "nan" else np.inf
        return out


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    data = simulate_platform(8, 20, seed=2).data
    data.loc[data["unique_id"] == bad_id(data), "y"] += MARK
    return data


def bad_id(data: pd.DataFrame) -> str:
    return next(u for u in sorted(data["unique_id"].unique()) if u.endswith("z03"))


@pytest.fixture(scope="module")
def fleet(frame) -> FleetData:
    return FleetData(frame, "h", make_tick_grid(frame, "1D", freq="h").boundaries)


def run_agent(fleet: FleetData, monkeypatch, mode: str | None, fail_from: int, fail_until: int, policy: str,
              executor=None, controls: dict | None = None):
    """Forecasts issued by an agent at each tick, with the model failing for the marked stream during
    ticks ``[fail_from, fail_until)``; the reports too."""
    service = ModelService(fleet, FragileRidge(CTX), CTX, train_window_ticks=10, executor=executor)
    agent = Agent(make_policy(policy), service, season_length=24,
                  scale=fleet.seasonal_naive_scale(24, before_tick=10))
    monkeypatch.setattr(FragileRidge, "mode", None)
    reports = [agent.start(10)]
    issued = [agent.forecast.copy()]
    for k in range(10, fleet.n_ticks - 1):
        monkeypatch.setattr(FragileRidge, "mode", mode if fail_from <= k < fail_until else None)
        reports.append(agent.tick(k, (controls or {}).get(k)))
        issued.append(agent.forecast.copy())
    return issued, reports


@pytest.mark.parametrize("mode", ["raise", "nan", "inf", "short"])
def test_a_failing_forecast_costs_only_its_own_stream_in_the_agent(fleet, frame, monkeypatch, mode):
    """The shared core of backtest and live: the other streams' forecasts are bit for bit those of a run
    whose model never fails; the bad stream has none while failing, and forecasts again afterwards."""
    bad = int(np.flatnonzero(fleet.ids == bad_id(frame))[0])
    others = np.arange(fleet.n_streams) != bad
    clean, _ = run_agent(fleet, monkeypatch, None, 0, 0, "periodic:4")
    issued, reports = run_agent(fleet, monkeypatch, mode, 12, 15, "periodic:4")
    for k, (a, b) in enumerate(zip(issued, clean), start=9):
        np.testing.assert_array_equal(a[others], b[others])
        if 12 <= k < 15:
            assert np.isnan(a[bad]).all(), f"tick {k}: a failed forecast was issued"
        elif k < 12:
            np.testing.assert_array_equal(a[bad], b[bad])
        else:
            # Forecast again; by another model, maybe: without forecasts the stream was not scored, so the
            # schedule re-trained it at another tick than in the sound run.
            assert np.isfinite(a[bad]).all()
    failing = [r for r in reports if r.forecast_failed]
    assert [r.tick for r in failing] == [12, 13, 14]
    assert all(set(r.forecast_failed) == {bad} for r in failing)
    # Escalated once for the episode, naming the model and the error; cleared once the stream forecasts again.
    escalations = [e for r in reports for e in r.escalations if e.kind == "forecast-failed"]
    assert [(e.stream, e.tick, e.severity) for e in escalations] == [(bad, 12, 3)]
    expected = {"raise": "RuntimeError: z3 cannot be forecast", "nan": "non-finite value(s) (nan)",
                "inf": "non-finite value(s) (inf)", "short": "forecasts for 24 timestamps"}[mode]
    assert expected in escalations[0].message and "trained through tick" in escalations[0].message
    book = EscalationBook()
    for r in reports:
        book.record(r.tick, r.escalations, r.cleared)
    item = book.items.index(escalations[0])
    assert book.resolved_tick[item] == 15


@pytest.mark.parametrize("policy", ["mlma", "page-hinkley"])
def test_actuals_without_a_forecast_are_no_data_saying_why(fleet, frame, monkeypatch, policy):
    """The ticks whose actuals found no forecast (the model failed the tick before) are not scored: no-data,
    with a reason that tells them from a silent stream's."""
    bad = int(np.flatnonzero(fleet.ids == bad_id(frame))[0])
    _, reports = run_agent(fleet, monkeypatch, "raise", 12, 15, policy)
    for r in reports[1:]:
        unscored = r.tick in (13, 14, 15)
        assert (r.decision.verdict[bad] == Verdict.NO_DATA) == unscored, r.tick
        assert ("no forecast was served" in str(r.decision.reason[bad])) == unscored, r.tick
        assert not any("no forecast was served" in str(x) for i, x in enumerate(r.decision.reason) if i != bad)


def test_failures_repeat_as_one_escalation_per_failing_model(fleet, frame, monkeypatch):
    """A new model that fails too is escalated again (a new fact); the same model failing again is not."""
    from mlma.agent import Controls

    bad = int(np.flatnonzero(fleet.ids == bad_id(frame))[0])
    force = np.arange(fleet.n_streams) == bad
    _, reports = run_agent(fleet, monkeypatch, "raise", 10, 100, "never",
                           controls={14: Controls(force_retrain=force, force_direct=force)})
    assert [r.tick for r in reports if r.retrained[bad]] == [14]
    escalations = [e for r in reports for e in r.escalations if e.kind == "forecast-failed"]
    assert [e.tick for e in escalations] == [10, 14]
    assert "trained through tick 14" in escalations[1].message
    assert sum(len(r.forecast_failed) for r in reports) == fleet.n_ticks - 1 - 10


def test_predict_fleet_isolated_falls_back_to_each_stream_alone(fleet, frame, monkeypatch):
    """The fleet-wide call that raises is asked stream by stream: every other stream gets what the strict
    path gives without the bad one."""
    bad = int(np.flatnonzero(fleet.ids == bad_id(frame))[0])
    service = ModelService(fleet, FragileRidge(CTX), CTX, train_window_ticks=10)
    keys = [ModelKey(s, 12) for s in range(fleet.n_streams)]
    monkeypatch.setattr(FragileRidge, "mode", None)
    service.fit(keys)
    expected = service.predict_many(keys, 13)
    monkeypatch.setattr(FragileRidge, "mode", "raise")
    fresh = ModelService(fleet, FragileRidge(CTX), CTX, train_window_ticks=10)
    fresh._models = dict(service._models)
    with pytest.raises(ForecastError, match=rf"1 of {fleet.n_streams} stream\(s\).*{bad_id(frame)}.*RuntimeError"):
        fresh.predict_many(keys, 13)
    got = fresh.predict_many(keys, 13, on_error="skip")
    others = np.arange(fleet.n_streams) != bad
    np.testing.assert_array_equal(got[others], expected[others])
    assert np.isnan(got[bad]).all()
    assert fresh.forecast_failures == {(keys[bad], 13): "RuntimeError: z3 cannot be forecast"}
    # The strict function still raises; the isolated one names the row.
    models = [service.get(k).model for k in keys]
    from mlma.training import fleet_history

    history = fleet_history(fleet, range(fleet.n_streams), 13, 10)
    with pytest.raises(RuntimeError, match="z3"):
        predict_fleet(models, history)
    values, errors = predict_fleet_isolated(models, history)
    assert list(errors) == [bad]
    np.testing.assert_array_equal(values[others], expected[others])


class ShardFailingExecutor(InlineExecutor):
    """Runs calls here, says it has two slots, and loses the second forecast shard (a worker that died)."""

    slots = 2

    def __init__(self) -> None:
        self.shards = 0

    def submit(self, fn, /, *args, **kwargs) -> Future:
        if fn.__name__ == "_predict_shard":
            self.shards += 1
            if self.shards % 2 == 0:
                future: Future = Future()
                future.set_exception(ConnectionError("worker lost"))
                return future
        return super().submit(fn, *args, **kwargs)


def test_a_shard_lost_on_the_executor_is_forecast_here_and_the_tick_goes_on(fleet, monkeypatch):
    monkeypatch.setattr(FragileRidge, "mode", None)
    keys = [ModelKey(s, 12) for s in range(fleet.n_streams)]
    inline = ModelService(fleet, FragileRidge(CTX), CTX, train_window_ticks=10)
    inline.fit(keys)
    executor = ShardFailingExecutor()
    sharded = ModelService(fleet, FragileRidge(CTX), CTX, train_window_ticks=10, executor=executor,
                           parallel_threshold=1, shard_forecasts=True)
    sharded._models = dict(inline._models)
    with pytest.warns(RuntimeWarning, match=r"shard of 4 stream\(s\).*ConnectionError: worker lost.*this process"):
        forecasts = sharded.predict_many(keys, 13)
    assert executor.shards == 2
    np.testing.assert_array_equal(forecasts, inline.predict_many(keys, 13))


def test_a_backtest_with_a_failing_model_runs_and_escalates_once(frame, monkeypatch):
    """A whole backtest: the bad stream never forecasts, the others are scored as with a sound model."""
    config = dict(policies=["periodic:5"], initial_ticks=10, executor="inline", sample_streams=0)
    monkeypatch.setattr(FragileRidge, "mode", None)
    clean = run_backtest(frame, BacktestConfig(model=FragileRidge(CTX), **config))
    monkeypatch.setattr(FragileRidge, "mode", "raise")
    broken = run_backtest(frame, BacktestConfig(model=FragileRidge(CTX), **config))
    bad = bad_id(frame)
    a = broken.per_stream.set_index("unique_id").drop(index=bad)
    b = clean.per_stream.set_index("unique_id").drop(index=bad)
    pd.testing.assert_series_equal(a["mae"], b["mae"])
    assert broken.per_stream.set_index("unique_id").loc[bad, "n_scored"] == 0
    log = broken.escalation_log
    assert log.loc[log["kind"] == "forecast-failed", "unique_id"].tolist() == [bad]
    assert "forecast-failed" not in set(clean.escalation_log["kind"])
    # Counted at every forecast: the start-up's and each tick's but the last (which forecasts nothing).
    assert broken.summary[0]["forecast_failures"] == len(broken.per_tick)
    assert clean.summary[0]["forecast_failures"] == 0


# -- live operation ------------------------------------------------------------------------------------------
def _live_run(root: Path, frame: pd.DataFrame, monkeypatch, mode: str | None, db: str | None = None):
    from mlma.live import LiveAgent
    from mlma.project import init_project, load_config
    from mlma.store import Store

    init_project(root, db=db, model="test_forecast_isolation:FragileRidge")
    text = (root / "mlma.toml").read_text().replace('executor = "process"', 'executor = "inline"')
    (root / "mlma.toml").write_text(text.replace("initial_ticks = 0", "initial_ticks = 12"))
    config = load_config(root)
    day0 = frame["ds"].min().normalize()
    days = ((frame["ds"] - day0) // pd.Timedelta("1D")).to_numpy()
    monkeypatch.setattr(FragileRidge, "mode", None)
    out = {}
    with Store.open(config.store_url) as store:
        with LiveAgent(config, store=store) as live:
            store.ingest_frame(frame[days < 12], "history")
            live.step()
            for d in range(12, 17):
                monkeypatch.setattr(FragileRidge, "mode", mode if d >= 14 else None)
                store.ingest_frame(frame[days == d], f"day-{d}")
                result = live.step()
                out[result.tick] = (store.forecasts(result.tick), result.summary)
        out["escalations"] = store.escalations()
        out["audit"] = store.audit_log(action="forecast-failed")
        from mlma.metrics import render_metrics

        out["metrics"] = render_metrics(store)[0].decode()
    return out


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_live_ticks_go_on_when_one_stream_cannot_be_forecast(tmp_path, frame, monkeypatch, db, request):
    url = None
    if db == "postgresql":
        from mlma.store.testing import postgres_schema

        server = request.getfixturevalue("postgres_server")
        schema = postgres_schema(server)
        url = schema.__enter__()
        request.addfinalizer(lambda: schema.__exit__(None, None, None))
    monkeypatch.syspath_prepend(str(Path(__file__).parent))
    bad = bad_id(frame)
    clean = _live_run(tmp_path / "clean", frame, monkeypatch, None)
    broken = _live_run(tmp_path / "broken", frame, monkeypatch, "raise", db=url)
    for k in range(12, 17):
        forecasts, summary = broken[k]
        expected, _ = clean[k]
        assert summary.forecast_failures == (1 if k >= 14 else 0)
        if k >= 14:
            assert bad not in set(forecasts["unique_id"])  # nothing written for it
        pd.testing.assert_frame_equal(forecasts[forecasts["unique_id"] != bad].reset_index(drop=True),
                                      expected[expected["unique_id"] != bad].reset_index(drop=True))
    esc = broken["escalations"]
    failed = esc[esc["kind"] == "forecast-failed"]
    assert failed["unique_id"].tolist() == [bad] and failed["tick"].tolist() == [14]
    assert "RuntimeError: z3 cannot be forecast" in failed["message"].iloc[0]
    audit = broken["audit"]
    assert len(audit) == 3 and (audit["target"] == f"stream:{bad}").all()
    assert all(p["version"] >= 1 and p["slot"] == "champion" for p in audit["params"])
    # The escalation names the registry version that failed, the one the audit log records for that tick.
    first, = [p["version"] for p in audit["params"] if p["tick"] == 14]
    assert failed["message"].iloc[0].startswith(f"registry version {first}: the serving model")
    assert "mlma_forecast_failures_total 3.0" in broken["metrics"]
    assert 'mlma_escalations' in broken["metrics"] and 'kind="forecast-failed"' in broken["metrics"]


def test_a_challenger_that_cannot_forecast_in_shadow_is_rejected_and_escalated(fleet, frame, monkeypatch):
    """A re-trained model in shadow whose forecast fails is rejected at once (it must not serve), with its own
    escalation (severity 2), while the champion's failure to forecast is escalated separately."""
    from mlma.agent import Controls

    bad = int(np.flatnonzero(fleet.ids == bad_id(frame))[0])
    force = np.arange(fleet.n_streams) == bad
    issued, reports = run_agent(fleet, monkeypatch, "raise", 13, 14, "mlma",
                                controls={12: Controls(force_retrain=force)})
    by_tick = {r.tick: r for r in reports}
    assert by_tick[12].challengers == [bad]
    judged = by_tick[13]
    assert set(judged.shadow_failed) == {bad} and judged.rejected[bad] and not judged.promoted[bad]
    assert judged.checks[bad].result == "rejected"
    assert set(judged.forecast_failed) == {bad}  # the champion failed too while the model failed
    kinds = sorted((e.severity, e.message.split(" (")[0]) for e in judged.escalations if e.kind == "forecast-failed")
    assert kinds == [(2, "the re-trained model"), (3, "the serving model")]
    slots = sorted((e.severity, e.slot) for e in judged.escalations if e.kind == "forecast-failed")
    assert slots == [(2, "challenger"), (3, "champion")]
    assert not by_tick[14].shadow_failed and not by_tick[14].forecast_failed
    assert np.isfinite(issued[14 - 9][bad]).all()  # forecast again by the champion


def test_live_operation_names_the_registry_version_of_the_model_in_its_slot():
    from mlma.escalations import Escalation
    from mlma.live import name_model_versions

    versions = {"champion": np.array([3, 4, -1]), "challenger": np.array([-1, 9, -1])}
    escalations = [Escalation(0, 5, "forecast-failed", 3, "the serving model failed", slot="champion"),
                   Escalation(1, 5, "forecast-failed", 2, "the re-trained model failed", slot="challenger"),
                   Escalation(1, 5, "forecast-failed", 3, "the serving model failed", slot="champion"),
                   Escalation(2, 5, "forecast-failed", 3, "a model with no version", slot="champion"),
                   Escalation(-1, 5, "data-quality", 3, "fleet-wide"), Escalation(0, 5, "silent", 1, "no actuals")]
    assert [e.message for e in name_model_versions(escalations, versions)] == [
        "registry version 3: the serving model failed", "registry version 9: the re-trained model failed",
        "registry version 4: the serving model failed", "a model with no version", "fleet-wide", "no actuals"]
    with pytest.raises(ValueError, match="not about one model"):
        escalations[-1].naming_version(3)
    with pytest.raises(ValueError, match="unknown model slot 'shadow'"):
        Escalation(0, 5, "forecast-failed", 3, "x", slot="shadow")
