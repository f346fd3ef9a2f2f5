"""Hostile operations: damaged artifacts, killed processes, a database that is down, hangs, is locked, read-only
or full. Each test fails on a mlma without the protection, and after each fault the real data that follows
still ingests, ticks and forecasts for every stream."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlma.control import ActionError, Operations
from mlma.live import LiveAgent
from mlma.project import load_config
from mlma.registry import ModelRegistry
from mlma.simulate import simulate_platform
from mlma.store import Store
from test_live import FIRST_TICK, day_chunks, make_project, run_cli


@pytest.fixture(scope="module")
def platform() -> pd.DataFrame:
    """12 zones, 40 days of hourly orders with events."""
    return simulate_platform(12, 40, seed=11, event_rate=3).data


@pytest.fixture()
def project(tmp_path, platform):
    """A project after start-up and two ticks (inline fits), with the rest of the days to come."""
    root = make_project(tmp_path / "p")
    config = load_config(root)
    store = Store.open(config.store_url)
    chunks = list(day_chunks(platform, FIRST_TICK))
    live = LiveAgent(config, store=store)
    for chunk in chunks[:3]:
        store.ingest_frame(chunk, f"day-{chunk['ds'].min()}")
        live.step()
    ops = Operations(store, artifacts=config.artifacts_dir)
    yield root, store, live, ops, iter(chunks[3:])
    live.close()
    store.close()


def tick_next_day(store: Store, live: LiveAgent, chunks) -> int:
    chunk = next(chunks)
    store.ingest_frame(chunk, f"day-{chunk['ds'].min()}")
    return live.step().tick


def corrupt(registry: ModelRegistry, uid: str, version: int) -> None:
    """Flip bytes in the middle of a version's artifact, as a bad disk or a careless hand would."""
    path = registry.artifacts.path(registry.version(uid, version).artifact_sha256)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def every_stream_forecast(store: Store, tick: int) -> set[str]:
    return set(store.streams()["unique_id"]) - set(store.forecasts(tick)["unique_id"])


def fresh(store: Store, config) -> LiveAgent:
    """A new agent process's view (nothing loaded yet), as the next `mlma tick` would have."""
    return LiveAgent(config, store=store)


# -- 1. damaged artifacts ----------------------------------------------------------------------------------------
def test_a_damaged_one_version_champion_is_refitted_and_escalated_while_the_fleet_ticks_on(project):
    root, store, live, ops, chunks = project
    config = load_config(root)
    uid = store.streams()["unique_id"].iloc[3]
    assert [v.version for v in ops.registry.versions(uid)] == [1]
    corrupt(ops.registry, uid, 1)
    live.close()
    with fresh(store, config) as agent:
        tick = tick_next_day(store, agent, chunks)
        assert store.ticks().set_index("tick").loc[tick, "status"] == "done"
        assert not every_stream_forecast(store, tick)             # every stream, the damaged one included
        champion = ops.registry.champion(uid)
        assert champion.version == 2 and "cannot be loaded" in champion.check["why"]
        ops.registry.load(uid)                                    # the new version loads
        escalation = store.escalations(streams=[uid]).set_index("kind").loc["artifact-broken"]
        assert "ArtifactCorrupted" in escalation["message"] and "re-fitted" in escalation["message"]
        assert "artifact-broken" in set(store.audit_log()["action"])
        for _ in range(2):                                        # and it keeps going
            tick = tick_next_day(store, agent, chunks)
            assert not every_stream_forecast(store, tick)


def test_a_damaged_champion_falls_back_to_the_previous_good_version(project):
    root, store, live, ops, chunks = project
    config = load_config(root)
    uid = store.streams()["unique_id"].iloc[5]
    ops.force_retrain([uid], direct=True, by="user:ana")
    tick_next_day(store, live, chunks)
    assert ops.registry.champion(uid).version == 2
    corrupt(ops.registry, uid, 2)
    live.close()
    with fresh(store, config) as agent:
        tick = tick_next_day(store, agent, chunks)
        assert not every_stream_forecast(store, tick)
        assert ops.registry.champion(uid).version == 1
        last = ops.registry.history(uid)[-1]
        assert (last.action, last.moved_by) == ("rollback", "agent") and "version 2 cannot be loaded" in last.reason
        forecasts = store.forecasts(tick).set_index("unique_id")
        assert set(forecasts.loc[uid, "model_version"]) == {1}
        assert "artifact-broken" in set(store.escalations(streams=[uid])["kind"])
        tick = tick_next_day(store, agent, chunks)
        assert not every_stream_forecast(store, tick)


def test_roll_back_or_promote_to_a_damaged_version_is_refused_and_changes_nothing(project):
    root, store, live, ops, chunks = project
    uid = store.streams()["unique_id"].iloc[7]
    ops.force_retrain([uid], direct=True, by="user:ana")
    tick_next_day(store, live, chunks)
    corrupt(ops.registry, uid, 1)
    history = ops.registry.history(uid)
    with pytest.raises(ActionError, match=r"cannot roll back stream .* to version 1: its artifact .* is damaged"):
        ops.rollback(uid, by="user:ana", reason="test")
    with pytest.raises(ActionError, match=r"cannot promote stream .* to version 1: .*mlma retrain"):
        ops.promote(uid, 1, by="user:ana")
    refused = run_cli(root, "rollback", uid, "--by", "ana")
    assert refused.returncode == 2 and "damaged" in refused.stdout and "Traceback" not in refused.stderr
    assert ops.registry.history(uid) == history and ops.registry.champion(uid).version == 2
    tick = tick_next_day(store, live, chunks)
    assert not every_stream_forecast(store, tick)


def test_a_version_damaged_after_a_persons_roll_back_does_not_stop_the_tick(project):
    root, store, live, ops, chunks = project
    config = load_config(root)
    uid = store.streams()["unique_id"].iloc[2]
    ops.force_retrain([uid], direct=True, by="user:ana")
    tick_next_day(store, live, chunks)
    ops.rollback(uid, 1, by="user:ana", reason="version 2 overshoots")
    corrupt(ops.registry, uid, 1)                     # damaged between the roll-back and the tick
    live.close()
    with fresh(store, config) as agent:
        tick = tick_next_day(store, agent, chunks)
        assert not every_stream_forecast(store, tick)
        assert ops.registry.champion(uid).version == 2     # the agent's serving model stays, and says why
        assert "put in service by user:ana cannot be loaded" in ops.registry.history(uid)[-1].reason
        assert "artifact-broken" in set(store.escalations(streams=[uid])["kind"])


def test_retrain_through_the_cli_is_a_way_out_for_a_stream_whose_only_model_is_damaged(project):
    root, store, live, ops, chunks = project
    uid = store.streams()["unique_id"].iloc[9]
    corrupt(ops.registry, uid, 1)
    live.close()
    queued = run_cli(root, "retrain", uid, "--by", "ana")
    assert queued.returncode == 0, queued.stdout + queued.stderr
    chunk = next(chunks)
    data = Path(root) / "day.csv"
    chunk.to_csv(data, index=False)
    assert run_cli(root, "ingest", str(data)).returncode == 0
    ticked = run_cli(root, "tick")
    assert ticked.returncode == 0, ticked.stdout + ticked.stderr
    outcome = ops.actions(status="applied").set_index("unique_id").loc[uid, "outcome"]
    assert outcome == "re-fitted on the stream's window (version 2)"
    assert not every_stream_forecast(store, store.last_done_tick())


# -- 2. kill -9 of a tick with a process pool ----------------------------------------------------------------------
SLOW_MODEL = '''
import os, time
from mlma.models import SeasonalNaive

class Slow(SeasonalNaive):
    """Seasonal naive whose fit takes a minute and says when it started."""
    def fit(self, ds, y, X=None):
        open(os.environ["SLOW_FIT_STARTED"], "a").write(f"{os.getpid()}\\n")
        time.sleep(60)
        return super().fit(ds, y, X)
'''


def children(pid: int) -> set[int]:
    """Live (non-zombie) child processes of ``pid``, from /proc."""
    found = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.add(int(entry.name))
    return found


def alive(pids: set[int]) -> set[int]:
    out = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            out.add(pid)
    return out


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_pool_workers_exit_when_a_tick_is_killed_with_sigkill_mid_fit(tmp_path, platform):
    (tmp_path / "slowmodel.py").write_text(SLOW_MODEL)
    started = tmp_path / "fit-started"
    root = make_project(tmp_path / "p", model="slowmodel:Slow")
    root.joinpath("mlma.toml").write_text(root.joinpath("mlma.toml").read_text()
                                          .replace('executor = "inline"', 'executor = "process:2"'))
    data = tmp_path / "history.csv"
    day0 = platform["ds"].min().normalize()
    platform[platform["ds"] < day0 + pd.Timedelta(days=FIRST_TICK)].to_csv(data, index=False)
    assert run_cli(root, "ingest", str(data)).returncode == 0
    env = {**os.environ, "SLOW_FIT_STARTED": str(started),
           "PYTHONPATH": str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    tick = subprocess.Popen([sys.executable, "-m", "mlma.cli", "tick", "--project", str(root)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while not (started.exists() and len(started.read_text().split()) >= 2):
            assert tick.poll() is None, tick.stderr.read().decode()
            assert time.monotonic() < deadline, "no fit started"
            time.sleep(0.05)
        workers = children(tick.pid)
        fitting = {int(p) for p in started.read_text().split()}
        assert fitting <= workers and len(workers) >= 2
        os.kill(tick.pid, signal.SIGKILL)
        tick.wait(timeout=30)
        deadline = time.monotonic() + 5
        while alive(workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(workers), f"pool workers {sorted(alive(workers))} outlived their killed parent"
    finally:
        if tick.poll() is None:
            tick.kill()
        for pid in alive(workers):
            os.kill(pid, signal.SIGKILL)
    # The store is as a crash leaves it: the next run (inline) does the start-up and ticks on.
    root.joinpath("mlma.toml").write_text(root.joinpath("mlma.toml").read_text()
                                          .replace('spec = "slowmodel:Slow"', 'spec = "ridge"')
                                          .replace('executor = "process:2"', 'executor = "inline"'))
    rerun = run_cli(root, "tick")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
