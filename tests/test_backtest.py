"""The backtest harness: metrics by hand on a tiny case, policies' fit counts, outputs, the agent's tick."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlma.backtest import BacktestConfig, run_backtest, write_outputs
from mlma.fleet import FleetData
from mlma.policy import AlwaysRetrain, NeverRetrain, PeriodicRetrain, make_policy


def hourly_frame(n_streams: int = 2, days: int = 5, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    ds = pd.date_range("2025-03-03", periods=24 * days, freq="h")
    frames = []
    for i in range(n_streams):
        profile = 10 * (i + 1) * (1 + np.sin(np.arange(len(ds)) * 2 * np.pi / 24))
        frames.append(pd.DataFrame({"unique_id": f"s{i}", "ds": ds,
                                    "y": np.round(profile + rng.normal(0, 2, len(ds)), 3)}))
    return pd.concat(frames, ignore_index=True)


def test_metrics_match_a_hand_computation_for_seasonal_naive():
    frame = hourly_frame(days=5)
    config = BacktestConfig(policies=["never"], model="seasonal-naive", initial_ticks=2, sample_streams=0)
    result = run_backtest(frame, config)

    # Seasonal naive with one tick = one day forecasts each hour by the same hour one day earlier.
    errors, per_stream_mae, scales = [], [], []
    for _, grp in frame.groupby("unique_id"):
        y = grp["y"].to_numpy().reshape(5, 24)
        e = (y[2:] - y[1:-1]).ravel()
        errors.append(e)
        per_stream_mae.append(np.abs(e).mean())
        # MASE scale: mean absolute seasonal difference before the first scored tick (days 0-1).
        scales.append(np.abs(y[1] - y[0]).mean())
    errors = np.concatenate(errors)
    row = result.summary[0]
    assert row["mae"] == pytest.approx(np.abs(errors).mean(), rel=1e-9)
    assert row["rmse"] == pytest.approx(np.sqrt((errors ** 2).mean()), rel=1e-9)
    assert row["mase"] == pytest.approx(np.mean(np.array(per_stream_mae) / np.array(scales)), rel=1e-9)
    assert row["n_scored"] == errors.size


def test_never_fits_once_always_every_tick_periodic_on_schedule():
    # Ridge needs 9 days of hourly history (a weekly lag plus two days), so it starts after 10 days.
    frame = hourly_frame(n_streams=3, days=16)
    config = BacktestConfig(policies=["never", "periodic:3:sync", "periodic:3", "always"], model="ridge",
                            initial_ticks=10, sample_streams=1)
    result = run_backtest(frame, config)
    summary = {row["policy"]: row for row in result.summary}
    scored_ticks = 16 - 10
    assert summary["never"]["retrains"] == 0
    assert summary["never"]["initial_fits"] == 3
    # Always re-trains every stream after every scored tick.
    assert summary["always"]["retrains"] == 3 * scored_ticks
    # Synchronous: models fitted at the end of tick 9 are due again 3 ticks later: ticks 12 and 15.
    assert summary["periodic:3:sync"]["retrains"] == 3 * 2
    ticks = result.retrain_log[result.retrain_log.policy == "periodic:3:sync"]["tick"].unique().tolist()
    assert sorted(ticks) == [12, 15]
    # Staggered: stream s at the ticks k with k % 3 == its phase (0, 1 and 0 for these three streams).
    log = result.retrain_log[result.retrain_log.policy == "periodic:3"]
    by_stream = log.groupby("unique_id")["tick"].apply(sorted).to_dict()
    assert PeriodicRetrain(3).phase(3).tolist() == [0, 1, 0]
    assert by_stream == {"s0": [12, 15], "s1": [10, 13], "s2": [12, 15]}
    # Every policy is scored on the same points.
    assert len({row["n_scored"] for row in result.summary}) == 1
    assert summary["always"]["compute_seconds"] > 0


def test_every_policy_scored_on_the_same_points_and_outputs_written(tmp_path):
    frame = hourly_frame(n_streams=3, days=8)
    config = BacktestConfig(policies=["never", "always"], model="ridge", initial_ticks=3)
    result = run_backtest(frame, config)
    out = write_outputs(result, tmp_path / "out")
    payload = json.loads((out / "summary.json").read_text())
    assert [p["policy"] for p in payload["policies"]] == ["never", "always"]
    for key in ("mae", "rmse", "mase", "retrains", "compute_seconds", "escalations"):
        assert key in payload["policies"][0]
    per_stream = pd.read_csv(out / "per_stream.csv")
    assert set(per_stream["unique_id"]) == {"s0", "s1", "s2"}
    assert (out / "report.html").stat().st_size > 1000


def test_data_that_ends_part_way_through_its_last_tick_is_replayed_without_that_tick(caplog):
    """An export that stopped at 04:00 of its last day was replayed as a tick of 5 hours: every stream was scored
    on them and escalated for the 19 missing (71 escalations per 1,000 stream-days where the whole data gave
    none). A live agent waits for a tick's actuals to be all in; the backtest leaves that tick out, and says so.
    The run equals one on the data cut at the last whole day, bit for bit but for the seconds the fits took."""
    from mlma.simulate import simulate_platform

    data = simulate_platform(6, 15, seed=7).data
    whole = data[data["ds"] < "2025-01-20"]             # 14 whole days of hourly data (the platform starts 6 Jan)
    cut = data[data["ds"] <= "2025-01-20 04:00"]        # and 5 hours of the 15th
    config = BacktestConfig(policies=["never", "mlma", "periodic:3"], model="ridge", initial_ticks=9, bootstrap=0)
    with caplog.at_level("WARNING", logger="mlma.backtest"):
        partial = run_backtest(cut, config)
    complete = run_backtest(whole, config)
    assert partial.config["incomplete_last_tick"] == {
        "start": "2025-01-20 00:00:00", "data_ends": "2025-01-20 04:00:00", "until": "2025-01-20 23:00:00", "rows": 30}
    assert complete.config["incomplete_last_tick"] is None
    assert "before the end of its last tick (2025-01-20 00:00:00 to 2025-01-20 23:00:00): that tick's 30 row(s)" \
        in caplog.text
    assert partial.config["n_ticks"] == complete.config["n_ticks"] == 14
    timed = [c for c in pd.DataFrame(complete.summary).columns if "seconds" in c]
    pd.testing.assert_frame_equal(pd.DataFrame(partial.summary).drop(columns=timed),
                                  pd.DataFrame(complete.summary).drop(columns=timed))
    assert not any(row["escalations"] for row in partial.summary)


def test_summary_json_is_strict_json_with_null_for_values_that_could_not_be_computed(tmp_path):
    from dataclasses import replace

    frame = hourly_frame(n_streams=2, days=6)
    result = run_backtest(frame, BacktestConfig(policies=["never", "always"], model="seasonal-naive",
                                                initial_ticks=2, frontier=False))
    # What constant data gives: a gap and headroom in % of an MAE of 0, and an interval of nothing.
    summary = [{**row, "headroom_pct": float("nan"), "gap_low": np.float64("-inf")} for row in result.summary]
    result = replace(result, summary=summary, frontier=[{"policy": "never", "retrains": 0, "mae": float("nan")}])
    out = write_outputs(result, tmp_path / "out")

    def refuse(word):
        raise ValueError(f"summary.json holds {word}, which is not JSON")

    payload = json.loads((out / "summary.json").read_text(), parse_constant=refuse)
    assert [row["headroom_pct"] for row in payload["policies"]] == [None, None]
    assert payload["policies"][0]["gap_low"] is None and payload["frontier"][0]["mae"] is None
    assert payload["policies"][1]["mae"] == result.summary[1]["mae"]  # finite values are kept as they were


def test_streams_that_start_late_get_a_model_once_they_have_a_season():
    frame = hourly_frame(n_streams=2, days=8)
    late = frame[(frame.unique_id == "s1") & (frame.ds < "2025-03-07")].index
    frame = frame.drop(late)
    result = run_backtest(frame, BacktestConfig(policies=["never"], model="seasonal-naive", initial_ticks=2))
    per_stream = result.per_stream.set_index("unique_id")
    # s1 starts on day 4 (tick 4), gets its first model at the end of that tick and is scored from tick 5.
    assert per_stream.loc["s1", "n_scored"] == 24 * 3
    assert per_stream.loc["s0", "n_scored"] == 24 * 6


def test_bad_config_is_rejected_early():
    with pytest.raises(ValueError, match="tick or horizon"):
        BacktestConfig(tick="1D", horizon=24)
    with pytest.raises(ValueError, match="initial_ticks"):
        BacktestConfig(initial_ticks=0)
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("sometimes")
    with pytest.raises(ValueError, match="periodic"):
        make_policy("periodic:x")
    # A typo of 10**8 ran for an hour into 10 GB after the replay, nothing written yet.
    with pytest.raises(ValueError, match="bootstrap must be a whole number of replicates from 0 to 100,000, got "
                                         "100000000"):
        BacktestConfig(bootstrap=100_000_000)


def test_fleet_history_and_actuals_agree_with_the_frame():
    frame = hourly_frame(n_streams=2, days=3)
    frame = frame.drop(frame.index[[5, 72 + 6]])  # a missing hour in each stream
    fleet = FleetData(frame, "h", pd.date_range("2025-03-03", periods=4, freq="D"))
    a = fleet.actuals(0)
    assert np.isnan(a[0, 5]) and np.isfinite(a[0, 4])
    assert np.isnan(a[1, 6]) and np.isfinite(a[1, 5])
    hist = fleet.history(0, end_tick=1, window_ticks=1)
    assert len(hist) == 24 and hist.ds[0] == np.datetime64("2025-03-04T00:00")


@pytest.mark.parametrize("policy, expected", [(NeverRetrain(), "never"), (AlwaysRetrain(), "always"),
                                              (PeriodicRetrain(7), "periodic:7")])
def test_policy_names(policy, expected):
    assert policy.name == expected


def parking_frame(days: int = 20) -> pd.DataFrame:
    """Half-hourly occupancy of two sensors that only report 08:00-16:30: no rows overnight."""
    rng = np.random.default_rng(5)
    ds = pd.date_range("2025-03-03", periods=48 * days, freq="30min")
    ds = ds[(ds.hour * 60 + ds.minute >= 8 * 60) & (ds.hour * 60 + ds.minute <= 16 * 60 + 30)]
    frames = []
    for i in range(2):
        y = 50 + 30 * np.sin((ds.hour - 8) / 8.5 * np.pi) + rng.normal(0, 3, len(ds))
        frames.append(pd.DataFrame({"unique_id": f"bay{i}", "ds": ds, "y": y}))
    return pd.concat(frames, ignore_index=True)


def test_series_with_overnight_gaps_are_forecast_and_scored_only_where_observed():
    frame = parking_frame()
    result = run_backtest(frame, BacktestConfig(policies=["never", "always", "mlma"], model="ridge",
                                                initial_ticks=12, sample_streams=1))
    assert result.config["freq"] == "30min" and result.config["horizon"] == 48
    per_stream = result.per_stream[result.per_stream.policy == "never"].set_index("unique_id")
    # 18 half-hours a day (08:00 to 16:30) over the 8 scored days.
    assert (per_stream["n_scored"] == 18 * 8).all()
    # Night-time forecasts are made but never scored, so the error is that of the daytime pattern.
    assert result.summary[0]["mase"] < 1.5


def test_abnormal_periods_are_kept_out_of_training_and_triggers():
    frame = hourly_frame(n_streams=4, days=30, seed=2)
    # Day 25 of stream s0 is broken data: ten times the usual level.
    day25 = (frame.unique_id == "s0") & (frame.ds >= "2025-03-28") & (frame.ds < "2025-03-29")
    frame.loc[day25, "y"] *= 10
    marked = pd.DataFrame({"unique_id": ["s0"], "start": [pd.Timestamp("2025-03-28")],
                           "end": [pd.Timestamp("2025-03-29")]})
    config = BacktestConfig(policies=["mlma"], model="seasonal-naive", initial_ticks=10)
    plain = run_backtest(frame, config)
    with_mark = run_backtest(frame, config, abnormal=marked)
    triggered = lambda r: set(r.retrain_log.loc[r.retrain_log.unique_id == "s0", "tick"])  # noqa: E731
    assert 25 in triggered(plain) or 26 in triggered(plain)
    assert not ({25, 26} & triggered(with_mark))


def test_frontier_schedules_are_added_and_each_policy_gets_its_gap(tmp_path):
    frame = hourly_frame(n_streams=12, days=24, seed=2)
    config = BacktestConfig(policies=["page-hinkley:threshold=5", "periodic:3:sync"], model="ridge",
                            initial_ticks=10, sample_streams=0, frontier=[2, 4], bootstrap=200)
    result = run_backtest(frame, config)
    rows = {row["policy"]: row for row in result.summary}
    assert list(rows) == ["page-hinkley:threshold=5", "periodic:3:sync", "never", "periodic:2", "periodic:4",
                          "always"]
    assert [rows[p]["frontier_only"] for p in rows] == [False, False, True, True, True, True]
    assert [f["policy"] for f in result.frontier] == ["never", "periodic:4", "periodic:2", "always"]
    # The gap recomputed by hand from the summary: straight lines between schedules on log(1 + re-trainings).
    sched = sorted((rows[p]["retrains"], rows[p]["mae"]) for p in ("never", "periodic:2", "periodic:4", "always"))
    x, y = [], []
    for cost, mae in sched:
        if not y or mae < y[-1]:
            x.append(np.log1p(cost))
            y.append(mae)
    for policy in ("page-hinkley:threshold=5", "periodic:3:sync"):
        row = rows[policy]
        frontier = np.interp(np.log1p(row["retrains"]), x, y)
        assert row["gap_pct"] == pytest.approx(100 * (row["mae"] - frontier) / rows["always"]["mae"], abs=1e-3)
        assert row["gap_low"] <= row["gap_pct"] <= row["gap_high"]
    ph, sync = rows["page-hinkley:threshold=5"], rows["periodic:3:sync"]
    beats = sync["retrains"] <= ph["retrains"] and sync["mae"] < ph["mae"]
    assert ph["dominated_by"] == (["periodic:3:sync"] if beats else [])
    write_outputs(result, tmp_path)
    payload = json.loads((tmp_path / "summary.json").read_text())
    assert payload["frontier"][0]["policy"] == "never"
    from mlma.backtest import summary_markdown

    table = summary_markdown(payload["policies"])
    assert "gap % [95% CI]" in table and "| never |" not in table
    assert "| never |" in summary_markdown(payload["policies"], include_frontier=True)


def test_frontier_settings_are_checked_early():
    with pytest.raises(ValueError, match="frontier periods"):
        BacktestConfig(frontier=[0, 3])
    with pytest.raises(ValueError, match="bootstrap"):
        BacktestConfig(bootstrap=-1)
    with pytest.raises(ValueError, match="policy adwin has no parameter 'delt'"):
        BacktestConfig(policies=["adwin:delt=0.1"])


def test_the_backtest_resolves_a_silence_when_the_stream_reports_again():
    # s1 stops reporting on days 12-16 and comes back on day 17; s2 stops on day 18 and never comes back.
    frame = hourly_frame(n_streams=3, days=22, seed=3)
    day = ((frame["ds"] - frame["ds"].min()) // pd.Timedelta("1D")).to_numpy()
    frame = frame[~((frame["unique_id"] == "s1") & (day >= 12) & (day <= 16))
                  & ~((frame["unique_id"] == "s2") & (day >= 18))]
    result = run_backtest(frame, BacktestConfig(policies=["mlma"], model="seasonal-naive", initial_ticks=8,
                                                sample_streams=0))
    log = result.escalation_log
    silent = log[log["kind"] == "silent"].set_index("unique_id")
    # Silent for silent_ticks (3) ticks in a row: escalated at the end of day 14, resolved by day 17's tick.
    assert silent.loc["s1", "tick"] == 14 and silent.loc["s1", "resolved_tick"] == 17
    assert silent.loc["s2", "tick"] == 20 and pd.isna(silent.loc["s2", "resolved_tick"])
    row = result.summary[0]
    assert row["escalations_resolved"] == int(log["resolved_tick"].notna().sum()) >= 1
    assert result.per_tick.set_index("tick").loc[17, "escalations_resolved"] >= 1


def test_escalation_book_resolves_what_the_store_resolves():
    """The backtest's in-memory rule and the store's write_tick agree on every escalation's status over random
    ticks of new escalations and cleared conditions (also: a tick never resolves its own escalations)."""
    from mlma.escalations import Escalation, EscalationBook
    from mlma.store import Store, TickRecord

    rng = np.random.default_rng(11)
    kinds = ["silent", "cold", "challenger-lost", "data-quality"]
    book = EscalationBook()
    with Store.create("sqlite://") as store:
        store.ingest_frame(pd.DataFrame({"unique_id": [f"z{i}" for i in range(6)], "ds": pd.Timestamp("2025-01-01"),
                                         "y": 1.0}), "f")
        for k in range(30):
            new = [Escalation(int(s), k, str(rng.choice(kinds)), 1, "x") for s in rng.integers(0, 6, rng.integers(0, 4))]
            cleared = {kind: np.flatnonzero(rng.random(6) < 0.2) for kind in kinds}
            cleared = {kind: streams for kind, streams in cleared.items() if len(streams)}
            counts = book.record(k, new, cleared)
            written = store.write_tick(TickRecord(k, escalations=new, resolve_escalations=cleared))
            assert dict(written.resolved) == counts
        stored = store.escalations().sort_values("id")
    assert len(stored) == len(book.items) > 20
    resolved = np.array([t is not None for t in book.resolved_tick])
    assert 0 < resolved.sum() < len(resolved)
    np.testing.assert_array_equal(stored["status"].eq("resolved").to_numpy(), resolved)
    assert all(t is None or t > item.tick for item, t in zip(book.items, book.resolved_tick))


def ridge_agent_reports(policy):
    """An Agent with ridge on 12 simulated hourly zones x 40 days (daily ticks), run through every tick:
    ``(fleet, service, agent, reports)``, the start-up's report first."""
    from mlma.agent import Agent
    from mlma.data import Frequency, make_tick_grid
    from mlma.models import ForecastContext
    from mlma.simulate import simulate_platform
    from mlma.training import ModelService

    frame = simulate_platform(12, 40, seed=5, event_rate=3).data
    freq = Frequency("h")
    fleet = FleetData(frame, freq.alias, make_tick_grid(frame, pd.tseries.frequencies.to_offset("1D"),
                                                        freq=freq).boundaries)
    service = ModelService(fleet, "ridge", ForecastContext(freq="h", season_length=24, horizon=24),
                           train_window_ticks=14)
    agent = Agent(policy, service, season_length=24, scale=fleet.seasonal_naive_scale(24, before_tick=14))
    reports = [agent.start(14)] + [agent.tick(k) for k in range(14, fleet.n_ticks)]
    return fleet, service, agent, reports


def test_a_tick_report_names_every_model_the_tick_fitted_and_every_challenger_verdict():
    fleet, service, agent, reports = ridge_agent_reports(make_policy("mlma"))
    # The service counts its fits on its own: each one is a new model of exactly one report.
    assert sum(len(r.new_models) for r in reports) == service.fits_done > fleet.n_streams
    streams = np.arange(fleet.n_streams)
    for r in reports:
        fitted = [m.stream for m in r.new_models]
        assert all(m.key.end_tick == r.tick for m in r.new_models) and len(set(fitted)) == len(fitted)
        assert set(fitted) == set(np.flatnonzero((r.retrained | r.initial_fit) & ~np.isin(streams, list(r.failed))))
        assert {s for s, c in r.checks.items() if c.result == "rejected"} == set(np.flatnonzero(r.rejected))
        assert {s for s, c in r.checks.items() if c.result == "promoted"} <= set(np.flatnonzero(r.promoted))
        assert r.stream_loss.shape == r.reference_loss.shape == (fleet.n_streams,)
    # Every challenger put in shadow is judged by a later tick's report (or still in shadow at the end).
    shadowed = [(r.tick, s) for r in reports for s in r.challengers]
    judged = {(r.tick, s) for r in reports for s in r.checks}
    assert shadowed and judged
    for tick, s in shadowed:
        assert any((t, s) in judged for t in range(tick + 1, fleet.n_ticks)) or agent.challenger[s] == tick


def test_a_budget_spent_as_a_schedule_re_trains_like_the_staggered_schedule_and_serves_at_once():
    """MLMA with a budget of one re-training per tick over three streams is a staggered ``periodic:3``:
    each stream every third tick (its tests cannot fire: each new model warms up first), at its own phase,
    which comes from its id (:func:`mlma.mlma_policy.stream_slots`) rather than its index, every fit served
    at once rather than judged as a challenger."""
    frame = hourly_frame(n_streams=3, days=16)
    config = BacktestConfig(policies=["periodic:3", "mlma:budget=1"], model="ridge", initial_ticks=10,
                            sample_streams=1)
    result = run_backtest(frame, config)
    logs = {policy: log.groupby("unique_id")["tick"].apply(sorted).to_dict()
            for policy, log in result.retrain_log.groupby("policy")}
    assert logs["periodic:3"] == {"s0": [12, 15], "s1": [10, 13], "s2": [12, 15]}
    from mlma.mlma_policy import stream_slots

    phase = {u: int(slot * 3) for u, slot in zip(["s0", "s1", "s2"], stream_slots(["s0", "s1", "s2"]))}
    first = {u: next(t for t in (10, 11, 12) if t % 3 == phase[u]) for u in phase}
    assert logs["mlma:budget=1"] == {u: [t, t + 3] for u, t in first.items()}
    mlma = result.retrain_log[result.retrain_log.policy == "mlma:budget=1"]
    assert mlma["reason"].str.startswith("schedule:").all()
    summary = {row["policy"]: row for row in result.summary}
    assert summary["mlma:budget=1"]["promotions"] == summary["mlma:budget=1"]["retrains"] == 6


def test_the_fits_that_fell_back_are_counted_by_cause():
    """A backtest says what really made its forecasts: fits the data could not support fell back to seasonal
    naive or the mean, and the run counts them by cause (short history, constant series...)."""
    hours = pd.date_range("2025-01-01", periods=24 * 30, freq="h")
    pattern = 10 + 5 * np.sin(2 * np.pi * np.arange(hours.size) / 24)
    frame = pd.concat([pd.DataFrame({"unique_id": "ok", "ds": hours, "y": pattern}),
                       pd.DataFrame({"unique_id": "flat", "ds": hours, "y": 3.0}),
                       pd.DataFrame({"unique_id": "new", "ds": hours[-24 * 5:], "y": pattern[-24 * 5:]})],
                      ignore_index=True)
    config = BacktestConfig(policies=["always"], model="ridge", initial_ticks=14, frontier=False, executor="inline")
    result = run_backtest(frame, config)
    fell_back = result.config["fits_fell_back"]
    # "always" re-fits every stream every tick: "flat" falls back at each of its fits (the start-up's and one a
    # scored tick: constant), "new" at each of its five (its first once it has a day of rows, at tick 25, then
    # one a tick to 29: at most five days of rows, ridge needs nine), "ok" never.
    scored = result.config["n_ticks"] - 14
    assert fell_back == {"constant series": scored + 1, "short history": 5}
    assert result.config["fits_done"] == 2 * (scored + 1) + 5
    # A fleet its model can fit: nothing fell back.
    plain = run_backtest(frame[frame["unique_id"] == "ok"], config)
    assert plain.config["fits_fell_back"] == {}


def test_a_callers_executor_stays_open_across_runs_and_failures():
    """An executor the caller made (a pool shared by several backtests) is the caller's to shut down: a run, and a
    run that fails, leave it working; one made from a spec string is the run's own."""
    from concurrent.futures import ThreadPoolExecutor

    frame = hourly_frame(n_streams=3, days=12)
    with ThreadPoolExecutor(max_workers=2) as pool:
        config = BacktestConfig(policies=["never"], model="seasonal-naive", initial_ticks=4, frontier=False,
                                executor=pool, bootstrap=0)
        first = run_backtest(frame, config)
        with pytest.raises(ValueError, match="unknown policy 'sometimes'"):
            run_backtest(frame, BacktestConfig(policies=["never", "sometimes"], model="seasonal-naive",
                                               initial_ticks=4, frontier=False, executor=pool))
        again = run_backtest(frame, config)
        assert again.summary[0]["mae"] == first.summary[0]["mae"]
        assert pool.submit(lambda: 42).result(timeout=5) == 42


def test_one_policy_written_two_ways_runs_once_under_its_first_name():
    """`--policies periodic:3 --sweep periodic:every=3` named one policy twice, and the backtest stopped with
    "policies must differ"; it runs once, under the name it was first given."""
    frame = hourly_frame(n_streams=3, days=12)
    config = BacktestConfig(policies=["periodic:3", "never", "periodic:every=3", "ph:threshold=20",
                                      "page-hinkley:threshold=20"],
                            model="seasonal-naive", initial_ticks=4, frontier=False, bootstrap=0)
    result = run_backtest(frame, config)
    assert [row["policy"] for row in result.summary] == ["periodic:3", "never", "page-hinkley:threshold=20"]
    # Named alike but set otherwise from Python (policy_params): two policies, which the tables could not tell
    # apart; refused, as all policies of the same name were before.
    differ = BacktestConfig(policies=["ph", "page-hinkley"], policy_params={"ph": {"threshold": 5.0}},
                            model="seasonal-naive", initial_ticks=4, frontier=False, bootstrap=0)
    with pytest.raises(ValueError, match="'ph' and 'page-hinkley' are both named 'page-hinkley' but have different"):
        run_backtest(frame, differ)


def test_a_backtest_whose_cluster_is_lost_connects_again_or_stops_naming_it(monkeypatch):
    """A Dask scheduler lost mid-run closes the client, and every later fit failed: the run went on to its end
    with most fits failed and exited 0. At the next tick it makes a new executor (the cluster may be back) or
    stops, naming the tick and the executor."""
    import mlma.backtest as backtest_module
    from mlma.training import ExecutorUnavailableError, InlineExecutor

    frame = hourly_frame(n_streams=3, days=12)
    made, lost_at = [], 6

    class Cluster(InlineExecutor):
        """Takes work until the replay reaches tick ``lost_at``, as a client whose scheduler then went away."""

    def make(spec):
        if made:
            raise ExecutorUnavailableError(f"cannot reach the Dask scheduler at {spec[len('dask://'):]} within 10 s")
        made.append(Cluster())
        return made[-1]

    ticked = []
    real_tick = backtest_module.Agent.tick
    monkeypatch.setattr(backtest_module.Agent, "tick", lambda agent, k: (ticked.append(k), real_tick(agent, k))[1])
    monkeypatch.setattr(backtest_module, "make_executor", make)
    monkeypatch.setattr(backtest_module, "executor_usable",
                        lambda executor: not (isinstance(executor, Cluster) and ticked and max(ticked) >= lost_at))
    config = BacktestConfig(policies=["always"], model="seasonal-naive", initial_ticks=4, frontier=False,
                            bootstrap=0, executor="dask://10.0.0.7:8786")
    with pytest.raises(ValueError, match=r"tick 7: the executor 'dask://10.0.0.7:8786' can no longer take work "
                                         r"\(its cluster was lost\) and no new one could be made: cannot reach the "
                                         r"Dask scheduler at 10.0.0.7:8786"):
        run_backtest(frame, config)
    # A cluster that is back: a new client, and the run goes on to its end.
    made.clear()
    ticked.clear()
    monkeypatch.setattr(backtest_module, "make_executor", lambda spec: (made.append(Cluster()), made[-1])[1])
    monkeypatch.setattr(backtest_module, "executor_usable",
                        lambda executor: executor is not made[0] or not ticked or max(ticked) < lost_at)
    result = run_backtest(frame, config)
    assert len(made) == 2 and result.summary[0]["fit_failures"] == 0



def _shop(first: str, last: str, hours: range) -> pd.DatetimeIndex:
    days = pd.date_range(first, last, freq="D")
    return pd.DatetimeIndex([d + pd.Timedelta(hours=h) for d in days for h in hours])


ENDINGS = {  # data, tick, frequency, whether the last tick is whole
    "an export cut at 05:00": (lambda: pd.date_range("2025-01-01", "2025-01-20 05:00", freq="h"), "D", "h", False),
    "a car park, 08:00 to 16:00": (lambda: _shop("2025-01-01", "2025-01-20", range(8, 17)), "D", "h", True),
    "a shop's short February": (lambda: _shop("2025-06-01", "2026-02-28", range(8, 21)), "MS", "h", True),
    "weekdays; November ends on Sunday": (lambda: pd.bdate_range("2025-01-01", "2025-11-28"), "MS", "D", True),
    "half of November": (lambda: pd.bdate_range("2025-01-01", "2025-11-14"), "MS", "D", False),
}


@pytest.mark.parametrize("ending", list(ENDINGS))
def test_the_last_tick_is_whole_when_its_data_stop_as_the_ticks_before_did(ending):
    """A first rule, measured from each tick's start, dropped a shop's whole February (its data reach less far
    into the shortest month than into the others) and a weekday series' November: measured from each tick's end."""
    from mlma.backtest import _without_incomplete_last_tick
    from mlma.calendar import Frequency, make_tick_grid

    make, tick, freq, whole = ENDINGS[ending]
    frame = pd.DataFrame({"unique_id": "a", "ds": make(), "y": 1.0})
    frequency = Frequency.coerce(freq)
    grid = make_tick_grid(frame, tick, freq=frequency)
    kept, _, dropped = _without_incomplete_last_tick(frame, grid, frequency, pd.tseries.frequencies.to_offset(tick),
                                                     None)
    assert (dropped is None) is whole, dropped
    assert len(kept) == (len(frame) if whole else int((frame["ds"] < dropped["start"]).sum()))
