"""Changes an engineer makes to a live project's mlma.toml, and a project whose clock is not known yet, met
through the real `mlma` command:

- a wrong ``[store] artifacts`` folder fails the tick with one clear error and changes nothing (before, every
  stream was escalated as `artifact-broken` and re-fitted, and fixing the typo did not undo it), while the
  loss of a few streams' model files still stays with those streams;
- a change of ``[agent] policy`` is taken up by the next tick: the new policy starts its own state for the
  existing streams (before, a switch to `mlma` failed every tick), audited and noted in the tick's output, and
  nothing else is lost, also when the tick is killed and run again;
- a project fed one day per file whose frequency is still pending answers `mlma tick` with "nothing to do"
  (exit 3) and `mlma status` with the pending state, instead of a traceback.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from mlma.cli import app
from mlma.policy import make_policy
from mlma.project import load_config
from mlma.simulate import simulate_platform
from mlma.store import Store

FIRST_DAYS = 28  # the history before the first tick, in days


def run_cli(root: Path, *args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mlma.cli", *args, "--project", str(root)], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def ok(result: subprocess.CompletedProcess, code: int = 0) -> subprocess.CompletedProcess:
    assert result.returncode == code, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """5 zones of hourly orders: the first 28 days as one file, then one file per day."""
    folder = tmp_path_factory.mktemp("data")
    data = simulate_platform(5, 40, seed=1).data[["unique_id", "ds", "y"]]
    day0 = data["ds"].min().normalize()
    days = ((data["ds"] - day0) // pd.Timedelta("1D")).to_numpy()
    out = {"first": folder / "first.parquet", "days": []}
    data[days < FIRST_DAYS].to_parquet(out["first"])
    for d in range(FIRST_DAYS, int(days.max()) + 1):
        path = folder / f"day-{d}.parquet"
        data[days == d].to_parquet(path)
        out["days"].append(path)
    return out


def set_key(root: Path, key: str, value: str) -> None:
    """Set ``key = value`` in the project's mlma.toml (the key must be in the template once)."""
    path = root / "mlma.toml"
    lines = path.read_text().splitlines()
    hits = [i for i, line in enumerate(lines) if line.split("=")[0].strip() == key]
    assert len(hits) == 1, key
    lines[hits[0]] = f"{key} = {value}"
    path.write_text("\n".join(lines) + "\n")


def quick(root: Path, *args: str) -> str:
    """A set-up step through the same command, in this process (a new process costs a second or two)."""
    result = CliRunner().invoke(app, [*args, "--project", str(root)])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def templates(tmp_path_factory, files):
    """Projects after `mlma init` (inline fits), the history's ingest, the start-up tick and the next day's
    ingest (not ticked yet), one per policy, made once and copied by :func:`make_project`."""
    made: dict[str, Path] = {}

    def template(policy: str) -> Path:
        if policy not in made:
            root = tmp_path_factory.mktemp("template") / "p"
            result = CliRunner().invoke(app, ["init", str(root), "--model", "seasonal-naive"])
            assert result.exit_code == 0, result.output
            set_key(root, "executor", '"inline"')
            set_key(root, "policy", json.dumps(policy))
            quick(root, "ingest", str(files["first"]))
            assert "start-up" in quick(root, "tick")
            quick(root, "ingest", str(files["days"][0]))
            made[policy] = root
        return made[policy]

    return template


@pytest.fixture()
def make_project(tmp_path, templates):
    def make(policy: str = "mlma") -> Path:
        root = tmp_path / "p"
        shutil.copytree(templates(policy), root)
        shutil.rmtree(root / "cache", ignore_errors=True)  # the observation window names the template's store
        return root

    return make


def snapshot(root: Path) -> dict:
    """What a tick may change: versions, champions, forecasts, escalations, audit, done ticks."""
    config = load_config(root)
    with Store.open(config.store_url) as store:
        versions = store.latest_versions([int(i) for i in store.streams()["id"]])
        done = store.last_done_tick()
        return {"versions": dict(versions),
                "serving": _serving(root),
                "forecasts": store.forecasts(done)[["unique_id", "ds", "y_hat", "model_version"]]
                .sort_values(["unique_id", "ds"]).reset_index(drop=True),
                "escalations": len(store.escalations()), "audit": len(store.audit_log()), "done": done}


def _serving(root: Path) -> dict:
    from mlma.registry import ModelRegistry

    config = load_config(root)
    with Store.open(config.store_url) as store:
        registry = ModelRegistry(store, config.artifacts_dir)
        return {uid: registry.champion(uid).version for uid in store.streams()["unique_id"]}


def same(a: dict, b: dict) -> None:
    for key in a:
        if isinstance(a[key], pd.DataFrame):
            pd.testing.assert_frame_equal(a[key], b[key])
        else:
            assert a[key] == b[key], key


# -- 1. a wrong [store] artifacts folder -----------------------------------------------------------------------
def test_a_wrong_artifacts_folder_fails_the_tick_naming_the_key_and_changes_nothing(make_project):
    """A typo, a folder that cannot exist and a path through a file: each refuses the tick with one error
    naming the key and the folder; nothing is re-fitted, moved or escalated about a stream, and no folder is
    left behind; the failed tick is one `tick-failed` item for the engineer, however often it is retried. An
    empty value (the project folder itself) is refused when mlma.toml is read. Fixed, the tick runs on the
    registry's models and resolves it."""
    root = make_project()
    (root / "a-file").write_text("not a folder")
    before = snapshot(root)
    set_key(root, "artifacts", '""')
    message = " ".join(ok(run_cli(root, "tick"), 2).stdout.split())
    assert "mlma.toml: [store] artifacts must name a folder for the model files other than the project" in message
    set_key(root, "artifacts", '"artifacts"')
    same(before, snapshot(root))
    wrong = ["artifactz", "a-file/x"] + (["/proc/mlma-artifacts"] if Path("/proc").is_dir() else [])
    for folder in wrong:
        set_key(root, "artifacts", json.dumps(folder))
        refused = ok(run_cli(root, "tick"), 2)
        message = " ".join((refused.stdout + refused.stderr).split())
        shown = str(Path(folder) if folder.startswith("/") else (root / folder if folder else root))
        assert "error:" in message and "mlma.toml: [store] artifacts" in message, message
        assert f"the folder {shown} " in message and "did not run" in message, message
        assert "cannot be loaded" not in message, message             # one error, not one line per model
        now = snapshot(root)
        same({**before, "escalations": 1}, now)                       # no re-fit, no champion moved
    assert not (root / "artifactz").exists()
    assert "failed" in ok(run_cli(root, "status")).stdout              # the refused tick is shown
    with Store.open(load_config(root).store_url) as store:
        item = store.escalations().iloc[0]
    assert item["kind"] == "tick-failed" and item["tick"] == 28 and item["status"] == "open"
    assert "mlma.toml: [store] artifacts" in item["message"] and pd.isna(item["unique_id"])
    set_key(root, "artifacts", '"artifacts"')
    assert "tick 28" in ok(run_cli(root, "tick")).stdout
    after = snapshot(root)
    assert after["versions"] == before["versions"] and after["serving"] == before["serving"]
    with Store.open(load_config(root).store_url) as store:
        escalations = store.escalations()
        assert "artifact-broken" not in set(escalations["kind"])
        assert escalations.set_index("id").loc[item["id"], "status"] == "resolved"
        assert store.forecasts(28)["unique_id"].nunique() == 5


def test_a_failed_tick_reaches_the_alert_receiver_before_the_command_exits(make_project):
    """The engineer who reads a chat channel, not the terminal, hears of a tick that fails: `mlma tick` posts
    the `tick-failed` item to the configured webhook before it exits; its retry posts nothing new."""
    from test_alerts import Hook

    hook = Hook()
    try:
        root = make_project()
        with open(root / "mlma.toml", "a") as toml:
            toml.write(f'\n[[alerts.receivers]]\nname = "ops"\nurl = "{hook.url}"\n')
        set_key(root, "artifacts", '"artifactz"')
        ok(run_cli(root, "tick"), 2)
        assert len(hook.requests) == 1, hook.requests
        alerts = hook.requests[0]["json"]["alerts"]
        assert [a["labels"]["kind"] for a in alerts] == ["tick-failed"]
        assert alerts[0]["labels"]["severity"] == "3" and "tick 28 failed" in alerts[0]["annotations"]["message"]
        ok(run_cli(root, "tick"), 2)
        assert len(hook.requests) == 1, hook.requests                 # the same item: not sent again
    finally:
        hook.close()


def test_a_few_lost_or_damaged_model_files_still_stay_with_their_streams(make_project):
    """The wrong-folder rule does not swallow a real loss: while one file the tick needs is there, the
    streams whose file is missing or damaged are isolated, escalated and re-fitted, the rest tick on."""
    from mlma.registry import ModelRegistry

    root = make_project()
    config = load_config(root)
    with Store.open(config.store_url) as store:
        registry = ModelRegistry(store, config.artifacts_dir)
        uids = list(store.streams()["unique_id"])
        paths = [registry.artifacts.path(registry.version(uid, 1).artifact_sha256) for uid in uids]
    for path in paths[:3]:
        path.unlink()
    paths[3].write_bytes(b"rot")
    ok(run_cli(root, "tick"))
    with Store.open(config.store_url) as store:
        broken = store.escalations()
        assert set(broken.loc[broken["kind"] == "artifact-broken", "unique_id"]) == set(uids[:4])
        assert store.forecasts(28)["unique_id"].nunique() == 5
        registry = ModelRegistry(store, config.artifacts_dir)
        assert [registry.champion(uid).version for uid in uids] == [2, 2, 2, 2, 1]


def lose_every_model_file(root: Path) -> str:
    """Delete every model file of the project (its folder stays): the next tick is refused; what it said."""
    for path in load_config(root).artifacts_dir.glob("??/*"):
        path.unlink()
    return " ".join(ok(run_cli(root, "tick"), 2).stdout.split())


def every_stream_refitted(root: Path) -> list[str]:
    """After the tick that re-fitted them: every stream escalated artifact-broken and forecast; the streams."""
    with Store.open(load_config(root).store_url) as store:
        uids = list(store.streams()["unique_id"])
        assert set(store.escalations().query("kind == 'artifact-broken'")["unique_id"]) == set(uids)
        assert store.forecasts(28)["unique_id"].nunique() == len(uids) == 5
    return uids


def test_every_file_lost_in_the_right_folder_is_refused_until_a_person_queues_retrain(make_project):
    root = make_project()
    assert "holds none of them" in lose_every_model_file(root)
    with Store.open(load_config(root).store_url) as store:
        uids = list(store.streams()["unique_id"])
    ok(run_cli(root, "retrain", *uids[:4], "--by", "ana", "--reason", "model files lost"))
    ok(run_cli(root, "tick"), 2)                                        # one stream still unaccounted for
    quick(root, "retrain", uids[4], "--by", "ana")
    ok(run_cli(root, "tick"))
    assert every_stream_refitted(root) == uids


def test_every_file_lost_is_mended_for_the_whole_fleet_with_retrain_all(make_project):
    """A database restored without its artifacts: one command queues every stream's re-fit, the message says it."""
    root = make_project()
    assert "mlma retrain --all" in lose_every_model_file(root)
    ok(run_cli(root, "retrain", "zone-0000", "--all"), 2)  # --all names no streams
    ok(run_cli(root, "retrain", "--all", "--by", "ana", "--reason", "restored without artifacts"))
    ok(run_cli(root, "tick"))
    every_stream_refitted(root)


# -- 2. a change of [agent] policy ------------------------------------------------------------------------------
def policy_audit(root: Path) -> list[dict]:
    with Store.open(load_config(root).store_url) as store:
        log = store.audit_log(action="policy-changed")
    return [{"reason": row.reason, **(json.loads(row.params) if isinstance(row.params, str) else row.params)}
            for row in log.itertuples()]


def next_day(root: Path, files: dict, day: int) -> str:
    """The next day ingested (in this process) and ticked by `mlma tick`; its output."""
    quick(root, "ingest", str(files["days"][day]))
    return " ".join(ok(run_cli(root, "tick")).stdout.split())


def test_switching_from_never_to_mlma_starts_the_policy_afresh_and_loses_nothing(make_project, files):
    root = make_project("never")
    before = snapshot(root)
    set_key(root, "policy", '"mlma"')
    out = " ".join(ok(run_cli(root, "tick")).stdout.split())
    assert "tick 28" in out and "note: the policy in mlma.toml (agent.policy) changed from 'never' to 'mlma'" in out
    after = snapshot(root)
    assert after["versions"] == before["versions"] and after["serving"] == before["serving"]
    (entry,) = policy_audit(root)
    assert (entry["from"]["spec"], entry["to"]["spec"], entry["state"]) == ("never", "mlma", "started afresh")
    config = load_config(root)
    with Store.open(config.store_url) as store:
        assert set(store.verdicts(tick=28)["label"]) == {"warming-up"}   # as for new streams
        state = store.load_state(28).arrays
        assert "policy.ref" in state and json.loads(str(state["meta.policy"]))["kind"] == "mlma"
    # It goes on, warms up, then monitors; nothing more is noted.
    for day in range(1, 6):
        assert "note:" not in next_day(root, files, day)
    with Store.open(config.store_url) as store:
        assert "warming-up" not in set(store.verdicts(tick=store.last_done_tick())["label"])
        assert store.forecasts(store.last_done_tick())["unique_id"].nunique() == 5
    assert len(policy_audit(root)) == 1


def test_other_switches_are_taken_up_and_audited(make_project, files):
    """mlma -> never -> mlma, periodic:7 -> periodic:14, and a setting that changes the shape of the MLMA
    policy's state (started afresh); each audited once, the models only added to."""
    root = make_project("mlma")
    steps = [('"never"', "none"), ('"mlma"', "started afresh"), ('"periodic:7"', "none"),
             ('"periodic:14"', "none"), ('"mlma:reference_ticks=21"', "started afresh")]
    ok(run_cli(root, "tick"))
    versions = snapshot(root)["versions"]
    for day, (value, state) in enumerate(steps, start=1):
        set_key(root, "policy", value)
        assert "note:" in next_day(root, files, day), value
        audit = policy_audit(root)
        assert len(audit) == day and audit[-1]["state"] == state, (value, audit[-1])
        assert audit[-1]["to"]["spec"] == json.loads(value)
    config = load_config(root)
    with Store.open(config.store_url) as store:
        assert store.ticks()["status"].eq("done").all()
        assert store.load_state(store.last_done_tick()).arrays["policy.ref"].shape[1] == 21
    after = snapshot(root)["versions"]
    assert all(after[s] >= v for s, v in versions.items())


def test_a_monitor_setting_changed_keeps_the_policy_state(make_project, files):
    root = make_project("mlma")
    ok(run_cli(root, "tick"))
    config = load_config(root)
    with Store.open(config.store_url) as store:
        kept = store.load_state(store.last_done_tick()).arrays["policy.ref_len"].copy()
    assert (kept > 0).all()
    set_key(root, "budget", "0.2")
    out = next_day(root, files, 1)
    assert "runs with changed monitor settings (budget None -> 0.2); its saved state carries on" in out, out
    with Store.open(config.store_url) as store:
        tick = store.last_done_tick()
        now = store.load_state(tick).arrays["policy.ref_len"]
        renewed = store.verdicts(tick=tick)["retrain"].to_numpy(dtype=bool)
    # The references went on filling (a stream re-trained by the new budget starts its new model's afresh).
    assert (now[~renewed] == kept[~renewed] + 1).all()
    assert policy_audit(root)[-1]["state"] == "kept"


def test_a_changed_model_spec_is_said_and_audited_once_and_the_serving_models_stay(make_project, files):
    """[model] spec changed on a live project was silently ignored: every stream went on serving the old model
    until it happened to be re-trained. The tick now says so (and how to re-fit all), audited once."""
    root = make_project("mlma")
    ok(run_cli(root, "tick"))
    serving = _serving(root)
    set_key(root, "spec", '"ridge"')
    out = next_day(root, files, 1)
    assert ("note: the model settings in mlma.toml (model.spec, ...) changed (spec 'seasonal-naive' -> 'ridge'): "
            "new streams and every re-training from now on use it, while the models serving now stay until each is "
            "re-trained; `mlma retrain --all --reason ...` re-fits them all at the next tick") in out, out
    assert "model settings" not in next_day(root, files, 2)        # said once, the tick that took it up
    with Store.open(load_config(root).store_url) as store:
        log = store.audit_log(action="model-changed")
    assert len(log) == 1 and log.iloc[0]["params"]["to"]["spec"] == "ridge"
    assert log.iloc[0]["params"]["from"]["spec"] == "seasonal-naive"
    assert _serving(root) == serving


def test_a_tick_killed_after_taking_up_a_policy_change_is_redone_once(make_project, files, tmp_path):
    root = make_project("never")
    set_key(root, "policy", '"mlma"')
    marker = tmp_path / "paused"
    process = subprocess.Popen([sys.executable, "-m", "mlma.cli", "tick", "--project", str(root)],
                               env={**os.environ, "MLMA_PAUSE_AT": "before-commit", "MLMA_PAUSE_FILE": str(marker)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not marker.exists() and time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.1)
    assert marker.exists()
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert policy_audit(root) == []                                    # nothing of the tick was committed
    out = " ".join(ok(run_cli(root, "tick")).stdout.split())
    assert "tick 28" in out and "changed from 'never' to 'mlma'" in out
    assert len(policy_audit(root)) == 1
    with Store.open(load_config(root).store_url) as store:
        ticks = store.ticks().set_index("tick")
        assert ticks.loc[28, "status"] == "done" and ticks.loc[28, "attempts"] == 2
    assert "note:" not in next_day(root, files, 1)


def test_a_state_saved_before_the_policy_was_recorded_is_read_by_its_arrays():
    """States saved by an earlier mlma have no meta.policy: a baseline's has no policy arrays (a switch to mlma
    starts afresh), an MLMA policy's has them (kept, nothing noted); an MLMA state that lacks some of its arrays
    is still refused when loaded (saved by an incompatible version), not silently replaced."""
    from mlma.live import _policy_change, _policy_meta

    class Config:
        class agent:
            policy = "mlma"

        @staticmethod
        def monitor_settings():
            return {}

    meta = _policy_meta(Config)
    policy = make_policy("mlma")
    policy.reset(3, 24, 24)
    saved_by_never = {"agent.champion": np.zeros(3, np.int64)}
    arrays, change = _policy_change(saved_by_never, policy, meta)
    assert change is not None and change.fresh and "policy.ref" in arrays
    saved_by_mlma = {"agent.champion": np.zeros(3, np.int64)} | {
        f"policy.{name}": value for name, value in policy.state_arrays().items()}
    arrays, change = _policy_change(saved_by_mlma, policy, meta)
    assert change is None and arrays is saved_by_mlma
    del saved_by_mlma["policy.ref_sum"]
    arrays, change = _policy_change(saved_by_mlma, policy, meta)
    assert change is None and "policy.ref_sum" not in arrays
    other = make_policy("mlma")
    other.reset(3, 24, 24)
    with pytest.raises(ValueError, match="lacks 'ref_sum'"):
        other.load_state_arrays({name[7:]: v for name, v in arrays.items() if name.startswith("policy.")})
    # An MLMA state of that age under a baseline now: said as the MLMA policy's, and recorded as such.
    periodic = make_policy("periodic:7")
    periodic.reset(3, 24, 24)
    old_mlma = {f"policy.{name}": value for name, value in policy.state_arrays().items()}
    _, change = _policy_change(old_mlma, periodic, {"kind": "periodic", "spec": "periodic:7", "settings": {}})
    assert "changed from the MLMA policy" in change.message and change.before["kind"] == "mlma"


def test_a_monitor_key_added_by_a_later_mlma_is_no_policy_change():
    """A state records the [monitor] settings it was saved with; a key a later mlma adds is absent from it, and is
    not a change (else every upgrade would note and audit one). A recorded key that changed still is."""
    from mlma.live import _policy_change

    policy = make_policy("mlma")
    policy.reset(3, 24, 24)
    now = {"kind": "mlma", "spec": "mlma", "settings": {"alpha": 0.01, "common_shock": 0.0}}
    saved = {f"policy.{name}": value for name, value in policy.state_arrays().items()}
    older = saved | {"meta.policy": np.array(json.dumps({"kind": "mlma", "spec": "mlma",
                                                         "settings": {"alpha": 0.01}}))}
    assert _policy_change(older, policy, now)[1] is None
    changed = saved | {"meta.policy": np.array(json.dumps({"kind": "mlma", "spec": "mlma",
                                                           "settings": {"alpha": 0.05}}))}
    _, change = _policy_change(changed, policy, now)
    assert change.state == "kept" and "alpha 0.05 -> 0.01" in change.message
    assert "common_shock" not in change.message


# -- 3. a frequency still pending -------------------------------------------------------------------------------
def test_a_project_whose_frequency_is_pending_has_nothing_to_do_instead_of_a_traceback(tmp_path):
    root = tmp_path / "d"
    result = CliRunner().invoke(app, ["init", str(root), "--model", "seasonal-naive"])
    assert result.exit_code == 0, result.output
    set_key(root, "executor", '"inline"')
    for day in (1, 2):
        frame = pd.DataFrame({"unique_id": ["a", "b", "c"], "ds": [f"2025-01-0{day}"] * 3, "y": [1.0, 2.0, 3.0]})
        frame.to_csv(tmp_path / f"day{day}.csv", index=False)
    assert "frequency-pending" in ok(run_cli(root, "ingest", str(tmp_path / "day1.csv"))).stdout
    for args in (("tick",), ("tick", "--all")):
        out = " ".join(ok(run_cli(root, *args), 3).stdout.split())
        assert "nothing to do: the frequency is not known yet" in out and "later file" in out, out
    status = " ".join(ok(run_cli(root, "status")).stdout.split())
    assert "none: the frequency is not known yet" in status, status
    service = run_cli(root, "run", "--iterations", "1", "--every", "1s")
    assert service.returncode == 0 and "Traceback" not in service.stdout + service.stderr
    assert "DataError" not in service.stdout + service.stderr
    with Store.open(load_config(root).store_url) as store:
        assert store.ticks().empty
    # The next day's file fixes the frequency; from then on the project waits for ticks as any other.
    assert "frequency D" in ok(run_cli(root, "ingest", str(tmp_path / "day2.csv"))).stdout
    out = " ".join(ok(run_cli(root, "tick"), 3).stdout.split())
    assert "frequency" not in out and "complete tick" in out, out


def test_a_challenger_in_shadow_is_dropped_when_a_baseline_takes_over(make_project, files):
    """A baseline does not judge challengers: one left in shadow by the MLMA policy would keep its stream
    waiting for a verdict for good (a person's re-training never done). It is dropped, and says why."""
    from mlma.registry import ModelRegistry

    root = make_project("mlma")
    config = load_config(root)
    with Store.open(config.store_url) as store:
        uid = store.streams()["unique_id"].iloc[2]
    quick(root, "retrain", uid, "--by", "ana")
    ok(run_cli(root, "tick"))
    with Store.open(config.store_url) as store:
        assert ModelRegistry(store, config.artifacts_dir).version(uid, 2).check["result"] == "pending"
    set_key(root, "policy", '"never"')
    out = next_day(root, files, 1)
    assert "1 challenger(s) in shadow dropped without a verdict" in out, out
    assert policy_audit(root)[-1]["challengers_dropped"] == [uid]
    quick(root, "retrain", uid, "--by", "ana", "--direct")
    next_day(root, files, 2)
    with Store.open(config.store_url) as store:
        registry = ModelRegistry(store, config.artifacts_dir)
        assert registry.version(uid, 2).check["result"] == "rejected"
        assert "does not judge challengers" in registry.version(uid, 2).check["why"]
        assert registry.champion(uid).version == 3                  # the person's re-training was done
        assert set(store.stream_actions()["status"]) == {"applied"} or store.stream_actions(status="pending").empty


@pytest.mark.parametrize("error, escalated", [
    (RuntimeError("a bug in a model plug-in"), True),
    (KeyboardInterrupt(), False),                         # a person stopped it: not a failure to page about
    ("lock-lost", False),                                 # another agent took the lock: the tick is its now
])
def test_what_a_failing_tick_escalates(make_project, monkeypatch, error, escalated):
    from mlma.live import LiveAgent
    from mlma.store import LockLost

    root = make_project()
    config = load_config(root)
    raised = LockLost("lock 'tick' is no longer held") if error == "lock-lost" else error

    def fail(*args, **kwargs):
        raise raised

    with LiveAgent(config, executor="inline") as live:
        monkeypatch.setattr(live, "_compute_and_write", fail)
        with pytest.raises(type(raised)):
            live.step()
        items = live.store.escalations(status="open")
        ticks = live.store.ticks().set_index("tick")
    assert ticks.loc[28, "status"] == "failed"
    assert list(items["kind"]) == (["tick-failed"] if escalated else [])
