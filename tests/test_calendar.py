"""The calendar: one season rule, one tick clock, and every old call site agreeing with them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlma.calendar import (
    Frequency,
    TickClock,
    default_train_window,
    grid_stamps,
    make_tick_grid,
    on_tick_grid,
    season_length,
    tick_alias,
)
from mlma.models import ForecastContext, default_season_length

# (alias, expected season length). Expected values are the rule's, written out by hand: steps until the same
# phase of the shortest natural cycle longer than a step (day, week, 52-week year, 12-month year), if that
# lag is at most a year, else 1.
SEASONS = [
    ("15min", 96), ("30min", 48), ("h", 24), ("3h", 8), ("7h", 24), ("D", 7), ("2D", 7), ("5D", 7),
    ("W", 52), ("2W", 26), ("3W", 1), ("4W", 13), ("MS", 12), ("2MS", 6), ("5MS", 1), ("ME", 12),
    ("QS", 4), ("2QS", 2), ("QE", 4), ("YS", 1),
]


@pytest.mark.parametrize(("alias", "expected"), SEASONS)
def test_season_length_is_the_same_everywhere(alias, expected):
    clock = TickClock.covering(alias, None, "2024-01-01")
    seen = {
        "calendar.season_length": season_length(alias),
        "Frequency.season_length": Frequency(alias).season_length,
        "models.default_season_length": default_season_length(alias),
        "ForecastContext.for_freq": ForecastContext.for_freq(alias, horizon=1).season_length,
        "TickClock.season_length": clock.season_length,
    }
    assert set(seen.values()) == {expected}, seen


@pytest.mark.parametrize(("alias", "expected"), [s for s in SEASONS if s[1] > 1])
def test_a_season_returns_to_the_same_phase_of_the_natural_cycle(alias, expected):
    """Checked on real timestamps with pandas' own calendar fields, not with the rule's arithmetic."""
    freq = Frequency(alias)
    stamps = pd.DatetimeIndex(freq.grid("2021-01-01", "2023-12-31")[:200])
    later = pd.DatetimeIndex(freq.future(stamps[0], expected * 3 + 1)[expected - 1::expected][:3])
    first = stamps[0]
    if freq.step is not None and freq.step < pd.Timedelta(days=1):
        assert (later.time == first.time()).all()  # the same time of day
    elif freq.step is not None and freq.step < pd.Timedelta(days=7):
        assert (later.day_of_week == first.day_of_week).all()  # the same weekday
    elif freq.step is not None:  # weekly steps: the same week of a 52-week year
        assert ((later - first).days % 364 == 0).all() and (later.day_of_week == first.day_of_week).all()
    else:
        assert (later.month == first.month).all()  # the same month of the year
    # ...and no shorter lag does (the season is the shortest one).
    if expected > 1 and freq.step is not None and freq.step < pd.Timedelta(days=1):
        shorter = pd.DatetimeIndex(freq.future(first, expected - 1))
        assert not (shorter.time == first.time()).any()


def test_a_2d_grid_has_a_weekly_season_of_7_steps_where_the_old_rules_disagreed():
    # On main, Frequency("2D").season_length was 1 and default_season_length("2D") was 7; 2W: 26 vs 52;
    # 2MS: 6 vs 12.
    assert (season_length("2D"), season_length("2W"), season_length("2MS")) == (7, 26, 6)
    assert default_season_length("B") == season_length("B") == 5


CLOCKS = [
    ("h", "1D", "2024-01-03 05:00"), ("15min", "1D", "2023-03-26 01:45"), ("D", "7D", "2024-01-03"),
    ("D", "W-SUN", "2024-01-03"), ("D", "28D", "2023-11-02"), ("W-SUN", "28D", "2024-01-07"),
    ("2D", None, "2024-01-02"), ("MS", "12MS", "1982-04-01"), ("MS", "QS", "1982-04-01"),
    ("QE", None, "2000-03-31"), ("h", "MS", "2024-02-10 13:00"), ("h", "YS-JUL", "2024-02-10 13:00"),
]


@pytest.mark.parametrize(("freq", "tick", "first"), CLOCKS)
def test_tick_of_and_boundaries_round_trip(freq, tick, first):
    clock = TickClock.covering(freq, tick, first)
    assert clock.origin <= pd.Timestamp(first) < clock.boundary(1)
    edges = clock.boundaries(-3, 40)
    assert edges.is_monotonic_increasing and edges.is_unique
    assert clock.tick_of(edges[:-1]).tolist() == list(range(-3, 40))
    just_before = edges[1:] - pd.Timedelta(1, "ns")
    assert clock.tick_of(just_before).tolist() == list(range(-3, 40))
    # The same ticks as make_tick_grid lays over the same span, and the same as a TickGrid of the clock.
    grid = make_tick_grid(pd.DatetimeIndex([first, edges[-1] - pd.Timedelta(1, "ns")]), clock.tick, freq=freq)
    assert grid.boundaries.equals(clock.boundaries(0, len(grid)))
    assert clock.grid(0, len(grid)).boundaries.equals(grid.boundaries)
    # Round trip through the saved state.
    assert TickClock.from_arrays(clock.to_arrays()) == clock


@pytest.mark.parametrize(("freq", "tick", "first"), CLOCKS)
def test_the_data_grid_inside_ticks(freq, tick, first):
    clock = TickClock.covering(freq, tick, first)
    frequency = Frequency(freq)
    counts = []
    for k in range(0, 30):
        lo, hi = clock.boundary(k), clock.boundary(k + 1)
        stamps = clock.stamps(k, k + 1)
        assert len(stamps) == clock.steps_in_tick(k) > 0
        assert ((stamps >= lo.to_datetime64()) & (stamps < hi.to_datetime64())).all()
        assert on_tick_grid(stamps, freq, clock.tick).all()
        assert clock.last_timestamp(k) == pd.Timestamp(stamps[-1])
        # The next grid timestamp is in the next tick: the tick is complete once last_timestamp is in.
        assert clock.tick_of(frequency.future(stamps[-1], 1)[0]) == k + 1
        counts.append(len(stamps))
    # 30 ticks hold the longest tick of every clock here (a 31-day month, a leap year).
    assert clock.horizon() == max(counts)


def test_the_clock_follows_the_tick_anchor_where_the_old_live_clock_did_not():
    # live.Timing on main laid W-SUN ticks from the first Sunday after the origin (2024-01-07), one week off the
    # grid the backtest and the ingest check use, and refused all hourly data for YS-JUL ticks.
    clock = TickClock("D", "W-SUN", pd.Timestamp("2024-01-01"))
    assert clock.boundaries(0, 1).strftime("%Y-%m-%d").tolist() == ["2024-01-01", "2024-01-08"]
    assert on_tick_grid(pd.to_datetime(["2024-01-01 10:00", "2024-07-01 00:00"]), "h", "YS-JUL").all()
    with pytest.raises(ValueError, match="not a boundary"):
        TickClock("D", "W-SUN", pd.Timestamp("2024-01-02"))


def test_horizon_of_month_ticks_over_hours_is_the_longest_month():
    clock = TickClock.covering("h", "MS", "2024-01-01")
    assert clock.horizon() == 31 * 24
    assert clock.steps_in_tick(1) == 29 * 24  # February 2024


def test_ticks_that_do_not_fit_are_refused_by_every_entry_point():
    for call in (lambda: tick_alias("h", "90min"), lambda: TickClock("h", "90min", pd.Timestamp("2024-01-01")),
                 lambda: make_tick_grid(pd.DatetimeIndex(["2024-01-01"]), "90min", freq="h")):
        with pytest.raises(ValueError, match="whole number"):
            call()


def test_default_training_window():
    assert [default_train_window(f, t) for f, t in (("h", "1D"), ("15min", "1D"), ("D", "7D"), ("W-SUN", "28D"),
                                                    ("MS", "12MS"))] == [28, 28, 52, None, None]
    assert TickClock.covering("h", None, "2024-01-01").train_window() == 28


# -- the old call sites go through the calendar ------------------------------------------------------------------
def test_old_names_are_the_calendars():
    import mlma.backtest
    import mlma.data
    import mlma.live

    assert mlma.data.Frequency is Frequency and mlma.data.make_tick_grid is make_tick_grid
    assert mlma.data.on_tick_grid is on_tick_grid
    assert mlma.live.Timing is TickClock
    assert mlma.backtest.default_train_window is default_train_window


def test_the_stores_tick_alias_is_the_calendars():
    from mlma.store.ingest import _tick_alias

    for freq, tick in (("h", None), ("D", None), ("MS", None), ("h", "1D"), ("D", "W-SUN"), ("QE", None)):
        assert _tick_alias(Frequency(freq), tick) == tick_alias(freq, tick)


@pytest.mark.parametrize(("freq", "tick"), [("h", "1D"), ("W-SUN", "28D"), ("2D", "14D"), ("ME", "12MS"),
                                            ("2MS", "12MS"), ("2D", "MS"), ("h", "YS-JUL")])
def test_fleet_data_grid_and_positions_are_the_calendars(freq, tick):
    from mlma.fleet import FleetData

    frequency = Frequency(freq)
    start = pd.Timestamp("2023-01-01")
    stamps = grid_stamps(frequency, tick, start, start + pd.Timedelta(days=800))
    rng = np.random.default_rng(3)
    keep = np.sort(rng.choice(len(stamps), size=len(stamps) * 2 // 3, replace=False))
    frame = pd.DataFrame({"unique_id": "a", "ds": stamps[keep], "y": rng.normal(size=len(keep))})
    clock = TickClock.covering(frequency, tick, stamps[0])
    n_ticks = int(clock.tick_of(stamps[-1])) + 1
    # Load from tick 2 on: earlier rows get negative positions on the same grid.
    fleet = FleetData(frame, freq, clock.boundaries(2, n_ticks), first_tick=2)
    assert np.array_equal(fleet.grid, clock.stamps(2, n_ticks))
    grid_index = np.searchsorted(stamps, stamps[keep]) - np.searchsorted(stamps, fleet.grid[0])
    assert np.array_equal(fleet.grid_pos, grid_index)
    history = fleet.history(0, end_tick=n_ticks - 2)
    assert np.array_equal(history.pos, grid_index[:len(history)])
    k = n_ticks - 1
    assert np.array_equal(fleet.grid[fleet.tick_positions(k)], fleet.tick_timestamps(k))
    assert fleet.steps_in_tick(k) == clock.steps_in_tick(k)


def test_regularise_with_fleet_positions_equals_regularise_with_timestamps():
    from mlma.fleet import FleetData
    from mlma.models.features import regularise

    ds = pd.date_range("2024-01-01", periods=24 * 10, freq="h")
    rng = np.random.default_rng(0)
    keep = np.sort(rng.choice(len(ds), size=150, replace=False))
    frame = pd.DataFrame({"unique_id": "a", "ds": ds[keep], "y": rng.normal(size=150)})
    clock = TickClock.covering("h", "1D", ds[0])
    fleet = FleetData(frame, "h", clock.boundaries(0, 10))
    h = fleet.history(0, end_tick=8)
    by_stamps = regularise(h.ds, h.y, "h", future_ds=fleet.tick_timestamps(9))
    by_positions = regularise(h.ds, h.y, "h", positions=h.pos, future_positions=fleet.tick_positions(9))
    np.testing.assert_array_equal(by_stamps.y, by_positions.y)
    assert np.array_equal(by_stamps.hist_rows, by_positions.hist_rows)
    assert np.array_equal(by_stamps.future_rows, by_positions.future_rows)
    with pytest.raises(ValueError, match="already used"):
        regularise(h.ds[[0, 0]], h.y[:2], "h", positions=h.pos[[0, 0]])
