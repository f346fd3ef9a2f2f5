"""Live operation on a real store: replay equals backtest, crash and lock safety, failures, engineer controls."""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from mlma.backtest import BacktestConfig, run_backtest
from mlma.control import ActionError, Operations
from mlma.live import LiveAgent, NotReady
from mlma.project import init_project, load_config
from mlma.simulate import simulate_platform
from mlma.store import LockHeld, Store
from mlma.store import schema as S

FIRST_TICK = 28


@pytest.fixture(scope="module")
def platform() -> pd.DataFrame:
    """40 zones, 52 days of hourly orders with frequent events: re-trainings, promotions, rejected challengers,
    zones that launch late or go silent, so that every path of the tick is exercised; and one zone launched on
    day 35 that reports the same count every hour, whose model cannot be fitted once its history is long enough
    (a `cold` escalation: the simulated launches are only short of history, which is not escalated)."""
    data = simulate_platform(40, 52, seed=5, event_rate=3).data
    hours = pd.date_range(data["ds"].min() + pd.Timedelta(days=35), data["ds"].max(), freq="h")
    flat = pd.DataFrame({"unique_id": "flat-zone", "ds": hours, "y": 3.0})
    return pd.concat([data, flat[[c for c in data.columns if c in flat]]], ignore_index=True)


def make_project(root: Path, *, db: str | None = None, model: str = "ridge", **agent) -> Path:
    init_project(root, db=db, model=model)
    text = (root / "mlma.toml").read_text().replace('executor = "process"', 'executor = "inline"')
    text = text.replace("initial_ticks = 0", f"initial_ticks = {FIRST_TICK}")
    for key, value in agent.items():
        text, found = re.subn(rf"(?m)^{key} = .*$", f"{key} = {value}", text)
        assert found == 1, f"{key} is not in the template"
    (root / "mlma.toml").write_text(text)
    return root


def day_chunks(frame: pd.DataFrame, first_tick: int):
    """The history before ``first_tick`` as one chunk, then one chunk per day, as data would arrive."""
    day0 = frame["ds"].min().normalize()
    days = ((frame["ds"] - day0) // pd.Timedelta("1D")).to_numpy()
    yield frame[days < first_tick]
    for d in range(first_tick, int(days.max()) + 1):
        yield frame[days == d]


def replay(root: Path, frame: pd.DataFrame) -> None:
    config = load_config(root)
    with Store.open(config.store_url) as store, LiveAgent(config, store=store) as live:
        for i, chunk in enumerate(day_chunks(frame, FIRST_TICK)):
            store.ingest_frame(chunk, f"day-{i}")
            assert live.step().tick == (FIRST_TICK - 1 if i == 0 else FIRST_TICK + i - 1)
        with pytest.raises(NotReady):
            live.step()


def test_a_new_process_each_day_escalates_a_stream_that_cannot_get_its_model_as_the_backtest_does(tmp_path,
                                                                                                 platform):
    """The flat zone's first model falls back because its history is short (not escalated); its retry with
    nine days of history falls back because the series is constant, which is escalated, once. When each tick
    runs in a new process, the run of fall-backs (its start, whether it was escalated) must come back with the
    saved state (checked: with those arrays left out of it, the live agent escalates other ticks)."""
    root = make_project(tmp_path / "p")
    zones = sorted(platform["unique_id"].unique())[:5] + ["flat-zone"]
    frame = platform[platform["unique_id"].isin(zones)]
    result = run_backtest(frame, BacktestConfig(policies=["mlma"], model="ridge", initial_ticks=FIRST_TICK,
                                                executor="inline", frontier=False))
    expected = result.escalation_log.loc[result.escalation_log["kind"] == "cold", ["unique_id", "tick"]]
    assert expected["unique_id"].tolist() == ["flat-zone"]
    config = load_config(root)
    with Store.open(config.store_url) as store:
        for i, chunk in enumerate(day_chunks(frame, FIRST_TICK)):
            store.ingest_frame(chunk, f"day-{i}")
            with LiveAgent(config, store=store) as live:
                live.step()
        live_cold = store.escalations().query("kind == 'cold'")[["unique_id", "tick"]]
    assert live_cold.values.tolist() == expected.values.tolist()


def live_scores(store: Store) -> pd.DataFrame:
    """Per-stream MAE of the forecasts the live agent issued, scored on the actuals."""
    issued = store.forecasts()[["unique_id", "ds", "y_hat"]]
    actuals = store.observations()[["unique_id", "ds", "y"]]
    frame = issued.merge(actuals, on=["unique_id", "ds"], how="inner")
    frame["err"] = (frame["y"] - frame["y_hat"]).abs()
    return frame.groupby("unique_id")["err"].agg(["mean", "size"])


#: The replay tests run MLMA at a looser false discovery rate than the default (0.01), so that this short
#: replay holds enough triggers, promotions and lost challengers to compare the paths of the tick.
REPLAY_ALPHA = 0.2
#: A Page-Hinkley threshold low enough to fire a few times in the short replay (the opt-in suggests 200).
PH_THRESHOLD = 50


def check_replay_matches_backtest(root: Path, frame: pd.DataFrame, policy: str = f"mlma:alpha={REPLAY_ALPHA}",
                                  min_retrains: int = 16):
    """``root``: a project made with the settings of ``policy`` (default: ``alpha=REPLAY_ALPHA``); the replay
    must see at least ``min_retrains`` re-trainings, so that it checks something."""
    result = run_backtest(frame, BacktestConfig(policies=[policy], model="ridge",
                                                initial_ticks=FIRST_TICK,
                                                executor="inline", sample_streams=0))
    replay(root, frame)
    config = load_config(root)
    with Store.open(config.store_url) as store:
        verdicts = store.verdicts()
        escalations = store.escalations()
        ticks = store.ticks()
        scores = live_scores(store)
        with store.engine.connect() as conn:
            history = pd.DataFrame(conn.execute(sa.select(S.champion_history)).all())
    # The same re-trainings, stream by stream and tick by tick.
    live_retrains = set(map(tuple, verdicts.loc[verdicts["retrain"], ["unique_id", "tick"]].to_numpy().tolist()))
    backtest_retrains = set(map(tuple, result.retrain_log[["unique_id", "tick"]].to_numpy().tolist()))
    assert len(backtest_retrains) >= min_retrains, "the simulated events should cause re-trainings"
    assert {"cold", "silent"} <= set(result.escalation_log["kind"])
    # Lost challengers happened (their escalation needs three in a row, which this short replay need not see).
    assert result.summary[0]["rejected_challengers"] > 0
    assert live_retrains == backtest_retrains
    # The same escalations.
    live_esc = sorted(map(tuple, escalations[["unique_id", "tick", "kind"]].to_numpy().tolist()))
    backtest_esc = sorted(map(tuple, result.escalation_log[["unique_id", "tick", "kind"]].to_numpy().tolist()))
    assert live_esc == backtest_esc
    # The same accuracy, stream by stream, on the same points.
    per_stream = result.per_stream.set_index("unique_id")
    scored = per_stream[per_stream["n_scored"] > 0]
    assert set(scores.index) == set(scored.index)
    np.testing.assert_array_equal(scores.loc[scored.index, "size"].to_numpy(), scored["n_scored"].to_numpy())
    np.testing.assert_allclose(scores.loc[scored.index, "mean"].to_numpy(), scored["mae"].to_numpy(), rtol=1e-12)
    # The same MASE scale, stream by stream, for zones launched late too (those get theirs from the pairs known
    # at their first tick with one, in both: never from their future).
    with Store.open(config.store_url) as store:
        live_scale = store.load_state().arrays["agent.scale"][store.stream_ids(list(scored.index), create=False)]
    np.testing.assert_allclose(live_scale, (scored["mae"] / scored["mase"]).to_numpy(), rtol=1e-12)
    launched = frame.groupby("unique_id")["ds"].min()
    assert (launched[scored.index] > frame["ds"].min() + pd.Timedelta(days=FIRST_TICK - 7)).any()
    # The same promotions: first models plus promoted challengers.
    summary = result.summary[0]
    promotions = history[history["action"] == "promote"]
    assert len(promotions) == summary["initial_fits"] + summary["promotions"]
    assert (ticks["status"] == "done").all() and (ticks["attempts"] == 1).all()
    # Escalations whose condition cleared were resolved by the agent, and only those.
    resolved = escalations[escalations["status"] == "resolved"]
    assert len(resolved) and set(resolved["kind"]) <= {"silent", "cold", "challenger-lost", "repeated-trigger",
                                                       "data-quality"}
    # The backtest resolved the same escalations, in the same ticks, by the same rule.
    log = result.escalation_log
    backtest_resolved = sorted(map(tuple, log.loc[log["resolved_tick"].notna(), ["unique_id", "tick", "kind"]]
                                   .to_numpy().tolist()))
    assert sorted(map(tuple, resolved[["unique_id", "tick", "kind"]].to_numpy().tolist())) == backtest_resolved
    with Store.open(config.store_url) as store:
        audit = store.audit_log(action="auto-resolve")
        summaries = store.tick_summaries()
        observations = store.observations()
    assert audit["actor"].eq("agent").all()
    live_counts = {(int(target.split(":")[1]), kind): n
                   for target, params in zip(audit["target"], audit["params"])
                   for kind, n in params["resolved"].items()}
    backtest_counts = log.dropna(subset=["resolved_tick"]).groupby(["resolved_tick", "kind"]).size()
    assert live_counts == {(int(t), kind): int(n) for (t, kind), n in backtest_counts.items()}
    per_tick = result.per_tick.set_index("tick")["escalations_resolved"]
    assert {k: s.escalations_resolved for k, s in summaries.items() if k >= FIRST_TICK} == per_tick.to_dict()
    assert summary["escalations_resolved"] == len(backtest_resolved)
    tick_end = ticks.set_index("tick")["end_ds"]
    for row in resolved[resolved["kind"] == "silent"].itertuples():
        later = observations[(observations["unique_id"] == row.unique_id)
                             & (observations["ds"] >= tick_end[row.tick])]
        assert len(later), f"{row.unique_id}'s silence was resolved but it never reported again"
    return result


def test_live_replay_makes_the_same_decisions_and_metrics_as_the_backtest(tmp_path, platform):
    check_replay_matches_backtest(make_project(tmp_path / "p", alpha=REPLAY_ALPHA), platform)


def test_live_replay_with_the_growth_trigger_matches_the_backtest(tmp_path, platform):
    """Zones launched late are re-trained once their history doubled (``[monitor] growth``): the live agent
    counts the rows of the window it loads as the backtest counts them, and each serving model's rows come
    back with the saved state (checked: with the growth arrays left out of the saved state, the re-trainings
    differ)."""
    root = make_project(tmp_path / "p", alpha=REPLAY_ALPHA, growth=2)
    result = check_replay_matches_backtest(root, platform, f"mlma:alpha={REPLAY_ALPHA}:growth=2")
    assert result.retrain_log["reason"].str.startswith("growth:").sum() >= 2


def test_live_replay_with_common_shock_holds_matches_the_backtest(tmp_path, platform):
    """Ticks on which many zones trigger at once hold their triggers until the ticks after them confirm the
    change (``[monitor] common_shock``, opt-in): the holds and their counts of ticks since the shock must come
    back with the saved state, or a restarted agent would judge held streams as fresh triggers (checked: with
    the hold's arrays left out of the saved state, the re-trainings differ). On 40 zones the share 0.02 means
    five triggers at once. The holds change the decisions: 9 re-trainings against 20 without them (the replay's
    shocks pass; none of the held zones is confirmed)."""
    root = make_project(tmp_path / "p", alpha=REPLAY_ALPHA, common_shock=0.02)
    result = check_replay_matches_backtest(root, platform, f"mlma:alpha={REPLAY_ALPHA}:common_shock=0.02",
                                           min_retrains=5)
    without = run_backtest(platform, BacktestConfig(policies=[f"mlma:alpha={REPLAY_ALPHA}"], model="ridge",
                                                    initial_ticks=FIRST_TICK, executor="inline", sample_streams=0))
    assert len(without.retrain_log) >= len(result.retrain_log) + 5


def test_live_replay_with_a_budget_schedule_matches_the_backtest(tmp_path, platform):
    """A budget spent as a staggered schedule refreshes each stream at its own phase. The phase follows the
    stream's identity: the store numbers zones in the order they arrived (late launches last), the backtest
    in sorted order, and an index-based phase refreshed most zones at other ticks live (8 of 80 re-trainings
    in common before the fix)."""
    root = make_project(tmp_path / "p", alpha=REPLAY_ALPHA, budget=0.1)
    result = check_replay_matches_backtest(root, platform, f"mlma:alpha={REPLAY_ALPHA}:budget=0.1")
    assert result.retrain_log["reason"].str.startswith("schedule:").sum() > 40
    with Store.open(load_config(root).store_url) as store:
        ids = store.streams()["unique_id"].tolist()
    assert ids != sorted(ids)  # the indexes differ from the backtest's


def test_live_replay_with_the_cusum_trigger_matches_the_backtest(tmp_path, platform):
    """The live agent rebuilds its policy every tick from the saved state: the CUSUM's statistic, run length
    and frozen level must come back with it (``[monitor] cusum_threshold``), or the live re-trainings would
    differ from the backtest's, where the policy lives in one process."""
    root = make_project(tmp_path / "p", alpha=REPLAY_ALPHA, cusum_threshold=3)
    result = check_replay_matches_backtest(root, platform, f"mlma:alpha={REPLAY_ALPHA}:cusum_threshold=3")
    assert result.retrain_log["reason"].str.startswith("CUSUM:").sum() >= 5


def test_live_replay_with_the_page_hinkley_trigger_matches_the_backtest(tmp_path, platform):
    """The Page-Hinkley trigger's losses seen, running mean and statistic come back with the saved state
    (``[monitor] page_hinkley``), and the live agent's scaled losses are the backtest's (the same MASE scale),
    or the live re-trainings would differ (checked: with the Page-Hinkley arrays left out of the restore,
    they differ)."""
    root = make_project(tmp_path / "p", alpha=REPLAY_ALPHA, page_hinkley=PH_THRESHOLD)
    result = check_replay_matches_backtest(root, platform,
                                           f"mlma:alpha={REPLAY_ALPHA}:page_hinkley={PH_THRESHOLD}")
    assert result.retrain_log["reason"].str.contains("Page-Hinkley: ").sum() >= 3


def test_live_replay_with_the_skill_trigger_matches_the_backtest(tmp_path, platform):
    """The skill test's ring of tick means and its silenced streams come back with the saved state
    (``[monitor] skill_margin``), or the live re-trainings would differ from the backtest's (checked: with the
    skill and naive arrays left out of the restore, two streams' re-trainings differ)."""
    root = make_project(tmp_path / "p", alpha=REPLAY_ALPHA, skill_margin=0)
    result = check_replay_matches_backtest(root, platform, f"mlma:alpha={REPLAY_ALPHA}:skill_margin=0")
    assert result.retrain_log["reason"].str.contains("skill: ").sum() >= 2


def test_live_replay_on_postgresql_matches_the_backtest(tmp_path, platform, postgres_server):
    from mlma.store.testing import postgres_schema

    with postgres_schema(postgres_server) as url:
        check_replay_matches_backtest(make_project(tmp_path / "p", db=url, alpha=REPLAY_ALPHA), platform)


# -- safety --------------------------------------------------------------------------------------------------
def run_cli(root: Path, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlma.cli", *args, "--project", str(root)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def store_snapshot(root: Path) -> dict:
    """What a finished replay wrote, in a comparable form."""
    config = load_config(root)
    with Store.open(config.store_url) as store:
        with store.engine.connect() as conn:
            versions = conn.execute(sa.select(S.model_versions.c.stream_id, S.model_versions.c.version,
                                              S.model_versions.c.artifact_sha256, S.model_versions.c.created_tick)
                                    .order_by(S.model_versions.c.stream_id, S.model_versions.c.version)).all()
            moves = conn.execute(sa.select(S.champion_history.c.stream_id, S.champion_history.c.version,
                                           S.champion_history.c.tick).order_by(S.champion_history.c.id)).all()
        return {"verdicts": store.verdicts().drop(columns=["reason"]).astype(object).fillna(-1).to_dict("list"),
                "versions": [tuple(r) for r in versions], "moves": sorted(tuple(r) for r in moves),
                "forecasts": store.forecasts(store.last_done_tick())[["unique_id", "ds", "y_hat"]]
                .to_dict("list")}


CRASH_TARGET = FIRST_TICK + 2


def run_to_crash_target(root: Path, data: Path, streams: list[str]) -> None:
    """Run a project to just before the target tick, then queue forced re-trainings for it, so that crashing
    "after-fit" and "after-artifacts" really leaves fitted models and written artifacts behind."""
    assert run_cli(root, "ingest", str(data)).returncode == 0
    for _ in range(CRASH_TARGET - FIRST_TICK + 1):
        assert run_cli(root, "tick").returncode == 0
    with Store.open(load_config(root).store_url) as store:
        Operations(store).force_retrain(streams[:4], by="user:test")


@pytest.fixture(scope="module")
def crash_reference(tmp_path_factory, platform):
    """A project run to the end without interruption, and the data and streams it ran on."""
    folder = tmp_path_factory.mktemp("crash-reference")
    small = platform[platform["unique_id"].isin(sorted(platform["unique_id"].unique())[:12])]
    data = folder / "data.csv"
    small.to_csv(data, index=False)
    streams = sorted(small["unique_id"].unique())
    reference = make_project(folder / "reference")
    run_to_crash_target(reference, data, streams)
    assert run_cli(reference, "tick", "--all").returncode == 0
    return data, streams, store_snapshot(reference)


@pytest.mark.slow
@pytest.mark.parametrize("point", ["after-begin", "after-fit", "after-artifacts", "before-commit"])
def test_a_tick_killed_with_sigkill_is_redone_by_the_next_run(tmp_path, crash_reference, point):
    data, streams, expected = crash_reference
    target = CRASH_TARGET
    crashed = make_project(tmp_path / "crashed", lock_ttl_seconds=3600)
    run_to_crash_target(crashed, data, streams)
    marker = tmp_path / "paused"
    process = subprocess.Popen([sys.executable, "-m", "mlma.cli", "tick", "--project", str(crashed)],
                               env={**os.environ, "MLMA_PAUSE_AT": point, "MLMA_PAUSE_FILE": str(marker)},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert process.poll() is None, process.stderr.read().decode()
        assert time.monotonic() < deadline, "the tick never reached the pause point"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL

    config = load_config(crashed)
    with Store.open(config.store_url) as store:
        ticks = store.ticks().set_index("tick")
        assert ticks.loc[target, "status"] == "running"   # the crash left its trace, and nothing else
        assert store.last_done_tick() == target - 1
        assert store.lock_holder() is not None             # the dead agent's lease is still there
        assert len(store.verdicts(tick=target)) == 0

    # The next run takes over the dead process's lock (same host) and redoes the tick; then the rest.
    finished = run_cli(crashed, "tick", "--all")
    assert finished.returncode == 0, finished.stdout + finished.stderr
    with Store.open(config.store_url) as store:
        assert int(store.ticks().set_index("tick").loc[target, "attempts"]) == 2
        for sha in {row[2] for row in store_snapshot(crashed)["versions"]}:
            store_registry = __import__("mlma.registry", fromlist=["ModelRegistry"]).ModelRegistry(
                store, config.artifacts_dir)
            store_registry.artifacts.verify(sha)   # every recorded model is whole
    assert store_snapshot(crashed) == expected


def test_a_lock_holder_is_taken_for_dead_only_in_this_process_s_pid_namespace(tmp_path):
    """A holder on this host whose process is gone is dead, but the same number in another PID namespace (a
    container sharing the host's name) says nothing about it: an agent there broke a live agent's lock at once,
    calling it "no longer running on this host"."""
    from mlma.live import _holder_is_dead, agent_identity

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    me = agent_identity()
    assert "/pidns:" in me                                   # Linux: the namespace is part of the identity
    dead = me.split(":")[0] + f":{gone.pid}/pidns:" + me.split("/pidns:")[1]
    assert _holder_is_dead(dead)
    assert not _holder_is_dead(dead.replace("/pidns:", "/pidns:1"))          # another namespace
    assert not _holder_is_dead(dead.split("/pidns:")[0])                     # an identity without one
    assert not _holder_is_dead(me)                                           # this process
    # From inside a new PID namespace (a container): the host's agent is not taken for dead.
    probe = ("import sys; from mlma.live import _holder_is_dead; "
             f"sys.exit(3 if _holder_is_dead({me!r}) or _holder_is_dead({dead!r}) else 0)")
    inside = subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", sys.executable, "-c", probe],
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    if inside.returncode not in (0, 3):
        pytest.skip(f"no new PID namespace here (unshare: {inside.stderr.strip()[:200]})")
    assert inside.returncode == 0, inside.stderr


def test_two_agents_never_run_a_tick_at_once(tmp_path, platform):
    root = make_project(tmp_path / "p")
    config = load_config(root)
    with Store.open(config.store_url) as store:
        store.ingest_frame(platform, "all")
        with store.tick_lock("mlma-agent@other-host:1", ttl=60, heartbeat=False):
            with LiveAgent(config, store=store) as live, pytest.raises(LockHeld, match="other-host"):
                live.step()
            result = run_cli(root, "tick")
            assert result.returncode == 4 and "held by" in result.stdout
        assert store.last_done_tick() is None
        assert run_cli(root, "tick").returncode == 0
        assert store.last_done_tick() == FIRST_TICK - 1


def test_a_training_window_too_short_for_the_model_fails_the_tick_naming_the_key_and_writes_nothing(tmp_path,
                                                                                                   platform):
    """Ridge needs 216 hourly rows; a 5-day window holds 120. The project's frequency is fixed only by the first
    ingest, so the tick says so (exit 2, naming the file, the key and the shortest window that works) and writes
    no model; with the window mended the same tick runs."""
    root = make_project(tmp_path / "p", train_window_ticks=5)
    data = tmp_path / "data.parquet"
    platform[platform["ds"] < platform["ds"].min().normalize() + pd.Timedelta(days=FIRST_TICK)].to_parquet(data)
    assert run_cli(root, "ingest", str(data)).returncode == 0
    refused = run_cli(root, "tick")
    message = " ".join(refused.stdout.split())  # rich wraps long lines
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "mlma.toml: [model] train_window_ticks=5 holds at most 120 steps of 'h' data, but ridge needs 216" in message
    assert "at least 9 ticks" in message and "Traceback" not in refused.stdout + refused.stderr
    with Store.open(load_config(root).store_url) as store:
        assert store.last_done_tick() is None and store.latest_versions(range(1000)) == {}
    # The status names the failed tick with its message, section included (not taken for markup).
    assert "[model] train_window_ticks=5" in " ".join(run_cli(root, "status").stdout.split())
    # The service read the file when it started, so it stops instead of failing the same way every round.
    service = run_cli(root, "run", "--every", "1s", "--iterations", "3")
    assert service.returncode == 2, service.stdout + service.stderr
    assert "start the service again" in " ".join(service.stdout.split())
    text = (root / "mlma.toml").read_text()
    (root / "mlma.toml").write_text(re.sub(r"(?m)^train_window_ticks = 5", "train_window_ticks = 9", text))
    assert run_cli(root, "tick").returncode == 0
    with Store.open(load_config(root).store_url) as store:
        assert store.last_done_tick() == FIRST_TICK - 1
        # A later tick too (past the no-data hold check, which reads the window first) is recorded as failed.
        store.ingest_frame(platform[(platform["ds"] >= platform["ds"].min().normalize()
                                     + pd.Timedelta(days=FIRST_TICK))
                                    & (platform["ds"] < platform["ds"].min().normalize()
                                       + pd.Timedelta(days=FIRST_TICK + 1))], "next-day")
    (root / "mlma.toml").write_text(re.sub(r"(?m)^train_window_ticks = 9", "train_window_ticks = 5",
                                           (root / "mlma.toml").read_text()))
    assert run_cli(root, "tick").returncode == 2
    with Store.open(load_config(root).store_url) as store:
        ticks = store.ticks().set_index("tick")
        assert ticks.loc[FIRST_TICK, "status"] == "failed" and "train_window_ticks=5" in ticks.loc[FIRST_TICK, "error"]


def test_ingesting_twice_and_ticking_when_nothing_is_due_change_nothing(tmp_path, platform):
    root = make_project(tmp_path / "p")
    data = tmp_path / "data.parquet"
    platform[platform["ds"] < platform["ds"].min().normalize() + pd.Timedelta(days=30)].to_parquet(data)
    assert run_cli(root, "ingest", str(data)).returncode == 0
    again = run_cli(root, "ingest", str(data))
    assert again.returncode == 0 and "nothing changed" in again.stdout
    assert run_cli(root, "tick", "--all").returncode == 0
    before = store_snapshot(root)
    idle = run_cli(root, "tick")
    assert idle.returncode == 3 and "not complete" in idle.stdout
    assert store_snapshot(root) == before
    forecasts = run_cli(root, "forecast")
    assert forecasts.returncode == 0
    exported = pd.read_csv(__import__("io").StringIO(forecasts.stdout))
    assert list(exported.columns) == ["unique_id", "ds", "y_hat", "model_version"]
    assert len(exported) == 24 * exported["unique_id"].nunique() > 0


def test_a_fleet_of_which_one_stream_still_reports_keeps_its_data_and_its_ticks(tmp_path):
    """All but one of 30 streams stop reporting. A reference for new rows taken from the fleet (the newest data
    of all but the 5 % of streams furthest ahead, tried against one stream's rows stamped ahead) stopped the
    clock and refused the live stream's rows as ahead-of-fleet after 7 ticks, for good: the reference is the
    newest observation, the lone stream's days are accepted and, the hold allowing (a person's choice for a
    fleet gone silent; here by the share), ticked."""
    from mlma.data import IngestLimits

    frame = simulate_platform(30, FIRST_TICK + 12, seed=5, event_rate=0).data
    config = load_config(make_project(tmp_path / "p", model="seasonal-naive", hold_no_data_share=1))
    limits = IngestLimits(max_ahead_ticks=7)
    with Store.open(config.store_url) as store, LiveAgent(config, store=store) as live:
        chunks = day_chunks(frame, FIRST_TICK)
        store.ingest_file(next(chunks), source="history", limits=limits)
        done = live.step().tick
        alone = str(frame["unique_id"].iloc[-1])
        for day in list(chunks)[:10]:
            report = store.ingest_file(day[day["unique_id"] == alone], source=f"{day['ds'].min()}", limits=limits)
            assert report.rows_dropped == 0
            live.catch_up()
        assert store.last_done_tick() == done + 10


def test_late_and_corrected_actuals_are_kept_for_training(tmp_path, platform):
    root = make_project(tmp_path / "p")
    config = load_config(root)
    day0 = platform["ds"].min().normalize()
    with Store.open(config.store_url) as store, LiveAgent(config, store=store) as live:
        store.ingest_frame(platform[platform["ds"] < day0 + pd.Timedelta(days=FIRST_TICK + 1)], "first")
        live.catch_up()
        # Zone 0's actuals of the last tick arrive late and corrected; the store keeps the correction.
        late = platform[(platform["unique_id"] == platform["unique_id"].iloc[0])
                        & (platform["ds"] >= day0 + pd.Timedelta(days=FIRST_TICK))
                        & (platform["ds"] < day0 + pd.Timedelta(days=FIRST_TICK + 1))].copy()
        late["y"] += 1.0
        report = store.ingest_frame(late, "late-correction")
        assert report.rows_revised == len(late)
        assert len(store.revisions()) == len(late)


# -- failures --------------------------------------------------------------------------------------------------
FLAKY = '''
import time, os
import numpy as np
from mlma.models import SeasonalNaive

class Flaky(SeasonalNaive):
    """Seasonal naive, except that its fit hangs for the stream whose level marks it."""
    def fit(self, ds, y, X=None):
        if os.path.exists(os.environ["FLAKY_FLAG"]) and np.nanmean(y) > 1e6:
            time.sleep(600)
        return super().fit(ds, y, X)
'''


@pytest.mark.slow
def test_a_hanging_fit_times_out_leaves_the_champion_and_escalates_after_repeats(tmp_path, platform, monkeypatch):
    (tmp_path / "flakymodel.py").write_text(FLAKY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    flag = tmp_path / "hang"
    monkeypatch.setenv("FLAKY_FLAG", str(flag))
    frame = platform[platform["unique_id"].isin(sorted(platform["unique_id"].unique())[:4])].copy()
    bad = frame["unique_id"].unique()[0]
    frame.loc[frame["unique_id"] == bad, "y"] += 2e6     # marks the stream whose fit will hang
    root = make_project(tmp_path / "p", model="flakymodel:Flaky", fit_timeout_seconds=3)
    root.joinpath("mlma.toml").write_text(root.joinpath("mlma.toml").read_text()
                                          .replace('executor = "inline"', 'executor = "process:2"'))
    config = load_config(root)
    day0 = frame["ds"].min().normalize()
    with Store.open(config.store_url) as store:
        store.ingest_frame(frame[frame["ds"] < day0 + pd.Timedelta(days=FIRST_TICK)], "history")
        with LiveAgent(config, store=store) as live:
            live.step()
        first = Operations(store, artifacts=config.artifacts_dir)
        champion = first.registry.champion(bad).version
        flag.write_text("hang")
        for day in range(3):
            store.ingest_frame(frame[(frame["ds"] >= day0 + pd.Timedelta(days=FIRST_TICK + day))
                                     & (frame["ds"] < day0 + pd.Timedelta(days=FIRST_TICK + day + 1))], f"d{day}")
            first.force_retrain([bad], by="user:test", reason="exercise the timeout")
            started = time.monotonic()
            with LiveAgent(config, store=store) as live:
                result = live.step()
            assert time.monotonic() - started < 60
            assert result.summary.fit_failures == 1
        assert first.registry.champion(bad).version == champion          # the champion kept serving
        failures = store.audit_log(action="fit-failed")
        assert len(failures) == 3 and failures["reason"].str.contains("fit_timeout").all()
        escalations = store.escalations()
        assert escalations["kind"].tolist() == ["fit-failed"]              # after the third failure in a row
        assert "3 times in a row" in escalations["message"].iloc[0]
        applied = first.actions(status="applied")
        assert applied["outcome"].str.startswith("re-training failed").all() and len(applied) == 3
        forecasts = store.forecasts(store.last_done_tick())
        assert bad in set(forecasts["unique_id"])                          # still forecast by the champion


# -- the engineer's controls ---------------------------------------------------------------------------------
@pytest.fixture()
def running(tmp_path, platform):
    """A project that ran its start-up and a few ticks, with the rest of the data to come."""
    root = make_project(tmp_path / "p")
    config = load_config(root)
    store = Store.open(config.store_url)
    chunks = list(day_chunks(platform, FIRST_TICK))
    live = LiveAgent(config, store=store)
    for chunk in chunks[:4]:
        store.ingest_frame(chunk, f"c{len(chunk)}-{chunk['ds'].min()}")
        live.step()
    ops = Operations(store, artifacts=config.artifacts_dir)
    yield store, live, ops, iter(chunks[4:])
    live.close()
    store.close()


def next_tick(store, live, chunks):
    chunk = next(chunks)
    store.ingest_frame(chunk, f"chunk-{chunk['ds'].min()}")
    return live.step()


def test_forced_retrain_pin_and_approval_take_effect_and_are_audited(running):
    store, live, ops, chunks = running
    ids = store.streams()["unique_id"].tolist()
    a, b, c = ids[0], ids[1], ids[2]
    ops.force_retrain([a], by="user:ana", reason="promotion tomorrow")
    ops.force_retrain([b], direct=True, by="user:ana", reason="known launch")
    ops.pin([c], by="user:ana", reason="holiday")
    ops.force_retrain([c], by="user:ana")
    result = next_tick(store, live, chunks)
    tick = result.tick
    verdicts = store.verdicts(tick=tick).set_index("unique_id")
    assert verdicts.loc[a, "retrain"] and verdicts.loc[a, "reason"].startswith("forced by user:ana")
    assert verdicts.loc[c, "label"] == "pinned"
    # b was promoted directly, a's challenger waits for the shadow check.
    assert ops.registry.champion(b).version == 2
    assert ops.registry.champion(a).version == 1 and len(ops.registry.versions(a)) == 2
    outcomes = ops.actions(status="applied").set_index("unique_id")["outcome"]
    assert "shadow" in outcomes[a] and "promoted (version 2)" in outcomes[b]
    assert store.audit_log()["action"].tolist()[:4] == ["retrain", "retrain", "pin", "retrain"]

    # A pinned stream is never re-trained automatically, even when its policy would.
    ops.require_approval([a], by="user:ana", reason="big customer")
    next_tick(store, live, chunks)
    check = ops.registry.version(a, 2).check
    assert check["result"] in ("awaiting-approval", "rejected")
    if check["result"] == "awaiting-approval":
        assert store.escalations(streams=[a])["kind"].iloc[0] == "approval-needed"
        ops.approve(a, by="user:bob", reason="looks right")
        next_tick(store, live, chunks)
        assert ops.registry.champion(a).version == 2
        assert ops.registry.history(a)[-1].moved_by == "user:bob"


def test_a_tick_reads_back_only_the_model_versions_new_to_its_process(running, monkeypatch):
    """The models a tick fitted stay in the process's memory under their registry versions: the next tick
    of the same process reads no artifact back; a new process reads every serving model once."""
    store, live, ops, chunks = running
    uid = store.streams()["unique_id"].iloc[3]
    ops.force_retrain([uid], direct=True, by="user:ana")
    next_tick(store, live, chunks)
    assert ops.registry.champion(uid).version == 2
    loads = []
    load = live.registry.artifacts.load
    monkeypatch.setattr(live.registry.artifacts, "load", lambda sha: loads.append(sha) or load(sha))
    next_tick(store, live, chunks)
    assert loads == []
    fresh = LiveAgent(live.config, store=store)
    fresh_load = fresh.registry.artifacts.load
    monkeypatch.setattr(fresh.registry.artifacts, "load", lambda sha: loads.append(sha) or fresh_load(sha))
    serving = set(ops.registry.champions()["artifact_sha256"])
    next_tick(store, fresh, chunks)
    fresh.close()
    assert serving <= set(loads)


def test_the_next_tick_starts_from_the_state_its_process_kept_which_equals_the_saved_one(running, monkeypatch):
    """After a tick the process keeps the state it wrote (no read back by the next tick); it equals the
    saved one array by array and the next tick does not change it in place."""
    store, live, ops, chunks = running
    result = next_tick(store, live, chunks)
    load, reads = store.load_state, []
    monkeypatch.setattr(store, "load_state", lambda *args, **kw: reads.append(args) or load(*args, **kw))
    kept, saved = live._latest_state(), load(result.tick)
    assert reads == [] and kept.tick == saved.tick == result.tick and kept.sha256 == saved.sha256
    assert kept.arrays.keys() == saved.arrays.keys()
    for name, value in saved.arrays.items():
        np.testing.assert_array_equal(kept.arrays[name], value, err_msg=name)
    before = {name: value.copy() for name, value in kept.arrays.items()}
    following = next_tick(store, live, chunks)
    assert following.tick == result.tick + 1 and reads == []
    for name, value in before.items():
        np.testing.assert_array_equal(kept.arrays[name], value, err_msg=name)


def test_a_rollback_serves_the_chosen_version_from_the_next_tick(running):
    store, live, ops, chunks = running
    uid = store.streams()["unique_id"].iloc[5]
    ops.force_retrain([uid], direct=True, by="user:ana")
    next_tick(store, live, chunks)
    assert ops.registry.champion(uid).version == 2
    ops.rollback(uid, 1, by="user:ana", reason="version 2 overshoots")
    result = next_tick(store, live, chunks)
    forecasts = store.forecasts(result.tick).set_index("unique_id")
    assert set(forecasts.loc[uid, "model_version"]) == {1}
    assert ops.registry.champion(uid).version == 1
    # The agent started the rolled-back model's reference afresh: it is warming up.
    verdict = store.verdicts(tick=result.tick + 0).set_index("unique_id").loc[uid, "label"]
    assert verdict in ("ok", "warming-up", "no-data")
    next_result = next_tick(store, live, chunks)
    assert store.verdicts(tick=next_result.tick).set_index("unique_id").loc[uid, "label"] == "warming-up"


def test_a_challenger_a_person_promotes_in_shadow_is_checked_as_theirs_not_pending_nor_the_agents(running):
    """A person puts the challenger in shadow in service before its check ends: its check says who did (it read
    "pending" for good), and the tick's summary does not count it among the agent's promotions."""
    store, live, ops, chunks = running
    uid = store.streams()["unique_id"].iloc[6]
    ops.force_retrain([uid], by="user:ana", reason="new depot")
    next_tick(store, live, chunks)
    assert ops.registry.version(uid, 2).check == {"result": "pending"}
    ops.promote(uid, 2, by="user:bob", reason="no need to wait")
    result = next_tick(store, live, chunks)
    assert ops.registry.version(uid, 2).check == {
        "result": "promoted", "promoted_by": "user:bob",
        "why": "put in service by a person before the agent's check ended"}
    assert ops.registry.champion(uid).version == 2
    agents = [m for m in ops.registry.history(uid) if m.moved_by == "agent" and m.tick == result.tick]
    assert store.tick_summaries([result.tick])[result.tick].promoted == len(agents) == 0


def test_a_champion_moved_by_a_person_is_adopted_even_when_moved_while_a_tick_ran(running, monkeypatch):
    """The tick compares the registry's 10,000 champions with its state only after a move it did not make
    (the store counts champion moves): not on a quiet tick, but after a roll-back between ticks, and after one
    committed while a tick was running (that tick served the old version; the next serves the chosen one)."""
    store, live, ops, chunks = running
    uid = store.streams()["unique_id"].iloc[6]
    ops.force_retrain([uid], direct=True, by="user:ana")
    next_tick(store, live, chunks)
    assert ops.registry.champion(uid).version == 2
    reads = []
    serving = live.registry.tables.serving_versions
    monkeypatch.setattr(live.registry.tables, "serving_versions", lambda: reads.append(1) or serving())
    next_tick(store, live, chunks)
    assert reads == []  # nobody moved a champion: nothing compared
    ops.rollback(uid, 1, by="user:ana", reason="version 2 overshoots")
    result = next_tick(store, live, chunks)
    assert reads == [1] and set(store.forecasts(result.tick).set_index("unique_id").loc[uid, "model_version"]) == {1}
    ops.force_retrain([uid], direct=True, by="user:ana")
    next_tick(store, live, chunks)
    assert ops.registry.champion(uid).version == 3
    write_tick, moved = store.write_tick, []

    def move_then_write(record, **kwargs):
        if not moved:  # committed after the tick read the counts, before its own commit
            moved.append(ops.rollback(uid, 1, by="user:bob", reason="back to the first model"))
        return write_tick(record, **kwargs)

    monkeypatch.setattr(store, "write_tick", move_then_write)
    reads.clear()
    during = next_tick(store, live, chunks)
    assert moved and set(store.forecasts(during.tick).set_index("unique_id").loc[uid, "model_version"]) == {3}
    after = next_tick(store, live, chunks)
    assert reads == [1]  # the tick that ran during the move could not know; the next one compares
    assert set(store.forecasts(after.tick).set_index("unique_id").loc[uid, "model_version"]) == {1}
    assert ops.registry.champion(uid).version == 1


def test_reset_reference_and_abnormal_periods_reach_the_policy(running):
    store, live, ops, chunks = running
    ids = store.streams()["unique_id"].tolist()
    ops.reset_reference([ids[3]], by="user:ana", reason="new normal")
    day = pd.Timestamp(store.ticks()["end_ds"].max())
    ops.mark_abnormal(day, day + pd.Timedelta(days=1), [ids[4]], by="user:ana", reason="street festival")
    result = next_tick(store, live, chunks)
    verdicts = store.verdicts(tick=result.tick).set_index("unique_id")
    assert verdicts.loc[ids[4], "label"] == "abnormal"
    following = next_tick(store, live, chunks)
    assert store.verdicts(tick=following.tick).set_index("unique_id").loc[ids[3], "label"] == "warming-up"
    applied = ops.actions(status="applied")
    assert applied["outcome"].tolist() == ["reference reset"]


def test_per_stream_parameters_override_the_project_defaults(running):
    store, live, ops, chunks = running
    uid = store.streams()["unique_id"].iloc[0]
    with pytest.raises(ValueError, match="delta must be the relevance margin"):
        ops.set_params([uid], params={"delta": -1}, by="user:ana")
    with pytest.raises(ValueError, match="unknown parameter 'alpah'"):
        ops.set_params([uid], params={"alpah": 0.1}, by="user:ana")
    ops.set_params([uid], params={"delta": 50.0}, by="user:ana", reason="only huge changes matter here")
    for _ in range(3):
        result = next_tick(store, live, chunks)
    verdicts = store.verdicts(tick=result.tick)
    tested = verdicts[np.isfinite(verdicts["p_value"].astype(float))].set_index("unique_id")
    # H0 "the loss rose by at most 50x" is never rejected; the other streams keep the default margin.
    assert uid in tested.index and tested.loc[uid, "p_value"] > 0.999
    assert (tested.drop(index=uid)["p_value"] < 0.999).any()
    overrides = store.streams().set_index("unique_id").loc[uid, "overrides"]
    assert overrides == {"delta": 50.0}


# -- alerts out of a live tick ------------------------------------------------------------------------------
def test_a_tick_posts_its_new_escalations_to_the_configured_webhook(tmp_path, platform):
    import http.server
    import json
    import threading

    received: list[dict] = []

    class Receiver(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        root = make_project(tmp_path / "p")
        with open(root / "mlma.toml", "a") as toml:
            toml.write(f'\n[[alerts.receivers]]\nname = "ops"\nurl = "http://127.0.0.1:{server.server_port}/hook"\n'
                       f'format = "slack"\ngroup_by = ["kind"]\n')
        config = load_config(root)
        assert config.alert_receivers[0].name == "ops"
        # Three zones stop reporting on the same day: three silent escalations of one tick, one message.
        day40 = platform["ds"].min().normalize() + pd.Timedelta(days=40)
        reporting = sorted(platform.loc[platform["ds"] >= day40 + pd.Timedelta(days=5), "unique_id"].unique())[:3]
        data = platform[~(platform["unique_id"].isin(reporting) & (platform["ds"] >= day40))]
        with Store.open(config.store_url) as store:
            store.ingest_frame(data, "all")
            with LiveAgent(config, store=store) as live:
                results = live.catch_up()
            escalated = [r for r in results if r.escalation_ids]
            assert escalated, "the simulated platform should raise escalations"
            with store.engine.connect() as conn:
                sent = conn.execute(sa.select(S.alert_notifications.c.status)).all()
        assert received and all("text" in message for message in received)
        assert {s for (s,) in sent} == {"sent"}
        # One message per kind and tick at most: grouped, not one per stream.
        total = sum(len(r.escalation_ids) for r in results)
        assert len(received) < total
    finally:
        server.shutdown()


def test_attributes_from_a_file_make_groups_and_bad_files_are_named(tmp_path, platform):
    root = make_project(tmp_path / "p")
    config = load_config(root)
    early = platform[platform["ds"] < platform["ds"].min() + pd.Timedelta(days=2)]
    with Store.open(config.store_url) as store:
        store.ingest_frame(early, "two days")
    ids = sorted(early["unique_id"].unique())
    good = tmp_path / "attributes.csv"
    pd.DataFrame({"unique_id": ids[:3] + ["zone-unknown"], "city": ["berlin"] * 2 + ["paris", "rome"]}).to_csv(
        good, index=False)
    result = run_cli(root, "attributes", str(good))
    assert result.returncode == 0 and "set on 3 streams" in result.stdout and "'zone-unknown'" in result.stdout
    with Store.open(config.store_url) as store:
        assert store.unique_ids(Operations(store).select(group={"city": "berlin"})[0]).tolist() == ids[:2]
    twice = tmp_path / "twice.csv"
    pd.DataFrame({"unique_id": [ids[0], ids[0]], "city": ["a", "b"]}).to_csv(twice, index=False)
    bad = run_cli(root, "attributes", str(twice))
    assert bad.returncode == 2 and f"stream {ids[0]!r} appears twice (row 3)" in bad.stdout.replace("\n", " ")
    # A blank name (a traceback before, comparing NaN with the names): said, naming the row; nothing changed.
    blank = tmp_path / "blank.csv"
    pd.DataFrame({"unique_id": [ids[3], None, " "], "city": ["oslo"] * 3}).to_csv(blank, index=False)
    bad = run_cli(root, "attributes", str(blank))
    said = " ".join(bad.stdout.split())
    assert bad.returncode == 2 and "row 3: column 'unique_id' is blank" in said and "(2 row(s) without one)" in said
    assert "Traceback" not in bad.stderr, bad.stderr
    with Store.open(config.store_url) as store:
        with pytest.raises(ActionError, match="no stream has the attributes"):
            Operations(store).select(group={"city": "oslo"})


def test_the_service_loop_runs_due_ticks_and_stops_cleanly_on_sigterm(tmp_path, platform):
    root = make_project(tmp_path / "p")
    small = platform[platform["unique_id"].isin(sorted(platform["unique_id"].unique())[:6])]
    day0 = small["ds"].min().normalize()
    data = tmp_path / "history.csv"
    small[small["ds"] < day0 + pd.Timedelta(days=FIRST_TICK + 2)].to_csv(data, index=False)
    assert run_cli(root, "ingest", str(data)).returncode == 0
    service = subprocess.Popen([sys.executable, "-m", "mlma.cli", "run", "--every", "1s", "--project", str(root)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    config = load_config(root)
    try:
        deadline = time.monotonic() + 120
        with Store.open(config.store_url) as store:
            while store.last_done_tick() != FIRST_TICK + 1:          # start-up and two ticks, then idle
                assert service.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
            # New actuals arrive while the service runs: it picks them up at its next round.
            more = tmp_path / "day.csv"
            small[(small["ds"] >= day0 + pd.Timedelta(days=FIRST_TICK + 2))
                  & (small["ds"] < day0 + pd.Timedelta(days=FIRST_TICK + 3))].to_csv(more, index=False)
            assert run_cli(root, "ingest", str(more)).returncode == 0
            while store.last_done_tick() != FIRST_TICK + 2:
                assert service.poll() is None and time.monotonic() < deadline
                time.sleep(0.2)
        service.send_signal(signal.SIGTERM)
        out, err = service.communicate(timeout=60)
    finally:
        if service.poll() is None:
            service.kill()
    assert service.returncode == 0, err
    assert "stopped after" in out and f"tick {FIRST_TICK + 2}:" in out


def test_a_tick_records_the_fleet_loss_in_the_policys_own_loss(tmp_path, platform):
    """``TickSummary.policy_loss`` is the fleet mean of the per-stream losses the verdicts record, in the
    policy's loss (squared here, so it differs from the summary's mean absolute error)."""
    root = make_project(tmp_path / "p", loss='"squared"')
    config = load_config(root)
    with Store.open(config.store_url) as store, LiveAgent(config, store=store) as live:
        for i, chunk in enumerate(itertools.islice(day_chunks(platform, FIRST_TICK), 4)):
            store.ingest_frame(chunk, f"day-{i}")
            live.step()
        summaries = store.tick_summaries()
        verdicts = store.verdicts()
    assert summaries[FIRST_TICK - 1].policy_loss is None  # the start-up scores nothing
    judged = [k for k in summaries if k >= FIRST_TICK]
    assert len(judged) == 3
    for k in judged:
        losses = verdicts.loc[verdicts["tick"] == k, "loss"]
        assert losses.notna().sum() > 10
        assert summaries[k].policy_loss == pytest.approx(losses.mean())
        # Squared errors of hourly orders are far above their absolute errors.
        assert summaries[k].policy_loss > 2 * summaries[k].loss


def test_the_policy_arrays_handed_over_early_are_the_ones_the_tick_ends_with():
    """The live agent starts saving the policy's arrays when the agent says they are final (before the fleet
    is forecast): over 60 ticks with re-trainings, challengers, promotions, forced re-trainings and reset
    references, what was handed over equals the policy's arrays at the end of every tick."""
    from mlma.agent import Agent, Controls
    from mlma.data import make_tick_grid
    from mlma.fleet import FleetData
    from mlma.models import ForecastContext
    from mlma.policy import make_policy
    from mlma.training import InlineExecutor, ModelService

    frame = simulate_platform(12, 70, seed=3, event_rate=4).data
    fleet = FleetData(frame, "h", make_tick_grid(frame, "1D", freq="h").boundaries)
    service = ModelService(fleet, "ridge", ForecastContext(freq="h", season_length=24, horizon=24),
                           train_window_ticks=10, executor=InlineExecutor())
    agent = Agent(make_policy("mlma:alpha=0.2"), service, season_length=24,
                  scale=fleet.seasonal_naive_scale(24, before_tick=10))
    agent.start(10)
    handed: list[dict] = []
    agent.on_policy_settled = lambda arrays: handed.append({k: np.array(v, copy=True) for k, v in arrays.items()})
    rng = np.random.default_rng(0)
    retrained = promoted = 0
    for k in range(10, fleet.n_ticks):
        controls = Controls(force_retrain=rng.random(12) < 0.05, reset_reference=rng.random(12) < 0.03)
        report = agent.tick(k, controls)
        retrained += int(report.retrained.sum())
        promoted += int(report.promoted.sum())
        assert len(handed) == k - 9
        final = agent.policy_state_arrays()
        assert handed[-1].keys() == final.keys()
        for name, value in final.items():
            np.testing.assert_array_equal(handed[-1][name], value, err_msg=f"tick {k}: {name}")
    assert retrained >= 10 and promoted >= 5  # the ticks re-trained, judged challengers and promoted some
