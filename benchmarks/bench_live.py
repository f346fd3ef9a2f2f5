"""What one live tick costs on a persistent store: SQLite and PostgreSQL, 1,000 and 10,000 hourly streams.

For each store and fleet size this builds a project (``mlma.project.init_project``: ``seasonal-naive`` model,
``[agent] executor = "inline"``, ``initial_ticks = 28``), fills it with the simulated delivery platform
(``mlma.simulate``, seed 7, hourly data, daily ticks) and drives :class:`mlma.live.LiveAgent` as the daily
loop would:

1. one :meth:`~mlma.store.Store.ingest_frame` of 28 days of history;
2. the start-up step (``LiveAgent.step``): first models for every stream and forecasts for the next day;
3. ``--warm-ticks`` regular ticks (default 30, ``--quick`` 3) that are run but not counted: the monitoring
   policy's reference and window arrays fill over the first 25-30 ticks after the start-up (the agent state
   grows from 1 MB to 6 MB at 10,000 streams, then stays) and the live and the backtest tick grow with them,
   so a tick right after the start-up is not the steady state;
4. ``--ticks`` measured regular ticks (default three); every regular tick, warm-up or measured, is preceded
   by the ingest of one day of actuals (timed on its own).

The backtest baseline counts the same ticks (the same tick numbers after the start-up) as the live agent
measured. Every regular tick's wall time, the warm-up's included, is kept (``tick_walls``) and rendered at a
few tick numbers next to the backtest's, so that the growth is visible.

The model is the cheapest there is, so that what is left is the store's and the agent's own overhead. For
every step it records the wall time, where the time went (``LiveAgent``, ``Agent``, ``Store``, registry and
DB-API cursor methods wrapped with timers at run time, in this process only: nothing in ``src`` is edited),
the SQL statements sent, by kind and by shape (SQLAlchemy's ``before_cursor_execute`` event on the store's
engine, plus the two places that use the driver's cursor directly: the observation read and PostgreSQL's
``COPY``), the transactions committed, the rows read and the rows each table gained, and the size of the
saved agent state per stream. The Markdown it prints ends with a reading worked out from the numbers.

Each configuration runs in a process of its own, so that peak memory (the resident-set high-water mark) is
its own and the timers patched in do not leak between runs.

Usage::

    .venv/bin/python benchmarks/bench_live.py --quick          # 300 and 1,000 streams, SQLite, 3 warm-up ticks
    .venv/bin/python benchmarks/bench_live.py --write-docs --json /tmp/live.json
    .venv/bin/python benchmarks/bench_live.py --from-json /tmp/live.json --write-docs
    # other models and sizes, rendered into their own table (between the live-more markers):
    .venv/bin/python benchmarks/bench_live.py --sizes 10000 --model ridge --json /tmp/ridge.json
    .venv/bin/python benchmarks/bench_live.py --backends postgresql --sizes 100000 --ticks 2 \
        --history-ingests 7 --no-backtest --json /tmp/100k.json
    .venv/bin/python benchmarks/bench_live.py --more-json /tmp/ridge.json,/tmp/100k.json --write-docs
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import inspect
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _docs import write_section  # noqa: E402
from _machine import REPO, load_average, machine_info, version  # noqa: E402

DOC = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- live-results:begin -->", "<!-- live-results:end -->"
SEED = 7
HISTORY_DAYS = 28
MODEL = "seasonal-naive"
#: Regular ticks run after the start-up step and before the measured ones, not counted: the monitoring
#: policy's reference and window arrays fill over the first 25-30 ticks (the agent state grows from 1 MB to
#: 6 MB at 10,000 streams, then stays), and the live and the backtest tick grow with them. A tick right
#: after the start-up is not the steady state the 2x goal is about.
WARM_TICKS = 30
QUICK_WARM_TICKS = 3
BACKENDS = ("sqlite", "postgresql")
#: Tables whose rows are counted before and after each step (the observation tables are the ingest's).
COUNTED_TABLES = ("ticks", "verdicts", "forecasts", "escalations", "audit_log", "agent_state", "locks",
                  "model_versions", "champions", "champion_history", "stream_actions")


# -- plans ---------------------------------------------------------------------------------------------------
def plan(quick: bool, backends: list[str], ticks: int, sizes: list[int] | None = None, model: str = MODEL,
         warm_ticks: int | None = None) -> dict:
    sizes = sizes or ((300, 1_000) if quick else (1_000, 10_000))
    if quick:
        backends = [b for b in backends if b == "sqlite"] or ["sqlite"]
    if warm_ticks is None:
        warm_ticks = QUICK_WARM_TICKS if quick else WARM_TICKS
    return {"sizes": list(sizes), "backends": backends, "ticks": ticks, "warm_ticks": warm_ticks, "seed": SEED,
            "history_days": HISTORY_DAYS, "model": model}


# -- instruments ---------------------------------------------------------------------------------------------
class PhaseClock:
    """Inclusive wall time per call path of the wrapped functions (main thread only), while recording."""

    def __init__(self) -> None:
        self.recording = False
        self.stack: list[str] = []
        self.seconds: dict[tuple[str, ...], float] = collections.defaultdict(float)
        self.calls: collections.Counter = collections.Counter()
        self._main = threading.get_ident()

    def reset(self) -> None:
        self.stack.clear()
        self.seconds.clear()
        self.calls.clear()

    def wrap(self, owner, name: str, label: str | None = None) -> None:
        if isinstance(owner, type) and name in owner.__dict__:
            original = owner.__dict__[name]
        else:
            original = getattr(owner, name)  # a module's function, or a method a subclass inherits
        bind = None
        if isinstance(original, classmethod):  # timed as the function it wraps, re-wrapped below
            original, bind = original.__func__, classmethod
        if isinstance(original, staticmethod) or not callable(original):
            raise TypeError(f"{owner.__name__}.{name} is not a plain function; it cannot be timed here")
        label = label or name
        clock = self

        @functools.wraps(original)
        def timed(*args, **kwargs):
            if not clock.recording or threading.get_ident() != clock._main:
                return original(*args, **kwargs)
            clock.stack.append(label)
            path = tuple(clock.stack)
            started = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                clock.seconds[path] += time.perf_counter() - started
                clock.calls[path] += 1
                clock.stack.pop()

        setattr(owner, name, timed if bind is None else bind(timed))

    def snapshot(self) -> list[dict]:
        return [{"path": list(p), "seconds": s, "calls": self.calls[p]} for p, s in self.seconds.items()]


_TARGET = re.compile(r"\b(?:INTO|UPDATE|FROM|TABLE(?: IF (?:NOT )?EXISTS)?|ANALYZE|COPY)\s+\"?(\w+)", re.I)


def statement_shape(statement: str) -> str:
    """A statement reduced to its kind, its first table and how it moves rows, e.g. ``INSERT observations
    (from SELECT, ON CONFLICT)``: statements of one shape differ only in their values.

    >>> statement_shape("INSERT INTO verdicts (tick, stream_id) VALUES (?, ?)")
    'INSERT verdicts'
    """
    text = " ".join(statement.split())
    kind = text.split(" ", 1)[0].upper()
    found = _TARGET.search(text)
    shape = f"{kind} {found.group(1)}" if found else text[:48]
    upper = text.upper()
    extras = [label for label, hit in (("from SELECT", kind == "INSERT" and re.search(r"\)\s*SELECT\b", upper)),
                                       ("ON CONFLICT", "ON CONFLICT" in upper),
                                       ("RETURNING", " RETURNING " in upper),
                                       ("JOIN", kind == "SELECT" and " JOIN " in upper)) if hit]
    return shape + (f" ({', '.join(extras)})" if extras else "")


class SqlCounter:
    """Statements the store's engine sends from the main thread: by first keyword, by shape (with the time
    until the driver returned from ``execute``), rows sent in bulk, and commits."""

    def __init__(self, engine) -> None:
        import sqlalchemy as sa

        self.dialect = engine.dialect.name
        self._main = threading.get_ident()
        self.reset()
        sa.event.listen(engine, "before_cursor_execute", self._before)
        sa.event.listen(engine, "after_cursor_execute", self._after)
        sa.event.listen(engine, "commit", self._on_commit)

    def reset(self) -> None:
        self.statements: collections.Counter = collections.Counter()
        self.shapes: dict[str, list] = collections.defaultdict(lambda: [0, 0.0])
        self.batched_rows = 0  # parameter sets sent by executemany (one statement, many rows)
        self.copied_rows = 0
        self.rows_read = 0  # rows Store.observations returned
        self.commits = 0
        self.background = 0  # lock heartbeats, on their own thread

    def _before(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if threading.get_ident() != self._main:
            self.background += 1
            return
        self.statements[statement.lstrip().split(None, 1)[0].upper()] += 1
        if executemany:
            self.batched_rows += len(parameters)
        conn.info.setdefault("bench_started", []).append((time.perf_counter(), statement_shape(statement)))

    def _after(self, conn, cursor, statement, parameters, context, executemany) -> None:
        started = conn.info.get("bench_started")
        if threading.get_ident() != self._main or not started:
            return
        t0, shape = started.pop()
        self.shapes[shape][0] += 1
        self.shapes[shape][1] += time.perf_counter() - t0

    def _on_commit(self, conn) -> None:
        if threading.get_ident() == self._main:
            self.commits += 1

    def raw(self, kind: str, shape: str, seconds: float, rows: int = 0) -> None:
        """A statement sent on the driver's own cursor, which SQLAlchemy's events do not see."""
        self.statements[kind] += 1
        self.shapes[shape][0] += 1
        self.shapes[shape][1] += seconds
        self.copied_rows += rows

    def snapshot(self) -> dict:
        return {"statements": dict(self.statements), "total": sum(self.statements.values()),
                "shapes": {k: {"count": c, "seconds": s} for k, (c, s) in self.shapes.items()},
                "batched_rows": self.batched_rows, "copied_rows": self.copied_rows, "rows_read": self.rows_read,
                "commits": self.commits, "background": self.background}


def time_the_driver(store, clock: PhaseClock) -> None:
    """Time the DB-API cursor's ``execute``, ``executemany`` and ``fetchall`` as phases of their own.

    psycopg's cursor is a Python class whose methods can be wrapped; sqlite3's is not, so SQLite connections
    are made (through the engine's ``do_connect`` event) with a subclass whose methods are wrapped.
    """
    import sqlalchemy as sa

    names = ("execute", "executemany", "fetchall")
    if store.engine.dialect.name == "postgresql":
        import psycopg

        for name in names:
            clock.wrap(psycopg.Cursor, name, f"driver {name}")
        return
    import sqlite3

    class TimedCursor(sqlite3.Cursor):
        pass

    class TimedConnection(sqlite3.Connection):
        def cursor(self, factory=TimedCursor):
            return super().cursor(factory)

    for name in names:
        clock.wrap(TimedCursor, name, f"driver {name}")

    @sa.event.listens_for(store.engine, "do_connect")
    def _with_timed_cursors(dialect, record, cargs, cparams) -> None:
        cparams["factory"] = TimedConnection

    store.engine.dispose()  # connections made before this point have plain cursors


def instrument(store) -> tuple[PhaseClock, SqlCounter]:
    """Wrap the tick's pieces with timers and count the store's SQL; returns (clock, counter)."""
    import mlma.live as live
    from mlma.agent import Agent
    from mlma.fleet import FleetData
    from mlma.mlma_policy import MLMAPolicy
    from mlma.registry import ArtifactStore, ModelRegistry
    from mlma.store import bulk, lock
    from mlma.store import store as store_module
    from mlma.store.store import Store
    from mlma.training import ModelService

    try:
        from mlma.store.window import ObservationWindow, _Snapshot
        # Methods of older or newer code than this script's are left out.
        window = [(ObservationWindow, tuple(n for n in ("rows", "_catch_up", "_build", "_load", "_save", "_write_file",
                                                        "_append", "matrix", "flush") if hasattr(ObservationWindow, n))),
                  (_Snapshot, tuple(n for n in ("rows", "apply", "extend_to", "advance", "trim_before")
                                    if hasattr(_Snapshot, n)))]
        if hasattr(Store, "observation_batches"):
            window.append((Store, ("observation_batches",)))
    except ImportError:  # code from before the observation window
        window = []

    clock, sql = PhaseClock(), SqlCounter(store.engine)
    time_the_driver(store, clock)
    # The two statements that go through the driver's cursor, not through SQLAlchemy.
    # (Code from before Store.observation_arrays read through Store.observations: measured there.)
    reader = "observation_arrays" if hasattr(Store, "observation_arrays") else "observations"
    read_observations = getattr(Store, reader)

    def observation_arrays(self, *args, **kwargs):
        started = time.perf_counter()
        arrays = read_observations(self, *args, **kwargs)
        if self.engine is store.engine:
            sql.raw("SELECT (driver cursor)", "SELECT observations (driver cursor)", time.perf_counter() - started)
            sql.rows_read += len(arrays[0] if isinstance(arrays, tuple) else arrays)
        return arrays

    setattr(Store, reader, functools.wraps(read_observations)(observation_arrays))
    insert_rows = bulk.insert_rows

    def counted_insert_rows(conn, table, columns, data):
        started = time.perf_counter()
        n = insert_rows(conn, table, columns, data)
        if conn.dialect.name == "postgresql" and n:
            sql.raw("COPY", f"COPY {table}", time.perf_counter() - started, n)
        return n

    bulk.insert_rows = functools.wraps(insert_rows)(counted_insert_rows)

    for owner, names in (
            (live.LiveAgent, ("timing", "next_tick", "_run", "_compute_and_write", "_abnormal_periods",
                              "_load_models", "_load_versions", "_controls", "_versions", "_data_span",
                              "_sample", *(("_window_frame",) if window else ()),
                              # The tick's fleet on the window's matrix (and the window's refresh in it).
                              *(("_window_fleet",) if hasattr(live.LiveAgent, "_window_fleet") else ()))),
            # FleetData() is the fleet's construction: from rows, or on the window's matrix.
            *(((FleetData, ("from_matrix",)),) if hasattr(FleetData, "from_matrix") else ()),
            (live, (*(() if hasattr(FleetData, "from_matrix") else ("FleetData",)), "forecast_frame", "_summary", "_outcomes", "_verdicts", "_holder_is_dead")),
            *window,
            (Store, ("begin_tick", "load_state", "streams", "observations", *(("observation_arrays", "ingest_marks")
                     if window else ()), "write_tick", "latest_versions", "last_done_tick",
                     "lock_holder", "ingest_frame", "_ingest", "_ensure_streams", "_upsert_observations",
                     "_insert_verdicts", "_insert_forecasts", "_insert_escalations", "_save_state",
                     "_open_tick", "_known_ids", "_stream_names",
                     *(("stage_state_part",) if hasattr(Store, "stage_state_part") else ()))),
            (store_module, tuple(n for n in ("encode_state", "decode_state", "record_versions", "move_champions",
                                             "frame_sha256") if hasattr(store_module, n))),
            (bulk, ("insert_rows", "ds_from_db")),
            (lock, ("acquire",)),
            (lock.Lease, ("release",)),
            (FleetData, ("mark_abnormal", "seasonal_naive_scale", "tick_timestamps")),
            (Agent, ("start", "tick", "load_state_arrays", "state_arrays", "_issue_forecasts", "_bring_up",
                     "_judge_challengers")),
            (MLMAPolicy, ("decide",)),
            (ModelService, ("fit",)),
            (ModelRegistry, ("prepare", "champions")),
            (ArtifactStore, ("put", "load"))):
        for name in names:
            if name in ("FleetData", "from_matrix"):
                label = "FleetData()"
            elif isinstance(owner, type):
                label = f"{owner.__name__}.{name}"
            else:  # a module: name the function by the module that defines it
                label = f"{getattr(owner, name).__module__.rsplit('.', 1)[-1]}.{name}"
            clock.wrap(owner, name, label)
    return clock, sql


def table_rows(store) -> dict[str, int]:
    import sqlalchemy as sa

    from mlma.store import schema as S

    with store._read() as conn:
        return {name: int(conn.execute(sa.select(sa.func.count()).select_from(S.metadata.tables[name])).scalar())
                for name in COUNTED_TABLES}


def store_bytes(store, path: Path | None) -> int | None:
    import sqlalchemy as sa

    if path is not None:
        return sum(p.stat().st_size for p in path.parent.glob(path.name + "*"))
    with store._read() as conn:
        return int(conn.execute(sa.text(
            "SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = current_schema() "
            "AND c.relkind = 'r'")).scalar())


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> bool:
    """Start a new resident-set high-water mark (Linux: ``/proc/self/clear_refs``); False where unsupported.
    Memory freed but still held by the C allocator is handed back first, so that the mark starts from what
    is in use."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_since_reset_mb() -> float | None:
    """The high-water mark since :func:`reset_peak_rss` (``VmHWM``), None where unsupported."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


# -- one configuration (in its own process) ------------------------------------------------------------------
def measure(backend: str, n_zones: int, ticks: int, seed: int, workdir: Path, say, model: str = MODEL, *,
            history_ingests: int = 1, baseline: bool = True, warm_ticks: int = 0) -> dict:
    import types

    import numpy as np
    import pandas as pd

    from mlma.live import LiveAgent
    from mlma.project import CONFIG_NAME, init_project, load_config
    from mlma.simulate import simulate_platform
    from mlma.store import Store
    from mlma.store.testing import postgres_schema, postgres_unavailable

    started = time.perf_counter()
    # A day for each warm-up and measured tick, and one day more than the live steps use: the backtest's
    # baseline needs it (see backtest_ticks).
    n_days = HISTORY_DAYS + warm_ticks + ticks + 1
    sim = simulate_platform(n_zones, n_days, seed=seed)
    data = sim.data
    day = ((data["ds"] - data["ds"].min().normalize()) // pd.Timedelta("1D")).to_numpy()
    history = data[day < HISTORY_DAYS].reset_index(drop=True)
    # Each day waits on disk, as a day's file does in live operation (37 days of 10,000 zones held in memory
    # were counted in the first ticks' peak: 1.06-1.10 GB over the warm-up against 0.71-0.77 GB after it).
    days, day_rows = [], 0
    for i in range(warm_ticks + ticks):
        path = workdir / f"day-{i + 1}.parquet"
        frame = data[day == HISTORY_DAYS + i].reset_index(drop=True)
        frame.to_parquet(path, index=False)
        days.append(path)
        day_rows += len(frame)
    del frame
    history_day = day[day < HISTORY_DAYS]
    del day  # 8 bytes a row: not to be counted in the ticks' memory
    out = {"backend": backend, "zones": n_zones, "ticks": ticks, "warm_ticks": warm_ticks, "seed": seed,
           "simulate_seconds": time.perf_counter() - started, "history_rows": len(history),
           "streams_in_data": int(data["unique_id"].nunique()),
           "observation_rows": int(len(history) + day_rows)}
    say(f"{backend} {n_zones:,}: simulated {len(data):,} rows in {out['simulate_seconds']:.1f} s")

    with contextlib.ExitStack() as stack:
        sqlite_path = None
        if backend == "sqlite":
            sqlite_path = workdir / "mlma.db"
            url = f"sqlite:///{sqlite_path}"
        else:
            reason = postgres_unavailable()
            if reason:
                raise SystemExit(reason)
            url = stack.enter_context(postgres_schema(prefix="mlma_bench"))
        root = workdir / "project"
        init_project(root, db=url, model=model)
        toml = (root / CONFIG_NAME).read_text()
        toml = re.sub(r'(?m)^executor = "process"', 'executor = "inline"', toml)
        toml = re.sub(r"(?m)^initial_ticks = 0", f"initial_ticks = {HISTORY_DAYS}", toml)
        (root / CONFIG_NAME).write_text(toml)
        config = load_config(root)
        assert config.agent.executor == "inline" and config.agent.initial_ticks == HISTORY_DAYS, toml
        store = Store.open(config.store_url)
        stack.callback(store.close)
        clock, sql = instrument(store)
        agent = LiveAgent(config, store=store, executor="inline")
        stack.callback(agent.close)

        def run(what: str, fn, *, rows_of_tables: bool):
            before = table_rows(store) if rows_of_tables else None
            clock.reset()
            sql.reset()
            clock.recording = True
            t0 = time.perf_counter()
            try:
                result = fn()
            finally:
                seconds = time.perf_counter() - t0
                clock.recording = False
            record = {"what": what, "seconds": seconds, "phases": clock.snapshot(), "sql": sql.snapshot()}
            if rows_of_tables:
                after = table_rows(store)
                record["rows"] = {t: after[t] - before[t] for t in COUNTED_TABLES if after[t] != before[t]}
            return result, record

        def ingest_history():
            # In ``history_ingests`` files of whole days (one: the whole history at once). A 100,000-stream
            # history (67 M rows) in one ingest would hold far more memory than the daily loop ever does.
            if history_ingests <= 1:
                return store.ingest_frame(history, "history")
            groups = np.array_split(np.arange(HISTORY_DAYS), history_ingests)
            rows = sum(store.ingest_frame(history[np.isin(history_day, g)].reset_index(drop=True),
                                          f"history-{i + 1}").rows_new for i, g in enumerate(groups))
            return types.SimpleNamespace(rows_new=rows)

        report, rec = run("ingest history", ingest_history, rows_of_tables=False)
        rec["ingests"] = max(1, history_ingests)
        rec["rows_new"] = int(report.rows_new)
        out["ingest_history"] = rec
        say(f"{backend} {n_zones:,}: ingested {report.rows_new:,} rows of {HISTORY_DAYS} days in "
            f"{rec['seconds']:.1f} s ({rec['sql']['total']} statements)")

        steps = []
        result, rec = run("start-up", agent.step, rows_of_tables=True)
        if not result.start:
            raise RuntimeError(f"the first step was tick {result.tick}, not the start-up step")
        steps.append(describe_step(rec, result, store))
        say(f"{backend} {n_zones:,}: {result} -> {rec['seconds']:.2f} s wall, {rec['sql']['total']} statements")
        ingests = []
        # The ticks' own peak: the simulated data and the history's ingest above held more than a tick does.
        del data, history, sim, history_day
        import gc

        gc.collect()
        # (Resetting the mark resets ru_maxrss too: the process's peak so far is kept first.)
        peak_before_ticks = peak_rss_mb()
        tick_peak = reset_peak_rss()
        warm_peak = None  # the high-water mark over the warm-up ticks (reset again after them)
        # Every regular tick's wall and its day's ingest, the warm-up's included: how a tick grows while the
        # policy's reference and window arrays fill.
        walls = []
        for i in range(len(days)):
            # The day's file is read here, outside the timed ingest (as `mlma ingest` reads it before writing).
            frame = pd.read_parquet(days[i])
            warm = i < warm_ticks
            if i == warm_ticks and warm_ticks:
                # The measured ticks' own peak; the warm-up's is kept first (the state grows while it fills).
                gc.collect()
                warm_peak = peak_rss_since_reset_mb() if tick_peak else None
                peak_before_ticks = max(peak_before_ticks, peak_rss_mb())
                tick_peak = reset_peak_rss()
            report, irec = run(f"ingest day {i + 1}", lambda f=frame, i=i: store.ingest_frame(f, f"day-{i + 1}"),
                               rows_of_tables=False)
            irec["rows_new"] = int(report.rows_new)
            del frame
            # The warm-up ticks run exactly as the measured ones (timers on, rows counted, state read after).
            result, rec = run(f"{'warm-up ' if warm else ''}tick {i + 1}", agent.step, rows_of_tables=True)
            if result.start:
                raise RuntimeError("a regular tick ran as a start-up step")
            rec = describe_step(rec, result, store)
            walls.append({"after_startup": i + 1, "tick": rec["tick"], "seconds": rec["seconds"],
                          "ingest_seconds": irec["seconds"], "state_bytes": rec["state_bytes"],
                          "n_streams": rec["n_streams"], "warm": warm})
            if not warm:
                ingests.append(irec)
                steps.append(rec)
            say(f"{backend} {n_zones:,}: {'warm-up ' if warm else ''}{i + 1}/{len(days)} ingest "
                f"{irec['seconds']:.2f} s; {result} -> {rec['seconds']:.2f} s wall, {rec['sql']['total']} "
                f"statements, state {rec['state_bytes'] / 1e6:.1f} MB")
        out["startup"], out["regular"], out["ingest_days"] = steps[0], steps[1:], ingests
        out["tick_walls"] = walls
        out["store_bytes"] = store_bytes(store, sqlite_path)
        out["artifact_files"] = sum(1 for f in config.artifacts_dir.glob("??/*") if not f.name.startswith("."))
        # All before the backtest below, which holds all the data at once.
        out["tick_peak_rss_mb"] = peak_rss_since_reset_mb() if tick_peak else None
        # Over the warm-up and the measured ticks (the same as the ticks' own without a warm-up).
        out["warm_tick_peak_rss_mb"] = (None if out["tick_peak_rss_mb"] is None else
                                        max(warm_peak or 0.0, out["tick_peak_rss_mb"]))
        out["peak_rss_mb"] = max(peak_before_ticks, peak_rss_mb())
        del days
        gc.collect()
        if baseline:
            out["backtest"] = backtest_ticks(simulate_platform(n_zones, n_days, seed=seed).data, config, ticks)
            say(f"{backend} {n_zones:,}: one more backtest tick {out['backtest']['tick_seconds']:.2f} s "
                f"(mean of ticks {warm_ticks + 1}-{warm_ticks + ticks} after the start-up); live tick "
                f"{mean(s['seconds'] for s in steps[1:]):.2f} s")
    out["seconds"] = time.perf_counter() - started
    return out


def backtest_ticks(data, config, ticks: int) -> dict:
    """The baseline: what one more tick of ``mlma backtest`` costs on the same data, model and policy.

    The backtest runs over the whole simulated span with the project's model, policy, training window and
    ``initial_ticks``, one day longer than the live steps ingested, so that its ``ticks`` ticks before the last
    are the ones the live agent measured (after its warm-up ticks, which the backtest runs too and does not
    count), each forecasting the next tick as the live tick does. ``per_tick`` holds every tick of its loop:
    the ``k``-th regular tick after the start-up is ``per_tick[k - 1]``. A tick's cost is the
    wall time of one pass of the backtest's tick loop (the agent's tick and the backtest's bookkeeping),
    taken between the loop's progress calls; the data is already in memory, which is the point of the
    comparison.
    """
    import mlma.backtest as backtest_module

    marks: list[float] = []

    class Marks:
        def __init__(self, *args, **kwargs) -> None:
            pass

        def __enter__(self):
            marks.append(time.perf_counter())
            return lambda: marks.append(time.perf_counter())

        def __exit__(self, *exc) -> None:
            pass

    original = backtest_module._progress
    backtest_module._progress = Marks
    try:
        started = time.perf_counter()
        backtest_module.run_backtest(data, backtest_module.BacktestConfig(
            policies=[config.agent.policy], model=config.model.spec, initial_ticks=HISTORY_DAYS,
            train_window_ticks=config.model.train_window_ticks or None, executor="inline", sample_streams=0,
            policy_params={config.agent.policy: config.policy_params()}, bootstrap=0))
        seconds = time.perf_counter() - started
    finally:
        backtest_module._progress = original
    per_tick = [b - a for a, b in zip(marks, marks[1:])]
    # The data hold one day more than the live steps ingested: the backtest's last tick has no next tick in
    # the data to forecast (a third of a tick's work), so it is not counted; the ticks counted are the live
    # steps' own, each scoring its day and forecasting the next as a live tick does.
    return {"seconds": seconds, "ticks": len(per_tick), "tick_seconds": mean(per_tick[-ticks - 1:-1]),
            "per_tick": per_tick}


def describe_step(rec: dict, result, store) -> dict:
    state = store.load_state()
    rec.update(tick=int(result.tick), n_streams=int(result.n_streams), tick_seconds=float(result.seconds),
               state_bytes=int(state.size_bytes), state_arrays=len(state.arrays),
               retrains=result.summary.retrains, initial_fits=result.summary.initial_fits,
               escalations=len(result.escalation_ids), promoted=result.summary.promoted)
    return rec


# -- running the plan ----------------------------------------------------------------------------------------
def run_child(backend: str, n: int, ticks: int, seed: int, say, model: str = MODEL, *, history_ingests: int = 1,
              baseline: bool = True, warm_ticks: int = 0) -> dict:
    """Measure one configuration in a fresh interpreter and return its record."""
    with tempfile.TemporaryDirectory(prefix=f"mlma-bench-live-{backend}-{n}-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", f"{backend}:{n}", "--ticks", str(ticks),
               "--seed", str(seed), "--child-out", str(out), "--workdir", tmp, "--model", model,
               "--history-ingests", str(history_ingests), "--warm-ticks", str(warm_ticks),
               *(() if baseline else ("--no-backtest",))]
        load_before = load_average()
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=None, env={**os.environ, "PYTHONHASHSEED": "0"})
        if proc.returncode != 0:
            raise SystemExit(f"the run of {backend} with {n} zones failed (exit {proc.returncode})")
        record = json.loads(out.read_text())
    record["load_average_before"], record["load_average_after"] = load_before, load_average()
    say(f"{backend} {n:,}: done in {record['seconds']:.0f} s, peak RSS {record['peak_rss_mb']:.0f} MB")
    return record


# -- summaries -----------------------------------------------------------------------------------------------
def mean(values) -> float:
    values = list(values)
    return sum(values) / len(values) if values else float("nan")


def phase_table(steps: list[dict]) -> dict[tuple[str, ...], dict]:
    """Per call path: mean inclusive seconds over the steps, mean self seconds, calls per step."""
    total = collections.defaultdict(float)
    calls = collections.defaultdict(float)
    for step in steps:
        for p in step["phases"]:
            total[tuple(p["path"])] += p["seconds"] / len(steps)
            calls[tuple(p["path"])] += p["calls"] / len(steps)
    children = collections.defaultdict(float)
    for path, s in total.items():
        if len(path) > 1:
            children[path[:-1]] += s
    return {path: {"seconds": s, "self": s - children.get(path, 0.0), "calls": calls[path]}
            for path, s in total.items()}


def fmt_s(seconds: float) -> str:
    if seconds != seconds:
        return "n/a"
    if seconds >= 10:
        return f"{seconds:.1f} s"
    if seconds >= 1:
        return f"{seconds:.2f} s"
    return f"{seconds * 1000:.0f} ms" if seconds >= 0.01 else f"{seconds * 1000:.1f} ms"


def fmt_n(x: float) -> str:
    return f"{x:,.0f}" if abs(x - round(x)) < 1e-9 or abs(x) >= 100 else f"{x:,.1f}"


def table(header: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(header) - 1)
    lines = ["| " + " | ".join(header) + " |",
             "| " + " | ".join("---:" if a == "r" else "---" for a in align) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def label(r: dict) -> str:
    return f"{'SQLite' if r['backend'] == 'sqlite' else 'PostgreSQL'}, {r['zones']:,}"


def step_sql(step: dict) -> int:
    return step["sql"]["total"]


def source_line(func, needle: str) -> str:
    """``path:line`` of the first line of ``func``'s source containing ``needle`` (for the reading)."""
    func = inspect.unwrap(func)
    lines, first = inspect.getsourcelines(func)
    path = Path(inspect.getsourcefile(func)).resolve()
    try:
        path = path.relative_to(REPO)
    except ValueError:
        pass
    for i, line in enumerate(lines):
        if needle in line:
            return f"{path}:{first + i}"
    return f"{path}:{first}"


def phase_rows(tables: dict[str, dict], totals: dict[str, float], threshold: float, depth: int = 5) -> list:
    """Rows of a phase tree: paths with at least ``threshold`` of the step in some configuration."""
    paths = set()
    for t in tables.values():
        paths |= set(t)
    keep = [path for path in paths if len(path) <= depth and any(
        t.get(path, {}).get("seconds", 0.0) >= threshold * totals[k] for k, t in tables.items())]
    # A child is shown only under a shown parent.
    shown = set(keep)
    keep = [path for path in keep if all(path[:i] in shown for i in range(1, len(path)))]
    rows = []
    for path in sorted(keep, key=lambda path: _tree_key(path, tables)):
        row = ["&nbsp;&nbsp;" * (len(path) - 1) + f"`{path[-1]}`"]
        for k, t in tables.items():
            cell = t.get(path)
            row.append("" if cell is None else f"{fmt_s(cell['seconds'])} ({cell['seconds'] / totals[k]:.0%})")
        rows.append(row)
    rows.append(["whole step"] + [fmt_s(totals[k]) for k in tables])
    return rows


def _tree_key(path: tuple[str, ...], tables: dict) -> tuple:
    """Order paths as a tree: each level by its largest time (descending) across configurations."""
    key = []
    for depth in range(1, len(path) + 1):
        prefix = path[:depth]
        biggest = max(t.get(prefix, {}).get("seconds", 0.0) for t in tables.values())
        key += [-biggest, prefix[-1]]
    return tuple(key)


def shape_means(steps: list[dict]) -> dict[str, dict]:
    out = collections.defaultdict(lambda: {"count": 0.0, "seconds": 0.0})
    for step in steps:
        for shape, v in step["sql"]["shapes"].items():
            out[shape]["count"] += v["count"] / len(steps)
            out[shape]["seconds"] += v["seconds"] / len(steps)
    return dict(out)


PHASE_NOTE = ("Time inside each wrapped call, its children included, and its share of the step (for regular "
              "ticks, the mean of the ticks). Children are indented under their parent; time a parent spends "
              "outside any wrapped call is the gap between it and its children. `driver execute` and `driver "
              "fetchall` are the DB-API cursor's own calls: on SQLite a `SELECT` produces its rows while they "
              "are fetched, on PostgreSQL while it executes.")


def warm_of(r: dict) -> int:
    """A run's warm-up ticks (runs saved before ``--warm-ticks``: none)."""
    return int(r.get("warm_ticks") or 0)


def measured_span(warm: int, ticks: int) -> str:
    """The measured regular ticks, numbered after the start-up: ``ticks 31-33``."""
    return f"tick {warm + 1}" if ticks == 1 else f"ticks {warm + 1}-{warm + ticks}"


def ticks_run(warm: int, ticks: int) -> str:
    if not warm:
        return f"{ticks} regular ticks (measured: {measured_span(0, ticks)} after the start-up)"
    return (f"{warm} regular ticks as a warm-up, not counted (the monitoring policy's reference and window "
            f"arrays fill over the first 25-30 ticks, and the ticks grow with them), then {ticks} measured "
            f"ones ({measured_span(warm, ticks)} after the start-up)")


def tick_walls(r: dict) -> list[dict]:
    """Every regular tick's wall time, numbered after the start-up (``after_startup``); runs saved before
    ``tick_walls`` have their measured ticks only."""
    if r.get("tick_walls"):
        return r["tick_walls"]
    return [{"after_startup": warm_of(r) + i + 1, "tick": s["tick"], "seconds": s["seconds"],
             "state_bytes": s["state_bytes"], "n_streams": s["n_streams"], "warm": False}
            for i, s in enumerate(r["regular"])]


def backtest_at(r: dict, k: int) -> float | None:
    """The backtest's wall time of the ``k``-th regular tick after the start-up, None if it has none: its
    loop's ticks end one past the live agent's last (see :func:`backtest_ticks`)."""
    per_tick = (r.get("backtest") or {}).get("per_tick") or []
    i = len(per_tick) - 1 - (warm_of(r) + len(r["regular"])) + k - 1
    return per_tick[i] if 0 <= i < len(per_tick) - 1 else None


def growth_picks(n: int, warm: int) -> list[int]:
    """A few tick numbers after the start-up: the first, a quarter and half of the way, the first measured
    and the last."""
    return sorted({k for k in (1, round(n / 4), round(n / 2), warm + 1, n) if 1 <= k <= n})


def growth_table(runs: list[dict], name=None) -> str:
    """Live and backtest tick times, and the state per stream, at a few tick numbers after the start-up:
    how a tick grows while the monitoring policy's arrays fill. Empty when there is one tick to show."""
    name = name or label
    picks = sorted({k for r in runs for k in growth_picks(len(tick_walls(r)), warm_of(r))})
    if len(picks) < 2:
        return ""
    rows = []
    for r in runs:
        at = {w["after_startup"]: w for w in tick_walls(r)}
        live_row, back_row, state_row = [name(r), "live tick"], ["", "backtest tick"], ["", "state / stream"]
        for k in picks:
            w = at.get(k)
            live_row.append(fmt_s(w["seconds"]) if w else "")
            state_row.append(f"{w['state_bytes'] / max(w['n_streams'], 1):,.0f} B" if w else "")
            b = backtest_at(r, k)
            back_row.append(fmt_s(b) if b is not None else "")
        rows += [live_row, back_row] + ([state_row] if any(state_row[2:]) else [])
    warm = sorted({warm_of(r) for r in runs} - {0})
    marked = any(warm)
    return (table(["run", "", *[f"tick {k}" + (" (measured)" if marked and all(k > warm_of(r) for r in runs)
                                               else "") for k in picks]], rows, "ll" + "r" * len(picks))
            + "\n\nWall time of single regular ticks, numbered after the start-up step (tick 1 is the first "
              "after it)"
            + (f", warm-up ticks included (the first {' or '.join(map(str, warm))} ran as a warm-up and are not "
               "in the means above)" if marked else "")
            + ": the live agent's `LiveAgent.step()`, and the backtest's pass of its tick loop for the same tick. "
              "The monitoring policy's reference and window arrays fill over the first ticks after the start-up, "
              "and the state per stream (compressed) with them. Every tick's wall is in the JSON "
              "(`tick_walls`; the backtest's `backtest.per_tick`).")


def render(results: dict) -> str:
    runs = results["runs"]
    m = results["machine"]
    p = results["plan"]
    v = results["versions"]
    parts = ["## A live tick on a persistent store",
             "`benchmarks/bench_live.py` runs `mlma.live.LiveAgent` as the daily loop does, on the simulated "
             f"delivery platform (seed {p['seed']}, hourly data, daily ticks) with the `{p['model']}` model, so "
             "that fitting costs next to nothing and what is left is the store's and the agent's own work. For "
             f"each store and fleet size: one `Store.ingest_frame` of {p['history_days']} days of history, the "
             f"start-up step (`[agent] initial_ticks = {p['history_days']}`: a first model for every stream and "
             f"forecasts for the next day), then {ticks_run(p.get('warm_ticks', 0), p['ticks'])}, each after "
             "the ingest of one day (timed apart). Fits run inline; one `LiveAgent` serves all steps, as under "
             "`mlma run`. The "
             "breakdown comes from timers wrapped around `LiveAgent`, `Agent`, `Store`, registry and DB-API "
             "cursor methods at run time (nothing in `src` is changed); statements are counted with "
             "SQLAlchemy's `before_cursor_execute` event on the store's engine, plus the observation read and "
             "PostgreSQL's `COPY`, which use the driver's cursor directly. Each configuration runs in a process "
             "of its own.",
             "```bash\n"
             ".venv/bin/python benchmarks/bench_live.py --write-docs --json /tmp/live.json   # the full run\n"
             ".venv/bin/python benchmarks/bench_live.py --quick    # 300 and 1,000 streams on SQLite\n"
             "```",
             f"Run of {m['date']}{' (--quick)' if results.get('quick') else ''}: {m['nproc']} CPUs ({m['cpu']}), "
             f"shared with other work; Python {m['python']}, numpy {m['packages']['numpy']}, pandas "
             f"{m['packages']['pandas']}, SQLAlchemy {v.get('sqlalchemy')}, psycopg {v.get('psycopg')}, SQLite "
             f"{v.get('sqlite')}" + (f", PostgreSQL {v['postgresql']} on the same machine" if v.get("postgresql")
                                     else "")
             + f"; code {m['code']}; load average {m['load_average_start']} at the start and "
               f"{results.get('load_average_end', '?')} at the end; {results['seconds'] / 60:.1f} minutes in all."]

    rows = []
    for r in runs:
        reg = r["regular"]
        n = reg[-1]["n_streams"]
        rows.append([
            label(r), f"{n:,}",
            f"{fmt_s(r['ingest_history']['seconds'])} ({r['ingest_history']['rows_new'] / 1e6:.2f} M rows)",
            fmt_s(r["startup"]["seconds"]),
            fmt_s(mean(s["seconds"] for s in reg)), fmt_s(max(s["seconds"] for s in reg)),
            *((fmt_s(r["backtest"]["tick_seconds"]),
               f"{mean(s['seconds'] for s in reg) / r['backtest']['tick_seconds']:.1f}x") if "backtest" in r
              else ("", "")),
            fmt_s(mean(i["seconds"] for i in r["ingest_days"])),
            f"{mean(s['sql']['rows_read'] for s in reg) / 1e6:.2f} M",
            fmt_n(mean(sum(s["rows"].values()) for s in reg)),
            f"{mean(s['state_bytes'] for s in reg) / n:.0f} B",
            fmt_n(mean(step_sql(s) for s in reg)),
            f"{r['peak_rss_mb']:,.0f} MB" if r.get("peak_rss_mb") else "",
            (f"{r['tick_peak_rss_mb']:,.0f} MB" if r.get("tick_peak_rss_mb") else "")
            + (f" ({r['warm_tick_peak_rss_mb']:,.0f} MB)" if warm_of(r) and r.get("warm_tick_peak_rss_mb") else "")])
    warm, span = p.get("warm_ticks", 0), measured_span(p.get("warm_ticks", 0), p["ticks"])
    parts.append("### Cost per step\n\n"
                 + f"Regular ticks measured: {span} after the start-up"
                 + (f" (the {warm} before them ran as a warm-up, not counted; see the next table)." if warm else
                    " (no warm-up: the monitoring policy's arrays are still filling).")
                 + "\n\n" + table(
        ["store, zones", "streams", f"ingest {p['history_days']} days", "start-up step", f"{span}, mean",
         f"{span}, max", f"backtest {span}", "live / backtest", "ingest 1 day, mean", "rows read / tick",
         "rows written / tick", "state / stream", "SQL / tick", "peak RSS",
         "peak RSS of the ticks" + (" (with the warm-up)" if warm else "")], rows)
        + "\n\nA tick is the wall time of one `LiveAgent.step()`: lock, clock, loading state, observations and "
          "models, the agent's tick, registry writes and the one commit. Backtest tick: the baseline, one pass "
          "of `mlma.backtest.run_backtest`'s tick loop on the same data, model, policy and training window "
          "(the mean of the same ticks the live agent ran, each scoring its day and forecasting the next; "
          "its data is in memory, and holds one day more, so that its last tick counted has a next tick to "
          "forecast), measured in the same process after the live steps; live / backtest is the ratio of the "
          "two means. Streams: those in the store at the "
          "last tick (the platform launches zones along the way). Rows read: observations "
          "`Store.observation_arrays` returned (the observation window's reads). Rows written: rows gained by the tick's tables (verdicts, "
          "forecasts, escalations, model versions, champions, audit, state, ticks). State: "
          "`Store.load_state().size_bytes` over the streams (compressed `.npz`). SQL: statements sent during "
          "the step, all kinds. Peak RSS: the process's high-water mark over the ingest, the start-up and the "
          "ticks; of the ticks: the high-water mark reset (Linux `clear_refs`) after the start-up, with the "
          "simulated data freed, so the regular ticks' own (the live agent keeps the 28-day window and its "
          "models in memory)"
        + ("; with a warm-up, the mark is reset again after it, so it covers the measured ticks, and the "
           "one in brackets covers the warm-up and the measured ticks (the state grows while it fills)."
           if warm else "."))
    growth = growth_table(runs)
    if growth:
        parts.append("### How a tick grows after the start-up\n\n" + growth)

    for title, pick, threshold in (("Where a regular tick goes", lambda r: r["regular"], 0.02),
                                   ("Where the start-up step goes", lambda r: [r["startup"]], 0.03),
                                   (f"Where the ingest of {p['history_days']} days goes",
                                    lambda r: [r["ingest_history"]], 0.02)):
        tables = {label(r): phase_table(pick(r)) for r in runs}
        totals = {label(r): mean(s["seconds"] for s in pick(r)) for r in runs}
        parts.append(f"### {title}\n\n"
                     + table(["phase", *tables], phase_rows(tables, totals, threshold))
                     + f"\n\nCalls taking at least {threshold:.0%} of the step in some configuration. "
                     + (PHASE_NOTE if title.startswith("Where a regular") else "See the note above."))

    # The slowest statements of the history's ingest and of a regular tick.
    rows = []
    for r in runs:
        for what, steps in (("ingest of the history", [r["ingest_history"]]), ("regular tick", r["regular"])):
            top = sorted(shape_means(steps).items(), key=lambda kv: -kv[1]["seconds"])[:3]
            rows.append([label(r), what, "; ".join(f"`{k}` {fmt_s(v['seconds'])}" + (
                f" ({fmt_n(v['count'])}x)" if v["count"] > 1.01 else "") for k, v in top)])
    parts.append("### Slowest statements\n\n" + table(["store, zones", "step", "statement: time until the driver "
                                                                            "returned (count)"], rows, "lll")
                 + "\n\nA shape is a statement's kind, first table and how it moves rows. On SQLite the time of a "
                   "`SELECT` excludes fetching its rows.")

    kinds = sorted({k for r in runs for s in [r["startup"], *r["regular"]] for k in s["sql"]["statements"]})
    rows = []
    for r in runs:
        for what, steps in (("start-up", [r["startup"]]), ("regular tick", r["regular"]),
                            ("ingest 1 day", r["ingest_days"])):
            row = [label(r), what]
            row += [fmt_n(mean(s["sql"]["statements"].get(k, 0) for s in steps)) for k in kinds]
            row += [fmt_n(mean(step_sql(s) for s in steps)), fmt_n(mean(s["sql"]["commits"] for s in steps)),
                    fmt_n(mean(s["sql"]["batched_rows"] + s["sql"]["copied_rows"] for s in steps))]
            rows.append(row)
    parts.append("### SQL statements per step\n\n" + table(
        ["store, zones", "step", *[f"`{k}`" for k in kinds], "all", "commits", "rows in bulk"], rows,
        "ll" + "r" * (len(kinds) + 3))
        + "\n\nStatements by first keyword (regular ticks and day ingests: mean of the measured ones). `SELECT (driver "
          "cursor)` is the observation read and `COPY` PostgreSQL's bulk load; both bypass SQLAlchemy and are "
          "counted where they are issued. Rows in bulk: rows sent by `executemany` (one statement for many "
          "rows) or `COPY`. SQLite's `BEGIN` goes through the engine and is counted; psycopg begins its "
          "transactions itself. Statements of other threads are not counted "
          f"({sum(s['sql']['background'] for r in runs for s in [r['startup'], *r['regular']])} during the "
          "measured steps): the lock's heartbeats, and on PostgreSQL the part of the state saved ahead of the "
          "tick's transaction (`Store.stage_state_part`: its clock read through SQLAlchemy, its insert through "
          "the driver's cursor).")

    shapes = sorted({k for r in runs for s in r["regular"] for k in s["sql"]["shapes"]})
    rows = []
    for shape in shapes:
        rows.append([f"`{shape}`"] + ["/".join(fmt_n(s["sql"]["shapes"].get(shape, {}).get("count", 0))
                                               for s in r["regular"]) for r in runs])
    rows.append(["escalations"] + ["/".join(str(s["escalations"]) for s in r["regular"]) for r in runs])
    rows.append(["new model versions"] + ["/".join(str(s["initial_fits"] + s["retrains"]) for s in r["regular"])
                                          for r in runs])
    parts.append("<details><summary>Statements of each regular tick, by shape</summary>\n\n"
                 + table(["shape", *[label(r) for r in runs]], rows) + "\n\n</details>")

    rows = []
    for r in runs:
        for s in [r["startup"], *r["regular"]]:
            rows.append([label(r), "start-up" if s is r["startup"] else f"tick {s['tick']}", f"{s['n_streams']:,}",
                         fmt_s(s["seconds"]), fmt_n(s["initial_fits"]), fmt_n(s["retrains"]),
                         fmt_n(s["escalations"]), fmt_n(step_sql(s)),
                         ", ".join(f"{t} {v:,}" for t, v in sorted(s["rows"].items(), key=lambda kv: -kv[1])),
                         f"{s['state_bytes'] / 1024:,.0f} KiB"])
    parts.append("<details><summary>Every measured step</summary>\n\n" + table(
        ["store, zones", "step", "streams", "wall", "first fits", "re-trainings", "escalations", "SQL",
         "rows gained", "state"], rows, "llrrrrrrlr") + "\n\n</details>")
    parts.append(reading(results))
    return "\n\n".join(parts) + "\n"


def reading(results: dict) -> str:
    """What the run shows, worked out from its numbers (the code locations are looked up now)."""
    runs = results["runs"]
    sizes = sorted({r["zones"] for r in runs})
    by = {(r["backend"], r["zones"]): r for r in runs}
    live = _live()
    lines = ["### Reading"]

    def tick(r):
        return mean(s["seconds"] for s in r["regular"])

    def inclusive(steps, name, under=None):
        t = phase_table(steps)
        return sum(v["seconds"] for path, v in t.items() if path[-1] == name and (under is None or under in path))

    def _window_read(steps) -> float:
        """Seconds of the observation window's read: the matrix-built fleet, or (older code) the rows."""
        return inclusive(steps, "LiveAgent._window_fleet") or inclusive(steps, "LiveAgent._window_frame")

    def calls(steps, name):
        return sum(v["calls"] for path, v in phase_table(steps).items() if path[-1] == name)

    headline = []
    for backend in results["plan"]["backends"]:
        small, large = by.get((backend, sizes[0])), by.get((backend, sizes[-1]))
        if not small or not large:
            continue
        n_small, n_large = small["regular"][-1]["n_streams"], large["regular"][-1]["n_streams"]
        headline.append(
            f"{fmt_s(tick(small))} at {n_small:,} streams and {fmt_s(tick(large))} at {n_large:,} on "
            f"{label(large).split(',')[0]} ({tick(large) / tick(small):.1f}x; {tick(small) / n_small * 1e3:.1f} "
            f"and {tick(large) / n_large * 1e3:.1f} ms per stream)")
    if headline and len(sizes) > 1:  # one size: nothing to say about growth
        growth = sizes[-1] / sizes[0]
        factors = [tick(by[(b, sizes[-1])]) / tick(by[(b, sizes[0])]) / growth
                   for b in results["plan"]["backends"] if (b, sizes[0]) in by and (b, sizes[-1]) in by]
        if all(0.8 <= f <= 1.25 for f in factors):
            shape = "about in proportion to the streams"
        elif all(f > 1.25 for f in factors):
            shape = "faster than the streams"
        else:
            shape = "not in proportion to the streams"
        # Parts of the tick that grew clearly faster than the fleet (at least 1 % of the larger tick).
        faster = []
        for backend in results["plan"]["backends"]:
            small, large = by.get((backend, sizes[0])), by.get((backend, sizes[-1]))
            if not small or not large or small is large:
                continue
            t_small, t_large = phase_table(small["regular"]), phase_table(large["regular"])
            grew = [path for path, v in t_large.items()
                    if v["seconds"] >= 0.01 * tick(large) and t_small.get(path, {}).get("seconds", 0.0) > 0
                    and v["seconds"] / t_small[path]["seconds"] > 1.3 * growth]
            # The innermost calls that grew, not every parent that contains them.
            grew = [path for path in grew if not any(o != path and o[:len(path)] == path for o in grew)]
            for path in sorted(grew, key=lambda path: -t_large[path]["seconds"]):
                before, after = t_small[path]["seconds"], t_large[path]["seconds"]
                name = " in ".join(f"`{x}`" for x in reversed(path[-2:])) if path[-1].startswith("driver") \
                    else f"`{path[-1]}`"
                faster.append(f"{name} on {label(large).split(',')[0]} ({fmt_s(before)} to {fmt_s(after)}, "
                              f"{after / before:.0f}x, {after / tick(large):.0%} of the tick)")
        lines.append(f"**How a tick grows.** A regular tick took {'; '.join(headline)}, for "
                     f"{growth:.3g}x the zones: {shape}. "
                     + (f"Parts of the breakdown that grew faster than {1.3 * growth:.2g}x: " + "; ".join(faster)
                        + "." if faster else
                        f"No part of the breakdown taking 1 % of the tick grew faster than {1.3 * growth:.2g}x."))

    large_runs = [r for r in runs if r["zones"] == sizes[-1]]
    obs = []
    for r in large_runs:
        reg = r["regular"]
        # Projects without drivers build the tick's fleet on the window's matrix (_window_fleet); runs of
        # older code read it as rows (_window_frame).
        step = "LiveAgent._window_fleet" if inclusive(reg, "LiveAgent._window_fleet") else "LiveAgent._window_frame"
        read = inclusive(reg, step)
        fetched = inclusive(reg, "Store.observation_arrays", step)
        batches = inclusive(reg, "Store.observation_batches")
        rows = mean(s["sql"]["rows_read"] for s in reg)
        saved = inclusive(reg, "ObservationWindow._save")
        obs.append(f"{label(r).split(',')[0]}: {fmt_s(read)} of {fmt_s(tick(r))} ({read / tick(r):.0%}), "
                   f"the ingests' packed batches read in {fmt_s(batches)}, "
                   f"{rows / 1e6:.2f} M rows read in {fmt_s(fetched)}, {fmt_s(saved)} saving the window "
                   "(its journal)")
    if obs:
        lines.append(
            "**The data: only what changed.** Each tick takes its training window from the observation window "
            "kept between ticks (`mlma.store.window.ObservationWindow`, "
            f"{source_line(live.LiveAgent._window_frame, '.rows(')}) and reads from the store only the rows "
            "of the ingests since the last tick (one day here). At "
            f"{sizes[-1]:,} zones: " + "; ".join(obs) + ".")
    # The children of the tick, by inclusive time: what dominates now.
    for r in large_runs:
        t = phase_table(r["regular"])
        kids = sorted(((path[-1], v["seconds"]) for path, v in t.items()
                       if len(path) >= 2 and path[-2] == "LiveAgent._compute_and_write"), key=lambda kv: -kv[1])[:3]
        if kids:
            lines.append(
                f"**What dominates** ({label(r)}): "
                + "; ".join(f"`{name}` {fmt_s(sec)} ({sec / tick(r):.0%})" for name, sec in kids)
                + ". Forecasting every stream (`Agent._issue_forecasts`, one fleet-wide `predict_many` call, "
                f"{source_line(_agent().Agent._issue_forecasts, 'forecast[serving] = self.service.predict_many')}) and writing the day's "
                "forecasts (one packed row per tick and block of 64 streams, `Store._insert_forecasts`) are the agent's and the tick "
                "record's own work.")

    # Statement counts: the same tick at two sizes, and the shapes sent once per row.
    sql_lines = []
    per_row: dict[str, set] = collections.defaultdict(set)
    bounded = 0
    for r in runs:
        for s in r["regular"]:
            for shape, v in s["sql"]["shapes"].items():
                words = shape.split()
                gained = s["rows"].get(words[1], 0) if len(words) > 1 else 0
                if words[0] == "INSERT" and gained >= 3 and v["count"] == gained:
                    per_row[shape].add(label(r).split(",")[0])
                elif not shape.startswith("BEGIN"):
                    bounded = max(bounded, v["count"])
    for backend in results["plan"]["backends"]:
        small, large = by.get((backend, sizes[0])), by.get((backend, sizes[-1]))
        if not small or not large or small is large:
            continue

        def events(s):
            versions, escalations = s["initial_fits"] + s["retrains"], s["escalations"]
            return (f"{versions} new version{'' if versions == 1 else 's'}, "
                    f"{escalations} escalation{'' if escalations == 1 else 's'}")

        sql_lines.append(
            f"{label(small).split(',')[0]}: "
            + "; ".join(f"tick {a['tick']}: {step_sql(a)} ({events(a)}) / {step_sql(b)} ({events(b)})"
                        for a, b in zip(small["regular"], large["regular"])))
    if sql_lines:
        text = (f"**Persistence is in bulk{', with one exception' if per_row else ''}.** Statements per "
                "regular tick at "
                f"{sizes[0]:,} / {sizes[-1]:,} zones - " + "; ".join(sql_lines) + ". The count follows what "
                "happened in the tick (new model versions bring staging tables for numbering them and moving "
                "champions), not the number of streams: verdicts, forecasts, model versions and champions each go "
                "in as one `executemany`, `COPY` or `INSERT ... SELECT` from a staging table, and apart from "
                f"{'the exception and ' if per_row else ''}the transactions' `BEGIN` no shape was sent more "
                f"than {bounded} times in a tick (the shapes table above).")
        if per_row:
            text += (" The exception: " + ", ".join(f"`{k}` on {', '.join(sorted(v))}" for k, v in per_row.items())
                     + " was sent once per row the tick added")
            if any(k.startswith("INSERT escalations") for k in per_row):
                text += (f" (`Store._insert_escalations`, "
                         f"{source_line(_store().Store._insert_escalations, 'sort_by_parameter_order')}, inserts "
                         "with `RETURNING` in parameter order, which SQLAlchemy sends row by row on SQLite)")
            text += "."
        text += (" A tick commits "
                 + " or ".join(sorted({fmt_n(s["sql"]["commits"]) for r in runs for s in r["regular"]}))
                 + " times: the tick's own transaction, the lock, the `running` mark and the read transactions. "
                   "The start-up step sent "
                 + ", ".join(f"{step_sql(r['startup'])} ({label(r)})" for r in runs) + " statements.")
        lines.append(text)

    startup = []
    for r in large_runs:
        put = inclusive([r["startup"]], "ArtifactStore.put")
        n_put = calls([r["startup"]], "ArtifactStore.put")
        startup.append(f"{label(r).split(',')[0]} {fmt_s(r['startup']['seconds'])}, of which "
                       f"{fmt_s(put)} in {n_put:,.0f} `ArtifactStore.put` calls ({put / max(n_put, 1) * 1e3:.1f} ms "
                       f"each, {r['artifact_files']:,} distinct files)")
    if startup:
        lines.append(
            f"**The start-up step** at {sizes[-1]:,} zones: " + "; ".join(startup) + ". Every first model is "
            f"written as its own file (`LiveAgent._versions`, "
            f"{source_line(live.LiveAgent._versions, 'self.registry.prepare(')}), in one batch flushed to disk "
            f"once ({source_line(_registry().ArtifactStore.put_bytes_many, 'durable.syncfs')}); "
            "with a real model the fits come on top. Reading the observations (the observation window's first, "
            "full read) takes "
            + " and ".join(f"{_window_read([r['startup']]) / r['startup']['seconds']:.0%} "
                           f"({label(r).split(',')[0]})" for r in large_runs) + " of the step.")

    extra = []
    for r in large_runs:
        one = inclusive(r["regular"], "Store.load_state") / max(calls(r["regular"], "Store.load_state"), 1)
        extra.append(f"{label(r).split(',')[0]}: {fmt_s(one)} a call")
    sqlite_large = by.get(("sqlite", sizes[-1]))
    notes = []
    if extra and all(calls(r["regular"], "Store.load_state") >= 2 for r in large_runs):
        notes.append(
            f"`Store.load_state` runs twice per tick, and each time fetches, checks and decompresses the whole "
            f"state ({', '.join(extra)} at {sizes[-1]:,} zones): `LiveAgent.timing` "
            f"({source_line(live.LiveAgent.timing, 'load_state')}) loads it only to read the clock's "
            f"`meta.*` arrays, then `_compute_and_write` "
            f"({source_line(live.LiveAgent._compute_and_write, 'load_state')}) loads it again.")
    if sqlite_large:
        def span_of(r):
            return inclusive(r["regular"], "LiveAgent._data_span") / max(calls(r["regular"], "LiveAgent._data_span"), 1)

        span = span_of(sqlite_large)
        notes.append(
            f"`LiveAgent._data_span` ({source_line(live.LiveAgent._data_span, 'sa.func.min')}) asks for "
            "`min(ds)` and `max(ds)` in one query; SQLite answers that by scanning the whole `ds` index "
            f"(its query plan says `SCAN ... USING COVERING INDEX`): {fmt_s(span)} a call at {sizes[-1]:,} zones "
            "on SQLite"
            + "".join(f", against {fmt_s(span_of(r))} on PostgreSQL"
                      for r in large_runs if r["backend"] == "postgresql")
            + ". It runs once per tick, twice in the start-up step.")
    loads = []
    first_name = ("the first tick after the start-up" if not any(warm_of(r) for r in large_runs) else
                  "the first measured tick (" + " or ".join(sorted({f"{warm_of(r) + 1} after the start-up"
                                                                    for r in large_runs})) + ")")
    for r in large_runs:
        first_tick = r["regular"][:1]
        loads.append(f"{calls(first_tick, 'ArtifactStore.load'):,.0f} files in "
                     f"{fmt_s(inclusive(first_tick, 'ArtifactStore.load'))} on {label(r).split(',')[0]}")
    read_back = sum(calls(r["regular"], "ArtifactStore.load") for r in large_runs)
    if loads and read_back:
        notes.append(
            f"Loading the serving models: {first_name} reads and verifies every artifact "
            f"(`ArtifactStore.load`: {', '.join(loads)}); later ticks of the same process find them cached. "
            "`mlma tick` run by cron starts a new process each time and pays this on every tick.")
    elif loads:
        notes.append(
            "Loading the serving models: none is read back from its artifact in these ticks (`ArtifactStore.load`: "
            f"{', '.join(loads)} in {first_name}): the models a tick fitted stay in the "
            "process's memory under their registry versions. `mlma tick` run by cron starts a new process each "
            "time and reads every serving model (7,226 files took 0.5-0.7 s at 10,000 zones in an earlier run).")
    if notes:
        lines.append("**Smaller costs worth knowing.** " + " ".join(notes))

    ingest = []
    for r in large_runs:
        top = sorted(shape_means([r["ingest_history"]]).items(), key=lambda kv: -kv[1]["seconds"])[:2]
        ingest.append(f"{label(r).split(',')[0]} {fmt_s(r['ingest_history']['seconds'])} "
                      f"({r['ingest_history']['rows_new'] / r['ingest_history']['seconds'] / 1e3:,.0f} k rows/s; "
                      + ", ".join(f"`{k}` {fmt_s(v['seconds'])}" for k, v in top) + ")")
    if ingest:
        lines.append(f"**Ingest.** {sizes[-1]:,} zones x {results['plan']['history_days']} days in one "
                     "`ingest_frame`: " + "; ".join(ingest) + ". A day's ingest at that size: "
                     + ", ".join(f"{fmt_s(mean(i['seconds'] for i in r['ingest_days']))} "
                                 f"({label(r).split(',')[0]})" for r in large_runs) + ".")

    if large_runs:
        worst = max(large_runs, key=tick)
        longest = max(runs, key=lambda r: r["seconds"])
        ratios = [f"{tick(r) / r['backtest']['tick_seconds']:.1f}x ({label(r)})" for r in runs if "backtest" in r]
        peaks = [f"{r['tick_peak_rss_mb']:,.0f} MB ({label(r)})" for r in runs if r.get("tick_peak_rss_mb")]
        lines.append(
            f"**Against the goal** (issue 12: a live tick at most 2x one more backtest tick, under 1 GB at "
            f"10,000 streams). At {sizes[-1]:,} hourly streams a daily tick costs up to "
            f"{fmt_s(max(s['seconds'] for s in worst['regular']))} ({label(worst).split(',')[0]}) with the "
            f"`{results['plan']['model']}` model. Live tick over backtest tick (the mean of "
            f"{measured_span(results['plan'].get('warm_ticks', 0), results['plan']['ticks'])} after the "
            "start-up): " + ", ".join(ratios)
            + (". Peak RSS of the regular ticks: " + ", ".join(peaks) if peaks else "")
            + f". The whole run took {results['seconds'] / 60:.1f} minutes, {longest['seconds'] / 60:.1f} of them "
            f"the {label(longest)} run.")
    return "\n\n".join(lines)


MORE_BEGIN, MORE_END = "<!-- live-more:begin -->", "<!-- live-more:end -->"


def render_more(results: list[dict]) -> str:
    """Runs of other models or sizes (``--more-json``): what each step costs and where a regular tick goes,
    one column per run, with each run's model, ticks, history ingests and code named."""
    runs = []
    for res in results:
        for r in res["runs"]:
            runs.append({**r, "model": res["plan"]["model"], "code": res["machine"].get("code", "?"),
                         "when": res["machine"].get("date", "")})

    def name(r: dict) -> str:
        return f"{label(r)}, {r['model']}"

    rows = []
    for r in runs:
        reg = r["regular"]
        tick_mean = mean(s["seconds"] for s in reg)
        base = r.get("backtest")
        files = r["ingest_history"].get("ingests", 1)
        rows.append([name(r), f"{r['streams_in_data']:,}",
                     f"{fmt_s(r['ingest_history']['seconds'])} ({files} file{'s' if files > 1 else ''}, "
                     f"{r['ingest_history']['rows_new'] / 1e6:.1f} M rows)",
                     fmt_s(r["startup"]["seconds"]), fmt_s(tick_mean), fmt_s(max(s["seconds"] for s in reg)),
                     fmt_s(base["tick_seconds"]) if base else "not run",
                     f"{tick_mean / base['tick_seconds']:.1f}x" if base else "",
                     fmt_s(mean(i["seconds"] for i in r["ingest_days"])),
                     f"{r['tick_peak_rss_mb']:,.0f} MB" if r.get("tick_peak_rss_mb") else "n/a",
                     f"{r['peak_rss_mb']:,.0f} MB", measured_span(warm_of(r), len(reg)),
                     f"{r['seconds'] / 60:.0f} min"])
    what = [f"the `{m}` model (`--model {m}`)" for m in dict.fromkeys(r["model"] for r in runs) if m != MODEL]
    what += [f"{z:,} zones on PostgreSQL (`--sizes {z} --ticks 2 --history-ingests 7 --no-backtest`: the "
             "history goes in as 7 files of 4 days, since one ingest of it would hold far more memory than the "
             "daily loop ever does, and the backtest baseline, which holds all the data at once, is not run)"
             for z in dict.fromkeys(r["zones"] for r in runs) if z > 10_000]
    parts = ["### Other models and sizes",
             ("The same benchmark with " + " and at ".join(what) if what else "The same benchmark")
             + ". Columns as above; the measured ticks are numbered after the start-up step, and the ticks "
               "before them ran as a warm-up (`--warm-ticks`), not counted.",
             table(["configuration", "streams", "ingest 28 days", "start-up step", "tick, mean", "tick, max",
                    "backtest tick", "live / backtest", "ingest 1 day, mean", "peak RSS of the ticks",
                    "peak RSS", "ticks measured (after the start-up)", "run"], rows)]
    growth = growth_table(runs, name)
    if growth:
        parts.append(growth)
    tables = {name(r): phase_table(r["regular"]) for r in runs}
    totals = {name(r): mean(s["seconds"] for s in r["regular"]) for r in runs}
    parts += ["Where a regular tick goes (calls taking at least 3% of the tick in some configuration, three "
              "levels):", table(["phase", *tables], phase_rows(tables, totals, 0.03, depth=3))]
    parts.append("Runs: " + "; ".join(f"{name(r)} at code {r['code']}, {r['when']}" for r in runs) + ".")
    return "\n\n".join(parts)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.0f} minutes" if seconds >= 120 else fmt_s(seconds)


def _live():
    import mlma.live

    return mlma.live


def _store():
    import mlma.store.store

    return mlma.store.store


def _agent():
    import mlma.agent

    return mlma.agent


def _registry():
    import mlma.registry

    return mlma.registry


# -- docs ----------------------------------------------------------------------------------------------------
def write_docs(text: str, path: Path = DOC) -> None:
    write_section(path, BEGIN, END, text, append=True)


# -- main ----------------------------------------------------------------------------------------------------
def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="300 and 1,000 streams on SQLite only: a smoke run, under 2 minutes")
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help="comma-separated stores to measure: sqlite, postgresql (default both)")
    parser.add_argument("--sizes", help="comma-separated fleet sizes in zones (default 1000,10000; "
                        "--quick: 300,1000)")
    parser.add_argument("--ticks", type=int, default=3, help="regular ticks measured per configuration (default 3)")
    parser.add_argument("--warm-ticks", type=int, metavar="W",
                        help=f"regular ticks run after the start-up step and before the measured ones, each after "
                             f"its day's ingest as the measured ones, but not counted: the agent state fills over "
                             f"the first 25-30 ticks, and the ticks grow with it (default {WARM_TICKS}; --quick: "
                             f"{QUICK_WARM_TICKS}; 0 measures the ticks right after the start-up)")
    parser.add_argument("--write-docs", action="store_true",
                        help=f"put the results into {DOC.relative_to(REPO)} between its live markers")
    parser.add_argument("--json", type=Path, help="also save the raw measurements here")
    parser.add_argument("--from-json", type=Path, metavar="PATH",
                        help="render (and write) the results saved with --json; measure nothing")
    parser.add_argument("--more-json", metavar="PATHS",
                        help="render (and write, between the live-more markers) runs saved with --json, "
                             "comma-separated: other models and sizes; measure nothing")
    parser.add_argument("--model", default=MODEL, help=f"the project's model (default {MODEL}; e.g. ridge)")
    parser.add_argument("--history-ingests", type=int, default=1,
                        help="ingest the 28 days of history in this many files of whole days (default 1)")
    parser.add_argument("--no-backtest", action="store_true",
                        help="skip the backtest baseline (it holds all the data at once: for 100,000 streams)")
    parser.add_argument("--seed", type=int, default=SEED, help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in args.backends if b not in BACKENDS]
    if unknown or not args.backends:
        parser.error(f"--backends takes some of {', '.join(BACKENDS)}, got {','.join(args.backends)!r}")
    if args.history_ingests < 1 or args.history_ingests > HISTORY_DAYS:
        parser.error(f"--history-ingests must be 1 to {HISTORY_DAYS}, got {args.history_ingests}")
    if args.ticks < 1:
        parser.error(f"--ticks must be at least 1, got {args.ticks}")
    if args.warm_ticks is not None and args.warm_ticks < 0:
        parser.error(f"--warm-ticks must be 0 or more, got {args.warm_ticks}")
    if args.sizes is not None:
        try:
            args.sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
        except ValueError:
            parser.error(f"--sizes takes comma-separated whole numbers, got {args.sizes!r}")
        if not args.sizes or min(args.sizes) < 1:
            parser.error(f"--sizes takes positive numbers of zones, got {args.sizes}")
    return args


def versions() -> dict:
    import sqlite3

    out = {"sqlalchemy": version("SQLAlchemy"), "psycopg": version("psycopg"), "sqlite": sqlite3.sqlite_version}
    try:
        import sqlalchemy as sa

        from mlma.store.testing import postgres_unavailable, postgres_url

        if postgres_unavailable() is None:
            engine = sa.create_engine(postgres_url(), poolclass=sa.pool.NullPool)
            with engine.connect() as conn:
                out["postgresql"] = conn.execute(sa.text("SHOW server_version")).scalar().split()[0]
            engine.dispose()
    except Exception:  # noqa: BLE001 - only the header's version line depends on it
        pass
    return out


def main(argv=None) -> int:
    args = parse(argv)
    started = time.perf_counter()

    def say(message: str) -> None:
        print(f"[{time.perf_counter() - started:6.1f} s] {message}", file=sys.stderr, flush=True)

    if args.child:
        backend, n = args.child.split(":")
        record = measure(backend, int(n), args.ticks, args.seed, args.workdir, say, args.model,
                         history_ingests=args.history_ingests, baseline=not args.no_backtest,
                         warm_ticks=args.warm_ticks or 0)
        args.child_out.write_text(json.dumps(record, default=float))
        return 0
    if args.more_json:
        text = render_more([json.loads(Path(f).read_text()) for f in args.more_json.split(",")])
        print(text)
        if args.write_docs:
            write_section(DOC, MORE_BEGIN, MORE_END, text)
        return 0
    if args.from_json:
        publish(render(json.loads(args.from_json.read_text())), args)
        return 0
    p = plan(args.quick, args.backends, args.ticks, args.sizes, args.model, args.warm_ticks)
    if "postgresql" in p["backends"]:
        from mlma.store.testing import postgres_unavailable

        reason = postgres_unavailable()
        if reason:
            raise SystemExit(f"{reason}; --backends sqlite measures SQLite alone")
    results = {"quick": args.quick, "plan": p, "machine": machine_info(), "versions": versions(), "runs": []}
    for n in p["sizes"]:
        for backend in p["backends"]:
            results["runs"].append(run_child(backend, n, p["ticks"], p["seed"], say, p["model"],
                                             history_ingests=args.history_ingests, baseline=not args.no_backtest,
                                             warm_ticks=p["warm_ticks"]))
    results["load_average_end"] = load_average()
    results["seconds"] = time.perf_counter() - started
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))
    publish(render(results), args)
    say("done")
    return 0


def publish(text: str, args: argparse.Namespace) -> None:
    print(text)
    if args.write_docs:
        write_docs(text)
        print(f"wrote {DOC.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
