"""How long a registry's first version prune keeps other writers waiting (docs/benchmarks.md, "Version prune").

A store gets ``--streams`` streams with ``--versions`` model versions each (each the champion in turn, as a
fleet re-trained that many times leaves it). Then a writer thread makes one small write transaction every
0.2 s (it registers a new stream, as an ingest of a new zone does) and its waits are recorded: first for
``--idle`` seconds with nothing else running (the baseline), then while the first prune keeping ``--keep``
versions per stream marks the rest (:meth:`mlma.store.version_retention.VersionRetention.mark`). Reported: the
prune's time, the longest wait of a write during it against the median idle write (the ratio), and whether a
write waited past the store's lock timeout (SQLite: ``?timeout=``, 60 s by default), where ingests and actions
fail. On SQLite a write transaction holds the whole database, so this is the case that matters.

Usage::

    .venv/bin/python benchmarks/bench_version_prune.py                           # 20,000 x 10 on SQLite
    .venv/bin/python benchmarks/bench_version_prune.py --streams 100000 --write-docs
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from _docs import write_section  # noqa: E402
from _machine import load_average, machine_info  # noqa: E402

from mlma.store import NewVersion, Store  # noqa: E402
from mlma.store.records import ChampionMove  # noqa: E402
from mlma.store.version_retention import VersionRetention  # noqa: E402


def build(store: Store, streams: int, versions: int) -> float:
    started = time.perf_counter()
    ids = [int(s) for s in store.stream_ids([f"zone-{i:06d}" for i in range(streams)])]
    for v in range(versions):
        with store.transaction() as tx:
            numbers = tx.record_versions([NewVersion(stream=s, artifact_sha256=f"{s:032x}{v:032x}",
                                                     artifact_bytes=1_000, spec="ridge") for s in ids])
            tx.move_champions([ChampionMove(stream=s, version=int(n), by="agent") for s, n in zip(ids, numbers)])
    return time.perf_counter() - started


class Writer(threading.Thread):
    """One small write every ``every`` seconds until stopped; keeps each write's seconds."""

    def __init__(self, store: Store, prefix: str, every: float = 0.2) -> None:
        super().__init__(daemon=True)
        self.store, self.prefix, self.every = store, prefix, every
        self.waits: list[float] = []
        #: Writes that failed (the store's lock timeout: "database is locked"), with the error.
        self.failed: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        i = 0
        while not self.stop.is_set():
            started = time.perf_counter()
            try:
                self.store.stream_ids([f"{self.prefix}-{i}"])
            except Exception as exc:  # noqa: BLE001 - what an ingest or an action would meet, counted
                self.failed.append(f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
            self.waits.append(time.perf_counter() - started)
            i += 1
            self.stop.wait(self.every)


def measure(url: str, streams: int, versions: int, keep: int, idle: float) -> dict:
    with Store.create(url) as store:
        built = build(store, streams, versions)
        writer = Writer(store, "idle")
        writer.start()
        time.sleep(idle)
        writer.stop.set()
        writer.join()
        baseline = statistics.median(writer.waits)
        writer = Writer(store, "busy")
        writer.start()
        started = time.perf_counter()
        plan = VersionRetention(store).mark(keep, by="agent", reason="benchmark")
        prune = time.perf_counter() - started
        writer.stop.set()
        writer.join()
    longest = max(writer.waits)
    return {"build_s": built, "prune_s": prune, "marked": len(plan.pairs), "writes": len(writer.waits),
            "failed": len(writer.failed), "idle_write_s": baseline, "longest_write_s": longest,
            "ratio": longest / baseline}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=20_000)
    parser.add_argument("--versions", type=int, default=10)
    parser.add_argument("--keep", type=int, default=3)
    parser.add_argument("--idle", type=float, default=5.0, help="seconds of writes with nothing else running")
    parser.add_argument("--write-docs", action="store_true", help="write the result into docs/benchmarks.md")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        r = measure(f"sqlite:///{folder}/store.db", args.streams, args.versions, args.keep, args.idle)
    table = ("| store | versions | marked | prune | writes during it (failed) | median idle write | longest write "
             "during it | ratio |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n"
             f"| SQLite | {args.streams * args.versions:,} ({args.streams:,} x {args.versions}) | {r['marked']:,} | "
             f"{r['prune_s']:.1f} s | {r['writes']} ({r['failed']}) | {r['idle_write_s'] * 1000:.1f} ms | "
             f"{r['longest_write_s']:.2f} s | {r['ratio']:,.0f} |")
    print(table)
    print(f"(store built in {r['build_s']:.0f} s)")
    if args.write_docs:
        info = machine_info()
        text = (f"## The first version prune (`[registry] keep_versions`, `mlma prune --versions`)\n\n"
                f"{args.streams:,} streams with {args.versions} versions each, the first prune keeping "
                f"{args.keep}; a writer registering a stream every 0.2 s. Measured {info['date']} at code "
                f"{info['code']} ({info['nproc']} CPUs, load {load_average()} at the end) with "
                f"`benchmarks/bench_version_prune.py --streams {args.streams}`.\n\n{table}\n")
        write_section(HERE.parent / "docs" / "benchmarks.md", "<!-- bench_version_prune:begin -->",
                      "<!-- bench_version_prune:end -->", text, append=True)

if __name__ == "__main__":
    main()
