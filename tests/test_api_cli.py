"""The engineer's commands (``mlma.api.cli.register``) on a real project folder made by ``init_project``.

Each action command is run with typer's CliRunner and its effect checked in the store and the audit log;
``serve`` is started as a real process and answers over HTTP.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import httpx
import pandas as pd
import pytest
import typer
from typer.testing import CliRunner

from mlma.api import auth
from mlma.api.cli import register
from mlma.api.sample import build_sample_fleet
from mlma.control import Operations
from mlma.project import init_project
from mlma.registry import ModelRegistry
from mlma.store import Store


def _app() -> typer.Typer:
    app = typer.Typer()

    @app.callback()
    def main() -> None:
        """mlma (test shell)."""

    register(app)
    return app


APP = _app()
runner = CliRunner()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    config = init_project(tmp_path_factory.mktemp("cli") / "project", model="seasonal-naive")
    with Store.open(config.store_url) as store:
        fleet = build_sample_fleet(store, config.artifacts_dir, n_streams=12, n_ticks=6)
    return config, fleet


def run(project, *args: str, user: str | None = "ana", ok: bool = True):
    config, _ = project
    env = {"MLMA_USER": user} if user else {}
    result = runner.invoke(APP, [*args, "--project", str(config.root)], env=env)
    if ok:
        assert result.exit_code == 0, result.output
    return result


def store_of(project) -> Store:
    return Store.open(project[0].store_url)


def last_audit(project) -> pd.Series:
    with store_of(project) as store:
        return store.audit_log().iloc[-1]


def overrides(project, uid: str) -> dict:
    with store_of(project) as store:
        table = store.streams().set_index("unique_id")
    return table.loc[uid, "overrides"] or {}


def test_token_bootstrap_list_and_revoke_without_any_token(project):
    made = run(project, "token", "create", "root-admin", "--role", "admin", "--by", "root")
    plain = made.output.strip().splitlines()[-1]
    assert plain.startswith("mlma_")
    with store_of(project) as store:
        assert auth.authenticate(store, plain).role == "admin"
        assert store.audit_log().iloc[-1]["actor"] == "user:root"
    listed = run(project, "token", "list")
    assert "root-admin" in listed.output and plain not in listed.output
    bad = run(project, "token", "create", "x", "--role", "superuser", ok=False)
    assert bad.exit_code == 2 and "role must be one of viewer, operator, admin" in bad.output
    again = run(project, "token", "create", "root-admin", ok=False)
    assert again.exit_code == 2 and "exists" in again.output
    long = run(project, "token", "revoke", "root-admin", "--last-admin", "--reason", "x" * 3000, ok=False)
    assert long.exit_code == 2 and "reason must be at most" in " ".join(long.output.split()), long.output
    assert isinstance(long.exception, SystemExit)                  # said in a line, no traceback; nothing revoked
    with store_of(project) as store:
        assert auth.authenticate(store, plain).role == "admin"
    last = run(project, "token", "revoke", "root-admin", "--reason", "rotated", ok=False)
    assert last.exit_code == 2 and "is the last active admin token" in " ".join(last.output.split()), last.output
    run(project, "token", "revoke", "root-admin", "--reason", "rotated", "--last-admin")
    with store_of(project) as store:
        assert auth.authenticate(store, plain) is None
    assert run(project, "token", "revoke", "root-admin", ok=False).exit_code == 2


def test_the_actor_comes_from_by_then_mlma_user_then_the_login(project):
    _, fleet = project
    uid = fleet.unique_ids[0]
    run(project, "pin", uid, "--by", "bo", user="ana")
    assert last_audit(project)["actor"] == "user:bo"
    run(project, "unpin", uid, user="ana")
    assert last_audit(project)["actor"] == "user:ana"
    import getpass

    run(project, "pin", uid, user=None)
    assert last_audit(project)["actor"] == f"user:{os.environ.get('MLMA_USER') or getpass.getuser()}"
    run(project, "unpin", uid)
    # An empty --by names nobody: refused, not audited as the login name (someone the person did not mean).
    with store_of(project) as store:
        before = len(store.audit_log())
    for empty in ("", " ", "user:"):
        refused = run(project, "pin", uid, "--by", empty, ok=False)
        assert refused.exit_code == 2 and "--by names nobody" in refused.output, refused.output
    with store_of(project) as store:
        assert len(store.audit_log()) == before
    assert not [key for key in overrides(project, uid) if key.startswith("pin")], overrides(project, uid)


def test_pin_unpin_streams_and_a_group_with_until(project):
    _, fleet = project
    uid = fleet.unique_ids[1]
    until = (pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=25)).strftime("%Y-%m-%d")   # pins end in the future
    out = run(project, "pin", uid, "--until", until, "--reason", "holiday").output
    assert "pin: 1 stream" in out
    assert overrides(project, uid)["pinned_until"].startswith(f"{until}T00:00:00")
    entry = last_audit(project)
    assert (entry["action"], entry["target"], entry["reason"]) == ("pin", f"stream:{uid}", "holiday")
    out = run(project, "pin", "--group", "city=c02", "-r", "festival").output
    assert "pin: 3 streams" in out and last_audit(project)["target"] == "group:city=c02"
    run(project, "unpin", "--group", "city=c02")
    assert "pinned_until" not in overrides(project, fleet.unique_ids[2])


def test_retrain_reset_reference_approve_reject_are_queued(project):
    _, fleet = project
    uid = fleet.unique_ids[3]
    said = run(project, "retrain", uid, "--direct").output
    assert "1 queued for the next tick; direct [audit #" in said, said
    said = run(project, "retrain", "--group", "city=c01", "--reason", "new depot").output
    assert "queued for the next tick [audit #" in said and "False" not in said, said
    run(project, "reset-reference", uid, "--rebase")
    assert last_audit(project)["action"] == "rebase-reference"
    run(project, "reset-reference", uid)
    refused = run(project, "approve", uid, "-r", "looks right", ok=False)   # nothing waits for approval
    assert refused.exit_code == 2 and "nothing to approve" in refused.output
    config, _ = project
    with Store.open(config.store_url) as store:
        ModelRegistry(store, config.artifacts_dir).register(uid, {"sample": True}, spec="seasonal-naive",
                                                            check={"result": "awaiting-approval"})
    run(project, "approve", uid, "-r", "looks right")
    run(project, "reject", uid)
    listed = json.loads(run(project, "actions", "--status", "pending", "--stream", uid, "--json").output)
    assert [(a["kind"], a["params"]) for a in listed] == [
        ("reject", {"version": 2}), ("approve", {"version": 2}), ("reset-reference", {"rebase": False}),
        ("reset-reference", {"rebase": True}), ("retrain", {"direct": True})]
    assert all(a["created_by"] == "user:ana" for a in listed)
    run(project, "cancel-action", str(listed[0]["id"]), "--reason", "changed my mind")
    after = json.loads(run(project, "actions", "--stream", uid, "--json").output)
    assert after[0]["status"] == "cancelled"
    table = run(project, "actions", "--status", "pending").output
    assert "retrain" in table and "approve" in table


def test_rollback_and_promote(project):
    config, fleet = project
    uid = fleet.promoted[0]
    registry = ModelRegistry(Store.open(config.store_url), config.artifacts_dir)
    try:
        assert registry.champion(uid).version == 2
        assert "version 1" in run(project, "rollback", uid, "--reason", "over-forecasts").output
        assert registry.champion(uid).version == 1
        assert registry.history(uid)[-1].moved_by == "user:ana"
        run(project, "promote", uid, "2")
        assert registry.champion(uid).version == 2
        run(project, "rollback", uid, "--to-version", "1")
        assert registry.champion(uid).version == 1
        run(project, "promote", uid, "2")
        for _ in range(2):  # run again by a script's retry: the second changes nothing
            run(project, "rollback", uid, "--from-version", "2")
            assert registry.champion(uid).version == 1 and registry.history(uid)[-1].previous_version == 2
        assert len(registry.history(uid)) == 7  # two promotions, then three moves each way, then one roll-back
        stale = run(project, "rollback", uid, "--from-version", "3", ok=False)
        assert stale.exit_code == 2 and "version 3 does not serve stream" in stale.output
        refused = run(project, "rollback", uid, "--to-version", "7", ok=False)
        assert refused.exit_code == 2 and "no model version 7" in refused.output
    finally:
        registry.store.close()


def test_abnormal_mark_list_cancel(project):
    _, fleet = project
    uid = fleet.unique_ids[4]
    run(project, "abnormal", "mark", "2026-12-24", "2026-12-27", uid, "--reason", "holiday")
    run(project, "abnormal", "mark", "2026-11-03 06:00", "2026-11-03 09:00", "--reason", "feed outage")
    assert last_audit(project)["target"] == "fleet"
    periods = json.loads(run(project, "abnormal", "list", "--json").output)
    mine = next(p for p in periods if p["unique_id"] == uid)
    assert (mine["start"], mine["end"]) == ("2026-12-24T00:00:00", "2026-12-27T00:00:00")
    run(project, "abnormal", "cancel", str(mine["id"]))
    assert mine["id"] not in [p["id"] for p in json.loads(run(project, "abnormal", "list", "--json").output)]
    wrong = run(project, "abnormal", "mark", "2026-12-27", "2026-12-24", uid, ok=False)
    assert wrong.exit_code == 2 and "must end after it starts" in wrong.output
    # Paged, newest first, with the total in the title; by stream (its own and the fleet's).
    run(project, "abnormal", "mark", "2027-01-01", "2027-01-02", "--group", "city=c01", "--reason", "new year")
    listed = run(project, "abnormal", "list", "--limit", "2", "--json")
    first = json.loads(listed.stdout)          # the JSON stays a list; that there is more is said on stderr
    assert "note: the newest 2 of " in listed.stderr and "--page, --limit" in listed.stderr
    second = json.loads(run(project, "abnormal", "list", "--limit", "2", "--page", "2", "--json").stdout)
    assert len(first) == len(second) == 2 and first[0]["id"] > first[1]["id"] > second[0]["id"] > second[1]["id"]
    assert "abnormal periods: 2 of " in run(project, "abnormal", "list", "--limit", "2").output
    theirs = json.loads(run(project, "abnormal", "list", "--stream", uid, "--json").output)
    assert {p["scope"] for p in theirs} == {"fleet"}          # its own was cancelled above


def test_escalation_commands(project):
    with store_of(project) as store:
        ids = store.escalations(status="open")["id"].astype(int).tolist()
    run(project, "ack", str(ids[0]), "--reason", "looking")
    run(project, "silence", str(ids[1]), "--for", "4h")
    run(project, "silence", str(ids[2]), "--until", "2030-01-01T00:00")
    run(project, "resolve", str(ids[0]))
    run(project, "reopen", str(ids[0]))
    with store_of(project) as store:
        status = store.escalations().set_index("id")["status"]
    assert status[ids[0]] == "open" and status[ids[1]] == "silenced" and status[ids[2]] == "silenced"
    assert run(project, "silence", str(ids[1]), ok=False).exit_code == 2


def test_require_approval_and_set_params(project):
    _, fleet = project
    uid = fleet.unique_ids[5]
    run(project, "require-approval", uid)
    assert overrides(project, uid)["needs_approval"] is True
    run(project, "require-approval", uid, "--off")
    assert "needs_approval" not in overrides(project, uid)
    run(project, "set-params", uid, "--delta", "0.2", "--cooldown-ticks", "3")
    assert overrides(project, uid) == {"delta": 0.2, "cooldown_ticks": 3}
    run(project, "set-params", uid, "--delta", "default")
    assert overrides(project, uid) == {"cooldown_ticks": 3}
    bad = run(project, "set-params", uid, "--cooldown-ticks", "1.5", ok=False)
    assert bad.exit_code == 2 and "--cooldown-ticks" in bad.output
    negative = run(project, "set-params", uid, "--delta", "-1", ok=False)
    assert negative.exit_code == 2 and "parameter delta" in negative.output and "got -1.0" in negative.output


@pytest.mark.parametrize("option, value, bound", [
    # 1e20: an OverflowError in every later tick; 2^62 wrapped to 0 in the 32-bit counters
    ("--cooldown-ticks", "100000000000000000000", "whole number from 0 to 10000 (for stream"),
    ("--cooldown-ticks", str(2**62), "from 0 to 10000"),
    ("--cooldown-ticks", str(2**31), "from 0 to 10000"),
    ("--delta", "inf", "finite number from 0 to 100 (for stream"),
    ("--delta", "1e400", "finite number from 0 to 100 (for stream"),
    ("--delta", "nan", "finite number from 0 to 100 (for stream"),
])
def test_set_params_refuses_values_out_of_bounds_and_writes_nothing(project, option, value, bound):
    _, fleet = project
    uid = fleet.unique_ids[6]
    before = overrides(project, uid)
    with store_of(project) as store:
        n_audit = len(store.audit_log())
    bad = run(project, "set-params", uid, option, value, ok=False)
    text = " ".join(bad.output.split())
    assert bad.exit_code == 2, bad.output
    assert f"parameter {option[2:].replace('-', '_')} must be" in text and f"(for stream {uid})" in text, text
    assert bound in text, text
    assert overrides(project, uid) == before
    with store_of(project) as store:
        assert len(store.audit_log()) == n_audit


@pytest.mark.parametrize("args, message", [
    (("abnormal", "mark", "2609-01-01", "2609-01-05"), "start must be a data time from 1900-01-01 to 2199-12-31"),
    (("abnormal", "mark", "2025-01-01", "2262-05-01"), "end must be a data time"),
    (("pin", "zone-0001", "--until", "2001-01-01"), "until must be in the future"),
    (("pin", "zone-0001", "--until", "2999-01-01"), "until must be at most 3650 days ahead"),
    # A refused pin says which streams it was for (a script pins group after group).
    (("pin", "zone-0001", "--until", "2001-01-01"), "; nothing was pinned (1 stream: zone-0001)"),
    (("pin", "zone-0004", "zone-0001", "zone-0002", "zone-0003", "--until", "2001-01-01"),
     "; nothing was pinned (4 streams: zone-0001, zone-0002, zone-0003 and 1 more)"),
    (("pin", "--group", "city=c02", "--until", "2999-01-01"),
     "; nothing was pinned (group:city=c02, 3 streams: zone-0002, zone-0006, zone-0010)"),
    (("silence", "1", "--until", "2001-01-01T00:00"), "until must be in the future"),
    (("silence", "1", "--for", "100000d"), "until must be at most 3650 days ahead"),
    (("ack", str(2**70)), "escalation ids are whole numbers from 1 to 9223372036854775807"),
    (("abnormal", "cancel", str(2**64)), "abnormal period ids are whole numbers from 1 to"),
    (("cancel-action", str(2**64)), "action ids are whole numbers from 1 to"),
    (("rollback", "zone-0001", "--to-version", str(2**70)), "model versions are whole numbers from 1 to"),
    (("promote", "zone-0001", str(2**64)), "model versions are whole numbers from 1 to"),
])
def test_dates_out_of_range_or_in_the_past_and_ids_beyond_64_bits_are_refused(project, args, message):
    with store_of(project) as store:
        n_audit, n_periods = len(store.audit_log()), len(Operations(store).abnormal_periods(active_only=False))
    bad = run(project, *args, ok=False)
    assert bad.exit_code == 2 and message in " ".join(bad.output.split()), bad.output
    with store_of(project) as store:
        assert len(store.audit_log()) == n_audit
        assert len(Operations(store).abnormal_periods(active_only=False)) == n_periods


@pytest.mark.parametrize("args, message", [
    (("pin", "no-such-zone"), "unknown stream 'no-such-zone'"),
    (("pin",), "name streams"),
    (("pin", "zone-0001", "--group", "city=c01"), "not both"),
    (("retrain", "--group", "city"), "key=value"),
    (("retrain", "--group", "city=atlantis"), "no stream has the attributes"),
    (("promote", "zone-0001", "9"), "no model version 9"),
    (("rollback", "no-such-zone"), "error: unknown stream 'no-such-zone'\n"),
    (("ack", "987654"), "no escalation"),
])
def test_bad_input_exits_2_with_the_reason(project, args, message):
    with store_of(project) as store:
        before = len(store.audit_log())
    result = run(project, *args, ok=False)
    assert result.exit_code == 2 and message in result.output, result.output
    with store_of(project) as store:
        assert len(store.audit_log()) == before


def test_versions_lists_what_rollback_and_promote_choose_from(project):
    _, fleet = project
    uid = fleet.unique_ids[1]
    listed = json.loads(run(project, "versions", uid, "--json").output)
    assert listed and [v["version"] for v in listed] == sorted(v["version"] for v in listed)
    assert sum(v["serving"] for v in listed) == 1
    with store_of(project) as store:
        registry = ModelRegistry(store, project[0].artifacts_dir)
        assert [v["version"] for v in listed] == [v.version for v in registry.versions(uid)]
        serving = registry.champion(uid).version
    assert [v["version"] for v in listed if v["serving"]] == [serving]
    table = " ".join(run(project, "versions", uid).output.split())
    assert f"{uid}: {len(listed)} model version(s)" in table and "yes" in table
    bad = run(project, "versions", "no-such-zone", ok=False)
    assert bad.exit_code == 2 and "unknown stream 'no-such-zone'" in bad.output
    # A version that serves a fall-back says so (its spec names the model that was asked for).
    reason = "history has 30 observations, ridge needs 216"
    with store_of(project) as store:
        registry = ModelRegistry(store, project[0].artifacts_dir)
        version = registry.register(uid, registry.load(uid, serving), spec="ridge",
                                    metrics={"fallback_reason": reason}).version
    listed = {v["version"]: v for v in json.loads(run(project, "versions", uid, "--json").output)}
    assert listed[version]["fallback_reason"] == reason
    table = run(project, "versions", uid).output  # the cell wraps: its words, in order, on the row
    assert "(fell" in table and "back:" in table and "needs" in table


def test_the_queue_groups_by_the_projects_setting_in_the_cli_and_the_served_api(tmp_path):
    """`[queue] group_by` in mlma.toml groups `mlma escalations` and the served queue alike (the dashboard showed
    items by city whatever the CLI was told, and the other way round); `--group-by` overrides it."""
    from fastapi.testclient import TestClient

    from mlma.api.app import create_app
    from mlma.project import load_config

    config = init_project(tmp_path / "project", model="seasonal-naive")
    with Store.open(config.store_url) as store:
        build_sample_fleet(store, config.artifacts_dir, n_streams=12, n_ticks=6)
        _, admin = auth.create_token(store, "admin", role="admin", by="user:test")
    here = (config, None)

    def scopes(*options: str) -> set[str]:
        return {item["scope"] for item in json.loads(run(here, "escalations", "--json", *options).stdout)["items"]}

    def served_scopes() -> set[str]:
        with TestClient(create_app(load_config(config.root))) as client:
            answer = client.get("/api/escalations", headers={"Authorization": f"Bearer {admin}"})
        assert answer.status_code == 200, answer.text
        return {item["scope"] for item in answer.json()["items"]}

    by_city = scopes()
    assert any(scope.startswith("city=") for scope in by_city) and served_scopes() == by_city   # the default
    toml = config.root / "mlma.toml"
    toml.write_text(toml.read_text().replace('group_by = "city"', 'group_by = ""'))
    ungrouped = scopes()
    assert not any(scope.startswith("city=") for scope in ungrouped) and served_scopes() == ungrouped
    assert scopes("--group-by", "city") == by_city   # the option still overrides the file


def test_commands_need_a_project(tmp_path):
    result = runner.invoke(APP, ["pin", "zone-1", "--project", str(tmp_path)])
    assert result.exit_code == 2 and "mlma.toml" in result.output


def test_read_commands(project):
    queue = json.loads(run(project, "escalations", "--json").output)
    assert queue["items"][0]["kind"] == "data-quality" and queue["items"][0]["severity"] == 3
    assert "data-quality" in run(project, "escalations").output
    # A city's item whose members failed each their own way says so (it showed one member's error for all).
    import mlma.api.cli
    from mlma.escalations import Escalation

    with store_of(project) as store:
        streams = store.streams()
        city = streams[streams["attributes"].map(lambda a: a.get("city")) == "c00"].head(3)
        tick = int(store.last_done_tick())
        ids = store.add_escalations([Escalation(int(s), tick, "forecast-failed", 1, f"ValueError: input {i % 2}")
                                     for i, s in enumerate(city["id"])])
    try:
        with pytest.MonkeyPatch.context() as wide:
            wide.setattr(mlma.api.cli.console, "width", 1000)           # a cell's text on one line
            table = run(project, "escalations").output
        [line] = [line for line in table.splitlines() if "forecast-failed" in line]
        assert "ValueError: input" in line and "(+1 other message(s); --json gives each member's)" in line, line
    finally:
        with store_of(project) as store:
            store.set_escalation_status(ids, "resolved", by="user:test")
    assert run(project, "escalations", "--status", "bogus", ok=False).exit_code == 2
    audit = json.loads(run(project, "audit", "--limit", "3", "--json").output)
    assert len(audit) == 3 and audit[0]["id"] > audit[1]["id"]
    pins = json.loads(run(project, "audit", "--action", "pin", "--json").output)
    assert pins and all(a["action"] == "pin" for a in pins)
    assert "audit log" in run(project, "audit").output
    _, fleet = project
    a, b, c = fleet.unique_ids[9:12]
    run(project, "pin", a, b, "--reason", "two zones")                  # one entry, target streams:2
    about = {u: [e["target"] for e in json.loads(run(project, "audit", "--stream", u, "--json").output)]
             for u in (a, b, c)}
    assert "streams:2" in about[a] and "streams:2" in about[b] and "streams:2" not in about[c]
    unknown = run(project, "audit", "--stream", "no-such-zone", ok=False)
    assert unknown.exit_code == 2 and "unknown stream 'no-such-zone'" in unknown.output
    run(project, "unpin", a, b)


def test_serve_runs_the_dashboard_on_localhost(project):
    config, _ = project
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = ("import typer; from mlma.api.cli import register; app = typer.Typer(); app.callback()(lambda: None); "
            "register(app); app()")
    server = subprocess.Popen([sys.executable, "-c", code, "serve", "--port", str(port), "--project", str(config.root)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, server.stdout.read()
                time.sleep(0.2)
        assert health.json()["status"] == "ok"
        assert httpx.get(f"http://127.0.0.1:{port}/api/fleet").status_code == 401
        assert "<title>mlma</title>" in httpx.get(f"http://127.0.0.1:{port}/").text
        assert (config.root / ".mlma" / "session-key").stat().st_mode & 0o077 == 0
    finally:
        server.terminate()
        server.wait(15)


def test_the_session_key_file_never_exists_half_written(tmp_path, monkeypatch):
    """Server processes starting at once on one project: the key was created empty and written afterwards, so
    a process starting in between read an empty key and signed its sessions with it (8 of 150 rounds of four
    processes). Now it is written under another name and linked into place whole; the first link wins."""
    path = tmp_path / ".mlma" / "session-key"
    seen_while_writing: list[bool] = []
    real_fdopen = os.fdopen

    class Watched:
        def __init__(self, handle):
            self.handle = handle

        def __enter__(self):
            self.handle.__enter__()
            return self

        def __exit__(self, *exc):
            return self.handle.__exit__(*exc)

        def write(self, text):
            seen_while_writing.append(path.exists())       # what another process starting now would find
            return self.handle.write(text)

        def __getattr__(self, name):
            return getattr(self.handle, name)

    monkeypatch.setattr(os, "fdopen", lambda *a, **kw: Watched(real_fdopen(*a, **kw)))
    key = auth.load_or_create_secret(path)
    assert seen_while_writing == [False]
    assert len(key) == 32 and bytes.fromhex(path.read_text().strip()) == key
    assert path.stat().st_mode & 0o077 == 0 and [p.name for p in path.parent.iterdir()] == ["session-key"]
    assert auth.load_or_create_secret(path) == key           # the next process reads it


def test_a_session_key_file_that_holds_no_key_is_refused_by_name(project, tmp_path):
    """An empty file (left by a crash) or a mangled one was taken as the key b"" or crashed `mlma serve` with
    fromhex's words and no file."""
    for text in ("", "not hex\n", "ab" * 8 + "\n"):
        path = tmp_path / "session-key"
        path.write_text(text)
        with pytest.raises(ValueError, match="does not hold a session key"):
            auth.load_or_create_secret(path)
    config, _ = project
    key_file = config.root / ".mlma" / "session-key"
    before = key_file.read_text() if key_file.exists() else None
    key_file.parent.mkdir(exist_ok=True)
    key_file.write_text("")
    try:
        result = run(project, "serve", "--port", "1", ok=False)
        said = " ".join(result.output.split())
        assert result.exit_code == 2 and f"{key_file} does not hold a session key" in said, said
    finally:
        if before is None:
            key_file.unlink()
        else:
            key_file.write_text(before)


def test_the_session_key_is_made_on_a_file_system_without_hard_links(tmp_path, monkeypatch):
    """Some network and FUSE mounts refuse hard links: the key is then created in place, as it was before."""
    import errno

    def no_links(*args, **kwargs):
        raise OSError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    path = tmp_path / ".mlma" / "session-key"
    key = auth.load_or_create_secret(path)
    assert len(key) == 32 and auth.load_or_create_secret(path) == key
    assert [p.name for p in path.parent.iterdir()] == ["session-key"] and path.stat().st_mode & 0o077 == 0
