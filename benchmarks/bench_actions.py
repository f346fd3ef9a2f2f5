"""How long a person's action on many named streams takes: pin, unpin, set parameters, force a re-training,
mark an abnormal period, each for ``--streams`` streams named one by one (a city's zones pasted into a script,
or the dashboard's selection), on a SQLite file and, with ``--postgres``, on PostgreSQL.

Each tree (the current ``src`` and, with ``--baseline REV``, an older commit's, taken with ``git archive``)
runs in its own process on a fleet of its own (:func:`mlma.api.sample.build_sample_fleet`), so that both
are timed on the same data by their own code. The floor in the same process is the cheapest read that
touches every name once (``Store.stream_ids(names, create=False)``); each action is reported in seconds and
as a multiple of that floor, the median of ``--repeats`` runs (a pin and the unpin after it alternate, so
each run changes every stream).

Usage::

    .venv/bin/python benchmarks/bench_actions.py --streams 10000                      # about a minute
    .venv/bin/python benchmarks/bench_actions.py --baseline a98ff85 --write-docs --json /tmp/actions.json \\
        --postgres postgresql+psycopg://postgres@127.0.0.1:5432/test     # a throw-away schema in it
    .venv/bin/python benchmarks/bench_actions.py --from-json /tmp/actions.json --write-docs  # re-render only
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from _docs import write_section  # noqa: E402
from _machine import machine_info  # noqa: E402

BEGIN, END = "<!-- bench_actions:begin -->", "<!-- bench_actions:end -->"
ACTIONS = ("pin", "unpin", "set-params", "force-retrain", "mark-abnormal")


def worker(url: str, n_streams: int, repeats: int) -> dict:
    """Runs in the tree under test (its ``src`` first on PYTHONPATH): fill a fleet, then time each action."""
    from mlma.api.sample import build_sample_fleet
    from mlma.control import Operations
    from mlma.store import Store

    store = Store.create(url)
    with tempfile.TemporaryDirectory() as artifacts:
        fleet = build_sample_fleet(store, Path(artifacts), n_streams=n_streams, n_ticks=6, n_cities=20,
                                   series_streams=10, seed=1)
        names = list(fleet.unique_ids)
        ops = Operations(store)
        runs = {
            "pin": lambda: ops.pin(streams=names, by="user:bench"),
            "unpin": lambda: ops.unpin(streams=names, by="user:bench"),
            "set-params": lambda i: ops.set_params(streams=names, params={"cooldown_ticks": 3 + i % 2},
                                                   by="user:bench"),
            "force-retrain": lambda: ops.force_retrain(streams=names, by="user:bench"),
            "mark-abnormal": lambda: ops.mark_abnormal("2024-01-01", "2024-01-02", streams=names, by="user:bench"),
        }
        times: dict[str, list[float]] = {"floor": [], **{a: [] for a in ACTIONS}}
        for i in range(repeats):
            t0 = time.perf_counter()
            ids = store.stream_ids(names, create=False)
            times["floor"].append(time.perf_counter() - t0)
            assert (ids >= 0).all()
            for action in ACTIONS:
                run = runs[action]
                t0 = time.perf_counter()
                result = run(i) if action == "set-params" else run()
                times[action].append(time.perf_counter() - t0)
                assert (result.changed or result.queued) == len(names), (action, result.changed, result.queued)
        store.close()
    return {k: statistics.median(v) for k, v in times.items()}


def baseline_tree(rev: str, folder: Path) -> Path:
    archive = subprocess.run(["git", "archive", rev, "src"], cwd=REPO, capture_output=True, check=True).stdout
    subprocess.run(["tar", "x", "-C", str(folder)], input=archive, check=True)
    return folder / "src"


def run_tree(src: Path, url: str, n_streams: int, repeats: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PYTHONPATH": str(src)}
    done = subprocess.run([sys.executable, __file__, "--worker", url, "--streams", str(n_streams),
                           "--repeats", str(repeats)], env=env, capture_output=True, text=True, cwd=REPO)
    if done.returncode:
        raise SystemExit(f"the worker on {src} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def postgres_schema_url(base: str) -> tuple[str, callable]:
    """A fresh schema in the database of ``base``: the URL that uses it, and how to drop it."""
    import sqlalchemy as sa

    name = f"bench_actions_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {name}")

    def drop() -> None:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {name} CASCADE")
        engine.dispose()

    return base + ("&" if "?" in base else "?") + f"options=-csearch_path%3D{name}", drop


def measure(args) -> dict:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"this tree": REPO / "src"}
        if args.baseline:
            trees[f"baseline {args.baseline}"] = baseline_tree(args.baseline, Path(tmp))
        backends = [("SQLite", None)] + ([("PostgreSQL", args.postgres)] if args.postgres else [])
        for backend, base in backends:
            for label, src in trees.items():
                if base is None:
                    url, drop = f"sqlite:///{tmp}/{uuid.uuid4().hex}.db", (lambda: None)
                else:
                    url, drop = postgres_schema_url(base)
                try:
                    print(f"  {backend}, {label} ...", file=sys.stderr, flush=True)
                    rows.append({"backend": backend, "tree": label, **run_tree(src, url, args.streams, args.repeats)})
                finally:
                    drop()
    return {"streams": args.streams, "repeats": args.repeats, "machine": machine_info(), "rows": rows}


def markdown(result: dict) -> str:
    lines = [f"{result['streams']:,} streams named one by one, median of {result['repeats']} run(s); seconds, "
             "and in brackets the multiple of the floor (reading the streams' ids by name once) in the same "
             "process.", "",
             "| store | code | floor | " + " | ".join(ACTIONS) + " |",
             "| --- | --- | ---: | " + " | ".join("---:" for _ in ACTIONS) + " |"]
    for row in result["rows"]:
        cells = [f"{row[a]:.2f} ({row[a] / row['floor']:.0f}x)" for a in ACTIONS]
        lines.append(f"| {row['backend']} | {row['tree']} | {row['floor']:.2f} | " + " | ".join(cells) + " |")
    machine = result["machine"]
    lines += ["", f"Measured {machine['date']} on {machine['cpu']} ({machine['nproc']} CPUs, load "
                  f"{machine['load_average_start']} at the start), code {machine['code']}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--baseline", help="a commit whose src is timed beside the current one")
    parser.add_argument("--postgres", help="a PostgreSQL URL; a throw-away schema is made in its database")
    parser.add_argument("--json", type=Path, help="keep the measurements here")
    parser.add_argument("--from-json", type=Path, help="render saved measurements instead of measuring")
    parser.add_argument("--write-docs", action="store_true", help="put the table into docs/benchmarks.md")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.streams, args.repeats)))
        return
    result = json.loads(args.from_json.read_text()) if args.from_json else measure(args)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    text = markdown(result)
    print(text)
    if args.write_docs:
        write_section(REPO / "docs" / "benchmarks.md", BEGIN, END, text, append=True)


if __name__ == "__main__":
    main()
