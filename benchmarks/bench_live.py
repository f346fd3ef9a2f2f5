"""What one live tick costs on a persistent store: SQLite and PostgreSQL, 1,000 and 10,000 hourly streams.

For each store and fleet size this builds a project (``mlma.project.init_project``: ``seasonal-naive`` model,
``[agent] executor = "inline"``, ``initial_ticks = 28``), fills it with the simulated delivery platform
(``mlma.simulate``, seed 7, hourly data, daily ticks) and drives :class:`mlma.live.LiveAgent` as the daily
loop would:

1. one :meth:`~mlma.store.Store.ingest_frame` of 28 days of history;
2. the start-up step (``LiveAgent.step``): first models for every stream and forecasts for the next day;
3. three regular ticks, each preceded by the ingest of one day of actuals (timed on its own).

The model is the cheapest there is, so that what is left is the store's and the agent's own overhead. For
every step it records the wall time, where the time went (``LiveAgent``, ``Agent``, ``Store`` and registry
methods wrapped with timers at run time, in this process only: nothing in ``src`` is edited), the SQL
statements sent (SQLAlchemy's ``before_cursor_execute`` event on the store's engine, plus the two places
that use the driver's cursor directly: the observation read and PostgreSQL's ``COPY``), the transactions
committed, the rows each table gained, and the size of the saved agent state per stream.

Each configuration runs in a process of its own, so that peak memory (the resident-set high-water mark) is
its own and the timers patched in do not leak between runs.

Usage::

    .venv/bin/python benchmarks/bench_live.py --quick          # 300 and 1,000 streams, SQLite: under 2 minutes
    .venv/bin/python benchmarks/bench_live.py --write-docs --json /tmp/live.json
    .venv/bin/python benchmarks/bench_live.py --from-json /tmp/live.json --write-docs
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
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _machine import REPO, load_average, machine_info, version  # noqa: E402

DOC = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- live-results:begin -->", "<!-- live-results:end -->"
SEED = 7
HISTORY_DAYS = 28
MODEL = "seasonal-naive"
BACKENDS = ("sqlite", "postgresql")
#: Tables whose rows are counted before and after each step (the observation tables are the ingest's).
COUNTED_TABLES = ("ticks", "verdicts", "forecasts", "escalations", "audit_log", "agent_state", "locks",
                  "model_versions", "champions", "champion_history", "stream_actions")


# -- plans ---------------------------------------------------------------------------------------------------
def plan(quick: bool, backends: list[str], ticks: int) -> dict:
    sizes = (300, 1_000) if quick else (1_000, 10_000)
    if quick:
        backends = [b for b in backends if b == "sqlite"] or ["sqlite"]
    return {"sizes": list(sizes), "backends": backends, "ticks": ticks, "seed": SEED,
            "history_days": HISTORY_DAYS, "model": MODEL}


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
        original = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
        if isinstance(original, (staticmethod, classmethod)) or not callable(original):
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

        setattr(owner, name, timed)

    def snapshot(self) -> list[dict]:
        return [{"path": list(p), "seconds": s, "calls": self.calls[p]} for p, s in self.seconds.items()]


class SqlCounter:
    """Statements the store's engine sends from the main thread, by first keyword, and commits."""

    def __init__(self, engine) -> None:
        import sqlalchemy as sa

        self.dialect = engine.dialect.name
        self._main = threading.get_ident()
        self.reset()
        sa.event.listen(engine, "before_cursor_execute", self._on_execute)
        sa.event.listen(engine, "commit", self._on_commit)

    def reset(self) -> None:
        self.statements: collections.Counter = collections.Counter()
        self.batched_rows = 0  # parameter sets sent by executemany (one statement, many rows)
        self.copied_rows = 0
        self.commits = 0
        self.background = 0  # lock heartbeats, on their own thread

    def _on_execute(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if threading.get_ident() != self._main:
            self.background += 1
            return
        self.statements[statement.lstrip().split(None, 1)[0].upper()] += 1
        if executemany:
            self.batched_rows += len(parameters)

    def _on_commit(self, conn) -> None:
        if threading.get_ident() == self._main:
            self.commits += 1

    def raw(self, kind: str, rows: int = 0) -> None:
        """A statement sent on the driver's own cursor, which SQLAlchemy's events do not see."""
        self.statements[kind] += 1
        self.copied_rows += rows

    def snapshot(self) -> dict:
        return {"statements": dict(self.statements), "total": sum(self.statements.values()),
                "batched_rows": self.batched_rows, "copied_rows": self.copied_rows, "commits": self.commits,
                "background": self.background}


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

    clock, sql = PhaseClock(), SqlCounter(store.engine)
    # The two statements that go through the driver's cursor, not through SQLAlchemy.
    read_observations = Store.observations

    def observations(self, *args, **kwargs):
        if self.engine is store.engine:
            sql.raw("SELECT (driver cursor)")
        return read_observations(self, *args, **kwargs)

    Store.observations = functools.wraps(read_observations)(observations)
    insert_rows = bulk.insert_rows

    def counted_insert_rows(conn, table, columns, data):
        n = insert_rows(conn, table, columns, data)
        if conn.dialect.name == "postgresql" and n:
            sql.raw("COPY", n)
        return n

    bulk.insert_rows = functools.wraps(insert_rows)(counted_insert_rows)

    for owner, names in (
            (live.LiveAgent, ("timing", "next_tick", "_run", "_compute_and_write", "_abnormal_periods",
                              "_load_models", "_load_versions", "_controls", "_versions", "_latest_versions",
                              "_verdicts", "_data_span")),
            (live, ("FleetData", "forecast_frame", "_summary", "_outcomes", "_holder_is_dead")),
            (Store, ("begin_tick", "load_state", "streams", "observations", "write_tick", "last_done_tick",
                     "lock_holder", "ingest_frame", "_ingest", "_ensure_streams", "_upsert_observations",
                     "_insert_verdicts", "_insert_forecasts", "_insert_escalations", "_save_state",
                     "_open_tick", "_known_ids")),
            (store_module, ("encode_state", "decode_state", "record_versions", "move_champions",
                            "frame_sha256")),
            (bulk, ("insert_rows",)),
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
            label = f"{owner.__name__.rsplit('.', 1)[-1]}.{name}" if name[0] != name[0].upper() else f"{name}()"
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


# -- one configuration (in its own process) ------------------------------------------------------------------
def measure(backend: str, n_zones: int, ticks: int, seed: int, workdir: Path, say) -> dict:
    import pandas as pd

    from mlma.live import LiveAgent
    from mlma.project import CONFIG_NAME, init_project, load_config
    from mlma.simulate import simulate_platform
    from mlma.store import Store
    from mlma.store.testing import postgres_schema, postgres_unavailable

    started = time.perf_counter()
    sim = simulate_platform(n_zones, HISTORY_DAYS + ticks, seed=seed)
    data = sim.data
    day = ((data["ds"] - data["ds"].min().normalize()) // pd.Timedelta("1D")).to_numpy()
    history = data[day < HISTORY_DAYS].reset_index(drop=True)
    days = [data[day == HISTORY_DAYS + i].reset_index(drop=True) for i in range(ticks)]
    out = {"backend": backend, "zones": n_zones, "ticks": ticks, "seed": seed,
           "simulate_seconds": time.perf_counter() - started, "history_rows": len(history),
           "streams_in_data": int(data["unique_id"].nunique())}
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
        init_project(root, db=url, model=MODEL)
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

        report, rec = run("ingest history", lambda: store.ingest_frame(history, "history"), rows_of_tables=False)
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
        for i, frame in enumerate(days):
            report, irec = run(f"ingest day {i + 1}", lambda f=frame, i=i: store.ingest_frame(f, f"day-{i + 1}"),
                               rows_of_tables=False)
            irec["rows_new"] = int(report.rows_new)
            ingests.append(irec)
            result, rec = run(f"tick {i + 1}", agent.step, rows_of_tables=True)
            if result.start:
                raise RuntimeError("a regular tick ran as a start-up step")
            steps.append(describe_step(rec, result, store))
            say(f"{backend} {n_zones:,}: ingest {irec['seconds']:.2f} s; {result} -> {rec['seconds']:.2f} s wall, "
                f"{rec['sql']['total']} statements")
        out["startup"], out["regular"], out["ingest_days"] = steps[0], steps[1:], ingests
        out["store_bytes"] = store_bytes(store, sqlite_path)
        out["observation_rows"] = int(len(history) + sum(len(f) for f in days))
    out["peak_rss_mb"] = peak_rss_mb()
    out["seconds"] = time.perf_counter() - started
    return out


def describe_step(rec: dict, result, store) -> dict:
    state = store.load_state()
    rec.update(tick=int(result.tick), n_streams=int(result.n_streams), tick_seconds=float(result.seconds),
               state_bytes=int(state.size_bytes), state_arrays=len(state.arrays),
               retrains=int(result.summary.get("retrains", 0)), initial_fits=int(result.summary.get("initial_fits", 0)),
               escalations=len(result.escalation_ids), promoted=int(result.summary.get("promoted", 0)))
    return rec


# -- running the plan ----------------------------------------------------------------------------------------
def run_child(backend: str, n: int, ticks: int, seed: int, say) -> dict:
    """Measure one configuration in a fresh interpreter and return its record."""
    with tempfile.TemporaryDirectory(prefix=f"mlma-bench-live-{backend}-{n}-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--child", f"{backend}:{n}", "--ticks", str(ticks),
               "--seed", str(seed), "--child-out", str(out), "--workdir", tmp]
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


def render(results: dict) -> str:
    runs = results["runs"]
    m = results["machine"]
    p = results["plan"]
    parts = ["## A live tick on a persistent store",
             "`benchmarks/bench_live.py` runs `mlma.live.LiveAgent` the way the daily loop does, on the simulated "
             f"delivery platform (seed {p['seed']}, hourly data, daily ticks) with the `{p['model']}` model, so "
             "that fitting costs next to nothing and what is measured is the store's and the agent's own work. "
             f"For each store and fleet size: one `Store.ingest_frame` of {p['history_days']} days of history, "
             f"the start-up step (`[agent] initial_ticks = {p['history_days']}`: a first model for every stream "
             f"and forecasts for the next day), then {p['ticks']} regular ticks, each after the ingest of one day. "
             "Fits run inline. The breakdown comes from timers wrapped around `LiveAgent`, `Agent`, `Store` and "
             "registry methods at run time; the statements from SQLAlchemy's `before_cursor_execute` event on the "
             "store's engine, plus the observation read and PostgreSQL's `COPY`, which use the driver's cursor "
             "directly. Each configuration runs in a process of its own.",
             "```bash\n.venv/bin/python benchmarks/bench_live.py --write-docs --json /tmp/live.json   # "
             "about 10 minutes\n.venv/bin/python benchmarks/bench_live.py --quick                            "
             "# 300 and 1,000 streams, SQLite\n```",
             f"Run of {m['date']}{' (--quick)' if results.get('quick') else ''}: {m['nproc']} CPUs ({m['cpu']}), "
             f"shared; Python {m['python']}, numpy {m['packages']['numpy']}, pandas {m['packages']['pandas']}, "
             f"SQLAlchemy {results['versions'].get('sqlalchemy')}, psycopg {results['versions'].get('psycopg')}, "
             f"SQLite {results['versions'].get('sqlite')}"
             + (f", PostgreSQL {results['versions']['postgresql']}" if results['versions'].get('postgresql') else "")
             + f"; code {m['code']}; load average {m['load_average_start']} at the start, "
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
            fmt_s(mean(i["seconds"] for i in r["ingest_days"])),
            f"{mean(s['state_bytes'] for s in reg) / n:.0f} B",
            fmt_n(mean(sum(s["rows"].values()) for s in reg)),
            fmt_n(mean(step_sql(s) for s in reg)),
            f"{r['peak_rss_mb']:,.0f} MB"])
    parts.append("### Cost per step\n\n" + table(
        ["store, zones", "streams", f"ingest {p['history_days']} days", "start-up step", "tick, mean",
         "tick, max", "ingest 1 day, mean", "state / stream", "rows written / tick", "SQL / tick", "peak RSS"],
        rows)
        + "\n\nA tick is the wall time of one `LiveAgent.step()` (lock, clock, loading, the agent's tick, "
          "registry, one commit); the ingest of the day before it is timed apart. Streams: those in the store "
          "(the platform launches zones along the way). State: `Store.load_state().size_bytes` over the "
          "streams (compressed `.npz`). Rows written: rows gained by the tick's tables (verdicts, forecasts, "
          "escalations, model versions, champions, audit, state, ticks). SQL: statements sent during the "
          "step, every kind counted.")

    # Where a regular tick goes.
    tables = {label(r): phase_table(r["regular"]) for r in runs}
    totals = {label(r): mean(s["seconds"] for s in r["regular"]) for r in runs}
    paths = set()
    for t in tables.values():
        paths |= set(t)
    significant = sorted(
        (path for path in paths if len(path) <= 4 and any(
            t.get(path, {}).get("seconds", 0) >= 0.02 * totals[k] for k, t in tables.items())),
        key=lambda path: _tree_key(path, tables))
    rows = []
    for path in significant:
        row = ["&nbsp;&nbsp;" * (len(path) - 1) + f"`{path[-1]}`"]
        for k, t in tables.items():
            cell = t.get(path)
            row.append("" if cell is None else f"{fmt_s(cell['seconds'])} ({cell['seconds'] / totals[k]:.0%})")
        rows.append(row)
    rows.append(["whole tick"] + [fmt_s(totals[k]) for k in tables])
    parts.append("### Where a regular tick goes\n\n" + table(["phase (nested: time inside its parent)",
                                                                *tables], rows)
                 + f"\n\nMean over the {p['ticks']} regular ticks of the time inside each wrapped call (its "
                   "children included), and its share of the whole tick; calls that take at least 2 % of a tick "
                   "in some configuration are shown. Time outside any wrapped call (e.g. sorting the "
                   "observations frame in `_compute_and_write`) shows as the gap between a parent and its "
                   "children.")

    # SQL per step.
    kinds = sorted({k for r in runs for s in [r["startup"], *r["regular"]] for k in s["sql"]["statements"]})
    rows = []
    for r in runs:
        for what, steps in (("start-up", [r["startup"]]), ("regular tick", r["regular"])):
            row = [label(r), what]
            row += [fmt_n(mean(s["sql"]["statements"].get(k, 0) for s in steps)) for k in kinds]
            row += [fmt_n(mean(step_sql(s) for s in steps)), fmt_n(mean(s["sql"]["commits"] for s in steps)),
                    fmt_n(mean(s["sql"]["batched_rows"] + s["sql"]["copied_rows"] for s in steps))]
            rows.append(row)
        ing = r["ingest_days"]
        rows.append([label(r), "ingest 1 day"]
                    + [fmt_n(mean(s["sql"]["statements"].get(k, 0) for s in ing)) for k in kinds]
                    + [fmt_n(mean(step_sql(s) for s in ing)), fmt_n(mean(s["sql"]["commits"] for s in ing)),
                       fmt_n(mean(s["sql"]["batched_rows"] + s["sql"]["copied_rows"] for s in ing))])
    parts.append("### SQL statements per step\n\n" + table(
        ["store, zones", "step", *[f"`{k}`" for k in kinds], "all", "commits", "rows in bulk"], rows,
        "ll" + "r" * (len(kinds) + 3))
        + "\n\nStatements by first keyword (regular ticks: mean of the ticks). `SELECT (driver cursor)` is "
          "the observation read and `COPY` PostgreSQL's bulk load; both bypass SQLAlchemy and are counted "
          "where they are issued. Rows in bulk: rows sent by `executemany` (one statement each) or `COPY`. "
          "SQLite's `BEGIN` goes through the engine and is counted; psycopg opens its transactions itself. "
          "Lock heartbeats (a background thread) are not counted; "
          f"there were {sum(s['sql']['background'] for r in runs for s in [r['startup'], *r['regular']])} "
          "during the measured steps.")

    rows = []
    for r in runs:
        for s in [r["startup"], *r["regular"]]:
            rows.append([label(r), "start-up" if s is r["startup"] else f"tick {s['tick']}", f"{s['n_streams']:,}",
                         fmt_s(s["seconds"]), fmt_n(s["initial_fits"]), fmt_n(s["retrains"]),
                         fmt_n(s["escalations"]),
                         ", ".join(f"{t} {v:,}" for t, v in sorted(s["rows"].items(), key=lambda kv: -kv[1])),
                         f"{s['state_bytes'] / 1024:,.0f} KiB"])
    parts.append("<details><summary>Every measured step</summary>\n\n" + table(
        ["store, zones", "step", "streams", "wall", "first fits", "re-trainings", "escalations",
         "rows gained", "state"], rows, "llrrrrrlr") + "\n\n</details>")
    parts.append(reading(results))
    return "\n\n".join(parts) + "\n"


def _tree_key(path: tuple[str, ...], tables: dict) -> tuple:
    """Order paths as a tree: each level by its largest time (descending) across configurations."""
    key = []
    for depth in range(1, len(path) + 1):
        prefix = path[:depth]
        biggest = max(t.get(prefix, {}).get("seconds", 0.0) for t in tables.values())
        key += [-biggest, prefix[-1]]
    return tuple(key)


def reading(results: dict) -> str:
    """The figures that matter, worked out from this run's numbers."""
    runs = results["runs"]
    sizes = sorted({r["zones"] for r in runs})
    lines = ["### Reading"]
    by = {(r["backend"], r["zones"]): r for r in runs}

    def tick(r):
        return mean(s["seconds"] for s in r["regular"])

    def self_top(r, k=4):
        t = phase_table(r["regular"])
        whole = tick(r)
        top = sorted(t.items(), key=lambda kv: -kv[1]["self"])[:k]
        return ", ".join(f"`{path[-1]}` {fmt_s(v['self'])} ({v['self'] / whole:.0%})" for path, v in top)

    def phase(r, name):
        t = phase_table(r["regular"])
        return sum(v["seconds"] for path, v in t.items() if path[-1] == name)

    def calls(r, name):
        t = phase_table(r["regular"])
        return sum(v["calls"] for path, v in t.items() if path[-1] == name)

    for backend in results["plan"]["backends"]:
        small, large = by.get((backend, sizes[0])), by.get((backend, sizes[-1]))
        if not small or not large or small is large:
            continue
        name = "SQLite" if backend == "sqlite" else "PostgreSQL"
        ratio = large["regular"][-1]["n_streams"] / small["regular"][-1]["n_streams"]
        lines.append(
            f"**{name}.** A regular tick took {fmt_s(tick(small))} at {small['regular'][-1]['n_streams']:,} "
            f"streams and {fmt_s(tick(large))} at {large['regular'][-1]['n_streams']:,} "
            f"({tick(large) / tick(small):.1f}x the time for {ratio:.1f}x the streams; "
            f"{tick(large) / large['regular'][-1]['n_streams'] * 1e3:.2f} ms per stream). The largest self "
            f"times at {large['zones']:,} zones (time in a call minus its wrapped children): {self_top(large)}. "
            f"The start-up step took {fmt_s(large['startup']['seconds'])} and the one `ingest_frame` of the "
            f"history {fmt_s(large['ingest_history']['seconds'])} "
            f"({large['ingest_history']['rows_new'] / large['ingest_history']['seconds'] / 1e3:,.0f} k rows/s); "
            f"a day's ingest {fmt_s(mean(i['seconds'] for i in large['ingest_days']))}.")
        sql_small = [step_sql(s) for s in small["regular"]]
        sql_large = [step_sql(s) for s in large["regular"]]
        same = sorted(set(sql_small)) == sorted(set(sql_large))
        lines.append(
            f"Statements per regular tick: {', '.join(map(str, sql_small))} at {small['zones']:,} zones against "
            f"{', '.join(map(str, sql_large))} at {large['zones']:,}"
            + (" - the same: persistence does not issue a statement per stream." if same else
               " - the count differs between the sizes; the table above shows which kind.")
            + f" Commits per tick: {mean(s['sql']['commits'] for s in large['regular']):.0f}. The start-up "
              f"step sent {step_sql(small['startup'])} and {step_sql(large['startup'])} statements.")
        load_state = calls(large, "Store.load_state")
        if load_state >= 2:
            lines.append(
                f"`Store.load_state` runs {load_state:.0f} times per tick and decodes the whole state each time "
                f"({fmt_s(phase(large, 'Store.load_state') / load_state)} a call at {large['zones']:,} zones): "
                f"`LiveAgent.timing` ({source_line(_live().LiveAgent.timing, 'load_state')}) loads it only to "
                f"read the clock's three `meta.*` arrays, and `_compute_and_write` "
                f"({source_line(_live().LiveAgent._compute_and_write, 'load_state')}) loads it again.")
    return "\n\n".join(lines)


def _live():
    import mlma.live

    return mlma.live


# -- docs ----------------------------------------------------------------------------------------------------
def write_docs(text: str, path: Path = DOC) -> None:
    """Put ``text`` between the live markers, or append the marked block at the very end (read just now)."""
    doc = path.read_text()
    block = f"{BEGIN}\n\n{text}\n{END}"
    if BEGIN in doc and END in doc:
        pattern = re.compile(re.escape(BEGIN) + ".*?" + re.escape(END), re.S)
        path.write_text(pattern.sub(lambda _: block, doc))
    elif BEGIN in doc or END in doc:
        raise SystemExit(f"{path} has only one of the markers {BEGIN} and {END}; fix it by hand")
    else:
        path.write_text(doc.rstrip("\n") + "\n\n" + block + "\n")


# -- main ----------------------------------------------------------------------------------------------------
def parse(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="300 and 1,000 streams on SQLite only: a smoke run, under 2 minutes")
    parser.add_argument("--backends", default=",".join(BACKENDS),
                        help="comma-separated stores to measure: sqlite, postgresql (default both)")
    parser.add_argument("--ticks", type=int, default=3, help="regular ticks measured per configuration (default 3)")
    parser.add_argument("--write-docs", action="store_true",
                        help=f"put the results into {DOC.relative_to(REPO)} between its live markers")
    parser.add_argument("--json", type=Path, help="also save the raw measurements here")
    parser.add_argument("--from-json", type=Path, metavar="PATH",
                        help="render (and write) the results saved with --json; measure nothing")
    parser.add_argument("--seed", type=int, default=SEED, help=argparse.SUPPRESS)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = [b for b in args.backends if b not in BACKENDS]
    if unknown or not args.backends:
        parser.error(f"--backends takes some of {', '.join(BACKENDS)}, got {','.join(args.backends)!r}")
    if args.ticks < 1:
        parser.error(f"--ticks must be at least 1, got {args.ticks}")
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
        record = measure(backend, int(n), args.ticks, args.seed, args.workdir, say)
        args.child_out.write_text(json.dumps(record, default=float))
        return 0
    if args.from_json:
        publish(render(json.loads(args.from_json.read_text())), args)
        return 0
    p = plan(args.quick, args.backends, args.ticks)
    results = {"quick": args.quick, "plan": p, "machine": machine_info(), "versions": versions(), "runs": []}
    for n in p["sizes"]:
        for backend in p["backends"]:
            results["runs"].append(run_child(backend, n, p["ticks"], p["seed"], say))
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
