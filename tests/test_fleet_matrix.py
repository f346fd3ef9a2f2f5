"""FleetData built on the observation window's dense matrix gives what FleetData built from flat rows gives.

The live agent builds its fleet from the window's ``(streams x grid steps)`` matrix
(:meth:`FleetData.from_matrix`) and the backtest from rows: every answer the agent and the models read
(actuals, histories, tick positions, the MASE scale, the forecasting histories) must be the same, exactly, on
fleets with gaps, streams that start late, streams that vanish and streams with no row at all.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlma.fleet import FleetData
from mlma.models import ForecastContext, SeasonalNaive
from mlma.models.base import predict_fleet
from mlma.training import fleet_history_shards

T0 = pd.Timestamp("2025-01-01")


def random_fleet(seed: int, n_streams: int = 37, days: int = 9, before: int = 2):
    """A random hourly fleet as rows and as the matrix the window keeps: ``before`` days of history ahead of
    the first loaded tick, then ``days`` daily ticks of which the last has no data yet (the tick to forecast)."""
    rng = np.random.default_rng(seed)
    origin = T0 - pd.Timedelta(days=before)
    n_cols = (before + days - 1) * 24  # the matrix stops where the tick to forecast starts
    matrix = np.full((n_streams, n_cols), np.nan)
    for s in range(n_streams):
        kind = s % 5
        if kind == 4 and s % 10 == 4:
            continue  # no row at all
        first = int(rng.integers(0, n_cols // 2)) if kind == 1 else 0  # starts late
        last = int(rng.integers(n_cols // 3, n_cols)) if kind == 2 else n_cols  # vanishes
        cols = np.arange(first, last)
        cols = cols[rng.random(cols.size) > rng.uniform(0.0, 0.5)]  # gaps
        matrix[s, cols] = rng.normal(10 + s, 3, cols.size)
    sid, col = np.nonzero(np.isfinite(matrix))
    frame = pd.DataFrame({"stream_id": sid, "ds": origin + pd.to_timedelta(col, "h"), "y": matrix[sid, col]})
    bounds = pd.date_range(T0, periods=days + 1, freq="D")
    ids = [f"z{i}" for i in range(n_streams)]
    first_tick = 5
    rows = FleetData(frame, "h", bounds, ids=ids, first_tick=first_tick)
    dense = FleetData.from_matrix(matrix, origin, "h", bounds, ids=ids, first_tick=first_tick)
    return rows, dense, rng


def same_history(a, b) -> None:
    np.testing.assert_array_equal(a.ds, b.ds)
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_array_equal(a.pos, b.pos)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_matrix_fleet_answers_as_the_row_fleet(seed):
    rows, dense, _ = random_fleet(seed)
    assert dense.n_streams == rows.n_streams and dense.n_ticks == rows.n_ticks
    np.testing.assert_array_equal(dense.grid, rows.grid)
    for k in range(rows.tick_base, rows.n_ticks):
        np.testing.assert_array_equal(dense.actuals(k), rows.actuals(k))
        np.testing.assert_array_equal(dense.observed_in_tick(k), rows.observed_in_tick(k))
        np.testing.assert_array_equal(dense.tick_positions(k), rows.tick_positions(k))
        np.testing.assert_array_equal(dense.tick_timestamps(k), rows.tick_timestamps(k))
    for k in range(rows.tick_base, rows.n_ticks + 1):
        np.testing.assert_array_equal(dense.n_rows_before(k), rows.n_rows_before(k))
    for s in range(rows.n_streams):
        for end in range(rows.tick_base, rows.n_ticks):
            for window in (None, 1, 3, 50):
                same_history(dense.history(s, end, window), rows.history(s, end, window))


@pytest.mark.parametrize("seed", [3, 4])
def test_the_mase_scale_is_the_same_to_the_last_bit(seed):
    rows, dense, rng = random_fleet(seed)
    some = rng.choice(rows.n_streams, 9, replace=False)
    for season in (1, 24, 168):
        for before in (None, rows.tick_base + 1, rows.n_ticks - 1):
            np.testing.assert_array_equal(dense.seasonal_naive_scale(season, before_tick=before),
                                          rows.seasonal_naive_scale(season, before_tick=before))
            np.testing.assert_array_equal(dense.seasonal_naive_scale(season, before, streams=some),
                                          rows.seasonal_naive_scale(season, before, streams=some))
            since = rows.tick_base + 2  # a training window's first tick
            np.testing.assert_array_equal(dense.seasonal_naive_scale(season, before, since_tick=since),
                                          rows.seasonal_naive_scale(season, before, since_tick=since))
            np.testing.assert_array_equal(dense.seasonal_naive_scale(season, before, min_pairs=season),
                                          rows.seasonal_naive_scale(season, before, min_pairs=season))


def test_the_flat_arrays_are_built_on_demand_and_equal_the_rows():
    rows, dense, _ = random_fleet(5)
    assert "y" not in dense.__dict__  # nothing flat until asked
    for name in ("ds", "y", "grid_pos", "stream_of_row", "offsets", "row_at_tick", "row_abnormal"):
        np.testing.assert_array_equal(getattr(dense, name), getattr(rows, name), err_msg=name)
    np.testing.assert_array_equal(dense.rows_in_tick(7), rows.rows_in_tick(7))


@pytest.mark.parametrize("abnormal", [False, True])
def test_the_forecasting_histories_and_forecasts_are_the_same(abnormal):
    rows, dense, rng = random_fleet(6)
    if abnormal:
        periods = pd.DataFrame({"unique_id": ["z3", None], "start": [T0 + pd.Timedelta(hours=30), T0 + pd.Timedelta(days=5)],
                                "end": [T0 + pd.Timedelta(hours=80), T0 + pd.Timedelta(days=5, hours=6)]})
        rows.mark_abnormal(periods)
        dense.mark_abnormal(periods)
        np.testing.assert_array_equal(dense.abnormal_in_tick(8), rows.abnormal_in_tick(8))
        same_history(dense.history(3, 7, None), rows.history(3, 7, None))
        assert np.isnan(dense.history(3, 7, None).y).any()
        for k in range(rows.tick_base, rows.n_ticks + 1):
            np.testing.assert_array_equal(dense.n_rows_before(k, trainable=True),
                                          rows.n_rows_before(k, trainable=True))
        marked = rows.n_rows_before(rows.n_ticks) - rows.n_rows_before(rows.n_ticks, trainable=True)
        assert marked[3] > 0 and (marked > 0).sum() > 1
    target = rows.n_ticks - 1
    streams = rng.permutation(rows.n_streams)[:30]
    shards = [np.arange(0, 11), np.arange(11, 30)]
    for window in (None, 2):
        by_rows = fleet_history_shards(rows, streams, target, window, shards)
        by_matrix = fleet_history_shards(dense, streams, target, window, shards)
        for a, b in zip(by_rows, by_matrix, strict=True):
            assert a.width == b.width
            np.testing.assert_array_equal(a.future, b.future)
            np.testing.assert_array_equal(a.future_columns, b.future_columns)
            np.testing.assert_array_equal(a.values(), b.values())
            for name in ("ds", "y", "offsets", "column"):
                np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
            for i in range(a.n_streams):
                for x, y in zip(a.stream(i), b.stream(i)):
                    np.testing.assert_array_equal(x, y)
            np.testing.assert_array_equal(a.take([1, 0]).values(), b.take([1, 0]).values())
            ctx = ForecastContext("h", season_length=24, horizon=24)
            models = []
            for i in range(a.n_streams):
                ds, y = a.stream(i)
                models.append(SeasonalNaive(ctx).fit(ds, y) if np.isfinite(y).sum() >= 24 else None)
            fitted = [i for i, m in enumerate(models) if m is not None]
            np.testing.assert_array_equal(predict_fleet([models[i] for i in fitted], a.take(fitted)),
                                          predict_fleet([models[i] for i in fitted], b.take(fitted)))


def test_a_nan_y_is_no_observation():
    frame = pd.DataFrame({"unique_id": ["a", "a", "a", "b"],
                          "ds": pd.to_datetime(["2025-01-01 00:00", "2025-01-01 01:00", "2025-01-01 02:00",
                                                "2025-01-01 01:00"]),
                          "y": [1.0, np.nan, 3.0, 4.0]})
    bounds = pd.to_datetime(["2025-01-01", "2025-01-02"])
    fleet = FleetData(frame, "h", bounds)
    assert fleet.observed_in_tick(0).tolist() == [2, 1]
    assert fleet.history(0, 0).y.tolist() == [1.0, 3.0]
    matrix = np.full((2, 24), np.nan)
    matrix[0, [0, 2]], matrix[1, 1] = [1.0, 3.0], 4.0
    dense = FleetData.from_matrix(matrix, bounds[0], "h", bounds, ids=["a", "b"])
    np.testing.assert_array_equal(dense.actuals(0), fleet.actuals(0))


def test_a_matrix_of_the_wrong_shape_or_off_the_grid_is_refused():
    bounds = pd.to_datetime(["2025-01-01", "2025-01-02"])
    with pytest.raises(ValueError, match="one row per stream"):
        FleetData.from_matrix(np.zeros((3, 24)), bounds[0], "h", bounds, ids=["a", "b"])
    with pytest.raises(ValueError, match="not on the 'MS' grid"):  # (fixed steps take the matrix's phase)
        FleetData.from_matrix(np.zeros((2, 2)), pd.Timestamp("2025-01-15"), "MS",
                              pd.to_datetime(["2025-01-01", "2025-03-01"]), ids=["a", "b"])


@pytest.mark.parametrize("model", ["seasonal-naive", "ridge"])
def test_a_live_tick_reads_the_window_matrix_and_never_makes_flat_rows(tmp_path, monkeypatch, model):
    """The point of the matrix fleet: a live tick (start-up, then regular ticks) holds the training window
    once. Building the flat arrays fails the test."""
    from mlma.live import LiveAgent
    from mlma.project import init_project, load_config
    from mlma.simulate import simulate_platform
    from mlma.store import Store

    def flatten(self):
        raise AssertionError("the live tick asked for the flat arrays of its matrix fleet")

    monkeypatch.setattr(FleetData, "_flatten", flatten)
    built = []
    original = FleetData.from_matrix.__func__
    monkeypatch.setattr(FleetData, "from_matrix", classmethod(lambda cls, *a, **k: built.append(1) or original(cls, *a, **k)))
    root = tmp_path / "p"
    init_project(root, model=model)
    text = (root / "mlma.toml").read_text().replace('executor = "process"', 'executor = "inline"')
    (root / "mlma.toml").write_text(text.replace("initial_ticks = 0", "initial_ticks = 10"))
    data = simulate_platform(12, 14, seed=3).data
    day = ((data["ds"] - data["ds"].min().normalize()) // pd.Timedelta("1D")).to_numpy()
    config = load_config(root)
    with Store.open(config.store_url) as store, LiveAgent(config, store=store) as live:
        for i, d in enumerate([10, 11, 12, 13]):
            store.ingest_frame(data[(day < d) if i == 0 else (day == d - 1)], f"part-{i}")
            assert live.step().tick == d - 1
    # The start-up builds one fleet; each regular tick two: its no-data hold check counts on one too.
    assert len(built) == 1 + 2 * 3


def test_trainable_rows_leave_out_every_marked_row_and_follow_later_marks():
    """``n_rows_before(k, trainable=True)`` counts the rows a fit learns from: those whose history value is
    not NaN (a period marked abnormal turns its rows into NaN there). A period in the history before the
    first loaded tick counts too, and a period marked after a first count is in the next one."""
    rows, dense, _ = random_fleet(8)
    last = rows.n_ticks - 1

    def learnt(fleet):
        return np.array([np.isfinite(fleet.history(s, last, None).y).sum() for s in range(fleet.n_streams)])

    for fleet in (rows, dense):
        assert (fleet.n_rows_before(last + 1, trainable=True) == fleet.n_rows_before(last + 1)).all()
        fleet.mark_abnormal(pd.DataFrame({"unique_id": ["z0"], "start": [T0 - pd.Timedelta(hours=40)],
                                          "end": [T0 - pd.Timedelta(hours=30)]}))
        first = fleet.n_rows_before(last + 1, trainable=True)
        np.testing.assert_array_equal(first, learnt(fleet))
        assert first[0] < fleet.n_rows_before(last + 1)[0]
        fleet.mark_abnormal(pd.DataFrame({"unique_id": [None], "start": [T0 + pd.Timedelta(days=2)],
                                          "end": [T0 + pd.Timedelta(days=3)]}))
        second = fleet.n_rows_before(last + 1, trainable=True)
        np.testing.assert_array_equal(second, learnt(fleet))
        assert (second <= first).all() and (second < first).sum() > fleet.n_streams // 2
