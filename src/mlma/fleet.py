"""The fleet's data as flat arrays, indexed by stream and by tick.

A :class:`FleetData` holds every observation of every stream in three flat arrays (stream index, timestamp,
value) sorted by stream then time, plus two small indexes: where each stream's rows start and end, and where
each tick starts inside each stream. Everything the agent needs per tick (the actuals of the tick as a
``(n_streams, steps)`` matrix, one stream's history window) is then a slice, never a pandas group-by.

Timestamps live on one global frequency grid shared by all streams (e.g. every hour from the first tick's
start to the last tick's end), laid by :mod:`mlma.calendar`. A row's grid position is its column in that grid
(negative before the first loaded tick), which turns "the same hour yesterday" into an integer subtraction and
the tick's actuals into a dense matrix with NaN where a stream reported nothing. The positions are handed to
the models too (:attr:`StreamHistory.pos`, :meth:`FleetData.tick_positions`), so a model places a history on
its grid without converting timestamps again (:func:`mlma.models.features.regularise`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from mlma.calendar import Frequency
from mlma.models.base import NO_DRIVERS, Drivers


@dataclass(frozen=True)
class StreamHistory:
    """One stream's observations inside a window: timestamps and values, ascending, and each row's position on
    the fleet's grid (``pos``: integers that count grid steps, comparable with :meth:`FleetData.tick_positions`;
    None when not known)."""

    ds: np.ndarray
    y: np.ndarray
    pos: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.y)


class FleetData:
    """All streams' observations as flat arrays with per-stream and per-tick indexes.

    Parameters
    ----------
    frame
        Canonical long frame ``unique_id, ds, y`` sorted by ``unique_id, ds`` (as :func:`mlma.data.validate`
        returns it).
    freq_alias
        The data's frequency: a :class:`~mlma.calendar.Frequency` or its pandas offset alias (``"h"``, ``"D"``,
        ``"MS"``...).
    boundaries
        Tick boundaries: tick ``first_tick + j`` covers ``[boundaries[j], boundaries[j + 1])``.
    ids
        Every stream's ``unique_id``, in the order of the per-stream arrays, when the frame does not hold
        every stream (live operation loads a window of data in which some streams have no rows). The frame
        then carries a ``stream_id`` column (the position in ``ids``) and is sorted by ``stream_id, ds``.
    first_tick
        The number of the first tick the boundaries describe. Every method takes tick numbers on this
        global clock, so a live agent that loads only its recent window uses the same numbers as a backtest
        that loads everything (``first_tick=0``).
    drivers
        The exogenous drivers fed to the models (:class:`~mlma.models.Drivers`); their columns must be in
        ``frame`` (NaN where unknown). None: no drivers.
    future
        Values of the future drivers known in advance, for timestamps that may have no observation yet
        (live: ``mlma ingest --future``): ``unique_id`` (or ``stream_id`` with ``ids``), ``ds`` and some of the
        future drivers' columns. Where a row of ``frame`` has a finite value, that observed value wins.

    Examples
    --------
    >>> frame = pd.DataFrame({
    ...     "unique_id": ["a"] * 4 + ["b"] * 3,
    ...     "ds": pd.to_datetime(["2025-01-01 00:00", "2025-01-01 01:00", "2025-01-02 00:00",
    ...                           "2025-01-02 01:00", "2025-01-01 01:00", "2025-01-02 00:00",
    ...                           "2025-01-02 01:00"]),
    ...     "y": [1.0, 2.0, 3.0, 4.0, 20.0, 30.0, 40.0]})
    >>> bounds = pd.to_datetime(["2025-01-01", "2025-01-02", "2025-01-03"])
    >>> fleet = FleetData(frame, "h", bounds)
    >>> fleet.n_streams, fleet.n_ticks, fleet.steps_in_tick(0)
    (2, 2, 24)
    >>> fleet.actuals(0)[:, :3]
    array([[ 1.,  2., nan],
           [nan, 20., nan]])
    >>> fleet.history(1, end_tick=1).y
    array([20., 30., 40.])
    >>> fleet.history(1, end_tick=1).pos, fleet.tick_positions(1)[:2]
    (array([ 1, 24, 25]), array([24, 25]))
    """

    def __init__(self, frame: pd.DataFrame, freq_alias: str, boundaries, *, ids=None, first_tick: int = 0,
                 drivers: Drivers | None = None, future: pd.DataFrame | None = None) -> None:
        frequency = Frequency.coerce(freq_alias)
        self.frequency = frequency
        self.freq_alias = frequency.alias
        self.tick_base = int(first_tick)
        self._boundaries = pd.DatetimeIndex(boundaries).as_unit("ns")
        if len(self._boundaries) < 2:
            raise ValueError("at least one tick (two boundaries) is needed")
        if ids is None:
            uids = frame["unique_id"].to_numpy()
            change = np.flatnonzero(uids[1:] != uids[:-1]) + 1
            starts = np.concatenate([[0], change]).astype(np.int64) if len(uids) else np.empty(0, np.int64)
            self.ids = np.asarray(uids[starts], dtype=object)
            self.offsets = np.concatenate([starts, [len(frame)]]).astype(np.int64)
        else:
            self.ids = np.asarray(ids, dtype=object)
            position = frame["stream_id"].to_numpy(dtype=np.int64)
            if len(position) and ((position[1:] < position[:-1]).any() or position[-1] >= len(self.ids)
                                  or position[0] < 0):
                raise ValueError("with ids, the frame's stream_id must index ids and be sorted")
            counts = np.bincount(position, minlength=len(self.ids))
            self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.ds = frame["ds"].to_numpy(dtype="datetime64[ns]")
        self.y = frame["y"].to_numpy(dtype=np.float64)
        if ids is None:
            self.stream_of_row = np.repeat(np.arange(len(self.ids)), np.diff(self.offsets))
        else:  # the frame's own column (validated sorted above): not a second array of the same numbers
            self.stream_of_row = position
        starts = self.offsets[:-1]

        # One grid for the whole fleet: the data grid's timestamps from the first tick's start to the last
        # tick's end; rows before it are kept for history, at negative positions on the same grid.
        self.grid = frequency.between(self._boundaries[0], self._boundaries[-1])
        step = frequency.step
        if step is not None and len(self.ds) and len(self.grid):
            # Fixed steps keep the data's phase (the project's grid, see mlma.calendar.on_tick_grid), which a
            # multi-day step need not share with the first tick's start (2D data in monthly ticks).
            b0 = self._boundaries[0].value
            first = b0 + (int(self.ds[0].view(np.int64)) - b0) % step.value
            self.grid = np.arange(first, self._boundaries[-1].value, step.value, dtype=np.int64).view("datetime64[ns]")
        if not len(self.grid):
            raise ValueError(f"the ticks from {self._boundaries[0]} to {self._boundaries[-1]} hold no "
                             f"{frequency.alias!r} timestamp")
        self.tick_grid_start = np.searchsorted(self.grid, self._boundaries.to_numpy(), side="left")
        if step is not None:  # one pass: the quotient is the position, a remainder means off the grid
            # In place: at 10,000 hourly streams each temporary is 54 MB of a tick's peak memory.
            self.grid_pos = self.ds.view(np.int64) - self.grid[0].view(np.int64)
            off = np.empty_like(self.grid_pos)
            np.divmod(self.grid_pos, step.value, out=(self.grid_pos, off))
            on_grid = off == 0
            del off
        else:
            raw_pos = frequency.positions(self.ds)
            self.grid_pos = raw_pos - frequency.positions(self.grid[:1])[0]
            on_grid = frequency.at_positions(raw_pos, self.grid[0]) == self.ds
        if not on_grid.all():
            bad = int(np.flatnonzero(~on_grid)[0])
            raise ValueError(
                f"stream {self.ids[self.stream_of_row[bad]]!r} has a timestamp {self.ds[bad]} that is not on "
                f"the {frequency.alias!r} grid; validate the data first")

        self.drivers = drivers or NO_DRIVERS
        self._index_drivers(frame, future)

        # Rows inside periods marked abnormal are kept out of training windows (see mark_abnormal).
        self.row_abnormal = np.zeros(len(self.y), dtype=bool)
        self.tick_abnormal = np.zeros((len(starts), len(self._boundaries) - 1), dtype=bool)

        # row_at_tick[s, j]: first row of stream s at or after the j-th loaded boundary.
        # A row is at or after boundary j exactly when its grid position is at least tick_grid_start[j] (the
        # grid holds every on-grid timestamp from the first boundary on), so one search over (stream, position)
        # keys finds them all: rows are sorted by stream, then position.
        self.row_at_tick = self._rows_at(self.tick_grid_start)

    def _rows_at(self, grid_index: np.ndarray) -> np.ndarray:
        """``out[s, j]``: the first row of stream ``s`` whose grid position is at least ``grid_index[j]``."""
        pos = self.grid_pos.astype(np.int64, copy=False)
        low = min(int(pos.min()), 0) if len(pos) else 0
        high = max(int(pos.max()) if len(pos) else 0, int(np.max(grid_index, initial=0)))
        width = high - low + 1
        key = self.stream_of_row.astype(np.int64, copy=False) * width
        key += pos
        key -= low
        wanted = np.arange(self.n_streams, dtype=np.int64)[:, None] * width + (np.asarray(grid_index) - low)
        return np.searchsorted(key, wanted.ravel(), side="left").reshape(wanted.shape).astype(np.int64)

    # -- drivers -------------------------------------------------------------------------------------------
    def _index_drivers(self, frame: pd.DataFrame, future: pd.DataFrame | None) -> None:
        """One table of driver values per stream, sorted by time: observed rows, then the values known in
        advance for timestamps without a finite observed value."""
        columns = list(self.drivers.columns)
        if not columns:
            self._drv_offsets = None
            return
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise ValueError(f"driver column(s) {missing} are not in the data (columns: {list(frame.columns)})")
        parts = [pd.DataFrame({"s": self.stream_of_row, "ds": self.ds, "src": 0,
                               **{c: pd.to_numeric(frame[c], errors="coerce").to_numpy(np.float64)
                                  for c in columns}})]
        if future is not None and len(future):
            parts.append(self._future_part(future, columns))
        table = pd.concat(parts, ignore_index=True).sort_values(["s", "ds", "src"], kind="stable")
        # Per (stream, ds): the first finite value in source order (observed before known in advance).
        table = table.groupby(["s", "ds"], sort=True).first().reset_index()
        self._drv_ds = table["ds"].to_numpy(dtype="datetime64[ns]")
        self._drv_values = table[columns].to_numpy(dtype=np.float64)
        counts = np.bincount(table["s"].to_numpy(np.int64), minlength=self.n_streams)
        self._drv_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def _future_part(self, future: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
        if "stream_id" in future.columns:
            s = future["stream_id"].to_numpy(np.int64)
        else:
            index = {uid: i for i, uid in enumerate(self.ids)}
            s = np.array([index.get(u, -1) for u in future["unique_id"]], dtype=np.int64)
        keep = (s >= 0) & (s < self.n_streams)
        values = {c: (pd.to_numeric(future[c], errors="coerce").to_numpy(np.float64)[keep]
                      if c in future.columns and c in self.drivers.future else np.full(int(keep.sum()), np.nan))
                  for c in columns}
        return pd.DataFrame({"s": s[keep], "ds": pd.to_datetime(future["ds"]).to_numpy("datetime64[ns]")[keep],
                             "src": 1, **values})

    def driver_values(self, s: int, ds: np.ndarray) -> np.ndarray | None:
        """Stream ``s``'s driver values at timestamps ``ds`` (rows) in :attr:`drivers` column order, NaN where
        none is known; None when the fleet has no drivers."""
        if self._drv_offsets is None:
            return None
        lo, hi = self._drv_offsets[s], self._drv_offsets[s + 1]
        own = self._drv_ds[lo:hi]
        ds = np.asarray(ds, dtype="datetime64[ns]")
        idx = np.minimum(np.searchsorted(own, ds), max(hi - lo - 1, 0))
        out = np.full((ds.size, len(self.drivers)), np.nan)
        if hi > lo:
            hit = own[idx] == ds
            out[hit] = self._drv_values[lo + idx[hit]]
        return out

    def future_driver_values(self, s: int, k: int, season_length: int) -> tuple[np.ndarray | None, int]:
        """The drivers for forecasting tick ``k`` of stream ``s``, and how many future values were filled.

        Future drivers take the values known for the tick's timestamps; a missing one takes the stream's
        value of that driver one season earlier (e.g. the same hour yesterday: a daily cycle of temperature
        is kept), else its last value known before the tick. Historical drivers are NaN (not known yet).
        """
        future = self.tick_timestamps(k)
        values = self.driver_values(s, future)
        if values is None:
            return None, 0
        n_f = len(self.drivers.future)
        values[:, n_f:] = np.nan
        gaps = ~np.isfinite(values[:, :n_f])
        if not gaps.any():
            return values, 0
        j = self._local(k)
        pos = self.tick_grid_start[j] + np.arange(future.size) - season_length
        earlier = self.grid[np.maximum(pos, 0)]
        season_ago = self.driver_values(s, earlier)[:, :n_f]
        season_ago[pos < 0] = np.nan
        fill = np.where(gaps, season_ago, values[:, :n_f])
        lo, hi = self._drv_offsets[s], self._drv_offsets[s + 1]
        before = self._drv_values[lo:lo + np.searchsorted(self._drv_ds[lo:hi], future[0]), :n_f]
        for c in range(n_f):
            if np.isnan(fill[:, c]).any():
                known = before[np.isfinite(before[:, c]), c]
                if known.size:
                    fill[np.isnan(fill[:, c]), c] = known[-1]
        values[:, :n_f] = fill
        return values, int(gaps.sum())

    def mark_abnormal(self, periods: pd.DataFrame) -> None:
        """Mark periods as abnormal (a holiday, an outage): kept out of training and of references.

        ``periods`` has ``start``, ``end`` and optionally ``unique_id`` (missing or empty: every stream).
        A tick counts as abnormal for a stream when any marked period overlaps it.
        """
        if periods is None or not len(periods):
            return
        index = {uid: i for i, uid in enumerate(self.ids)}
        bounds = self._boundaries.to_numpy()
        for row in periods.itertuples(index=False):
            start, end = np.datetime64(pd.Timestamp(row.start), "ns"), np.datetime64(pd.Timestamp(row.end), "ns")
            if end <= start:
                raise ValueError(f"abnormal period ends ({row.end}) before it starts ({row.start})")
            uid = getattr(row, "unique_id", None)
            if uid is None or (isinstance(uid, float) and np.isnan(uid)) or uid == "":
                streams = np.arange(self.n_streams)
            elif uid in index:
                streams = np.array([index[uid]])
            else:
                continue  # a period for a stream this data does not have
            in_period = (self.ds >= start) & (self.ds < end) & np.isin(self.stream_of_row, streams)
            self.row_abnormal |= in_period
            overlaps = (bounds[:-1] < end) & (bounds[1:] > start)
            self.tick_abnormal[np.ix_(streams, overlaps)] = True

    @property
    def n_streams(self) -> int:
        return len(self.ids)

    @property
    def n_ticks(self) -> int:
        """One more than the last tick's number (the ticks before ``tick_base`` are not loaded)."""
        return self.tick_base + len(self._boundaries) - 1

    @property
    def boundaries(self) -> _GlobalBoundaries:
        """Tick boundaries indexed by global tick number: ``boundaries[k]`` is where tick ``k`` starts."""
        return _GlobalBoundaries(self._boundaries, self.tick_base)

    def _local(self, k: int) -> int:
        j = int(k) - self.tick_base
        if j < 0 or j >= len(self._boundaries):
            raise IndexError(f"tick {k} is outside the loaded ticks {self.tick_base}..{self.n_ticks - 1}")
        return j

    def abnormal_in_tick(self, k: int) -> np.ndarray:
        """Streams for which tick ``k`` overlaps a period marked abnormal."""
        return self.tick_abnormal[:, self._local(k)]

    def steps_in_tick(self, k: int) -> int:
        """Number of grid timestamps in tick ``k`` (24 for a day of hourly data)."""
        j = self._local(k)
        return int(self.tick_grid_start[j + 1] - self.tick_grid_start[j])

    def tick_timestamps(self, k: int) -> np.ndarray:
        """The grid timestamps of tick ``k``: what a forecast for that tick predicts."""
        j = self._local(k)
        return self.grid[self.tick_grid_start[j]:self.tick_grid_start[j + 1]]

    def tick_positions(self, k: int) -> np.ndarray:
        """The grid positions of tick ``k``'s timestamps (:meth:`tick_timestamps`), on the scale of
        :attr:`StreamHistory.pos`: a model places a history and the tick to forecast on one grid with them."""
        j = self._local(k)
        return np.arange(self.tick_grid_start[j], self.tick_grid_start[j + 1], dtype=np.int64)

    def rows_in_tick(self, k: int) -> np.ndarray:
        """Indexes of all rows (every stream) observed in tick ``k``."""
        j = self._local(k)
        lo, hi = self.row_at_tick[:, j], self.row_at_tick[:, j + 1]
        counts = hi - lo
        if counts.sum() == 0:
            return np.empty(0, dtype=np.int64)
        starts = np.repeat(lo - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
        return starts + np.arange(counts.sum())

    def actuals(self, k: int) -> np.ndarray:
        """Tick ``k``'s actuals as a ``(n_streams, steps)`` matrix, NaN where nothing was reported."""
        out = np.full((self.n_streams, self.steps_in_tick(k)), np.nan)
        rows = self.rows_in_tick(k)
        out[self.stream_of_row[rows], self.grid_pos[rows] - self.tick_grid_start[self._local(k)]] = self.y[rows]
        return out

    def observed_in_tick(self, k: int) -> np.ndarray:
        """Number of rows each stream reported in tick ``k``."""
        j = self._local(k)
        return self.row_at_tick[:, j + 1] - self.row_at_tick[:, j]

    def n_rows_before(self, k: int) -> np.ndarray:
        """Rows each stream has before ``boundaries[k]`` (its history length at that point, within the
        loaded rows)."""
        return self.row_at_tick[:, self._local(k)] - self.offsets[:-1]

    def history(self, s: int, end_tick: int, window_ticks: int | None = None) -> StreamHistory:
        """Stream ``s``'s rows up to the end of tick ``end_tick``, optionally only the last ``window_ticks``."""
        hi = self.row_at_tick[s, self._local(end_tick + 1)]
        start_tick = self.tick_base if window_ticks is None else end_tick + 1 - window_ticks
        lo = self.offsets[s] if start_tick <= self.tick_base else self.row_at_tick[s, self._local(start_tick)]
        y = self.y[lo:hi]
        abnormal = self.row_abnormal[lo:hi]
        if abnormal.any():
            y = np.where(abnormal, np.nan, y)
        return StreamHistory(self.ds[lo:hi], y, self.grid_pos[lo:hi])

    def seasonal_naive_scale(self, season_length: int, before_tick: int | None = None,
                             streams: np.ndarray | None = None) -> np.ndarray:
        """Each stream's mean absolute seasonal difference, the MASE denominator.

        Uses the rows before ``boundaries[before_tick]`` when a stream has at least two seasons there,
        otherwise all of its rows. Pairs ``(t, t - season_length)`` are taken on the grid, so gaps do not
        pair unrelated hours. NaN for a stream with no such pair.

        ``streams``: compute only these (each stream's scale depends on its own rows alone; the others are
        NaN). A live tick keeps the scales in its state and needs only the streams that have none yet.
        """
        if streams is None:
            sor, pos, y, ds = self.stream_of_row, self.grid_pos, self.y, self.ds
        else:
            wanted = np.unique(np.asarray(streams, dtype=np.int64))
            lo, hi = self.offsets[wanted], self.offsets[wanted + 1]
            counts = hi - lo
            rows = np.repeat(lo - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts) + np.arange(counts.sum())
            sor, pos, y, ds = self.stream_of_row[rows], self.grid_pos[rows], self.y[rows], self.ds[rows]
        pos = pos - (pos.min() if len(pos) else 0)
        width = int(pos.max()) + season_length + 1 if len(pos) else 1
        key = sor.astype(np.int64) * width + pos
        lag_idx = np.searchsorted(key, key - season_length)
        lag_idx = np.minimum(lag_idx, len(key) - 1)
        has_lag = key[lag_idx] == key - season_length
        diff = np.where(has_lag, np.abs(y - y[lag_idx]), np.nan)
        all_rows = _nanmean_by_stream(diff, sor, self.n_streams)
        if before_tick is None:
            return all_rows
        early = ds < self.boundaries[before_tick].to_datetime64()
        early_rows = _nanmean_by_stream(np.where(early, diff, np.nan), sor, self.n_streams)
        enough = np.bincount(sor[early & has_lag], minlength=self.n_streams) >= season_length
        return np.where(enough, early_rows, all_rows)


class _GlobalBoundaries:
    """A read-only view of the loaded tick boundaries, indexed by global tick number."""

    def __init__(self, index: pd.DatetimeIndex, base: int) -> None:
        self.index, self.base = index, base

    def __getitem__(self, k):
        if isinstance(k, slice):
            start = None if k.start is None else k.start - self.base
            stop = None if k.stop is None else k.stop - self.base
            return self.index[slice(start, stop, k.step)]
        j = int(k) - self.base
        if j < 0:
            raise IndexError(f"tick {k} starts before the loaded ticks (from {self.base})")
        return self.index[j]

    def __len__(self) -> int:
        return self.base + len(self.index)

    def to_numpy(self) -> np.ndarray:
        """The loaded boundaries (from tick ``base``)."""
        return self.index.to_numpy()


def _nanmean_by_stream(values: np.ndarray, stream: np.ndarray, n: int) -> np.ndarray:
    ok = np.isfinite(values)
    total = np.bincount(stream[ok], weights=values[ok], minlength=n)
    count = np.bincount(stream[ok], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)
