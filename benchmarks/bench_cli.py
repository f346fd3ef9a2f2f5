"""How long the ``mlma`` command takes to start: ``mlma --help`` and ``mlma status`` on a small project, its
store a SQLite file and, with ``--postgres``, a PostgreSQL database.

Each command runs in a fresh process, as the ``mlma`` console script runs it (``from mlma.cli import app;
app()``), ``--repeats`` times after one warm-up run that also writes the byte-code caches; the median wall
time, the fastest, and the median CPU time (user + system, of the child process) are reported: on a loaded
machine the CPU time moves less than the wall time. With ``--baseline REV``
the same commands also run on the ``src`` tree of an older commit (taken with ``git archive``), interleaved
run by run with the current tree so that both see the same load. Then one process per step imports the
libraries ``mlma status`` needs, in order, and says what each one adds (fastest of the runs): the floor that
lazy imports cannot go below.

Usage::

    .venv/bin/python benchmarks/bench_cli.py                             # about 30 s
    .venv/bin/python benchmarks/bench_cli.py --baseline fa8998c --write-docs --json /tmp/cli.json \
        --postgres postgresql+psycopg://postgres@127.0.0.1:5432/bench   # a throw-away schema in it
    .venv/bin/python benchmarks/bench_cli.py --from-json /tmp/cli.json --write-docs   # re-render only
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from _docs import write_section  # noqa: E402
from _machine import load_average, machine_info  # noqa: E402

BEGIN, END = "<!-- cli-results:begin -->", "<!-- cli-results:end -->"
RUN_CLI = "import sys; sys.argv[0] = 'mlma'; from mlma.cli import app; app()"
# What `mlma status` imports, in the order it needs them; each step's time is what it adds to the ones before.
# Once a tick ran, a SQLite project's status stops after mlma.store.glance, a PostgreSQL one's after psycopg;
# the last step is what the store path (no tick yet, or a schema to migrate) adds.
IMPORT_STEPS = [
    ("interpreter start", ""),
    ("mlma.cli (typer, rich)", "import mlma.cli"),
    ("typer's parameter parsing (pydantic)", "import typer._adapters"),
    ("mlma.store.glance (sqlite3: the quick path)", "import mlma.store.glance"),
    ("psycopg (the quick path on PostgreSQL)", "import psycopg"),
    ("the store path: mlma.store.store, mlma.live (numpy, pandas, SQLAlchemy)", "import mlma.store.store, mlma.live"),
]


def make_project(folder: Path, db: str | None = None) -> Path:
    """A project of 10 simulated zones over 35 days, replayed tick by tick (seasonal-naive); its store a SQLite
    file, or the empty database at ``db``."""
    from mlma.demo import build_live_project
    from mlma.simulate import simulate_platform

    config, _ = build_live_project(simulate_platform(10, 35, 7), folder / ("project" if db is None else "pg"),
                                   model="seasonal-naive", first_tick=28, db=db)
    return config.root


def environment(src: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONDONTWRITEBYTECODE", "PYTHONPATH")}
    env["PYTHONPATH"] = str(src)
    return env


def run_once(args: list[str], src: Path, cwd: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one run of ``mlma ARGS`` with ``src`` first on the path."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", RUN_CLI, *args], cwd=cwd, env=environment(src),
                          capture_output=True, text=True, timeout=120)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"mlma {' '.join(args)} failed with {src}: {done.stdout}{done.stderr}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def time_commands(trees: dict[str, Path], project: Path, repeats: int, pg_project: Path | None = None) -> list[dict]:
    commands = {"mlma --help": (["--help"], project.parent), "mlma status": (["status"], project)}
    if pg_project is not None:
        commands["mlma status (PostgreSQL)"] = (["status"], pg_project)
    rows = []
    for command, (args, cwd) in commands.items():
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
        for name, src in trees.items():
            run_once(args, src, cwd)   # warm-up: byte-code caches, page cache
        for _ in range(repeats):
            for name, src in trees.items():
                runs[name].append(run_once(args, src, cwd))
        for name in trees:
            walls, cpus = zip(*runs[name])
            rows.append({"command": command, "tree": name, "repeats": repeats,
                         "median_wall_s": statistics.median(walls), "min_wall_s": min(walls),
                         "median_cpu_s": statistics.median(cpus)})
            print(f"{command:24s} {name:10s} median {statistics.median(walls):.3f} s wall, "
                  f"{statistics.median(cpus):.3f} s CPU ({repeats} runs)", file=sys.stderr)
    return rows


def import_floor(src: Path, repeats: int) -> list[dict]:
    """Fastest of ``repeats`` processes (wall and CPU time) that import the first k steps, for each k; the
    differences are the steps.

    The fastest rather than the median: on a shared machine the noise only ever adds time, and a step's own
    cost is what is left without it.
    """
    totals = []
    for k in range(1, len(IMPORT_STEPS) + 1):
        code = "; ".join(stmt for _, stmt in IMPORT_STEPS[:k] if stmt) or "pass"
        walls, cpus = [], []
        for _ in range(repeats + 1):
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            subprocess.run([sys.executable, "-c", code], env=environment(src), check=True, timeout=120)
            walls.append(time.perf_counter() - started)
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            cpus.append((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime))
        totals.append((min(walls[1:]), min(cpus[1:])))
    rows, previous = [], (0.0, 0.0)
    for (step, _), total in zip(IMPORT_STEPS, totals):
        rows.append({"step": step, "adds_s": total[0] - previous[0], "cumulative_s": total[0],
                     "adds_cpu_s": total[1] - previous[1], "cumulative_cpu_s": total[1]})
        previous = total
    return rows


def baseline_tree(rev: str, folder: Path) -> Path:
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "src"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(folder)], input=archive.stdout, check=True)
    return folder / "src"


def markdown(result: dict) -> str:
    m = result["machine"]
    baseline = [row["tree"] for row in result["commands"] if row["tree"] != "this tree"]
    lines = ["## Start-up of the `mlma` command", "",
             "`benchmarks/bench_cli.py` runs `mlma --help` and `mlma status` (a project of 10 simulated zones "
             "replayed tick by tick, its store a SQLite file"
             + (" and, in the row marked PostgreSQL, a database on the local PostgreSQL server"
                if any("PostgreSQL" in row["command"] for row in result["commands"]) else "")
             + ") in fresh processes, as the console script does"
             + (f", on this tree and on the `src` of {baseline[0]} (the baseline: the code before the change measured), run by run "
                "in turn" if baseline else "") + ".", "",
             f"Measured {m['date']} on {m['nproc']} CPUs ({m['cpu']}), Python {m['python']}, code {m['code']}; "
             f"load average {m['load_average_start']} at the start, {result['load_average_end']} at the end. "
             f"Median of {result['repeats']} runs each, after one warm-up run.", "",
             "| command | code | median wall | fastest | median CPU |", "| --- | --- | ---: | ---: | ---: |"]
    for row in result["commands"]:
        command = row["command"].replace(" (PostgreSQL)", "")
        shown = f"`{command}`" + (" (PostgreSQL)" if command != row["command"] else "")
        lines.append(f"| {shown} | {row['tree']} | {row['median_wall_s']:.2f} s | "
                     f"{row['min_wall_s']:.2f} s | {row['median_cpu_s']:.2f} s |")
    lines += ["", "What `mlma status` cannot avoid: one process per row imports everything up to that row "
              f"(fastest of {result['repeats']}):", "",
              "| import | adds (wall) | cumulative (wall) | adds (CPU) | cumulative (CPU) |",
              "| --- | ---: | ---: | ---: | ---: |"]
    for row in result["floor"]:
        lines.append(f"| {row['step']} | {row['adds_s']:.3f} s | {row['cumulative_s']:.3f} s | "
                     f"{row['adds_cpu_s']:.3f} s | {row['cumulative_cpu_s']:.3f} s |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="Timed runs per command and tree (median).")
    parser.add_argument("--baseline", help="Also time the src tree of this git revision, e.g. fa8998c.")
    parser.add_argument("--write-docs", action="store_true", help="Write the tables into docs/benchmarks.md.")
    parser.add_argument("--json", type=Path, help="Keep the raw measurements in this file.")
    parser.add_argument("--from-json", type=Path, help="Render saved measurements instead of measuring.")
    parser.add_argument("--postgres", help="Also time `mlma status` on a project whose store is a throw-away "
                        "schema on this PostgreSQL server, e.g. postgresql+psycopg://postgres@127.0.0.1:5432/bench.")
    args = parser.parse_args()
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    if args.from_json:
        text = markdown(json.loads(args.from_json.read_text()))
        print(text)
        if args.write_docs:
            write_section(REPO / "docs" / "benchmarks.md", BEGIN, END, text, append=True)
        return
    with tempfile.TemporaryDirectory(prefix="mlma-bench-cli-") as tmp:
        tmp = Path(tmp)
        machine = machine_info()
        print("building a 10-zone project ...", file=sys.stderr)
        project = make_project(tmp)
        trees = {"this tree": REPO / "src"}
        if args.baseline:
            trees[args.baseline] = baseline_tree(args.baseline, tmp)
        with contextlib.ExitStack() as stack:
            pg_project = None
            if args.postgres:
                from mlma.store.testing import postgres_schema

                print("building it on PostgreSQL ...", file=sys.stderr)
                pg_project = make_project(tmp, stack.enter_context(postgres_schema(args.postgres, "bench_cli")))
            commands = time_commands(trees, project, args.repeats, pg_project)
        result = {"machine": machine, "repeats": args.repeats, "commands": commands,
                  "floor": import_floor(REPO / "src", args.repeats), "load_average_end": load_average()}
    text = markdown(result)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    if args.write_docs:
        write_section(REPO / "docs" / "benchmarks.md", BEGIN, END, text, append=True)


if __name__ == "__main__":
    main()
