"""A live run too big to simulate, ingest and tick in one sitting: 100,000 zones on PostgreSQL, in two phases.

``bench_live.py`` simulates, ingests and ticks in one process. At 100,000 hourly zones the 28-day history is
66 M rows, whose ingest alone takes over half an hour on a small machine and whose simulated frame is most of
the process's peak memory. This script splits the run so that the ticks are measured in a fresh process:

- ``ingest``: simulate ``--zones`` zones for 28 + ``--warm-ticks`` + ``--ticks`` days (``bench_live``'s seed),
  create the project folder on a named PostgreSQL database (created, must not exist), ingest the 28 days of
  history in ``--history-ingests`` files, and save each later day as a parquet file in the folder;
- ``ticks``: in a new process, the live agent's start-up step, then for each saved day: ingest it and run a
  regular tick. The first ``--warm-ticks`` of them (default: what the ingest phase was given) are a warm-up:
  run exactly as the others, their times kept, but not in the measured mean, and the ticks' peak RSS
  (``VmHWM``) is reset again after them. Prints and saves (``--json``) each step's time, the measured ticks'
  peak RSS (``VmHWM`` reset after the start-up, and again after the warm-up), the peak over the warm-up and
  the measured ticks, and the process's peak, with the load average.

Why a warm-up: the monitoring policy's reference and window arrays fill over the first 25-30 ticks after the
start-up (the agent state grows about sixfold, then stays), and a tick grows with them; the ticks right after
the start-up are not the steady state. ``--warm-ticks`` defaults to 0 here all the same: at 100,000 zones each
warm-up tick costs a day's ingest (about 40 s) and a tick (4-12 s), so 30 of them add about half an hour, and
the ingest phase then simulates 30 more days at once (about twice the rows, and the memory, of 28 + 2 days).

Usage::

    python benchmarks/bench_live_two_phase.py ingest --workdir /tmp/mlma-100k --db mlma_bench_100k
    python benchmarks/bench_live_two_phase.py ticks --workdir /tmp/mlma-100k --json /tmp/mlma-100k/ticks.json
    # the steady state: 30 warm-up ticks, then 2 measured
    python benchmarks/bench_live_two_phase.py ingest --workdir /tmp/mlma-100k-w --db mlma_bench_100k_w \
        --warm-ticks 30

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
    warm = args.warm_ticks or 0
    data = simulate_platform(args.zones, HISTORY_DAYS + warm + args.ticks, seed=SEED).data
    say(f"simulated {len(data):,} rows in {time.perf_counter() - t0:.0f} s")
    day = ((data["ds"] - data["ds"].min().normalize()) // pd.Timedelta("1D")).to_numpy()
    for i in range(warm + args.ticks):
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
    (workdir / "ingested").write_text(json.dumps({"zones": args.zones, "ticks": args.ticks, "warm_ticks": warm,
                                                  "db": args.db, "ingest_seconds": time.perf_counter() - t0}))


def ticks_phase(args) -> None:
    import pandas as pd

    from mlma.live import LiveAgent
    from mlma.project import load_config
    from mlma.store import Store

    workdir = Path(args.workdir)
    if not (workdir / "ingested").exists():
        raise SystemExit(f"{workdir} has no finished ingest phase (no 'ingested' file)")
    days = sorted(workdir.glob("day-*.parquet"), key=lambda p: int(p.stem.split("-")[1]))
    ingested = json.loads((workdir / "ingested").read_text())
    # The ingest phase's warm-up unless given here (folders from before --warm-ticks: none).
    warm = ingested.get("warm_ticks", 0) if args.warm_ticks is None else args.warm_ticks
    if warm >= len(days):
        raise SystemExit(f"--warm-ticks {warm} leaves no tick to measure: {workdir} has {len(days)} saved days")
    config = load_config(workdir / "project")
    store = Store.open(config.store_url)
    agent = LiveAgent(config, store=store, executor="inline")
    out = {"load_before": load_average(), "warm_ticks": warm, "steps": []}
    t0 = time.perf_counter()
    result = agent.step()
    if not result.start:
        raise SystemExit(f"the first step was tick {result.tick}, not the start-up (was this database ticked?)")
    out["steps"].append({"what": "start-up", "seconds": time.perf_counter() - t0, "load": load_average()})
    say(f"start-up: {result} in {out['steps'][-1]['seconds']:.1f} s; process peak {peak_rss_mb():.0f} MB")
    gc.collect()
    out["peak_before_ticks_mb"] = peak_rss_mb()
    tick_peak = reset_peak_rss()
    warm_peak = None
    for i, path in enumerate(days):
        if i == warm and warm:
            # The measured ticks' own peak from here; the warm-up's is kept (the state grows while it fills).
            gc.collect()
            warm_peak = peak_rss_since_reset_mb() if tick_peak else None
            out["peak_before_ticks_mb"] = max(out["peak_before_ticks_mb"], peak_rss_mb())
            tick_peak = reset_peak_rss()
            say(f"warm-up done: {warm} ticks, their peak {warm_peak or float('nan'):.0f} MB; measuring from here")
        frame = pd.read_parquet(path)
        t0 = time.perf_counter()
        store.ingest_frame(frame, path.stem)
        ingest_s = time.perf_counter() - t0
        del frame
        t0 = time.perf_counter()
        result = agent.step()
        seconds = time.perf_counter() - t0
        out["steps"].append({"what": f"{'warm-up ' if i < warm else ''}tick {result.tick}", "tick": int(result.tick),
                             "after_startup": i + 1, "warm": i < warm, "seconds": seconds,
                             "ingest_seconds": ingest_s, "load": load_average(),
                             "peak_so_far_mb": peak_rss_since_reset_mb()})
        say(f"{path.stem}: ingest {ingest_s:.1f} s; {'warm-up ' if i < warm else ''}{result} in {seconds:.1f} s; "
            f"ticks' peak so far {peak_rss_since_reset_mb():.0f} MB")
    # The measured ticks' peak (reset after the warm-up), and the peak over the warm-up and the measured ticks.
    out["tick_peak_rss_mb"] = peak_rss_since_reset_mb() if tick_peak else None
    out["warm_tick_peak_rss_mb"] = (None if out["tick_peak_rss_mb"] is None else
                                    max(warm_peak or 0.0, out["tick_peak_rss_mb"]))
    measured = [s["seconds"] for s in out["steps"] if s.get("after_startup", 0) > warm]
    out["measured_ticks"] = f"{warm + 1}-{warm + len(measured)} after the start-up"
    out["tick_seconds_mean"] = sum(measured) / len(measured)
    out["process_peak_rss_mb"] = max(out["peak_before_ticks_mb"], peak_rss_mb())
    out["load_after"] = load_average()
    agent.close()
    store.close()
    say(f"ticks {out['measured_ticks']}: mean {out['tick_seconds_mean']:.1f} s, peak {out['tick_peak_rss_mb']:.0f} MB "
        f"({out['warm_tick_peak_rss_mb']:.0f} MB with the warm-up); process peak {out['process_peak_rss_mb']:.0f} MB")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("phase", choices=["ingest", "ticks"])
    parser.add_argument("--workdir", required=True, help="the run's folder (ingest: must not exist)")
    parser.add_argument("--db", default="mlma_bench_100k", help="PostgreSQL database to create (ingest)")
    parser.add_argument("--zones", type=int, default=100_000)
    parser.add_argument("--ticks", type=int, default=2, help="measured regular ticks (ingest: days saved for phase 2, "
                        "after the warm-up's)")
    parser.add_argument("--warm-ticks", type=int, metavar="W",
                        help="regular ticks run after the start-up and before the measured ones, not counted (the "
                             "agent state fills over the first 25-30 ticks and the ticks grow with it). ingest: "
                             "saves W more days (default 0: at 100,000 zones each warm-up tick adds a day's ingest, "
                             "about 40 s, and a tick, so 30 of them take about half an hour more, and the simulated "
                             "frame about doubles); ticks: how many of the saved days are a warm-up (default: the "
                             "ingest phase's W)")
    parser.add_argument("--history-ingests", type=int, default=7, help="files the 28-day history is ingested in")
    parser.add_argument("--model", default=MODEL)
    parser.add_argument("--json", help="ticks: save the measurements here")
    args = parser.parse_args(argv)
    if args.warm_ticks is not None and args.warm_ticks < 0:
        parser.error(f"--warm-ticks must be 0 or more, got {args.warm_ticks}")
    (ingest_phase if args.phase == "ingest" else ticks_phase)(args)


if __name__ == "__main__":
    main()
