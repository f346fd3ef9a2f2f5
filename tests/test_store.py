"""The store on SQLite and on a real PostgreSQL: ingest, migrations, ticks, state, locks, escalations, audit.

Every test that takes ``url`` runs on both backends: a fresh SQLite file, and a fresh, uniquely named
schema on the PostgreSQL server (``MLMA_TEST_POSTGRES_URL``, default postgres@127.0.0.1:5432/test) that is
dropped afterwards. Without a reachable server the PostgreSQL cases are skipped, except in CI (CI=true),
where they fail.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import multiprocessing
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from mlma.data import validate
from mlma.escalations import Escalation
from mlma.policy import Decision, Verdict
from mlma.store import (LockHeld, LockLost, SchemaError, StateCorrupted, Store, TickAlreadyDone,
                        TickRecord, TickSummary, file_sha256, forecast_frame)
from mlma.store import schema as S
from mlma.store.migrate import head_revision
from mlma.store.testing import hold_lock, postgres_schema

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def url(request, tmp_path):
    """An empty database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mlma.db'}"
    else:
        with postgres_schema(request.getfixturevalue("postgres_server")) as scoped:
            yield scoped


@pytest.fixture
def store(url):
    with Store.create(url) as opened:
        yield opened


def fleet_frame(n_streams: int, steps: int, start: str = "2024-01-01", seed: int = 0) -> pd.DataFrame:
    """A canonical long frame: ``n_streams`` hourly streams of ``steps`` rows each, Poisson counts."""
    rng = np.random.default_rng(seed)
    ids = np.array([f"zone-{i:05d}" for i in range(n_streams)], dtype=object)
    stamps = pd.date_range(start, periods=steps, freq="h").values.astype("datetime64[ns]")
    return pd.DataFrame({"unique_id": pd.Series(np.repeat(ids, steps), dtype="str"),
                         "ds": np.tile(stamps, n_streams),
                         "y": rng.poisson(20.0, n_streams * steps).astype(np.float64)})


def count(store: Store, table: sa.Table) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


HEAD = head_revision()


# -- migrations ---------------------------------------------------------------------------------------------
def test_upgrade_from_empty_builds_the_schema_the_code_describes(url):
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    assert Store.upgrade(url) == HEAD
    with Store.open(url) as store:
        assert store.schema_revision() == HEAD
        with store.engine.connect() as conn:
            differences = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}),
                                           S.metadata)
        assert differences == []
        # Running the upgrade again on an up-to-date database changes nothing.
        assert Store.upgrade(url) == HEAD


def test_postgresql_stores_the_compressed_state_blobs_without_compressing_them_again(url):
    if not url.startswith("postgresql"):
        pytest.skip("storage settings are PostgreSQL's")
    with Store.create(url) as store, store.engine.connect() as conn:
        storage = dict(conn.execute(sa.text(
            "SELECT attrelid::regclass::text, attstorage FROM pg_attribute WHERE attname = 'blob' "
            "AND attrelid IN ('agent_state'::regclass, 'state_parts'::regclass)")).all())
    # EXTERNAL (migrations 0007 and 0011): out of line, no pglz attempt on Zstandard bytes (EXTENDED is 'x').
    assert storage == {"agent_state": "e", "state_parts": "e"}


def test_the_revision_store_open_takes_for_current_is_the_migrations_head():
    from mlma.store.migrate import SCHEMA_REVISION, known_revisions

    # Store.open skips reading the migration scripts when a database is at SCHEMA_REVISION: it must be the
    # newest migration (a new migration that forgets to move it fails here).
    assert SCHEMA_REVISION == HEAD == known_revisions()[-1]


def test_open_refuses_a_database_without_schema(url):
    if url.startswith("sqlite"):
        path = Path(sa.make_url(url).database)
        with pytest.raises(SchemaError, match="there is no database file at .*nothing was created") as info:
            Store.open(url)                   # no file: said so, and none made (the next open would say "schema")
        assert not path.exists() and info.value.current is None
        path.touch()                          # an empty file is an empty SQLite database
    with pytest.raises(SchemaError, match="no mlma schema.*Store.create") as info:
        Store.open(url)
    assert info.value.current is None and info.value.expected == HEAD


def test_open_refuses_an_outdated_schema_and_upgrade_keeps_the_data(url):
    assert Store.upgrade(url, "0001") == "0001"
    with pytest.raises(SchemaError, match=r"revision 0001, older than the revision " + HEAD
                       + r".*`mlma upgrade`.*Store.upgrade") as info:
        Store.open(url)
    assert info.value.current == "0001"
    # The core tables exist at 0001: data written then survives the upgrade.
    with Store.open(url, check_schema=False) as old:
        old.ingest_frame(fleet_frame(3, 4), "before-upgrade")
    assert Store.upgrade(url) == HEAD
    with Store.open(url) as store:
        assert len(store.observations()) == 12
        assert store.ingests()["source"].tolist() == ["before-upgrade"]


def test_forecast_rows_of_an_old_store_are_packed_by_the_upgrade_and_unpacked_by_the_downgrade(url):
    from alembic import command

    from mlma.store.migrate import alembic_config

    # Rows as revision 0006 stored them: one per stream, tick and timestamp, in no particular order.
    assert Store.upgrade(url, "0006") == "0006"
    with Store.open(url, check_schema=False) as old:
        old.stream_ids(["a", "b", "c"])
        stamps = pd.date_range("2024-01-02", periods=3, freq="h")
        rows = [{"issued_tick": tick, "stream_id": sid, "ds": stamps[step].to_pydatetime(),
                 "y_hat": 100.0 * tick + 10.0 * sid + step + 0.25, "model_version": None if sid == 2 else sid + 1}
                for tick in (4, 5) for sid in (2, 0) for step in (2, 0, 1)]
        legacy = sa.Table("forecasts", sa.MetaData(), sa.Column("issued_tick", sa.Integer),
                          sa.Column("stream_id", sa.BigInteger), sa.Column("ds", S.DataTime),
                          sa.Column("y_hat", sa.Double), sa.Column("model_version", sa.Integer))
        with old.engine.begin() as conn:
            conn.execute(sa.insert(legacy), rows)
    expected = (pd.DataFrame(rows).sort_values(["issued_tick", "stream_id", "ds"]).reset_index(drop=True)
                .astype({"model_version": "Int64"}))
    assert Store.upgrade(url) == HEAD
    with Store.open(url) as store:
        assert count(store, S.forecasts) == 2  # one row per tick and block of streams (both are in block 0)
        issued = store.forecasts()
        pd.testing.assert_frame_equal(issued[expected.columns], expected, check_dtype=False)
        assert store.forecasts(5)["unique_id"].tolist() == ["a"] * 3 + ["c"] * 3
        # New ticks write the packed rows next to the converted ones.
        store.write_tick(TickRecord(6, forecasts=pd.DataFrame({"stream_id": [1], "ds": stamps[:1],
                                                               "y_hat": [7.0]})))
        assert store.forecasts(6)["y_hat"].tolist() == [7.0]
    with Store.open(url) as store, store.engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0006")
    with Store.open(url, check_schema=False) as old, old.engine.connect() as conn:
        back = pd.DataFrame(conn.execute(sa.select(legacy).order_by(legacy.c.issued_tick, legacy.c.stream_id,
                                                                    legacy.c.ds)).all(),
                            columns=list(expected.columns))
    assert len(back) == len(expected) + 1
    pd.testing.assert_frame_equal(back.iloc[:-1].astype({"model_version": "Int64"}), expected, check_dtype=False)


def test_forecast_rows_per_stream_are_packed_into_blocks_by_the_upgrade_and_back_by_the_downgrade(url):
    """Revision 0008 stored one packed row per stream and tick; 0009 one per tick and block of 64 stream ids.
    Streams in three blocks, a block with a gap, streams with and without a model version: the upgrade keeps
    every forecast, readers see the same frame, and the downgrade gives back the rows it started from."""
    from alembic import command

    from mlma.store import packed
    from mlma.store.migrate import alembic_config

    assert Store.upgrade(url, "0008") == "0008"
    per_stream = sa.Table("forecasts", sa.MetaData(), sa.Column("issued_tick", sa.Integer),
                          sa.Column("stream_id", sa.BigInteger), sa.Column("first_ds", S.DataTime),
                          sa.Column("last_ds", S.DataTime), sa.Column("steps", sa.Integer),
                          sa.Column("ds_packed", sa.LargeBinary), sa.Column("y_hat_packed", sa.LargeBinary),
                          sa.Column("model_version", sa.Integer))
    stamps = pd.date_range("2024-01-02", periods=4, freq="h")
    rng = np.random.default_rng(4)
    rows, long = [], []
    streams = [0, 5, 63, 64, 70, 150]
    with Store.open(url, check_schema=False) as old:
        old.stream_ids([f"s{i:03d}" for i in range(151)])  # ids in name order
        for tick in (3, 4):
            for sid in streams[tick - 3:]:  # tick 3 forecasts stream 0 too
                steps = 2 + sid % 3
                us = stamps[:steps].values.astype("datetime64[us]").astype(np.int64)
                y = rng.normal(size=steps).round(3)
                version = None if sid == 63 else sid + tick
                rows.append({"issued_tick": tick, "stream_id": sid, "first_ds": stamps[0].to_pydatetime(),
                             "last_ds": stamps[steps - 1].to_pydatetime(), "steps": steps,
                             "ds_packed": us.astype("<i8").tobytes(), "y_hat_packed": y.astype("<f8").tobytes(),
                             "model_version": version})
                long += [{"issued_tick": tick, "stream_id": sid, "unique_id": f"s{sid:03d}", "ds": stamps[i],
                          "y_hat": y[i], "model_version": version} for i in range(steps)]
        with old.engine.begin() as conn:
            conn.execute(sa.insert(per_stream), rows)
    expected = pd.DataFrame(long).astype({"model_version": "Int64"})
    assert Store.upgrade(url) == HEAD
    with Store.open(url) as store:
        assert count(store, S.forecasts) == 3 + 3  # blocks 0, 1 and 2 at both ticks
        pd.testing.assert_frame_equal(store.forecasts()[expected.columns], expected, check_dtype=False)
        one = store.forecasts(4, streams=["s064"])
        assert one["y_hat"].tolist() == expected.query("issued_tick == 4 and stream_id == 64")["y_hat"].tolist()
        with store.engine.connect() as conn:
            blocks = conn.execute(sa.select(S.forecasts.c.block, S.forecasts.c.stream_ids)
                                  .where(S.forecasts.c.issued_tick == 4)).all()
        assert {b: np.frombuffer(ids, "<i8").tolist() for b, ids in blocks} == {0: [5, 63], 1: [64, 70], 2: [150]}
        assert packed.block_of(150) == 2
    with Store.open(url) as store, store.engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0008")
    with Store.open(url, check_schema=False) as old, old.engine.connect() as conn:
        back = conn.execute(sa.select(per_stream).order_by(per_stream.c.issued_tick, per_stream.c.stream_id)).all()
    assert [dict(r._mapping) for r in back] == rows


def test_open_refuses_a_schema_from_a_newer_mlma(store, url):
    with store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(SchemaError, match="9999.*newer mlma"):
        Store.open(url)


def test_unsupported_urls_are_refused_clearly():
    with pytest.raises(ValueError, match="unsupported database 'mysql'"):
        Store.open("mysql://root@localhost/test")
    with pytest.raises(ValueError, match="psycopg"):
        Store.open("postgresql+asyncpg://u@h/db")


# -- ingest -------------------------------------------------------------------------------------------------
def test_ingesting_the_same_file_twice_changes_nothing(store, tmp_path):
    path = tmp_path / "orders.csv"
    fleet_frame(5, 24).to_csv(path, index=False)
    first = store.ingest_file(path)
    assert not first.duplicate and first.rows_new == 120 and first.n_streams == 5 and first.new_streams == 5
    assert first.content_sha256 == file_sha256(path)
    before = (store.observations(), store.streams(), count(store, S.observations), count(store, S.ingests))

    second = store.ingest_file(path)
    assert second.duplicate and second.ingest_id == first.ingest_id and not second.changed
    assert "already ingested" in str(second)
    after = (store.observations(), store.streams(), count(store, S.observations), count(store, S.ingests))
    pd.testing.assert_frame_equal(before[0], after[0])
    pd.testing.assert_frame_equal(before[1], after[1])
    assert before[2:] == after[2:] == (120, 1)

    # The same rows delivered again under another name and hash: nothing new, nothing revised.
    again = store.ingest_frame(fleet_frame(5, 24), "orders-copy.csv")
    assert (again.rows_new, again.rows_revised, again.rows_unchanged) == (0, 0, 120)
    assert count(store, S.observation_revisions) == 0
    pd.testing.assert_frame_equal(store.observations(), before[0])


def test_corrected_actuals_replace_old_values_and_the_revision_is_recorded(store):
    day = fleet_frame(4, 6)
    store.ingest_frame(day, "day-1")
    corrected = day.copy()
    changed = np.array([1, 7, 20])
    corrected.loc[changed, "y"] = corrected.loc[changed, "y"] + 100.0
    later = fleet_frame(4, 3, start="2024-01-01 06:00", seed=5)
    report = store.ingest_frame(pd.concat([corrected, later], ignore_index=True), "day-1-corrected")
    assert (report.rows_new, report.rows_revised, report.rows_unchanged) == (12, 3, 21)
    assert report.rows_accepted == 36 and report.changed

    stored = store.observations(end="2024-01-01 06:00")
    np.testing.assert_array_equal(stored["y"].to_numpy(), corrected["y"].to_numpy())
    revisions = store.revisions()
    assert len(revisions) == 3
    np.testing.assert_array_equal(revisions["old_y"].to_numpy(), day.loc[changed, "y"].to_numpy())
    np.testing.assert_array_equal(revisions["new_y"].to_numpy(), corrected.loc[changed, "y"].to_numpy())
    assert set(revisions["ingest_id"]) == {report.ingest_id}
    with store.engine.connect() as conn:
        counts = dict(conn.execute(sa.select(S.observations.c.revisions, sa.func.count())
                                   .group_by(S.observations.c.revisions)).all())
    assert counts == {0: 33, 1: 3}

    # Correcting the same value a second time counts twice.
    again = corrected.iloc[[1]].assign(y=corrected.loc[1, "y"] + 1.0)
    assert store.ingest_frame(again, "fix-2").rows_revised == 1
    assert len(store.revisions(["zone-00000"])) == 2


def test_corrections_at_a_batchs_first_and_last_timestamps_count_and_rows_outside_it_are_untouched(store):
    """A batch re-delivering part of the history, corrected exactly at its first and last timestamps: those
    are revisions, the rest of the batch unchanged, and the stored rows outside its span keep their values."""
    history = fleet_frame(3, 48)
    store.ingest_frame(history, "history")
    span = history[(history["ds"] >= "2024-01-01 10:00") & (history["ds"] <= "2024-01-01 20:00")].copy()
    first, last = span["ds"].min(), span["ds"].max()
    edges = span.index[(span["ds"] == first) | (span["ds"] == last)]
    span.loc[edges, "y"] += 50.0
    report = store.ingest_frame(span, "corrections")
    assert (report.rows_new, report.rows_revised, report.rows_unchanged) == (0, len(edges), len(span) - len(edges))
    assert len(edges) == 6
    revisions = store.revisions()
    assert set(revisions["ds"]) == {first, last} and len(revisions) == 6
    stored = store.observations().set_index(["unique_id", "ds"])["y"]
    expected = history.set_index(["unique_id", "ds"])["y"].copy()
    expected.loc[span.set_index(["unique_id", "ds"]).index] = span["y"].to_numpy()
    pd.testing.assert_series_equal(stored.sort_index(), expected.sort_index(), check_names=False)


def test_ingest_keeps_the_validation_report_with_the_ingest(store):
    raw = fleet_frame(2, 30)
    raw.loc[3, "y"] = np.nan
    checked = validate(raw, on_bad_rows="drop")
    report = store.ingest_frame(checked.frame, "with-gap.csv", report=checked.report)
    assert (report.rows_read, report.rows_dropped, report.rows_accepted) == (60, 1, 59)
    findings = store.ingests()["findings"].iloc[0]
    assert {f["code"] for f in findings} == set(checked.report.codes)


def test_observations_round_trip_exactly_in_canonical_order(store):
    frame = pd.DataFrame({
        "unique_id": ["b", "b", "a", "Z", "a"],
        "ds": pd.to_datetime(["2024-03-01 00:00:00.000001", "2024-02-29 23:59:59", "2024-03-01",
                              "2024-03-01 12:00", "2024-02-01"], format="ISO8601"),
        "y": [0.1, 1e300, -2.5, 3.0, 1 / 3],
    })
    store.ingest_frame(frame, "odd.csv")
    out = store.observations()
    expected = frame.sort_values(["unique_id", "ds"]).reset_index(drop=True)
    assert out.columns.tolist() == ["unique_id", "ds", "y"]
    assert str(out["ds"].dtype) == "datetime64[ns]" and out["y"].dtype == np.float64
    assert pd.api.types.is_string_dtype(out["unique_id"])
    assert out["unique_id"].tolist() == ["Z", "a", "a", "b", "b"]  # code-point order, as pandas sorts
    np.testing.assert_array_equal(out["ds"].to_numpy(), expected["ds"].to_numpy())
    np.testing.assert_array_equal(out["y"].to_numpy(), expected["y"].to_numpy())

    window = store.observations("2024-02-29 23:59:59", "2024-03-01 12:00")  # start included, end not
    assert list(zip(window["unique_id"], window["ds"])) == [
        ("a", pd.Timestamp("2024-03-01")), ("b", pd.Timestamp("2024-02-29 23:59:59")),
        ("b", pd.Timestamp("2024-03-01 00:00:00.000001"))]
    only = store.observations(streams=["b", "nope"], with_ids=True)
    assert only["unique_id"].tolist() == ["b", "b"]
    assert set(only["stream_id"]) == {int(store.stream_ids(["b"])[0])}
    assert store.observations(streams=[int(only["stream_id"].iloc[0])])["y"].tolist() == [1e300, 0.1]
    assert len(store.observations(start="2030-01-01")) == 0


def test_stream_ids_are_dense_stable_and_grow_with_new_streams(store):
    first = store.stream_ids(["c", "a", "b", "a"])
    np.testing.assert_array_equal(first, [2, 0, 1, 0])
    np.testing.assert_array_equal(store.stream_ids(["d", "a"]), [3, 0])
    np.testing.assert_array_equal(store.stream_ids(["a", "zz"], create=False), [0, -1])
    assert store.unique_ids([3, 0, 2]).tolist() == ["d", "a", "c"]
    report = store.ingest_frame(pd.DataFrame({"unique_id": ["e", "b"], "ds": pd.to_datetime(["2024-01-01"] * 2),
                                              "y": [1.0, 2.0]}), "x")
    assert report.new_streams == 1
    table = store.streams()
    assert table["id"].tolist() == [0, 1, 2, 3, 4] and table["unique_id"].tolist()[-1] == "e"
    assert table.loc[table["unique_id"] == "b", "last_ds"].iloc[0] == pd.Timestamp("2024-01-01")
    store.set_attributes({"a": {"city": "Berlin"}, 1: {"city": "Lyon"}})
    store.set_attributes({"a": {"tier": 2}})
    assert store.streams()["attributes"].tolist()[:2] == [{"city": "Berlin", "tier": 2}, {"city": "Lyon"}]
    store.set_overrides(["a", "b"], {"pinned": True}, by="user:ana", reason="holiday week")
    assert store.streams()["overrides"].tolist()[:3] == [{"pinned": True}, {"pinned": True}, {}]
    assert store.audit_log(action="set-overrides")["reason"].tolist() == ["holiday week"]


def test_concurrent_ingests_keep_stream_ids_dense_and_ingest_shared_content_once(store):
    from concurrent.futures import ThreadPoolExecutor

    # Overlapping new streams from two writers at once: each stream gets exactly one id, ids stay 0..n-1.
    frames = [fleet_frame(300, 2, seed=1), fleet_frame(400, 2, seed=2).assign(
        unique_id=lambda f: f["unique_id"].str.replace("zone", "zone-b"))]
    frames[1] = pd.concat([frames[1], fleet_frame(100, 2, start="2025-01-01")], ignore_index=True)
    with ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(lambda f: store.ingest_frame(f[1], f"writer-{f[0]}"), enumerate(frames)))
    table = store.streams()
    assert table["id"].tolist() == list(range(700)) and table["unique_id"].is_unique
    assert sum(r.new_streams for r in reports) == 700
    assert len(store.observations()) == 600 + 1000

    # The same content from two writers at once: one ingests it, the other reports a duplicate.
    same = fleet_frame(50, 3, start="2026-01-01")
    with ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(lambda name: store.ingest_frame(same, name), ["a", "b"]))
    assert sorted(r.duplicate for r in reports) == [False, True]
    assert reports[0].ingest_id == reports[1].ingest_id


def test_the_same_file_with_rows_to_check_again_ingested_twice_at_once_is_once_and_a_duplicate(
        store, tmp_path, monkeypatch):
    """Two processes send the same file, one of whose rows is out of range, at the same moment: both find no
    earlier ingest, the second one's insert meets the first one's key; it is a duplicate, not a crash."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    if store.dialect != "postgresql":
        pytest.skip("SQLite takes one writer at a time: the two cannot meet inside their transactions")
    store.ingest_file(fleet_frame(2, 72), source="history")
    day = fleet_frame(2, 24, start="2024-01-04").astype({"y": np.float64})
    day.loc[0, "y"] = 1e6
    day.to_csv(tmp_path / "day.csv", index=False)
    both_decided = threading.Barrier(2, timeout=30)
    key = Store._actuals_key

    def decided(conn, sha, findings):
        found = key(conn, sha, findings)
        both_decided.wait()                 # both chose the content's own key before either inserts
        return found

    monkeypatch.setattr(Store, "_actuals_key", staticmethod(decided))
    with ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(lambda _: store.ingest_file(tmp_path / "day.csv"), range(2)))
    assert sorted(r.duplicate for r in reports) == [False, True]
    assert count(store, S.ingests) == 2 and count(store, S.observations) == 2 * 72 + 47


def test_two_writers_deciding_from_a_read_take_turns(store):
    """A retried mark-abnormal and a token `OP` created beside `op` decide by reading first (marked already?
    name taken in any case?). On PostgreSQL two transactions at once could both read before either wrote: two
    identical periods, or both tokens. The second now waits for the first and finds its row."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    if store.dialect != "postgresql":
        pytest.skip("SQLite takes one writer at a time: the two cannot meet inside their transactions")
    store.ingest_frame(fleet_frame(2, 24), "history")
    ids = sorted(int(i) for i in store.streams()["id"])
    start, end = dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2)
    first_wrote = threading.Event()

    def first(write):
        with store.transaction() as tx:
            done = write(tx, "first")
            first_wrote.set()
            time.sleep(1.0)  # still open: the second starts meanwhile
            return done

    def second(write):
        assert first_wrote.wait(30)
        with store.transaction() as tx:
            return write(tx, "second")

    def mark(tx, who):
        return tx.add_abnormal_periods(ids, start, end, by=f"user:{who}")

    def token(tx, who):
        try:
            return tx.add_token("op" if who == "first" else "OP", "operator", hashlib.sha256(who.encode()).hexdigest(),
                                by="user:ana").name
        except ValueError as exc:
            return str(exc)

    for write in (mark, token):
        first_wrote.clear()
        with ThreadPoolExecutor(2) as pool:
            made = [pool.submit(first, write), pool.submit(second, write)]
            results = [m.result(timeout=60) for m in made]
        if write is mark:
            assert results == [ids, []], results
            assert count(store, S.abnormal_periods) == 2
        else:
            assert results[0] == "op" and "a token named 'OP' exists ('op'" in results[1], results
            assert count(store, S.api_tokens) == 1


@pytest.mark.parametrize("problem, message", [
    ("duplicate", "repeated"), ("nan", "non-finite"), ("tz", "tz-naive"), ("nanoseconds", "microsecond"),
])
def test_ingest_refuses_frames_that_break_the_contract(problem, message):
    frame = fleet_frame(2, 3)
    if problem == "duplicate":
        frame = pd.concat([frame, frame.iloc[[0]]], ignore_index=True)
    elif problem == "nan":
        frame.loc[2, "y"] = np.nan
    elif problem == "tz":
        frame["ds"] = frame["ds"].dt.tz_localize("UTC")
    else:
        frame.loc[1, "ds"] = frame.loc[1, "ds"] + pd.Timedelta(1, "ns")
    with Store.create("sqlite://") as store:
        with pytest.raises(ValueError, match=message):
            store.ingest_frame(frame, "bad")
        assert count(store, S.observations) == 0 and count(store, S.ingests) == 0


def test_backup_of_a_sqlite_store_is_a_working_store(tmp_path):
    with Store.create(f"sqlite:///{tmp_path / 'live.db'}") as store:
        store.ingest_frame(fleet_frame(3, 5), "x")
        copy = store.backup(tmp_path / "backup" / "copy.db")
    with Store.open(f"sqlite:///{copy}") as restored:
        assert len(restored.observations()) == 15


def test_a_backup_is_flushed_to_disk_before_its_rename_and_its_folder_after(tmp_path, monkeypatch):
    """A backup reported written survives a power cut: the copy's bytes are fsynced before the rename puts it
    in place, and the folder that gained its name after (what each fsync was given is read back through
    /proc, so the test checks the real calls, not a stand-in)."""
    if not Path("/proc/self/fd").is_dir():
        pytest.skip("reads file descriptors' paths from /proc")
    import os

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
                        or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append(("rename", str(b))) or real_replace(a, b))
    with Store.create(f"sqlite:///{tmp_path / 'live.db'}") as store:
        store.ingest_frame(fleet_frame(3, 5), "x")
        events.clear()
        copy = store.backup(tmp_path / "backup" / "daily" / "copy.db")
        folder = str((tmp_path / "backup").resolve())
        # The two new folders' entries (their parents), then the copy, its rename, and the folder that got it.
        assert [kind for kind, _ in events] == ["fsync", "fsync", "fsync", "rename", "fsync"], events
        assert [p for _, p in events[:2]] == [str(tmp_path.resolve()), folder]
        assert Path(events[2][1]).parent == Path(folder) / "daily"
        assert Path(events[2][1]).name.startswith(".copy.db.")
        assert events[3][1] == str(copy) and events[4][1] == str(Path(folder) / "daily")
        events.clear()
        store.backup(tmp_path / "backup" / "daily" / "copy.db", overwrite=True)   # no new folder this time
        assert [kind for kind, _ in events] == ["fsync", "rename", "fsync"], events


# -- ticks and state ------------------------------------------------------------------------------------------
def _tick_outputs(store: Store, n: int, steps: int = 4):
    decision = Decision.nothing(n, Verdict.OK)
    decision.verdict[::3] = int(Verdict.DEGRADED)
    decision.retrain[::3] = True
    decision.reason[::3] = "loss up 40%"
    decision.p_value = np.linspace(0.001, 0.9, n)
    decision.effect = np.linspace(-1, 1, n)
    y_hat = np.arange(n * steps, dtype=float).reshape(n, steps)
    y_hat[1] = np.nan  # a stream without a forecast
    forecasts = forecast_frame(y_hat, pd.date_range("2024-01-02", periods=steps, freq="h"),
                               np.arange(n) % 3)
    state = {"agent.champion": np.arange(n), "policy.ref": np.full((n, 3, steps), np.nan, dtype=np.float32)}
    return decision, forecasts, state


def test_a_tick_is_written_whole_and_only_once(store):
    n = 12
    store.ingest_frame(fleet_frame(n, 24), "day-1")
    decision, forecasts, state = _tick_outputs(store, n)
    store.begin_tick(0, start="2024-01-01", end="2024-01-02", agent_id="agent@test")
    written = store.write_tick(TickRecord(0, verdicts=decision, forecasts=forecasts, state=state,
                                          escalations=[Escalation(3, 0, "repeated-trigger", 2, "again")]))
    assert (written.n_verdicts, written.n_forecasts, len(written.escalation_ids)) == (12, 44, 1)

    ticks = store.ticks()
    assert ticks[["tick", "status", "attempts", "agent_id"]].values.tolist() == [[0, "done", 1, "agent@test"]]
    assert ticks["end_ds"].iloc[0] == pd.Timestamp("2024-01-02")
    assert store.last_done_tick() == 0
    verdicts = store.verdicts(0)
    assert verdicts["label"].tolist().count("degraded") == 4
    np.testing.assert_allclose(verdicts["p_value"], decision.p_value)
    assert verdicts.loc[0, "reason"] == "loss up 40%" and pd.isna(verdicts.loc[1, "reason"])
    issued = store.forecasts(0)
    assert len(issued) == 44 and 1 not in set(issued["stream_id"])
    np.testing.assert_array_equal(issued["y_hat"], forecasts["y_hat"])
    loaded = store.load_state()
    assert loaded.tick == 0 and loaded.sha256 == written.state_sha256
    np.testing.assert_array_equal(loaded.arrays["agent.champion"], state["agent.champion"])
    assert loaded.arrays["policy.ref"].dtype == np.float32 and loaded.arrays["policy.ref"].shape == (n, 3, 4)

    with pytest.raises(TickAlreadyDone):
        store.write_tick(TickRecord(0, verdicts=decision))
    with pytest.raises(TickAlreadyDone):
        store.begin_tick(0)
    assert len(store.verdicts(0)) == 12


@pytest.mark.parametrize("failure", ["state", "forecast-stream"])
def test_a_failure_mid_write_leaves_nothing_of_the_tick(store, failure, tmp_path):
    from mlma.registry import ModelRegistry

    n = 6
    store.ingest_frame(fleet_frame(n, 24), "day-1")
    registry = ModelRegistry(store, tmp_path / "artifacts")
    decision, forecasts, state = _tick_outputs(store, n)
    if failure == "state":
        state = {**state, "policy.trigger_ticks": np.array([[1], [2, 3]], dtype=object)}
    else:
        forecasts.loc[len(forecasts) - 1, "stream_id"] = 99  # written after the verdicts; no such stream
    store.begin_tick(4, agent_id="agent@test")
    version = registry.prepare(0, {"m": 1}, spec="naive", promote=True, reason="first")
    with pytest.raises(ValueError, match="dtype object" if failure == "state" else "unknown stream id"):
        store.write_tick(TickRecord(4, verdicts=decision, forecasts=forecasts, state=state, new_versions=[version],
                                    escalations=[Escalation(0, 4, "data-quality", 3, "flat line")],
                                    audit=[{"actor": "agent", "action": "tick", "target": "fleet"}]))
    for table in (S.verdicts, S.forecasts, S.escalations, S.agent_state, S.model_versions, S.champions,
                  S.champion_history, S.audit_log):
        assert count(store, table) == 0, table.name
    assert store.ticks()["status"].tolist() == ["running"]  # begin_tick committed on its own
    store.fail_tick(4, RuntimeError("boom"))
    row = store.ticks().iloc[0]
    assert row["status"] == "failed" and row["error"] == "RuntimeError: boom"
    # The tick can run again, and then commits everything.
    store.begin_tick(4)
    decision, forecasts, state = _tick_outputs(store, n)
    written = store.write_tick(TickRecord(4, verdicts=decision, forecasts=forecasts, state=state,
                                          new_versions=[version]))
    assert written.versions.tolist() == [1] and store.ticks()["attempts"].tolist() == [2]
    assert registry.champion(0).version == 1


def test_a_failed_tick_is_escalated_once_and_resolved_by_its_commit(store):
    """A tick that fails raises one fleet-wide `tick-failed` item; failing again adds none while it is unresolved
    (the item says the newest failure); the commit of that tick resolves it, audited, and the next tick's
    failure is a new item. A failure recorded after the tick committed, or without escalation (a stop), or by
    an agent whose lease another agent took, raises none."""
    store.stream_ids(["a", "b"])
    store.write_tick(TickRecord(1))
    store.begin_tick(2)
    first = store.fail_tick(2, RuntimeError("the database went away\nsecond line"))
    item = store.escalations(status="open").iloc[0]
    assert item["kind"] == "tick-failed" and item["severity"] == 3 and item["tick"] == 2
    assert pd.isna(item["unique_id"])
    assert item["message"].startswith("tick 2 failed: RuntimeError: the database went away. Nothing")
    assert "second line" not in item["message"]
    for _ in range(2):                                                    # two retries fail again
        store.begin_tick(2)
        assert store.fail_tick(2, ValueError("mlma.toml: [store] artifacts")) is None
    open_ = store.escalations(status="open")
    assert open_["id"].tolist() == [first]
    assert open_.iloc[0]["message"].startswith("tick 2 failed: ValueError: mlma.toml: [store] artifacts. Nothing")
    assert store.ticks().set_index("tick").loc[2, "error"] == "ValueError: mlma.toml: [store] artifacts"

    store.begin_tick(2)
    store.write_tick(TickRecord(2, summary=TickSummary(n_streams=2)))
    assert store.escalations(status="open").empty
    assert store.escalations(status="resolved")["id"].tolist() == [first]
    assert TickSummary.parse(store.ticks().set_index("tick").loc[2, "summary"]).escalations_resolved == 1
    entry = store.audit_log(action="auto-resolve").iloc[0]
    assert entry["target"] == "tick:2" and entry["params"]["resolved"] == {"tick-failed": 1}
    assert store.fail_tick(2, RuntimeError("after the commit")) is None    # a committed tick did not fail
    assert store.ticks().set_index("tick").loc[2, "status"] == "done"

    store.begin_tick(3)
    assert store.fail_tick(3, KeyboardInterrupt(), escalate=False) is None
    assert store.escalations(status="open").empty
    third = store.fail_tick(3, RuntimeError("a bug"))
    assert store.escalations(status="open")["id"].tolist() == [third] != [first]
    store.set_escalation_status([third], "silenced", by="user:ana", silenced_until="2999-01-01")
    assert store.fail_tick(3, RuntimeError("a bug")) is None              # silenced: the person knows
    store.set_escalation_status([third], "resolved", by="user:ana", reason="fixed, I think")
    fourth = store.fail_tick(3, RuntimeError("a bug"))                    # it was not fixed: a new item
    assert fourth not in (None, third)
    # A start-up tick moves as data arrives: its failure at tick 3 is resolved by a commit of tick 4.
    assert store.fail_tick(4, RuntimeError("a bug"), mark=False) is None  # the same item, now saying tick 4
    assert store.escalations(status="open")[["id", "tick"]].values.tolist() == [[fourth, 4]]
    assert 4 not in set(store.ticks()["tick"])                             # escalated, not marked
    store.write_tick(TickRecord(5))
    assert store.escalations(status="open").empty

    # An agent whose lease was taken over marks and escalates nothing: the tick is the other agent's now.
    with store.tick_lock("agent@a", ttl=60.0, heartbeat=False) as lease:
        store.break_lock(by="user:ana", reason="agent a looked dead")
        with store.tick_lock("agent@b", ttl=60.0, heartbeat=False):
            store.begin_tick(6, agent_id="agent@b")
            assert store.fail_tick(6, RuntimeError("late error of agent a"), lease=lease) is None
            assert store.ticks().set_index("tick").loc[6, "status"] == "running"
            assert store.escalations(status="open").empty
        # A lock broken and held by nobody does not stop the record: the tick would stay `running` for ever.
        assert store.fail_tick(6, RuntimeError("agent a's error"), lease=lease) is not None
        assert store.ticks().set_index("tick").loc[6, "status"] == "failed"


def test_a_tick_left_unfinished_before_a_committed_one_is_closed_and_not_shown_as_unfinished(store, url):
    """A start-up tick whose agent died stays `running`; once data moves the start-up and a later tick commits,
    the dead tick will never run: the commit marks it failed (no tick in progress for ever on the `mlma_ticks`
    gauge and the stuck-tick alert) and `mlma status`'s glance shows no unfinished tick, while one after the
    last done tick still shows."""
    from mlma.store.glance import glance

    store.stream_ids(["a"])
    store.begin_tick(3)                              # the agent was killed mid-tick: no fail_tick
    store.begin_tick(4)
    store.fail_tick(4, RuntimeError("short history"))
    assert glance(url).last_unfinished.tick == 4
    store.write_tick(TickRecord(6))                  # the start-up moved on as data arrived
    ticks = store.ticks().set_index("tick")
    assert ticks["status"].to_dict() == {3: "failed", 4: "failed", 6: "done"}
    assert ticks.loc[3, "error"] == "never finished; tick 6 was committed after it, so it will not run"
    assert ticks.loc[4, "error"] == "RuntimeError: short history"   # a failure keeps its own error
    assert glance(url).last_unfinished is None
    store.begin_tick(7)
    assert (glance(url).last_unfinished.tick, glance(url).last_unfinished.status) == (7, "running")


def test_actions_of_a_tick_whose_agent_is_gone_can_be_cancelled_and_are_not_carried_out(store):
    """Taken-up actions can be cancelled only when their tick no longer runs: its agent's lease ran out, or its
    process on this host no longer runs (the rule of `mlma status`), or another agent holds the lock now. An agent
    that had only stalled cannot commit the cancelled actions; the next attempt takes up only the pending ones."""
    from mlma.control import ActionError, Operations
    from mlma.lock_holder import agent_identity
    from mlma.store.testing import gone_agent

    ops = Operations(store)
    ids = store.stream_ids(["a", "b", "c", "d"])
    with store.transaction() as tx:
        tx.queue_actions(ids, "retrain", {"direct": False}, by="user:ana")

    def status() -> list[str]:
        return store.stream_actions().set_index("id")["status"].sort_index().tolist()

    stalled = store.acquire_lock(agent_identity(), ttl=2.0)          # this process: alive, its lease runs
    store.begin_tick(2, lease=stalled)
    with pytest.raises(ActionError, match=r"action\(s\) \[1\] were taken up by tick 2, which is running"):
        ops.cancel_action([1], by="user:bob")
    deadline = time.monotonic() + 10
    while store.lock_holder() is not None and time.monotonic() < deadline:  # no heartbeat: the lease runs out
        time.sleep(0.1)
    assert ops.cancel_action([1], by="user:bob", reason="called off").changed == 1
    with pytest.raises(LockLost, match=r"tick 2: action\(s\) \[1\] it took up are no longer pending"):
        store.write_tick(TickRecord(2, applied_actions={1: "re-trained", 2: "re-trained"}), lease=stalled)
    assert store.ticks()["status"].tolist() == ["running"] and status() == ["cancelled", "pending", "pending",
                                                                          "pending"]

    killed = store.acquire_lock(gone_agent(), ttl=300.0)              # took the expired lock, then was killed
    store.begin_tick(2, lease=killed)
    assert store.taken_up_actions(2)["id"].tolist() == [2, 3, 4]
    assert ops.cancel_action([2], by="user:bob").changed == 1
    store.break_lock(by="agent", reason="its holder is no longer running on this host")
    with store.tick_lock(agent_identity(), ttl=60.0, heartbeat=False) as lease:
        # The lock is held by a live agent, but tick 2 is the killed one's until this agent begins it.
        assert ops.cancel_action([3], by="user:bob").changed == 1
        store.begin_tick(2, lease=lease)
        assert store.taken_up_actions(2)["id"].tolist() == [4]
        with pytest.raises(ActionError, match=r"\[4\] were taken up by tick 2, which is running"):
            ops.cancel_action([4], by="user:bob")
        store.write_tick(TickRecord(2, applied_actions={4: "re-trained"}), lease=lease)
    assert status() == ["cancelled", "cancelled", "cancelled", "applied"]
    assert store.ticks()[["status", "attempts"]].values.tolist() == [["done", 3]]


def test_a_stream_named_with_spaces_around_it_resolves_as_its_file_ids_do(store):
    """`mlma retrain ' zone-1'` (a pasted id) names zone-1, as an id with those spaces in a file does; an id a
    store holds with its spaces (written before they were stripped) is matched as given first."""
    ids = store.stream_ids(["zone-1", " legacy", "b", " b"])
    assert store.resolve(" zone-1\t") == store.resolve("zone-1") == ids[0]
    assert store.resolve(" legacy") == ids[1]
    assert (store.resolve(" b"), store.resolve("b"), store.resolve("b ")) == (ids[3], ids[2], ids[2])
    with pytest.raises(KeyError, match="unknown stream 'legacy'"):
        store.resolve("legacy")
    from mlma.control import ActionError, Operations

    assert Operations(store).select([" zone-1 "])[1] == "stream:zone-1"
    with pytest.raises(ActionError, match="unknown stream ' zone-2'"):
        Operations(store).select([" zone-2"])


def test_a_store_says_whether_it_holds_a_project(store):
    assert store.holds_a_project() is None
    store.stream_ids(["a"])
    assert store.holds_a_project() == "1 stream, 0 ticks"
    store.write_tick(TickRecord(0))
    store.stream_ids(["b"])
    assert store.holds_a_project() == "2 streams, 1 tick"


def test_the_kind_of_timestamps_is_the_latest_checked_ingests_and_a_checked_frame_of_the_other_is_refused(store):
    from mlma.data import validate

    hours = pd.date_range("2024-01-01", periods=48, freq="h")
    naive = pd.DataFrame({"unique_id": "a", "ds": hours.strftime("%Y-%m-%d %H:%M"), "y": 1.0})
    zoned = naive.assign(ds=hours.strftime("%Y-%m-%dT%H:%M:%SZ"))
    store.ingest_frame(validate(naive).frame.iloc[:0], "empty")           # nothing checked yet: no kind
    store.ingest_frame(fleet_frame(1, 24), "trusted")                     # a trusted frame has no report
    assert store.time_zones() is None
    checked = validate(naive)
    store.ingest_frame(checked.frame, "naive", report=checked.report)
    assert store.time_zones() == "naive"
    checked = validate(zoned)
    with pytest.raises(ValueError, match="its timestamps are zoned .* but this project's actuals are naive"):
        store.ingest_frame(checked.frame.assign(y=2.0), "zoned", report=checked.report)
    # A store that took one zoned file among its naive ones before files were checked for it (an older mlma)
    # goes on with its feed: the latest checked ingest decides, not any zoned one.
    def recorded(name: str, codes: list[str]) -> None:
        with store.engine.begin() as conn:
            conn.execute(sa.insert(S.ingests).values(
                source=name, content_sha256=hashlib.sha256(name.encode()).hexdigest(),
                at=pd.Timestamp("2024-01-03").to_pydatetime(), rows_read=1, rows_accepted=1, rows_dropped=0,
                rows_new=1, rows_revised=0, rows_unchanged=0, n_streams=1, new_streams=0,
                findings=[{"code": code} for code in codes]))

    recorded("old-zoned", ["timezone-converted", "summary"])
    assert store.time_zones() == "zoned"
    recorded("old-naive", ["summary"])
    recorded("future drivers", ["future-unknown-streams"])               # not a checked ingest of actuals
    assert store.time_zones() == "naive"
    later = validate(naive.assign(ds=(hours + pd.Timedelta(days=2)).strftime("%Y-%m-%d %H:%M")))
    assert store.ingest_frame(later.frame, "naive again", report=later.report).rows_new == 48


def test_verdicts_and_forecasts_may_come_as_frames(store):
    store.stream_ids(["a", "b", "c"])
    verdicts = pd.DataFrame({"stream_id": [2, 0], "verdict": [int(Verdict.NO_DATA), int(Verdict.COLD)]})
    forecasts = pd.DataFrame({"stream_id": [0, 0], "ds": pd.to_datetime(["2024-01-01", "2024-01-02"]),
                              "y_hat": [1.5, 2.5]})
    store.write_tick(TickRecord(1, verdicts=verdicts, forecasts=forecasts))
    out = store.verdicts(1)
    assert out[["unique_id", "label"]].values.tolist() == [["a", "cold"], ["c", "no-data"]]
    assert out["p_value"].isna().all() and not out["retrain"].any()
    issued = store.forecasts(1)
    assert issued["y_hat"].tolist() == [1.5, 2.5] and issued["model_version"].isna().all()
    with pytest.raises(ValueError, match="unknown stream id"):
        store.write_tick(TickRecord(2, verdicts=pd.DataFrame({"stream_id": [3], "verdict": [0]})))
    with pytest.raises(ValueError, match="finite"):
        store.write_tick(TickRecord(2, forecasts=forecasts.assign(y_hat=np.nan)))
    assert store.ticks()["tick"].tolist() == [1]


def test_verdicts_and_forecasts_round_trip_with_missing_and_extreme_values(store):
    """What a tick's bulk inserts (binary COPY on PostgreSQL, executemany on SQLite) write reads back the same:
    NaN and infinities as missing, extreme floats and timestamps exact, texts with COPY's special characters."""
    store.stream_ids(["a", "b", "c", "d"])
    tiny, huge = 5e-324, np.finfo(np.float64).max
    reasons = ["tab\there", "new\nline \\N", None, "ünïcode, 'quotes' \"and\" \\."]
    verdicts = pd.DataFrame({"stream_id": [0, 1, 2, 3], "verdict": [0, 1, 2, 3],
                             "p_value": [np.nan, 0.0, 1.0, tiny], "effect": [np.inf, -np.inf, -huge, huge],
                             "retrain": [True, False, True, False], "reason": reasons,
                             "loss": [1e-300, np.nan, 3.5, -0.0], "reference_loss": [1.0, 2.0, 3.0, 4.0],
                             "model_version": [1, None, 2**31 - 1, 7]})
    stamps = pd.to_datetime(["1970-01-01 00:00", "1999-12-31 23:59:59.999999", "2000-01-01 00:00",
                             "2262-04-11 00:00"], format="ISO8601").values
    forecasts = pd.DataFrame({"stream_id": [0, 0, 1, 3], "ds": stamps, "y_hat": [-huge, tiny, huge, -0.0],
                              "model_version": [4, 4, None, 2]})
    store.write_tick(TickRecord(2, verdicts=verdicts, forecasts=forecasts))
    read = store.verdicts(tick=2)
    assert read["stream_id"].tolist() == [0, 1, 2, 3] and read["verdict"].tolist() == [0, 1, 2, 3]
    np.testing.assert_array_equal(read["p_value"].astype(float), [np.nan, 0.0, 1.0, tiny])
    np.testing.assert_array_equal(read["effect"].astype(float), [np.nan, np.nan, -huge, huge])
    np.testing.assert_array_equal(read["loss"].astype(float), [1e-300, np.nan, 3.5, 0.0])
    assert read["retrain"].astype(bool).tolist() == [True, False, True, False]
    assert [None if pd.isna(r) else r for r in read["reason"]] == reasons
    assert [None if pd.isna(v) else int(v) for v in read["model_version"]] == [1, None, 2**31 - 1, 7]
    back = store.forecasts(issued_tick=2)
    assert back["stream_id"].tolist() == [0, 0, 1, 3]
    np.testing.assert_array_equal(back["ds"].to_numpy(dtype="datetime64[ns]"), stamps)
    np.testing.assert_array_equal(back["y_hat"].to_numpy(float), [-huge, tiny, huge, 0.0])
    assert [None if pd.isna(v) else int(v) for v in back["model_version"]] == [4, 4, None, 2]


def test_bulk_rows_round_trip_every_column_kind_with_nulls_and_extremes(store, monkeypatch):
    """bulk.insert_rows (binary COPY built from arrays on PostgreSQL, executemany on SQLite) into a staging
    table and back: int64 and float extremes exact, NaN and infinities NULL, '' and None text NULL, empty
    bytes kept, booleans, timestamps to the microsecond, and more rows than one batch."""
    from mlma.store import bulk

    monkeypatch.setattr(bulk, "BATCH_ROWS", 1_000)
    i64 = np.iinfo(np.int64)
    huge = np.finfo(np.float64).max
    n = 2 * bulk.BATCH_ROWS + 3
    ints = np.arange(n, dtype=np.int64)
    ints[:3] = [i64.min, i64.max, -1]
    floats = np.linspace(-1.0, 1.0, n)
    floats[:5] = [np.nan, np.inf, -np.inf, huge, 5e-324]
    maybe = np.full(n, np.nan)
    maybe[::3] = np.arange(0, n, 3)
    maybe[0] = 2.0 ** 53
    texts = np.array(["a\tb", "", None, "\\N", "ünï\ncode"] * (n // 5) + ["x"] * (n % 5), dtype=object)
    blobs = [b"", b"\x00\xff", bytes(range(256))] * (n // 3) + [b"z"] * (n % 3)
    stamps = pd.Timestamp("2000-01-01") + pd.to_timedelta(np.arange(n) - n // 2, unit="us") * 7_919_000_001
    flags = np.arange(n) % 3 == 0
    columns = {"i": "int", "f": "float", "m": "int?", "t": "text", "b": "blob", "d": "ds", "o": "bool"}
    data = {"i": ints, "f": floats, "m": maybe, "t": texts, "b": blobs, "d": stamps.values, "o": flags}
    with store.engine.begin() as conn, bulk.staged(conn, "mlma_test_kinds", columns, data, key=("i",)) as st:
        rows = conn.execute(sa.select(st).order_by(st.c.i)).all()
    back = pd.DataFrame(rows, columns=list(columns)).set_index("i").loc[ints]
    assert back.index.tolist() == ints.tolist()
    expected = np.where(np.isfinite(floats), floats, np.nan)
    np.testing.assert_array_equal(back["f"].to_numpy(dtype=float, na_value=np.nan), expected)
    assert [None if pd.isna(v) else int(v) for v in back["m"]] == [None if np.isnan(v) else int(v) for v in maybe]
    assert [None if pd.isna(v) else v for v in back["t"]] == [None if v in ("", None) else v for v in texts]
    assert [bytes(v) for v in back["b"]] == blobs
    np.testing.assert_array_equal(bulk.ds_from_db(back["d"].tolist(), store.engine.dialect.name), stamps.values)
    assert back["o"].astype(bool).tolist() == flags.tolist()


def test_write_tick_hands_back_the_state_it_saved_as_read_only_copies_equal_to_a_read(store):
    """TickWrite.state is what load_state reads back (values, dtypes, NaN and extremes, hash, size), and
    changing the caller's arrays after the write does not change it."""
    store.stream_ids(["a", "b", "c"])
    f64 = np.array([np.nan, np.inf, -np.inf, 5e-324, np.finfo(np.float64).max])
    state = {"agent.loss": f64, "agent.ref": np.arange(12, dtype=np.float32).reshape(3, 4),
             "agent.version": np.array([np.iinfo(np.int64).min, -1, np.iinfo(np.int64).max]),
             "agent.flag": np.array([True, False, True]), "meta.freq": np.array("h"),
             "shadow.streams": np.empty(0, dtype=np.int64)}
    written = store.write_tick(TickRecord(3, state=state))
    kept, read = written.state, store.load_state(3)
    assert (kept.tick, kept.sha256, kept.size_bytes) == (read.tick, read.sha256, read.size_bytes) == \
        (3, written.state_sha256, read.size_bytes)
    assert kept.saved_at == read.saved_at
    assert kept.arrays.keys() == read.arrays.keys()
    for name, value in read.arrays.items():
        assert kept.arrays[name].dtype == value.dtype and kept.arrays[name].shape == value.shape, name
        np.testing.assert_array_equal(kept.arrays[name], value)
    state["agent.loss"][:] = 0.0  # the next tick changing its arrays in place
    state["agent.version"][0] = 7
    assert np.isnan(kept.arrays["agent.loss"][0]) and kept.arrays["agent.version"][0] == np.iinfo(np.int64).min
    with pytest.raises(ValueError, match="read-only"):
        kept.arrays["agent.ref"][0, 0] = 1.0
    assert store.write_tick(TickRecord(4)).state is None


def test_saved_state_is_verified_and_only_the_latest_are_kept(store):
    store.stream_ids(["a", "b"])
    for tick in range(5):
        store.save_state(tick, {"agent.version": np.array([tick, tick + 1])})
    with store.engine.connect() as conn:
        kept = sorted(t for (t,) in conn.execute(sa.select(S.agent_state.c.tick)))
    assert kept == [2, 3, 4]
    assert store.load_state().arrays["agent.version"].tolist() == [4, 5]
    assert store.load_state(3).arrays["agent.version"].tolist() == [3, 4]
    assert store.load_state(0) is None
    with store.engine.begin() as conn:
        blob = conn.execute(sa.select(S.agent_state.c.blob).where(S.agent_state.c.tick == 4)).scalar_one()
        damaged = bytearray(blob)
        damaged[len(damaged) // 2] ^= 0xFF
        conn.execute(sa.update(S.agent_state).where(S.agent_state.c.tick == 4).values(blob=bytes(damaged)))
    with pytest.raises(StateCorrupted, match="does not match its recorded sha256"):
        store.load_state()


def _staged_tick(store, tick, ref, champion):
    """A tick whose state has a part staged ahead of it, as the live agent stages the policy's arrays."""
    from mlma.store.state import StateEncoding

    encoding = StateEncoding()
    encoding.add_part(store.stage_state_part(tick, {"policy.ref": ref}))
    encoding.add({"agent.champion": champion})
    try:
        return store.write_tick(TickRecord(tick, state=encoding))
    finally:
        encoding.close()


def test_a_part_staged_ahead_of_the_tick_is_saved_apart_on_postgresql_and_loads_with_the_state(store, url):
    from mlma.store.glance import glance

    store.stream_ids(["a", "b", "c"])
    rng = np.random.default_rng(1)
    refs = {tick: rng.random((3, 14, 24)).astype(np.float32) for tick in range(5)}
    for tick in range(4):
        written = _staged_tick(store, tick, refs[tick], np.array([tick, -1, 2]))
    apart = url.startswith("postgresql")
    with store.engine.connect() as conn:
        parts = conn.execute(sa.select(S.state_parts.c.tick, S.state_parts.c.size_bytes)
                             .order_by(S.state_parts.c.tick)).all()
        state_size = conn.execute(sa.select(sa.func.length(S.agent_state.c.blob))
                                  .where(S.agent_state.c.tick == 3)).scalar_one()
    # PostgreSQL: one part per tick, dropped with its state (3 kept); SQLite: one blob per state, no parts.
    assert [t for t, _ in parts] == ([1, 2, 3] if apart else [])
    read = store.load_state(3)
    assert sorted(read.arrays) == ["agent.champion", "policy.ref"]
    np.testing.assert_array_equal(read.arrays["policy.ref"], refs[3])
    assert read.arrays["agent.champion"].tolist() == [3, -1, 2]
    assert read.size_bytes == written.state.size_bytes == state_size + (parts[-1][1] if apart else 0)
    np.testing.assert_array_equal(written.state.arrays["policy.ref"], refs[3])
    assert read.sha256 == written.state_sha256
    # A part staged by a tick that then failed is named by no state: never loaded, dropped in time.
    store.stage_state_part(4, {"policy.ref": refs[4]}).result() if apart else None
    np.testing.assert_array_equal(store.load_state().arrays["policy.ref"], refs[3])
    assert [t for t, e in store.saved_states()] == [3, 2, 1] and all(e is None for _, e in store.saved_states())
    view = glance(url)
    assert view is not None and [e for _, e in view.saved_states] == [None, None, None]
    # The tick's next attempt commits; the part its failed attempt left is dropped with that commit.
    _staged_tick(store, 4, refs[4], np.array([4, -1, 2]))
    with store.engine.connect() as conn:
        at_4 = conn.execute(sa.select(sa.func.count()).where(S.state_parts.c.tick == 4)).scalar_one()
    assert at_4 == (1 if apart else 0)
    np.testing.assert_array_equal(store.load_state().arrays["policy.ref"], refs[4])


def test_an_empty_part_a_policy_without_state_stages_is_not_saved_apart(store):
    store.stream_ids(["a"])
    written = _staged_tick(store, 1, np.zeros((1, 2), dtype=np.float32), np.array([1]))
    from mlma.store.state import StateEncoding

    encoding = StateEncoding()
    encoding.add_part(store.stage_state_part(2, {}))   # e.g. the periodic policy keeps no arrays
    encoding.add({"agent.champion": np.array([2])})
    store.write_tick(TickRecord(2, state=encoding))
    encoding.close()
    assert written.state.tick == 1
    assert sorted(store.load_state(2).arrays) == ["agent.champion"]


def test_a_damaged_or_missing_state_part_is_refused_and_reported(store, url):
    from mlma.store.glance import glance

    if not url.startswith("postgresql"):
        pytest.skip("parts are saved apart on PostgreSQL only")
    store.stream_ids(["a", "b"])
    ref = np.random.default_rng(2).random((2, 14, 24)).astype(np.float32)
    for tick in (1, 2):
        _staged_tick(store, tick, ref, np.array([tick, tick]))
    with store.engine.begin() as conn:
        ids = dict(conn.execute(sa.select(S.state_parts.c.tick, S.state_parts.c.id)).all())
        blob = conn.execute(sa.select(S.state_parts.c.blob).where(S.state_parts.c.id == ids[2])).scalar_one()
        damaged = bytearray(blob)
        damaged[len(damaged) // 2] ^= 0xFF
        # The sha256 beside the part is rewritten to match: the state's blob holds the one that counts.
        conn.execute(sa.update(S.state_parts).where(S.state_parts.c.id == ids[2])
                     .values(blob=bytes(damaged), sha256=hashlib.sha256(bytes(damaged)).hexdigest()))
        conn.execute(sa.delete(S.state_parts).where(S.state_parts.c.id == ids[1]))
    with pytest.raises(StateCorrupted, match="does not match its recorded sha256"):
        store.load_state(2)
    with pytest.raises(StateCorrupted, match=rf"tick 1 names part\(s\) \[{ids[1]}\] that are not in the store"):
        store.load_state(1)
    damage = dict(store.saved_states())
    assert "does not match the SHA-256 the state records" in damage[2] and "is missing" in damage[1]
    quick = dict(glance(url).saved_states)
    assert "does not match the SHA-256 the state records" in quick[2] and "is missing" in quick[1]


def test_the_downgrade_puts_each_states_parts_back_in_its_own_blob(store, url):
    from alembic import command

    from mlma.store.migrate import alembic_config
    from mlma.store.state import decode_state

    store.stream_ids(["a", "b"])
    refs = {tick: np.random.default_rng(tick).random((2, 14, 24)).astype(np.float32) for tick in (1, 2)}
    for tick, ref in refs.items():
        _staged_tick(store, tick, ref, np.array([tick, tick]))
    with store.engine.begin() as conn:
        command.downgrade(alembic_config(conn), "0010")
    with Store.open(url, check_schema=False) as old, old.engine.connect() as conn:
        saved = conn.execute(sa.text("SELECT tick, sha256, blob FROM agent_state ORDER BY tick")).all()
        assert not sa.inspect(conn).has_table("state_parts")
    for tick, sha, blob in saved:   # what revision 0010's code reads: one blob, every array in it
        arrays = decode_state(bytes(blob), sha)
        assert sorted(arrays) == ["agent.champion", "policy.ref"]
        np.testing.assert_array_equal(arrays["policy.ref"], refs[tick])


def test_a_part_that_could_not_be_saved_fails_the_tick_and_commits_nothing(store):
    from mlma.store.state import StagedPart, StateEncoding

    store.stream_ids(["a"])
    ref = np.zeros((1, 14, 24), dtype=np.float32)
    _staged_tick(store, 1, ref, np.array([1]))

    def save(blob, sha):
        raise OSError("the part's connection dropped")

    encoding = StateEncoding()
    encoding.add_part(StagedPart({"policy.ref": ref}, save))
    encoding.add({"agent.champion": np.array([2])})
    with pytest.raises(OSError, match="connection dropped"):
        store.write_tick(TickRecord(2, state=encoding))
    encoding.close()
    assert store.load_state().tick == 1 and store.newest_state_tick() == 1
    assert list(store.tick_summaries()) == [1]


# -- escalations and audit ------------------------------------------------------------------------------------
def test_escalations_move_through_their_statuses_and_every_action_is_audited(store):
    store.stream_ids(["a", "b"])
    ids = store.add_escalations([Escalation(0, 3, "silent", 1, "no data for 3 ticks"),
                                 Escalation(1, 3, "challenger-lost", 2, "lost"),
                                 Escalation(-1, 3, "budget", 1, "42 re-trainings queued")])
    assert len(ids) == 3 and store.escalations(status="open")["id"].tolist() == sorted(ids, reverse=True)
    assert store.escalations()["unique_id"].fillna("-").tolist() == ["-", "b", "a"]
    store.set_escalation_status([ids[0]], "acknowledged", by="user:ana", reason="looking")
    store.set_escalation_status([ids[1]], "silenced", by="user:ana", reason="known",
                                silenced_until=pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=1))
    store.set_escalation_status([ids[2]], "silenced", by="user:bo", silenced_until="2000-01-01")
    statuses = dict(zip(store.escalations()["id"], store.escalations()["status"]))
    assert statuses == {ids[0]: "acknowledged", ids[1]: "silenced", ids[2]: "open"}  # a past silence ended
    assert store.escalations(status="silenced", streams=["b"])["id"].tolist() == [ids[1]]
    # Filtered by status as read: the silence that ran out is open, not silenced.
    assert store.escalations(status="open")["id"].tolist() == [ids[2]]
    assert store.escalations(status=["silenced", "acknowledged"])["id"].tolist() == [ids[1], ids[0]]
    with pytest.raises(ValueError, match="silenced_until"):
        store.set_escalation_status([ids[0]], "silenced", by="user:ana")
    with pytest.raises(ValueError, match="'agent' or 'user:<name>'"):
        store.set_escalation_status([ids[0]], "resolved", by="ana")

    log = store.audit_log()
    assert log["action"].tolist() == ["escalation-acknowledged", "escalation-silenced", "escalation-silenced"]
    assert log["actor"].tolist() == ["user:ana", "user:ana", "user:bo"]
    assert log["params"].iloc[0]["ids"] == [ids[0]]
    entry = store.add_audit("user:ana", "force-retrain", "group:city=Berlin", {"streams": 40}, "new depot")
    assert store.audit_log(target="group:city=Berlin")["id"].tolist() == [entry]
    assert log["at"].iloc[0].tzinfo is not None


def test_write_tick_resolves_only_unresolved_escalations_of_cleared_streams_across_a_large_fleet(store):
    """Auto-resolve with more cleared streams and more escalations to resolve than one statement binds
    (10,000): each unresolved escalation of a cleared stream and kind is resolved, nothing else."""
    n = 12_500
    store.stream_ids([f"z{i:05d}" for i in range(n)])
    silent = store.add_escalations([Escalation(s, 1, "silent", 1, "quiet") for s in range(n)])
    others = store.add_escalations([Escalation(s, 1, "cold", 1, "cold") for s in range(0, n, 7)]
                                   + [Escalation(-1, 1, "silent", 1, "fleet-wide")])
    store.set_escalation_status(silent[:3], "acknowledged", by="user:ana")
    store.set_escalation_status(silent[3:5], "resolved", by="user:ana")  # already resolved: not counted
    store.set_escalation_status(silent[5:6], "silenced", by="user:ana",
                                silenced_until=pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=1))
    cleared = np.arange(40_000) % n != 9  # every stream but 9 (and ids no stream has), several times over
    written = store.write_tick(TickRecord(2, resolve_escalations={"silent": np.flatnonzero(cleared),
                                                                  "cold": [5, 7, 14, 30_000]}))
    assert dict(written.resolved) == {"silent": n - 3, "cold": 2}
    status = store.escalations().set_index("id")["status"]
    assert status[silent[9]] == "open" and (status[silent[:9]] == "resolved").all()
    assert (status[silent[10:]] == "resolved").all()
    assert status[others[-1]] == "open"  # a fleet-wide escalation has no stream that clears
    cold = status[others[:-1]]
    assert cold[cold == "resolved"].index.tolist() == [others[1], others[2]]  # streams 7 and 14
    entry = store.audit_log(target="tick:2")
    assert entry["params"].tolist() == [{"resolved": {"silent": n - 3, "cold": 2}}]


def test_the_audit_log_is_append_only_in_the_database(store):
    ids = store.stream_ids(["zone-1", "zone-2", "zone-3"])
    store.add_audit("agent", "tick", "fleet", {"n": 1})
    store.add_audit("user:ana", "pin", "streams:2", {"streams": 2}, streams=ids[:2])
    for statement in ("UPDATE audit_log SET actor = 'user:eve'", "DELETE FROM audit_log",
                      "UPDATE audit_streams SET stream_id = 99", "DELETE FROM audit_streams"):
        with pytest.raises(sa.exc.DatabaseError, match="append-only"):
            with store.engine.begin() as conn:
                conn.execute(sa.text(statement))
    assert store.audit_log()["actor"].tolist() == ["agent", "user:ana"]
    assert [store.audit_log(stream=s)["target"].tolist() for s in ("zone-1", "zone-2", "zone-3")] == [
        ["streams:2"], ["streams:2"], []]


# -- the lock -------------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_second_process_cannot_take_the_lock_until_the_crashed_holders_lease_expires(store, url):
    context = multiprocessing.get_context("spawn")
    acquired, release, outcome = context.Event(), context.Event(), context.Queue()
    ttl = 4.0
    child = context.Process(target=hold_lock, args=(url, "agent@other-host:4242", ttl, acquired, release, outcome))
    child.start()
    try:
        assert acquired.wait(60), "the child process never took the lock"
        assert outcome.get(timeout=10) == "acquired"
        with pytest.raises(LockHeld, match="held by 'agent@other-host:4242'") as info:
            store.acquire_lock("agent@here", ttl=30)
        assert info.value.holder == "agent@other-host:4242"
        assert store.lock_holder()["holder"] == "agent@other-host:4242"
        child.kill()  # a crash: no release, no more heartbeats
        child.join(10)
        expires = info.value.expires_at.timestamp()
        if time.time() < expires - 1.0:  # (a very busy machine may already be past the expiry)
            with pytest.raises(LockHeld):
                store.acquire_lock("agent@here", ttl=30)
        time.sleep(max(0.0, expires - time.time()) + 0.3)
        lease = store.acquire_lock("agent@here", ttl=30)
        assert store.lock_holder()["holder"] == "agent@here"
        lease.release()
        assert store.lock_holder() is None
    finally:
        # Never touch `release` once the child was killed: it may have died inside the event's wait and
        # left the shared condition in a state where set() blocks.
        if child.is_alive():
            child.kill()
        child.join(10)


def test_of_many_agents_racing_for_the_lock_exactly_one_wins(store):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    start = threading.Barrier(6)

    def race(i: int):
        start.wait()
        try:
            return store.acquire_lock(f"agent@{i}", ttl=30)
        except LockHeld as exc:
            return exc

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(race, range(6)))
    winners = [o for o in outcomes if not isinstance(o, LockHeld)]
    assert len(winners) == 1
    assert {o.holder for o in outcomes if isinstance(o, LockHeld)} == {winners[0].holder}
    winners[0].release()


def test_a_lease_that_was_taken_over_cannot_commit(store):
    store.ingest_frame(fleet_frame(3, 24), "d")
    stale = store.acquire_lock("agent@a", ttl=0.3)
    time.sleep(0.5)
    fresh = store.acquire_lock("agent@b", ttl=30)
    decision, _, _ = _tick_outputs(store, 3)
    with pytest.raises(LockLost, match="no longer held by 'agent@a'.*now: 'agent@b'"):
        store.write_tick(TickRecord(0, verdicts=decision), lease=stale)
    assert count(store, S.verdicts) == 0 and count(store, S.ticks) == 0
    with pytest.raises(LockLost):
        stale.heartbeat()
    stale.release()  # harmless: it only removes its own lease
    assert store.lock_holder()["holder"] == "agent@b"
    store.write_tick(TickRecord(0, verdicts=decision), lease=fresh)
    assert store.ticks()["agent_id"].tolist() == ["agent@b"]
    fresh.release()


def test_heartbeats_keep_a_long_tick_locked_and_the_lock_is_freed_after(store):
    with store.tick_lock("agent@long", ttl=1.0) as lease:
        time.sleep(2.2)  # well past the ttl: only the heartbeats (every ttl / 3) keep it
        with pytest.raises(LockHeld, match="agent@long"):
            store.acquire_lock("agent@impatient")
        assert lease.expires_at > lease.acquired_at
        lease.check()
    assert store.lock_holder() is None
    store.acquire_lock("agent@next").release()


def test_a_person_can_break_a_lock_and_it_is_audited(store):
    store.acquire_lock("agent@dead", ttl=3600)
    assert store.break_lock(by="user:ana", reason="host agent-1 is gone") is True
    assert store.lock_holder() is None
    entry = store.audit_log(action="break-lock").iloc[0]
    assert entry["params"] == {"holder": "agent@dead"} and entry["actor"] == "user:ana"


# -- bulk performance -----------------------------------------------------------------------------------------
def test_bulk_ingest_and_tick_write_of_ten_thousand_streams(store, record_property):
    frame = fleet_frame(10_000, 24)
    started = time.perf_counter()
    report = store.ingest_frame(frame, "day-1")
    ingest = time.perf_counter() - started
    assert report.rows_new == 240_000 and report.new_streams == 10_000

    started = time.perf_counter()
    # The same rows in another file (another content hash): every row is compared, none changes.
    again = store.ingest_frame(frame, "day-1-again", hashlib.sha256(b"another file").hexdigest())
    reingest = time.perf_counter() - started
    assert again.rows_unchanged == 240_000

    started = time.perf_counter()
    window = store.observations("2024-01-01 12:00", "2024-01-02")
    read = time.perf_counter() - started
    assert len(window) == 120_000
    many = [f"zone-{i:05d}" for i in range(0, 10_000, 4)]  # more than fit in one IN (...) list
    assert len(store.observations("2024-01-01 12:00", "2024-01-02", streams=many)) == 2_500 * 12

    n = 10_000
    decision, _, state = _tick_outputs(store, n)
    forecasts = forecast_frame(np.ones((n, 24)), pd.date_range("2024-01-02", periods=24, freq="h"),
                               np.ones(n, dtype=int))
    started = time.perf_counter()
    store.write_tick(TickRecord(0, verdicts=decision, forecasts=forecasts, state=state))
    tick = time.perf_counter() - started

    figures = {"ingest_240k_s": ingest, "reingest_240k_s": reingest, "read_120k_s": read,
               "tick_10k_verdicts_240k_forecasts_s": tick}
    for name, value in figures.items():
        record_property(f"{store.dialect}_{name}", round(value, 3))
    print(f"\n{store.dialect}: " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()))
    # "A few seconds" with room for a busy 2-core machine.
    assert ingest < 10.0 and reingest < 10.0 and read < 5.0 and tick < 10.0


# -- the project's clock and the ingest boundary --------------------------------------------------------------------
def test_the_clock_is_fixed_once_in_the_ingests_transaction(store, tmp_path):
    from mlma.store.records import Clock

    assert store.clock() is None
    first = fleet_frame(2, 24)
    store.ingest_frame(first, "first", clock=Clock("h", "D", fixed_by="the ingest of first"))
    assert (store.clock().freq, store.clock().tick, store.clock().fixed_by) == ("h", "D", "the ingest of first")
    before = len(store.observations())
    with pytest.raises(ValueError, match="clock is frequency h, tick D.*cannot become frequency D.*nothing was"):
        store.ingest_frame(fleet_frame(2, 24, start="2024-02-01"), "other", clock=Clock("D", "7D"))
    assert len(store.observations()) == before and len(store.ingests()) == 1


def test_value_ranges_and_newest_ds_are_set_based_reads(store):
    frame = fleet_frame(3, 48)
    store.ingest_frame(frame, "f")
    ranges = store.value_ranges(["zone-00000", "zone-00002", "nobody"], since="2024-01-02")
    late = frame[frame["ds"] >= "2024-01-02"].groupby("unique_id")["y"].agg(["min", "max", "size"])
    assert ranges.index.tolist() == ["zone-00000", "zone-00002"]
    assert ranges["lo"].tolist() == late.loc[ranges.index, "min"].tolist()
    assert ranges["hi"].tolist() == late.loc[ranges.index, "max"].tolist()
    assert ranges["n"].tolist() == [24, 24]
    assert store.newest_ds() == pd.Timestamp("2024-01-02 23:00")
    assert store.newest_ds(until="2024-01-02 05:30") == pd.Timestamp("2024-01-02 05:00")


def test_the_content_hash_of_a_frame_did_not_change_with_the_codes(store):
    from mlma.store import frame_sha256

    frame = fleet_frame(3, 5).sample(frac=1.0, random_state=1)
    uid = frame["unique_id"].astype(str).to_numpy(dtype=object)
    ns = frame["ds"].to_numpy(dtype="datetime64[ns]").astype(np.int64)
    y = frame["y"].to_numpy(dtype=np.float64)
    order = np.lexsort((ns, uid))
    digest = hashlib.sha256()          # how frame_sha256 hashed a frame before it worked on stream codes
    digest.update("\x1f".join(uid[order].tolist()).encode())
    digest.update(ns[order].tobytes())
    digest.update(y[order].tobytes())
    assert frame_sha256(frame) == digest.hexdigest()


def test_ingest_file_checks_rows_against_the_project(store, tmp_path):
    from mlma.data import DataError, IngestLimits

    history = fleet_frame(2, 72)
    first = store.ingest_file(history, source="history")
    assert (first.clock.freq, first.clock.tick) == ("h", "D")
    day = fleet_frame(2, 24, start="2024-01-04").astype({"y": np.float64})
    day.loc[0, "y"] = 1e9
    day.loc[1, "ds"] = pd.Timestamp("2024-03-01")
    report = store.ingest_file(day, source="day", limits=IngestLimits(max_ahead_ticks=7),
                               rejects=tmp_path / "rejects.csv")
    assert report.rows_new == 46 and report.rows_dropped == 2
    listed = pd.read_csv(tmp_path / "rejects.csv")
    assert listed[["line", "code", "column"]].values.tolist() == [[1, "ahead-of-fleet", "ds"],
                                                                   [0, "out-of-range", "y"]]
    assert oct((tmp_path / "rejects.csv").stat().st_mode & 0o777) == "0o600"
    strict = fleet_frame(2, 24, start="2024-01-05").astype({"y": np.float64})
    strict.loc[3, "y"] = -1e9
    with pytest.raises(DataError, match="nothing was written"):
        store.ingest_file(strict, source="strict", on_bad_rows="raise")
    assert "strict" not in store.ingests()["source"].tolist()



def test_a_file_whose_rows_were_dropped_is_checked_again_when_sent_again(store, tmp_path):
    """A file that lost rows to a limit is not "already ingested" when it comes again after the limit was
    raised (as the rejection's message says to do): its dropped rows are checked again and stored, and a copy
    sent after it took every row is a duplicate. A file taken whole is a duplicate at once, as ever."""
    from mlma.data import IngestLimits

    store.ingest_file(fleet_frame(2, 72), source="history")
    day = fleet_frame(2, 24, start="2024-01-04").astype({"y": np.float64})
    day.loc[[0, 5], "y"] = 1e6                                         # a real surge, beyond the default limit
    path = tmp_path / "day.csv"
    day.to_csv(path, index=False)
    first = store.ingest_file(path)
    assert (first.rows_new, first.rows_dropped) == (46, 2)
    same_limits = store.ingest_file(path)                              # sent again: checked again, still out
    assert not same_limits.duplicate and (same_limits.rows_unchanged, same_limits.rows_dropped) == (46, 2)
    raised = store.ingest_file(path, limits=IngestLimits(value_range_factor=0))
    assert not raised.duplicate and (raised.rows_new, raised.rows_unchanged, raised.rows_dropped) == (2, 46, 0)
    assert (store.observations()["y"] == 1e6).sum() == 2
    again = store.ingest_file(path, limits=IngestLimits(value_range_factor=0))
    assert again.duplicate and again.ingest_id == raised.ingest_id and again.content_sha256 == first.content_sha256
    assert count(store, S.ingests) == 4 and count(store, S.observations) == 2 * 72 + 48
    # Rows that can never pass (a missing y, a repeated row) do not make a copy worth checking again.
    bad = fleet_frame(2, 24, start="2024-01-05").astype({"y": np.float64})
    bad.loc[3, "y"] = np.nan
    pd.concat([bad, bad.iloc[:1]]).to_csv(tmp_path / "bad.csv", index=False)
    assert store.ingest_file(tmp_path / "bad.csv").rows_dropped == 2
    assert store.ingest_file(tmp_path / "bad.csv").duplicate and count(store, S.ingests) == 5


def test_observed_driver_values_sent_again_unchanged_are_not_stored_again(store, tmp_path):
    """A feed that re-sends its last days (in another row order, so another file) stored every driver value
    again each time: 7,999 keys became 31,996 rows after three re-sends, all read by each tick's window. Only
    changed values are stored again, and the newest value is the one in force."""
    frame = fleet_frame(3, 48).assign(temperature=lambda f: 10.0 + f.index % 7, rain=0.5)
    store.ingest_frame(frame, "day-1")
    assert count(store, S.driver_values) == 2 * len(frame)
    for k, order in enumerate((frame.iloc[::-1], frame.sample(frac=1.0, random_state=1))):
        order.to_csv(tmp_path / f"resent-{k}.csv", index=False)
        again = store.ingest_file(tmp_path / f"resent-{k}.csv")
        assert not again.duplicate and again.rows_unchanged == len(frame)
        assert count(store, S.driver_values) == 2 * len(frame)
    changed = frame.copy()
    changed.loc[changed.index[:5], "temperature"] = -3.0          # a corrected reading
    changed.to_csv(tmp_path / "corrected.csv", index=False)
    store.ingest_file(tmp_path / "corrected.csv")
    assert count(store, S.driver_values) == 2 * len(frame) + 5
    values = store.driver_values(["temperature", "rain"]).sort_values(["stream_id", "ds"])
    assert len(values) == len(frame) and (values["temperature"].to_numpy()[:5] == -3.0).all()
    assert np.allclose(values["temperature"].to_numpy()[5:], frame["temperature"].to_numpy()[5:])


def test_an_id_whose_letters_come_composed_or_decomposed_is_one_stream(store, tmp_path):
    """ "Zürich-z00" with its ü as one character (NFC) or as u and a combining mark (NFD, as some exports and
    a Mac's file names write it) looked the same everywhere and became two streams. Ids are composed when
    read; a store that holds a decomposed id from before keeps its stream."""
    composed, decomposed = "Z\u00fcrich-z00", "Zu\u0308rich-z00"
    day = fleet_frame(1, 24)
    day.assign(unique_id=composed).to_csv(tmp_path / "a.csv", index=False)
    day.assign(unique_id=decomposed, y=day["y"] + 1).to_csv(tmp_path / "b.csv", index=False)
    store.ingest_file(tmp_path / "a.csv")
    second = store.ingest_file(tmp_path / "b.csv")
    assert store.streams()["unique_id"].tolist() == [composed] and second.rows_revised == 24
    assert store.resolve(decomposed) == store.resolve(composed)
    store.ingest_frame(fleet_frame(1, 24).assign(unique_id="Mu\u0308nchen"), "from before")   # stored as written
    (tmp_path / "c.csv").write_text(fleet_frame(1, 24, start="2024-01-02").assign(unique_id="Mu\u0308nchen")
                                    .to_csv(index=False), encoding="utf-8")
    assert store.ingest_file(tmp_path / "c.csv").new_streams == 0
    assert sorted(store.streams()["unique_id"]) == sorted([composed, "Mu\u0308nchen"])


def test_new_numeric_ids_that_are_stored_ids_without_their_leading_zeros_are_warned_of(store, tmp_path):
    """Ids 00001-00003, then a day whose ids lost their zeros (a number column, a spreadsheet): three new
    streams, as before (they may be other zones), but the ingest says which stored ids they look like."""
    history = fleet_frame(3, 48).assign(unique_id=lambda f: f["unique_id"].str.replace("zone-", ""))
    history.to_csv(tmp_path / "history.csv", index=False)
    store.ingest_file(tmp_path / "history.csv")
    day = fleet_frame(3, 24, start="2024-01-03").assign(unique_id=lambda f: f["unique_id"].str.replace("zone-", "")
                                                        .str.lstrip("0").replace("", "0"))
    day.to_csv(tmp_path / "day.csv", index=False)
    report = store.ingest_file(tmp_path / "day.csv")
    assert report.new_streams == 3
    (found,) = report.validation.by_code("id-like-stored")
    assert found.severity == "warning" and found.n_rows == 72 and set(found.streams) == {"0", "1", "2"}
    assert "'1' (stored: '00001')" in found.message
    again = fleet_frame(3, 24, start="2024-01-04").assign(unique_id=lambda f: f["unique_id"].str.replace("zone-", ""))
    again.to_csv(tmp_path / "again.csv", index=False)
    assert not store.ingest_file(tmp_path / "again.csv").validation.by_code("id-like-stored")


def test_a_daily_file_at_local_midnight_with_offsets_is_refused_saying_why(store, tmp_path):
    """The whole file is off the daily grid once its offsets are applied: the refusal said "23 h after the
    grid ... a time zone with a 23 h offset" (and, across the summer time change, "data of another
    frequency"); it says the dates carry an offset and what to write instead."""
    from mlma.data import DataError

    days = pd.date_range("2024-01-01", "2024-05-31", freq="D", tz="Europe/Berlin")
    path = tmp_path / "daily.csv"
    pd.DataFrame({"unique_id": "z1", "ds": [t.isoformat() for t in days], "y": 1.0 + days.day % 3}
                 ).to_csv(path, index=False)
    with pytest.raises(DataError) as info:
        store.ingest_file(path)
    message = str(info.value)
    assert "they carry a UTC offset ('2024-01-01T00:00:00+01:00' is 2023-12-31 23:00:00 in UTC" in message
    assert "write the dates without an offset" in message and "another frequency" not in message
    assert count(store, S.observations) == 0

# -- the tick record ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("build, message", [
    (lambda: TickRecord(-1), "tick must be a whole number >= 0, got -1"),
    (lambda: TickRecord("3"), "tick must be a whole number >= 0, got '3'"),
    (lambda: TickRecord(2, verdicts=[1, 2]), "tick record 2: verdicts must be a Decision or a DataFrame, got list"),
    (lambda: TickRecord(2, verdicts=pd.DataFrame({"stream_id": [0]})), "needs columns stream_id and verdict"),
    (lambda: TickRecord(2, forecasts=pd.DataFrame({"stream_id": [0], "y_hat": [1.0]})),
     "the forecasts frame needs columns stream_id, ds, y_hat"),
    (lambda: TickRecord(2, escalations=[("a", "b")]), r"escalations\[0\] is not an Escalation"),
    (lambda: TickRecord(2, escalations="silent"), "escalations must be a list, got str"),
    (lambda: TickRecord(2, expected_versions=[1, 2]), "expected_versions has 2 number\\(s\\) for 0 new version"),
    (lambda: TickRecord(2, champion_moves=[(0, 1)]), r"champion_moves\[0\] must be a ChampionMove, got tuple"),
    (lambda: TickRecord(2, version_checks=[(0, 1, {})]), r"version_checks\[0\] must be a VersionCheck"),
    (lambda: TickRecord(2, audit=[{"action": "tick"}]), r"audit\[0\] must be a mapping with actor and action"),
    (lambda: TickRecord(2, audit=[{"actor": "bob", "action": "tick"}]), "actor must be 'agent' or 'user:<name>'"),
    (lambda: TickRecord(2, resolve_escalations={"sleepy": [1]}), r"unknown escalation kind\(s\) \['sleepy'\]"),
    (lambda: TickRecord(2, applied_actions={1: 5}), "applied_actions must map a stream action id to its outcome"),
    (lambda: TickRecord(2, summary={"n_streams": 3}), "summary must be a TickSummary, got dict"),
    (lambda: TickSummary(retrains=-2), "tick summary: retrains must be a whole number >= 0, got -2"),
    (lambda: TickSummary(verdicts={"ok": 1.5}), r"verdicts\['ok'\] must be a whole number >= 0, got 1.5"),
    (lambda: TickSummary(loss="high"), "loss must be a number or None, got 'high'"),
    (lambda: TickSummary.parse([1, 2]), "ticks.summary must be a JSON object, got list"),
])
def test_a_bad_tick_record_is_refused_with_a_message_naming_the_field(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_write_tick_takes_only_a_tick_record_and_summaries_read_back_typed(tmp_path):
    with Store.create(f"sqlite:///{tmp_path / 's.db'}") as store:
        with pytest.raises(TypeError, match="write_tick takes a TickRecord, got int"):
            store.write_tick(3)
        summary = TickSummary(n_streams=2, verdicts={"ok": 2}, retrains=1, loss=float("nan"), driver_values_filled=4)
        store.write_tick(TickRecord(0, summary=summary))
        store.write_tick(TickRecord(1))
        # A row written by an earlier mlma: no escalations_resolved, and a key this version does not know.
        with store.engine.begin() as conn:
            conn.execute(sa.insert(S.ticks).values(tick=2, status="done", started_at=dt.datetime.now(dt.timezone.utc),
                                                   attempts=1, summary={"n_streams": 2, "retrains": 3, "note": "x"}))
        got = store.tick_summaries()
    assert got[0] == summary and got[0].loss is None and got[1] is None
    assert got[2] == TickSummary(n_streams=2, retrains=3)


def test_every_tick_summary_field_is_checked_by_its_type():
    """A field added to TickSummary is checked without being listed again: its annotation says how."""
    import dataclasses

    checks = {"int": (-1, "must be a whole number >= 0"), "int | None": (1.5, "must be a whole number >= 0"),
              "float": (-0.5, "must be a number >= 0"), "float | None": ("x", "must be a number or None"),
              "Mapping[str, int]": ({"ok": -1}, "must be a whole number >= 0"),
              "Mapping[str, Any] | None": (3, "must be a JSON object or None")}
    for f in dataclasses.fields(TickSummary):
        assert f.type in checks, f"TickSummary.{f.name}: no check for the annotation {f.type!r}"
        bad, message = checks[f.type]
        with pytest.raises(ValueError, match=message):
            TickSummary(**{f.name: bad})
    assert set(TickSummary().to_json()) == {f.name for f in dataclasses.fields(TickSummary)} - {
        "driver_values_filled", "next_tick"}


# -- packed forecasts, state encoding, stream columns (issue 12: a tick's store work) -------------------------
def test_a_forecast_frame_that_cannot_be_packed_is_refused_by_name(store):
    store.stream_ids(["a", "b"])
    stamps = pd.to_datetime(["2024-01-01 00:00", "2024-01-01 01:00"])
    twice = pd.DataFrame({"stream_id": [1, 1], "ds": [stamps[0], stamps[0]], "y_hat": [1.0, 2.0]})
    with pytest.raises(ValueError, match="stream id 1 has two forecasts for 2024-01-01 00:00"):
        store.write_tick(TickRecord(0, forecasts=twice))
    mixed = pd.DataFrame({"stream_id": [0, 0], "ds": stamps, "y_hat": [1.0, 2.0], "model_version": [1, 2]})
    with pytest.raises(ValueError, match="stream id 0: its forecasts name several model versions"):
        store.write_tick(TickRecord(0, forecasts=mixed))
    assert count(store, S.forecasts) == 0 and store.ticks().empty
    # Unordered rows come back ordered, each stream's horizon whole.
    shuffled = pd.DataFrame({"stream_id": [1, 0, 1, 0], "ds": stamps[[1, 0, 0, 1]], "y_hat": [4.0, 1.0, 3.0, 2.0],
                             "model_version": [5, None, 5, None]})
    assert store.write_tick(TickRecord(0, forecasts=shuffled)).n_forecasts == 4
    issued = store.forecasts(0)
    assert issued["y_hat"].tolist() == [1.0, 2.0, 3.0, 4.0] and issued["ds"].tolist() == list(stamps) * 2
    assert issued["model_version"].tolist() == [pd.NA, pd.NA, 5, 5]
    assert store.forecasts(0, streams=["b"])["unique_id"].tolist() == ["b", "b"]


def test_state_arrays_are_compressed_and_old_npz_blobs_still_load():
    import io

    from mlma.store.state import FORMAT, decode_state, encode_state

    rng = np.random.default_rng(3)
    zeros = np.zeros((2000, 24), dtype=np.float32)
    noise = rng.random((2000, 24)).astype(np.float32)
    # An empty reference (NaN) and typical losses: a float32 loss keeps only its mantissa's low bits random.
    empty = np.full((2000, 24), np.nan, dtype=np.float32)
    small_zeros, _ = encode_state({"ref": zeros})
    small_empty, _ = encode_state({"ref": empty})
    small_noise, _ = encode_state({"ref": noise})
    assert FORMAT == "npz-zstd"
    assert len(small_zeros) < zeros.nbytes / 20 and len(small_empty) < empty.nbytes / 20
    assert len(small_noise) < noise.nbytes + 1000  # never much larger than the arrays themselves
    blob, sha = encode_state({"ref": noise, "flags": np.zeros(2000, dtype=bool), "name": np.array(["a", "bc"])})
    back = decode_state(blob, sha)
    assert np.array_equal(back["ref"], noise) and back["ref"].dtype == np.float32
    assert back["flags"].dtype == bool and back["name"].tolist() == ["a", "bc"]
    # Blobs of the earlier format (.npy members, deflated or stored, as numpy.savez writes them) load as before.
    for save in (np.savez_compressed, np.savez):
        buffer = io.BytesIO()
        save(buffer, ref=noise)
        old = buffer.getvalue()
        assert np.array_equal(decode_state(old, hashlib.sha256(old).hexdigest())["ref"], noise)


def test_streams_can_be_read_column_by_column(store):
    store.ingest_frame(fleet_frame(3, 2), "day-1")
    store.stream_ids(["no-rows"])
    store.set_attributes({"zone-00001": {"city": "Berlin"}})
    whole = store.streams()
    assert whole["attributes"].tolist() == [{}, {"city": "Berlin"}, {}, {}]
    assert whole["last_ds"].tolist()[:3] == [pd.Timestamp("2024-01-01 01:00")] * 3 and pd.isna(whole["last_ds"][3])
    assert str(whole["first_seen"].dtype).endswith("UTC]")
    some = store.streams(columns=["id", "unique_id"])
    assert list(some.columns) == ["id", "unique_id"]
    pd.testing.assert_frame_equal(some, whole[["id", "unique_id"]])
    with pytest.raises(ValueError, match="streams has columns"):
        store.streams(columns=["id", "colour"])


def test_binary_copy_refuses_a_value_its_column_type_cannot_hold():
    from mlma.store import copybinary

    with pytest.raises(ValueError, match="value 2147483648 does not fit the column's type int4"):
        copybinary.encode([copybinary.Field("int4", np.array([1, 2**31]))])
    with pytest.raises(ValueError, match="binary COPY of type 'jsonb' is not supported"):
        copybinary.encode([copybinary.Field("jsonb", ["{}"])])
    # A NULL row's placeholder is never checked against the type.
    assert copybinary.encode([copybinary.Field("int2", np.array([2**40]), np.array([True]))]).endswith(
        b"\x00\x01\xff\xff\xff\xff\xff\xff")


@pytest.mark.parametrize("size", [3, 5000])
def test_binary_copy_of_variable_values_matches_the_format_row_by_row(size):
    """Long values (packed forecast blocks) are copied into the stream one by one, short ones scattered at
    once: both must give exactly the rows of PostgreSQL's binary COPY format, NULLs and empty values too."""
    import struct

    from mlma.store import copybinary

    rng = np.random.default_rng(size)
    values = [rng.bytes(int(rng.integers(0, 2 * size))) for _ in range(40)]
    values[3], values[7] = None, b""
    ints = np.arange(40)
    stream = copybinary.encode([copybinary.Field("int8", ints), copybinary.Field("bytea", values)])
    expected = copybinary.HEADER
    for i, value in zip(ints.tolist(), values):
        expected += struct.pack(">hiq", 2, 8, i)
        expected += struct.pack(">i", -1) if value is None else struct.pack(">i", len(value)) + value
    assert stream == expected + copybinary.TRAILER


def test_champion_moves_and_override_changes_are_counted_in_their_own_transactions(store):
    """The counts a live tick compares (instead of reading every champion) move with every committed change,
    by a person or by a tick, and not with a rolled-back one; a tick names the kinds someone else changed
    between the caller's read and its commit."""
    from mlma.store import ChampionMove, NewVersion, TickRecord

    sid = [int(i) for i in store.stream_ids(["zone-1", "zone-2"])]
    assert store.change_counts() == {"champions": 0, "overrides": 0}
    with store.transaction() as tx:
        tx.record_versions([NewVersion(stream=s, artifact_sha256="ab" * 32, artifact_bytes=3, spec="naive")
                            for s in [*sid, sid[0]]])
    assert store.change_counts() == {"champions": 0, "overrides": 0}  # a new version moves no champion
    with store.transaction() as tx:
        tx.move_champions([ChampionMove(s, 1, "agent") for s in sid])
    assert store.change_counts() == {"champions": 1, "overrides": 0}  # one transaction moved two champions
    with pytest.raises(RuntimeError, match="changed my mind"), store.transaction() as tx:
        tx.move_champions([ChampionMove(sid[0], 2, "user:ana")])
        tx.merge_overrides({sid[1]: {"pinned": True}})
        raise RuntimeError("changed my mind")
    assert store.change_counts() == {"champions": 1, "overrides": 0}
    store.set_overrides(["zone-2"], {"pinned": True}, by="user:ana")
    assert store.change_counts() == {"champions": 1, "overrides": 1}
    seen = store.change_counts()
    # Nobody else moved anything: the tick's own move is counted and nothing is unseen.
    written = store.write_tick(TickRecord(0, champion_moves=[ChampionMove(sid[0], 2, "agent")], seen_changes=seen))
    assert written.changes == {"champions": 2, "overrides": 1} and written.unseen_changes == frozenset()
    # A person moves a champion and changes an override after the caller's read: the tick says so, whether
    # it moved champions itself or not.
    seen = store.change_counts()
    with store.transaction() as tx:
        tx.move_champions([ChampionMove(sid[0], 1, "user:bob", action="rollback")])
    store.set_overrides(["zone-1"], {"cooldown_ticks": 3}, by="user:bob")
    written = store.write_tick(TickRecord(1, champion_moves=[ChampionMove(sid[1], 1, "agent")], seen_changes=seen))
    assert written.changes == {"champions": 4, "overrides": 2}
    assert written.unseen_changes == {"champions", "overrides"}
    seen = store.change_counts()
    assert store.write_tick(TickRecord(2, seen_changes=seen)).unseen_changes == frozenset()
    assert store.write_tick(TickRecord(3)).unseen_changes == frozenset()  # the caller named no counts


def test_a_repeated_escalation_request_changes_and_audits_nothing_and_a_resolved_item_stays_resolved(store):
    """Two people resolve the same item, or a request is retried: one change, one audit entry. Silencing or
    acknowledging an item resolved meanwhile does not bring it back to the queue; re-opening does."""
    ids = [int(i) for i in store.stream_ids(["a", "b"])]
    e = store.add_escalations([Escalation(s, 1, "data-quality", 2, "flat line") for s in ids])
    assert store.set_escalation_status([e[0]], "resolved", by="user:ana").changed == 1
    assert store.set_escalation_status([e[0]], "resolved", by="user:bob").changed == 0
    assert store.set_escalation_status([e[0]], "silenced", by="user:bob", silenced_until="2999-01-01").changed == 0
    assert store.set_escalation_status([e[0]], "acknowledged", by="user:bob").changed == 0
    assert store.set_escalation_status(e, "acknowledged", by="user:bob").changed == 1  # the open one only
    # Each stream's audit lists the requests that changed its items: the acknowledgement is b's, not a's too.
    assert store.audit_log(stream="a")["action"].tolist() == ["escalation-resolved"]
    assert store.audit_log(stream="b")["action"].tolist() == ["escalation-acknowledged"]
    assert store.set_escalation_status([e[1]], "silenced", by="user:bob", silenced_until="2999-01-01").changed == 1
    longer = store.set_escalation_status([e[1]], "silenced", by="user:bob", silenced_until="2999-06-01")
    assert longer.changed == 1  # a silence extended
    status = store.escalations().set_index("id")["status"]
    assert status[e[0]] == "resolved" and status[e[1]] == "silenced"
    log = store.audit_log()
    assert log["action"].tolist() == [
        "escalation-resolved", "escalation-acknowledged", "escalation-silenced", "escalation-silenced"]
    # The change names its audit entry (a person, or the API's answer, can find it); none when nothing changed.
    again = store.set_escalation_status([e[1]], "silenced", by="user:bob", silenced_until="2999-07-01")
    assert again.audit_id == int(store.audit_log()["id"].iloc[-1]) and again.audit_id not in set(log["id"])
    assert store.set_escalation_status([e[0]], "resolved", by="user:bob").audit_id is None
    assert store.set_escalation_status([e[0]], "open", by="user:ana").changed == 1
    assert store.escalations().set_index("id")["status"][e[0]] == "open"


def test_escalation_ids_given_twice_count_once_and_many_ids_make_a_short_audit_entry_and_error(store):
    """`mlma ack 1 1` acknowledges and audits escalation 1 once; a request naming 12,000 escalations (or the same
    one 100,000 times) is an audit entry of a few KB, and one naming 12,000 unknown ids is refused with a message
    naming the first ten and how many more, as an unknown stream is, not with every id."""
    from mlma.control import ActionError, Operations

    ids = [int(i) for i in store.stream_ids([f"z{i:05d}" for i in range(12_000)])]
    e = store.add_escalations([Escalation(s, 1, "data-quality", 2, "flat line") for s in ids])
    ops = Operations(store)
    assert ops.acknowledge([e[1], e[1]], by="user:ana").changed == 1
    assert ops.resolve([e[2]] * 100_000, by="user:ana").changed == 1
    entries = store.audit_log()
    assert entries["target"].tolist() == [f"escalations:{e[1]}", f"escalations:{e[2]}"]
    assert [p["ids"] for p in entries["params"]] == [[e[1]], [e[2]]]
    assert store.set_escalation_status(list(reversed(e)) + e, "silenced", by="user:bob",
                                       silenced_until="2999-01-01").changed == 11_999  # the resolved one stays
    entry = store.audit_log().iloc[-1]
    first = list(reversed(e))
    assert entry["target"] == "escalations:" + ",".join(map(str, first[:20])) + " and 11,980 more"
    assert (entry["params"]["count"], entry["params"]["ids"]) == (12_000, first[:1000])
    assert len(json.dumps(entry["params"])) < 10_000
    unknown = list(range(max(e) + 1, max(e) + 12_001))
    with pytest.raises(ActionError) as refused:
        ops.acknowledge([e[0], *unknown, unknown[0]], by="user:ana")
    assert str(refused.value) == f"no escalation with id(s) {unknown[:10]} (and 11,990 more); nothing changed"
    assert len(store.audit_log()) == 3 and store.escalations().set_index("id")["status"][e[0]] == "silenced"


def test_cancelling_more_ids_than_one_statement_takes_cancels_the_pending_ones(store):
    """PostgreSQL takes at most 65,535 parameters in a statement, and a cancel sent every id in one: a person's
    cancel of 70,000 action ids (within the 100,000 an action may name) failed there with the driver's error."""
    from mlma.control import Operations

    ids = store.stream_ids(["a", "b", "c"])
    with store.transaction() as tx:
        tx.queue_actions(np.resize(ids, 70_002), "retrain", {"direct": False}, by="user:ana")
    queued = store.stream_actions()["id"].tolist()
    with store.transaction() as tx:
        tx.cancel_actions(queued[:2])                     # two carried out or cancelled before: named, not refused
    result = Operations(store).cancel_action(queued, by="user:ana")
    assert result.changed == 70_000 and result.detail == {"not_pending": sorted(queued[:2])}
    assert (store.stream_actions()["status"] == "cancelled").all()


def test_taking_the_lock_while_its_holder_commits_says_it_is_held_at_once(postgres_server):
    """PostgreSQL: a tick's commit holds the lock row (the fence) for as long as it writes; a second agent
    started meanwhile hears the lock is held within seconds (exit 4 from `mlma tick`), not when that commit
    ends, and takes it once the holder released it."""
    import threading

    with postgres_schema(postgres_server) as url, Store.create(url) as store, Store.open(url) as other:
        lease = store.acquire_lock("agent-a", ttl=600)
        answer: list = []

        def second_agent() -> None:
            try:
                other.acquire_lock("agent-b", ttl=600)
                answer.append("taken")
            except LockHeld as exc:
                answer.append(exc)

        with store.engine.connect() as committing:  # the holder's commit, under way
            committing.execute(sa.select(S.locks).where(S.locks.c.name == "tick").with_for_update())
            thread = threading.Thread(target=second_agent)
            thread.start()
            thread.join(timeout=10)
            waited = thread.is_alive()
            committing.rollback()  # a waiting second agent goes on (not the suite hung) if the answer did not come
        thread.join(timeout=30)
        assert not waited, "the second agent waited for the commit to end"
        assert isinstance(answer[0], LockHeld) and "agent-a" in str(answer[0])
        lease.release()
        other.acquire_lock("agent-b", ttl=600).release()


@pytest.mark.parametrize("fleet_wide", [False, True])
def test_two_peoples_changes_of_one_stream_at_once_are_both_kept(url, fleet_wide):
    """A pin and a change of delta of one stream, each in its own transaction, the second begun before the first
    committed: PostgreSQL kept only the second (each wrote back the overrides it had read), though both were
    answered and audited. The second now waits for the first and merges into what it wrote, for a few streams
    and for a fleet-wide change (the staged path, over 1,000 streams)."""
    import threading

    names = [f"z{i}" for i in range(1500 if fleet_wide else 3)]
    with Store.create(url) as store, Store.open(url) as other:
        ids = [int(i) for i in store.stream_ids(names)]
        failed: list = []

        def second_person() -> None:
            try:
                with other.transaction() as tx:
                    tx.merge_overrides({i: {"delta": 0.2} for i in ids})
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                failed.append(exc)

        with store.transaction() as tx:
            tx.merge_overrides({i: {"pinned_until": "forever"} for i in reversed(ids)})
            thread = threading.Thread(target=second_person)
            thread.start()
            thread.join(timeout=1.0)   # it waits for this commit (SQLite: for the write lock; PostgreSQL: the rows)
        thread.join(timeout=60)
        assert not thread.is_alive() and not failed, failed
        overrides = store.stream_overrides()
        assert {(o.pinned_until, o.delta) for o in overrides.values()} == {("forever", 0.2)}
        assert sorted(overrides) == sorted(ids)


def test_a_persons_change_of_overrides_neither_deadlocks_with_an_ingest_nor_with_a_ticks_commit(postgres_server,
                                                                                              monkeypatch):
    """PostgreSQL. The overrides' rows locked FOR UPDATE (so that two people's changes are both kept) deadlocked
    with an ingest of the same streams (its table lock came between the merge's read and its write) and with a
    tick's commit (its inserts' key-share locks on the streams, then its lock of a champion's row): one side
    failed with a deadlock, a person's pin or the ingest lost. Both now finish, one after the other."""
    import threading
    import time

    import mlma.store.store as store_module
    from mlma.escalations import Escalation

    day = pd.date_range("2025-01-01", periods=24, freq="h")

    def frame(days: int) -> pd.DataFrame:
        return pd.DataFrame({"unique_id": ["a"] * 24 + ["b"] * 24, "ds": list(day + pd.Timedelta(days=days)) * 2,
                             "y": 1.0})

    with postgres_schema(postgres_server) as url, Store.create(url) as store, Store.open(url) as person:
        store.ingest_frame(frame(0), "day-0")
        errors: dict = {}
        paused = threading.Event()
        real = store_module._json_safe

        def slow(value):  # the merge holds what it locked while it reads, here: the ingest comes in between
            if threading.current_thread().name == "person" and not paused.is_set():
                paused.set()
                time.sleep(0.5)
            return real(value)

        monkeypatch.setattr(store_module, "_json_safe", slow)

        def pin(streams) -> None:
            try:
                person.set_overrides(streams, {"pinned_until": "forever"}, by="user:ana", reason="storm")
            except Exception as exc:  # noqa: BLE001 - reported by the assertions below
                errors["person"] = exc

        def ingest() -> None:
            paused.wait(30)
            try:
                with Store.open(url) as other:
                    other.ingest_frame(frame(1), "day-1")
            except Exception as exc:  # noqa: BLE001 - reported by the assertions below
                errors["ingest"] = exc

        threads = [threading.Thread(target=pin, args=(["a"],), name="person"), threading.Thread(target=ingest)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert not errors, errors
        assert len(store.ingests()) == 2 and store.stream_overrides()[0].pinned_until == "forever"
        monkeypatch.setattr(store_module, "_json_safe", real)

        # A tick's commit: an escalation of stream b (a key-share lock on its row), then the champion row of a.
        thread = threading.Thread(target=pin, args=(["a", "b"],), name="pin-2")
        with store._write() as conn:
            store._insert_escalations(conn, [Escalation(1, 5, "silent", 2, "stream b is silent")], store._now(conn), 5)
            thread.start()
            time.sleep(0.5)                                   # the pin takes row a and asks for row b meanwhile
            conn.execute(sa.select(S.streams.c.id).where(S.streams.c.id.in_([0])).order_by(S.streams.c.id)
                         .with_for_update(of=S.streams)).all()
        thread.join(60)
        assert not errors, errors
        assert {o.pinned_until for o in store.stream_overrides().values()} == {"forever"}


def test_two_requests_for_one_token_name_or_one_revocation_at_once_get_one_answer_each(url):
    """Two admins create a token of one new name at once: both found the name free and PostgreSQL refused the
    second with a unique violation (the API's 500); it is now the "exists" error (409). Two revocations of one
    token at once both answered "revoked" and were both audited; the second now finds nothing to revoke."""
    import threading

    from mlma.api.auth import create_token, list_tokens, revoke_token

    def while_committing(store: Store, first, second) -> list:
        """``second()`` in a thread begun inside ``first``'s transaction, before it commits; its answer."""
        answers: list = []

        def run() -> None:
            try:
                answers.append(second())
            except Exception as exc:  # noqa: BLE001 - the answer under test
                answers.append(exc)

        with store.transaction() as tx:
            first(tx)
            thread = threading.Thread(target=run)
            thread.start()
            thread.join(timeout=1.0)    # it waits for this commit
        thread.join(timeout=60)
        assert not thread.is_alive() and len(answers) == 1
        return answers

    with Store.create(url) as store, Store.open(url) as other:
        [made] = while_committing(store, lambda tx: tx.add_token("ci", "viewer", "0" * 64, by="user:ana"),
                                  lambda: create_token(other, "ci", "viewer", by="user:bo"))
        assert isinstance(made, ValueError) and "a token named 'ci' exists" in str(made), repr(made)
        [revoked] = while_committing(store, lambda tx: tx.revoke_token("ci"),
                                     lambda: revoke_token(other, "ci", by="user:bo"))
        assert revoked is False
        assert [(t.name, t.revoked_at is not None) for t in list_tokens(store, include_revoked=True)] == [
            ("ci#1", True)]
        assert len(store.audit_log(action="token-revoke")) == 0   # the one revocation was this test's own


def test_a_persons_reason_longer_than_the_api_allows_is_refused_by_every_door_and_changes_nothing(store):
    """The REST API refuses a reason over 2,000 characters; the CLI and Python go through the same check (in
    the audit entry's transaction), so the change it came with is rolled back too."""
    from mlma.control import Operations

    ids = store.stream_ids(["a"])
    with pytest.raises(ValueError, match="reason must be at most 2,000 characters, got 5,010"):
        Operations(store).pin(["a"], by="user:ana", reason="x" * 5010)
    with pytest.raises(ValueError, match="NUL"):
        Operations(store).force_retrain(["a"], by="user:ana", reason="a\x00b")
    assert store.stream_overrides() == {} and store.stream_actions().empty and store.audit_log().empty
    Operations(store).pin(["a"], by="user:ana", reason="x" * 2000)
    assert store.stream_overrides()[int(ids[0])].pinned_until == "forever"


def test_two_upgrades_at_once_take_turns_and_the_second_finds_the_store_migrated(url):
    """Two `mlma upgrade` at once on PostgreSQL (two hosts, a job run again): the second ran the same
    migrations into the first's and failed with a traceback (relation "retention" already exists). They take
    turns now; both end at the head, with the data kept."""
    import threading

    assert Store.upgrade(url, "0011") == "0011"
    with Store.open(url, check_schema=False) as old:
        old.stream_ids(["a", "b"])
    results, errors = [], []
    start = threading.Barrier(3)

    def run():
        start.wait()
        try:
            results.append(Store.upgrade(url))
        except Exception as exc:  # noqa: BLE001 - what the test is about
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    assert results == [HEAD] * 3
    with Store.open(url) as store:
        assert store.unique_ids([0, 1]).tolist() == ["a", "b"]
