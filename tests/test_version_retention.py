"""Artifact retention by version count: `[registry] keep_versions` and `mlma prune --versions`.

- per stream the artifacts of the newest N versions stay, and so do those of every version in use whatever its age
  (the serving one, the roll-back target, a challenger in shadow or waiting for approval, the versions the agent's
  saved state names); a file shared with a kept version stays;
- the rows stay, marked pruned; a roll-back, promotion or load of such a version is refused, naming the stream,
  the version and the setting; the prune is audited, and a dry run counts without changing anything;
- a prune stopped between marking the rows and deleting the files (killed) is finished by the next one;
- the agent applies the setting after its ticks, and its next ticks run on;
on SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from test_store import fleet_frame

from mlma.registry import ArtifactPruned, ModelRegistry
from mlma.store import Store


def _versions(registry: ModelRegistry, stream: str, models: list[tuple[dict, dict, bool]]) -> None:
    """Register ``(model, check, promote)`` in order."""
    for model, check, promote in models:
        registry.register(stream, model, spec="naive", check=check, promote=promote)


def _fleet(store: Store, root: Path) -> ModelRegistry:
    """Stream ``a``: versions 1-4 promoted in turn (4 serves, 3 is the roll-back target), 5 rejected, 6 in shadow.
    Stream ``b``: 1 serves, 2 waits for approval, 3 rejected (the same bytes as ``a``'s version 1), 4 rejected
    (the same bytes as ``a``'s version 2)."""
    store.stream_ids(["a", "b"])
    registry = ModelRegistry(store, root)
    promoted, rejected = {"result": "promoted"}, {"result": "rejected"}
    _versions(registry, "a", [({"a": i}, promoted, True) for i in (1, 2, 3, 4)]
              + [({"a": 5}, rejected, False), ({"a": 6}, {"result": "pending"}, False)])
    _versions(registry, "b", [({"b": 1}, promoted, True), ({"b": 2}, {"result": "awaiting-approval"}, False),
                              ({"a": 1}, rejected, False), ({"a": 2}, rejected, False)])
    return registry


def _pruned(registry: ModelRegistry, stream: str) -> list[int]:
    return [v.version for v in registry.versions(stream) if v.pruned]


def _sha(registry: ModelRegistry, stream: str, version: int) -> str:
    return registry.version(stream, version).artifact_sha256


def test_the_newest_versions_and_every_version_in_use_keep_their_artifacts(store, tmp_path):
    registry = _fleet(store, tmp_path / "artifacts")
    files = {(s, v.version): v.artifact_sha256 for s in ("a", "b") for v in registry.versions(s)}
    assert len(files) == 10 and len(set(files.values())) == 8          # two files are shared by two versions

    dry = registry.prune_versions(1, by="user:ana", dry_run=True)
    # a: 1, 2 and 5 go (6 is the newest and in shadow, 4 serves, 3 is the roll-back target); b: 3 goes (4 is the
    # newest, 1 serves, 2 waits for approval). a's version 2 shares its file with b's version 4, kept.
    assert (dry.versions, dry.streams, dry.files, dry.dry_run) == (4, 2, 2, True)
    assert "would delete 2 artifact file(s)" in str(dry)
    assert _pruned(registry, "a") == [] and store.audit_log(action="prune-versions").empty
    assert all(registry.artifacts.exists(sha) for sha in files.values())

    done = registry.prune_versions(1, by="user:ana", reason="disk")
    assert (done.versions, done.streams, done.files, done.leftover, done.dry_run) == (4, 2, 2, 0, False)
    assert done.bytes == sum(registry.version(*pair).artifact_bytes for pair in (("a", 1), ("a", 5)))
    assert _pruned(registry, "a") == [1, 2, 5] and _pruned(registry, "b") == [3]
    assert [v.version for v in registry.versions("a")] == [1, 2, 3, 4, 5, 6]        # the rows stay
    assert not registry.artifacts.exists(files[("a", 1)]) and not registry.artifacts.exists(files[("a", 5)])
    assert registry.artifacts.exists(files[("a", 2)])                   # b's version 4 refers to it
    kept = [pair for pair in files if pair not in {("a", 1), ("a", 2), ("a", 5), ("b", 3)}]
    for pair in kept:
        registry.artifacts.verify(files[pair])
    entry = store.audit_log(action="prune-versions").iloc[-1]
    assert (entry["actor"], entry["target"], entry["reason"]) == ("user:ana", "registry", "disk")
    assert entry["params"] == {"keep_versions": 1, "versions": 4, "streams": 2, "files": 2, "bytes": done.bytes}
    assert len(store.audit_log(action="prune-versions", stream="b")) == 1

    again = registry.prune_versions(1, by="user:ana")                  # nothing new: no second entry
    assert (again.versions, again.files) == (0, 0) and len(store.audit_log(action="prune-versions")) == 1
    # A version named by the caller (the agent's saved state) keeps its file too.
    registry.register("a", {"a": 7}, spec="naive", check={"result": "rejected"})
    protected = registry.prune_versions(1, by="user:ana", protect=[(int(store.resolve("a")), 6)])
    assert protected.versions == 0 and _pruned(registry, "a") == [1, 2, 5]


def test_a_pruned_version_is_refused_naming_the_stream_the_version_and_the_setting(store, tmp_path):
    from mlma.control import ActionError, Operations

    registry = _fleet(store, tmp_path / "artifacts")
    registry.prune_versions(1, by="user:ana")
    for call in (lambda: registry.rollback("a", to_version=1, by="user:bo"),
                 lambda: registry.promote("a", 5, by="user:bo"),
                 lambda: registry.load("a", 2)):      # its file is there (shared), but the version is history only
        with pytest.raises(ArtifactPruned, match=r"stream 'a'.*version [125].*\[registry\] keep_versions"):
            call()
    with pytest.raises(FileNotFoundError):                            # what callers that caught that still get
        registry.load("a", 1)
    ops = Operations(store, registry=registry)
    with pytest.raises(ActionError, match=r"cannot roll back stream 'a' to version 1: .*pruned.*keep_versions"):
        ops.rollback("a", 1, by="user:bo", reason="try")
    assert registry.champion("a").version == 4
    assert registry.rollback("a", by="user:bo").version == 3           # the roll-back target was kept
    assert registry.load("a") == {"a": 3}


@pytest.mark.parametrize("stop", ["exception", "kill"])
def test_a_prune_stopped_between_marking_and_deleting_is_finished_by_the_next_one(store, tmp_path, monkeypatch,
                                                                                    stop):
    """The rows are marked and the files queued in one transaction, then the files go: a prune stopped in
    between (an exception; a real SIGKILL of the process) leaves the rows marked and every file in place, and
    the next prune deletes them, without a second audit entry."""
    registry = _fleet(store, tmp_path / "artifacts")
    gone = [_sha(registry, "a", 1), _sha(registry, "a", 5)]
    if stop == "exception":
        def stopped(*args, **kwargs):
            raise KeyboardInterrupt

        monkeypatch.setattr(ModelRegistry, "_delete_queued", stopped)
        with pytest.raises(KeyboardInterrupt):
            registry.prune_versions(1, by="user:ana")
        monkeypatch.undo()
    else:
        script = ("import os, sys\nfrom mlma.registry import ModelRegistry\nfrom mlma.store import Store\n"
                  "ModelRegistry._delete_queued = lambda *a, **k: os.kill(os.getpid(), 9)\n"
                  "with Store.open(sys.argv[1]) as store:\n"
                  "    ModelRegistry(store, sys.argv[2]).prune_versions(1, by='user:ana')\n")
        killed = subprocess.run([sys.executable, "-c", script, store.url, str(tmp_path / "artifacts")],
                                capture_output=True, text=True, timeout=120)
        assert killed.returncode == -9, killed.stderr
        assert store.lock_holder() is not None                         # the killed prune held the tick lock
        store.break_lock(by="user:ana", reason="the prune was killed")
    assert _pruned(registry, "a") == [1, 2, 5] and _pruned(registry, "b") == [3]
    assert all(registry.artifacts.exists(sha) for sha in gone)
    assert len(store.audit_log(action="prune-versions")) == 1
    dry = registry.prune_versions(1, by="user:ana", dry_run=True)
    assert (dry.versions, dry.files, dry.leftover) == (0, 2, 2)

    finished = registry.prune_versions(1, by="user:ana")
    assert (finished.versions, finished.files, finished.leftover) == (0, 2, 2)
    assert "2 of them left by a prune stopped part way" in str(finished)
    assert not any(registry.artifacts.exists(sha) for sha in gone)
    assert len(store.audit_log(action="prune-versions")) == 1
    assert registry.prune_versions(1, by="user:ana").files == 0        # the queue is empty


def test_a_queued_file_that_a_kept_version_needs_again_is_not_deleted(store, tmp_path, monkeypatch):
    """Between the mark and the deletion a new version with the same bytes (a deterministic re-fit) refers to a
    queued file: it stays, and leaves the queue."""
    registry = _fleet(store, tmp_path / "artifacts")
    monkeypatch.setattr(ModelRegistry, "_delete_queued", lambda *args: {})
    registry.prune_versions(1, by="user:ana")
    monkeypatch.undo()
    again = registry.register("a", {"a": 1}, spec="naive", check={"result": "rejected"})   # kept: the newest
    assert again.artifact_sha256 == _sha(registry, "a", 1) and not again.pruned
    finished = registry.prune_versions(3, by="user:ana")
    assert finished.files == 1 and registry.artifacts.exists(again.artifact_sha256)
    assert not registry.artifacts.exists(_sha(registry, "a", 5))
    assert registry.load("a", again.version) == {"a": 1}


def test_a_persons_move_to_a_version_a_prune_marked_meanwhile_is_refused_and_nothing_moves(store, tmp_path):
    """A roll-back or promotion checks its version, then moves the champion (without the tick lock): a prune
    that marked the version in between used to leave it serving with its file gone. The move itself refuses it
    now, in its transaction."""
    from mlma.store import ChampionMoved
    from mlma.store.records import ChampionMove

    registry = _fleet(store, tmp_path / "artifacts")
    registry.prune_versions(1, by="user:ana")
    assert 1 in _pruned(registry, "a")
    history = registry.history("a")
    with pytest.raises(ChampionMoved, match="version 1's model file was deleted by version retention"):
        registry._move_one(ChampionMove(int(store.resolve("a")), 1, "user:bo", "checked before the prune", "rollback"))
    assert registry.history("a") == history and registry.champion("a").version == 4


def test_a_version_put_in_service_between_a_prunes_plan_and_its_marking_keeps_its_file_and_loses_the_mark(
        store, tmp_path, monkeypatch):
    """On PostgreSQL a person's move can commit after a prune planned (the version was not in use) and before it
    marked: the marking waits for the move's lock and then marks a version that serves. The deletion that follows
    finds it in use: its file stays, and its row no longer says it is gone (a load refused a marked version)."""
    from mlma.store.records import ChampionMove
    from mlma.store.version_retention import VersionRetention

    registry = _fleet(store, tmp_path / "artifacts")
    planned = VersionRetention(store).plan(1)                       # a's versions 1, 2 and 5 go, b's 3
    assert (int(store.resolve("a")), 1) in planned.pairs
    registry._move_one(ChampionMove(int(store.resolve("a")), 1, "user:bo", "before the marking", "rollback"))
    monkeypatch.setattr(VersionRetention, "_plan", lambda self, conn, keep, protect: planned)
    registry.prune_versions(1, by="user:ana")
    monkeypatch.undo()
    assert 1 not in _pruned(registry, "a") and registry.artifacts.exists(_sha(registry, "a", 1))
    assert registry.load("a") == {"a": 1}
    assert not registry.artifacts.exists(_sha(registry, "a", 5))    # the rest of the plan went


def test_keep_versions_is_checked_when_mlma_toml_is_read(tmp_path):
    from mlma.project import ConfigError, init_project, load_config

    root = tmp_path / "p"
    init_project(root, model="seasonal-naive")
    toml = root / "mlma.toml"
    assert load_config(root).version_retention() is None               # the template keeps all
    for value, said in (("-1", "must be a whole number from 1 to 10,000, or 0 to keep all, got -1"),
                        ("10001", "got 10001"), ('"3"', "keep_versions must be int")):
        toml.write_text(toml.read_text().replace("keep_versions = 0 ", f"keep_versions = {value} ", 1))
        with pytest.raises(ConfigError, match=r"mlma.toml: \[registry\] keep_versions") as refused:
            load_config(root)
        assert said in str(refused.value)
        toml.write_text(toml.read_text().replace(f"keep_versions = {value} ", "keep_versions = 0 ", 1))
    toml.write_text(toml.read_text().replace("keep_versions = 0 ", "keep_versions = 3 ", 1))
    assert load_config(root).version_retention() == 3


def _live_project(root: Path, keep_versions: int) -> None:
    """A seasonal-naive project of 3 hourly streams over 12 days, re-trained and promoted every daily tick."""
    from mlma.project import init_project, load_config

    init_project(root, model="seasonal-naive")
    toml = root / "mlma.toml"
    toml.write_text(toml.read_text().replace("initial_ticks = 0 ", "initial_ticks = 2 ")
                    .replace("train_window_ticks = 0 ", "train_window_ticks = 3 ")
                    .replace('executor = "process"', 'executor = "inline"')
                    .replace('policy = "mlma"', 'policy = "periodic:1"')
                    .replace("keep_versions = 0 ", f"keep_versions = {keep_versions} "))
    with Store.open(load_config(root).store_url) as store:
        store.ingest_frame(fleet_frame(3, 24 * 12), "history")


def test_the_agent_applies_keep_versions_after_its_ticks_and_ticks_on(tmp_path):
    from mlma.live import LiveAgent
    from mlma.project import load_config

    root = tmp_path / "p"
    _live_project(root, 2)
    with LiveAgent(load_config(root), executor="inline") as live:
        assert live.apply_version_retention() is None                  # no tick yet
        live.catch_up()
        registry = live.registry
        counts = [len(registry.versions(s)) for s in ("zone-00000", "zone-00001", "zone-00002")]
        assert min(counts) >= 5, counts
        report = live.apply_version_retention()
        assert report is not None and report.versions >= 3 * 2 and not report.dry_run
        assert live.apply_version_retention() is None                  # nothing new until a tick
        for stream in ("zone-00000", "zone-00001", "zone-00002"):
            versions = registry.versions(stream)
            serving = registry.champion(stream).version
            target = registry.history(stream)[-1].previous_version
            kept = {v.version for v in versions if not v.pruned}
            assert {serving, target} | {v.version for v in versions[-2:]} <= kept
            for v in versions:
                assert registry.artifacts.exists(v.artifact_sha256) or v.pruned
        entry = live.store.audit_log(action="prune-versions").iloc[-1]
        assert (entry["actor"], entry["reason"]) == ("agent", "[registry] keep_versions = 2")
        # The next ticks load the models they need and re-train on; their old versions go after them.
        newest = live.store.newest_ds()
        live.store.ingest_frame(fleet_frame(3, 24 * 14).query("ds > @newest"), "days 13-14")
        live.catch_up()
        assert live.apply_version_retention().versions >= 3
        assert all(len([v for v in registry.versions(s) if not v.pruned]) <= 3
                   for s in ("zone-00000", "zone-00001", "zone-00002"))


def _cli(root: Path, *args: str) -> subprocess.CompletedProcess:
    env = {"COLUMNS": "300", "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MLMA_USER": "ana"}
    return subprocess.run([sys.executable, "-m", "mlma.cli", *args, "--project", str(root)], capture_output=True,
                          text=True, timeout=600, env=env)


def test_mlma_tick_prunes_versions_and_mlma_prune_versions_counts_prunes_and_lists(tmp_path):
    from mlma.project import load_config

    root = tmp_path / "p"
    _live_project(root, 0)
    done = _cli(root, "tick", "--all")
    assert done.returncode == 0 and "retention: pruned" not in done.stdout, done.stdout + done.stderr

    both = _cli(root, "prune", "--versions", "2", "--keep", "3D")
    assert both.returncode == 2 and "not --keep and --versions together" in " ".join(both.stdout.split())
    bad = _cli(root, "prune", "--versions", "0")
    assert bad.returncode == 2 and "from 1 to 10,000, got 0" in bad.stdout + bad.stderr
    dry = _cli(root, "prune", "--versions", "2", "--dry-run")
    assert dry.returncode == 0 and "would prune the artifacts of" in dry.stdout, dry.stdout + dry.stderr
    with Store.open(load_config(root).store_url) as store:
        assert store.audit_log(action="prune-versions").empty
    ran = _cli(root, "prune", "--versions", "2", "--reason", "disk")
    assert ran.returncode == 0 and "pruned the artifacts of" in ran.stdout, ran.stdout + ran.stderr
    with Store.open(load_config(root).store_url) as store:
        entry = store.audit_log(action="prune-versions").iloc[-1]
        assert (entry["actor"], entry["reason"]) == ("user:ana", "disk")

    listed = _cli(root, "versions", "zone-00000", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)
    assert rows[0]["artifact_pruned_at"] is not None and rows[-1]["artifact_pruned_at"] is None
    table = _cli(root, "versions", "zone-00000")
    assert "(artifact pruned" in table.stdout
    refused = _cli(root, "rollback", "zone-00000", "--to-version", "1", "--reason", "try")
    said = " ".join((refused.stdout + refused.stderr).split())
    assert refused.returncode == 2 and "cannot roll back stream 'zone-00000' to version 1" in said, said
    assert "[registry] keep_versions" in said

    # With the setting, `mlma tick` prunes after its ticks (once per new tick), and says so.
    toml = root / "mlma.toml"
    toml.write_text(toml.read_text().replace("keep_versions = 0 ", "keep_versions = 2 "))
    with Store.open(load_config(root).store_url) as store:
        newest = store.newest_ds()
        store.ingest_frame(fleet_frame(3, 24 * 13).query("ds > @newest"), "day 13")
    ticked = _cli(root, "tick")
    assert ticked.returncode == 0 and "retention: pruned the artifacts of 3 model version(s)" in ticked.stdout, \
        ticked.stdout + ticked.stderr
