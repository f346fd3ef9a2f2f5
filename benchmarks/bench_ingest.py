"""Peak memory and time of `mlma ingest` on a large CSV file.

Generates a long-format CSV of hourly data (``unique_id, ds, y``; by default 5,000 streams x 56 days,
about 230 MB), creates a fresh project with a SQLite store, and runs ``mlma ingest FILE`` in a child
process under ``/usr/bin/time -v`` (peak resident set size of the child, "Maximum resident set size").
Where ``/usr/bin/time`` is missing, the child's RSS is polled with psutil every 50 ms instead (this can
miss a short peak). The figure goes to docs/benchmarks.md with ``--write-docs``.

    .venv/bin/python benchmarks/bench_ingest.py                 # 230 MB file, prints the table
    .venv/bin/python benchmarks/bench_ingest.py --quick         # 20 MB file, a smoke run
    .venv/bin/python benchmarks/bench_ingest.py --write-docs    # also writes the docs section

Options: ``--streams N``, ``--days N``, ``--workdir DIR`` (where the file and the project go; default a
temporary folder, removed afterwards unless ``--keep``), ``--postgres`` (also ingest into the PostgreSQL
server at ``MLMA_TEST_POSTGRES_URL``, in a schema of its own).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _docs import write_section  # noqa: E402
from _machine import machine_info  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
BEGIN, END = "<!-- ingest-results:begin -->", "<!-- ingest-results:end -->"


def write_csv(path: Path, n_streams: int, n_days: int, seed: int = 0) -> int:
    """A long CSV of hourly counts, written a day at a time so that the generator itself stays small."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"zone-{i:05d}" for i in range(n_streams)])
    level = rng.gamma(2.0, 40.0, n_streams)
    hours = np.arange(24)
    daily = 1.0 + 0.6 * np.sin((hours - 6) / 24 * 2 * np.pi)
    start = np.datetime64("2024-01-01T00:00")
    rows = 0
    with path.open("w") as out:
        out.write("unique_id,ds,y\n")
        for day in range(n_days):
            stamps = np.datetime_as_string(start + np.timedelta64(day * 24, "h") + hours.astype("timedelta64[h]"),
                                           unit="s")
            stamps = np.char.replace(stamps, "T", " ")
            y = rng.poisson(level[:, None] * daily[None, :]).astype(np.float64)
            lines = np.char.add(np.char.add(np.char.add(np.repeat(ids, 24), ","), np.tile(stamps, n_streams)),
                                np.char.add(",", y.ravel().astype(np.int64).astype(str)))
            out.write("\n".join(lines.tolist()))
            out.write("\n")
            rows += lines.size
    return rows


def measure(project: Path, data: Path) -> dict:
    """Run ``mlma ingest`` in a child process; its peak RSS (MB), wall seconds and output."""
    command = [sys.executable, "-m", "mlma.cli", "ingest", str(data), "--project", str(project)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    started = time.perf_counter()
    if Path("/usr/bin/time").exists():
        proc = subprocess.run(["/usr/bin/time", "-v", *command], capture_output=True, text=True, env=env)
        seconds = time.perf_counter() - started
        found = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
        peak = int(found.group(1)) / 1024 if found else float("nan")
        method = "/usr/bin/time -v"
    else:
        import psutil

        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        handle, peak = psutil.Process(child.pid), 0.0
        while child.poll() is None:
            try:
                peak = max(peak, handle.memory_info().rss / 2**20)
            except psutil.NoSuchProcess:
                break
            time.sleep(0.05)
        out, err = child.communicate()
        proc = subprocess.CompletedProcess(command, child.returncode, out, err)
        seconds = time.perf_counter() - started
        method = "psutil, polled every 50 ms"
    if proc.returncode != 0:
        raise RuntimeError(f"mlma ingest failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr[-3000:]}")
    return {"peak_mb": peak, "seconds": seconds, "method": method, "output": proc.stdout.strip()}


def make_project(root: Path, db: str | None) -> Path:
    from mlma.project import init_project

    init_project(root, db=db, model="seasonal-naive")
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=5_000)
    parser.add_argument("--days", type=int, default=56)
    parser.add_argument("--quick", action="store_true", help="500 streams x 56 days (about 23 MB)")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--postgres", action="store_true")
    parser.add_argument("--write-docs", action="store_true")
    args = parser.parse_args()
    streams = 500 if args.quick else args.streams
    work = args.workdir or Path(tempfile.mkdtemp(prefix="mlma-bench-ingest-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / f"hourly-{streams}x{args.days}.csv"
    try:
        if not data.exists():
            print(f"writing {data} ...", file=sys.stderr)
            rows = write_csv(data, streams, args.days)
        else:
            rows = sum(1 for _ in data.open()) - 1
        size_mb = data.stat().st_size / 1e6
        results = []
        stores = [("SQLite", None)]
        if args.postgres:
            stores.append(("PostgreSQL", "postgres"))
        for name, kind in stores:
            project = work / f"project-{name.lower()}"
            shutil.rmtree(project, ignore_errors=True)
            if kind == "postgres":
                from mlma.store.testing import postgres_schema, postgres_url

                with postgres_schema(postgres_url()) as url:
                    make_project(project, url)
                    result = measure(project, data)
            else:
                make_project(project, None)
                result = measure(project, data)
            print(f"{name}: peak {result['peak_mb']:.0f} MB, {result['seconds']:.1f} s", file=sys.stderr)
            results.append((name, result))
        lines = [f"File: {rows:,} rows ({streams:,} hourly streams x {args.days} days), {size_mb:.0f} MB of CSV.",
                 "", "| store | peak RSS of `mlma ingest` | wall time | measured with |", "| --- | ---: | ---: | --- |"]
        for name, r in results:
            lines.append(f"| {name} | {r['peak_mb']:,.0f} MB | {r['seconds']:.1f} s | {r['method']} |")
        info = machine_info()
        lines += ["", f"Measured {info['date']} on {info['nproc']} CPUs ({info['cpu']}), Python {info['python']}, "
                      f"pandas {info['packages']['pandas']}, code {info['code']}, load average "
                      f"{info['load_average_start']}."]
        table = "\n".join(lines)
        print(table)
        for _, r in results:
            print(r["output"], file=sys.stderr)
        if args.write_docs:
            write_section(DOCS, BEGIN, END, table, append=True)
    finally:
        if args.workdir is None and not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
