"""The observation window (mlma.store.window): incremental reads equal full re-reads, and a damaged, missing
or foreign saved window is rebuilt."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest

from mlma.store import Store
from mlma.store.window import ObservationWindow

T0 = pd.Timestamp("2025-03-01")
HOUR = pd.Timedelta("1h")


def rows_of(store: Store, start, end, n_streams: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The full re-read the window must equal: every observation in [start, end), by stream then time."""
    sid, ds, y = store.observation_arrays(start, end)
    keep = sid < n_streams
    sid, ds, y = sid[keep], ds[keep], y[keep]
    order = np.lexsort((ds, sid))
    return sid[order], ds[order], y[order]


def assert_same(got, expected) -> None:
    for a, b in zip(got, expected):
        np.testing.assert_array_equal(a, b)


def hours(uids, first: int, n: int, rng, *, offset: float = 0.0) -> pd.DataFrame:
    ds = T0 + HOUR * np.arange(first, first + n)
    frame = pd.DataFrame({"unique_id": np.repeat(uids, n), "ds": np.tile(ds, len(uids))})
    frame["y"] = rng.normal(10, 3, len(frame)).round(3) + offset
    # Streams do not report every hour: drop a few rows.
    return frame[rng.random(len(frame)) > 0.1].reset_index(drop=True)


def test_a_window_refreshed_by_what_changed_equals_a_full_reread_after_every_kind_of_ingest(tmp_path):
    """Random days of new rows, revisions of old rows inside and before the window, late and early rows, new
    streams and rows dated ahead of the window's end: after each, the incremental window equals a full read."""
    rng = np.random.default_rng(3)
    store = Store.create(f"sqlite:///{tmp_path / 'w.db'}")
    window = ObservationWindow(store, "h", tmp_path / "w.window")
    uids = [f"z{i}" for i in range(6)]
    store.ingest_frame(hours(uids, 0, 24 * 5, rng), "history")
    span = 3 * 24  # the window: the last three days before the tick's end
    checked = refreshed = 0
    for day in range(5, 14):
        end = T0 + HOUR * 24 * (day + 1)
        start = end - HOUR * (span + 24)
        kind = day % 5
        today = hours(uids if kind != 2 else uids + [f"new{day}"], 24 * day, 24, rng)
        store.ingest_frame(today, f"day-{day}")
        if kind in (0, 3):  # revise rows inside the window (and one before it, which must not matter)
            old = store.observations(start=start, end=end - HOUR * 24).sample(5, random_state=day)
            old["y"] = old["y"] + 100
            before = store.observations(end=start).sample(1, random_state=day)
            store.ingest_frame(pd.concat([old, before.assign(y=before["y"] - 50)])[["unique_id", "ds", "y"]],
                               f"fix-{day}")
        if kind == 1:  # rows dated ahead of the tick's end: kept aside until the window reaches them
            store.ingest_frame(hours([f"ahead{day}"], 24 * (day + 2), 3, rng, offset=1000), f"ahead-{day}")
        if kind == 4:  # a row that arrives late inside the window, and a stream's first row
            late = pd.DataFrame({"unique_id": ["z0", f"late{day}"], "ds": [start + HOUR * 5, start + HOUR * 6],
                                 "y": [-7.5, 42.0]})
            store.ingest_frame(late, f"late-{day}")
        n = len(store.streams())
        got = window.rows(start, end, n_streams=n)
        assert_same(got, rows_of(store, start, end, n))
        checked += 1
        refreshed += window.last_refresh.rebuilt is None
    assert checked == 9 and refreshed == 8   # only the first call built the window from a full read
    # The rows dated ahead (day 13, ingested on day 11) came in once the window reached them.
    assert (got[2] > 900).sum() == ((store.observations(start=start, end=end)["y"] > 900).sum()) > 0
    store.close()


def test_a_refresh_reads_only_the_rows_that_changed(tmp_path):
    rng = np.random.default_rng(4)
    store = Store.create(f"sqlite:///{tmp_path / 'w.db'}")
    uids = [f"z{i}" for i in range(20)]
    store.ingest_frame(hours(uids, 0, 24 * 10, rng), "history")
    window = ObservationWindow(store, "h")
    end = T0 + HOUR * 24 * 10
    full = window.rows(end - HOUR * 24 * 7, end, n_streams=20)
    assert window.last_refresh.rebuilt and window.last_refresh.rows_read == len(full[0])
    day = hours(uids, 24 * 10, 24, rng)
    store.ingest_frame(day, "day")
    revised = store.observations(start=end - HOUR * 24 * 5, end=end - HOUR * 24 * 4).head(3)
    store.ingest_frame(revised.assign(y=revised["y"] + 1)[["unique_id", "ds", "y"]], "fix")
    got = window.rows(end - HOUR * 24 * 6, end + HOUR * 24, n_streams=20)
    assert window.last_refresh.rebuilt is None and window.last_refresh.ingests == 2
    # The day's rows and the three revised ones, from the two ingests' batches; the revision's span holds
    # other rows, which are not read.
    assert window.last_refresh.batches == 2 and window.last_refresh.batch_rows == len(day) + 3
    assert window.last_refresh.rows_read == 0
    assert_same(got, rows_of(store, end - HOUR * 24 * 6, end + HOUR * 24, 20))
    # Nothing new: nothing read.
    window.rows(end - HOUR * 24 * 6, end + HOUR * 24, n_streams=20)
    assert window.last_refresh.ingests == 0 and window.last_refresh.rows_read == 0
    store.close()


@pytest.fixture
def filled(tmp_path):
    rng = np.random.default_rng(5)
    url = f"sqlite:///{tmp_path / 'w.db'}"
    store = Store.create(url)
    store.ingest_frame(hours(["a", "b", "c"], 0, 24 * 6, rng), "history")
    path = tmp_path / "cache" / "w.window"
    ObservationWindow(store, "h", path).rows(T0 + HOUR * 24, T0 + HOUR * 24 * 6, n_streams=3)
    assert path.exists()
    yield store, path, url, rng
    store.close()


def test_a_saved_window_is_used_by_the_next_process(filled):
    store, path, _, rng = filled
    store.ingest_frame(hours(["a", "b", "c"], 24 * 6, 24, rng), "day")
    window = ObservationWindow(store, "h", path)
    got = window.rows(T0 + HOUR * 48, T0 + HOUR * 24 * 7, n_streams=3)
    assert window.last_refresh.rebuilt is None and window.last_refresh.ingests == 1
    assert_same(got, rows_of(store, T0 + HOUR * 48, T0 + HOUR * 24 * 7, 3))


def test_a_saved_window_survives_a_change_of_the_urls_timeouts_but_not_of_its_schema(postgres_server, tmp_path):
    """A timeout added to [store] url (statement_timeout, keepalives: tuning knobs the docs offer) made the saved
    window look like another store's, and every process re-read the whole training window: the key is the
    database and its schema, not the connection's settings."""
    from mlma.store.testing import postgres_schema

    rng = np.random.default_rng(6)
    path = tmp_path / "w.window"
    end = T0 + HOUR * 24 * 7
    with postgres_schema(postgres_server, prefix="mlma_test_window_key") as url:
        with Store.create(url) as store:
            store.ingest_frame(hours(["a", "b", "c"], 0, 24 * 6, rng), "history")
            ObservationWindow(store, "h", path).rows(T0 + HOUR * 24, end, n_streams=3)
            store.ingest_frame(hours(["a", "b", "c"], 24 * 6, 24, rng), "day")
        with Store.open(url + "&statement_timeout=20min&keepalives_idle=40") as tuned:
            window = ObservationWindow(tuned, "h", path)
            got = window.rows(T0 + HOUR * 48, end, n_streams=3)
            assert window.last_refresh.rebuilt is None and window.last_refresh.ingests == 1
            assert_same(got, rows_of(tuned, T0 + HOUR * 48, end, 3))
        with postgres_schema(postgres_server, prefix="mlma_test_window_key") as other_url, \
                Store.create(other_url) as other:
            other.ingest_frame(hours(["a", "b", "c"], 0, 24 * 7, rng), "history")
            window = ObservationWindow(other, "h", path)
            window.rows(T0 + HOUR * 48, end, n_streams=3)
            assert window.last_refresh.rebuilt and "another store" in window.last_refresh.rebuilt


@pytest.mark.parametrize("damage", ["deleted", "truncated", "flipped", "other-frequency", "earlier-start"])
def test_a_missing_damaged_or_unfitting_saved_window_is_rebuilt(filled, damage):
    store, path, _, rng = filled
    store.ingest_frame(hours(["a", "b", "c"], 24 * 6, 24, rng), "day")
    blob = path.read_bytes()
    freq, start = "h", T0 + HOUR * 48
    if damage == "deleted":
        path.unlink()
    elif damage == "truncated":
        path.write_bytes(blob[: len(blob) // 2])
    elif damage == "flipped":
        values_at = blob.index(b"values.npy") + 200  # inside the values array
        path.write_bytes(blob[:values_at] + bytes([blob[values_at] ^ 0xFF]) + blob[values_at + 1:])
    elif damage == "other-frequency":
        freq = "30min"
    else:
        start = T0  # older rows than the saved window holds
    window = ObservationWindow(store, freq, path)
    got = window.rows(start, T0 + HOUR * 24 * 7, n_streams=3)
    assert window.last_refresh.rebuilt, damage
    assert_same(got, rows_of(store, start, T0 + HOUR * 24 * 7, 3))
    # The rebuilt window was saved and is used as it is next time.
    again = ObservationWindow(store, freq, path)
    again.rows(start, T0 + HOUR * 24 * 7, n_streams=3)
    assert again.last_refresh.rebuilt is None


def test_a_window_saved_for_a_store_that_was_replaced_is_rebuilt(filled, tmp_path):
    """A store restored from an older backup (or re-created) under the same URL has other ingests with the
    same ids: the window notices that the ingest it saw last is not the store's any more."""
    store, path, url, rng = filled
    store.close()
    (tmp_path / "w.db").unlink()
    fresh = Store.create(url)
    fresh.ingest_frame(hours(["a", "b", "c"], 0, 24 * 6, rng, offset=500), "other history")
    fresh.ingest_frame(hours(["a", "b", "c"], 24 * 6, 24, rng, offset=500), "other day")
    window = ObservationWindow(fresh, "h", path)
    got = window.rows(T0 + HOUR * 48, T0 + HOUR * 24 * 7, n_streams=3)
    assert window.last_refresh.rebuilt and "restored or replaced" in window.last_refresh.rebuilt
    assert (got[2] > 400).all()
    assert_same(got, rows_of(fresh, T0 + HOUR * 48, T0 + HOUR * 24 * 7, 3))
    fresh.close()


def test_rows_off_the_frequency_grid_are_refused_with_the_stream_named(tmp_path):
    store = Store.create("sqlite://")
    frame = pd.DataFrame({"unique_id": ["a", "a"], "ds": [T0, T0 + pd.Timedelta("90min")], "y": [1.0, 2.0]})
    store.ingest_frame(frame, "odd")
    with pytest.raises(ValueError, match="stream id 0 has a timestamp .* not on the 'h' grid"):
        ObservationWindow(store, "h").rows(T0, T0 + HOUR * 3, n_streams=1)
    store.close()


@pytest.mark.postgres
def test_an_ingest_that_commits_after_a_newer_one_is_read_when_it_commits(postgres_server):
    """PostgreSQL hands out ingest ids before commit: ingest 2 may commit after ingest 3. The window saw 3;
    it must still read 2's rows once 2 commits."""
    from mlma.store.testing import postgres_schema

    rng = np.random.default_rng(6)
    with postgres_schema(postgres_server, prefix="mlma_test_incremental") as url:
        store = Store.create(url)
        store.ingest_frame(hours(["a", "b"], 0, 48, rng), "history")
        window = ObservationWindow(store, "h")
        end = T0 + HOUR * 80
        window.rows(T0, end, n_streams=2)
        # A slow ingest (another process's): it has taken id 2 and waits before it writes its rows (ingests
        # take turns on the streams table from there on), while a later ingest takes id 3 and commits.
        slow_store = Store.open(url)
        written, go_on = threading.Event(), threading.Event()
        ensure = slow_store._ensure_streams

        def wait_then_ensure(*args, **kwargs):
            written.set()
            assert go_on.wait(60)
            return ensure(*args, **kwargs)

        slow_store._ensure_streams = wait_then_ensure
        late_row = pd.DataFrame({"unique_id": ["a"], "ds": [T0 + HOUR * 75], "y": [-1.0]})
        slow = threading.Thread(target=slow_store.ingest_frame, args=(late_row, "slow"))
        slow.start()
        assert written.wait(60)
        store.ingest_frame(hours(["a", "b"], 48, 24, rng), "fast")   # id 3, committed first
        before = window.rows(T0, end, n_streams=2)
        assert window.last_refresh.ingests == 1
        assert -1.0 not in before[2]
        go_on.set()
        slow.join(60)
        slow_store.close()
        assert store.ingests()["source"].tolist() == ["history", "slow", "fast"]
        after = window.rows(T0, end, n_streams=2)
        assert window.last_refresh.ingests == 1 and -1.0 in after[2]
        assert_same(after, rows_of(store, T0, end, 2))
        store.close()


# -- in the live agent -----------------------------------------------------------------------------------------
def test_live_ticks_on_the_kept_window_equal_ticks_on_a_full_reread_with_revisions_inside_the_window(tmp_path,
                                                                                                  monkeypatch):
    """Two projects get the same days and the same late corrections of rows inside the training window. One
    keeps its observation window between ticks (reading only what changed); the other forgets it before every
    tick (a full read, as before the window existed). They must record the same verdicts, models and
    forecasts, and the first must really have read incrementally."""
    from test_live import FIRST_TICK, day_chunks, make_project, store_snapshot

    from mlma.live import LiveAgent
    from mlma.project import load_config
    from mlma.simulate import simulate_platform

    frame = simulate_platform(10, FIRST_TICK + 8, seed=11, event_rate=3).data
    chunks = list(day_chunks(frame, FIRST_TICK))
    # Ridge (it reads its whole window, so a row of the window read wrong would show) on a 9-day window, the
    # shortest that holds its 216 hourly rows.
    roots = {"kept": make_project(tmp_path / "kept", train_window_ticks=9),
             "reread": make_project(tmp_path / "reread", train_window_ticks=9)}
    # Every refresh of the kept window, by step: a tick refreshes for its no-data hold check, then for its
    # data (which then finds nothing new unless an ingest came in between).
    refreshes, seen = [], []
    refreshed = ObservationWindow._refreshed

    def recording(self, *args, **kwargs):
        snap = refreshed(self, *args, **kwargs)
        seen.append(self.last_refresh)
        return snap

    monkeypatch.setattr(ObservationWindow, "_refreshed", recording)
    for name, root in roots.items():
        config = load_config(root)
        with Store.open(config.store_url) as store, LiveAgent(config, store=store) as live:
            for i, chunk in enumerate(chunks):
                store.ingest_frame(chunk, f"day-{i}")
                if i >= 2 and i % 2 == 0:
                    # Corrections of the last 12 days' rows: some inside the 9-day window, some before it.
                    old = store.observations(start=chunk["ds"].min() - pd.Timedelta("12D"), end=chunk["ds"].min())
                    fix = old.sample(20, random_state=i)
                    store.ingest_frame(fix.assign(y=fix["y"] * 3 + 1)[["unique_id", "ds", "y"]], f"fix-{i}")
                if name == "reread":
                    live.window_path.unlink(missing_ok=True)
                    live._window = None
                seen.clear()
                live.step()
                if name == "kept":
                    refreshes.append(seen[:])
    assert store_snapshot(roots["kept"]) == store_snapshot(roots["reread"])
    # The start-up read everything; every tick after it read only the rows of its day and of the corrections.
    assert len(refreshes[0]) == 1 and refreshes[0][0].rebuilt and refreshes[0][0].rows_read > 10 * 24 * FIRST_TICK * 0.5
    assert all(len(step) == 2 and step[0].rebuilt is None and step[1].rebuilt is None for step in refreshes[1:])
    assert all(0 < step[0].rows_read + step[0].batch_rows <= 10 * 24 + 20 for step in refreshes[1:])
    assert all(step[1].rows_read + step[1].batch_rows == step[1].ingests == 0 for step in refreshes[1:])


@pytest.mark.parametrize("start_hour", [None, 30])
def test_a_window_built_in_pieces_equals_one_read(tmp_path, monkeypatch, start_hour):
    """A large window is built from several reads (by data time, so that the driver never holds the whole
    window as Python objects at once); rows dated after the end are kept aside as with one read."""
    import mlma.store.window as window_module

    rng = np.random.default_rng(11)
    store = Store.create(f"sqlite:///{tmp_path / 'p.db'}")
    uids = [f"z{i}" for i in range(5)]
    store.ingest_frame(hours(uids, 0, 24 * 4, rng), "history")
    store.ingest_frame(hours(["ahead"], 24 * 5, 6, rng, offset=1000), "ahead")
    n = len(store.streams())
    start = None if start_hour is None else T0 + HOUR * start_hour
    end = T0 + HOUR * 24 * 4
    reads = []
    original = store.observation_arrays

    def counted(*args, **kwargs):
        reads.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(store, "observation_arrays", counted)
    monkeypatch.setattr(window_module, "CHUNK_ROWS", 5 * 7)  # seven hours of five streams per read
    pieces = ObservationWindow(store, "h")
    got = pieces.rows(start, end, n_streams=n)
    assert len(reads) > 5 and pieces.last_refresh.rows_read == len(store.observation_arrays(start)[0])
    assert_same(got, rows_of(store, start, end, n))
    later = pieces.rows(start, end + HOUR * 24 * 2, n_streams=n)  # the rows dated ahead come in
    assert_same(later, rows_of(store, start, end + HOUR * 24 * 2, n))
    assert (later[2] > 900).sum() == 6
    store.close()


# -- the journal next to the saved window ----------------------------------------------------------------------
def refresh_days(store, window, rng, days, uids=("a", "b", "c")):
    """Ingest one day per ``days`` (plus a revision inside the window) and refresh after each; the last rows."""
    got = None
    for day in days:
        store.ingest_frame(hours(list(uids), 24 * day, 24, rng), f"day-{day}")
        fix = store.observations(start=T0 + HOUR * 24 * (day - 2), end=T0 + HOUR * 24 * day).head(2)
        store.ingest_frame(fix.assign(y=fix["y"] + 50)[["unique_id", "ds", "y"]], f"fix-{day}")
        got = window.rows(T0 + HOUR * 24 * (day - 3), T0 + HOUR * 24 * (day + 1), n_streams=len(uids))
    return got


def test_a_refresh_appends_to_the_journal_and_the_next_process_replays_it(filled, monkeypatch):
    monkeypatch.setattr("mlma.store.window.JOURNAL_SHARE", 10.0)   # never folded here
    store, path, _, rng = filled
    window = ObservationWindow(store, "h", path)
    window.rows(T0 + HOUR * 24, T0 + HOUR * 24 * 6, n_streams=3)   # loads the file, nothing new
    written = path.read_bytes()
    refresh_days(store, window, rng, [6, 7, 8])
    assert path.read_bytes() == written                             # the file was not rewritten...
    assert window.journal_path.stat().st_size > 0                   # ...the changes were appended
    start, end = T0 + HOUR * 24 * 5, T0 + HOUR * 24 * 9
    again = ObservationWindow(store, "h", path)
    got = again.rows(start, end, n_streams=3)
    assert again.replayed[0] == 3 and again.last_refresh.rebuilt is None and again.last_refresh.ingests == 0
    assert_same(got, rows_of(store, start, end, 3))


def test_the_journal_is_folded_into_the_file_once_it_outgrows_its_share(filled, monkeypatch):
    monkeypatch.setattr("mlma.store.window.JOURNAL_SHARE", 2.0)
    store, path, _, rng = filled
    window = ObservationWindow(store, "h", path)
    sizes, rewrites, before = [], 0, path.read_bytes()
    for day in range(6, 14):
        refresh_days(store, window, rng, [day])
        journal = window.journal_path.stat().st_size if window.journal_path.exists() else 0
        assert journal <= 2.0 * path.stat().st_size
        rewrites += path.read_bytes() != before
        before = path.read_bytes()
        sizes.append(journal)
    assert 0 < rewrites < 8 and max(sizes) > 0        # some refreshes appended, some rewrote the file
    start, end = T0 + HOUR * 24 * 10, T0 + HOUR * 24 * 14
    again = ObservationWindow(store, "h", path)
    assert_same(again.rows(start, end, n_streams=3), rows_of(store, start, end, 3))
    assert again.last_refresh.rebuilt is None


@pytest.mark.parametrize("damage", ["torn", "flipped", "older-generation", "garbage"])
def test_a_damaged_journal_gives_an_older_window_caught_up_never_a_wrong_one(filled, monkeypatch, damage):
    monkeypatch.setattr("mlma.store.window.JOURNAL_SHARE", 10.0)
    store, path, _, rng = filled
    window = ObservationWindow(store, "h", path)
    if damage == "older-generation":
        refresh_days(store, window, rng, [6, 7])
        stale = window.journal_path.read_bytes()
        window.forget()
        path.unlink()                                    # the next refresh rebuilds and writes a new file
        refresh_days(store, window, rng, [8])
        assert not window.journal_path.exists()
        window.journal_path.write_bytes(stale)           # a journal left over from the old file
    else:
        refresh_days(store, window, rng, [6, 7, 8])
        journal = window.journal_path.read_bytes()
        if damage == "torn":
            journal = journal[: len(journal) - 100]
        elif damage == "flipped":
            at = len(journal) // 2
            journal = journal[:at] + bytes([journal[at] ^ 0x01]) + journal[at + 1:]
        else:
            journal = journal + b"\x00" * 57
        window.journal_path.write_bytes(journal)
    store.ingest_frame(hours(["a", "b", "c"], 24 * 9, 24, rng), "day-9")
    start, end = T0 + HOUR * 24 * 6, T0 + HOUR * 24 * 10
    again = ObservationWindow(store, "h", path)
    got = again.rows(start, end, n_streams=3)
    assert again.last_refresh.rebuilt is None, damage      # the file is good: caught up, not rebuilt
    assert_same(got, rows_of(store, start, end, 3))
    expected_records = {"torn": 2, "flipped": 1, "older-generation": 0, "garbage": 3}[damage]
    assert again.replayed[0] == expected_records
    # The damaged journal is not appended to: the file was rewritten and the next process needs no replay.
    assert not again.journal_path.exists()
    third = ObservationWindow(store, "h", path)
    assert_same(third.rows(start, end, n_streams=3), got)
    assert third.replayed[0] == 0 and third.last_refresh.ingests == 0


def test_new_streams_join_the_kept_matrix_without_copying_it(tmp_path):
    """A fleet gains a few streams most ticks: their rows go into the matrix's spare rows, so the 57 MB matrix
    of 10,000 hourly streams is not copied for them."""
    rng = np.random.default_rng(6)
    store = Store.create(f"sqlite:///{tmp_path / 'w.db'}")
    uids = [f"z{i}" for i in range(5)]
    store.ingest_frame(hours(uids, 0, 24 * 3, rng), "history")
    window = ObservationWindow(store, "h")
    start, end = T0 + HOUR * 24, T0 + HOUR * 24 * 3
    before, _ = window.matrix(start, end, n_streams=5)
    store.ingest_frame(hours(["new0", "new1"], 24 * 2, 24, rng), "newcomers")
    after, _ = window.matrix(start, end, n_streams=7)
    assert after.shape == (7, before.shape[1]) and np.shares_memory(before, after)
    assert_same(window.rows(start, end, n_streams=7), rows_of(store, start, end, 7))
    store.close()


def test_the_matrix_slides_over_its_buffer_day_after_day_and_equals_a_full_read(tmp_path):
    """Moving the window a day moves a view over a buffer with spare columns (no copy) until the buffer's end,
    then moves the kept columns back to its start in place (no new buffer); with revisions, late rows and new
    streams along the way, every day's matrix equals a full read."""
    rng = np.random.default_rng(7)
    store = Store.create(f"sqlite:///{tmp_path / 'w.db'}")
    uids = [f"z{i}" for i in range(8)]
    store.ingest_frame(hours(uids, 0, 24 * 8, rng), "history")
    window = ObservationWindow(store, "h")
    span = 24 * 8  # a window of eight days: a quarter more columns hold two more days
    buffers, slides, moves_back = [], 0, 0
    previous_c0 = None
    for day in range(8, 28):
        end = T0 + HOUR * 24 * day
        if day > 8:
            store.ingest_frame(hours(uids, 24 * (day - 1), 24, rng), f"day-{day}")
        if day % 3 == 0:
            uids.append(f"new{day}")
            store.ingest_frame(hours([uids[-1]], 24 * (day - 2), 48, rng), f"new-{day}")
        if day % 4 == 0:
            old = store.observations(start=end - HOUR * 24 * 5, end=end - HOUR * 24 * 4).head(4)
            store.ingest_frame(old.assign(y=old["y"] - 20)[["unique_id", "ds", "y"]], f"fix-{day}")
        values, first = window.matrix(end - HOUR * span, end, n_streams=len(uids))
        assert values.shape == (len(uids), span) and first == np.datetime64(end - HOUR * span, "ns")
        assert_same(window.rows(end - HOUR * span, end, n_streams=len(uids)),
                    rows_of(store, end - HOUR * span, end, len(uids)))
        snap = window._snap
        assert np.shares_memory(values, snap._buf)
        if not buffers or buffers[-1] is not snap._buf:
            buffers.append(snap._buf)
        elif snap._c0 > previous_c0:
            slides += 1
        elif snap._c0 < previous_c0:
            moves_back += 1
        previous_c0 = snap._c0
    # 19 moves of a day: a slide a day, and a move back in place when the view reaches the buffer's end
    # (every third day: two days of spare columns); never a new buffer beside the old one (the fleet gained
    # four streams, within the buffer's spare rows).
    assert len(buffers) == 1 and moves_back == 6 and slides == 13
    store.close()


def test_a_window_saved_in_the_background_keeps_its_journal_in_order_and_survives_a_failed_save(tmp_path, monkeypatch,
                                                                                               caplog):
    """Saved in a thread of its own (as the live agent does), the window's file and journal still describe it
    after every refresh: a copy loaded by a fresh window equals a full read with nothing rebuilt. A save that
    fails in the thread is logged and costs nothing but a rewrite of the file at the next save."""
    import shutil

    rng = np.random.default_rng(5)
    store = Store.create(f"sqlite:///{tmp_path / 'w.db'}")
    path = tmp_path / "w.window"
    window = ObservationWindow(store, "h", path, save_in_background=True)
    uids = [f"z{i}" for i in range(20)]
    store.ingest_frame(hours(uids, 0, 24 * 20, rng), "history")
    save = ObservationWindow._save
    failures = []

    def failing_once(self, snap, change):
        if not failures:
            failures.append(1)
            raise RuntimeError("disk gremlin")
        return save(self, snap, change)

    journal_after = {}
    for day in range(20, 30):
        store.ingest_frame(hours(uids + ([f"new{day}"] if day == 22 else []), 24 * day, 24, rng), f"day-{day}")
        end = T0 + HOUR * 24 * (day + 1)
        start = end - HOUR * 24 * 20
        if day == 26:
            monkeypatch.setattr(ObservationWindow, "_save", failing_once)
        n = len(store.streams())
        values, _ = window.matrix(start, end, n_streams=n)
        expected = rows_of(store, start, end, n)
        window.flush()
        journal_after[day] = window.journal_path.exists() and window.journal_path.stat().st_size > 0
        copy = tmp_path / f"copy-{day}" / "w.window"
        copy.parent.mkdir()
        shutil.copy(path, copy)
        if window.journal_path.exists():
            shutil.copy(window.journal_path, copy.with_name(copy.name + ".journal"))
        fresh = ObservationWindow(store, "h", copy)
        got = fresh.rows(start, end, n_streams=n)
        assert_same(got, expected)
        if day != 26:  # the failed save left the file a day behind: the fresh window caught up from the store
            assert fresh.last_refresh.rebuilt is None and fresh.last_refresh.ingests == 0, day
        assert np.isfinite(values).sum() == len(expected[0])
    window.close()
    assert failures and "disk gremlin" in caplog.text
    # Days were appended to the journal before the failure; the save after it rewrote the file (no journal
    # left), and the next days were appended again.
    assert any(journal_after[day] for day in range(20, 26)), journal_after
    assert not journal_after[27] and journal_after[28], journal_after


def test_a_refresh_waits_for_the_save_under_way_only_when_it_changes_the_window(tmp_path, monkeypatch):
    """The live agent refreshes the window twice a tick (its no-data hold check, then its data): the second
    finds nothing new and must not wait for the first one's save; a refresh that brings new rows must wait,
    or the save would write a window changing under it."""
    rng = np.random.default_rng(9)
    store = Store.create(f"sqlite:///{tmp_path / 'w.db'}")
    uids = [f"z{i}" for i in range(3)]
    store.ingest_frame(hours(uids, 0, 48, rng), "history")
    window = ObservationWindow(store, "h", tmp_path / "w.window", save_in_background=True)
    release = threading.Event()
    save = ObservationWindow._save

    def held_save(self, snap, change):
        assert release.wait(30), "the test never released the save"
        return save(self, snap, change)

    monkeypatch.setattr(ObservationWindow, "_save", held_save)
    end = T0 + HOUR * 48
    window.matrix(T0, end, n_streams=3)  # its save is held
    window.matrix(T0, end, n_streams=3)  # nothing new: returns while the save is still held
    assert not release.is_set() and window._saving is not None and not window._saving.done()
    store.ingest_frame(hours(uids, 48, 24, rng), "day")
    done = threading.Event()
    worker = threading.Thread(target=lambda: (window.matrix(T0, end + HOUR * 24, n_streams=3), done.set()))
    worker.start()
    assert not done.wait(0.5)  # new rows: the refresh waits for the held save
    release.set()
    worker.join(30)
    assert done.is_set()
    window.close()
    fresh = ObservationWindow(store, "h", tmp_path / "w.window")
    assert_same(fresh.rows(T0, end + HOUR * 24, n_streams=3), rows_of(store, T0, end + HOUR * 24, 3))
    assert fresh.last_refresh.rebuilt is None and fresh.last_refresh.ingests == 0
