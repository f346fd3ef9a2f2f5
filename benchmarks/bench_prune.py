"""What `Store.prune` costs next to the day's ingest it runs beside (docs/benchmarks.md, "Pruning").

For each backend (a SQLite file; with ``--postgres`` also a PostgreSQL schema of its own): ``--streams`` hourly
streams get ``--days`` days of history, one ingest per day (as a daily feed writes them), each day followed by a
done tick with one verdict per stream. Then, timed: the next day's ingest (the baseline), the first prune of
everything older than ``--keep`` days (the catch-up a project does once), the next day's ingest again, and the
steady-state prune of one more day, the daily cost once a project prunes by cron. Ratios are against the day's
ingest in the same run.

Usage::

    .venv/bin/python benchmarks/bench_prune.py                                  # 2,000 streams x 120 days
    .venv/bin/python benchmarks/bench_prune.py --postgres postgresql+psycopg://postgres@127.0.0.1:5432/postgres \
        --write-docs
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from _docs import write_section  # noqa: E402
from _machine import load_average, machine_info  # noqa: E402

from mlma.policy import Decision, Verdict  # noqa: E402
from mlma.store import Store, TickRecord  # noqa: E402
from mlma.store.testing import postgres_schema  # noqa: E402

DAY0 = pd.Timestamp("2025-01-01")


def day_frame(ids: np.ndarray, day: int, rng: np.random.Generator) -> pd.DataFrame:
    stamps = pd.date_range(DAY0 + pd.Timedelta(days=day), periods=24, freq="h").values
    return pd.DataFrame({"unique_id": np.repeat(ids, 24), "ds": np.tile(stamps, len(ids)),
                         "y": rng.poisson(20.0, 24 * len(ids)).astype(np.float64)})


def run(url: str, streams: int, days: int, keep: int) -> dict:
    rng = np.random.default_rng(0)
    ids = np.array([f"zone-{i:05d}" for i in range(streams)], dtype=object)
    out = {}
    with Store.create(url) as store:
        start = time.perf_counter()
        for day in range(days):
            store.ingest_frame(day_frame(ids, day, rng), f"day-{day}")
            store.write_tick(TickRecord(day, verdicts=Decision.nothing(streams, Verdict.OK),
                                        start=DAY0 + pd.Timedelta(days=day), end=DAY0 + pd.Timedelta(days=day + 1)))
        out["build_s"] = time.perf_counter() - start

        def ingest(day: int) -> float:
            frame = day_frame(ids, day, rng)
            t = time.perf_counter()
            store.ingest_frame(frame, f"day-{day}")
            return time.perf_counter() - t

        out["ingest_before_s"] = ingest(days)
        cut = DAY0 + pd.Timedelta(days=days + 1 - keep)
        t = time.perf_counter()
        report = store.prune(cut, by="agent")
        out["first_prune_s"] = time.perf_counter() - t
        out["first_prune_rows"] = report.rows["observations"]
        out["ingest_after_s"] = ingest(days + 1)
        t = time.perf_counter()
        report = store.prune(cut + pd.Timedelta(days=1), by="agent")
        out["daily_prune_s"] = time.perf_counter() - t
        out["daily_prune_rows"] = report.rows["observations"]
    return out


def table(results: dict, streams: int, days: int, keep: int) -> str:
    info = machine_info()
    lines = [f"{streams:,} hourly streams, {days} days of history in daily ingests with a done tick each; keep "
             f"{keep} days. Measured {info['date']} at code {info['code']} ({info['nproc']} CPUs, load "
             f"{load_average()} at the end) with `benchmarks/bench_prune.py`.", "",
             "| store | day's ingest (24 x streams rows) | first prune | rows | rows/s | day's ingest after | "
             "daily prune | daily prune / day's ingest |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['ingest_before_s']:.2f} s | {r['first_prune_s']:.2f} s | "
                     f"{r['first_prune_rows']:,} | {r['first_prune_rows'] / r['first_prune_s']:,.0f} | "
                     f"{r['ingest_after_s']:.2f} s | {r['daily_prune_s']:.2f} s | "
                     f"{r['daily_prune_s'] / r['ingest_after_s']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=2_000)
    parser.add_argument("--days", type=int, default=120)
    parser.add_argument("--keep", type=int, default=60)
    parser.add_argument("--postgres", default=None, help="a PostgreSQL URL; the benchmark uses its own schema")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    results = {}
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        urls = {"SQLite": f"sqlite:///{folder / 'prune.db'}"}
        if args.postgres:
            urls["PostgreSQL"] = stack.enter_context(postgres_schema(args.postgres, prefix="mlma_bench_prune"))
        for name, url in urls.items():
            results[name] = run(url, args.streams, args.days, args.keep)
            print(name, results[name], flush=True)
    text = table(results, args.streams, args.days, args.keep)
    print(text)
    if args.write_docs:
        write_section(HERE.parent / "docs" / "benchmarks.md", "<!-- bench_prune:begin -->",
                      "<!-- bench_prune:end -->", "## Pruning (`mlma prune`)\n\n" + text, append=True)


if __name__ == "__main__":
    main()
