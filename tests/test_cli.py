"""End-to-end runs of the installed ``mlma`` command, as a user would type them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

MLMA = str(Path(sys.executable).parent / "mlma")


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([MLMA, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_demo_runs_end_to_end_on_a_tiny_platform(tmp_path):
    done = run("demo", "--zones", "8", "--days", "40", "--out", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    out = tmp_path / "out"
    summary = json.loads((out / "summary.json").read_text())
    policies = [p["policy"] for p in summary["policies"] if not p["frontier_only"]]
    assert policies == ["never", "periodic:7", "always", "mlma", "adwin", "page-hinkley"]
    # The demo adds the frontier's schedules and gives every policy its gap to them.
    assert len(summary["frontier"]) > 3 and summary["policies"][3]["gap_pct"] is not None
    assert all(p["mae"] is not None and p["mae"] > 0 for p in summary["policies"])
    assert (out / "report.html").exists() and (out / "platform.parquet").exists()
    assert "mlma" in done.stdout and "MAE" in done.stdout


@pytest.mark.slow
def test_simulate_then_backtest_a_file(tmp_path):
    sim = run("simulate", "--zones", "6", "--days", "35", "--seed", "3", "--out", "zones.csv", cwd=tmp_path)
    assert sim.returncode == 0, sim.stderr
    assert (tmp_path / "zones.events.csv").exists()
    bt = run("backtest", "--data", "zones.csv", "--policies", "never,periodic:7,always,mlma",
             "--model", "seasonal-naive", "--out", "res", cwd=tmp_path)
    assert bt.returncode == 0, bt.stdout + bt.stderr
    summary = json.loads((tmp_path / "res" / "summary.json").read_text())
    row = {p["policy"]: p for p in summary["policies"]}
    assert row["never"]["retrains"] == 0
    assert "detection_recall" in row["mlma"]
    per_stream = pd.read_csv(tmp_path / "res" / "per_stream.csv")
    assert per_stream["unique_id"].nunique() == 6
    assert "dropped" not in bt.stdout
    # Bad rows are dropped, as ingest drops them, and the console says so (it was only in validation.csv).
    frame = pd.read_csv(tmp_path / "zones.csv", dtype={"y": object})
    frame.loc[frame.index[:40], "y"] = "n/a"
    frame.to_csv(tmp_path / "bad.csv", index=False)
    bt = run("backtest", "--data", "bad.csv", "--policies", "never", "--model", "seasonal-naive", "--out", "bad",
             cwd=tmp_path)
    assert bt.returncode == 0, bt.stdout + bt.stderr
    said = " ".join(bt.stdout.split())
    assert "warning: 40 row(s) of the data were dropped and left out of the backtest (non-finite-target 40)" in said


@pytest.mark.slow
def test_backtest_on_bundled_real_data_with_custom_columns(tmp_path):
    from mlma.datasets import load_dataset

    frame = load_dataset("aus-retail")
    keep = frame["unique_id"].drop_duplicates().head(12)
    frame = frame[frame["unique_id"].isin(keep)].rename(columns={"unique_id": "series", "ds": "month",
                                                                 "y": "turnover"})
    frame.to_csv(tmp_path / "retail.csv", index=False)
    bt = run("backtest", "--data", "retail.csv", "--policies", "never,periodic:2,always,mlma",
             "--model", "ridge", "--id-col", "series", "--time-col", "month", "--target-col", "turnover",
             "--out", "res", cwd=tmp_path)
    assert bt.returncode == 0, bt.stdout + bt.stderr
    summary = json.loads((tmp_path / "res" / "summary.json").read_text())
    assert summary["config"]["freq"] == "MS" and summary["config"]["n_streams"] == 12


def test_bad_input_gets_a_clear_error_naming_the_column(tmp_path):
    pd.DataFrame({"unique_id": ["a"], "when": ["2025-01-01"], "y": [1.0]}).to_csv(tmp_path / "bad.csv",
                                                                               index=False)
    bt = run("backtest", "--data", "bad.csv", "--out", "res", cwd=tmp_path)
    assert bt.returncode == 2
    assert "ds" in bt.stdout and "bad.csv" in bt.stdout
    assert not (tmp_path / "res").exists()


def test_unknown_policy_is_rejected(tmp_path):
    pd.DataFrame({"unique_id": ["a"] * 3, "ds": ["2025-01-01", "2025-01-02", "2025-01-03"],
                  "y": [1.0, 2, 3]}).to_csv(tmp_path / "d.csv", index=False)
    bt = run("backtest", "--data", "d.csv", "--policies", "never,sometimes", cwd=tmp_path)
    assert bt.returncode == 2 and "unknown policy" in bt.stdout


# Which modules a command loads, seen from inside the process that runs it: the guard on start-up time that
# does not depend on the machine's speed (benchmarks/bench_cli.py measures the time itself).
RUN_AND_LIST_MODULES = """
import json, sys
sys.argv = ["mlma", *json.loads(sys.argv[1])]
from mlma.cli import app
try:
    app()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print("\\nMODULES " + json.dumps({"code": code, "modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def modules_loaded_by(*args: str, cwd: Path) -> tuple[str, set[str]]:
    done = subprocess.run([sys.executable, "-c", RUN_AND_LIST_MODULES, json.dumps(args)], cwd=cwd,
                          capture_output=True, text=True, timeout=300)
    output, _, listing = done.stdout.rpartition("\nMODULES ")
    assert listing, done.stdout + done.stderr
    result = json.loads(listing)
    assert result["code"] in (0, None), output + done.stderr
    return output, set(result["modules"])


def test_help_loads_neither_the_web_stack_nor_the_data_stack(tmp_path):
    output, modules = modules_loaded_by("--help", cwd=tmp_path)
    assert "serve" in output and "status" in output and "backtest" in output   # every command is listed
    heavy = {"fastapi", "starlette", "uvicorn", "sqlalchemy", "alembic", "pandas", "numpy", "scipy", "sklearn",
             "lightgbm", "matplotlib", "prometheus_client"}
    assert not modules & heavy, f"`mlma --help` imports {sorted(modules & heavy)}"


def test_status_before_any_tick_asks_the_store_but_loads_no_statistics_models_or_web_stack(tmp_path):
    ds = pd.date_range("2025-01-01", periods=72, freq="h")
    pd.DataFrame({"unique_id": "a", "ds": ds, "y": range(72)}).to_csv(tmp_path / "a.csv", index=False)
    assert run("init", "proj", "--model", "ridge", cwd=tmp_path).returncode == 0
    assert run("ingest", str(tmp_path / "a.csv"), cwd=tmp_path / "proj").returncode == 0
    output, modules = modules_loaded_by("status", cwd=tmp_path / "proj")
    assert "streams" in output and "next tick due" in output
    assert {"sqlalchemy", "pandas"} <= modules   # no tick ran: the clock is the live agent's to tell
    heavy = {"fastapi", "starlette", "uvicorn", "scipy", "sklearn", "lightgbm", "matplotlib", "river"}
    assert not modules & heavy, f"`mlma status` imports {sorted(modules & heavy)}"


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request) -> str | None:
    """None for the project's default SQLite file, else the URL of a new PostgreSQL schema."""
    if request.param == "sqlite":
        yield None
        return
    from mlma.store.testing import postgres_schema

    with postgres_schema(request.getfixturevalue("postgres_server"), prefix="status") as url:
        yield url


def _ticked_project(tmp_path: Path, days: int, db: str | None = None) -> Path:
    """A seasonal-naive project of two hourly streams over ``days`` days, every due tick run; its store at
    ``db`` (default: a SQLite file in the project)."""
    ds = pd.date_range("2025-01-01", periods=24 * days, freq="h")
    frame = pd.concat([pd.DataFrame({"unique_id": uid, "ds": ds, "y": [(h % 24) * k for h in range(len(ds))]})
                       for uid, k in (("a", 1.0), ("b", 2.0))])
    frame.to_csv(tmp_path / "a.csv", index=False)
    assert run("init", "proj", "--model", "seasonal-naive", *(["--db", db] if db else []),
               cwd=tmp_path).returncode == 0
    project = tmp_path / "proj"
    assert run("ingest", str(tmp_path / "a.csv"), cwd=project).returncode == 0
    done = run("tick", "--all", cwd=project)
    assert done.returncode == 0, done.stdout + done.stderr
    return project


def test_status_after_a_tick_reads_the_store_without_sqlalchemy_pandas_or_alembic(tmp_path, store_url):
    project = _ticked_project(tmp_path, days=30, db=store_url)
    output, modules = modules_loaded_by("status", cwd=project)
    assert "ticks done" in output and "next tick due" in output and "intact: tick" in output
    heavy = {"sqlalchemy", "alembic", "pandas", "numpy", "scipy", "sklearn", "fastapi"}
    assert not modules & heavy, f"`mlma status` imports {sorted(modules & heavy)}"
    assert ("psycopg" in modules) == (store_url is not None)   # a SQLite store's status does not import it


STATUS_THROUGH_THE_STORE = """
import sys
sys.argv = ["mlma", "status"]
import mlma.store.glance
mlma.store.glance.glance = lambda url: None   # as for a store the quick path does not read
from mlma.cli import app
app()
"""


def _status_both_ways(project: Path) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
    """``mlma status`` through the quick path, and through the store and live agent."""
    quick = run("status", cwd=project)
    full = subprocess.run([sys.executable, "-c", STATUS_THROUGH_THE_STORE], cwd=project, capture_output=True,
                          text=True, timeout=300)
    return quick, full


def test_status_quick_path_prints_what_the_store_and_live_agent_say(tmp_path, store_url):
    project = _ticked_project(tmp_path, days=30, db=store_url)

    def both() -> tuple[str, str]:
        quick, full = _status_both_ways(project)
        assert quick.returncode == 0 and full.returncode == 0, quick.stderr + full.stderr
        return quick.stdout, full.stdout

    quick, full = both()
    assert quick == full and "is not complete" in quick   # every complete tick ran
    # Half a day more: the next tick is still incomplete; a day more: it is due.
    for hours, due in ((12, False), (24, True)):
        ds = pd.date_range("2025-01-31", periods=hours, freq="h")
        pd.DataFrame({"unique_id": "a", "ds": ds, "y": 1.0}).to_csv(tmp_path / f"more{hours}.csv", index=False)
        assert run("ingest", str(tmp_path / f"more{hours}.csv"), cwd=project).returncode == 0
        quick, full = both()
        assert quick == full
        assert ("is not complete" not in quick) == due, quick
    # Escalations (one silenced until an hour ago counts as open again) and a held lock, compared with the
    # database's clock on PostgreSQL.
    import datetime as dt

    import sqlalchemy as sa

    from mlma.escalations import Escalation
    from mlma.project import load_config
    from mlma.store import Store
    from mlma.store import schema as S

    now = dt.datetime.now(dt.timezone.utc)
    with Store.open(load_config(project).store_url) as store:
        ids = store.add_escalations([Escalation(0, 30, "data-quality", 2, f"flat {i}") for i in range(3)])
        store.set_escalation_status(ids[:1], "silenced", by="user:test", silenced_until=now - dt.timedelta(hours=1))
        store.set_escalation_status(ids[1:2], "silenced", by="user:test", silenced_until=now + dt.timedelta(hours=1))
        lease = store.acquire_lock("another-agent", ttl=600)
        quick, full = both()
        assert quick == full
        assert "open escalations │ 2 " in quick and "held by another-agent until" in quick, quick
        assert "no longer runs" not in quick, quick
        # A holder on this host that was killed (kill -9 mid-tick): status said it held the lock, where the next
        # tick here takes it over at once.
        from mlma.lock_holder import agent_identity

        gone = subprocess.Popen([sys.executable, "-c", "pass"])
        gone.wait()
        me = agent_identity()
        lease.release()
        dead_lease = store.acquire_lock(me.split(":")[0] + f":{gone.pid}" + me.partition(f":{os.getpid()}")[2],
                                        ttl=600)
        quick, full = both()
        assert quick == full and "its process no longer runs" in quick, quick
        dead_lease.release()
        store.acquire_lock("another-agent", ttl=600)
        assert "data kept │ all │" in " ".join(quick.split())
        cut = store.oldest_ds() + pd.Timedelta(days=1)
        store.prune(cut, by="user:test")
        toml = project / "mlma.toml"
        toml.write_text(toml.read_text().replace('keep = ""', 'keep = "400D"'))
        quick, full = both()
        assert quick == full, (quick, full)
        assert f"data kept │ from {cut:%Y-%m-%d %H:%M} ([store] keep = '400D') │" in " ".join(quick.split()), quick
        # A prune killed part way (its time recorded, older rows not all deleted yet) was shown as done; a
        # [store] keep that every command reading the values refuses was shown as in force by the quick path.
        later = cut + pd.Timedelta(hours=6)
        with store.engine.begin() as conn:
            conn.execute(sa.update(S.retention).values(kept_from=later.to_pydatetime()))
        quick, full = both()
        assert quick == full, (quick, full)
        assert f"from {later:%Y-%m-%d %H:%M}; a prune stopped part way: older rows remain" in quick, quick
        assert f"--before {later:%Y-%m-%dT%H:%M:%S}" in quick, quick
        store.prune(later, by="user:test")
        quick, full = both()
        assert quick == full and "stopped part way" not in quick, quick
        toml.write_text(toml.read_text().replace('keep = "400D"', 'keep = "1M"'))
        for refused in _status_both_ways(project):
            assert refused.returncode == 2, refused.stdout
            assert "[store] keep must be a whole number of days or weeks" in " ".join(refused.stdout.split())
        toml.write_text(toml.read_text().replace('keep = "1M"', 'keep = "400D"'))
        # A tick before the first done one (a start-up that died and then moved) is not unfinished work; one
        # after the last done tick is.
        done = store.ticks()["tick"]
        store.begin_tick(int(done.min()) - 1)
        quick, full = both()
        assert quick == full and "unfinished tick" not in quick, quick
        store.begin_tick(int(done.max()) + 1)
        quick, full = both()
    assert quick == full and f"tick {int(done.max()) + 1}: running, 1 attempt(s)" in quick, quick


def test_status_on_postgresql_fails_as_the_store_does(tmp_path, postgres_server):
    """Unreachable, silent, without mlma's schema, at an older schema revision: ``mlma status`` says it in
    the store's words whether the quick path or the store answers."""
    import socket

    from mlma.store import Store
    from mlma.store.testing import postgres_schema

    assert run("init", "proj", "--model", "seasonal-naive", cwd=tmp_path).returncode == 0
    project = tmp_path / "proj"
    toml = project / "mlma.toml"
    template = toml.read_text()
    assert 'url = "sqlite:///mlma.db"' in template

    def status_on(url: str) -> str:
        toml.write_text(template.replace('url = "sqlite:///mlma.db"', f'url = "{url}"'))
        quick, full = _status_both_ways(project)
        assert (quick.returncode, quick.stdout, quick.stderr) == (full.returncode, full.stdout, full.stderr)
        assert quick.returncode == 5 and "Traceback" not in quick.stderr, quick.stdout + quick.stderr
        return quick.stderr

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()                                         # nothing listens on the port now
    refused = status_on(f"postgresql+psycopg://postgres@127.0.0.1:{port}/test")
    assert refused.startswith("error: the PostgreSQL store cannot be used now: connection failed:"), refused
    silent = socket.socket()                               # accepts TCP, never speaks
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        fired = status_on(f"postgresql+psycopg://postgres@127.0.0.1:{silent.getsockname()[1]}/test"
                          f"?connect_timeout=2")
    finally:
        silent.close()
    assert "PostgreSQL connect_timeout (2 s) fired on postgresql+psycopg://postgres@127.0.0.1:" in fired, fired
    assert "error: the PostgreSQL store cannot be used now: connection timeout expired" in fired, fired
    with postgres_schema(postgres_server, prefix="status") as url:
        assert "has no mlma schema; create it with" in status_on(url)
        Store.upgrade(url, "0005")
        assert "has schema revision 0005, older than the revision" in status_on(url)


@pytest.mark.parametrize("start", [False, True])
def test_the_tick_line_counts_failed_forecasts_only_when_there_are_some(start):
    from mlma.live import TickResult
    from mlma.store import TickSummary

    def line(failures: int) -> str:
        summary = TickSummary(n_streams=40, verdicts={"degraded": 3}, retrains=2, fit_failures=1,
                              forecast_failures=failures)
        return str(TickResult(12, start, 40, summary, [7, 8], 1.25))

    assert "failed forecasts" not in line(0)
    with_failures = line(3)
    assert ", 3 failed forecasts" in with_failures
    assert with_failures.replace(", 3 failed forecasts", "") == line(0)
    if not start:
        assert with_failures.startswith("tick 12: 40 streams, 3 degraded, 2 re-trained, 0 promoted, 0 rejected, "
                                        "1 failed fits, 3 failed forecasts, 2 escalations, 0 resolved")


@pytest.mark.slow
def test_backtest_counts_labour_in_queue_items_grouped_by_an_attribute(tmp_path):
    """On 60 simulated zones a city-wide outage raises 20 data-quality escalations on one tick: one queue item
    by the simulator's cities (its streams table beside the data), two when a file of attributes splits those
    zones between two regions, one again with no grouping attribute (kind and tick only)."""
    assert run("simulate", "--zones", "60", "--days", "40", "--seed", "2", "--out", "p.parquet",
               cwd=tmp_path).returncode == 0

    def backtest(out: str, *extra: str) -> tuple[dict, pd.DataFrame]:
        done = run("backtest", "--data", "p.parquet", "--model", "seasonal-naive", "--policies", "mlma",
                   "--no-frontier", "--bootstrap", "0", "--out", out, *extra, cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        summary = json.loads((tmp_path / out / "summary.json").read_text())
        return summary, pd.read_csv(tmp_path / out / "escalations.csv")

    summary, log = backtest("by-city")
    outage = log[log["kind"] == "data-quality"]
    assert len(outage) == 20 and outage["tick"].nunique() == 1
    assert summary["config"]["queue_group_by"] == "city" and summary["config"]["queue_grouped_streams"] == 60
    row = summary["policies"][0]
    days = row["stream_days"]
    assert row["escalations_per_1k_stream_days"] == round(1000 * len(log) / days, 4)
    assert row["queue_items_per_1k_stream_days"] == round(1000 * log["queue_item"].nunique() / days, 4)
    assert outage["queue_item"].nunique() == 1
    zones = sorted(pd.read_csv(tmp_path / "p.streams.csv")["unique_id"])
    pd.DataFrame({"unique_id": zones, "region": ["north", "south"] * 30}).to_csv(tmp_path / "regions.csv",
                                                                                 index=False)
    _, by_region = backtest("by-region", "--attributes", "regions.csv", "--group-by", "region")
    assert by_region.loc[by_region["kind"] == "data-quality", "queue_item"].nunique() == 2
    summary, flat = backtest("flat", "--group-by", "")
    assert summary["config"]["queue_grouped_streams"] == 0
    assert flat["queue_item"].nunique() == flat.groupby(["kind", "tick"]).ngroups
    bad = run("backtest", "--data", "p.parquet", "--model", "seasonal-naive", "--policies", "mlma",
              "--attributes", "regions.csv", "--out", "bad", cwd=tmp_path)
    assert bad.returncode == 2 and "regions.csv: no column 'city' to group the queue by" in bad.stdout.replace(
        "\n", "")
