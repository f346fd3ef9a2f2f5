"""The recent observations of every stream, kept between ticks and brought up to date incrementally.

A live tick needs each stream's training window (the last ``train_window_ticks`` ticks of observations).
Reading that window from the store every tick re-reads almost the same rows every time: at 10,000 hourly
streams and a 28-day window, 6.9 million rows to learn 240,000 new ones. An :class:`ObservationWindow`
keeps the window as a dense ``(streams x grid steps)`` matrix of values on the data's frequency grid (NaN
where a stream reported nothing) and, on each tick, reads only the rows that changed since it last looked.

What changed is told by ingest ids. Every observation row carries the id of the ingest that wrote its
current value (a re-ingested row with a new value takes the id of the ingest that revised it), and every
ingest records the span of data time it covered (``first_ds``, ``last_ds``). The window remembers the
newest ingest it has seen (its *mark*); the next refresh lists the committed ingests newer than the mark
and reads, inside their spans, the rows whose ingest id is newer than the mark. A revision of an old row
inside the window is therefore picked up like a new row, and a revision older than the window is ignored,
exactly as a full re-read of the window would see them.

The new rows come packed where the store kept them: each ingest writes a copy of its accepted rows as three
binary arrays (``observation_batches``, :mod:`mlma.store.batches`; the newest 32 ingests, none over 4 M
rows), which numpy reads without a conversion per row (240,000 rows as Python tuples took 0.7 s). The
batches of the new ingests are applied in ingest order; the rows of the ingests without one (older, pruned,
too big, or sharing a row with another batch on PostgreSQL, where id order may not be commit order) are
then read from the ``observations`` table as above, last, since the table is the truth.

On PostgreSQL ingest ids come from a sequence and two ingests may commit out of order: when ingest 8 is
visible but 7 is still in flight, 7 is kept as *pending* and its rows are read once it commits (ids skipped
by a rolled-back ingest stay pending until they are more than :data:`PENDING_SPAN` ingests behind the mark).
The ingests are listed before the rows are read, so a row committed in between is at worst read twice.

The window is a cache, never the truth: it is a function of the store's committed ingests alone, not of
the ticks, so it needs no transaction with the tick's commit. It is saved to a file after each refresh
(written to a temporary name, then renamed) with a SHA-256 of its content; a missing, damaged or foreign
file (another store, another frequency, a store restored from a backup whose ingests differ: the content
hash of the ingest at the mark must match) is rebuilt from a full read of the window.

Examples
--------
>>> import pandas as pd
>>> from mlma.store import Store
>>> store = Store.create("sqlite://")
>>> frame = pd.DataFrame({"unique_id": ["a", "a", "b"], "ds": pd.to_datetime(["2024-01-01 00:00",
...                       "2024-01-01 01:00", "2024-01-01 01:00"]), "y": [1.0, 2.0, 3.0]})
>>> _ = store.ingest_frame(frame, "day-1")
>>> window = ObservationWindow(store, "h")
>>> window.rows(None, pd.Timestamp("2024-01-01 02:00"), n_streams=2)
(array([0, 0, 1]), array(['2024-01-01T00:00:00.000000000', '2024-01-01T01:00:00.000000000',
       '2024-01-01T01:00:00.000000000'], dtype='datetime64[ns]'), array([1., 2., 3.]))
>>> fix = pd.DataFrame({"unique_id": ["a"], "ds": pd.to_datetime(["2024-01-01 00:00"]), "y": [5.0]})
>>> _ = store.ingest_frame(fix, "fix")
>>> window.rows(None, pd.Timestamp("2024-01-01 02:00"), n_streams=2)[2]
array([5., 2., 3.])
>>> window.last_refresh.batches, window.last_refresh.batch_rows, window.last_refresh.rows_read
(1, 1, 0)
>>> store.close()
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
import logging
import os
import re
import secrets
import struct
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

log = logging.getLogger(__name__)

#: File format version: a file of another version is rebuilt.
FORMAT = 2
#: The journal (what each refresh changed, appended next to the file) is folded into a new file once it is
#: larger than this share of the file: loading replays at most about this share of the file's size.
JOURNAL_SHARE = 0.5
#: Each journal record starts with this, then the payload's length (8 bytes) and its SHA-256 (32 bytes).
JOURNAL_MAGIC = b"mlmaWJ2\n"
_HEADER = struct.Struct("<8sQ32s")
#: A pending ingest id (not visible when a later one was) is given up once the mark is this many ingests
#: past it: an ingest's transaction never stays open while that many others commit, so such an id was
#: rolled back (PostgreSQL's sequences never reuse an id).
PENDING_SPAN = 1000
#: A full read of the window fetches about this many rows per statement (the driver's rows are Python
#: objects, about 150 bytes each: 8 M rows hold some 1.2 GB while they are converted).
CHUNK_ROWS = 8_000_000


@dataclass(frozen=True)
class Refresh:
    """What the last :meth:`ObservationWindow.rows` call did: ``rebuilt`` (with why) or brought up to date
    from ``ingests`` new ingests, reading ``rows_read`` rows from the observations table and taking
    ``batch_rows`` rows from the packed batches of ``batches`` of those ingests."""

    rebuilt: str | None
    ingests: int
    rows_read: int
    batches: int = 0
    batch_rows: int = 0


class _Snapshot:
    """The window's content: observations with ``ds >= origin`` (all of them when ``whole``)."""

    def __init__(self, freq: str, origin: np.datetime64, whole: bool, last: int, sha: str | None,
                 pending: np.ndarray, values: np.ndarray, beyond: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
        self.freq, self.origin, self.whole = freq, np.datetime64(origin, "ns"), whole
        self.last, self.sha, self.pending = int(last), sha, np.asarray(pending, dtype=np.int64)
        #: ``values[s, j]``: stream ``s`` at ``grid[j]``; NaN where it has no observation (``y`` is finite).
        #: A view of ``_buf[:streams, _c0:_c0 + steps]``. The buffer has spare rows and columns, all NaN, so
        #: that new streams join and the window moves on a day without copying the matrix (57 MB at 10,000
        #: hourly streams; a fresh matrix a tick cost 0.1-0.16 s of page faults): the view slides right over
        #: the buffer and is copied into a new one only when it reaches the buffer's end.
        self.values = values
        self._buf, self._c0 = values, 0
        #: Rows dated at or after the grid's end (data ahead of the clock), as (stream, ds, y).
        self.beyond = beyond
        self.grid = self._grid(values.shape[1])
        #: Names the saved file this snapshot was written to or loaded from; its journal's records carry it.
        self.generation: str | None = None

    def _grid(self, n: int) -> np.ndarray:
        return pd.date_range(self.origin, periods=n, freq=self.freq).as_unit("ns").to_numpy()

    @property
    def end(self) -> np.datetime64:
        """Where the grid stops: the step after its last column."""
        return pd.date_range(self.origin, periods=self.values.shape[1] + 1, freq=self.freq)[-1].to_datetime64()

    # -- changes -------------------------------------------------------------------------------------------
    def grow_streams(self, n: int) -> None:
        n_rows, n_cols = self.values.shape
        if n <= n_rows:
            return
        if n > self._buf.shape[0]:
            self._relayout(0, n_cols, rows=n)
        # The spare rows are NaN: no observation yet.
        self.values = self._buf[:n, self._c0:self._c0 + n_cols]

    def _relayout(self, cut: int, width: int, rows: int | None = None) -> None:
        """Make the matrix the ``width`` columns that start at column ``cut`` of the current one (NaN where it
        has no column), with room for ``rows`` streams: a view moved right over the buffer while it has room;
        else the kept columns moved back to the buffer's start, in place; a new buffer, with an eighth more
        rows and a quarter more columns than needed, only when the matrix outgrows this one.

        A 28-day window slides over its buffer's spare columns for 7 days, then moves back in place. A new
        buffer each time (as before) cost 0.15-0.25 s of allocation and page faults every 7 days at 10,000
        hourly streams and held both buffers at once; a buffer twice as wide, tried to move back less often,
        raised the ticks' peak memory by about 250 MB.

        Both rely on the buffer's invariant: every cell right of the matrix, and every spare row, is NaN
        (nothing writes there but through ``values``); the columns left behind are never seen again."""
        n_rows, n_cols = self.values.shape
        rows = max(rows or 0, n_rows)
        c0 = self._c0 + cut
        keep = max(0, min(n_cols - cut, width))
        if rows <= self._buf.shape[0] and c0 + width <= self._buf.shape[1]:
            self._c0 = c0
            self.values = self._buf[:n_rows, c0:c0 + width]
            return
        if rows <= self._buf.shape[0] and width <= self._buf.shape[1]:
            buf = self._buf
            # Left to right in blocks no wider than the distance moved: a block never overlaps its source.
            step = max(c0, 1)
            for lo in range(0, keep, step):
                hi = min(lo + step, keep)
                buf[:n_rows, lo:hi] = buf[:n_rows, c0 + lo:c0 + hi]
            buf[:n_rows, keep:] = np.nan
            self._c0 = 0
            self.values = buf[:n_rows, :width]
            return
        new = np.full((rows + max(rows // 8, 64), width + max(width // 4, 1)), np.nan)
        new[:n_rows, :keep] = self.values[:, cut:cut + keep]
        self._buf, self._c0 = new, 0
        self.values = new[:n_rows, :width]

    def extend_to(self, end: np.datetime64) -> None:
        """Columns up to ``end`` (exclusive); rows kept beyond the old end move in."""
        self.advance(None, end)

    def _plan(self, start: np.datetime64 | None, end: np.datetime64) -> tuple[int, np.datetime64, bool, int]:
        """What :meth:`advance` would do: the columns to drop, the new origin, ``whole`` and the width."""
        cut, origin, whole = 0, self.origin, self.whole
        if start is not None and (self.whole or start > self.origin):
            cut = int(np.searchsorted(self.grid, start, side="left"))
            if cut:
                origin = self.grid[cut] if cut < len(self.grid) else np.datetime64(start, "ns")
            whole = False
        width = max(len(pd.date_range(origin, end, freq=self.freq, inclusive="left")), self.values.shape[1] - cut)
        return cut, origin, whole, width

    def moves(self, start: np.datetime64 | None, end: np.datetime64) -> bool:
        """Whether :meth:`advance` to ``[start, end)`` would change anything."""
        cut, _, whole, width = self._plan(start, end)
        return bool(cut) or whole != self.whole or width != self.values.shape[1]

    def advance(self, start: np.datetime64 | None, end: np.datetime64) -> None:
        """Move the window to ``[start, end)``: drop the columns before ``start``, add those up to ``end``
        (rows kept beyond the old end move in); the matrix is copied once, if at all (see _relayout)."""
        cut, origin, self.whole, width = self._plan(start, end)
        if not cut and width == self.values.shape[1]:
            return
        self._relayout(cut, width)
        self.origin = origin
        self.grid = self._grid(width)
        sid, ds, y = self.beyond
        inside = ds < self.end
        if inside.any():
            self.beyond = (sid[~inside], ds[~inside], y[~inside])
            self.apply(sid[inside], ds[inside], y[inside])

    def apply(self, sid: np.ndarray, ds: np.ndarray, y: np.ndarray) -> None:
        """Write rows in (newer values replace older ones); rows before the origin are not the window's."""
        keep = ds >= self.origin
        sid, ds, y = sid[keep], ds[keep], y[keep]
        if not len(sid):
            return
        self.grow_streams(int(sid.max()) + 1)
        later = ds >= self.end
        if later.any():
            old_sid, old_ds, old_y = self.beyond
            all_sid = np.concatenate([old_sid, sid[later]])
            all_ds = np.concatenate([old_ds, ds[later]])
            all_y = np.concatenate([old_y, y[later]])
            # One row per (stream, ds), the newest (last) one: sorted by key then arrival, the last of each key.
            order = np.lexsort((np.arange(len(all_sid)), all_ds, all_sid))
            key_sid, key_ds = all_sid[order], all_ds[order]
            pick = order[np.r_[(key_sid[1:] != key_sid[:-1]) | (key_ds[1:] != key_ds[:-1]), True]]
            self.beyond = (all_sid[pick], all_ds[pick], all_y[pick])
            sid, ds, y = sid[~later], ds[~later], y[~later]
        pos = np.searchsorted(self.grid, ds)
        off = (pos >= len(self.grid)) | (self.grid[np.minimum(pos, len(self.grid) - 1)] != ds)
        if off.any():
            bad = int(np.flatnonzero(off)[0])
            raise ValueError(f"stream id {int(sid[bad])} has a timestamp {ds[bad]} that is not on the "
                             f"{self.freq!r} grid; validate the data first")
        self.values[sid, pos] = y

    def rows(self, start: np.datetime64 | None, end: np.datetime64, n_streams: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lo = 0 if start is None else int(np.searchsorted(self.grid, start, side="left"))
        hi = int(np.searchsorted(self.grid, end, side="left"))
        block = self.values[:n_streams, lo:hi]
        sid, col = np.nonzero(~np.isnan(block))  # row-major: by stream, then time
        values = block[sid, col]
        col += lo
        return sid.astype(np.int64, copy=False), self.grid[col], values

    def block(self, start: np.datetime64 | None, end: np.datetime64, n_streams: int) -> tuple[np.ndarray, np.datetime64]:
        """A read-only view of the columns ``[start, end)`` of streams ``0..n_streams-1``, and the first
        column's timestamp."""
        lo = 0 if start is None else int(np.searchsorted(self.grid, start, side="left"))
        hi = int(np.searchsorted(self.grid, end, side="left"))
        view = self.values[:n_streams, lo:hi]
        view.flags.writeable = False
        first = self.grid[lo] if lo < len(self.grid) else np.datetime64(self.end, "ns")
        return view, first

    # -- the file ------------------------------------------------------------------------------------------
    def write(self, file, store_key: str) -> None:
        """Save to an open binary file (an uncompressed ``.npz`` with a SHA-256 of its content inside)."""
        meta = {"format": FORMAT, "store": store_key, "freq": self.freq, "origin": str(self.origin),
                "whole": self.whole, "last": self.last, "sha": self.sha, "generation": self.generation}
        arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), "values": self.values,
                  "pending": self.pending, "beyond_sid": self.beyond[0],
                  "beyond_ds": self.beyond[1].view(np.int64), "beyond_y": self.beyond[2]}
        arrays["digest"] = np.frombuffer(_digest(arrays), dtype=np.uint8)
        np.savez(file, **arrays)

    @classmethod
    def from_bytes(cls, blob: bytes, store_key: str, freq: str) -> _Snapshot:
        """The snapshot in ``blob``; ValueError when it is damaged or not this store's and frequency's."""
        try:
            with np.load(io.BytesIO(blob), allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
        except Exception as exc:  # noqa: BLE001 - any unreadable file is rebuilt
            raise ValueError(f"unreadable ({type(exc).__name__}: {exc})") from None
        digest = arrays.pop("digest", None)
        if digest is None or digest.tobytes() != _digest(arrays):
            raise ValueError("its content does not match its SHA-256")
        meta = json.loads(arrays["meta"].tobytes())
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')} (this mlma writes {FORMAT})")
        if meta["store"] != store_key:
            raise ValueError("it was written for another store")
        if meta["freq"] != freq:
            raise ValueError(f"it is on the {meta['freq']!r} grid, the data's frequency is {freq!r}")
        beyond = (arrays["beyond_sid"], arrays["beyond_ds"].view("datetime64[ns]"), arrays["beyond_y"])
        snap = cls(freq, np.datetime64(meta["origin"], "ns"), bool(meta["whole"]), meta["last"], meta["sha"],
                   arrays["pending"], arrays["values"], beyond)
        snap.generation = meta["generation"]
        return snap


class _Journal:
    """What each refresh changed, appended to a file next to the window's: a record per refresh holds the
    rows it applied (in order), the window's new mark and its new span.

    A record is :data:`JOURNAL_MAGIC`, the payload's length, its SHA-256, then the payload (an uncompressed
    ``.npz``). Its meta names the file's generation and its sequence number: replay stops at the first
    record that is torn, damaged, of another generation (a journal left over from before the file was
    rewritten) or out of sequence (two writers), and the window it loaded is the one as of the last good
    record: an older window, caught up from its own mark like any other, never a wrong one.
    """

    @staticmethod
    def record(generation: str, seq: int, snap: _Snapshot, changes: list[tuple], start, end) -> bytes:
        sizes = np.array([len(c[0]) for c in changes], dtype=np.int64)
        empty = (np.empty(0, np.int64), np.empty(0, "datetime64[ns]"), np.empty(0))
        sid, ds, y = (np.concatenate(parts) for parts in zip(*changes)) if changes else empty
        meta = {"generation": generation, "seq": seq, "start": None if start is None else str(start),
                "end": str(end), "last": snap.last, "sha": snap.sha}
        buffer = io.BytesIO()
        np.savez(buffer, meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8), sizes=sizes,
                 sid=sid.astype(np.int64, copy=False), ds=ds.view(np.int64), y=y, pending=snap.pending)
        payload = buffer.getvalue()
        return _HEADER.pack(JOURNAL_MAGIC, len(payload), hashlib.sha256(payload).digest()) + payload

    @staticmethod
    def replay(snap: _Snapshot, blob: bytes) -> tuple[int, int, str | None]:
        """Apply the good records of ``blob`` to ``snap``: how many, the bytes they take, and why replay
        stopped early (None: the journal was read to its end).

        The records' rows are applied in order on a grid extended at once to the newest record's end, and the
        window is trimmed once to the newest start: the same values as moving it record by record (a cell's
        writes keep their order; a refresh's start is never before the one of the refresh before it, which
        would have rebuilt the window), for one copy of the matrix instead of two per record.
        """
        offset, records, stopped = 0, [], None
        while offset < len(blob):
            head = blob[offset:offset + _HEADER.size]
            if len(head) < _HEADER.size:
                stopped = "a torn record"
                break
            magic, size, digest = _HEADER.unpack(head)
            payload = blob[offset + _HEADER.size:offset + _HEADER.size + size]
            if magic != JOURNAL_MAGIC or len(payload) != size or hashlib.sha256(payload).digest() != digest:
                stopped = "a torn or damaged record"
                break
            with np.load(io.BytesIO(payload), allow_pickle=False) as data:
                arrays = {name: data[name] for name in data.files}
            meta = json.loads(arrays["meta"].tobytes())
            if meta["generation"] != snap.generation:
                stopped = "records of an older file"
                break
            if meta["seq"] != len(records) + 1:
                stopped = f"record {meta['seq']} where {len(records) + 1} was due"
                break
            records.append((meta, arrays))
            offset += _HEADER.size + size
        if records:
            snap.extend_to(max(np.datetime64(meta["end"], "ns") for meta, _ in records))
            for meta, arrays in records:
                bounds = np.concatenate([[0], np.cumsum(arrays["sizes"])]).tolist()
                ds = arrays["ds"].view("datetime64[ns]")
                for lo, hi in zip(bounds[:-1], bounds[1:]):
                    snap.apply(arrays["sid"][lo:hi], ds[lo:hi], arrays["y"][lo:hi])
            starts = [np.datetime64(meta["start"], "ns") for meta, _ in records if meta["start"] is not None]
            meta, arrays = records[-1]
            snap.advance(max(starts) if starts else None, np.datetime64(meta["end"], "ns"))
            snap.last, snap.sha, snap.pending = int(meta["last"]), meta["sha"], arrays["pending"]
        return len(records), offset, stopped


def _digest(arrays: dict[str, np.ndarray]) -> bytes:
    h = hashlib.sha256()
    for name in sorted(arrays):
        value = np.ascontiguousarray(arrays[name])
        h.update(f"{name}:{value.dtype.str}:{value.shape}".encode())
        h.update(value.data)
    return h.digest()


class ObservationWindow:
    """Every stream's observations from a moving start, refreshed from the store by what changed.

    Parameters
    ----------
    store
        The :class:`~mlma.store.Store` the observations live in.
    freq
        The data's pandas offset alias: the grid the values are kept on.
    path
        Where the window is saved between processes (None: kept in memory only). The file is a cache: it is
        rebuilt when missing or not usable.
    save_in_background
        Write the file (or its journal record) in a thread of its own after each refresh, so that the caller
        goes on with the values while they are saved (the live agent: the save overlaps the tick's work on
        another core). :meth:`flush`, :meth:`close` and a refresh that will change the window wait for it (a
        refresh that finds nothing new does not). Default False: the file is written before :meth:`rows` or
        :meth:`matrix` returns.
    """

    def __init__(self, store, freq: str, path: str | os.PathLike | None = None, *,
                 save_in_background: bool = False) -> None:
        if not isinstance(freq, str) or not freq:
            raise ValueError(f"freq must be a pandas offset alias, got {freq!r}")
        self.store, self.freq = store, freq
        self.path = None if path is None else Path(path)
        self.save_in_background = bool(save_in_background)
        # A refresh's save not yet started (the snapshot and what changed), and the one under way.
        self._unsaved: tuple[_Snapshot, tuple | None] | None = None
        self._saving: concurrent.futures.Future | None = None
        self._saver: concurrent.futures.ThreadPoolExecutor | None = None
        self._snap: _Snapshot | None = None
        self._loaded = False
        # The journal as this process knows it: its size (None: not known, the next save rewrites the file),
        # its records, and the file's size.
        self._journal_at: int | None = None
        self._seq = self._file_size = 0
        #: Records replayed from the journal when the window was loaded, and the seconds that took.
        self.replayed: tuple[int, float] = (0, 0.0)
        #: What the last :meth:`rows` call did.
        self.last_refresh: Refresh | None = None
        # Which database and schema: a file written for another one is not used.
        self._store_key = hashlib.sha256(database_identity(store.engine.url).encode()).hexdigest()

    def rows(self, start, end, *, n_streams: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Observations with ``start <= ds < end`` (``start`` None: all of them) of streams ``0..n_streams-1``,
        as they are in the store now: stream ids, timestamps and values, sorted by stream then time.

        Rows older than ``start`` are dropped from the window for good: the next call's ``start`` must not
        be earlier (an earlier one rebuilds it).
        """
        rows = self._refreshed(start, end, n_streams).rows(None if start is None else _ns(start), _ns(end), n_streams)
        self._save_refresh()
        return rows

    def matrix(self, start, end, *, n_streams: int) -> tuple[np.ndarray, np.datetime64]:
        """The same observations as :meth:`rows`, as the kept dense matrix itself: a read-only
        ``(n_streams x grid steps)`` view (NaN: no observation) and the timestamp of its first column. No
        copy: the next call of :meth:`rows` or :meth:`matrix` may change the values under it.

        >>> from mlma.store import Store
        >>> store = Store.create("sqlite://")
        >>> _ = store.ingest_frame(pd.DataFrame({"unique_id": ["a", "b"], "y": [1.0, 3.0],
        ...     "ds": pd.to_datetime(["2024-01-01 00:00", "2024-01-01 01:00"])}), "day-1")
        >>> values, first = ObservationWindow(store, "h").matrix(None, pd.Timestamp("2024-01-01 02:00"), n_streams=3)
        >>> values, str(first)
        (array([[ 1., nan],
               [nan,  3.],
               [nan, nan]]), '2024-01-01T00:00:00.000000000')
        >>> store.close()
        """
        snap = self._refreshed(start, end, n_streams)
        if n_streams > snap.values.shape[0]:
            self.flush()  # a save under way must not see the snapshot change
            snap.grow_streams(n_streams)  # streams with no row yet: rows of NaN
        # Saved once the snapshot is final: a save in the background must not see it change.
        self._save_refresh()
        return snap.block(None if start is None else _ns(start), _ns(end), n_streams)

    def flush(self) -> None:
        """Wait until the last refresh is saved (at once when saving in the foreground)."""
        saving, self._saving = self._saving, None
        if saving is not None:
            saving.result()  # _save_logged does not raise

    def close(self) -> None:
        """Finish the last save and stop the saving thread; the window stays usable (a new thread starts)."""
        self.flush()
        if self._saver is not None:
            self._saver.shutdown(wait=True)
            self._saver = None

    def _refreshed(self, start, end, n_streams: int) -> _Snapshot:
        """The kept snapshot brought up to date for ``[start, end)`` (see :meth:`rows`)."""
        start = None if start is None else np.datetime64(pd.Timestamp(start), "ns")
        end = np.datetime64(pd.Timestamp(end), "ns")
        # A save under way in the background reads the snapshot: it is waited for (flush) before anything
        # changes the snapshot, and only then (a refresh that finds nothing new does not wait).
        snap, why = self._usable(start)
        n_ingests = n_rows = n_batches = batch_rows = 0
        changes: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # what the catch-up applied, in order
        if snap is not None:
            try:
                n_ingests, n_rows, n_batches, batch_rows = self._catch_up(snap, start, changes)
            except _Stale as stale:
                snap, why = None, str(stale)
        rebuilt = snap is None
        if rebuilt:
            self.flush()
            self._snap = None  # a failed rebuild leaves nothing half-made behind
            snap, n_rows = self._build(start, end, n_streams)
            log.info("observation window rebuilt (%s): %s rows", why, f"{n_rows:,}")
        end_before = snap.end
        if snap.moves(start, end):
            self.flush()
            snap.advance(start, end)
        self._snap = snap
        self.last_refresh = Refresh(why if rebuilt else None, n_ingests, n_rows, n_batches, batch_rows)
        if self.path is not None and (rebuilt or n_ingests or snap.end != end_before):
            change = None if rebuilt else (changes, start, end)
            if self._unsaved is not None:
                # The last refresh's save has not started: one journal record covers both (replaying records
                # applies their rows in order and moves the window once, to the newest span: see _Journal).
                earlier = self._unsaved[1]
                change = None if earlier is None or change is None else (earlier[0] + changes, start, end)
            self._unsaved = (snap, change)
        return snap

    def _save_refresh(self) -> None:
        """Save what the last refresh left (if anything), now or in the saving thread."""
        unsaved, self._unsaved = self._unsaved, None
        if unsaved is None:
            return
        if not self.save_in_background:
            self._save(*unsaved)
            return
        if self._saver is None:
            self._saver = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mlma-window-save")
        self._saving = self._saver.submit(self._save_logged, *unsaved)

    def _save_logged(self, snap: _Snapshot, change: tuple | None) -> None:
        """:meth:`_save` for the saving thread: an unexpected error is logged, and the next save rewrites the
        file (the journal's state is then unknown); the window in memory is not affected."""
        try:
            self._save(snap, change)
        except Exception as exc:  # noqa: BLE001 - the file is a cache; the tick must not fail for it
            log.warning("could not save the observation window to %s: %s: %s", self.path, type(exc).__name__, exc)
            self._journal_at = None

    def forget(self) -> None:
        """Drop the window kept in memory (the file stays, its last save finished): the next call loads or
        rebuilds it."""
        self.flush()
        self._snap, self._loaded, self._journal_at = None, False, None

    # -- steps ---------------------------------------------------------------------------------------------
    def _usable(self, start) -> tuple[_Snapshot | None, str | None]:
        snap = self._snap
        if snap is None and not self._loaded:
            self._loaded = True
            snap, why = self._load()
            if snap is None:
                return None, why
        if snap is None:
            return None, "no window in memory"
        if start is None and not snap.whole:
            return None, "the whole history is asked for"
        if start is not None and not snap.whole and start < snap.origin:
            return None, f"the window starts at {snap.origin}, {start} is asked for"
        return snap, None

    def _catch_up(self, snap: _Snapshot, start, changes: list) -> tuple[int, int, int, int]:
        """Bring ``snap`` up to date in place from the ingests it has not seen: their packed batches where the
        store kept them, else the rows they changed from ``start``. How many ingests, rows read, batches and
        rows from batches; what it applied is appended to ``changes``, in order. :class:`_Stale` when it
        cannot be (the store is not the one it describes)."""
        new, sha = self.store.ingest_marks(snap.last, snap.pending)
        if snap.last > 0 and sha != snap.sha:
            raise _Stale(f"ingest {snap.last} it saw last is {'gone' if sha is None else 'another one'}: "
                         "the store was restored or replaced")
        if not len(new):
            return 0, 0, 0, 0
        self.flush()  # the snapshot changes from here on
        ids = new["id"].to_numpy(np.int64)
        dated = new.dropna(subset=["first_ds", "last_ds"])
        if snap.whole and len(dated) and (dated["first_ds"].min().to_datetime64() < snap.origin):
            raise _Stale("an ingest brought rows older than the whole history kept")
        floor = snap.origin if start is None else max(snap.origin, start)
        dated = dated[dated["last_ds"] >= pd.Timestamp(floor)]
        packed = self._usable_batches(self.store.observation_batches(dated["id"].tolist()))
        # Every ingest listed now committed after every ingest the window saw before (it was not visible
        # then), so its batch goes on top of the window; among themselves they go in id order, which is commit
        # order (see _usable_batches).
        batch_rows = 0
        for ingest_id in sorted(packed):
            sid, ds, y = packed[ingest_id]
            snap.apply(sid, ds, y)
            changes.append((sid, ds, y))
            batch_rows += len(sid)
        # The others' rows are read from the observations table, last: what it holds is the truth.
        rest = dated[~dated["id"].isin(list(packed))]
        spans = sorted((max(a.to_datetime64(), floor), b.to_datetime64()) for a, b in
                       zip(rest["first_ds"], rest["last_ds"]))
        merged: list[list[np.datetime64]] = []
        for a, b in spans:
            if merged and a <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], b)
            else:
                merged.append([a, b])
        n_rows = 0
        for a, b in merged:
            sid, ds, y = self.store.observation_arrays(pd.Timestamp(a), pd.Timestamp(b) + pd.Timedelta(1, "us"),
                                                       changed_after=snap.last, also_ingests=snap.pending)
            snap.apply(sid, ds, y)
            changes.append((sid, ds, y))
            n_rows += len(sid)
        newest = int(ids.max())
        seen = set(ids.tolist())
        pending = [int(i) for i in snap.pending if i not in seen]
        pending += [i for i in range(snap.last + 1, newest) if i not in seen]
        mark = max(newest, snap.last)
        snap.pending = np.array([i for i in pending if i > mark - PENDING_SPAN], dtype=np.int64)
        if newest > snap.last:
            snap.last = newest
            snap.sha = self._sha_of(newest)
        return len(new), n_rows, len(packed), batch_rows

    def _usable_batches(self, packed: dict[int, tuple]) -> dict[int, tuple]:
        """The batches that may be applied in id order.

        SQLite has one writer at a time and an ingest takes its id inside its transaction, so ids are in
        commit order. PostgreSQL hands ids out before commit: of two ingests writing the same (stream, ds),
        the one with the lower id may commit last, and its value is the one the table keeps. Batches that
        share a (stream, ds) with another batch of the same refresh are therefore left out there, and those
        ingests' rows are read from the table instead. (A day's file and nothing else, the usual case, needs
        no check.)
        """
        if len(packed) < 2 or getattr(self.store, "dialect", "sqlite") == "sqlite":
            return packed
        ingest = np.concatenate([np.full(len(sid), i, dtype=np.int64) for i, (sid, _, _) in packed.items()])
        sid = np.concatenate([p[0] for p in packed.values()])
        ds = np.concatenate([p[1] for p in packed.values()]).view(np.int64)
        order = np.lexsort((ingest, ds, sid))
        sid, ds, ingest = sid[order], ds[order], ingest[order]
        shared = (sid[1:] == sid[:-1]) & (ds[1:] == ds[:-1]) & (ingest[1:] != ingest[:-1])
        doubtful = set(ingest[1:][shared].tolist()) | set(ingest[:-1][shared].tolist())
        return {i: arrays for i, arrays in packed.items() if i not in doubtful}

    def _sha_of(self, ingest_id: int) -> str | None:
        return self.store.ingest_marks(ingest_id)[1]

    def _build(self, start, end, n_streams: int) -> tuple[_Snapshot, int]:
        # The ingests first, then the rows: a row committed in between is read now and again next time.
        seen, _ = self.store.ingest_marks(0)
        ids = seen["id"].to_numpy(np.int64)
        last = int(ids.max()) if len(ids) else 0
        visible = set(ids.tolist())
        pending = np.array([i for i in range(max(1, last - PENDING_SPAN + 1), last) if i not in visible],
                           dtype=np.int64)
        if start is None:
            oldest = self.store.oldest_ds()
            origin = end if oldest is None else np.datetime64(pd.Timestamp(oldest), "ns")
        else:
            origin = start
        empty = (np.empty(0, np.int64), np.empty(0, "datetime64[ns]"), np.empty(0))
        snap = _Snapshot(self.freq, origin, start is None, last, self._sha_of(last) if last else None, pending,
                         np.full((n_streams, 0), np.nan), empty)
        snap.extend_to(end)  # rows dated after the end are kept aside (apply)
        # Read in pieces of about CHUNK_ROWS rows (by data time): the driver hands rows over as Python objects,
        # some 150 bytes each, so one read of a 100,000-stream window would hold gigabytes at once.
        n_rows = 0
        pieces = _pieces(origin, end, self.freq, CHUNK_ROWS // max(n_streams, 1))
        if len(pieces) <= 2:  # one read, with no end (SQLite scans the table faster than it walks the ds index)
            pieces = [(start, None)]
        for a, b in pieces:
            sid, ds, y = self.store.observation_arrays(None if a is None else pd.Timestamp(a),
                                                       None if b is None else pd.Timestamp(b))
            snap.apply(sid, ds, y)
            n_rows += len(sid)
        return snap, n_rows

    @property
    def journal_path(self) -> Path | None:
        """Where the changes since the file was last written are appended (next to the file)."""
        return None if self.path is None else self.path.with_name(self.path.name + ".journal")

    def _load(self) -> tuple[_Snapshot | None, str]:
        if self.path is None:
            return None, "no window kept yet"
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            return None, f"no saved window at {self.path}"
        except OSError as exc:
            return None, f"the saved window {self.path} cannot be read ({exc})"
        try:
            snap = _Snapshot.from_bytes(blob, self._store_key, self.freq)
        except ValueError as exc:
            log.warning("the saved observation window %s is not used: %s; it is rebuilt", self.path, exc)
            return None, f"the saved window is not usable: {exc}"
        began = time.perf_counter()
        try:
            journal = self.journal_path.read_bytes()
        except FileNotFoundError:
            journal = b""
        except OSError as exc:
            return None, f"the saved window's journal cannot be read ({exc})"
        try:
            records, good, stopped = _Journal.replay(snap, journal)
        except Exception as exc:  # noqa: BLE001 - a journal that does not apply: rebuilt from the store
            log.warning("the observation window's journal %s does not apply (%s: %s); the window is rebuilt",
                        self.journal_path, type(exc).__name__, exc)
            return None, f"the saved window's journal does not apply: {exc}"
        self.replayed = (records, time.perf_counter() - began)
        if stopped is not None:
            log.info("observation window journal %s: replay stopped after %d records at %s; the window catches "
                     "up from there and its file is rewritten", self.journal_path, records, stopped)
        # A journal read to its end is appended to; one with a bad tail is replaced by a new file at next save.
        self._journal_at = good if stopped is None else None
        self._seq, self._file_size = records, len(blob)
        return snap, "loaded"

    def _save(self, snap: _Snapshot, change: tuple | None) -> None:
        """Append ``change`` (what a refresh applied, and its span) to the journal, or write the whole window
        when there is no change to append (it was rebuilt), no journal this process can trust, or the journal
        has grown past :data:`JOURNAL_SHARE` of the file."""
        if change is not None and self._journal_at is not None and snap.generation is not None:
            # A record's arrays take 24 bytes a row: a record that cannot fit is not built.
            rows = sum(len(sid) for sid, _, _ in change[0])
            room = JOURNAL_SHARE * self._file_size - self._journal_at
            if 24 * rows < room:
                record = _Journal.record(snap.generation, self._seq + 1, snap, *change)
                if len(record) <= room and self._append(record):
                    return
        self._write_file(snap)

    def _append(self, record: bytes) -> bool:
        """Append a record; False when the journal is not as this process left it (then the file is
        rewritten) or cannot be written."""
        journal = self.journal_path
        try:
            size = journal.stat().st_size if journal.exists() else 0
            if size != self._journal_at:
                return False
            with open(journal, "ab") as file:
                file.write(record)
        except OSError as exc:
            log.warning("could not append to the observation window's journal %s: %s", journal, exc)
            self._journal_at = None
            return False
        self._journal_at += len(record)
        self._seq += 1
        return True

    def _write_file(self, snap: _Snapshot) -> None:
        """Write the file under a temporary name, then rename it over the old one, then drop the journal: a
        crash leaves the old file or the new one, a torn file fails its SHA-256 and is rebuilt, and a journal
        left behind names the old file's generation and is not replayed."""
        snap.generation = secrets.token_hex(8)
        self._journal_at = None
        try:
            # The file holds the data's values: readable by the owner only, like the artifacts.
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            with open(tmp, "wb") as file:
                snap.write(file, self._store_key)
                size = file.tell()
            os.replace(tmp, self.path)
            self.journal_path.unlink(missing_ok=True)
        except OSError as exc:  # a cache that cannot be written costs a full read next time, nothing more
            log.warning("could not save the observation window to %s: %s", self.path, exc)
            return
        self._journal_at, self._seq, self._file_size = 0, 0, size


def _ns(when) -> np.datetime64:
    return np.datetime64(pd.Timestamp(when), "ns")


def _pieces(lo: np.datetime64, end: np.datetime64, freq: str, steps: int) -> list[tuple]:
    """``[lo, end)`` cut every ``steps`` steps of ``freq``, then ``[end, None)`` for rows dated later.

    >>> [(str(a)[:13], str(b)[:13]) for a, b in _pieces(np.datetime64("2024-01-01T00"),
    ...                                                np.datetime64("2024-01-01T05"), "h", 2)]
    [('2024-01-01T00', '2024-01-01T02'), ('2024-01-01T02', '2024-01-01T04'), ('2024-01-01T04', '2024-01-01T05'), ('2024-01-01T05', 'None')]
    """
    cuts = [np.datetime64(lo, "ns")]
    if lo < end:
        stamps = pd.date_range(pd.Timestamp(lo), pd.Timestamp(end), freq=freq, inclusive="left")
        cuts += [t.to_datetime64() for t in stamps[max(int(steps), 1)::max(int(steps), 1)] if t.to_datetime64() > lo]
        cuts.append(np.datetime64(end, "ns"))
    return list(zip(cuts, cuts[1:] + [None]))


class _Stale(Exception):
    """The kept window no longer describes the store."""


#: URL parameters that tune a connection rather than choose a database: changing one keeps the saved window.
_CONNECTION_SETTINGS = frozenset({
    "connect_timeout", "statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout", "keepalives",
    "keepalives_idle", "keepalives_interval", "keepalives_count", "tcp_user_timeout", "application_name", "timeout",
})
#: A setting in libpq's ``options``: ``-c name=value`` or ``--name=value`` (a backslash escapes a space).
_OPTION = re.compile(r"(?:-c\s*|--)([A-Za-z_.]+)=((?:\\.|\S)*)")


def database_identity(url: sa.URL) -> str:
    r"""Which database (and schema) ``url`` names: its driver, host, port, database and every parameter that can
    choose another (``host`` and ``port`` given as parameters, ``service``, ``dbname``; of ``options``, the
    ``search_path``, the last one as PostgreSQL takes it), without the password and the connection's settings
    (timeouts, keepalives), so that tuning one of them does not make the saved window look like another store's.

    >>> database_identity(sa.make_url("postgresql+psycopg://ana:pw@db:5432/mlma?statement_timeout=15min"))
    'postgresql+psycopg://ana@db:5432/mlma'
    >>> database_identity(sa.make_url("postgresql://db/mlma?options=-csearch_path%3Dzones&connect_timeout=5"))
    'postgresql://db/mlma?search_path=zones'
    >>> database_identity(sa.make_url(r"postgresql:///mlma?host=/run/pg&options=-c search_path=a --search_path=b"))
    'postgresql:///mlma?host=%2Frun%2Fpg&search_path=b'
    >>> database_identity(sa.make_url("sqlite:////srv/mlma.db?timeout=60"))
    'sqlite:////srv/mlma.db'
    """
    query: dict[str, str | tuple[str, ...]] = {}
    for key, value in url.query.items():
        if key == "options":
            found = [v for text in ((value,) if isinstance(value, str) else value)
                     for name, v in _OPTION.findall(text) if name == "search_path"]
            if found:
                query["search_path"] = found[-1]
        elif key not in _CONNECTION_SETTINGS:
            query[key] = value
    base = sa.URL.create(url.drivername, username=url.username, host=url.host, port=url.port, database=url.database,
                         query=dict(sorted(query.items())))
    return base.render_as_string(hide_password=False)
