"""How fast the REST API answers at 100,000 streams: the stream list, the engineer's queue, the fleet summary.

Fills a store (a SQLite file by default; ``--url`` for PostgreSQL) with a synthetic fleet written the way
the live tick writes it (:func:`mlma.api.sample.build_sample_fleet`: ``Store.write_tick`` in bulk, one
champion per stream in the registry), adds open escalations spread over kinds and cities, then times the
endpoints with FastAPI's in-process ``TestClient`` (HTTP parsing and JSON included, no network). Each
endpoint is asked ``--repeats`` times after one warm-up call; the median and the slowest are reported.

Usage::

    .venv/bin/python benchmarks/bench_api.py                    # 100,000 streams, SQLite, about 2 minutes
    .venv/bin/python benchmarks/bench_api.py --streams 10000 --repeats 3
    .venv/bin/python benchmarks/bench_api.py --url postgresql+psycopg://postgres@127.0.0.1:5432/test?options=-csearch_path%3Dbench
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
from _machine import machine_info  # noqa: E402


def build(url: str, artifacts: Path, n_streams: int, n_ticks: int, n_cities: int, escalations: int) -> dict:
    from mlma.api.auth import create_token
    from mlma.api.sample import build_sample_fleet
    from mlma.escalations import ESCALATION_KINDS, Escalation
    from mlma.store import Store

    store = Store.create(url)
    started = time.perf_counter()
    fleet = build_sample_fleet(store, artifacts, n_streams=n_streams, n_ticks=n_ticks, n_cities=n_cities,
                               series_streams=200, seed=1)
    fill_seconds = time.perf_counter() - started
    # Open escalations over kinds and cities at the last ticks, as a busy fleet would have them.
    rng = np.random.default_rng(2)
    streams = rng.choice(n_streams, size=escalations, replace=False)
    kinds = [k for k in ESCALATION_KINDS if k != "budget"]
    items = [Escalation(int(s), int(n_ticks - 1 - rng.integers(0, 3)), kinds[int(rng.integers(0, len(kinds)))],
                        int(rng.integers(1, 4)), f"synthetic escalation of stream {int(s)}") for s in streams]
    store.add_escalations(items)
    _, token = create_token(store, "bench", "viewer", by="user:bench")
    return {"store": store, "fleet": fleet, "token": token, "fill_seconds": fill_seconds}


def time_endpoints(client, token: str, fleet, repeats: int) -> list[dict]:
    headers = {"Authorization": f"Bearer {token}"}
    uid = fleet.unique_ids[len(fleet.unique_ids) // 2]
    city = fleet.cities[len(fleet.cities) // 2]
    deep = len(fleet.unique_ids) // 50 // 2
    cases = [
        ("fleet summary", "/api/fleet"),
        ("streams, page 1 (by name)", "/api/streams"),
        (f"streams, page {deep:,} (by name)", f"/api/streams?page={deep}"),
        ("streams, sorted by loss ratio", "/api/streams?sort=-effect"),
        ("streams, sorted by size (reference loss)", "/api/streams?sort=-reference_loss"),
        ("streams, verdict degraded", "/api/streams?verdict=degraded"),
        (f"streams, city={city}", f"/api/streams?attr=city={city}"),
        ("streams, search", f"/api/streams?q={uid[-4:]}"),
        ("queue (grouped by city)", "/api/escalations"),
        ("queue (by kind and tick only)", "/api/escalations?group_by="),
        ("one stream's page", f"/api/streams/{uid}"),
        ("audit log, page 1", "/api/audit"),
        ("attribute values (group picker)", "/api/attributes"),
    ]
    rows = []
    for name, path in cases:
        warm = client.get(path, headers=headers)
        assert warm.status_code == 200, (path, warm.status_code, warm.text[:300])
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            response = client.get(path, headers=headers)
            times.append(time.perf_counter() - t0)
            assert response.status_code == 200
        rows.append({"endpoint": name, "path": path, "median_ms": 1000 * statistics.median(times),
                     "max_ms": 1000 * max(times), "bytes": len(response.content)})
        print(f"  {name:45s} {rows[-1]['median_ms']:8.1f} ms", file=sys.stderr)
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=100_000)
    parser.add_argument("--ticks", type=int, default=6, help="ticks of verdicts written")
    parser.add_argument("--cities", type=int, default=200)
    parser.add_argument("--escalations", type=int, default=5_000, help="extra open escalations")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--url", help="store URL (default: a SQLite file in a temporary folder)")
    parser.add_argument("--json", type=Path, help="also write the measurements here")
    args = parser.parse_args(argv)

    from fastapi.testclient import TestClient

    from mlma.api import create_app

    with tempfile.TemporaryDirectory() as folder:
        url = args.url or f"sqlite:///{folder}/mlma.db"
        print(f"filling {url.split('?')[0]} with {args.streams:,} streams x {args.ticks} ticks ...", file=sys.stderr)
        built = build(url, Path(folder) / "artifacts", args.streams, args.ticks, args.cities, args.escalations)
        print(f"  filled in {built['fill_seconds']:.1f} s", file=sys.stderr)
        client = TestClient(create_app(built["store"], artifacts=Path(folder) / "artifacts"))
        rows = time_endpoints(client, built["token"], built["fleet"], args.repeats)
        backend = built["store"].dialect
        built["store"].close()
    print(f"\nAPI response times, {args.streams:,} streams, {args.ticks} ticks of verdicts, {args.escalations:,} "
          f"extra open escalations, {backend}; median of {args.repeats} (in-process TestClient)\n")
    print("| endpoint | median | slowest | response |")
    print("| --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['endpoint']} (`{r['path']}`) | {r['median_ms']:.0f} ms | {r['max_ms']:.0f} ms | "
              f"{r['bytes'] / 1024:.0f} kB |")
    machine = machine_info()
    print(f"\nfill (sample fleet via write_tick): {built['fill_seconds']:.0f} s; {machine['nproc']} x "
          f"{machine['cpu']}, Python {machine['python']}, {machine['date']}, code {machine['code'].split(' ')[0]}")
    if args.json:
        args.json.write_text(json.dumps({"streams": args.streams, "ticks": args.ticks, "backend": backend,
                                         "fill_seconds": built["fill_seconds"], "rows": rows,
                                         "machine": machine_info()}, indent=2, default=str))


if __name__ == "__main__":
    main()
