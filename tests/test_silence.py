"""A stream silent on a rhythm (a bank closed at weekends) is not escalated as silent, nor left without forecasts,
on a long weekend; a real outage still is (mlma.silence, the agent's and the policy's silence rules).

Found on the tuning panel bank-calls (five-minute calls, weekdays only): each Monday holiday made three ticks in
a row without actuals, a `silent` escalation and a Tuesday without a forecast."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlma.agent import Agent
from mlma.backtest import BacktestConfig, run_backtest
from mlma.live import LiveAgent
from mlma.silence import MAX_PERIOD, Silence
from mlma.project import init_project, load_config
from mlma.store import Store

MONDAY = pd.Timestamp("2025-03-03")
HOLIDAYS = (pd.Timestamp("2025-03-24"), pd.Timestamp("2025-04-21"))  # Mondays
OUTAGE = (pd.Timestamp("2025-04-09"), pd.Timestamp("2025-04-15"))   # Wednesday to Tuesday, both days without data


def weekday_runs(silence: Silence, weeks: int, *, holidays=(), outage=()) -> list[int]:
    """Feed ``weeks`` of daily ticks of one weekday-only stream; return its run after each tick."""
    runs = []
    for day in range(7 * weeks):
        seen = day % 7 < 5 and day not in holidays and day not in outage
        runs.append(int(silence.update(np.array([seen]))[0]))
    return runs


def test_weekends_and_holidays_are_the_rhythm_an_outage_is_not():
    silence = Silence(period=7)
    silence.reset(1)
    holidays = {7 * w for w in (4, 9, 13)}  # Mondays of weeks 4, 9 and 13
    runs = weekday_runs(silence, 16, holidays=holidays)
    # The first two weekends count (no rhythm known yet); after them, no run passes one tick: a holiday Monday
    # is the only tick that counts.
    assert runs[5:7] == [1, 2] and runs[12:14] == [1, 2]
    assert max(runs[14:]) == 1 and [d for d in range(14, len(runs)) if runs[d]] == sorted(holidays)

    # An outage of a week from a Wednesday: its weekdays count, its weekend holds the run.
    silence.reset(1)
    outage = set(range(7 * 6 + 2, 7 * 7 + 2))
    runs = weekday_runs(silence, 8, outage=outage)
    assert [runs[d] for d in sorted(outage)] == [1, 2, 3, 3, 3, 4, 5]
    assert runs[7 * 7 + 2] == 0  # back on the Wednesday after


def test_period_one_counts_every_silent_tick():
    """No rhythm (a yearly tick, or one season of ticks): the plain count of ticks since the last actuals."""
    rng = np.random.default_rng(4)
    observed = rng.random((300, 20)) < 0.6
    for period in (1, MAX_PERIOD + 1):
        silence = Silence(period=period)
        silence.reset(20)
        plain = np.zeros(20, dtype=np.int64)
        for row in observed:
            plain = np.where(row, 0, plain + 1)
            np.testing.assert_array_equal(silence.update(row), plain)


def test_ticks_before_a_launch_are_no_rhythm():
    """A stream that launched ten days ago and stops is counted from its first silent day: the days before its
    launch, when it reported nothing, are not taken for its weekly rhythm."""
    silence = Silence(period=7)
    silence.reset(2)
    launched = np.array([True, False])
    for _ in range(14):
        silence.update(np.array([True, False]), known=launched)
    launched[1] = True
    for _ in range(10):
        silence.update(np.array([True, True]), known=launched)
    runs = [silence.update(np.array([True, False]), known=launched)[1] for _ in range(4)]
    assert runs == [1, 2, 3, 4]


@pytest.mark.parametrize("period", [0, -7, 2.5, True, "7"])
def test_the_period_is_checked(period):
    with pytest.raises(ValueError, match="period .*whole number >= 1"):
        Silence(period=period)


def bank_and_shops(days: int = 63) -> pd.DataFrame:
    """Hourly data from a Monday: 'bank' reports on weekdays but the two holidays and, 'flaky-bank', also not
    during OUTAGE; two shops report every day."""
    rng = np.random.default_rng(11)
    ds = pd.date_range(MONDAY, periods=24 * days, freq="h")
    frames = []
    for i, uid in enumerate(["bank", "flaky-bank", "shop-a", "shop-b"]):
        level = 20 + 5 * i + 10 * np.sin(np.arange(len(ds)) * 2 * np.pi / 24)
        frame = pd.DataFrame({"unique_id": uid, "ds": ds, "y": np.round(level + rng.normal(0, 2, len(ds)), 2)})
        day = frame["ds"].dt.normalize()
        keep = pd.Series(True, index=frame.index)
        if uid.endswith("bank"):
            keep &= (frame["ds"].dt.day_of_week < 5) & ~day.isin(HOLIDAYS)
        if uid == "flaky-bank":
            keep &= (day < OUTAGE[0]) | (day > OUTAGE[1])
        frame = frame[keep]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def test_a_stream_launched_days_ago_is_escalated_when_it_stops():
    """The agent takes a stream's ticks before its first model for ticks with actuals: a shop launched on a
    Monday three weeks into the run that stops on Friday is escalated on Sunday, its third silent day, not taken
    to be silent by habit (it reported nothing one and two weeks before: it was not there)."""
    frame = bank_and_shops(days=49)
    frame = frame[frame["unique_id"] != "flaky-bank"]
    late = frame[frame["unique_id"] == "shop-a"].assign(unique_id="late-shop")
    day = late["ds"].dt.normalize()
    late = late[(day >= pd.Timestamp("2025-04-07"))
                & ((day < pd.Timestamp("2025-04-11")) | (day > pd.Timestamp("2025-04-14")))]
    result = run_backtest(pd.concat([frame, late], ignore_index=True),
                          BacktestConfig(policies=["mlma"], model="seasonal-naive", initial_ticks=14,
                                         sample_streams=0))
    silent = result.escalation_log[result.escalation_log["kind"] == "silent"]
    assert silent["unique_id"].tolist() == ["late-shop"]
    assert silent["tick_start"].tolist() == [pd.Timestamp("2025-04-13")]


def test_a_backtest_forecasts_the_bank_after_its_long_weekends_and_escalates_only_the_outage():
    frame = bank_and_shops()
    result = run_backtest(frame, BacktestConfig(policies=["mlma"], model="seasonal-naive", initial_ticks=14,
                                                sample_streams=0))
    silent = result.escalation_log[result.escalation_log["kind"] == "silent"]
    # flaky-bank misses Wed 9 to Tue 15 April: its third missing weekday is Friday the 11th (the weekend holds
    # the run at three, no second escalation); it is resolved when it reports again, on Wednesday the 16th.
    assert silent["unique_id"].tolist() == ["flaky-bank"]
    (row,) = silent.itertuples()
    assert row.tick_start == pd.Timestamp("2025-04-11")
    assert result.per_tick.loc[result.per_tick["tick"] == row.resolved_tick, "tick_start"].item() == \
        pd.Timestamp("2025-04-16")
    # The Tuesdays after the holidays are forecast and scored for every stream, both banks included.
    per_tick = result.per_tick.set_index("tick_start")
    for tuesday in HOLIDAYS:
        assert per_tick.loc[tuesday + pd.Timedelta("1D"), "n_scored"] == 4 * 24, tuesday


def test_a_live_project_keeps_the_rhythm_across_processes(tmp_path):
    """Each day a new process (the live agent restores the rhythm from the saved state): no silent escalation of
    the bank on its long weekends, its Tuesdays forecast; the outage of the other bank escalated once."""
    frame = bank_and_shops(days=50)
    init_project(tmp_path, model="seasonal-naive")
    text = (tmp_path / "mlma.toml").read_text().replace('executor = "process"', 'executor = "inline"')
    (tmp_path / "mlma.toml").write_text(text.replace("initial_ticks = 0", "initial_ticks = 14"))
    config = load_config(tmp_path)
    day = ((frame["ds"] - MONDAY) // pd.Timedelta("1D")).to_numpy()
    chunks = [frame[day < 14]] + [frame[day == d] for d in range(14, int(day.max()) + 1)]
    with Store.open(config.store_url) as store:
        for i, chunk in enumerate(chunks):
            store.ingest_frame(chunk, f"day-{i}")
            with LiveAgent(config, store=store) as live:
                live.step()
        escalations = store.escalations()
        silent = escalations[escalations["kind"] == "silent"]
        assert silent["unique_id"].tolist() == ["flaky-bank"]
        forecasts = store.forecasts()
    issued_for = forecasts.groupby("unique_id")["ds"].apply(lambda ds: set(ds.dt.normalize()))
    tuesdays = {pd.Timestamp("2025-04-08"), pd.Timestamp("2025-04-22")}
    assert tuesdays <= issued_for["bank"]
    assert pd.Timestamp("2025-04-22") in issued_for["flaky-bank"]


def test_a_state_saved_before_the_rhythm_was_kept_loads():
    """A live state saved by an earlier mlma has no `agent.silence_recent`: it loads, the run kept, the rhythm
    starting afresh (every past tick taken as one with actuals); a state that has it restores it."""
    from mlma.data import Frequency, make_tick_grid
    from mlma.fleet import FleetData
    from mlma.mlma_policy import MLMAPolicy
    from mlma.models import ForecastContext
    from mlma.training import ModelService

    frame = bank_and_shops(days=40)
    freq = Frequency("h")
    fleet = FleetData(frame, freq.alias, make_tick_grid(frame, pd.tseries.frequencies.to_offset("1D"),
                                                        freq=freq).boundaries)
    service = ModelService(fleet, "seasonal-naive", ForecastContext(freq="h", season_length=24, horizon=24),
                           train_window_ticks=14)

    def agent() -> Agent:
        return Agent(MLMAPolicy(), service, season_length=24, scale=np.ones(fleet.n_streams), tick_season=7)

    ran = agent()
    ran.start(14)
    for k in range(14, 38):  # to Wednesday 9 April, the first day of flaky-bank's outage
        ran.tick(k)
    saved = ran.state_arrays()
    assert saved["agent.silent_for"].tolist() == [0, 1, 0, 0]  # bank, flaky-bank, shop-a, shop-b
    assert (saved["agent.silence_recent"][:2] != -1).all()  # the banks' weekends
    old = {name: value for name, value in saved.items() if name != "agent.silence_recent"}
    restored = agent()
    restored.load_state_arrays(old)
    np.testing.assert_array_equal(restored.silent_for, ran.silent_for)
    assert (restored.silence_recent == -1).all()
    restored = agent()
    restored.load_state_arrays(saved)
    np.testing.assert_array_equal(restored.silence_recent, ran.silence_recent)
