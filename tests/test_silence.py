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
HOLIDAYS = (pd.Timestamp("2025-03-31"), pd.Timestamp("2025-04-21"))  # Mondays
FIRST_TICK = 21  # three weeks of history: the rhythm is known from the start
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
    # The first three weekends count (no rhythm known yet); after them, no run passes one tick: a holiday Monday
    # is the only tick that counts.
    assert runs[5:7] == runs[12:14] == runs[19:21] == [1, 2]
    assert max(runs[21:]) == 1 and [d for d in range(21, len(runs)) if runs[d]] == sorted(holidays)

    # An outage of a week from a Wednesday: its weekdays count, its weekend holds the run.
    silence.reset(1)
    outage = set(range(7 * 6 + 2, 7 * 7 + 2))
    runs = weekday_runs(silence, 8, outage=outage)
    assert [runs[d] for d in sorted(outage)] == [1, 2, 3, 3, 3, 4, 5]
    assert runs[7 * 7 + 2] == 0  # back on the Wednesday after


def test_two_holidays_on_one_weekday_are_no_rhythm():
    """Christmas and New Year's Day on Thursdays: the Thursday after them is a working day like any, and a silence
    then counts (two seasons of rhythm would have taken it for the stream's habit)."""
    silence = Silence(period=7)
    silence.reset(1)
    thursdays = {7 * 5 + 3, 7 * 6 + 3}  # weeks 5 and 6
    runs = weekday_runs(silence, 7, holidays=thursdays)
    assert [runs[d] for d in sorted(thursdays)] == [1, 1]
    assert int(silence.update(np.array([False]))[0]) == 1  # Monday of week 7: counts
    for _ in range(2):
        silence.update(np.array([True]))
    assert int(silence.update(np.array([False]))[0]) == 1  # Thursday of week 7: counts too


def test_period_one_counts_every_silent_tick():
    """No rhythm (a yearly tick, or seasons too long to keep: hourly ticks, weekly ticks): the plain count of ticks
    since the last actuals."""
    rng = np.random.default_rng(4)
    observed = rng.random((300, 20)) < 0.6
    for period in (1, MAX_PERIOD + 1, 24):  # 24: hourly ticks keep no rhythm
        silence = Silence(period=period)
        silence.reset(20)
        plain, launched, longest = np.zeros(20, dtype=np.int64), np.zeros(20, dtype=bool), 0
        for row in observed:
            launched |= row  # a stream is counted from its first actuals on
            plain = np.where(row | ~launched, 0, plain + 1)
            np.testing.assert_array_equal(silence.update(row), plain)
            longest = max(longest, int(plain.max()))
        assert launched.all() and longest >= 5


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
                          BacktestConfig(policies=["mlma"], model="seasonal-naive", initial_ticks=FIRST_TICK,
                                         sample_streams=0))
    silent = result.escalation_log[result.escalation_log["kind"] == "silent"]
    assert silent["unique_id"].tolist() == ["late-shop"]
    assert silent["tick_start"].tolist() == [pd.Timestamp("2025-04-13")]


def test_a_backtest_forecasts_the_bank_after_its_long_weekends_and_escalates_only_the_outage():
    frame = bank_and_shops()
    result = run_backtest(frame, BacktestConfig(policies=["mlma"], model="seasonal-naive", initial_ticks=FIRST_TICK,
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


def live_days(tmp_path, frame: pd.DataFrame) -> tuple[Store, list[tuple[pd.Timestamp, str]]]:
    """A live project (seasonal naive, FIRST_TICK days of history) fed the frame one day a file, a new process
    (LiveAgent) each day catching up; a held tick is allowed at once, as a person would. Returns the store, open,
    and the held ticks (day, message)."""
    from mlma.live import NotReady, TickHeld

    init_project(tmp_path, model="seasonal-naive")
    text = (tmp_path / "mlma.toml").read_text().replace('executor = "process"', 'executor = "inline"')
    (tmp_path / "mlma.toml").write_text(text.replace("initial_ticks = 0", f"initial_ticks = {FIRST_TICK}"))
    config = load_config(tmp_path)
    day = ((frame["ds"] - MONDAY) // pd.Timedelta("1D")).to_numpy()
    chunks = [frame[day < FIRST_TICK]] + [frame[day == d] for d in range(FIRST_TICK, int(day.max()) + 1)]
    held = []
    store = Store.open(config.store_url)
    for i, chunk in enumerate(c for c in chunks if len(c)):
        store.ingest_frame(chunk, f"day-{i}")
        with LiveAgent(config, store=store) as live:
            while True:
                try:
                    live.catch_up()
                    break
                except TickHeld as exc:
                    held.append((MONDAY + pd.Timedelta(days=exc.tick), str(exc)))
                    live.step(allow_no_data=("user:ops", "the feed is as it is"))
                except NotReady:
                    break
    return store, held


def test_a_live_project_keeps_the_rhythm_across_processes(tmp_path):
    """Each day a new process (the live agent restores the rhythm from the saved state): no silent escalation of
    the bank on its long weekends, its Tuesdays forecast; the outage of the other bank escalated once."""
    store, held = live_days(tmp_path, bank_and_shops(days=50))
    with store:
        escalations = store.escalations()
        forecasts = store.forecasts()
    assert held == []
    assert escalations.loc[escalations["kind"] == "silent", "unique_id"].tolist() == ["flaky-bank"]
    issued_for = forecasts.groupby("unique_id")["ds"].apply(lambda ds: set(ds.dt.normalize()))
    tuesdays = {holiday + pd.Timedelta("1D") for holiday in HOLIDAYS}
    assert tuesdays <= issued_for["bank"] and tuesdays <= issued_for["flaky-bank"]


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
    assert saved["agent.silence_launched"].all()
    old = {name: value for name, value in saved.items() if not name.startswith("agent.silence_")}
    restored = agent()
    restored.load_state_arrays(old)
    np.testing.assert_array_equal(restored.silent_for, ran.silent_for)
    assert (restored.silence_recent == -1).all() and not restored.silence_launched.any()
    # The outage goes on counting: a stream with a model has launched, whatever the old state knew.
    restored.tick(38)
    assert restored.silent_for.tolist() == [0, 2, 0, 0]
    restored = agent()
    restored.load_state_arrays(saved)
    np.testing.assert_array_equal(restored.silence_recent, ran.silence_recent)
    np.testing.assert_array_equal(restored.silence_launched, ran.silence_launched)


def daily_agent(reports: dict, days: int = 56, policy=None, settings=None, tick_season: int = 7):
    """An Agent on daily ticks over hourly data from MONDAY, each stream reporting on the days its predicate
    says; returns the agent and the stream ids."""
    from mlma.data import Frequency, make_tick_grid
    from mlma.fleet import FleetData
    from mlma.mlma_policy import MLMAPolicy
    from mlma.models import ForecastContext
    from mlma.training import ModelService

    rng = np.random.default_rng(1)
    ds = pd.date_range(MONDAY, periods=24 * days, freq="h")
    day = ((ds - MONDAY) // pd.Timedelta("1D")).to_numpy()
    frames = []
    for i, (uid, on) in enumerate(reports.items()):
        y = 20 + 5 * i + 10 * np.sin(np.arange(len(ds)) * 2 * np.pi / 24) + rng.normal(0, 2, len(ds))
        keep = np.array([bool(on(int(d))) for d in day])
        frames.append(pd.DataFrame({"unique_id": uid, "ds": ds[keep], "y": np.round(y[keep], 2)}))
    frame = pd.concat(frames, ignore_index=True)
    freq = Frequency("h")
    fleet = FleetData(frame, freq.alias, make_tick_grid(frame, pd.tseries.frequencies.to_offset("1D"),
                                                        freq=freq).boundaries)
    service = ModelService(fleet, "seasonal-naive", ForecastContext(freq="h", season_length=24, horizon=24),
                           train_window_ticks=14)
    agent = Agent(policy or MLMAPolicy(), service, season_length=24, scale=np.ones(fleet.n_streams),
                  tick_season=tick_season, settings=settings)
    return agent, list(fleet.ids)


def silent_days(reports) -> list[int]:
    return [r.tick for r in reports for e in r.escalations if e.kind == "silent" and e.stream == 1]


def test_a_stream_that_breaks_the_day_after_a_long_closure_is_escalated():
    """Three weeks closed (escalated, resolved on reopening), one day open, then the feed dies: counted from its
    first dead day, escalated on the third, no forecasts after (seasons without actuals are no habit)."""
    agent, ids = daily_agent({"steady": lambda d: True, "shop": lambda d: d < 16 or d == 37}, days=63)
    reports = [agent.start(14)] + [agent.tick(k) for k in range(14, 62)]
    assert silent_days(reports) == [18, 40]  # the closure's third day; the third day after reopening on day 37
    messages = {e.message for r in reports for e in r.escalations if e.kind == "silent"}
    assert messages == {"no actuals for 3 ticks in a row (not counting the ticks it is usually silent at)"}
    assert [int(r.issued[1].size and np.isfinite(r.issued[1]).any()) for r in reports[-20:]] == [0] * 20


def test_without_a_rhythm_the_message_says_every_tick_counted():
    """A tick clock whose season is one the agent keeps no rhythm for (hourly ticks, weekly ticks): every tick
    without actuals counts, and the message says no more than that."""
    agent, ids = daily_agent({"steady": lambda d: True, "shop": lambda d: d < 20}, tick_season=1)
    reports = [agent.start(14)] + [agent.tick(k) for k in range(14, 30)]
    messages = [e.message for r in reports for e in r.escalations if e.kind == "silent"]
    assert messages == ["no actuals for 3 ticks in a row"]


def test_a_policy_started_afresh_during_an_outage_escalates_it():
    """A change of policy in mlma.toml starts the policy's state afresh while the agent's count goes on: the
    outage is escalated at the first tick of the new policy, once."""
    from mlma.mlma_policy import MLMAPolicy
    from mlma.policy import make_policy

    old, ids = daily_agent({"steady": lambda d: True, "shop": lambda d: d < 30}, policy=make_policy("never"))
    old.start(14)
    for k in range(14, 34):
        old.tick(k)
    saved = old.state_arrays()
    new = Agent(MLMAPolicy(), old.service, season_length=24, scale=np.ones(2), tick_season=7)
    fresh = {name: value for name, value in saved.items() if not name.startswith("policy.")}
    new.load_state_arrays(fresh | {f"policy.{n}": v for n, v in new.policy.state_arrays().items()})
    assert silent_days([new.tick(k) for k in range(34, 50)]) == [34]


def test_a_stream_without_a_model_is_not_escalated_as_silent():
    """A stream that reported for a day and stopped before it had the history for a first model is no serving
    stream gone silent: it is not escalated (the agent counts it, the policy escalates streams with a model)."""
    from mlma.agent import NO_MODEL, AgentSettings

    agent, ids = daily_agent({"steady": lambda d: True, "brief": lambda d: d == 20},
                             settings=AgentSettings(cold_min_seasons=2))
    reports = [agent.start(14)] + [agent.tick(k) for k in range(14, 30)]
    assert agent.champion[1] == NO_MODEL and agent.silent_for[1] == 9
    assert silent_days(reports) == []


def test_a_re_fit_in_an_outage_neither_resumes_forecasts_nor_escalates_again():
    """The live repair re-fits a serving model from the window (a broken artifact): for that tick the stream has no
    model. Its count goes on: no forecasts for the dead stream, no second `silent` escalation."""
    from mlma.agent import NO_MODEL

    agent, ids = daily_agent({"steady": lambda d: True, "shop": lambda d: d < 30})
    reports = [agent.start(14)] + [agent.tick(k) for k in range(14, 36)]
    assert silent_days(reports) == [32] and agent.silent_for[1] == 6
    agent.champion[1] = NO_MODEL  # what live's refit_from_window does before the tick
    after = [agent.tick(k) for k in range(36, 42)]
    assert silent_days(after) == [] and agent.silent_for[1] == 12
    assert not any(np.isfinite(r.issued[1]).any() for r in after)


def test_a_live_fleet_of_banks_runs_its_weekends_and_holds_a_holiday(tmp_path):
    """A fleet whose streams all close at weekends (each tick of a weekend finds no data for every served stream):
    the hold of a tick without data (`hold_no_data_share`) leaves the streams silent by their rhythm out, so
    weekends run by themselves; a public holiday, when the whole fleet is unexpectedly silent, is held for a
    person's say-so as before."""
    frame = bank_and_shops(days=50)
    store, held = live_days(tmp_path, frame[frame["unique_id"].str.endswith("bank")])
    with store:
        done = store.last_done_tick()
    # The second holiday ends the data: the newest actuals are Friday 18 April's, the ticks after it not due yet.
    assert [when for when, _ in held] == [HOLIDAYS[0]]
    assert MONDAY + pd.Timedelta(days=done) == pd.Timestamp("2025-04-18")  # five weekends ran on their own


def test_a_saturday_outage_of_the_streams_open_on_saturdays_is_held_with_true_counts(tmp_path):
    """Six banks closed at weekends and four shops open every day; on Saturday 29 March no shop's data comes. The
    shops are a fair part of the fleet and none of them reported, so the tick is held although most of the fleet
    closes on Saturdays; the message and the audit entry give both counts."""
    ds = pd.date_range(MONDAY, periods=24 * 35, freq="h")
    rng = np.random.default_rng(0)
    frames = []
    for i in range(10):
        uid = f"bank-{i}" if i < 6 else f"shop-{i}"
        stream = pd.DataFrame({"unique_id": uid, "ds": ds, "y": np.round(20 + i + rng.normal(0, 2, len(ds)), 2)})
        if uid.startswith("bank"):
            stream = stream[stream["ds"].dt.day_of_week < 5]
        frames.append(stream[stream["ds"].dt.normalize() != pd.Timestamp("2025-03-29")])
    store, held = live_days(tmp_path, pd.concat(frames, ignore_index=True))
    with store:
        audit = store.audit_log(action="allow-no-data-tick")
        escalations = store.escalations()
    assert [when for when, _ in held] == [pd.Timestamp("2025-03-29")]
    assert "10 of the 10 streams with a serving model have no data in it; 6 of them are usually silent at such a " \
           "tick, and 4 of the other 4 have no data either" in held[0][1]
    fleet_wide = escalations[(escalations["kind"] == "data-quality") & escalations["stream_id"].isna()]
    assert len(fleet_wide) == 1 and "4 of the other 4" in fleet_wide["message"].item()
    (params,) = audit["params"]
    assert (params["served_streams"], params["usually_silent_streams"], params["streams_without_data"]) == (10, 6, 10)


@pytest.mark.parametrize("banks, shops", [(12, 1), (17, 3)])
def test_one_stream_does_not_hold_a_fleet_that_is_closed_at_the_time(tmp_path, banks, shops):
    """Banks closed at weekends and a few shops open every day: one shop's missing Saturday, and a bank that
    stopped for good (it has no weekend rhythm left), hold none of the fleet's weekends, whether the shops are
    too few to tell a broken feed (12 and 1) or most of them reported (17 and 3); before the rhythm every weekend
    was held. The rhythm only ever holds less than the share alone: a Saturday the banks open and the shops'
    feed breaks (most of the fleet reported) is not held."""
    ds = pd.date_range(MONDAY, periods=24 * 42, freq="h")
    rng = np.random.default_rng(2)
    frames = []
    for i in range(banks + shops):
        uid = f"bank-{i:02d}" if i < banks else f"shop-{i - banks}"
        stream = pd.DataFrame({"unique_id": uid, "ds": ds, "y": np.round(20 + i + rng.normal(0, 2, len(ds)), 2)})
        day = stream["ds"].dt.normalize()
        if uid.startswith("bank"):  # closed at weekends, but for Saturday 12 April
            keep = (stream["ds"].dt.day_of_week < 5) | (day == pd.Timestamp("2025-04-12"))
        else:  # the shops' feed breaks on the Saturday the banks open
            keep = day != pd.Timestamp("2025-04-12")
        if uid == "bank-00":
            keep &= stream["ds"] < pd.Timestamp("2025-04-02")
        if uid == "shop-0":
            keep &= day != pd.Timestamp("2025-04-05")
        frames.append(stream[keep])
    store, held = live_days(tmp_path, pd.concat(frames, ignore_index=True))
    with store:
        assert MONDAY + pd.Timedelta(days=store.last_done_tick()) == pd.Timestamp("2025-04-13")
    assert held == []
