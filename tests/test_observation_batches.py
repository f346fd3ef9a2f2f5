"""Packed observation batches (mlma.store.batches, table observation_batches): an ingest keeps its rows as
three arrays, the newest ones only, none for a huge ingest; the observation window applies them instead of
reading rows and ends with what a full read of the table gives, revisions included, on both backends."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from mlma.store import Store, batches
from mlma.store import schema as S
from mlma.store.window import ObservationWindow

T0 = pd.Timestamp("2025-03-01")
HOUR = pd.Timedelta("1h")


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'b.db'}"
    else:
        from mlma.store.testing import postgres_schema

        with postgres_schema(request.getfixturevalue("postgres_server"), prefix="mlma_test_batches") as scoped:
            yield scoped


def hours(uids, first: int, n: int, rng, *, offset: float = 0.0) -> pd.DataFrame:
    ds = T0 + HOUR * np.arange(first, first + n)
    frame = pd.DataFrame({"unique_id": np.repeat(uids, n), "ds": np.tile(ds, len(uids))})
    frame["y"] = rng.normal(10, 3, len(frame)).round(3) + offset
    return frame[rng.random(len(frame)) > 0.1].reset_index(drop=True)


def full_read(store: Store, start, end, n_streams: int):
    sid, ds, y = store.observation_arrays(start, end)
    keep = sid < n_streams
    sid, ds, y = sid[keep], ds[keep], y[keep]
    order = np.lexsort((ds, sid))
    return sid[order], ds[order], y[order]


def assert_same(got, expected) -> None:
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def kept_batches(store: Store) -> list[int]:
    with store.engine.connect() as conn:
        return [int(i) for (i,) in conn.execute(sa.select(S.observation_batches.c.ingest_id)
                                                .order_by(S.observation_batches.c.ingest_id))]


def test_pack_refuses_columns_of_different_lengths():
    with pytest.raises(ValueError, match="2 stream ids, 1 timestamps, 2 values"):
        batches.pack(np.array([1, 2]), np.array(["2024-01-01"], dtype="datetime64[ns]"), np.array([1.0, 2.0]))


def test_an_ingest_keeps_its_accepted_rows_as_it_wrote_them(url):
    rng = np.random.default_rng(1)
    with Store.create(url) as store:
        frame = hours(["a", "b", "c"], 0, 30, rng)
        report = store.ingest_frame(frame, "day")
        again = frame.head(5).assign(y=frame["y"].head(5) + 1)   # two revised rows among unchanged ones...
        again.loc[again.index[2:], "y"] = frame["y"].head(5).iloc[2:]
        fix = store.ingest_frame(again, "fix")
        got = store.observation_batches([report.ingest_id, fix.ingest_id, 999])
        assert sorted(got) == [report.ingest_id, fix.ingest_id]
        sid, ds, y = got[report.ingest_id]
        expected_ids = store.stream_ids(frame["unique_id"].to_numpy())
        order = np.lexsort((ds, sid))
        want = np.lexsort((frame["ds"].to_numpy(), expected_ids))
        np.testing.assert_array_equal(sid[order], expected_ids[want])
        np.testing.assert_array_equal(ds[order], frame["ds"].to_numpy()[want])
        np.testing.assert_array_equal(y[order], frame["y"].to_numpy()[want])
        assert ds.dtype == np.dtype("datetime64[ns]") and sid.dtype == np.int64
        # The fix's batch holds every row it accepted, the unchanged ones too.
        assert len(got[fix.ingest_id][0]) == 5
        assert store.observation_batches([]) == {}


def test_only_the_newest_ingests_batches_are_kept(url, monkeypatch):
    monkeypatch.setattr(batches, "KEEP_INGESTS", 4)
    rng = np.random.default_rng(2)
    with Store.create(url) as store:
        days = [hours(["a", "b"], 24 * d, 24, rng) for d in range(7)]
        ids = [store.ingest_frame(day, f"day-{d}").ingest_id for d, day in enumerate(days)]
        assert kept_batches(store) == ids[-4:]
        assert sorted(store.observation_batches(ids)) == ids[-4:]
        # The rows of every ingest are still there: the table is the truth.
        assert len(store.observation_arrays()[0]) == sum(map(len, days))


def test_an_ingest_over_the_size_limit_keeps_no_batch_and_the_window_reads_its_rows(url, monkeypatch):
    rng = np.random.default_rng(3)
    with Store.create(url) as store:
        store.ingest_frame(hours(["a", "b"], 0, 48, rng), "history")
        window = ObservationWindow(store, "h")
        end = T0 + HOUR * 72
        window.rows(T0, end, n_streams=2)
        day = hours(["a", "b"], 48, 24, rng)
        monkeypatch.setattr(batches, "MAX_ROWS", len(day) - 1)
        big = store.ingest_frame(day, "big day")
        assert big.rows_accepted == len(day) and big.ingest_id not in kept_batches(store)
        got = window.rows(T0, end, n_streams=2)
        assert window.last_refresh.batches == 0 and window.last_refresh.rows_read == len(day)
        assert_same(got, full_read(store, T0, end, 2))


def test_ingests_without_a_batch_are_read_from_the_table_next_to_those_with_one(url):
    """Ingests written before migration 0008 (or whose batch was pruned) have none: the window reads their
    rows, applies the others' batches, and ends as a full read."""
    rng = np.random.default_rng(4)
    with Store.create(url) as store:
        store.ingest_frame(hours(["a", "b", "c"], 0, 48, rng), "history")
        window = ObservationWindow(store, "h")
        end = T0 + HOUR * 96
        window.rows(T0, end, n_streams=3)
        old = store.ingest_frame(hours(["a", "b", "c"], 48, 24, rng), "old day")
        store.ingest_frame(hours(["a", "b", "c"], 72, 24, rng), "new day")
        with store.engine.begin() as conn:
            conn.execute(sa.delete(S.observation_batches).where(S.observation_batches.c.ingest_id == old.ingest_id))
        got = window.rows(T0, end, n_streams=3)
        assert window.last_refresh.ingests == 2 and window.last_refresh.batches == 1
        assert window.last_refresh.rows_read > 0
        assert_same(got, full_read(store, T0, end, 3))


def test_revisions_applied_from_batches_end_with_the_values_a_full_read_gives(url):
    """Several ingests between two refreshes rewrite the same (stream, ds) with other values, put an older
    value back, and add rows: the window equals the table after each refresh. On SQLite (ids in commit order)
    the batches are used; on PostgreSQL batches that share a row are read from the table instead."""
    rng = np.random.default_rng(5)
    uids = ["a", "b", "c", "d"]
    with Store.create(url) as store:
        store.ingest_frame(hours(uids, 0, 72, rng), "history")
        window = ObservationWindow(store, "h")
        used = 0
        for day in range(3, 9):
            end = T0 + HOUR * 24 * (day + 1)
            start = end - HOUR * 24 * 3
            today = hours(uids, 24 * day, 24, rng)
            store.ingest_frame(today, f"day-{day}")
            cells = store.observations(start=start, end=end - HOUR * 24).sample(8, random_state=day)[["unique_id", "ds", "y"]]
            store.ingest_frame(cells.assign(y=cells["y"] + 100), f"fix-{day}")
            store.ingest_frame(cells.assign(y=cells["y"] - 7), f"fix-again-{day}")
            if day % 2:
                store.ingest_frame(cells.head(4), f"undo-{day}")   # the first value back, for half of them
            got = window.rows(start, end, n_streams=len(uids))
            assert window.last_refresh.rebuilt is None or day == 3
            assert_same(got, full_read(store, start, end, len(uids)))
            if day > 3:
                used += window.last_refresh.batches
        if store.dialect == "sqlite":
            assert used == sum(4 if d % 2 else 3 for d in range(4, 9))
        else:
            # The day's batch shares no row with the fixes: it is used; the fixes are read from the table.
            assert used == 5


@pytest.mark.postgres
def test_a_lower_ingest_id_committing_last_wins_as_in_the_table(postgres_server):
    """On PostgreSQL ingest 2 may commit after ingest 3 and both rewrite one row: the table keeps 2's value.
    When the window sees both at once, id order would give 3's: it must read that row from the table."""
    from mlma.store.testing import postgres_schema

    rng = np.random.default_rng(6)
    with postgres_schema(postgres_server, prefix="mlma_test_batch_order") as url:
        store = Store.create(url)
        store.ingest_frame(hours(["a", "b"], 0, 48, rng), "history")
        window = ObservationWindow(store, "h")
        end = T0 + HOUR * 72
        window.rows(T0, end, n_streams=2)
        slow_store = Store.open(url)
        waiting, go_on = threading.Event(), threading.Event()
        ensure = slow_store._ensure_streams

        def wait_then_ensure(*args, **kwargs):
            waiting.set()
            assert go_on.wait(60)
            return ensure(*args, **kwargs)

        slow_store._ensure_streams = wait_then_ensure
        cell = T0 + HOUR * 50
        slow = threading.Thread(target=slow_store.ingest_frame,
                                args=(pd.DataFrame({"unique_id": ["a"], "ds": [cell], "y": [-2.0]}), "slow"))
        slow.start()
        assert waiting.wait(60)
        fast = pd.concat([hours(["a", "b"], 48, 24, rng).query("ds != @cell or unique_id != 'a'"),
                          pd.DataFrame({"unique_id": ["a"], "ds": [cell], "y": [-3.0]})], ignore_index=True)
        store.ingest_frame(fast, "fast")    # id 3, committed first
        go_on.set()
        slow.join(60)
        slow_store.close()
        ingests = store.ingests()
        assert ingests["source"].tolist() == ["history", "slow", "fast"]
        value = store.observations(start=cell, end=cell + HOUR, streams=["a"])["y"].tolist()
        assert value == [-2.0]    # the last commit's value, from the lower id
        got = window.rows(T0, end, n_streams=2)
        assert_same(got, full_read(store, T0, end, 2))
        assert window.last_refresh.ingests == 2 and window.last_refresh.batches == 0
        store.close()
