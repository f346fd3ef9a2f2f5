"""FleetData's indexes and the MASE scale: the vectorised forms equal their per-stream definitions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlma.fleet import FleetData


def ragged_fleet(rng, n_streams: int = 40) -> FleetData:
    """Hourly streams that start at different times (some before the first boundary), with gaps, and a few
    streams with no rows at all."""
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
    assert np.isfinite(full[[0, 3, 17, 39]]).all() and np.isnan(full[5])  # stream 5 has no rows
