"""A team's own model that misbehaves for one stream costs that stream only: in a backtest and live, inline and
on a process pool, the other streams get their models and forecasts, and the culprit is named with its error."""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd
import pytest

from mlma.backtest import BacktestConfig, run_backtest
from mlma.live import LiveAgent
from mlma.project import load_config
from mlma.simulate import simulate_platform
from mlma.store import Store
from test_live import FIRST_TICK, day_chunks, make_project

# Each model misbehaves only for histories whose mean is above $BAD_ABOVE: the busiest zone.
HOSTILE_MODELS = '''
import os, sys, threading
import numpy as np
from mlma.models import InsufficientDataError, SeasonalNaive


def bad(y):
    return np.nanmean(y) > float(os.environ["BAD_ABOVE"])


class FitRaises(SeasonalNaive):
    def fit(self, ds, y, X=None):
        if bad(y):
            {}["a key the model's author forgot"]
        return super().fit(ds, y, X)


class FitExits(SeasonalNaive):
    def fit(self, ds, y, X=None):
        if bad(y):
            sys.exit(3)
        return super().fit(ds, y, X)


class Unpicklable(SeasonalNaive):
    def fit(self, ds, y, X=None):
        super().fit(ds, y, X)
        if bad(y):
            self.guard = threading.Lock()  # pickle refuses a lock
        return self


class KillsItsWorker(SeasonalNaive):
    """Ends the process fitting it, as a crash in native code or the out-of-memory killer would; in a pool
    worker only (inline it would end the agent itself, which no isolation in the same process can prevent)."""
    def fit(self, ds, y, X=None):
        import multiprocessing
        if bad(y) and multiprocessing.current_process().name != "MainProcess":
            os._exit(7)
        return super().fit(ds, y, X)


class PredictExits(SeasonalNaive):
    def predict(self, ds, y, future_ds, X=None, future_X=None):
        if bad(y):
            sys.exit(4)
        return super().predict(ds, y, future_ds, X, future_X)


class ShiftsTheFuture(SeasonalNaive):
    def predict(self, ds, y, future_ds, X=None, future_X=None):
        if bad(y):
            future_ds += np.timedelta64(1, "h")  # in place: the timestamps every stream's forecasts carry
        return super().predict(ds, y, future_ds, X, future_X)


class AlwaysFallsBack(SeasonalNaive):
    """A ValueError is "this history cannot support the model": the stream falls back to seasonal naive."""
    def fit(self, ds, y, X=None):
        raise ValueError("option 'damping' must be below 1")


class FitRefuses(SeasonalNaive):
    """A ValueError for one stream: it falls back, which more history will not end."""
    def fit(self, ds, y, X=None):
        if bad(y):
            raise ValueError("the solver did not converge")
        return super().fit(ds, y, X)


class FitShortOfData(SeasonalNaive):
    """Says its history is too short for one stream: a data-caused fall-back, which more history ends."""
    def fit(self, ds, y, X=None):
        if bad(y):
            raise InsufficientDataError("4 training rows with every lag known, needs 48")
        return super().fit(ds, y, X)


class FitShortOfDataLater(SeasonalNaive):
    """Fits every stream until $REFUSE_FROM, then says one stream's window is too short for it (an outage)."""
    def fit(self, ds, y, X=None):
        if bad(y) and ds[-1] >= np.datetime64(os.environ["REFUSE_FROM"]):
            raise InsufficientDataError("4 training rows with every lag known, needs 48")
        return super().fit(ds, y, X)


class FitRefusesLater(SeasonalNaive):
    """Fits every stream until $REFUSE_FROM, then raises a ValueError for one (a model upgraded in place)."""
    def fit(self, ds, y, X=None):
        if bad(y) and ds[-1] >= np.datetime64(os.environ["REFUSE_FROM"]):
            raise ValueError("the solver did not converge")
        return super().fit(ds, y, X)


class AbsurdForecasts(SeasonalNaive):
    """Finite, but no forecast of the data: scored, its losses overflowed float32 and the stream went untested."""
    def predict(self, ds, y, future_ds, X=None, future_X=None):
        y_hat = super().predict(ds, y, future_ds, X, future_X)
        return y_hat * 0 + 1e300 if bad(y) else y_hat


class ComplexForecasts(SeasonalNaive):
    def predict(self, ds, y, future_ds, X=None, future_X=None):
        y_hat = super().predict(ds, y, future_ds, X, future_X)
        return y_hat + 1j if bad(y) else y_hat
'''

TICKS = 5  # after the start-up: the culprit's first fit fails at the start-up and on every retry


@pytest.fixture(scope="module")
def platform() -> pd.DataFrame:
    return simulate_platform(10, FIRST_TICK + TICKS, seed=4, event_rate=0).data


def make_hostile(tmp_path, monkeypatch, platform: pd.DataFrame) -> str:
    """The module importable here and in pool workers (forked), and the busiest zone of ``platform`` as the
    culprit."""
    (tmp_path / "hostile.py").write_text(HOSTILE_MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("hostile", None)
    day0 = platform["ds"].min().normalize()
    history = platform[platform["ds"] < day0 + pd.Timedelta(days=FIRST_TICK)]
    means = history.groupby("unique_id")["y"].mean().sort_values()
    monkeypatch.setenv("BAD_ABOVE", str((means.iloc[-1] + means.iloc[-2]) / 2))
    # A stream's mean moves a little as the window slides; the gap between the two busiest is wide enough here.
    assert means.iloc[-1] > 1.2 * means.iloc[-2]
    return str(means.index[-1])


@pytest.fixture()
def hostile(tmp_path, platform, monkeypatch):
    return make_hostile(tmp_path, monkeypatch, platform)


def run_live(root, platform) -> tuple[Store, pd.DataFrame]:
    config = load_config(root)
    store = Store.open(config.store_url)
    with LiveAgent(config, store=store) as live:
        for chunk in list(day_chunks(platform, FIRST_TICK))[:TICKS + 1]:
            store.ingest_frame(chunk, f"day-{chunk['ds'].min()}")
            live.step()
    return store, store.escalations()


@pytest.mark.parametrize("model, error", [
    ("FitRaises", "the model's fit raised KeyError: \"a key the model's author forgot\""),
    ("FitExits", "the model's fit raised SystemExit(3): the model called sys.exit"),
    ("Unpicklable", "the fitted model cannot be pickled (TypeError: cannot pickle '_thread.lock' object)"),
])
@pytest.mark.parametrize("executor", ['"inline"', '"process:2"'])
def test_a_fit_that_fails_for_one_stream_costs_that_stream_only(tmp_path, platform, hostile, model, error,
                                                               executor):
    root = make_project(tmp_path / "p", model=f"hostile:{model}", executor=executor)
    store, escalations = run_live(root, platform)
    with store:
        done = store.ticks()
        assert (done["status"] == "done").sum() == TICKS + 1
        served = store.forecasts(store.last_done_tick())
        others = set(platform["unique_id"]) - {hostile}
        assert set(served["unique_id"]) == others  # every other stream has a model and its forecasts
        failed = escalations[escalations["kind"] == "fit-failed"]
        assert failed["unique_id"].tolist() == [hostile], escalations
        message = failed["message"].iloc[0]
        assert message.startswith("fitting its first model failed 3 times in a row; no model serves it"), message
        assert error in message, message


def test_a_fit_that_kills_its_pool_worker_costs_that_stream_only_and_the_pool_is_renewed(tmp_path, platform,
                                                                                         hostile):
    """The worker's death fails every chunk the pool had; those streams are fitted again one at a time on a
    fresh pool, so only the stream that kills its worker fails, at every tick, and the others are served."""
    root = make_project(tmp_path / "p", model="hostile:KillsItsWorker", executor='"process:2"')
    store, escalations = run_live(root, platform)
    with store:
        assert (store.ticks()["status"] == "done").sum() == TICKS + 1
        assert set(store.forecasts(store.last_done_tick())["unique_id"]) == set(platform["unique_id"]) - {hostile}
        failed = escalations[escalations["kind"] == "fit-failed"]
        assert failed["unique_id"].tolist() == [hostile], escalations
        assert "the worker process fitting it died" in failed["message"].iloc[0]


@pytest.mark.parametrize("zones", [40, 6])
def test_a_backtest_on_a_pool_whose_worker_dies_scores_every_other_stream(tmp_path, monkeypatch, zones):
    """One stream's fit ends its pool worker. Every other stream is fitted and scored on every tick; the culprit
    fails alone, at the start-up and at each tick's retry of a first model. Even a batch of one fit goes to the
    pool (6 zones): batches of fewer than 32 fits ran in the backtest's own process, where a crash of native
    code ends the backtest (this model crashes only in a pool worker, so there the culprit's fits succeeded)."""
    wide = simulate_platform(zones, FIRST_TICK + 3, seed=4, event_rate=0).data
    culprit = make_hostile(tmp_path, monkeypatch, wide)
    config = BacktestConfig(policies=["never"], model="hostile:KillsItsWorker", initial_ticks=FIRST_TICK,
                            frontier=False, bootstrap=0, executor="process:2", sample_streams=0)
    result = run_backtest(wide, config)
    scored = result.per_stream.set_index("unique_id")["n_scored"]
    assert scored[culprit] < 3 * 24
    assert (scored.drop(index=culprit) == 3 * 24).all(), scored
    assert result.summary[0]["fit_failures"] == 4                 # the start-up's and three ticks' retries


@pytest.mark.parametrize("model, error", [
    ("PredictExits", "SystemExit(4): the model called sys.exit"),
    ("ShiftsTheFuture", "ValueError: output array is read-only"),
    ("ComplexForecasts", "ComplexForecasts.predict returned complex128 values as forecasts, not real numbers"),
    ("AbsurdForecasts", "value(s) more than 1,000,000 times the largest of its history"),
])
def test_a_forecast_that_fails_for_one_stream_costs_that_streams_forecast_only(tmp_path, platform, hostile,
                                                                              model, error):
    root = make_project(tmp_path / "p", model=f"hostile:{model}")
    store, escalations = run_live(root, platform)
    with store:
        assert (store.ticks()["status"] == "done").sum() == TICKS + 1
        k = store.last_done_tick()
        served = store.forecasts(k)
        assert set(served["unique_id"]) == set(platform["unique_id"]) - {hostile}
        # Every stream's forecasts carry the tick's own timestamps (a model that shifted them in place moved
        # every stream's before: the fleet shares them).
        day0 = platform["ds"].min().normalize()
        tick_hours = pd.date_range(day0 + pd.Timedelta(days=k + 1), periods=24, freq="h")
        for _, rows in served.groupby("unique_id"):
            assert pd.DatetimeIndex(rows["ds"]).equals(tick_hours)
        failed = escalations[escalations["kind"] == "forecast-failed"]
        assert set(failed["unique_id"]) == {hostile}, escalations
        assert all(error in m for m in failed["message"]), failed["message"].tolist()


# Not Unpicklable: an inline backtest keeps its models in memory and never pickles them.
@pytest.mark.parametrize("model", ["FitRaises", "FitExits", "PredictExits", "ShiftsTheFuture"])
def test_a_backtest_scores_every_other_stream_of_a_model_that_fails_for_one(tmp_path, platform, hostile, model):
    config = BacktestConfig(policies=["never", "always"], model=f"hostile:{model}", initial_ticks=FIRST_TICK,
                            frontier=False, bootstrap=0, sample_streams=0)
    result = run_backtest(platform, config)
    per_stream = result.per_stream.set_index(["policy", "unique_id"])
    scored = per_stream["n_scored"].unstack("policy")
    assert (scored.loc[hostile] == 0).all()
    assert (scored.drop(index=hostile) == TICKS * 24).all().all(), scored
    assert np.isfinite(result.summary[0]["mae"])


def test_a_stream_whose_fit_fails_at_the_start_up_is_escalated_and_a_refit_that_fails_is_not_served(
        tmp_path, platform, hostile, monkeypatch):
    """A fit that raised a ValueError for one stream put it on a fall-back; at the start-up that was taken for
    "not news" and never escalated (the stream ran on seasonal naive under the model's name for good), and a
    later re-training that fell back so replaced the serving model, unsaid. Now the first is a ``cold``
    escalation naming the error, and the second a failed re-training: the serving model stays, and after
    fit_failure_limit in a row it is escalated ``fit-failed``."""
    config = BacktestConfig(policies=["always"], model="hostile:FitRefuses", initial_ticks=FIRST_TICK,
                            frontier=False, bootstrap=0, sample_streams=0)
    log = run_backtest(platform, config).escalation_log
    cold = log[(log["kind"] == "cold")]
    assert cold["unique_id"].tolist() == [hostile], log
    assert "FitRefuses fit failed: the solver did not converge" in cold["message"].iloc[0]
    # The same fit failing from tick FIRST_TICK + 1 on: the re-trainings fail, the first model serves on.
    day0 = platform["ds"].min().normalize()
    monkeypatch.setenv("REFUSE_FROM", str((day0 + pd.Timedelta(days=FIRST_TICK + 1)).to_datetime64()))
    config = BacktestConfig(policies=["never", "always"], model="hostile:FitRefusesLater", initial_ticks=FIRST_TICK,
                            frontier=False, bootstrap=0, sample_streams=0)
    result = run_backtest(platform, config)
    retrains = result.retrain_log[(result.retrain_log["policy"] == "always")
                                  & (result.retrain_log["unique_id"] == hostile)]
    assert retrains["outcome"].tolist() == ["served"] + ["failed"] * (TICKS - 1), retrains
    mae = result.per_stream.set_index(["policy", "unique_id"])["mae"]
    log = result.escalation_log
    failed = log[(log["policy"] == "always") & (log["kind"] == "fit-failed")]
    assert failed["unique_id"].tolist() == [hostile] and "re-training fell back" in failed["message"].iloc[0]
    assert not (log["kind"] == "cold").any(), log
    assert np.isfinite(mae.loc[("always", hostile)])


def test_the_backtest_says_a_failed_re_training_kept_its_model_and_a_failed_first_fit_cost_ticks(
        tmp_path, platform, hostile, monkeypatch):
    """A re-training whose fit failed was said as "fit(s) failed: the ticks they cost were not scored", and its
    fall-back as "forecast by seasonal naive", though its stream's serving model stayed and forecast on: the
    command's lines now tell the two apart."""
    from typer.testing import CliRunner

    from mlma.cli import app

    data = tmp_path / "platform.parquet"
    platform.to_parquet(data)
    day0 = platform["ds"].min().normalize()
    monkeypatch.setenv("REFUSE_FROM", str((day0 + pd.Timedelta(days=FIRST_TICK + 1)).to_datetime64()))

    def backtest(model: str) -> str:
        done = CliRunner().invoke(app, ["backtest", "--data", str(data), "--policies", "always", "--no-frontier",
                                        "--bootstrap", "0", "--initial-ticks", str(FIRST_TICK), "--model",
                                        f"hostile:{model}", "--out", str(tmp_path / model)], terminal_width=400)
        assert done.exit_code == 0, done.output
        return " ".join(done.output.split())

    text = backtest("FitRefusesLater")
    assert (f"note: always: {TICKS - 1} fit(s) of streams that had a model failed (re-trainings, retries of a "
            "fall-back); each stream's model stayed" in text), text
    assert "fell back to a simpler model (fit failed 4): those streams were forecast by seasonal naive or the " \
           "mean, not hostile:FitRefusesLater, except re-trainings whose own fit failed" in text, text
    assert "were not scored" not in text, text
    text = backtest("FitRaises")
    assert "fit(s) of streams without a model yet and 0 forecast(s) failed: the ticks they cost were not " \
           "scored" in text, text
    assert "fit(s) of streams that had a model failed" not in text, text
    text = backtest("FitShortOfDataLater")
    assert "(short history 4): those streams were forecast by seasonal naive or the mean" in text, text
    assert "except re-trainings" not in text and "failed" not in text, text


def test_a_model_short_of_data_for_a_stream_is_a_short_history_not_a_failed_fit(platform, hostile):
    """A model that raises InsufficientDataError says the history is too short for it (ridge: too few rows with
    every lag known): that fall-back was labelled "fit failed" and escalated ``cold`` at the start-up as a model
    more history will not fix. It is a short history: counted so, retried, and not escalated while the training
    window can still grow; the same stream with a ValueError is a failed fit (the test above)."""
    config = BacktestConfig(policies=["never"], model="hostile:FitShortOfData", initial_ticks=FIRST_TICK,
                            frontier=False, bootstrap=0, sample_streams=0)
    result = run_backtest(platform, config)
    assert set(result.config["fits_fell_back"]) == {"short history"}, result.config["fits_fell_back"]
    assert result.config["fits_fell_back"]["short history"] >= 1
    assert not (result.escalation_log["kind"] == "cold").any(), result.escalation_log
    refused = BacktestConfig(policies=["never"], model="hostile:FitRefuses", initial_ticks=FIRST_TICK,
                             frontier=False, bootstrap=0, sample_streams=0)
    assert set(run_backtest(platform, refused).config["fits_fell_back"]) == {"fit failed"}


def test_a_re_training_short_of_data_is_served_as_a_short_history_fall_back(platform, hostile, monkeypatch):
    """A re-training whose model says its window holds too little data (an outage in a capped window) falls back
    as a window under ``min_history`` does, and is served so: it is not a failed fit, and not escalated
    ``fit-failed`` (on pedestrian's outages, keeping the old model instead cost accuracy and raised the labour:
    docs/models.md)."""
    day0 = platform["ds"].min().normalize()
    monkeypatch.setenv("REFUSE_FROM", str((day0 + pd.Timedelta(days=FIRST_TICK + 1)).to_datetime64()))
    config = BacktestConfig(policies=["always"], model="hostile:FitShortOfDataLater", initial_ticks=FIRST_TICK,
                            frontier=False, bootstrap=0, sample_streams=0)
    result = run_backtest(platform, config)
    assert result.config["fits_fell_back"] == {"short history": TICKS - 1}, result.config["fits_fell_back"]
    assert (result.retrain_log["outcome"] == "served").all(), result.retrain_log
    assert not result.escalation_log["kind"].isin(["fit-failed", "cold"]).any(), result.escalation_log
    assert result.summary[0]["fit_failures"] == 0


def test_a_model_that_falls_back_on_every_stream_is_said_with_the_tick(tmp_path, platform, hostile):
    """A wrong option that every fit refuses put the whole fleet on seasonal naive in the model's place, and the
    start-up said "10 first models for 10 streams"; now the tick's line says they run on a fall-back, and why."""
    root = make_project(tmp_path / "p", model="hostile:AlwaysFallsBack")
    config = load_config(root)
    with Store.open(config.store_url) as store, LiveAgent(config, store=store) as live:
        store.ingest_frame(next(iter(day_chunks(platform, FIRST_TICK))), "history")
        started = live.step()
    assert started.summary.initial_fits == 10
    assert any(note.startswith("10 of the 10 models fitted this tick run on a fall-back because the model's fit "
                               "failed (e.g. ") and "option 'damping' must be below 1" in note
               for note in started.notes), started.notes
    assert "note: 10 of the 10 models" in str(started)


def test_a_start_up_on_which_most_models_need_more_history_says_so(tmp_path, platform):
    """MSTL with a yearly season on months of data, or lightgbm on three days of hourly data: every stream ran on
    a fall-back for short history, and the start-up said "10 first models for 10 streams"."""
    root = make_project(tmp_path / "p", model="lightgbm", initial_ticks=3)
    config = load_config(root)
    with Store.open(config.store_url) as store, LiveAgent(config, store=store) as live:
        store.ingest_frame(next(iter(day_chunks(platform, 3))), "history")
        started = live.step()
    notes = [n for n in started.notes if "run on a fall-back because their history is shorter" in n]
    assert len(notes) == 1 and notes[0].startswith("10 of the 10 models fitted this tick"), started.notes
    assert "they are fitted again as history grows" in notes[0]


# -- fits that hang or crash on a pool: the culprit's trouble costs its stream only -----------------------------
# Each model misbehaves only in a pool worker (inline it would hang or end the test itself), and only for the
# histories whose mean is in $HANG_MEANS / $CRASH_MEANS (rounded): the test picks its culprits by stream.
STUCK_MODELS = '''
import multiprocessing, os, time
import numpy as np
from mlma.models import SeasonalNaive


def listed(y, name):
    means = {round(float(m), 6) for m in os.environ.get(name, "").split(",") if m}
    return round(float(np.nanmean(y)), 6) in means


class HangsOrCrashes(SeasonalNaive):
    def fit(self, ds, y, X=None):
        if multiprocessing.current_process().name != "MainProcess":
            if listed(y, "CRASH_MEANS"):
                os._exit(7)
            if listed(y, "HANG_MEANS"):
                time.sleep(120)
        return super().fit(ds, y, X)


class HangsAboveBadAbove(SeasonalNaive):
    """Hangs for the busiest stream (as the hostile models pick it), in a pool worker."""
    def fit(self, ds, y, X=None):
        if multiprocessing.current_process().name != "MainProcess" and np.nanmean(y) > float(os.environ["BAD_ABOVE"]):
            time.sleep(120)
        return super().fit(ds, y, X)
'''


def make_stuck(tmp_path, monkeypatch) -> None:
    (tmp_path / "stuck.py").write_text(STUCK_MODELS)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("stuck", None)


def test_a_fit_that_hangs_on_a_pool_costs_its_chunk_once_then_only_its_own_stream(tmp_path, platform, hostile,
                                                                                  monkeypatch):
    """A chunk not back within fit_timeout failed every stream in it, at every tick, and they were all escalated
    fit-failed. Its streams are now suspects, kept in the agent's state: their next fits run one stream per task,
    so the healthy ones get their models and only the stream whose fit hangs fails (escalated), fitted alone."""
    make_stuck(tmp_path, monkeypatch)
    root = make_project(tmp_path / "p", model="stuck:HangsAboveBadAbove", executor='"process:2"',
                        fit_timeout_seconds=2)
    started = time.monotonic()
    store, escalations = run_live(root, platform)
    took = time.monotonic() - started
    with store:
        assert (store.ticks()["status"] == "done").sum() == TICKS + 1
        others = set(platform["unique_id"]) - {hostile}
        assert set(store.forecasts(store.last_done_tick())["unique_id"]) == others
        failed = escalations[escalations["kind"] == "fit-failed"]
        assert failed["unique_id"].tolist() == [hostile], escalations
        assert "no result within fit_timeout=2 s (fitted alone)" in failed["message"].iloc[0]
        audit = store.audit_log(action="fit-failed")
        # The start-up's fits of the culprit's chunk: the streams that shared it are told they may be innocent.
        mates = audit[audit["target"] != f"stream:{hostile}"]
        assert len(mates) >= 1 and mates["reason"].str.contains("may only have shared its chunk of").all(), mates
        assert (audit["target"] == f"stream:{hostile}").sum() == TICKS + 1   # the culprit fails every tick
    assert took < 60, f"{took:.0f} s"


def test_a_backtest_with_a_fit_timeout_ends_and_scores_every_stream_but_the_one_whose_fit_hangs(tmp_path, platform,
                                                                                             hostile, monkeypatch):
    """A backtest had no fit timeout: one stream whose fit hung kept a pool or cluster backtest waiting for
    good (only Ctrl-C ended it). With ``fit_timeout`` the hung fits fail, and the run scores every other stream
    at every tick, under each policy."""
    make_stuck(tmp_path, monkeypatch)
    config = BacktestConfig(policies=["never", "always"], model="stuck:HangsAboveBadAbove", initial_ticks=FIRST_TICK,
                            executor="process:2", fit_timeout=2, frontier=False, bootstrap=0, sample_streams=0)
    started = time.monotonic()
    result = run_backtest(platform, config)
    took = time.monotonic() - started
    scored = result.per_stream.set_index(["policy", "unique_id"])["n_scored"].unstack("policy")
    assert (scored.loc[hostile] == 0).all(), scored
    # The start-up's chunk-mates of the culprit fail with it once (which stream of a chunk hung cannot be told)
    # and get their models at the next tick, as live; the other chunks' streams are scored from the first tick.
    others = scored.drop(index=hostile)
    assert (others >= (TICKS - 1) * 24).all().all() and (others == TICKS * 24).any().all(), scored
    failures = {row["policy"]: row["fit_failures"] for row in result.summary}
    # The culprit fails at the start-up of each policy and, under `always`, at each tick.
    assert failures["never"] >= 1 and failures["always"] >= TICKS + 1, failures
    assert took < 60, f"{took:.0f} s"


def test_a_backtest_fit_timeout_is_refused_without_an_executor_that_can_stop_a_fit():
    with pytest.raises(ValueError, match="fit_timeout needs an executor that runs fits elsewhere"):
        BacktestConfig(policies=["never"], fit_timeout=5)
    for value in (0, 1e10, float("nan")):  # past 30 days the platform's timers overflow: every fit failed
        with pytest.raises(ValueError, match="fit_timeout must be a number of seconds above 0 and at most 2,592,000"):
            BacktestConfig(policies=["never"], executor="process:2", fit_timeout=value)


def test_a_start_up_whose_first_fits_failed_says_so_on_its_line(tmp_path, platform, hostile, monkeypatch):
    """A first fit that ran past fit_timeout left its streams without a model or a forecast, and the start-up's
    line said "10 first models for 10 streams, forecasts ... issued" all the same."""
    make_stuck(tmp_path, monkeypatch)
    root = make_project(tmp_path / "p", model="stuck:HangsAboveBadAbove", executor='"process:2"',
                        fit_timeout_seconds=2)
    config = load_config(root)
    with Store.open(config.store_url) as store, LiveAgent(config, store=store) as live:
        store.ingest_frame(next(iter(day_chunks(platform, FIRST_TICK))), "history")
        started = live.step()
    failed = started.summary.fit_failures
    assert failed >= 1
    assert (f"{started.summary.initial_fits} first models for 10 streams, {failed} failed fits (no model, so no "
            "forecast, for those streams yet)") in str(started)


def test_after_a_pool_crash_the_streams_are_refitted_at_once_within_the_calls_fit_timeout(tmp_path, platform,
                                                                                         monkeypatch):
    """After a worker's death broke the pool, its chunks' streams were fitted again one at a time, each with a
    fit_timeout of its own: one crash and two hangs took three times fit_timeout. They now run at once, one
    stream per single-worker pool, and the call's own deadline bounds them; the crash still names its stream,
    and the two hung fits, holding as many pools as the pool had workers, do not starve the others."""
    from mlma.data import make_tick_grid
    from mlma.fleet import FleetData
    from mlma.models import ForecastContext
    from mlma.training import ModelKey, ModelService, make_executor, terminate_executor

    make_stuck(tmp_path, monkeypatch)
    grid = make_tick_grid(platform, "1D", freq="h")
    fleet = FleetData(platform, "h", grid.boundaries)
    ctx = ForecastContext("h", season_length=24, horizon=24)
    end, window = FIRST_TICK, 14
    keys = [ModelKey(s, end) for s in range(fleet.n_streams)]
    means = [round(float(np.nanmean(fleet.history(k.stream, end, window).y)), 6) for k in keys]
    assert len(set(means)) == len(means)
    # process:2 makes 2 chunks of 5 streams: stream 0 crashes at the head of one (stream 1 would hang after
    # it), stream 5 hangs at the head of the other.
    crash, hangs = 0, (1, 5)
    monkeypatch.setenv("CRASH_MEANS", str(means[crash]))
    monkeypatch.setenv("HANG_MEANS", ",".join(str(means[s]) for s in hangs))
    pools = [make_executor("process:2")]

    def renew():
        terminate_executor(pools[-1])
        pools.append(make_executor("process:2"))
        return pools[-1]

    timeout = 3.0
    service = ModelService(fleet, "stuck:HangsOrCrashes", ctx, train_window_ticks=window, executor=pools[0],
                           fit_timeout=timeout, stores_models=True, renew_executor=renew)
    try:
        started = time.monotonic()
        fitted = service.fit(keys, on_error="skip")
        took = time.monotonic() - started
    finally:
        terminate_executor(pools[-1])
    assert [f is None for f in fitted] == [s in (crash, *hangs) for s in range(len(keys))]
    assert service.failures[keys[crash]].startswith("the worker process fitting it died")
    for s in hangs:
        assert service.failures[keys[s]] == "no result within fit_timeout=3 s (fitted alone)"
    assert set(service.suspects) == {crash, *hangs}   # their next fits run alone, after the chunks
    assert took < timeout + 1.5, f"the call took {took:.1f} s for a fit_timeout of {timeout:g} s"
