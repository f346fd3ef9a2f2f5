"""Labour: escalations per 1,000 stream-days by class, and their precision against ground-truth events."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlma.backtest import BacktestConfig, run_backtest
from mlma.detection import escalation_class, labour_scores
from mlma.escalations import Escalation, queue_items
from mlma.store.queries import escalation_queue

BOUNDS = pd.date_range("2025-01-01", periods=41, freq="D")


def events(*rows) -> pd.DataFrame:
    return pd.DataFrame([{"unique_id": uid, "kind": kind, "start": pd.Timestamp(start), "end": pd.Timestamp(end)}
                         for uid, kind, start, end in rows])


def escalations(*rows) -> pd.DataFrame:
    return pd.DataFrame([{"unique_id": uid, "tick": tick, "kind": kind} for uid, tick, kind in rows],
                        columns=["unique_id", "tick", "kind"])


def test_classes_of_escalation():
    assert [escalation_class(k) for k in ("data-quality", "silent", "cold")] == ["data"] * 3
    assert [escalation_class(k) for k in ("repeated-trigger", "challenger-lost", "fit-failed", "budget")] == \
        ["retraining"] * 4


def test_rates_are_per_thousand_stream_days_by_class():
    esc = escalations(("a", 3, "silent"), ("b", 4, "repeated-trigger"), ("b", 9, "challenger-lost"))
    out = labour_scores(esc, 500.0)
    assert out == {"escalations_per_1k_stream_days": 6.0, "data_escalations_per_1k_stream_days": 2.0,
                   "retraining_escalations_per_1k_stream_days": 4.0, "queue_items_per_1k_stream_days": 6.0}
    assert labour_scores(escalations(), 500.0)["escalations_per_1k_stream_days"] == 0.0


def test_precision_counts_only_events_that_need_a_person_on_the_same_stream_within_the_window():
    truth = events(("a", "outage_zeros", "2025-01-10", "2025-01-12"),    # data fault: needs a person
                   ("b", "storm", "2025-01-10", "2025-01-11"),           # passes by itself
                   ("c", "closure", "2025-01-20", "2025-01-20"))         # instant, permanent
    esc = escalations(
        # Tick k covers day k + 1 of January.
        ("a", 10, "data-quality"),   # during the outage
        ("a", 18, "data-quality"),   # the window of 7 ticks back starts 01-12, the outage's last day
        ("a", 19, "silent"),         # the window starts 01-13: after the outage
        ("b", 9, "data-quality"),    # a storm is not a data fault
        ("c", 18, "silent"),         # tick 18 ends as the closure happens: not yet
        ("c", 19, "silent"),         # the closure's tick
        ("x", 11, "repeated-trigger"),
    )
    out = labour_scores(esc, 1000.0, events=truth, boundaries=BOUNDS)
    assert out["escalation_precision"] == pytest.approx(round(3 / 7, 4))
    assert out["data_escalation_precision"] == pytest.approx(round(3 / 6, 4))
    assert out["retraining_escalation_precision"] == 0.0


def test_a_backtest_reports_labour_per_policy():
    ds = pd.date_range("2025-03-03", periods=24 * 20, freq="h")
    rng = np.random.default_rng(0)
    frames = []
    for i in range(5):
        y = 10 + 5 * np.sin(np.arange(len(ds)) * 2 * np.pi / 24) + rng.normal(0, 1, len(ds))
        keep = np.ones(len(ds), dtype=bool)
        if i == 0:
            keep[24 * 13:24 * 17] = False  # stream 0 stops reporting for four days
        frames.append(pd.DataFrame({"unique_id": f"s{i}", "ds": ds[keep], "y": y[keep]}))
    frame = pd.concat(frames, ignore_index=True)
    truth = pd.DataFrame({"unique_id": ["s0"], "kind": ["outage_missing"], "start": [ds[24 * 13]],
                          "end": [ds[24 * 17]], "relevant": [False]})
    result = run_backtest(frame, BacktestConfig(policies=["mlma", "never"], model="seasonal-naive",
                                                initial_ticks=10, sample_streams=0), events=truth)
    rows = {r["policy"]: r for r in result.summary}
    # Ten scored daily ticks of 24 hours; stream 0 had nothing scored for some of them (the four silent days
    # and the day after, whose seasonal-naive forecast needed the missing day).
    per_stream = result.per_stream[result.per_stream.policy == "never"].set_index("unique_id")["n_scored"]
    assert (per_stream.drop("s0") == 240).all() and per_stream["s0"] == 24 * 5
    assert rows["never"]["stream_days"] == pytest.approx(4 * 10 + 5)
    mlma = rows["mlma"]
    silent = result.escalation_log[(result.escalation_log.policy == "mlma")
                                   & (result.escalation_log.kind == "silent")]
    assert list(silent.unique_id) == ["s0"]
    n = len(result.escalation_log[result.escalation_log.policy == "mlma"])
    assert mlma["escalations_per_1k_stream_days"] == pytest.approx(1000 * n / 45, abs=1e-3)
    assert mlma["data_escalation_precision"] == pytest.approx(1.0)


def test_a_new_stream_short_of_history_is_not_escalated_but_one_that_cannot_get_its_model_is_once():
    """Two zones launch on day 30 of 50: one with ordinary hourly orders, one that reports the same count every
    hour. Both first run on a fall-back (a day of history, ridge needs nine). The ordinary zone's retries fit
    ridge once its history is long enough, with no escalation; the flat zone's retry with enough history still
    falls back (a constant series), which is escalated once, and its later retries are not."""
    from mlma.simulate import simulate_platform

    data = simulate_platform(6, 50, seed=1, event_rate=0).data
    day30 = data["ds"].min().normalize() + pd.Timedelta(days=30)
    hours = pd.date_range(day30, data["ds"].max(), freq="h")
    ordinary = data[data["unique_id"] == data["unique_id"].iloc[0]].set_index("ds")["y"].reindex(hours).to_numpy()
    launched = pd.DataFrame({"unique_id": "new-ordinary", "ds": hours, "y": ordinary})
    flat = pd.DataFrame({"unique_id": "new-flat", "ds": hours, "y": 3.0})
    frame = pd.concat([data, launched, flat], ignore_index=True)
    result = run_backtest(frame, BacktestConfig(policies=["never"], model="ridge", initial_ticks=21,
                                                frontier=False, executor="inline"))
    log = result.escalation_log
    cold = log[log["kind"] == "cold"]
    assert cold["unique_id"].tolist() == ["new-flat"]
    assert "series is constant" in cold["message"].iloc[0]
    # Raised at the first retry with nine days of history (tick k holds day k; the zone's first day is 30).
    assert 30 + 8 <= int(cold["tick"].iloc[0]) <= 30 + 10
    assert not log["unique_id"].eq("new-ordinary").any()


def test_queue_items_group_by_kind_tick_and_city_and_items_have_their_members_precision():
    truth = events(("a", "outage_zeros", "2025-01-03", "2025-01-04"), ("b", "outage_zeros", "2025-01-03", "2025-01-04"))
    esc = escalations(("a", 4, "data-quality"), ("b", 4, "data-quality"), ("c", 4, "data-quality"),
                      ("d", 4, "data-quality"), ("a", 4, "silent"), ("e", 9, "silent"))
    cities = {"a": "Berlin", "b": "Berlin", "c": "Berlin", "d": "Paris"}  # e has no city
    assert queue_items(esc["kind"], esc["tick"], esc["unique_id"].map(cities)).tolist() == [0, 0, 0, 1, 2, 3]
    out = labour_scores(esc, 1000.0, events=truth, boundaries=BOUNDS, groups=cities)
    assert out["escalations_per_1k_stream_days"] == 6.0 and out["queue_items_per_1k_stream_days"] == 4.0
    # Items: Berlin's data-quality (2 of 3 members match), Paris's (0 of 1), a's silent (1 of 1), e's (0 of 1).
    assert out["escalation_precision"] == round(3 / 6, 4)
    assert out["queue_item_precision"] == round((2 / 3 + 0 + 1 + 0) / 4, 4)
    # Without the attribute, one kind and tick is one item, whatever the streams.
    assert labour_scores(esc, 1000.0)["queue_items_per_1k_stream_days"] == 3.0


def test_the_backtest_counts_labour_in_the_items_the_live_queue_shows(store):
    """``queue_items``, by which the backtest counts its labour, makes the items the served queue
    (:func:`mlma.store.queries.escalation_queue`, the dashboard's and the API's) makes of the same escalations:
    120 random escalations of 40 streams, three cities and streams without one, three kinds, four ticks."""
    rng = np.random.default_rng(3)
    uids = [f"zone-{i:02d}" for i in range(40)]
    ids = dict(zip(uids, store.stream_ids(uids).tolist()))
    cities = {uid: ["Berlin", "Paris", "Rome"][i % 3] for i, uid in enumerate(uids) if i % 5}
    store.set_attributes({uid: {"city": city} for uid, city in cities.items()})
    picked = rng.choice(uids, 120)
    kinds = rng.choice(["silent", "data-quality", "repeated-trigger"], 120)
    ticks = rng.choice([3, 4, 5, 9], 120)
    esc_ids = store.add_escalations([Escalation(ids[u], int(t), str(k), 1, "m")
                                     for u, k, t in zip(picked, kinds, ticks)])
    items = queue_items(kinds, ticks, [cities.get(u) for u in picked])
    ours = sorted(sorted(np.asarray(esc_ids)[items == item].tolist()) for item in np.unique(items))
    queue = escalation_queue(store, group_by="city", per_page=500)
    assert ours == sorted(sorted(i["ids"]) for i in queue["items"]) and queue["total"] == len(ours)
    frame = pd.DataFrame({"unique_id": picked, "tick": ticks, "kind": kinds})
    assert labour_scores(frame, 1000.0, groups=cities)["queue_items_per_1k_stream_days"] == queue["total"]
    # The random draw makes the grouping matter: items of several streams, a kind and tick split by city.
    assert max(len(i) for i in ours) > 1 and len(ours) > frame.groupby(["kind", "tick"]).ngroups


def test_a_sparse_new_stream_whose_window_cannot_hold_what_its_model_needs_is_escalated_once_the_window_is_full():
    """Ridge needs 216 hourly observations; a 10-day window holds 240 hours, but a zone launched on day 20 that
    reports only in the mornings (11 hours a day) has 110 in it. It falls back at its first fit, and its retries fall back for
    want of history for ever: escalated once, at the first retry after its run of fall-backs is a whole window
    old, and not again. The zones that report every hour fit ridge and are never escalated."""
    from mlma.simulate import simulate_platform

    data = simulate_platform(4, 40, seed=1, event_rate=0).data
    day20 = data["ds"].min().normalize() + pd.Timedelta(days=20)
    hours = pd.date_range(day20, data["ds"].max(), freq="h")
    hours = hours[hours.hour < 11]
    ordinary = data[data["unique_id"] == data["unique_id"].iloc[0]].set_index("ds")["y"].reindex(hours).to_numpy()
    # A second sparse stream reports mornings from the start: its fall-back begins at the start-up's fits.
    always = data[(data["unique_id"] == data["unique_id"].iloc[1]) & (data["ds"].dt.hour < 11)]
    frame = pd.concat([data, pd.DataFrame({"unique_id": "late", "ds": hours, "y": ordinary}),
                       always.assign(unique_id="mornings")], ignore_index=True)
    result = run_backtest(frame, BacktestConfig(policies=["never"], model="ridge", freq="h", initial_ticks=14,
                                                train_window_ticks=10, frontier=False, executor="inline"))
    cold = result.escalation_log[result.escalation_log["kind"] == "cold"].set_index("unique_id")
    assert sorted(cold.index) == ["late", "mornings"]  # once each, and only the sparse streams
    late = cold.loc["late"]
    assert "110 observations" in late["message"] and "ridge needs 216" in late["message"]
    assert "10-tick training window is full" in late["message"]
    # Its first model is fitted once it has a season (24) of rows, at the end of day 22 (33 rows), and a fall-back
    # is retried once a season of rows has come since: days 25, 28, 31, 34. Day 34 is the first retry a whole
    # window (10 ticks) after the run began, when the window holds nothing from before it.
    assert int(late["tick"]) == 34
    # The start-up's fall-back is not news at start-up (tick 13, not reported); its retries come every three
    # days (16, 19, 22, 25): tick 25 is the first a whole window after the start-up.
    assert int(cold.loc["mornings", "tick"]) == 25


def test_a_window_too_short_for_the_model_is_refused_before_any_work():
    """A 7-day window of hourly data holds 168 steps and ridge needs 216: every stream would serve a fall-back
    for ever, so the backtest refuses the setting, naming it and the shortest window that works."""
    frame = pd.DataFrame({"unique_id": "a", "ds": pd.date_range("2025-01-01", periods=24 * 20, freq="h"),
                          "y": np.arange(24 * 20) % 24 + 1.0})
    with pytest.raises(ValueError, match=r"train_window_ticks=7 holds at most 168 steps of 'h' data, but ridge "
                                         r"needs 216 .* at least 9 ticks"):
        run_backtest(frame, BacktestConfig(policies=["never"], model="ridge", train_window_ticks=7,
                                           frontier=False, executor="inline"))
    # Nine days hold 216 steps: accepted.
    run_backtest(frame, BacktestConfig(policies=["never"], model="ridge", train_window_ticks=9, frontier=False,
                                       executor="inline"))
    # Month-based ticks over weekly data: 24 months hold at most 105 weeks (not 24 x 5, the longest month's
    # five weeks), and ridge needs 112 rows of weekly data.
    weeks = pd.DataFrame({"unique_id": "w", "ds": pd.date_range("2015-01-04", periods=520, freq="W-SUN"),
                          "y": 10 + np.sin(np.arange(520) / 8.3)})
    with pytest.raises(ValueError, match=r"train_window_ticks=24 holds at most 105 steps of 'W-SUN' data, but "
                                         r"ridge needs 112 .* at least 26 ticks"):
        run_backtest(weeks, BacktestConfig(policies=["never"], model="ridge", tick="MS", train_window_ticks=24,
                                           frontier=False, executor="inline"))
    # Left unset, the frequency's default is lengthened to what the model needs, not refused: daily data in daily
    # ticks defaults to four weeks (28 rows) and ridge needs 52; the fits then use ridge, none falls back.
    days = pd.DataFrame({"unique_id": "d", "ds": pd.date_range("2024-01-01", periods=200, freq="D"),
                         "y": 5 + np.arange(200) % 7 + np.sin(np.arange(200) / 5)})
    lengthened = run_backtest(days, BacktestConfig(policies=["always"], model="ridge", tick="1D", frontier=False,
                                                   executor="inline"))
    assert lengthened.config["train_window_ticks"] == 52
    assert lengthened.config["fits_fell_back"] == {} and lengthened.config["fits_done"] > 100


def test_attributes_that_cannot_group_the_queue_are_refused_before_any_work():
    frame = pd.DataFrame({"unique_id": "a", "ds": pd.date_range("2025-01-01", periods=24 * 20, freq="h"),
                          "y": 1.0})
    config = BacktestConfig(policies=["never"], model="seasonal-naive")
    cases = [(pd.DataFrame({"zone": ["a"], "city": ["Berlin"]}),
              "attributes: no column 'unique_id' naming the streams"),
             (pd.DataFrame({"unique_id": ["a"], "region": ["north"]}), "no column 'city' to group the queue by"),
             (pd.DataFrame({"unique_id": ["a", "a"], "city": ["Berlin", "Paris"]}), "stream 'a' appears twice")]
    for attributes, message in cases:
        with pytest.raises(ValueError, match=message):
            run_backtest(frame, config, attributes=attributes)
    # No attribute to group by: nothing is asked of the table.
    run_backtest(frame, BacktestConfig(policies=["never"], model="seasonal-naive", group_by=None),
                 attributes=pd.DataFrame({"zone": ["a"]}))


def test_queue_items_take_their_inputs_by_position_not_by_index():
    """A slice of a larger log (index 10..13) counts as a fresh one: two items, and precision computes."""
    esc = escalations(("a", 4, "silent"), ("b", 4, "silent"), ("a", 5, "silent"), ("b", 5, "silent"))
    esc.index = range(10, 14)
    truth = events(("a", "closure", "2025-01-03", "2025-01-06"))
    out = labour_scores(esc, 1000.0, events=truth, boundaries=BOUNDS)
    assert out["queue_items_per_1k_stream_days"] == 2.0 and out["queue_item_precision"] == 0.5
    with pytest.raises(ValueError, match="one kind, tick and group per escalation"):
        queue_items(["silent"], [4, 5], [None])


def test_a_fall_back_more_history_does_not_end_is_retried_ever_more_rarely_and_one_short_of_history_each_season():
    """A zone that reports the same count every hour runs on a fall-back model (a constant series) however much
    history it has: retried every season (here every tick), it got an identical new model version each tick. Its
    retries now wait twice as long each time, up to a training window (28 ticks): over 46 ticks, at ticks 1, 3, 7,
    15 and 31 after its first fall-back. A zone launched late, only short of history, is still retried every
    tick until it has its model; once a regular model serves, the spacing starts again from a season."""
    from mlma.agent import Agent
    from mlma.data import Frequency, make_tick_grid
    from mlma.fleet import FleetData
    from mlma.mlma_policy import MLMAPolicy
    from mlma.models import ForecastContext
    from mlma.simulate import simulate_platform
    from mlma.training import ModelService

    data = simulate_platform(4, 60, seed=2, event_rate=0).data
    start = data["ds"].min()
    hours = pd.date_range(start, data["ds"].max(), freq="h")
    flat = pd.DataFrame({"unique_id": "flat", "ds": hours, "y": 3.0})
    late = data[data["unique_id"] == data["unique_id"].iloc[0]].assign(unique_id="late")
    late = late[late["ds"] >= start + pd.Timedelta(days=20)]
    frame = pd.concat([data, flat, late], ignore_index=True)
    freq = Frequency("h")
    grid = make_tick_grid(frame, pd.tseries.frequencies.to_offset("1D"), freq=freq).boundaries
    fleet = FleetData(frame, freq.alias, grid)
    service = ModelService(fleet, "ridge", ForecastContext(freq="h", season_length=24, horizon=24),
                           train_window_ticks=28)
    fits = []
    fit = service.fit

    def counted(keys, **options):
        fits.extend((int(key.stream), int(key.end_tick)) for key in keys)
        return fit(keys, **options)

    service.fit = counted
    agent = Agent(MLMAPolicy(), service, season_length=24, scale=fleet.seasonal_naive_scale(24, before_tick=14))
    ids = list(fleet.ids)
    s_flat, s_late = ids.index("flat"), ids.index("late")
    agent.start(14)
    for k in range(14, 60):
        agent.tick(k)
    flat_fits = [k for s, k in fits if s == s_flat]
    assert flat_fits == [13, 14, 16, 20, 28, 44], flat_fits   # gaps of 1, 2, 4, 8 and 16 seasons
    assert agent.is_fallback[s_flat] and agent.fallback_retries[s_flat] == 5
    late_fits = [k for s, k in fits if s == s_late]
    assert not agent.is_fallback[s_late] and agent.fallback_retries[s_late] == 0
    # First fitted with one day of history, then again each tick until ridge has enough (nine days).
    assert late_fits[:9] == list(range(late_fits[0], late_fits[0] + 9)), late_fits


def test_on_a_clock_whose_season_spans_many_ticks_a_fall_back_is_still_retried_each_season():
    """Monthly data in monthly ticks: a season is a year of ticks, so retrying a constant series' fall-back each
    season costs one fit a year; the wait does not double there (a series that starts with years of zeros gets
    its model within a year of its first sales, as before)."""
    from mlma.agent import Agent
    from mlma.data import Frequency, make_tick_grid
    from mlma.fleet import FleetData
    from mlma.mlma_policy import MLMAPolicy
    from mlma.models import ForecastContext
    from mlma.training import ModelService

    months = pd.date_range("2000-01-01", periods=120, freq="MS")
    rng = np.random.default_rng(4)
    frame = pd.concat([pd.DataFrame({"unique_id": f"s{i}", "ds": months,
                                     "y": 100 + 10 * np.sin(np.arange(120) * np.pi / 6) + rng.normal(0, 2, 120)})
                       for i in range(3)] + [pd.DataFrame({"unique_id": "flat", "ds": months, "y": 0.0})],
                      ignore_index=True)
    freq = Frequency("MS")
    grid = make_tick_grid(frame, pd.tseries.frequencies.to_offset("MS"), freq=freq).boundaries
    fleet = FleetData(frame, freq.alias, grid)
    service = ModelService(fleet, "ridge", ForecastContext(freq="MS", season_length=12, horizon=1),
                           train_window_ticks=None)
    fits = []
    fit = service.fit

    def counted(keys, **options):
        fits.extend((int(key.stream), int(key.end_tick)) for key in keys)
        return fit(keys, **options)

    service.fit = counted
    agent = Agent(MLMAPolicy(), service, season_length=12, scale=fleet.seasonal_naive_scale(12, before_tick=48))
    s_flat = list(fleet.ids).index("flat")
    agent.start(48)
    for k in range(48, 120):
        agent.tick(k)
    flat_fits = [k for s, k in fits if s == s_flat]
    assert np.diff(flat_fits).tolist() == [12] * (len(flat_fits) - 1) and len(flat_fits) == 7, flat_fits
    assert agent.fallback_retries[s_flat] == 6   # counted, but on this clock they do not stretch the wait
