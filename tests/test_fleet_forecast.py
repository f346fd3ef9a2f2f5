"""Fleet-wide forecasting (``BaseForecaster.predict_many``, ``ModelService.predict_many``) gives every stream
exactly what its own model's ``predict`` gives.

Property-style: each test draws many random fleets (seeded, so a failure names its seed) with gaps, NaN
values, runs of missing data, streams that start late (short histories, fall-back models), streams that
are new (no history yet in the forecast window) and streams gone silent. Seasonal-naive and ridge (every
target transform) are compared bit for bit: the vectorised code does the same arithmetic per element, and
ridge's product is a row-wise sum whose order of additions does not depend on the other streams.
"""

from __future__ import annotations

from concurrent.futures import Future

import numpy as np
import pandas as pd
import pytest

from mlma.fleet import FleetData
from mlma.models import (
    BaseForecaster,
    FleetHistory,
    ForecastContext,
    MeanForecaster,
    RidgeForecaster,
    SeasonalNaive,
    fit_forecaster,
    predict_fleet,
)
from mlma.training import FittedModel, InlineExecutor, ModelKey, ModelService, fleet_history, fleet_history_shards

SEEDS = range(16)

# freq, season length, horizon, grid step as a pandas offset
CLOCKS = [("h", 24, 24), ("D", 7, 14), ("MS", 12, 3)]


def _random_history(rng, base: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """One stream's recent history on ``base`` (ascending grid timestamps), of the given kind."""
    n = base.size
    start = {"full": 0, "late": int(rng.integers(n // 2, n - 2)), "new": n, "short": n - int(rng.integers(1, 4)),
             "silent": 0}[kind]
    stop = int(rng.integers(1, max(2, n // 3))) if kind == "silent" else n
    ds = base[start:stop]
    t = np.arange(start, stop)
    y = 50 + 20 * np.sin(2 * np.pi * t / 24) + rng.normal(0, 3, t.size) + rng.uniform(-40, 40)
    keep = rng.random(ds.size) > rng.uniform(0, 0.4)  # missing rows
    y[rng.random(ds.size) < rng.uniform(0, 0.2)] = np.nan  # rows reported without a value
    if ds.size > 10 and rng.random() < 0.4:
        a = int(rng.integers(0, ds.size - 5))
        y[a:a + int(rng.integers(2, 30))] = np.nan  # an outage
    return ds[keep], y[keep]


def _random_models(rng, ctx: ForecastContext, n: int, train: list) -> list:
    """Fitted models of random kinds (ridge with a random target transform, seasonal-naive, the fall-backs
    that short histories get), each fitted on ``train[i]``."""
    models = []
    for i in range(n):
        ds, y = train[i]
        choice = rng.integers(0, 4)
        if choice == 0:
            models.append(SeasonalNaive(ctx, season_length=int(rng.integers(1, 2 * ctx.season_length))).fit(ds, y))
        elif choice == 1:
            params = {"target_transform": str(rng.choice(["local", "ratio", "scale", "none"]))}
            models.append(fit_forecaster("ridge", ctx, ds, y, params=params).model)  # may fall back
        else:
            models.append(fit_forecaster(str(rng.choice(["ridge", "seasonal-naive"])), ctx, ds, y).model)
    return models


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("clock", CLOCKS, ids=[c[0] for c in CLOCKS])
def test_predict_fleet_equals_each_models_own_predict_on_random_fleets(seed, clock):
    freq, season, horizon = clock
    rng = np.random.default_rng(seed)
    ctx = ForecastContext(freq, season_length=season, horizon=horizon)
    steps = {"h": 24 * 40, "D": 120, "MS": 180}[freq]
    base = pd.date_range("2023-01-01", periods=steps + horizon, freq=freq).as_unit("ns").to_numpy()
    history_grid, future = base[:steps], base[steps:]
    n = int(rng.integers(1, 40))
    kinds = rng.choice(["full", "full", "late", "new", "short", "silent"], size=n)
    train = [_random_history(rng, history_grid, "full") for _ in range(n)]
    recent = [_random_history(rng, history_grid, str(kind)) for kind in kinds]
    models = _random_models(rng, ctx, n, train)
    assert {type(m) for m in models} >= {SeasonalNaive, RidgeForecaster} or n < 8

    fleetwide = predict_fleet(models, FleetHistory.from_histories(recent, future, freq))
    each = np.stack([m.predict(ds, y, future) for m, (ds, y) in zip(models, recent)])
    assert fleetwide.shape == (n, horizon)
    np.testing.assert_array_equal(fleetwide, each)


def test_the_random_fleets_do_cover_the_hard_cases():
    """The property test above is only as good as its fleets: they must hold NaN forecasts' neighbours,
    fall-back models, streams with no recent history and every kind of model."""
    rng = np.random.default_rng(0)
    ctx = ForecastContext("h", season_length=24, horizon=24)
    base = pd.date_range("2023-01-01", periods=24 * 40, freq="h").as_unit("ns").to_numpy()
    seen_types, empty, short_fit = set(), 0, 0
    for _ in range(6):
        n = 30
        kinds = rng.choice(["full", "full", "late", "new", "short", "silent"], size=n)
        recent = [_random_history(rng, base, str(kind)) for kind in kinds]
        train = [_random_history(rng, base, str(kind)) for kind in kinds]
        models = _random_models(rng, ctx, n, train)
        seen_types |= {type(m) for m in models}
        empty += sum(ds.size == 0 for ds, _ in recent)
        short_fit += sum(isinstance(m, MeanForecaster) for m in models)
    assert seen_types == {SeasonalNaive, RidgeForecaster, MeanForecaster}
    assert empty > 0 and short_fit > 0


# -- the model service ---------------------------------------------------------------------------------


def _random_fleet(rng, n_streams: int, days: int = 14) -> FleetData:
    """Hourly streams over ``days`` daily ticks, with late starters, gaps, NaN, outages and silent streams."""
    base = pd.date_range("2024-03-01", periods=24 * days, freq="h").as_unit("ns").to_numpy()
    frames = []
    for s in range(n_streams):
        kind = str(rng.choice(["full", "full", "late", "short", "silent"]))
        ds, y = _random_history(rng, base, kind)
        if ds.size == 0:
            ds, y = base[-1:], np.array([1.0])  # FleetData needs a row per stream
        frames.append(pd.DataFrame({"unique_id": f"s{s:03d}", "ds": ds, "y": y}))
    frame = pd.concat(frames, ignore_index=True)
    bounds = pd.date_range("2024-03-01", periods=days + 1, freq="D")
    fleet = FleetData(frame, "h", bounds)
    if rng.random() < 0.5:
        start = pd.Timestamp("2024-03-09") + pd.Timedelta(hours=int(rng.integers(0, 48)))
        fleet.mark_abnormal(pd.DataFrame({"unique_id": [None], "start": [start],
                                          "end": [start + pd.Timedelta(hours=int(rng.integers(1, 30)))]}))
    return fleet


def _own_predictions(service: ModelService, keys: list[ModelKey], target: int, window) -> np.ndarray:
    """The per-stream path: each model's own predict on ``FleetData.history``."""
    future = service.fleet.tick_timestamps(target)
    rows = []
    for key in keys:
        hist = service.fleet.history(key.stream, target - 1, window)
        rows.append(service.get(key).model.predict(hist.ds, hist.y, future))
    return np.stack(rows)


@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("spec", ["seasonal-naive", "ridge"])
def test_model_service_predict_many_equals_the_per_stream_path(seed, spec):
    rng = np.random.default_rng(100 + seed)
    fleet = _random_fleet(rng, int(rng.integers(3, 30)), days=22)
    ctx = ForecastContext("h", season_length=24, horizon=24)
    # Capped windows that hold what ridge needs (216 hourly rows) on most streams despite their gaps, shorter
    # than the 18 ticks of history.
    window = [None, 14, 16][seed % 3]
    service = ModelService(fleet, spec, ctx, train_window_ticks=window, predict_chunk_size=int(rng.integers(1, 9)))
    end = 18
    keys = [ModelKey(s, end) for s in range(fleet.n_streams)]
    fitted = service.fit(keys)
    # Both paths are exercised: the requested model where the window holds enough rows, fall-backs elsewhere.
    assert any(fm.fallback_reason is None for fm in fitted) and any(fm.fallback_reason for fm in fitted)
    for target in (end + 1, end + 3):  # also a model several ticks old, forecasting from newer data
        expected = _own_predictions(service, keys, target, window)
        np.testing.assert_array_equal(service.predict_many(keys, target), expected)
        # Served again from the cache, and one by one the same.
        np.testing.assert_array_equal(np.stack([service.predict(k, target) for k in keys]), expected)


def test_fleet_history_holds_exactly_each_streams_history():
    rng = np.random.default_rng(7)
    fleet = _random_fleet(rng, 25)
    for window in (None, 1, 4):
        streams = rng.permutation(fleet.n_streams)[:17]
        history = fleet_history(fleet, streams, 12, window)
        assert np.array_equal(history.future, fleet.tick_timestamps(12))
        for i, s in enumerate(streams):
            own = fleet.history(int(s), 11, window)
            ds, y = history.stream(i)
            assert np.array_equal(ds, own.ds) and np.array_equal(y, own.y, equal_nan=True)
        # The grid columns are the streams' places on one grid: equal steps between rows and to the future.
        step = np.timedelta64(1, "h")
        assert np.array_equal(history.future - history.future[0],
                              (history.future_columns - history.future_columns[0]) * step)
        assert np.array_equal(history.future[0] - history.ds, (history.future_columns[0] - history.column) * step)


def test_fleet_history_shards_are_the_fleet_wide_history_cut_into_shards():
    rng = np.random.default_rng(11)
    for _ in range(6):
        fleet = _random_fleet(rng, 23)
        streams = rng.permutation(fleet.n_streams)[: int(rng.integers(1, 24))]
        window = [None, 1, 4, 9][int(rng.integers(0, 4))]
        whole = fleet_history(fleet, streams, 12, window)
        order = rng.permutation(streams.size)
        shards = np.array_split(order, int(rng.integers(1, 5)))
        for shard, part in zip(shards, fleet_history_shards(fleet, streams, 12, window, shards)):
            cut = whole.take(shard)
            assert part.width == cut.width and part.n_streams == len(shard)
            for name in ("ds", "offsets", "column", "future", "future_columns"):
                assert np.array_equal(getattr(part, name), getattr(cut, name)), name
            assert np.array_equal(part.y, cut.y, equal_nan=True)
            assert np.array_equal(part.values(), cut.values(), equal_nan=True)


@pytest.mark.parametrize("spec", ["seasonal-naive", "ridge"])
def test_predict_many_never_lays_more_streams_on_the_grid_than_a_chunk(spec, monkeypatch):
    # A fleet-wide grid of 10,000 hourly streams is 50 MB an array: fresh memory from the kernel at every
    # tick made the live forecast several times slower than the backtest's. The service builds a chunk's
    # histories at a time. Models as a live tick has them (each loaded from its own artifact, so no two are
    # one object) still go through their class's vectorised call, never one by one.
    import pickle

    from mlma.models import base

    rng = np.random.default_rng(2)
    fleet = _random_fleet(rng, 40)
    ctx = ForecastContext("h", season_length=24, horizon=24)
    keys = [ModelKey(s, 12) for s in range(fleet.n_streams)]
    whole = ModelService(fleet, spec, ctx, train_window_ticks=None)
    whole.fit(keys)
    chunked = ModelService(fleet, spec, ctx, train_window_ticks=None, predict_chunk_size=6)
    for key, fitted in whole._models.items():
        chunked._models[key] = FittedModel(key, pickle.loads(pickle.dumps(fitted.model)), 0.0,
                                           fitted.fallback_reason, fitted.n_train)
    vectorised = {"seasonal-naive": SeasonalNaive, "ridge": RidgeForecaster}[spec]
    assert sum(type(chunked.get(k).model) is vectorised for k in keys) >= 5  # enough streams not on fall-back models
    sizes, one_by_one = [], []
    init, each = FleetHistory.__init__, base.predict_each

    def recording_init(self, *args, **kwargs):
        init(self, *args, **kwargs)
        sizes.append(self.n_streams)

    def recording_each(models, history):
        one_by_one.extend(type(m) for m in models)
        return each(models, history)

    monkeypatch.setattr(FleetHistory, "__init__", recording_init)
    monkeypatch.setattr(base, "predict_each", recording_each)
    forecasts = chunked.predict_many(keys, 13)
    assert sizes and max(sizes) <= 6
    assert vectorised not in one_by_one
    monkeypatch.undo()
    np.testing.assert_array_equal(forecasts, whole.predict_many(keys, 13))


class _ThreeSlotExecutor(InlineExecutor):
    """Runs calls here but says it has three slots, so the service cuts the streams into shards."""

    slots = 3

    def __init__(self) -> None:
        self.calls = 0

    def submit(self, fn, /, *args, **kwargs) -> Future:
        self.calls += 1
        return super().submit(fn, *args, **kwargs)


def test_forecasts_go_through_an_executor_of_several_slots_in_shards_with_the_same_result():
    rng = np.random.default_rng(3)
    fleet = _random_fleet(rng, 20, days=21)
    ctx = ForecastContext("h", season_length=24, horizon=24)
    keys = [ModelKey(s, 18) for s in range(fleet.n_streams)]
    inline = ModelService(fleet, "ridge", ctx, train_window_ticks=12)
    inline.fit(keys)
    executor = _ThreeSlotExecutor()
    sharded = ModelService(fleet, "ridge", ctx, train_window_ticks=12, executor=executor, parallel_threshold=1,
                           shard_forecasts=True)
    sharded.fit(keys)
    fit_calls = executor.calls
    forecasts = sharded.predict_many(keys, 19)
    assert executor.calls - fit_calls == 3  # one shard per slot
    np.testing.assert_array_equal(forecasts, inline.predict_many(keys, 19))
    # By default only a Dask executor takes forecasts: a local pool stays in this process.
    local = ModelService(fleet, "ridge", ctx, train_window_ticks=12, executor=executor, parallel_threshold=1)
    local.fit(keys)
    calls = executor.calls
    np.testing.assert_array_equal(local.predict_many(keys, 19), forecasts)
    assert executor.calls == calls and not local.shard_forecasts


class _Protocolonly:
    """A model that follows the Forecaster protocol without the base class: forecast the last value + 1."""

    min_history = 1

    def fit(self, ds, y, X=None):
        return self

    def predict(self, ds, y, future_ds, X=None, future_X=None):
        finite = y[np.isfinite(y)]
        return np.full(len(future_ds), (finite[-1] if finite.size else 0.0) + 1.0)


class _ShiftedNaive(SeasonalNaive):
    """A subclass that forecasts its own way: the fleet-wide path must not bypass its predict."""

    def predict(self, ds, y, future_ds, X=None, future_X=None):
        return super().predict(ds, y, future_ds) + 1000.0


class _HalvedRidge(RidgeForecaster):
    """A ridge subclass with its own product: the vectorised one must not replace it."""

    def _predict_matrix(self, Z):
        return super()._predict_matrix(Z) / 2


def test_models_outside_the_vectorised_path_are_asked_one_by_one():
    rng = np.random.default_rng(5)
    ctx = ForecastContext("h", season_length=24, horizon=24)
    base = pd.date_range("2023-01-01", periods=24 * 30, freq="h").as_unit("ns").to_numpy()
    future = base[-24:]
    histories = [_random_history(rng, base[:-24], "full") for _ in range(6)]
    models = [_Protocolonly(), _ShiftedNaive(ctx), SeasonalNaive(ctx), _HalvedRidge(ctx), RidgeForecaster(ctx),
              _Protocolonly()]
    for model, (ds, y) in zip(models, histories):
        model.fit(ds, y)
    fleetwide = predict_fleet(models, FleetHistory.from_histories(histories, future, "h"))
    each = np.stack([m.predict(ds, y, future) for m, (ds, y) in zip(models, histories)])
    np.testing.assert_array_equal(fleetwide, each)
    assert not isinstance(models[0], BaseForecaster)
    # The overrides did act: the subclasses differ from their parents on the same history.
    shifted = SeasonalNaive(ctx).fit(*histories[1]).predict(*histories[1], future)
    assert np.allclose(fleetwide[1], shifted + 1000.0)


def test_a_model_returning_the_wrong_shape_is_named():
    class Short(BaseForecaster):
        min_history = 1

        def fit(self, ds, y, X=None):
            return self

        def predict(self, ds, y, future_ds, X=None, future_X=None):
            return np.zeros(1)

    base = pd.date_range("2023-01-01", periods=48, freq="h").as_unit("ns").to_numpy()
    history = FleetHistory.from_histories([(base[:24], np.ones(24))], base[24:], "h")
    with pytest.raises(ValueError, match=r"Short.predict returned \(1,\) forecasts for 24 timestamps"):
        predict_fleet([Short()], history)


def test_fleet_history_rejects_a_future_inside_the_history():
    ds = pd.date_range("2023-01-01", periods=5, freq="h").as_unit("ns").to_numpy()
    with pytest.raises(ValueError, match="must come after every history column"):
        FleetHistory(ds, np.ones(5), [0, 5], np.arange(5), ds[-1:], [4])
    with pytest.raises(ValueError, match="already used 'h' grid slot"):
        FleetHistory.from_histories([(np.concatenate([ds, ds[:1]]), np.ones(6))], ds[-1:] + np.timedelta64(1, "h"),
                                    "h")


def test_lightgbm_features_built_fleet_wide_give_its_own_forecasts():
    """The regression models other than ridge share the fleet-wide features and predict their own rows."""
    pytest.importorskip("lightgbm")
    rng = np.random.default_rng(9)
    ctx = ForecastContext("h", season_length=24, horizon=24)
    base = pd.date_range("2023-01-01", periods=24 * 36, freq="h").as_unit("ns").to_numpy()
    future = base[-24:]
    train = [_random_history(rng, base[:-24], "full") for _ in range(5)]
    recent = [_random_history(rng, base[:-24], str(kind)) for kind in ("full", "late", "new", "silent", "full")]
    models = [fit_forecaster("lightgbm", ctx, ds, y).model for ds, y in train]
    assert type(models[0]).__name__ == "LightGBMForecaster"
    fleetwide = predict_fleet(models, FleetHistory.from_histories(recent, future, "h"))
    np.testing.assert_array_equal(fleetwide, np.stack([m.predict(ds, y, future) for m, (ds, y) in zip(models, recent)]))
