"""The model registry and its artifact store, on SQLite and on a real PostgreSQL.

Backends as in tests/test_store.py: a fresh SQLite file, and a uniquely named PostgreSQL schema dropped
afterwards; PostgreSQL cases are skipped without a server, except in CI (CI=true), where they fail.
"""

from __future__ import annotations

import datetime as dt
import os
import pickle
import time

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from mlma.registry import ArtifactCorrupted, ArtifactMissing, ArtifactStore, ModelRegistry, MoveOutcome
from mlma.store import ChampionMove, ChampionMoved, Store, TickRecord
from mlma.store import schema as S


@pytest.fixture
def registry(store, tmp_path):
    store.stream_ids([f"zone-{i}" for i in range(5)])
    return ModelRegistry(store, tmp_path / "artifacts")


class Level:
    """A stand-in forecaster: picklable, compared by value."""

    def __init__(self, level: float) -> None:
        self.level = level

    def __eq__(self, other) -> bool:
        return isinstance(other, Level) and other.level == self.level


# -- artifacts ------------------------------------------------------------------------------------------------
def test_artifacts_are_named_by_their_content_and_written_once(tmp_path):
    artifacts = ArtifactStore(tmp_path / "a")
    sha, size = artifacts.put(Level(3.0))
    data = pickle.dumps(Level(3.0), protocol=pickle.HIGHEST_PROTOCOL)
    assert artifacts.path(sha) == tmp_path / "a" / sha[:2] / sha
    assert artifacts.path(sha).read_bytes() == data and size == len(data)
    inode = artifacts.path(sha).stat().st_ino
    assert artifacts.put(Level(3.0)) == (sha, size)  # the same content: the same name, not rewritten (a write
    assert artifacts.path(sha).stat().st_ino == inode  # goes to a new file renamed into place)
    assert artifacts.put(Level(4.0))[0] != sha
    assert artifacts.load(sha) == Level(3.0)
    assert not list((tmp_path / "a").glob("*/.*.tmp"))


def test_a_tampered_artifact_is_refused_before_it_is_unpickled(tmp_path):
    artifacts = ArtifactStore(tmp_path)
    sha, _ = artifacts.put(Level(3.0))
    path = artifacts.path(sha)
    path.write_bytes(pickle.dumps(Level(666.0)))  # valid pickle, wrong content
    with pytest.raises(ArtifactCorrupted, match=f"{path}.*not to its name {sha}"):
        artifacts.load(sha)
    # Putting the right content again repairs it.
    artifacts.put(Level(3.0))
    assert artifacts.load(sha) == Level(3.0)
    path.unlink()
    with pytest.raises(ArtifactMissing, match=sha):
        artifacts.load(sha)
    with pytest.raises(ValueError, match="64 lower-case hex"):
        artifacts.load("../../etc/passwd")


def test_a_crash_while_writing_leaves_no_artifact_behind(tmp_path, monkeypatch):
    artifacts = ArtifactStore(tmp_path)

    def crash(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="disk gone"):
        sha, _ = artifacts.put(Level(1.0))
    monkeypatch.undo()
    sha = __import__("hashlib").sha256(pickle.dumps(Level(1.0), protocol=pickle.HIGHEST_PROTOCOL)).hexdigest()
    assert not artifacts.exists(sha)
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_garbage_collection_spares_referenced_and_young_artifacts(registry):
    kept = registry.register("zone-0", Level(1.0), spec="naive", promote=True)
    orphan, _ = registry.artifacts.put(Level(2.0))
    young, _ = registry.artifacts.put(Level(3.0))
    old = time.time() - 7200
    for sha in (kept.artifact_sha256, orphan):
        os.utime(registry.artifacts.path(sha), (old, old))
    assert registry.collect_garbage() == [orphan]
    assert registry.artifacts.exists(kept.artifact_sha256) and registry.artifacts.exists(young)


@pytest.mark.parametrize("how", ["one", "many"])
def test_an_old_artifact_a_new_tick_reuses_is_young_again_and_gc_waits_for_running_ticks(registry, how):
    """A crashed tick's artifacts are what `mlma gc` is for, and exactly what its redo writes again (the same
    bytes, the same hash): the redo finds them on disk and must make them young, or gc deletes them between the
    redo's write and its commit and the committed versions point at missing files. gc also waits for a running
    tick: it holds the tick lock."""
    from mlma.store import LockHeld

    left, _ = registry.artifacts.put(Level(4.0))                       # by a tick that crashed 2 hours ago
    old = time.time() - 7200
    os.utime(registry.artifacts.path(left), (old, old))
    if how == "one":
        again, _ = registry.artifacts.put(Level(4.0))                  # its redo
    else:
        with registry.artifacts.batch():
            again, _ = registry.artifacts.put(Level(4.0))
    assert again == left and registry.artifacts.path(left).stat().st_mtime > old + 3600
    assert registry.collect_garbage() == [] and registry.artifacts.exists(left)
    with registry.store.tick_lock("agent@host:1", heartbeat=False):
        with pytest.raises(LockHeld, match="agent@host:1"):
            registry.collect_garbage()


def _with_clock(store: Store, day: str) -> Store:
    """The store with its clock fixed by an ingest (a project's first data), on ``day``."""
    from mlma.store.records import Clock

    frame = pd.DataFrame({"unique_id": "zone-0", "ds": pd.date_range(day, periods=3, freq="h"), "y": 1.0})
    store.ingest_frame(frame, f"{day}.csv", clock=Clock("h", "D", fixed_by="the ingest of a test file"))
    return store


def test_gc_refuses_a_folder_another_store_signed_and_drops_the_stale_signature_of_its_own_url(tmp_path):
    """Each store signs the artifacts folder it keeps models in, by its clock; gc refuses a folder another store
    signed (it deleted that project's serving models). A store re-created at the same URL (mlma.db deleted and
    made again) finds its predecessor's signature: stale, dropped, not another project's. A store without a
    clock row signs nothing, and reads its identity once per registry from the clock table only (the clock's
    fall-back decodes the newest saved state: asked at every model written, 50 models cost 3.7 s)."""
    shared = tmp_path / "shared"
    with _with_clock(Store.create(f"sqlite:///{tmp_path / 'a.db'}"), "2025-01-01") as a:
        first = ModelRegistry(a, shared)
        first.sign_artifacts()                                      # no folder yet: nothing made, nothing signed
        assert not shared.exists()
        first.prepare(a.stream_ids(["zone-0"])[0], Level(1.0), spec="ridge")
        first.sign_artifacts()
    with _with_clock(Store.create(f"sqlite:///{tmp_path / 'b.db'}"), "2025-02-01") as b:
        registry = ModelRegistry(b, shared)
        registry.sign_artifacts()
        with pytest.raises(ValueError, match=r"also holds the models of 1 other store\(s\) \(sqlite:///.*a\.db\)"):
            registry.collect_garbage(min_age_seconds=0)
    (tmp_path / "a.db").unlink()
    with _with_clock(Store.create(f"sqlite:///{tmp_path / 'a.db'}"), "2025-03-01") as again:
        assert len(ModelRegistry(again, shared).artifacts.signatures()) == 2
        registry = ModelRegistry(again, shared)
        registry.sign_artifacts()
        with pytest.raises(ValueError, match=r"1 other store\(s\) \(sqlite:///.*b\.db\)"):
            registry.collect_garbage(min_age_seconds=0)          # the stale one is gone, b's stays
        assert sorted(registry.artifacts.signatures().values()) == sorted(
            {f"sqlite:///{tmp_path / 'a.db'}", f"sqlite:///{tmp_path / 'b.db'}"})
    with Store.create(f"sqlite:///{tmp_path / 'c.db'}") as bare:
        asked = []
        clock = bare.clock
        bare.clock = lambda **options: asked.append(options) or clock(**options)
        unsigned = ModelRegistry(bare, tmp_path / "own")
        for i in range(3):
            unsigned.prepare(bare.stream_ids(["zone-0"])[0], Level(float(i)), spec="ridge")
            unsigned.sign_artifacts()
        assert asked == [{"from_state": False}] and unsigned.artifacts.signatures() == {}


# -- versions and the champion alias -------------------------------------------------------------------------
def test_versions_are_numbered_per_stream_and_keep_their_record(registry):
    first = registry.register("zone-1", Level(1.0), spec="ridge", train_start="2024-01-01",
                              train_end="2024-01-28 23:00", params={"alpha": 0.5},
                              metrics={"mae": 1.25, "n_train": np.int64(672)}, tick=3)
    second = registry.register(1, Level(2.0), spec="ridge", check={"result": "rejected", "ratio": 1.3})
    other = registry.register("zone-2", Level(9.0), spec="naive")
    assert (first.version, second.version, other.version) == (1, 2, 1)
    assert first.unique_id == "zone-1" and first.created_tick == 3 and first.params == {"alpha": 0.5}
    assert first.metrics == {"mae": 1.25, "n_train": 672}
    assert first.train_end == pd.Timestamp("2024-01-28 23:00")
    assert first.created_at.tzinfo is not None
    assert [v.version for v in registry.versions("zone-1")] == [1, 2]
    assert registry.versions("zone-1")[1].check == {"result": "rejected", "ratio": 1.3}
    assert registry.champion("zone-1") is None  # recorded, not promoted
    assert registry.load("zone-1", 2) == Level(2.0)
    with pytest.raises(KeyError, match="no champion"):
        registry.load("zone-1")
    with pytest.raises(KeyError, match="unknown stream 'zone-99'"):
        registry.versions("zone-99")


def test_promote_rollback_history_and_champion_at_answer_who_served_when_and_why(registry):
    store = registry.store
    stamps = []
    v1 = registry.register("zone-4", Level(1.0), spec="naive", promote=True, reason="first model", tick=0)
    stamps.append(v1.created_at)
    v2 = registry.register("zone-4", Level(2.0), spec="lightgbm", promote=True, tick=7,
                           reason="re-trained after degradation; beat the champion 0.91 vs 1.02",
                           check={"result": "promoted", "ratio": 0.91})
    v3 = registry.register("zone-4", Level(3.0), spec="lightgbm")
    time.sleep(0.01)
    promoted = registry.promote("zone-4", 3, by="user:ana", reason="forced before the holiday")
    assert promoted.version == 3 and registry.champion("zone-4").version == 3
    assert registry.promote("zone-4", 3, by="user:ana").version == 3  # already champion: no new move
    time.sleep(0.01)
    back = registry.rollback("zone-4", by="user:bo", reason="v3 over-forecasts")
    assert back.version == 2 and registry.load("zone-4") == Level(2.0)

    history = registry.history("zone-4")
    assert [(h.version, h.previous_version, h.action, h.moved_by) for h in history] == [
        (1, None, "promote", "agent"), (2, 1, "promote", "agent"), (3, 2, "promote", "user:ana"),
        (2, 3, "rollback", "user:bo")]
    assert history[1].tick == 7 and history[2].tick is None

    # Which model served just before the user's promotion, and why was it replaced?
    moment = history[2].at - dt.timedelta(microseconds=1)
    answer = registry.champion_at("zone-4", moment)
    assert answer.model.version == 2 and answer.model.spec == "lightgbm"
    assert answer.since.reason.startswith("re-trained after degradation")
    assert (answer.replaced.version, answer.replaced.moved_by) == (3, "user:ana")
    assert answer.replaced.reason == "forced before the holiday"
    assert "version 2 (lightgbm" in str(answer) and "user:ana" in str(answer)
    now = registry.champion_at("zone-4", pd.Timestamp.now(tz="UTC"))
    assert now.model.version == 2 and now.replaced is None and now.since.action == "rollback"
    assert registry.champion_at("zone-4", history[0].at - dt.timedelta(seconds=1)) is None
    # Naive times are UTC.
    naive = history[2].at.astimezone(dt.timezone.utc).replace(tzinfo=None) - dt.timedelta(microseconds=1)
    assert registry.champion_at("zone-4", naive).model.version == 2

    # A person's moves are in the audit log; the agent's are in the history only.
    audit = store.audit_log(target="stream:zone-4")
    assert audit["action"].tolist() == ["promote", "rollback"]
    assert audit["params"].tolist()[1] == {"stream_id": 4, "version": 2, "previous_version": 3}
    del v2, v3


def test_moves_to_versions_that_do_not_exist_or_by_unknown_actors_are_refused(registry):
    registry.register("zone-0", Level(1.0), spec="naive", promote=True)
    with pytest.raises(KeyError, match="'zone-0' has no model version 5"):
        registry.promote("zone-0", 5, by="user:ana")
    with pytest.raises(ValueError, match="'agent' or 'user:<name>'"):
        registry.promote("zone-0", 1, by="ana")
    with pytest.raises(ValueError, match="only one champion"):
        registry.rollback("zone-0", by="user:ana")
    with pytest.raises(ValueError, match="no champion to roll back"):
        registry.rollback("zone-3", by="user:ana")
    assert registry.roll_back("zone-0", 1, by="user:ana") == (1, False, None)  # serves already: nothing done
    with pytest.raises(ArtifactMissing):
        item = registry.prepare("zone-1", Level(5.0), spec="naive")
        registry.artifacts.path(item.artifact_sha256).unlink()
        registry.register_many([item])
    assert len(registry.history("zone-0")) == 1 and registry.versions("zone-1") == []


def test_bulk_registration_promotion_and_point_in_time_views(store, tmp_path):
    n = 2_000
    store.stream_ids([f"s{i:04d}" for i in range(n)])
    registry = ModelRegistry(store, tmp_path / "artifacts")
    models = [Level(float(i % 7)) for i in range(n)]  # 7 distinct models: artifacts are shared
    started = time.perf_counter()
    items = [registry.prepare(i, models[i], spec="naive", promote=True, reason="initial fit") for i in range(n)]
    first = registry.register_many(items, tick=0)
    seconds = time.perf_counter() - started
    assert first.tolist() == [1] * n and len(list(registry.artifacts.root.glob("??/*"))) == 7
    assert seconds < 10.0, f"registering {n} versions took {seconds:.1f}s"
    before = registry.champions()["since"].max()
    time.sleep(0.01)

    again = registry.register_many([registry.prepare(i, Level(100.0 + i), spec="ridge") for i in range(0, n, 2)])
    assert set(again.tolist()) == {2}
    registry.promote_many([f"s{i:04d}" for i in range(0, n, 2)], again, by="agent", reason="weekly refresh")
    table = registry.champions()
    assert len(table) == n
    assert table["version"].tolist() == [2 if i % 2 == 0 else 1 for i in range(n)]
    assert table.loc[0, "spec"] == "ridge" and table.loc[1, "spec"] == "naive"
    then = registry.champions_at(before)
    assert len(then) == n and set(then["version"]) == {1} and set(then["reason"]) == {"initial fit"}
    some = registry.champions(["s0000", "s0001"])
    assert some["version"].tolist() == [2, 1]

    loaded = registry.load_champions(["s0000", "s0001", "s0003"])
    assert loaded == {0: Level(100.0), 1: Level(1.0), 3: Level(3.0)}
    with pytest.raises(ValueError, match="more than one champion move"):
        registry.promote_many(["s0000", "s0000"], [1, 2], by="agent")


def test_a_tick_records_and_promotes_new_versions_atomically(registry):
    store = registry.store
    items = [registry.prepare(0, Level(1.0), spec="naive", promote=True, reason="initial"),
             registry.prepare(1, Level(2.0), spec="naive", check={"result": "rejected"})]
    written = store.write_tick(TickRecord(5, new_versions=items, audit=[{"actor": "agent", "action": "tick"}]))
    assert written.versions.tolist() == [1, 1]
    assert registry.champion(0).version == 1 and registry.champion(1) is None
    assert registry.history(0)[0].tick == 5 and registry.versions(1)[0].created_tick == 5
    moved = store.write_tick(TickRecord(6, champion_moves=[ChampionMove(1, 1, "agent", "second look", "promote")]))
    assert moved.versions.tolist() == [] and registry.champion(1).version == 1
    with store.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(S.champion_history)).scalar_one() == 2


def test_default_artifact_directory_sits_next_to_a_sqlite_file(tmp_path):
    with Store.create(f"sqlite:///{tmp_path / 'db' / 'mlma.db'}") as store:
        assert ModelRegistry(store).artifacts.root == (tmp_path / "db" / "artifacts").resolve()
    with Store.create("sqlite://") as memory, pytest.raises(ValueError, match="artifacts must be given"):
        ModelRegistry(memory)


def test_moves_to_a_version_whose_artifact_is_damaged_or_missing_are_refused(registry):
    registry.register("zone-0", Level(1.0), spec="naive", promote=True)
    registry.register("zone-0", Level(2.0), spec="naive", promote=True)
    registry.register("zone-0", Level(3.0), spec="naive")
    path = registry.artifacts.path(registry.version("zone-0", 1).artifact_sha256)
    path.write_bytes(path.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ArtifactCorrupted, match=r"cannot roll back stream 'zone-0' to version 1: .* damaged .*"
                                                r"mlma retrain zone-0"):
        registry.rollback("zone-0", by="user:ana")
    with pytest.raises(ArtifactCorrupted, match="cannot promote stream 'zone-0' to version 1"):
        registry.promote("zone-0", 1, by="user:ana")
    registry.artifacts.path(registry.version("zone-0", 3).artifact_sha256).unlink()
    with pytest.raises(ArtifactMissing, match="to version 3: .* is missing"):
        registry.promote_many(["zone-0"], [3], by="user:ana")
    assert registry.champion("zone-0").version == 2 and len(registry.history("zone-0")) == 2


def _at_once(registry, *moves) -> list:
    """Run the moves (callables) in threads that all read the serving version before any of them moves;
    returns what each returned or raised, in order."""
    import threading

    both_read = threading.Barrier(len(moves), timeout=30)
    checked = registry._check_loadable

    def wait_for_the_others(*args):  # called after the champion was read, before the move
        checked(*args)
        both_read.wait()

    registry._check_loadable = wait_for_the_others
    outcomes: list = [None] * len(moves)

    def run(i, move):
        try:
            outcomes[i] = move()
        except ValueError as exc:
            outcomes[i] = exc

    threads = [threading.Thread(target=run, args=(i, m)) for i, m in enumerate(moves)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    registry._check_loadable = checked
    return outcomes


@pytest.mark.parametrize("move", ["rollback", "promote"])
def test_the_same_move_sent_twice_at_once_moves_once(registry, move):
    """Two people (or a retried request) roll back or promote the same stream at the same instant: both read
    version 2 serving before either moves. One moves; the other finds its version serving and changes nothing;
    the history and the audit log hold one move."""
    for level in (1.0, 2.0):
        registry.register("zone-1", Level(level), spec="naive", promote=True, tick=0)
    registry.register("zone-1", Level(3.0), spec="naive", tick=1)
    target = 1 if move == "rollback" else 3
    act = ((lambda: registry.roll_back("zone-1", by="user:ana")) if move == "rollback"
           else (lambda: registry.put_in_service("zone-1", 3, by="user:ana")))
    outcomes = _at_once(registry, act, act)
    assert sorted(o[:2] for o in outcomes) == [(target, False), (target, True)], outcomes
    assert registry.champion("zone-1").version == target
    history = registry.history("zone-1")
    assert len(history) == 3 and (history[-1].version, history[-1].previous_version) == (target, 2)
    log = registry.store.audit_log()
    assert log["action"].tolist() == [move]
    assert sorted(o.audit_id or 0 for o in outcomes) == [0, int(log["id"].iloc[0])]  # the mover names its entry


def test_two_different_moves_at_once_one_wins_and_the_other_is_refused(registry):
    """A roll-back and a promotion of the same stream at the same instant, both read on version 2: the first to
    commit stands, the other is refused naming what serves now; and two first promotions of a stream that has
    no champion yet (no row to lock on PostgreSQL but the stream's)."""
    for level in (1.0, 2.0):
        registry.register("zone-1", Level(level), spec="naive", promote=True, tick=0)
    registry.register("zone-1", Level(3.0), spec="naive", tick=1)
    outcomes = _at_once(registry, lambda: registry.roll_back("zone-1", 1, by="user:ana"),
                        lambda: registry.put_in_service("zone-1", 3, by="user:bob"))
    won = [o for o in outcomes if not isinstance(o, Exception)]
    lost = [o for o in outcomes if isinstance(o, Exception)]
    assert len(won) == 1 and len(lost) == 1 and isinstance(lost[0], ChampionMoved), outcomes
    serving = won[0][0]
    assert registry.champion("zone-1").version == serving
    assert str(lost[0]).startswith(f"stream 'zone-1': version {serving} serves now, not version 2, when this ")
    assert len(registry.history("zone-1")) == 3 and len(registry.store.audit_log()) == 1

    for level in (1.0, 2.0):
        registry.register("zone-2", Level(level), spec="naive", tick=0)
    outcomes = _at_once(registry, lambda: registry.put_in_service("zone-2", 1, by="user:ana"),
                        lambda: registry.put_in_service("zone-2", 2, by="user:bob"))
    assert sorted(map(type, outcomes), key=str) == sorted([MoveOutcome, ChampionMoved], key=str), outcomes
    lost = next(o for o in outcomes if isinstance(o, ChampionMoved))
    assert "serves now, although none did when this promote was asked" in str(lost)
    assert len(registry.history("zone-2")) == 1


def test_champions_read_when_one_version_has_no_training_span(registry):
    """A version registered without its training span (a model imported from MLflow, the Python API) beside
    versions with one: reading the champions failed ("Could not convert object to NumPy datetime"), and with it
    the MLflow mirror of the whole fleet."""
    registry.store.ingest_frame(pd.DataFrame({"unique_id": "zone-9", "ds": pd.date_range("2025-01-01", periods=3,
                                                                                           freq="h"), "y": 1.0}), "z9")
    registry.register("zone-9", Level(1.0), spec="naive", promote=True, tick=0,
                      train_start=pd.Timestamp("2025-01-01"), train_end=pd.Timestamp("2025-01-02"))
    registry.register("zone-1", Level(2.0), spec="naive", promote=True, tick=0)
    champions = registry.champions().set_index("unique_id")
    assert pd.isna(champions.loc["zone-1", "train_start"])
    assert champions.loc["zone-9", "train_start"] == pd.Timestamp("2025-01-01")
