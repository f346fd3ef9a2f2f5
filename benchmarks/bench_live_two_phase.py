"""A live run too big to simulate, ingest and tick in one sitting: 100,000 zones on PostgreSQL, in two phases.

``bench_live.py`` simulates, ingests and ticks in one process. At 100,000 hourly zones the 28-day history is
66 M rows, whose ingest alone takes over half an hour on a small machine and whose simulated frame is most of
the process's peak memory. This script splits the run so that the ticks are measured in a fresh process:

- ``ingest``: simulate ``--zones`` zones for 28 + ``--ticks`` days (``bench_live``'s seed), create the project
  folder on a named PostgreSQL database (created, must not exist), ingest the 28 days of history in
  ``--history-ingests`` files, and save each later day as a parquet file in the folder;
- ``ticks``: in a new process, the live agent's start-up step, then for each saved day: ingest it and run a
  regular tick. Prints and saves (``--json``) each step's time, the ticks' peak RSS (``VmHWM`` reset after the
  start-up) and the process's peak, with the load average.

Usage::

    python benchmarks/bench_live_two_phase.py ingest --workdir /tmp/mlma-100k --db mlma_bench_100k
    python benchmarks/bench_live_two_phase.py ticks --workdir /tmp/mlma-100k --json /tmp/mlma-100k/ticks.json

The phase 2 run can be repeated on a copy of the database only: a tick changes the store.
"""

from __future__ import annotations

import argparse
import gc
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _machine import load_average  # noqa: E402
from bench_live import HISTORY_DAYS, MODEL, SEED, peak_rss_mb, peak_rss_since_reset_mb, reset_peak_rss  # noqa: E402

SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432"


def say(msg: str) -> None:
    print(f"{time.strftime('%H:%M:%S', time.gmtime())} {msg} [load {load_average()}]", flush=True)


def ingest_phase(args) -> None:
    import numpy as np
    import pandas as pd
    import sqlalchemy as sa

    from mlma.project import CONFIG_NAME, init_project
    from mlma.simulate import simulate_platform
    from mlma.store import Store

    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=False)
    admin = sa.create_engine(f"{SERVER}/postgres", isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{args.db}"'))
    admin.dispose()
    url = f"{SERVER}/{args.db}"
    root = workdir / "project"
    init_project(root, db=url, model=args.model)
    toml = (root / CONFIG_NAME).read_text()
    toml = re.sub(r'(?m)^executor = "process"', 'executor = "inline"', toml)
    toml = re.sub(r"(?m)^initial_ticks = 0", f"initial_ticks = {HISTORY_DAYS}", toml)
    (root / CONFIG_NAME).write_text(toml)

    t0 = time.perf_counter()
    data = simulate_platform(args.zones, HISTORY_DAYS + args.ticks, seed=SEED).data
    say(f"simulated {len(data):,} rows in {time.perf_counter() - t0:.0f} s")
    day = ((data["ds"] - data["ds"].min().normalize()) // pd.Timedelta("1D")).to_numpy()
    for i in range(args.ticks):
        data[day == HISTORY_DAYS + i].reset_index(drop=True).to_parquet(workdir / f"day-{i + 1}.parquet")
    store = Store.open(url)
    t0 = time.perf_counter()
    for i, group in enumerate(np.array_split(np.arange(HISTORY_DAYS), args.history_ingests)):
        part = data[np.isin(day, group)].reset_index(drop=True)
        t1 = time.perf_counter()
        report = store.ingest_frame(part, f"history-{i + 1}")
        say(f"history file {i + 1}/{args.history_ingests}: {report.rows_new:,} rows in {time.perf_counter() - t1:.0f} s")
        del part
        gc.collect()
    store.close()
    say(f"ingested the history in {time.perf_counter() - t0:.0f} s; process peak {peak_rss_mb():.0f} MB")
    (workdir / "ingested").write_text(json.dumps({"zones": args.zones, "ticks": args.ticks, "db": args.db,
                                                  "ingest_seconds": time.perf_counter() - t0}))


def ticks_phase(args) -> None:
    import pandas as pd

    from mlma.live import LiveAgent
    from mlma.project import load_config
    from mlma.store import Store

    workdir = Path(args.workdir)
    if not (workdir / "ingested").exists():
        raise SystemExit(f"{workdir} has no finished ingest phase (no 'ingested' file)")
    config = load_config(workdir / "project")
    store = Store.open(config.store_url)
    agent = LiveAgent(config, store=store, executor="inline")
    out = {"load_before": load_average(), "steps": []}
    t0 = time.perf_counter()
    result = agent.step()
    if not result.start:
        raise SystemExit(f"the first step was tick {result.tick}, not the start-up (was this database ticked?)")
    out["steps"].append({"what": "start-up", "seconds": time.perf_counter() - t0, "load": load_average()})
    say(f"start-up: {result} in {out['steps'][-1]['seconds']:.1f} s; process peak {peak_rss_mb():.0f} MB")
    gc.collect()
    out["peak_before_ticks_mb"] = peak_rss_mb()
    tick_peak = reset_peak_rss()
    days = sorted(workdir.glob("day-*.parquet"), key=lambda p: int(p.stem.split("-")[1]))
    for path in days:
        frame = pd.read_parquet(path)
        t0 = time.perf_counter()
        store.ingest_frame(frame, path.stem)
        ingest_s = time.perf_counter() - t0
        del frame
        t0 = time.perf_counter()
        result = agent.step()
        seconds = time.perf_counter() - t0
        out["steps"].append({"what": f"tick {result.tick}", "seconds": seconds, "ingest_seconds": ingest_s,
                             "load": load_average(), "peak_so_far_mb": peak_rss_since_reset_mb()})
        say(f"{path.stem}: ingest {ingest_s:.1f} s; {result} in {seconds:.1f} s; ticks' peak so far "
            f"{peak_rss_since_reset_mb():.0f} MB")
    out["tick_peak_rss_mb"] = peak_rss_since_reset_mb() if tick_peak else None
    out["process_peak_rss_mb"] = max(out["peak_before_ticks_mb"], peak_rss_mb())
    out["load_after"] = load_average()
    agent.close()
    store.close()
    say(f"ticks' peak {out['tick_peak_rss_mb']:.0f} MB, process peak {out['process_peak_rss_mb']:.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("phase", choices=["ingest", "ticks"])
    parser.add_argument("--workdir", required=True, help="the run's folder (ingest: must not exist)")
    parser.add_argument("--db", default="mlma_bench_100k", help="PostgreSQL database to create (ingest)")
    parser.add_argument("--zones", type=int, default=100_000)
    parser.add_argument("--ticks", type=int, default=2, help="regular ticks (days saved for phase 2)")
    parser.add_argument("--history-ingests", type=int, default=7, help="files the 28-day history is ingested in")
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--json", help="ticks: save the measurements here")
    args = parser.parse_args(argv)
    (ingest_phase if args.phase == "ingest" else ticks_phase)(args)


if __name__ == "__main__":
    main()
