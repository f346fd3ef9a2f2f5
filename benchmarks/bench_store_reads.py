"""Store.verdicts() built column-wise against the row-wise build it replaced, in the same run.

Writes ``--streams`` x ``--ticks`` verdict rows (default 5,000 x 10 = 50,000, with NULLs in the nullable
columns as real ticks have) to a fresh SQLite file and a fresh PostgreSQL schema, then reads them back with
``Store.verdicts()`` (all rows, and one tick) alternately with the column-wise build
(:func:`mlma.store.frames.rows_frame`, what the store does) and with the row-wise build
(:func:`mlma.store.frames.rowwise_frame` and one ``Verdict`` per row, what it did before), patched in for
the measurement. Same query, same process, interleaved repeats; the median of each is reported, and the
two frames are checked to be equal.

    .venv/bin/python benchmarks/bench_store_reads.py                 # both stores, about a minute
    .venv/bin/python benchmarks/bench_store_reads.py --backends sqlite --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from mlma.policy import Verdict  # noqa: E402
from mlma.store import Store, TickRecord  # noqa: E402
from mlma.store import frames  # noqa: E402
from mlma.store import store as store_module  # noqa: E402


@contextlib.contextmanager
def row_wise():
    """The store's frames built row by row while the block runs (the build before the column-wise one)."""
    saved = store_module.rows_frame, store_module.verdict_labels
    store_module.rows_frame, store_module.verdict_labels = frames.rowwise_frame, frames.rowwise_verdict_labels
    try:
        yield
    finally:
        store_module.rows_frame, store_module.verdict_labels = saved


def fill(store: Store, n_streams: int, n_ticks: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    store.stream_ids([f"zone-{i:06d}" for i in range(n_streams)])
    ids = np.arange(n_streams)
    for k in range(n_ticks):
        p_value = rng.uniform(size=n_streams)
        p_value[rng.uniform(size=n_streams) < 0.2] = np.nan          # streams the test did not judge
        degraded = rng.uniform(size=n_streams) < 0.05
        store.write_tick(TickRecord(k, verdicts=pd.DataFrame({
            "stream_id": ids, "verdict": np.where(degraded, int(Verdict.DEGRADED), int(Verdict.OK)),
            "p_value": p_value, "effect": rng.normal(size=n_streams), "retrain": degraded,
            "reason": np.where(degraded, "loss up 40%", None), "loss": rng.gamma(2.0, size=n_streams),
            "reference_loss": rng.gamma(2.0, size=n_streams), "model_version": ids + 1})))


def measure(read, repeats: int) -> dict:
    """Median seconds of ``read()`` column-wise and row-wise, interleaved; checks the frames are equal."""
    new, old = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        frame_new = read()
        new.append(time.perf_counter() - started)
        with row_wise():
            started = time.perf_counter()
            frame_old = read()
            old.append(time.perf_counter() - started)
    pd.testing.assert_frame_equal(frame_new, frame_old, check_exact=True)
    return {"rows": len(frame_new), "column_wise": statistics.median(new), "row_wise": statistics.median(old),
            "speed_up": statistics.median(old) / statistics.median(new)}


def run(backend: str, n_streams: int, n_ticks: int, repeats: int) -> list[dict]:
    from mlma.store.testing import postgres_schema, postgres_unavailable

    with contextlib.ExitStack() as stack:
        if backend == "sqlite":
            folder = stack.enter_context(tempfile.TemporaryDirectory())
            url = f"sqlite:///{folder}/mlma.db"
        else:
            reason = postgres_unavailable()
            if reason:
                print(f"postgresql skipped: {reason}")
                return []
            url = stack.enter_context(postgres_schema(prefix="mlma_bench"))
        store = stack.enter_context(Store.create(url))
        fill(store, n_streams, n_ticks)
        store.verdicts()  # warm the caches for both builds alike
        return [{"backend": backend, "read": "verdicts() (all)", **measure(store.verdicts, repeats)},
                {"backend": backend, "read": "verdicts(tick)", **measure(lambda: store.verdicts(n_ticks - 1),
                                                                         repeats * 3)}]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql")
    parser.add_argument("--streams", type=int, default=5000)
    parser.add_argument("--ticks", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=7, help="timed reads of each build (median reported)")
    args = parser.parse_args(argv)
    results = []
    for backend in args.backends.split(","):
        results += run(backend.strip(), args.streams, args.ticks, args.repeats)
    print(f"load average at the end: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")
    print("| store | read | rows | row-wise (s) | column-wise (s) | speed-up |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for r in results:
        print(f"| {r['backend']} | `{r['read']}` | {r['rows']:,} | {r['row_wise']:.3f} | {r['column_wise']:.3f} "
              f"| {r['speed_up']:.1f}x |")


if __name__ == "__main__":
    main()
