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


def test_a_re_training_queued_for_a_stream_whose_champion_is_damaged_is_carried_out(project):
    """The agent's own roll-back from a damaged serving version was taken for a person's choice: a re-training
    queued for the stream (what the artifact-broken escalation asks for) was dropped as "a person put version 1
    in service after this re-training was queued". It is carried out on top of the version put back."""
    root, store, live, ops, chunks = project
    config = load_config(root)
    uid = store.streams()["unique_id"].iloc[5]
    ops.force_retrain([uid], direct=True, by="user:ana")
    tick_next_day(store, live, chunks)
    corrupt(ops.registry, uid, 2)
    ops.force_retrain([uid], direct=True, by="user:bo", reason="v2's file is damaged")
    live.close()
    with fresh(store, config) as agent:
        tick = tick_next_day(store, agent, chunks)
        assert not every_stream_forecast(store, tick)
        champion = ops.registry.champion(uid)
        assert champion.version == 3
        assert ops.registry.history(uid)[-1].reason == "forced by user:bo: v2's file is damaged"
        outcome = store.stream_actions().set_index("created_by").loc["user:bo", "outcome"]
        assert outcome == "re-trained and promoted (version 3)", outcome
        assert "artifact-broken" in set(store.escalations(streams=[uid])["kind"])
        assert set(store.forecasts(tick).set_index("unique_id").loc[uid, "model_version"]) == {3}


def test_a_tick_after_a_persons_roll_back_counts_the_agents_own_promotion_of_that_stream(project):
    """A person rolled a stream back between ticks and queued a re-training served at once: the tick served the
    new version, but its summary (the CLI's line, mlma status, the fleet page) said "0 promoted", the person's
    roll-back and the agent's promotion sharing one flag per stream. The roll-back is not the agent's; the
    re-training's promotion is."""
    root, store, live, ops, chunks = project
    uid = store.streams()["unique_id"].iloc[4]
    ops.force_retrain([uid], direct=True, by="user:ana")
    tick_next_day(store, live, chunks)
    assert ops.registry.champion(uid).version == 2
    ops.rollback(uid, 1, by="user:ana", reason="v2 over-forecasts")
    ops.force_retrain([uid], direct=True, by="user:ana", reason="again, from v1")
    chunk = next(chunks)
    store.ingest_frame(chunk, f"day-{chunk['ds'].min()}")
    result = live.step()
    assert ops.registry.champion(uid).version == 3
    assert result.summary.promoted == 1 and result.summary.retrains >= 1
    assert store.ticks().set_index("tick").loc[result.tick, "summary"]["promoted"] == 1
    ops.rollback(uid, 2, by="user:ana", reason="a roll-back alone is no promotion of the agent")
    chunk = next(chunks)
    store.ingest_frame(chunk, f"day-{chunk['ds'].min()}")
    assert live.step().summary.promoted == 0


def test_a_damaged_challenger_is_dropped_and_the_policy_stops_waiting_for_it(project):
    """A person's re-training puts a challenger in shadow; its artifact is damaged before the tick that would
    judge it. The tick drops it (escalated, its check recorded as rejected) and tells the policy: the growth
    trigger, which waits while a new model of the stream is pending, waits no more (before, it stayed silent
    until the stream's next fit)."""
    root, store, live, ops, chunks = project
    config = load_config(root)
    uid = store.streams()["unique_id"].iloc[4]
    sid = int(store.stream_ids([uid], create=False)[0])
    ops.force_retrain([uid], by="user:ana")
    tick_next_day(store, live, chunks)
    challenger = ops.registry.version(uid, 2)
    assert challenger.check["result"] == "pending" and ops.registry.champion(uid).version == 1
    assert np.isfinite(store.load_state().arrays["policy.growth_pending_rows"][sid])
    corrupt(ops.registry, uid, 2)
    live.close()
    with fresh(store, config) as agent:
        tick = tick_next_day(store, agent, chunks)
    assert not every_stream_forecast(store, tick)
    assert ops.registry.champion(uid).version == 1
    assert ops.registry.version(uid, 2).check["result"] == "rejected"
    assert "artifact-broken" in set(store.escalations(streams=[uid])["kind"])
    assert np.isnan(store.load_state().arrays["policy.growth_pending_rows"][sid])


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
    from fastapi.testclient import TestClient

    from mlma.api import auth, create_app

    token = auth.create_token(store, "op", "operator", by="user:root")[1]
    client = TestClient(create_app(store, artifacts=load_config(root).artifacts_dir))
    answer = client.post("/api/actions/promote", json={"stream": uid, "version": 1},
                         headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 422 and "damaged" in answer.text
    assert ops.registry.history(uid) == history and ops.registry.champion(uid).version == 2
    tick = tick_next_day(store, live, chunks)
    assert not every_stream_forecast(store, tick)


def test_a_persons_version_damaged_before_a_tick_that_re_trains_its_stream_does_not_stop_the_ticks(project):
    """The tick kept its own model in service in place of the person's broken one and also promoted the stream's
    new version: two champion moves for one stream, which the store refused, so every tick failed after it."""
    root, store, live, ops, chunks = project
    config = load_config(root)
    uid = store.streams()["unique_id"].iloc[3]
    ops.force_retrain([uid], direct=True, by="user:ana")
    tick_next_day(store, live, chunks)                                  # version 2 serves
    ops.rollback(uid, 1, by="user:ana", reason="version 2 overshoots")
    corrupt(ops.registry, uid, 1)                                       # damaged after the roll-back
    ops.force_retrain([uid], direct=True, by="user:ana")                # a re-training served at once
    live.close()
    with fresh(store, config) as agent:
        for _ in range(2):
            tick = tick_next_day(store, agent, chunks)
            assert not every_stream_forecast(store, tick)
        assert ops.registry.champion(uid).version == 3                  # the re-trained model serves
        ops.registry.load(uid)
        assert "artifact-broken" in set(store.escalations(streams=[uid])["kind"])


def test_a_version_damaged_after_a_persons_roll_back_does_not_stop_the_tick(project):
    root, store, live, ops, chunks = project
    config = load_config(root)
    uid, both = store.streams()["unique_id"].iloc[[2, 4]]
    ops.force_retrain([uid, both], direct=True, by="user:ana")
    tick_next_day(store, live, chunks)
    for stream in (uid, both):
        ops.rollback(stream, 1, by="user:ana", reason="version 2 overshoots")
        corrupt(ops.registry, stream, 1)              # damaged between the roll-back and the tick
    corrupt(ops.registry, both, 2)                    # and for this one the agent's own model too
    live.close()
    with fresh(store, config) as agent:
        tick = tick_next_day(store, agent, chunks)
        assert not every_stream_forecast(store, tick)
        assert ops.registry.champion(uid).version == 2     # the agent's serving model stays, and says why
        assert "put in service by user:ana cannot be loaded" in ops.registry.history(uid)[-1].reason
        assert "artifact-broken" in set(store.escalations(streams=[uid])["kind"])
        assert ops.registry.champion(both).version == 3    # nothing loads: re-fitted on its window
        ops.registry.load(both)
        tick = tick_next_day(store, agent, chunks)
        assert not every_stream_forecast(store, tick)


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
    """Seasonal naive whose fit takes a minute (or $SLOW_FIT_SECONDS) and says when it started."""
    def fit(self, ds, y, X=None):
        open(os.environ["SLOW_FIT_STARTED"], "a").write(f"{os.getpid()}\\n")
        time.sleep(float(os.environ.get("SLOW_FIT_SECONDS", "60")))
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


def slow_pool_project(tmp_path: Path, platform: pd.DataFrame, days: int = FIRST_TICK) -> tuple[Path, Path, dict]:
    """A project whose model's fits take a minute in a pool of two workers, its first ``days`` days ingested
    (more than the history: a backlog of due ticks): the project, the file each fit writes its pid to when it
    starts, and the environment a tick needs to import the model."""
    (tmp_path / "slowmodel.py").write_text(SLOW_MODEL)
    started = tmp_path / "fit-started"
    root = make_project(tmp_path / "p", model="slowmodel:Slow")
    root.joinpath("mlma.toml").write_text(root.joinpath("mlma.toml").read_text()
                                          .replace('executor = "inline"', 'executor = "process:2"'))
    data = tmp_path / "history.csv"
    day0 = platform["ds"].min().normalize()
    platform[platform["ds"] < day0 + pd.Timedelta(days=days)].to_csv(data, index=False)
    assert run_cli(root, "ingest", str(data)).returncode == 0
    env = {**os.environ, "SLOW_FIT_STARTED": str(started),
           "PYTHONPATH": str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return root, started, env


def wait_for_two_fits(process: subprocess.Popen, started: Path) -> None:
    deadline = time.monotonic() + 120
    while not (started.exists() and len(started.read_text().split()) >= 2):
        assert process.poll() is None, process.stderr.read()
        assert time.monotonic() < deadline, "no fit started"
        time.sleep(0.05)


def back_to_a_quick_model(root: Path) -> None:
    root.joinpath("mlma.toml").write_text(root.joinpath("mlma.toml").read_text()
                                          .replace('spec = "slowmodel:Slow"', 'spec = "ridge"')
                                          .replace('executor = "process:2"', 'executor = "inline"'))


@pytest.mark.slow  # real mlma processes, one after another
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_pool_workers_exit_when_a_tick_is_killed_with_sigkill_mid_fit(tmp_path, platform):
    root, started, env = slow_pool_project(tmp_path, platform)
    tick = subprocess.Popen([sys.executable, "-m", "mlma.cli", "tick", "--project", str(root)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    workers: set[int] = set()
    try:
        wait_for_two_fits(tick, started)
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
    back_to_a_quick_model(root)
    rerun = run_cli(root, "tick")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr


@pytest.mark.slow  # real mlma processes, one after another
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("stop, code, said, recorded", [
    (signal.SIGINT, 130, "interrupted", "KeyboardInterrupt"),
    (signal.SIGTERM, 143, "terminated (SIGTERM)", "Terminated"),
])
def test_ctrl_c_or_sigterm_mid_fit_is_said_in_one_line_and_the_tick_runs_again(tmp_path, platform, stop, code,
                                                                                said, recorded):
    """A terminal's Ctrl-C reaches the whole process group, and so does systemd's SIGTERM by default (a job's
    deadline, `timeout` and a pod's stop send it too): the agent says the tick was not committed (exit 130 or
    143, not a silent exit), the tick's row says it was stopped (not "KeyboardInterrupt:" with no message),
    nothing is escalated, no pool worker outlives it (they leave Ctrl-C to the agent, which ends them), the lock
    is released (the next run, on any host, need not wait out the lease), and the next run does the tick."""
    root, started, env = slow_pool_project(tmp_path, platform)
    # A group of its own, as a terminal's foreground job, with SIGINT's default action (a shell may ignore it).
    tick = subprocess.Popen([sys.executable, "-m", "mlma.cli", "tick", "--project", str(root)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, process_group=0,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    workers: set[int] = set()
    try:
        wait_for_two_fits(tick, started)
        workers = children(tick.pid)
        os.killpg(tick.pid, stop)
        out, err = tick.communicate(timeout=60)
    finally:
        if tick.poll() is None:
            os.killpg(tick.pid, signal.SIGKILL)
    assert tick.returncode == code, out + err
    assert f"{said}: the running tick was not committed" in " ".join(out.split()), out
    assert "Traceback" not in err, err
    assert not alive(workers), f"pool workers {sorted(alive(workers))} outlived the stopped tick"
    with Store.open(load_config(root).store_url) as store:
        row = store.ticks().iloc[-1]
        assert row["status"] == "failed" and row["error"].startswith(f"stopped ({recorded}: Ctrl-C or a signal)")
        assert store.lock_holder() is None
        assert store.escalations().empty and store.last_done_tick() is None
    back_to_a_quick_model(root)
    rerun = run_cli(root, "tick")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr


@pytest.mark.slow  # a real mlma process
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_stops_a_backtest_at_once_and_ends_its_pool(tmp_path):
    """40 streams' first fits run in a pool of two (minute-long fits: 20 minutes of queued work): Ctrl-C ends
    the run within seconds, with one line and no traceback; the workers do not outlive it; no output is half
    written."""
    (tmp_path / "slowmodel.py").write_text(SLOW_MODEL)
    started = tmp_path / "fit-started"
    data = tmp_path / "platform.csv"
    simulate_platform(40, 30, seed=3).data.to_csv(data, index=False)
    out = tmp_path / "out"
    env = {**os.environ, "SLOW_FIT_STARTED": str(started),
           "PYTHONPATH": str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = subprocess.Popen([sys.executable, "-m", "mlma.cli", "backtest", "--data", str(data), "--model",
                            "slowmodel:Slow", "--executor", "process:2", "--policies", "never", "--no-frontier",
                            "--bootstrap", "0", "--out", str(out)], env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, process_group=0,
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    workers: set[int] = set()
    try:
        wait_for_two_fits(run, started)
        workers = children(run.pid)
        assert {int(p) for p in started.read_text().split()} <= workers
        os.killpg(run.pid, signal.SIGINT)
        out_text, err = run.communicate(timeout=30)  # not the 60 s of the running fits, nor the queue's
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 130, out_text + err
    assert "interrupted: the backtest stopped before its end and wrote nothing" in " ".join(out_text.split())
    assert "Traceback" not in err, err
    assert not alive(workers), f"pool workers {sorted(alive(workers))} outlived the interrupted backtest"
    assert not out.exists()


@pytest.mark.slow  # real mlma processes
@pytest.mark.parametrize("signals", [1, 2])
def test_sigterm_lets_mlma_run_finish_the_running_tick_and_a_second_one_stops_it(tmp_path, platform, signals):
    """systemd's stop with KillMode=mixed (docs/operations.md): SIGTERM to the agent while the start-up tick's fits
    run in the pool, with three more ticks due. One SIGTERM: the running tick commits, the due ones wait for the
    next start (exit 0). A second SIGTERM (the supervisor will not wait): the running tick stops uncommitted,
    the lock is released, exit 143."""
    root, started, env = slow_pool_project(tmp_path, platform, days=FIRST_TICK + 3)
    env["SLOW_FIT_SECONDS"] = "1.5"  # 12 fits in a pool of two: about 9 s
    service = subprocess.Popen([sys.executable, "-m", "mlma.cli", "run", "--every", "1h", "--project", str(root)],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, process_group=0)
    try:
        wait_for_two_fits(service, started)
        for _ in range(signals):
            os.kill(service.pid, signal.SIGTERM)
            time.sleep(0.5)
        out, err = service.communicate(timeout=120)
    finally:
        if service.poll() is None:
            os.killpg(service.pid, signal.SIGKILL)
    assert "Traceback" not in err, err
    with Store.open(load_config(root).store_url) as store:
        ticks = store.ticks()
        assert store.lock_holder() is None
        if signals == 1:
            assert service.returncode == 0 and "stopped after 1 round(s)" in out, out + err
            assert "SIGTERM: stopping after the running tick commits" in err, err
            assert ticks["status"].tolist() == ["done"], ticks  # the start-up tick, and not the three due after it
            assert store.last_done_tick() == FIRST_TICK - 1
        else:
            assert service.returncode == 143, out + err
            assert "terminated (a second SIGTERM) in round 1" in " ".join(out.split()), out
            assert ticks["status"].tolist() == ["failed"] and store.last_done_tick() is None, ticks
            assert len(started.read_text().split()) < 12  # it did not wait for the rest of the fits


# -- shared by the store faults ---------------------------------------------------------------------------------
def small_project(root: Path, platform: pd.DataFrame, days: int = FIRST_TICK + 2, *, db: str | None = None,
                  url_suffix: str = "") -> tuple[Path, pd.DataFrame]:
    """A project of 6 zones that ran its start-up and ticks through ``days`` days; returns it and the rest."""
    frame = platform[platform["unique_id"].isin(sorted(platform["unique_id"].unique())[:6])]
    make_project(root, db=db)
    if url_suffix:
        toml = root / "mlma.toml"
        toml.write_text(toml.read_text().replace('url = "sqlite:///mlma.db"', f'url = "sqlite:///mlma.db{url_suffix}"'))
    day0 = frame["ds"].min().normalize()
    history = root.parent / f"{root.name}-history.csv"
    frame[frame["ds"] < day0 + pd.Timedelta(days=days)].to_csv(history, index=False)
    ran = run_cli(root, "ingest", str(history))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    ran = run_cli(root, "tick", "--all")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    return root, frame[frame["ds"] >= day0 + pd.Timedelta(days=days)]


def test_ctrl_c_while_mlma_run_waits_between_rounds_stops_it_cleanly(tmp_path, platform):
    root, rest = small_project(tmp_path / "p", platform)
    run_cli(root, "ingest", str(next_day_file(rest, tmp_path)))
    service = subprocess.Popen([sys.executable, "-m", "mlma.cli", "run", "--every", "1h", "--project", str(root)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, process_group=0,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        with Store.open(load_config(root).store_url) as store:
            done = store.last_done_tick()
            deadline = time.monotonic() + 120
            while store.last_done_tick() == done:            # the round's tick, then the hour's wait
                assert service.poll() is None and time.monotonic() < deadline, service.stderr.read()
                time.sleep(0.2)
        time.sleep(1.0)
        os.killpg(service.pid, signal.SIGINT)
        out, err = service.communicate(timeout=30)
    finally:
        if service.poll() is None:
            os.killpg(service.pid, signal.SIGKILL)
    assert service.returncode == 0 and "stopped after 1 round(s)" in out, out + err
    assert "Traceback" not in err, err


def next_day_file(rest: pd.DataFrame, folder: Path, day: int = 0) -> Path:
    day0 = rest["ds"].min().normalize()
    path = folder / f"day-{day}.csv"
    rest[(rest["ds"] >= day0 + pd.Timedelta(days=day)) & (rest["ds"] < day0 + pd.Timedelta(days=day + 1))] \
        .to_csv(path, index=False)
    return path


def one_line_error(result: subprocess.CompletedProcess) -> str:
    """The command failed with one line on stderr and no traceback; returns the line."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert "Traceback" not in result.stderr and "╭" not in result.stderr, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def ticks_on(root: Path, rest: pd.DataFrame, folder: Path, day: int = 0) -> None:
    """The real data that follows a fault ingests, ticks, and every stream gets a forecast."""
    ran = run_cli(root, "ingest", str(next_day_file(rest, folder, day)))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    ran = run_cli(root, "tick")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    with Store.open(load_config(root).store_url) as store:
        assert not every_stream_forecast(store, store.last_done_tick())


def store_content(root: Path) -> dict:
    import sqlalchemy as sa

    from mlma.store import schema as S

    with Store.open(load_config(root).store_url) as store, store.engine.connect() as conn:
        return {t.name: conn.execute(sa.select(sa.func.count()).select_from(t)).scalar()
                for t in (S.observations, S.ingests, S.ticks, S.verdicts, S.forecasts, S.model_versions)} | {
            "done": store.last_done_tick()}


# -- 7. a locked SQLite file ----------------------------------------------------------------------------------------
@pytest.mark.slow  # real mlma processes, one after another
def test_a_locked_sqlite_store_exits_4_with_one_line(tmp_path, platform):
    import sqlite3

    root, rest = small_project(tmp_path / "p", platform, url_suffix="?timeout=1")
    before = store_content(root)
    day = next_day_file(rest, tmp_path)
    holder = sqlite3.connect(root / "mlma.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")                 # another program holds the write lock
    try:
        for args in (("ingest", str(day)), ("tick",)):
            started = time.monotonic()
            result = run_cli(root, *args)
            assert result.returncode == 4, result.stdout + result.stderr
            assert "locked by another process" in one_line_error(result)
            assert time.monotonic() - started < 30     # the URL's timeout=1, not the default minute
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert store_content(root) == before
    ticks_on(root, rest, tmp_path)


# -- 8. a full disk -----------------------------------------------------------------------------------------------
@pytest.fixture()
def small_disk(tmp_path):
    """A 3 MB tmpfs (needs root and mount); unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder: Path) -> Path:
    """Write a file until the device is full."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (1 << 16, 512, 1):
            try:
                while True:
                    os.write(fd, b"\0" * size)
            except OSError:
                pass
    finally:
        os.close(fd)
    return filler


@pytest.mark.slow  # real mlma processes, one after another
def test_a_full_disk_ends_ingest_and_tick_with_one_line_and_changes_nothing(tmp_path, platform, small_disk):
    root, rest = small_project(small_disk / "p", platform)
    before = store_content(root)
    day = next_day_file(rest, tmp_path)
    filler = fill(small_disk)
    for args in (("ingest", str(day)), ("tick",)):
        result = run_cli(root, *args)
        assert result.returncode == 5, result.stdout + result.stderr
        assert "no space left on the device" in one_line_error(result)
    filler.unlink()
    after = store_content(root)
    assert after == before
    ticks_on(root, rest, tmp_path)


def test_a_store_fault_that_stops_a_tick_and_its_lock_release_does_not_lock_the_agent_out(project, monkeypatch):
    """`mlma run` over a store that was full (or locked by a long write) for a while: the fault stopped the tick and
    the release of its lock alike; the release's error hid the tick's, and the lock row stayed, held by this very
    process, so every later round was skipped as "held by ... another agent" until the lease ran out (5 minutes
    by default, up to a day). The tick's error is raised, and the next tick gives the lease up and runs."""
    import sqlalchemy as sa

    from mlma.store.lock import Lease

    root, store, live, ops, chunks = project
    store.ingest_frame(next(chunks), "day")
    full = sa.exc.OperationalError("INSERT INTO verdicts ...", {}, Exception("database or disk is full"))
    real_release, real_compute = Lease.release, LiveAgent._compute_and_write
    faults = {"release": 1}

    def release(self):
        if faults["release"]:
            faults["release"] -= 1
            raise sa.exc.OperationalError("DELETE FROM locks ...", {}, Exception("database or disk is full"))
        real_release(self)

    def compute(self, *args, **kwargs):
        raise full

    monkeypatch.setattr(Lease, "release", release)
    monkeypatch.setattr(LiveAgent, "_compute_and_write", compute)
    done = store.last_done_tick()
    with pytest.raises(sa.exc.OperationalError, match="INSERT INTO verdicts"):  # the tick's fault, not the release's
        live.step()
    assert store.lock_holder()["holder"] == live.holder  # the row the failed release left
    monkeypatch.setattr(LiveAgent, "_compute_and_write", real_compute)  # the disk has room again
    assert live.step().tick == done + 1
    assert store.last_done_tick() == done + 1 and store.lock_holder() is None


# -- 6. a read-only file system -----------------------------------------------------------------------------------
@pytest.fixture()
def read_only_view(tmp_path):
    """``(writable, read_only)``: a folder and a read-only bind mount of it (needs root and mount)."""
    writable, view = tmp_path / "rw", tmp_path / "ro"
    writable.mkdir()
    view.mkdir()
    done = subprocess.run(["mount", "--bind", str(writable), str(view)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {done.stderr.strip()}")
    try:
        done = subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        yield writable, view
    finally:
        subprocess.run(["umount", "-l", str(view)], check=False)


@pytest.mark.slow  # real mlma processes, one after another
def test_read_only_commands_work_on_a_read_only_file_system_and_writes_are_refused(tmp_path, platform,
                                                                                  read_only_view):
    writable, view = read_only_view
    root, rest = small_project(writable / "p", platform)
    assert not (writable / "p" / "mlma.db-wal").exists()     # closed cleanly, as a copied store would be
    with pytest.raises(OSError):
        (view / "p" / "probe").write_text("x")                  # really read-only, for root too
    expected = run_cli(root, "forecast")
    for args in (("status",), ("forecast",), ("audit",)):
        result = run_cli(view / "p", *args)
        assert result.returncode == 0, result.stdout + result.stderr
    assert run_cli(view / "p", "forecast").stdout == expected.stdout
    assert "(read-only)" in run_cli(view / "p", "status").stdout
    refused = run_cli(view / "p", "tick")
    assert refused.returncode == 5 and "read-only" in one_line_error(refused)
    # The service says it as `mlma tick` does, each round, not as the driver's statement, parameters and lease token.
    service = run_cli(view / "p", "run", "--every", "1s", "--iterations", "2")
    said = " ".join((service.stdout + service.stderr).split())  # rich wraps long lines
    assert said.count("tick failed: the SQLite store is read-only (a read-only file system or no write permission): "
                      "this command writes; status, forecast and audit still work") == 2, said
    assert said.count("tick failed:") == 2 and "[SQL:" not in said and "sqlalche.me" not in said, said
    ticks_on(root, rest, tmp_path)                              # the writable copy carries on


# -- 5. a damaged saved state ---------------------------------------------------------------------------------------
@pytest.mark.slow  # real mlma processes, one after another
def test_a_damaged_saved_state_is_reported_by_status_refused_by_tick_and_a_backup_restores(tmp_path, platform):
    import shutil
    import sqlite3

    root, rest = small_project(tmp_path / "p", platform)
    assert run_cli(root, "backup", str(tmp_path / "backup.db")).returncode == 0
    db = root / "mlma.db"
    conn = sqlite3.connect(db)
    newest, blob = conn.execute("SELECT tick, blob FROM agent_state ORDER BY tick DESC LIMIT 1").fetchone()
    damaged = bytearray(blob)
    damaged[len(damaged) // 2] ^= 0xFF
    conn.execute("UPDATE agent_state SET blob = ? WHERE tick = ?", (bytes(damaged), newest))
    conn.commit()
    conn.close()
    status = run_cli(root, "status")
    assert status.returncode == 0, status.stdout + status.stderr
    text = " ".join(status.stdout.split())
    assert f"tick {newest} DAMAGED" in text and f"intact: tick {newest - 1}" in text
    before = store_content(root)
    ran = run_cli(root, "ingest", str(next_day_file(rest, tmp_path)))
    assert ran.returncode == 0
    refused = run_cli(root, "tick")
    assert refused.returncode == 5, refused.stdout + refused.stderr
    line = one_line_error(refused)
    assert f"saved agent state of tick {newest} is damaged" in line and f"tick {newest - 1}" in line
    assert "backup" in line
    assert store_content(root)["done"] == before["done"]
    # The damage stops every tick before it begins: the engineer's queue and receivers hear it all the same.
    with Store.open(load_config(root).store_url) as store:
        items = store.escalations(status="open")
    failed = items[items["kind"] == "tick-failed"]
    assert len(failed) == 1 and failed.iloc[0]["tick"] == newest + 1, items
    assert f"saved agent state of tick {newest} is damaged" in failed.iloc[0]["message"]
    # The documented way out: restore the backup, then the data that follows ticks on.
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copy(tmp_path / "backup.db", db)
    ticks_on(root, rest, tmp_path)


# -- 3. PostgreSQL timeouts -----------------------------------------------------------------------------------------
def with_query(url: str, **params: str) -> str:
    import sqlalchemy as sa

    return sa.make_url(url).update_query_dict(params).render_as_string(hide_password=False)


def test_a_postgresql_statement_that_runs_too_long_is_cancelled_and_logged(postgres_server, caplog):
    import sqlalchemy as sa

    from mlma.store.testing import postgres_schema

    with postgres_schema(postgres_server) as url:
        Store.create(url).close()
        with Store.open(with_query(url, statement_timeout="1s")) as store:
            started = time.monotonic()
            with pytest.raises(sa.exc.OperationalError, match="statement timeout"), store._read() as conn:
                conn.execute(sa.text("SELECT pg_sleep(30)"))
            assert time.monotonic() - started < 10
            assert store.streams().empty                      # the engine is usable afterwards
        with Store.open(url) as store, store.engine.connect() as conn:
            # The defaults reach the connection: server-side statement timeout, client keepalives.
            assert conn.execute(sa.text("SHOW statement_timeout")).scalar() == "15min"
            params = conn.connection.driver_connection.info.get_parameters()
            assert params["keepalives"] == "1" and int(params["keepalives_idle"]) <= 60
            assert int(params["tcp_user_timeout"]) > 0 and int(params["connect_timeout"]) > 0
    assert any("statement_timeout (1s) fired" in r.getMessage() for r in caplog.records)


def test_a_postgresql_server_that_never_answers_fails_within_the_connect_timeout(tmp_path, caplog):
    """A listening socket on this machine that accepts TCP and never speaks: a black-holed server."""
    import socket

    import sqlalchemy as sa

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    port = silent.getsockname()[1]
    url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/test"
    try:
        started = time.monotonic()
        with pytest.raises(sa.exc.OperationalError, match="timeout"):
            Store.open(with_query(url, connect_timeout="2"))
        assert time.monotonic() - started < 10
        assert any("connect_timeout (2 s) fired" in r.getMessage() for r in caplog.records)
        # Through the CLI: one line, exit 5, after the project's connect timeout.
        root = tmp_path / "p"
        make_project(root)
        toml = root / "mlma.toml"
        toml.write_text(toml.read_text().replace('url = "sqlite:///mlma.db"',
                                                 f'url = "{with_query(url, connect_timeout="2")}"'))
        started = time.monotonic()
        result = run_cli(root, "status")
        assert result.returncode == 5, result.stdout + result.stderr
        assert "connect_timeout (2 s) fired" in result.stderr
        assert "error: the PostgreSQL store cannot be used now: connection timeout expired" in result.stderr
        assert "Traceback" not in result.stderr and time.monotonic() - started < 30
    finally:
        silent.close()


# -- 4. mlma run before the database is up ----------------------------------------------------------------------------
class Forwarder:
    """A TCP forwarder on a local port to PostgreSQL, to be started late: until then nothing listens there."""

    def __init__(self, target: tuple[str, int]) -> None:
        import socket

        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self.server = None

    def start(self) -> None:
        import socket
        import threading

        self.server = socket.create_server(("127.0.0.1", self.port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        import socket
        import threading

        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source, sink) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.close()
                except OSError:
                    pass

    def stop(self) -> None:
        if self.server is not None:
            self.server.close()


@pytest.mark.slow  # real mlma processes, one after another
def test_mlma_run_waits_for_a_database_that_is_down_at_start_up(tmp_path, platform, postgres_server):
    import sqlalchemy as sa

    from mlma.store.testing import postgres_schema

    target = sa.make_url(postgres_server)
    with postgres_schema(postgres_server) as url:
        root, rest = small_project(tmp_path / "p", platform, db=url)
        forwarder = Forwarder((target.host or "127.0.0.1", target.port or 5432))
        late = sa.make_url(url).set(port=forwarder.port).render_as_string(hide_password=False)
        toml = root / "mlma.toml"
        toml.write_text(toml.read_text().replace(url, late))
        day = next_day_file(rest, tmp_path)
        with Store.open(url) as store:
            store.ingest_file(day)                        # a tick is due when the service starts
            done = store.last_done_tick()
        out_file, err_file = tmp_path / "run.out", tmp_path / "run.err"
        with open(out_file, "w") as out, open(err_file, "w") as err:
            service = subprocess.Popen([sys.executable, "-m", "mlma.cli", "run", "--every", "1s", "--project",
                                        str(root)], stdout=out, stderr=err, text=True)
        try:
            deadline = time.monotonic() + 120
            while "attempt 3" not in err_file.read_text():   # the database is "down": nothing listens there
                assert service.poll() is None and time.monotonic() < deadline, err_file.read_text()
                time.sleep(0.2)
            forwarder.start()
            with Store.open(url) as store:
                while store.last_done_tick() == done:
                    assert service.poll() is None and time.monotonic() < deadline, err_file.read_text()
                    time.sleep(0.3)
                assert not every_stream_forecast(store, store.last_done_tick())
            service.send_signal(signal.SIGTERM)
            service.wait(timeout=60)
        finally:
            if service.poll() is None:
                service.kill()
            forwarder.stop()
        out, err = out_file.read_text(), err_file.read_text()
        assert service.returncode == 0, err
        retries = [line for line in err.splitlines() if "cannot be reached" in line]
        assert "attempt 1: " in retries[0] and "Connection refused" in retries[0] and "retrying in" in retries[0]
        assert len(retries) >= 3
        assert f"tick {done + 1}:" in out


def test_opening_the_agent_backs_off_while_the_database_is_down(tmp_path, caplog):
    import logging
    import socket

    from mlma.live import open_agent

    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()                                          # nothing listens on the port now
    root = make_project(tmp_path / "p")
    toml = root / "mlma.toml"
    toml.write_text(toml.read_text().replace('url = "sqlite:///mlma.db"',
                                             f'url = "postgresql+psycopg://postgres@127.0.0.1:{port}/test"'))
    started = time.monotonic()
    caplog.set_level(logging.WARNING, logger="mlma.live")
    agent = open_agent(load_config(root), executor="inline", first_delay=0.2, max_delay=0.8,
                       stopping=lambda: time.monotonic() - started > 3.5)
    assert agent is None
    waits = [float(r.getMessage().rsplit("retrying in ", 1)[1].split()[0]) for r in caplog.records
             if "cannot be reached" in r.getMessage()]
    assert waits[:4] == [0.2, 0.4, 0.8, 0.8]


def _pool_parent_script() -> str:
    return (
        "import os, sys, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from mlma.training import _exit_with_parent\n"
        "pool = ProcessPoolExecutor(2, initializer=_exit_with_parent, initargs=(os.getpid(), False))\n"
        "pids = set()\n"
        "while len(pids) < 2:\n"
        "    pids |= {f.result() for f in [pool.submit(os.getpid) for _ in range(20)]}\n"
        "print(' '.join(map(str, sorted(pids))), flush=True)\n"
        "time.sleep(600)\n")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_the_parent_watchdog_alone_ends_pool_workers_of_a_killed_process(tmp_path):
    """Without PR_SET_PDEATHSIG (as on macOS, or a pool made off the main thread) the watchdog thread does it."""
    parent = subprocess.Popen([sys.executable, "-c", _pool_parent_script()], stdout=subprocess.PIPE, text=True)
    workers: set[int] = set()
    try:
        workers = {int(p) for p in parent.stdout.readline().split()}
        assert len(workers) == 2 and alive(workers) == workers
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 5
        while alive(workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not alive(workers)
    finally:
        if parent.poll() is None:
            parent.kill()
        for pid in alive(workers):
            os.kill(pid, signal.SIGKILL)


@pytest.mark.slow  # real mlma processes
def test_a_tick_whose_lock_is_broken_before_its_commit_says_so_in_a_line_and_the_next_tick_does_it(
        tmp_path, platform):
    """A person breaks the lock of a tick that stalled (or its lease ran out): the tick must not commit, and
    says so in one line with the lock's exit code (4), not a traceback; the next run does the tick."""
    root, rest = small_project(tmp_path / "p", platform)
    ran = run_cli(root, "ingest", str(next_day_file(rest, tmp_path)))
    assert ran.returncode == 0, ran.stdout + ran.stderr
    with Store.open(load_config(root).store_url) as store:
        done = store.last_done_tick()
    driver = (
        "import subprocess, sys\n"
        "import mlma.live\n"
        "def checkpoint(name):\n"
        "    if name == 'before-commit':  # a person breaks the lock while the tick is about to commit\n"
        "        subprocess.run([sys.executable, '-m', 'mlma.cli', 'unlock', '--force', '--by', 'ana', '--reason',\n"
        f"                        'host died', '--project', {str(root)!r}], check=True, capture_output=True)\n"
        "mlma.live._checkpoint = checkpoint\n"
        "from mlma.cli import app\n"
        f"sys.argv = ['mlma', 'tick', '--project', {str(root)!r}]\n"
        "app()\n")
    broken = subprocess.run([sys.executable, "-c", driver], capture_output=True, text=True, timeout=180)
    assert broken.returncode == 4, broken.stdout + broken.stderr
    line = one_line_error(broken)
    assert "the tick it was running was not committed" in line
    with Store.open(load_config(root).store_url) as store:
        assert store.last_done_tick() == done
    ran = run_cli(root, "tick")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    with Store.open(load_config(root).store_url) as store:
        assert store.last_done_tick() == done + 1
