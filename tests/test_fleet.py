"""FleetData's indexes and the MASE scale: the vectorised forms equal their per-stream definitions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlma.fleet import FleetData


def ragged_fleet(rng, n_streams: int = 40, times_after: tuple[int, float] | None = None) -> FleetData:
    """Hourly streams that start at different times (some before the first boundary), with gaps, and a few
    streams with no rows at all. ``times_after=(tick, factor)`` multiplies the values from that tick's
    boundary on."""
    t0 = pd.Timestamp("2025-01-01")
    parts = []
    for s in range(n_streams):
        if s % 13 == 5:
            continue  # a stream with no rows in the loaded window
        first = int(rng.integers(-48, 24 * 6))
        hours = np.arange(first, 24 * 8)
        hours = hours[rng.random(len(hours)) > 0.2]
        parts.append(pd.DataFrame({"stream_id": s, "ds": t0 + pd.to_timedelta(hours, "h"),
                                   "y": rng.normal(10 + s, 2, len(hours))}))
    frame = pd.concat(parts, ignore_index=True)
    bounds = pd.date_range(t0, periods=9, freq="D")
    if times_after is not None:
        frame.loc[frame["ds"] >= bounds[times_after[0]], "y"] *= times_after[1]
    return FleetData(frame, "h", bounds, ids=[f"s{i}" for i in range(n_streams)], first_tick=3)


def test_row_at_tick_is_each_streams_first_row_at_or_after_each_boundary():
    fleet = ragged_fleet(np.random.default_rng(1))
    bounds = fleet.boundaries.to_numpy()
    for s in range(fleet.n_streams):
        lo, hi = fleet.offsets[s], fleet.offsets[s + 1]
        np.testing.assert_array_equal(fleet.row_at_tick[s], lo + np.searchsorted(fleet.ds[lo:hi], bounds))


@pytest.mark.parametrize("before_tick", [None, 7])
def test_the_scale_of_some_streams_equals_their_scale_computed_with_the_whole_fleet(before_tick):
    fleet = ragged_fleet(np.random.default_rng(2))
    full = fleet.seasonal_naive_scale(24, before_tick=before_tick)
    some = np.array([0, 3, 5, 17, 39])
    part = fleet.seasonal_naive_scale(24, before_tick=before_tick, streams=some)
    np.testing.assert_array_equal(part[some], full[some])
    assert np.isnan(np.delete(part, some)).all()
    assert np.isnan(full[5])  # stream 5 has no rows


def _scale_by_definition(fleet: FleetData, s: int, season: int, before, since) -> float:
    """Stream s's mean |y[t] - y[t - season]| over its hours t with both rows observed, t before
    ``boundaries[before]`` and t - season from ``boundaries[since]``: a loop over the stream's own rows."""
    lo, hi = fleet.offsets[s], fleet.offsets[s + 1]
    values = dict(zip(fleet.ds[lo:hi].astype("datetime64[ns]").astype(np.int64).tolist(), fleet.y[lo:hi].tolist()))
    lag = season * 3_600_000_000_000  # hours, in ns
    end = None if before is None else fleet.boundaries[before].value
    start = None if since is None else fleet.boundaries[since].value
    diffs = [abs(y - values[t - lag]) for t, y in values.items()
             if t - lag in values and (end is None or t < end) and (start is None or t - lag >= start)]
    return float(np.mean(diffs)) if diffs else np.nan


@pytest.mark.parametrize("before_tick, since_tick", [(None, None), (7, None), (4, None), (7, 4), (8, 6)])
def test_the_scale_takes_only_the_pairs_known_before_the_boundary_never_a_later_row(before_tick, since_tick):
    """Streams launched late get the scale of the few pairs they have before the boundary (NaN with none):
    what a live agent knows then, not a scale taken from their future rows."""
    fleet = ragged_fleet(np.random.default_rng(2))
    scale = fleet.seasonal_naive_scale(24, before_tick=before_tick, since_tick=since_tick)
    expected = [_scale_by_definition(fleet, s, 24, before_tick, since_tick) for s in range(fleet.n_streams)]
    np.testing.assert_allclose(scale, expected, rtol=1e-12)
    if before_tick == 4:  # some streams start after the boundary, or too late for a pair: no scale yet
        assert 0 < np.isnan(scale).sum() < fleet.n_streams - 5
    # Changing every row after the boundary changes nothing before it.
    if before_tick is not None:
        changed = ragged_fleet(np.random.default_rng(2), times_after=(before_tick, 100.0))
        np.testing.assert_array_equal(changed.seasonal_naive_scale(24, before_tick=before_tick,
                                                                   since_tick=since_tick), scale)
        assert not np.array_equal(changed.seasonal_naive_scale(24), fleet.seasonal_naive_scale(24))


def _pairs(fleet: FleetData, s: int, season: int, before, since) -> int:
    lo, hi = fleet.offsets[s], fleet.offsets[s + 1]
    hours = set(fleet.ds[lo:hi].astype("datetime64[h]").astype(np.int64).tolist())
    end = None if before is None else fleet.boundaries[before].value // 3_600_000_000_000
    start = None if since is None else fleet.boundaries[since].value // 3_600_000_000_000
    return sum(1 for t in hours if t - season in hours and (end is None or t < end)
               and (start is None or t - season >= start))


@pytest.mark.parametrize("tick, since", [(3, 0), (6, 0), (6, 3)])
def test_scale_known_at_a_tick_waits_for_a_season_of_pairs_before_the_ticks_end(tick, since):
    """A stream gets its scale once a season's worth of pairs (24 here) is known before the tick's end, from
    the window's first tick: NaN before that, then the mean of all of them."""
    fleet = ragged_fleet(np.random.default_rng(4))
    scale = fleet.scale_known_at(24, tick, since_tick=since)
    before, start = tick + 1, (since or None)
    counts = np.array([_pairs(fleet, s, 24, before, start) for s in range(fleet.n_streams)])
    expected = [_scale_by_definition(fleet, s, 24, before, start) if counts[s] >= 24 else np.nan
                for s in range(fleet.n_streams)]
    np.testing.assert_allclose(scale, expected, rtol=1e-12)
    assert ((counts > 0) & (counts < 24)).any(), "some stream should have a few pairs, not yet a season's"
