"""The store's public interface for callers outside it: spanning transactions, typed overrides, small reads."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from mlma.control import Operations
from mlma.store import NewVersion, Store
from mlma.store.overrides import StreamOverrides
from mlma.store.registry_tables import RegistryTables
from mlma.store.transaction import TransactionClosed

UTC = dt.timezone.utc


@pytest.fixture
def store():
    store = Store.create("sqlite://")
    frame = pd.DataFrame({"unique_id": ["a", "a", "b", "b", "c", "c"],
                          "ds": pd.to_datetime(["2025-01-01", "2025-01-02"] * 3), "y": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]})
    store.ingest_frame(frame, "test")
    yield store
    store.close()


def test_a_transaction_commits_the_change_and_its_audit_entry_together(store):
    with store.transaction() as tx:
        tx.merge_overrides({0: {"needs_approval": True}})
        queued = tx.queue_actions([1, 2], "retrain", {"direct": False}, by="user:ana", reason="launch")
        entry = tx.audit("user:ana", "retrain", "streams:2", {"streams": 2}, "launch")
    assert queued == 2
    assert store.audit_log()["id"].tolist() == [entry]
    assert store.stream_actions(status="pending")["unique_id"].tolist() == ["c", "b"]   # newest first
    assert store.stream_overrides() == {0: StreamOverrides(needs_approval=True)}


def test_a_failing_transaction_leaves_neither_the_change_nor_the_audit_entry(store):
    with pytest.raises(KeyError, match="unknown stream"):
        with store.transaction() as tx:
            tx.queue_actions([0], "retrain", {}, by="user:ana")
            tx.audit("user:ana", "retrain", "stream:a")
            tx.merge_overrides({99: {"needs_approval": True}})       # no stream 99: everything rolls back
    assert store.audit_log().empty and store.stream_actions().empty and store.stream_overrides() == {}


def test_a_transaction_handle_cannot_be_used_after_its_block(store):
    with store.transaction() as tx:
        pass
    with pytest.raises(TransactionClosed, match="has ended"):
        tx.audit("user:ana", "late")
    assert store.audit_log().empty


def test_transaction_writes_check_their_arguments(store):
    with store.transaction() as tx:
        with pytest.raises(ValueError, match="kind must be one of"):
            tx.queue_actions([0], "reboot", {}, by="user:ana")
        with pytest.raises(ValueError, match="by must be"):
            tx.add_abnormal_periods([None], dt.datetime(2025, 1, 1), dt.datetime(2025, 1, 2), by="ana")
        with pytest.raises(ValueError, match="role must be one of"):
            tx.add_token("bot", "root", "ab" * 32, by="user:ana")


def test_cancel_counts_only_rows_still_active(store):
    with store.transaction() as tx:
        tx.add_abnormal_periods([None, 0], dt.datetime(2025, 1, 1), dt.datetime(2025, 1, 2), by="user:ana")
    ids = store.abnormal_periods()["id"].tolist()
    with store.transaction() as tx:
        assert tx.cancel_abnormal_periods(ids[:1]) == ids[:1]
    with store.transaction() as tx:
        assert tx.cancel_abnormal_periods(ids) == ids[1:]            # the first one was cancelled already
        assert tx.unknown_ids("abnormal_periods", [ids[1], 987654, ids[0]]) == [987654]
    assert store.abnormal_periods().empty
    assert len(store.abnormal_periods(active_only=False)) == 2


def test_registry_rows_through_a_transaction_and_registry_tables(store):
    sha = "cd" * 32
    with store.transaction() as tx:
        numbers = tx.record_versions([NewVersion(stream=0, artifact_sha256=sha, artifact_bytes=1, spec="naive"),
                                      NewVersion(stream=0, artifact_sha256=sha, artifact_bytes=1, spec="naive")])
    assert numbers.tolist() == [1, 2]
    from mlma.store import ChampionMove

    with store.transaction() as tx:
        tx.move_champions([ChampionMove(0, 2, "user:ana", "better")])
    tables = RegistryTables(store)
    assert tables.champion_version(0) == 2 and tables.champion_version(1) is None
    assert [(c.version, c.moved_by) for c in tables.history(0)] == [(2, "user:ana")]
    assert tables.latest_versions() == [(0, "a", 2)]
    assert tables.artifact_hashes() == {sha}
    assert list(tables.champions().columns)[:3] == ["stream_id", "unique_id", "version"]
    # A user's move is audited in the move's own transaction.
    assert store.audit_log()["action"].tolist() == ["promote"]


def test_stream_overrides_are_parsed_in_one_place(store):
    Operations(store).pin(["a"], by="user:ana")
    Operations(store).set_params(["b"], params={"delta": 0.2, "cooldown_ticks": 3}, by="user:ana")
    overrides = store.stream_overrides()
    assert overrides == {0: StreamOverrides(pinned_until="forever"),
                         1: StreamOverrides(delta=0.2, cooldown_ticks=3)}
    assert store.stream_overrides(["b"]) == {1: overrides[1]}
    assert overrides[0].pinned_at(dt.datetime(2100, 1, 1)) and not overrides[1].pinned_at(dt.datetime(2100, 1, 1))


@pytest.mark.parametrize("blob, message", [
    ({"pinned_until": 5}, "pinned_until"), ({"needs_approval": "yes"}, "needs_approval"),
    ({"delta": float("inf")}, "delta"), ({"delta": True}, "delta"), ({"cooldown_ticks": 2.5}, "cooldown_ticks"),
    (["pinned"], "JSON object"),
])
def test_a_malformed_override_is_named(blob, message):
    with pytest.raises(ValueError, match=message):
        StreamOverrides.parse(blob)


def test_a_pin_runs_out_at_its_instant():
    pin = StreamOverrides(pinned_until="2026-12-24T09:30:00+00:00")
    assert pin.pinned_at(dt.datetime(2026, 12, 24, 9, 29, 59, tzinfo=UTC))
    assert not pin.pinned_at(dt.datetime(2026, 12, 24, 9, 30, 0, tzinfo=UTC))
    assert pin.pinned_at(pd.Timestamp("2026-12-24 09:29:59"))          # naive is taken as UTC
    assert StreamOverrides.parse({"unknown": 1, "delta": 1}) == StreamOverrides(delta=1.0)   # unknown keys ignored


def test_stream_count_and_sqlite_file(store, tmp_path):
    assert store.stream_count() == 3 and store.sqlite_file is None
    with Store.create(f"sqlite:///{tmp_path / 'm.db'}") as on_disk:
        assert on_disk.sqlite_file == (tmp_path / "m.db").resolve() and on_disk.stream_count() == 0


def test_state_and_data_span_reads(store):
    assert store.newest_state_tick() is None and store.saved_states() == []
    assert store.oldest_ds() == pd.Timestamp("2025-01-01") and store.newest_ds() == pd.Timestamp("2025-01-02")
    import numpy as np

    store.save_state(4, {"x": np.arange(3)})
    store.save_state(7, {"x": np.arange(3)})
    assert store.newest_state_tick() == 7
    assert store.saved_states() == [(7, None), (4, None)]


def test_latest_versions_of_some_streams(store):
    sha = "ef" * 32
    with store.transaction() as tx:
        tx.record_versions([NewVersion(stream=s, artifact_sha256=sha, artifact_bytes=1, spec="naive")
                            for s in (0, 1, 1)])
    tables = RegistryTables(store)
    assert tables.latest_versions() == [(0, "a", 1), (1, "b", 2)]
    assert tables.latest_versions([1, 2]) == [(1, "b", 2)]


def test_saved_states_name_a_damaged_blob(store):
    import numpy as np
    import sqlalchemy as sa

    from mlma.store import schema as S

    store.save_state(1, {"x": np.arange(3)})
    store.save_state(2, {"x": np.arange(3)})
    with store.engine.begin() as conn:   # damage tick 1's bytes behind the store's back
        blob = bytes(conn.execute(sa.select(S.agent_state.c.blob).where(S.agent_state.c.tick == 1)).scalar_one())
        damaged = bytes([blob[0] ^ 0xFF]) + blob[1:]
        conn.execute(sa.update(S.agent_state).where(S.agent_state.c.tick == 1).values(blob=damaged))
    assert store.saved_states() == [(2, None), (1, "its bytes do not match the SHA-256 recorded with them")]


def test_overrides_of_the_wrong_kind_are_refused_before_anything_is_written(store):
    with pytest.raises(ValueError, match="needs_approval must be true or false"):
        with store.transaction() as tx:
            tx.audit("user:ana", "require-approval", "stream:a")
            tx.merge_overrides({0: {"needs_approval": "yes"}})
    assert store.stream_overrides() == {} and store.audit_log().empty
