"""The live tick's fleet built on the window's matrix against the flat rows main built (matrix to rows, then
FleetData()), in one process: 10,000 hourly streams, a 28-day window with 5 % gaps; construction time, the tick's reads and
seasonal-naive forecasts of every stream shard by shard, and the tracemalloc peak (numpy allocations).

Usage: python benchmarks/bench_fleet_matrix.py [N_STREAMS]
"""
import sys, time, tracemalloc
import numpy as np, pandas as pd
from mlma.fleet import FleetData
from mlma.training import HistoryGrid
from mlma.models import ForecastContext, SeasonalNaive
from mlma.models.base import predict_fleet

n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
rng = np.random.default_rng(0)
days = 29
origin = pd.Timestamp("2025-01-01")
m = rng.gamma(2.0, 5.0, (n, 28 * 24))
m[rng.random(m.shape) < 0.05] = np.nan
bounds = pd.date_range(origin, periods=days + 1, freq="D")
ids = np.array([f"z{i}" for i in range(n)], dtype=object)
ctx = ForecastContext("h", season_length=24, horizon=24)
ds0 = pd.date_range(origin, periods=48, freq="h").to_numpy()
model = SeasonalNaive(ctx).fit(ds0, np.ones(48))

def tick(build):
    tracemalloc.start(); t0 = time.perf_counter()
    fleet = build()
    t1 = time.perf_counter()
    a = fleet.actuals(27); o = fleet.observed_in_tick(27); r = fleet.n_rows_before(28)
    grid = HistoryGrid(fleet, np.arange(n), 28, 28)
    shards = [np.arange(i, min(i + 512, n)) for i in range(0, n, 512)]
    out = []
    for s in shards:  # one shard at a time, as ModelService does in-process
        h = grid.shard(s)
        out.append(predict_fleet([model] * len(s), h))
    t2 = time.perf_counter()
    peak = tracemalloc.get_traced_memory()[1]; tracemalloc.stop()
    return t1 - t0, t2 - t1, peak / 1e6, np.concatenate(out)

def rows():
    sid, col = np.nonzero(~np.isnan(m))
    frame = pd.DataFrame({"stream_id": sid, "ds": origin.to_datetime64() + col.astype("timedelta64[h]"), "y": m[sid, col]}, copy=False)
    return FleetData(frame, "h", bounds, ids=ids, first_tick=0)

def matrix():
    return FleetData.from_matrix(m, origin, "h", bounds, ids=ids, first_tick=0)

for name, build in (("rows", rows), ("matrix", matrix), ("rows", rows), ("matrix", matrix)):
    b, f, peak, y = tick(build)
    print(f"{name:6s} build {b:6.3f} s  reads+forecast {f:6.3f} s  tracemalloc peak {peak:7.1f} MB  sum {np.nansum(y):.6g}", flush=True)
