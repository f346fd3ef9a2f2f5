"""Forecasting one tick for a whole fleet: per stream against fleet-wide; artifact writes: one by one against
batched.

A fleet of hourly streams (default 10,000) with daily ticks, 28 days of training window and a few percent
of rows missing (plus NaN values and streams that start late), as FleetData holds it. For seasonal-naive and
ridge, every stream's model is fitted once (at the last tick of the window), then the forecasts of the next
tick are timed two ways in the same run:

* **per stream**: what ``ModelService.predict`` did before the fleet protocol, one call per stream: the
  stream's window from ``FleetData.history``, then its model's ``predict`` (which lays the history on a grid
  again);
* **fleet-wide**: ``ModelService.predict_many`` for all streams: one grid for the fleet, then one
  ``predict_many`` call per model class (vectorised for both models), in calls of ``predict_chunk_size``.

The two results are compared (they must be equal bit for bit). Each timing is the median of ``--repeats``
runs.

Artifact writes: the ridge models, pickled, written to a fresh directory once with ``ArtifactStore.put_bytes``
one by one (two fsyncs each) and once with ``ArtifactStore.put_bytes_many`` (one ``syncfs`` before the
renames and one after), and once more batched without ``syncfs`` (the fallback: one fsync per file and one per
directory). The directories are on the file system of the repository (``--dir`` to choose).

Usage::

    .venv/bin/python benchmarks/bench_forecast.py --quick                 # 1,000 streams
    .venv/bin/python benchmarks/bench_forecast.py --streams 10000 --write-docs
"""

from __future__ import annotations

import argparse
import pickle
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _docs import write_section  # noqa: E402
from _machine import REPO, load_average, machine_info  # noqa: E402

from mlma import registry as registry_module  # noqa: E402
from mlma.fleet import FleetData  # noqa: E402
from mlma.models import ForecastContext  # noqa: E402
from mlma.registry import ArtifactStore  # noqa: E402
from mlma.training import ModelKey, ModelService, make_executor  # noqa: E402

DOC = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- forecast-results:begin -->", "<!-- forecast-results:end -->"
WINDOW = 28
DAYS = WINDOW + 2
CTX = ForecastContext("h", season_length=24, horizon=24)


def make_fleet(n_streams: int, seed: int = 11) -> FleetData:
    """Hourly streams over ``DAYS`` days: daily and weekly pattern, noise, 3 % of rows missing, 1 % NaN
    values, and one stream in ten starting late (a short history)."""
    rng = np.random.default_rng(seed)
    steps = 24 * DAYS
    t = np.arange(steps)
    level = rng.uniform(5, 200, n_streams)[:, None]
    y = level * (1 + 0.5 * np.sin(2 * np.pi * t / 24)[None, :] + 0.1 * np.sin(2 * np.pi * t / 168)[None, :])
    y = y + rng.normal(0, 1, (n_streams, steps)) * np.sqrt(level)
    y[rng.random(y.shape) < 0.01] = np.nan
    keep = rng.random(y.shape) > 0.03
    late = rng.random(n_streams) < 0.1
    first = np.where(late, rng.integers(24, steps - 24, n_streams), 0)
    keep &= t[None, :] >= first[:, None]
    keep[:, -1] = True  # every stream has a row
    stream, step = np.nonzero(keep)
    ds = pd.Timestamp("2025-01-01").to_datetime64() + step.astype("timedelta64[h]")
    frame = pd.DataFrame({"unique_id": np.char.add("s", stream.astype(str).astype(object).astype(str)),
                          "ds": ds.astype("datetime64[ns]"), "y": y[stream, step]})
    frame["unique_id"] = pd.Categorical(frame["unique_id"])
    frame = frame.sort_values(["unique_id", "ds"], kind="stable").reset_index(drop=True)
    frame["unique_id"] = frame["unique_id"].astype(str)
    return FleetData(frame, "h", pd.date_range("2025-01-01", periods=DAYS + 1, freq="D"))


def per_stream(service: ModelService, keys: list[ModelKey], target: int) -> np.ndarray:
    """The forecasting path before the fleet protocol: one history and one predict call per stream."""
    fleet = service.fleet
    future = fleet.tick_timestamps(target)
    out = np.empty((len(keys), future.size))
    for i, key in enumerate(keys):
        hist = fleet.history(key.stream, target - 1, service.train_window_ticks)
        out[i] = service.get(key).model.predict(hist.ds, hist.y, future)
    return out


def fleet_wide(service: ModelService, keys: list[ModelKey], target: int) -> np.ndarray:
    service._predictions.clear()  # time the work, not the cache
    return service.predict_many(keys, target)


def timed(fn, repeats: int) -> tuple[float, float, object]:
    """Median wall and CPU seconds of ``repeats`` calls (CPU too: the machine may be shared), and the result."""
    wall, cpu, result = [], [], None
    for _ in range(repeats):
        started, cpu_started = time.perf_counter(), time.process_time()
        result = fn()
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    return statistics.median(wall), statistics.median(cpu), result


def bench_forecasts(fleet: FleetData, repeats: int) -> tuple[list[dict], list]:
    rows, ridge_models = [], []
    end = DAYS - 2
    keys = [ModelKey(s, end) for s in range(fleet.n_streams)]
    for spec in ("seasonal-naive", "ridge"):
        service = ModelService(fleet, spec, CTX, train_window_ticks=WINDOW)
        started = time.perf_counter()
        service.fit(keys)
        fit_seconds = time.perf_counter() - started
        one, one_cpu, a = timed(lambda: per_stream(service, keys, end + 1), repeats)
        many, many_cpu, b = timed(lambda: fleet_wide(service, keys, end + 1), repeats)
        kinds = sorted({type(service.get(k).model).__name__ for k in keys})
        rows.append({"model": spec, "streams": len(keys), "models": ", ".join(kinds), "fit_s": fit_seconds,
                     "per_stream_s": one, "fleet_s": many, "ratio": one / many, "per_stream_cpu": one_cpu,
                     "fleet_cpu": many_cpu, "cpu_ratio": one_cpu / many_cpu,
                     "identical": bool(np.array_equal(a, b, equal_nan=True))})
        print(f"{spec}: per stream {one:.3f} s ({one_cpu:.3f} CPU), fleet-wide {many:.3f} s ({many_cpu:.3f} CPU), "
              f"{one / many:.1f}x wall, {one_cpu / many_cpu:.1f}x CPU, identical={rows[-1]['identical']}",
              flush=True)
        if spec == "ridge":
            ridge_models = [service.get(k).model for k in keys]
            pool_row = bench_process_pool(service, keys, end + 1, repeats, b)
    return rows + [pool_row], ridge_models


def bench_process_pool(inline: ModelService, keys: list[ModelKey], target: int, repeats: int,
                       expected: np.ndarray) -> dict:
    """Fleet-wide ridge forecasts sent in shards to a local pool of two processes (``shard_forecasts=True``),
    against the same in this process: why a local pool does not take forecasts by default."""
    with make_executor("process:2") as pool:
        service = ModelService(inline.fleet, inline.spec, CTX, train_window_ticks=WINDOW, executor=pool,
                               shard_forecasts=True)
        service._models = dict(inline._models)
        wall, cpu, result = timed(lambda: fleet_wide(service, keys, target), repeats)
    inline_wall, inline_cpu, _ = timed(lambda: fleet_wide(inline, keys, target), repeats)
    print(f"ridge on process:2 shards: {wall:.3f} s (this process {cpu:.3f} CPU), inline {inline_wall:.3f} s",
          flush=True)
    return {"model": "ridge, shards on process:2", "streams": len(keys), "models": "as above",
            "per_stream_s": inline_wall, "per_stream_cpu": inline_cpu, "fleet_s": wall, "fleet_cpu": cpu,
            "ratio": inline_wall / wall, "cpu_ratio": inline_cpu / cpu,
            "identical": bool(np.array_equal(result, expected, equal_nan=True))}


def bench_artifacts(models: list, directory: Path) -> list[dict]:
    blobs = [pickle.dumps(m, protocol=pickle.HIGHEST_PROTOCOL) for m in models]
    distinct = len({hash(b) for b in blobs})
    rows = []
    real_syncfs = registry_module.durable.syncfs

    def one_by_one(root: Path) -> None:
        store = ArtifactStore(root)
        for blob in blobs:
            store.put_bytes(blob)

    def batched(root: Path) -> None:
        ArtifactStore(root).put_bytes_many(blobs)

    def batched_without_syncfs(root: Path) -> None:
        registry_module.durable.syncfs = lambda path: False
        try:
            ArtifactStore(root).put_bytes_many(blobs)
        finally:
            registry_module.durable.syncfs = real_syncfs

    for name, fn in (("one by one (put_bytes)", one_by_one), ("batched (put_bytes_many, syncfs)", batched),
                     ("batched, fallback without syncfs", batched_without_syncfs)):
        root = Path(tempfile.mkdtemp(prefix="bench-artifacts-", dir=directory))
        try:
            started = time.perf_counter()
            fn(root)
            seconds = time.perf_counter() - started
        finally:
            shutil.rmtree(root, ignore_errors=True)
        rows.append({"how": name, "artifacts": len(blobs), "distinct": distinct, "seconds": seconds})
        print(f"artifacts {name}: {seconds:.2f} s for {len(blobs)}", flush=True)
    base = rows[0]["seconds"]
    for row in rows:
        row["ratio"] = base / row["seconds"]
    return rows


def render(forecast_rows: list[dict], artifact_rows: list[dict], info: dict, command: str) -> str:
    lines = [
        f"Measured {info['date']} on {info['nproc']} cores ({info['cpu']}), load average before the run "
        f"{info['load']}, with `{command}`. Hourly streams, daily ticks, a {WINDOW}-day window; medians of "
        f"{info['repeats']} runs.",
        "",
        "| model | streams | fitted models | per stream: wall s (CPU s) | fleet-wide: wall s (CPU s) | "
        "speed-up wall (CPU) | same forecasts |",
        "| --- | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for r in forecast_rows[:-1]:
        lines.append(f"| {r['model']} | {r['streams']:,} | {r['models']} | {r['per_stream_s']:.2f} "
                     f"({r['per_stream_cpu']:.2f}) | {r['fleet_s']:.3f} ({r['fleet_cpu']:.3f}) | {r['ratio']:.1f}x "
                     f"({r['cpu_ratio']:.1f}x) | {'bit for bit' if r['identical'] else 'NO'} |")
    pool = forecast_rows[-1]
    lines += ["", f"Fleet-wide ridge forecasts of the same {pool['streams']:,} streams sent in shards to a local "
              f"pool of two processes (`shard_forecasts=True`): {pool['fleet_s']:.2f} s wall against "
              f"{pool['per_stream_s']:.2f} s in this process (forecasts "
              f"{'the same bit for bit' if pool['identical'] else 'DIFFERENT'}); "
              + ("the pickling of models and histories costs more than the second core gives back, so a local "
                 "pool does not take forecasts by default, a Dask cluster does."
                 if pool["fleet_s"] > pool["per_stream_s"] else
                 "faster in the pool here, although a local pool does not take forecasts by default.")]
    lines += ["", "| artifact writes | artifacts (distinct) | seconds | against one by one |",
              "| --- | ---: | ---: | ---: |"]
    for r in artifact_rows:
        lines.append(f"| {r['how']} | {r['artifacts']:,} ({r['distinct']:,}) | {r['seconds']:.2f} | "
                     + ("baseline |" if r is artifact_rows[0] else f"{r['ratio']:.1f}x faster |"))
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="1,000 streams, one repeat")
    parser.add_argument("--dir", type=Path, default=REPO, help="where the artifact directories are made")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.streams, args.repeats = 1_000, 1
    info = machine_info() | {"load": load_average(), "repeats": args.repeats}
    fleet = make_fleet(args.streams)
    forecast_rows, ridge_models = bench_forecasts(fleet, args.repeats)
    artifact_rows = bench_artifacts(ridge_models, args.dir)
    command = "benchmarks/bench_forecast.py " + " ".join(argv if argv is not None else sys.argv[1:])
    text = render(forecast_rows, artifact_rows, info, command.strip())
    print(text)
    if args.write_docs:
        write_section(DOC, BEGIN, END, text, append=True)


if __name__ == "__main__":
    main()
