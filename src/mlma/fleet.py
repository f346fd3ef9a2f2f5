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

A fleet can also be built on a dense ``(streams x grid steps)`` matrix, the live agent's observation window
(:meth:`FleetData.from_matrix`): the per-tick answers are then read from the matrix, and the flat arrays
are built only if something asks for them. A NaN ``y`` counts as no observation either way: rows whose
``y`` is not finite are dropped from a frame (validated data has none; the window keeps none), so a
backtest on rows and a live tick on the matrix see the same observations.
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
        frequency = self._set_clock(freq_alias, boundaries, first_tick)
        self._matrix = None
        finite = np.isfinite(frame["y"].to_numpy(dtype=np.float64))
        if not finite.all():  # a NaN y is no observation (see the module's docstring)
            frame = frame.loc[finite]
        del finite
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

        self._lay_grid(self.ds[0] if len(self.ds) else None)
        step = frequency.step
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
            bad, whose = int(np.flatnonzero(~on_grid)[0]), ""
            if step is not None:
                # The grid is laid through the first row: when that stream is the one shifted (at :30 where the
                # others are at :00), its rows are "on" the grid and the first good stream would be blamed.
                # The fleet's grid is the phase most streams start on; blame the first row off it.
                # The same choice as mlma.data's shifted-grid check: the phase most streams start on, then the
                # one with most rows, then the earliest in the step (phases counted from the epoch).
                rem = self.ds.view(np.int64) % step.value
                sizes = np.diff(self.offsets)
                starts_of = self.offsets[:-1][sizes > 0]
                phases, inverse, counts = np.unique(rem[starts_of], return_inverse=True, return_counts=True)
                rows = np.bincount(inverse.ravel(), weights=sizes[sizes > 0])
                best = min(range(len(phases)), key=lambda i: (-counts[i], -rows[i], phases[i]))
                bad = int(np.flatnonzero(rem != phases[best])[0])
                whose = f" that {int(counts[best]):,} of the {len(starts_of):,} streams are on"
            raise ValueError(
                f"stream {self.ids[self.stream_of_row[bad]]!r} has a timestamp {self.ds[bad]} that is not on "
                f"the {frequency.alias!r} grid{whose}; validate the data first")

        self.drivers = drivers or NO_DRIVERS
        self._index_drivers(frame, future)
        self._abnormal = None

        # Rows inside periods marked abnormal are kept out of training windows (see mark_abnormal).
        self.row_abnormal = np.zeros(len(self.y), dtype=bool)
        self.tick_abnormal = np.zeros((len(starts), len(self._boundaries) - 1), dtype=bool)

        # row_at_tick[s, j]: first row of stream s at or after the j-th loaded boundary.
        # A row is at or after boundary j exactly when its grid position is at least tick_grid_start[j] (the
        # grid holds every on-grid timestamp from the first boundary on), so one search over (stream, position)
        # keys finds them all: rows are sorted by stream, then position.
        self.row_at_tick = self._rows_at(self.tick_grid_start)

    @classmethod
    def from_matrix(cls, values: np.ndarray, first_ds, freq_alias: str, boundaries, *, ids,
                    first_tick: int = 0) -> FleetData:
        """The fleet of a dense ``(streams x grid steps)`` matrix, kept as it is (not copied into flat rows).

        ``values[s, c]`` is stream ``s`` at the ``c``-th grid timestamp from ``first_ds`` (NaN: no observation),
        as the live agent's :meth:`~mlma.store.window.ObservationWindow.matrix` keeps it. Every method gives
        what ``FleetData`` built from the matrix's finite entries as flat rows gives (the tests compare them);
        the per-tick ones (:meth:`actuals`, :meth:`history`, the forecasting histories of
        :func:`mlma.training.fleet_history_shards`...) read the matrix directly. The flat arrays (``ds``,
        ``y``, ``grid_pos``, ``offsets``...) are built only if something asks for them. The matrix is not
        copied: it must not change while the fleet is in use. No drivers (a project with drivers builds its
        fleet from rows).

        >>> values = np.array([[1.0, 2.0, np.nan, 4.0], [np.nan, 20.0, 30.0, 40.0]])
        >>> bounds = pd.to_datetime(["2025-01-01 00:00", "2025-01-01 02:00", "2025-01-01 04:00"])
        >>> fleet = FleetData.from_matrix(values, bounds[0], "h", bounds, ids=["a", "b"])
        >>> fleet.actuals(1), fleet.history(1, end_tick=1).pos, fleet.y
        (array([[nan,  4.],
               [30., 40.]]), array([1, 2, 3]), array([ 1.,  2.,  4., 20., 30., 40.]))
        """
        self = cls.__new__(cls)
        frequency = self._set_clock(freq_alias, boundaries, first_tick)
        self.ids = np.asarray(ids, dtype=object)
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[0] != len(self.ids):
            raise ValueError(f"the matrix must have one row per stream ({len(self.ids)}), got shape {values.shape}")
        first_ds = np.datetime64(pd.Timestamp(first_ds).as_unit("ns").to_datetime64(), "ns")
        self._lay_grid(first_ds)
        # The matrix's first column on the fleet's grid (negative when it starts before the first tick).
        position = frequency.positions(np.array([first_ds]))[0] - frequency.positions(self.grid[:1])[0]
        if frequency.at_positions(np.array([frequency.positions(np.array([first_ds]))[0]]), first_ds)[0] != first_ds:
            raise ValueError(f"the matrix's first timestamp {first_ds} is not on the {frequency.alias!r} grid")
        self._col0 = int(position)
        view = values.view()
        view.flags.writeable = False
        self._matrix = view
        self.drivers = NO_DRIVERS
        self._drv_offsets = None
        self._abnormal = None  # (streams x matrix columns) bool, once a period is marked abnormal
        self.tick_abnormal = np.zeros((len(self.ids), len(self._boundaries) - 1), dtype=bool)
        return self

    # What a fleet built from rows holds as arrays; from_matrix builds them on first use (__getattr__).
    _FLAT = frozenset({"ds", "y", "grid_pos", "stream_of_row", "offsets", "row_at_tick", "row_abnormal"})

    def __getattr__(self, name: str):
        # Called only for attributes not set: the flat arrays of a fleet built from a matrix.
        if name in FleetData._FLAT and self.__dict__.get("_matrix") is not None:
            self._flatten()
            return self.__dict__[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def _flatten(self) -> None:
        """The flat arrays of a matrix-built fleet: its finite entries, by stream then time."""
        m = self._matrix
        finite = np.isfinite(m)
        sid, col = np.nonzero(finite)
        self.y = m[sid, col]
        self.row_abnormal = (self._abnormal[sid, col] if self._abnormal is not None
                             else np.zeros(len(sid), dtype=bool))
        del finite
        self.stream_of_row = sid.astype(np.int64, copy=False)
        self.grid_pos = col.astype(np.int64, copy=False) + self._col0
        self.ds = self.timestamps_at(self.grid_pos)
        counts = np.bincount(self.stream_of_row, minlength=self.n_streams)
        self.offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        self.row_at_tick = self._rows_at(self.tick_grid_start)

    def _set_clock(self, freq_alias, boundaries, first_tick: int) -> Frequency:
        frequency = Frequency.coerce(freq_alias)
        self.frequency = frequency
        self.freq_alias = frequency.alias
        self.tick_base = int(first_tick)
        self._boundaries = pd.DatetimeIndex(boundaries).as_unit("ns")
        if len(self._boundaries) < 2:
            raise ValueError("at least one tick (two boundaries) is needed")
        return frequency

    def _lay_grid(self, phase: np.datetime64 | None) -> None:
        """One grid for the whole fleet: the data grid's timestamps from the first tick's start to the last
        tick's end; rows before it are kept for history, at negative positions on the same grid. ``phase``:
        a timestamp on the data's grid (the first row's)."""
        frequency = self.frequency
        self.grid = frequency.between(self._boundaries[0], self._boundaries[-1])
        step = frequency.step
        if step is not None and phase is not None and len(self.grid):
            # Fixed steps keep the data's phase (the project's grid, see mlma.calendar.on_tick_grid), which a
            # multi-day step need not share with the first tick's start (2D data in monthly ticks).
            b0 = self._boundaries[0].value
            first = b0 + (int(np.datetime64(phase, "ns").view(np.int64)) - b0) % step.value
            self.grid = np.arange(first, self._boundaries[-1].value, step.value, dtype=np.int64).view("datetime64[ns]")
        if not len(self.grid):
            raise ValueError(f"the ticks from {self._boundaries[0]} to {self._boundaries[-1]} hold no "
                             f"{frequency.alias!r} timestamp")
        self.tick_grid_start = np.searchsorted(self.grid, self._boundaries.to_numpy(), side="left")

    def timestamps_at(self, pos: np.ndarray) -> np.ndarray:
        """The grid timestamps at fleet grid positions ``pos`` (negative: before the first tick)."""
        step = self.frequency.step
        if step is not None:
            return (pos * step.value + self.grid[0].view(np.int64)).view("datetime64[ns]")
        base = self.frequency.positions(self.grid[:1])[0]
        return self.frequency.at_positions(pos + base, self.grid[0])

    def matrix_columns(self, a: int, b: int) -> tuple[int, int]:
        """Matrix-built fleet: the matrix columns of fleet grid positions ``[a, b)``, clipped to the matrix."""
        n = self._matrix.shape[1]
        return min(max(a - self._col0, 0), n), min(max(b - self._col0, 0), n)

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
            raise ValueError(f"driver column(s) {missing} are not in the data as numbers (columns read: "
                             f"{list(frame.columns)}; a column of mostly text is not read, and its name is in the "
                             "validation's columns-dropped finding)")
        # The drivers by position ("d0", "d1", ...) beside the keys: a driver named "s" or "src" took the key's
        # place and mixed up the streams' values.
        parts = [pd.DataFrame({"s": self.stream_of_row, "ds": self.ds, "src": 0,
                               **{f"d{i}": pd.to_numeric(frame[c], errors="coerce").to_numpy(np.float64)
                                  for i, c in enumerate(columns)}})]
        if future is not None and len(future):
            parts.append(self._future_part(future, columns))
        table = pd.concat(parts, ignore_index=True).sort_values(["s", "ds", "src"], kind="stable")
        # Per (stream, ds): the first finite value in source order (observed before known in advance).
        table = table.groupby(["s", "ds"], sort=True).first().reset_index()
        self._drv_ds = table["ds"].to_numpy(dtype="datetime64[ns]")
        self._drv_values = table[[f"d{i}" for i in range(len(columns))]].to_numpy(dtype=np.float64)
        counts = np.bincount(table["s"].to_numpy(np.int64), minlength=self.n_streams)
        self._drv_offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)

    def _future_part(self, future: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
        if "stream_id" in future.columns:
            s = future["stream_id"].to_numpy(np.int64)
        else:
            index = {uid: i for i, uid in enumerate(self.ids)}
            s = np.array([index.get(u, -1) for u in future["unique_id"]], dtype=np.int64)
        keep = (s >= 0) & (s < self.n_streams)
        values = {f"d{i}": (pd.to_numeric(future[c], errors="coerce").to_numpy(np.float64)[keep]
                            if c in future.columns and c in self.drivers.future else np.full(int(keep.sum()), np.nan))
                  for i, c in enumerate(columns)}
        return pd.DataFrame({"s": s[keep], "ds": pd.to_datetime(future["ds"]).to_numpy("datetime64[ns]")[keep],
                             "src": 1, **values})

    def driver_values(self, s: int, ds: np.ndarray) -> np.ndarray | None:
        """Stream ``s``'s driver values at timestamps ``ds`` (rows) in :attr:`drivers` column order, NaN where
        none is known, but 0 for an event driver (no event ran: a file that lists only the hours a campaign
        runs must not have its last campaign carried on, in training as in forecasts); None when the fleet has
        no drivers."""
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
        for c in self._event_columns:
            out[np.isnan(out[:, c]), c] = 0.0
        return out

    def future_driver_values(self, s: int, k: int, season_length: int) -> tuple[np.ndarray | None, int]:
        """The drivers for forecasting tick ``k`` of stream ``s``, and how many future values were filled.

        Future drivers take the values known for the tick's timestamps; a missing one takes the stream's
        value of that driver one season earlier (e.g. the same hour yesterday: a daily cycle of temperature
        is kept), else its last value known before the tick. A missing value of an event driver is 0, as
        declared (no event runs), not filled: a campaign that ended must not run on in the forecasts.
        Historical drivers are NaN (not known yet). :meth:`future_driver_fills` gives the fills per driver.
        """
        values, filled = self.future_driver_fills(s, k, season_length)
        return values, int(filled.sum())

    def future_driver_fills(self, s: int, k: int, season_length: int) -> tuple[np.ndarray | None, np.ndarray]:
        """As :meth:`future_driver_values`, with the values filled counted per future driver (in
        ``drivers.future`` order), so that a warning can name the drivers nobody sent."""
        future = self.tick_timestamps(k)
        values = self.driver_values(s, future)
        n_f = len(self.drivers.future)
        if values is None:
            return None, np.zeros(n_f, dtype=np.int64)
        values[:, n_f:] = np.nan
        gaps = ~np.isfinite(values[:, :n_f])  # none for event drivers (driver_values: 0)
        if not gaps.any():
            return values, np.zeros(n_f, dtype=np.int64)
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
        return values, gaps.sum(axis=0).astype(np.int64)

    def streams_without_values(self, names) -> dict[str, np.ndarray]:
        """For each driver of ``names`` (columns of :attr:`drivers`), the streams (indices, ascending) that
        hold no value of it at all, observed or known in advance; drivers every stream has a value of are left
        out. A model that uses the driver is fitted and forecast without it for those streams.

        >>> from mlma.models import Drivers
        >>> frame = pd.DataFrame({"unique_id": np.repeat(["a", "b"], 48), "y": 1.0, "t": np.r_[np.ones(48),
        ...                       np.full(48, np.nan)], "ds": np.tile(pd.date_range("2025-01-01", periods=48,
        ...                       freq="h"), 2)})
        >>> fleet = FleetData(frame, "h", pd.date_range("2025-01-01", periods=3, freq="D"),
        ...                   drivers=Drivers(future=("t",)))
        >>> fleet.streams_without_values(["t"])
        {'t': array([1])}
        """
        if self._drv_offsets is None:
            return {}
        counts = np.diff(self._drv_offsets)
        stream = np.repeat(np.arange(self.n_streams), counts)
        out = {}
        for name in names:
            c = list(self.drivers.columns).index(name)
            held = np.bincount(stream, weights=np.isfinite(self._drv_values[:, c]), minlength=self.n_streams)
            none = np.flatnonzero(held == 0)
            if none.size:
                out[name] = none
        return out

    @property
    def _event_columns(self) -> list[int]:
        """Where the event drivers are among the future drivers' columns."""
        return [self.drivers.future.index(name) for name in self.drivers.events]

    def mark_abnormal(self, periods: pd.DataFrame) -> None:
        """Mark periods as abnormal (a holiday, an outage): kept out of training and of references.

        ``periods`` has ``start``, ``end`` and optionally ``unique_id`` (missing or empty: every stream).
        A tick counts as abnormal for a stream when any marked period overlaps it.
        """
        if periods is None or not len(periods):
            return
        self._marked_rows = None  # marks change: marked_rows_before finds them again
        index = {uid: i for i, uid in enumerate(self.ids)}
        bounds = self._boundaries.to_numpy()
        for row in periods.itertuples(index=False):
            start, end = np.datetime64(pd.Timestamp(row.start), "ns"), np.datetime64(pd.Timestamp(row.end), "ns")
            if end <= start:
                raise ValueError(f"abnormal period ends ({row.end}) before it starts ({row.start})")
            uid = getattr(row, "unique_id", None)
            if uid is None or (isinstance(uid, float) and np.isnan(uid)) or uid == "":
                streams = np.arange(self.n_streams)
            elif uid in index or str(uid).strip() in index:  # an id from a file, maybe with spaces around it
                streams = np.array([index[uid if uid in index else str(uid).strip()]])
            else:
                continue  # a period for a stream this data does not have
            if self._matrix is not None:
                self._mark_matrix(streams, start, end)
            else:
                in_period = (self.ds >= start) & (self.ds < end) & np.isin(self.stream_of_row, streams)
                self.row_abnormal |= in_period
            overlaps = (bounds[:-1] < end) & (bounds[1:] > start)
            self.tick_abnormal[np.ix_(streams, overlaps)] = True

    def _mark_matrix(self, streams: np.ndarray, start: np.datetime64, end: np.datetime64) -> None:
        """mark_abnormal of a matrix-built fleet: a boolean matrix beside the values, made on first use."""
        if self._abnormal is None:
            self._abnormal = np.zeros(self._matrix.shape, dtype=bool)
        ds = self.timestamps_at(self._col0 + np.arange(self._matrix.shape[1], dtype=np.int64))
        cols = np.flatnonzero((ds >= start) & (ds < end))
        if cols.size:
            self._abnormal[np.ix_(streams, cols)] = True
        self.__dict__.pop("row_abnormal", None)  # flat arrays made before: rebuilt with the marks
        if "y" in self.__dict__:
            self._flatten()

    @property
    def matrix(self) -> np.ndarray | None:
        """The read-only ``(streams x columns)`` matrix of a fleet built :meth:`from_matrix` (None: built
        from rows); its column ``c`` is grid position ``matrix_offset + c``."""
        return self._matrix

    @property
    def matrix_offset(self) -> int:
        """The grid position of the matrix's first column (:attr:`matrix`)."""
        return self._col0

    @property
    def abnormal_matrix(self) -> np.ndarray | None:
        """Beside :attr:`matrix`: True where a value is in a period marked abnormal (None: nothing marked)."""
        return self._abnormal

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

    def _tick_columns(self, k: int) -> tuple[int, int, int]:
        """Matrix-built fleet: tick ``k``'s first grid position and its matrix columns ``[a, b)``."""
        j = self._local(k)
        first = int(self.tick_grid_start[j])
        return (first, *self.matrix_columns(first, int(self.tick_grid_start[j + 1])))

    def actuals(self, k: int) -> np.ndarray:
        """Tick ``k``'s actuals as a ``(n_streams, steps)`` matrix, NaN where nothing was reported."""
        out = np.full((self.n_streams, self.steps_in_tick(k)), np.nan)
        if self._matrix is not None:
            first, a, b = self._tick_columns(k)
            at = a + self._col0 - first
            out[:, at:at + b - a] = self._matrix[:, a:b]
            return out
        rows = self.rows_in_tick(k)
        out[self.stream_of_row[rows], self.grid_pos[rows] - self.tick_grid_start[self._local(k)]] = self.y[rows]
        return out

    def observed_in_tick(self, k: int) -> np.ndarray:
        """Number of rows each stream reported in tick ``k``."""
        j = self._local(k)
        if self._matrix is not None:
            _, a, b = self._tick_columns(k)
            return np.isfinite(self._matrix[:, a:b]).sum(axis=1)
        return self.row_at_tick[:, j + 1] - self.row_at_tick[:, j]

    def n_rows_before(self, k: int, *, trainable: bool = False) -> np.ndarray:
        """Rows each stream has before ``boundaries[k]`` (its history length at that point, within the
        loaded rows); ``trainable``: only those outside periods marked abnormal, the rows a fit learns from.

        >>> bounds = pd.date_range("2025-01-01", periods=3, freq="2h")
        >>> fleet = FleetData.from_matrix(np.ones((1, 4)), bounds[0], "h", bounds, ids=["a"])
        >>> fleet.mark_abnormal(pd.DataFrame({"start": [bounds[0]], "end": [bounds[0] + pd.Timedelta("1h")]}))
        >>> fleet.n_rows_before(2), fleet.n_rows_before(2, trainable=True)
        (array([4]), array([3]))
        """
        if self._matrix is not None:
            _, b = self.matrix_columns(self._col0, int(self.tick_grid_start[self._local(k)]))
            rows = np.isfinite(self._matrix[:, :b]).sum(axis=1)
        else:
            rows = self.row_at_tick[:, self._local(k)] - self.offsets[:-1]
        return rows - self.marked_rows_before(k) if trainable else rows

    def marked_rows_before(self, k: int) -> np.ndarray:
        """Rows each stream has before ``boundaries[k]`` inside periods marked abnormal (fits leave them out);
        no pass over the rows while nothing is marked."""
        if "_marked_rows" not in self.__dict__:  # mark_abnormal was never called
            return np.zeros(self.n_streams, dtype=np.int64)
        if self._matrix is not None:
            if self._abnormal is None:  # every period named a stream this fleet does not have
                return np.zeros(self.n_streams, dtype=np.int64)
            _, b = self.matrix_columns(self._col0, int(self.tick_grid_start[self._local(k)]))
            return (np.isfinite(self._matrix[:, :b]) & self._abnormal[:, :b]).sum(axis=1)
        if self._marked_rows is None:  # the marked rows' flat positions, found once after each mark
            self._marked_rows = np.flatnonzero(self.row_abnormal)
        marked = self._marked_rows
        return (np.searchsorted(marked, self.row_at_tick[:, self._local(k)])
                - np.searchsorted(marked, self.offsets[:-1]))

    def history(self, s: int, end_tick: int, window_ticks: int | None = None) -> StreamHistory:
        """Stream ``s``'s rows up to the end of tick ``end_tick``, optionally only the last ``window_ticks``."""
        if self._matrix is not None:
            return self._matrix_history(s, end_tick, window_ticks)
        hi = self.row_at_tick[s, self._local(end_tick + 1)]
        start_tick = self.tick_base if window_ticks is None else end_tick + 1 - window_ticks
        lo = self.offsets[s] if start_tick <= self.tick_base else self.row_at_tick[s, self._local(start_tick)]
        y = self.y[lo:hi]
        abnormal = self.row_abnormal[lo:hi]
        if abnormal.any():
            y = np.where(abnormal, np.nan, y)
        return StreamHistory(self.ds[lo:hi], y, self.grid_pos[lo:hi])

    def history_columns(self, end_tick: int, window_ticks: int | None) -> tuple[int, int]:
        """Matrix-built fleet: the matrix columns ``[a, b)`` of the histories :meth:`history` gives."""
        hi = int(self.tick_grid_start[self._local(end_tick + 1)])
        start_tick = self.tick_base if window_ticks is None else end_tick + 1 - window_ticks
        if start_tick <= self.tick_base:
            return self.matrix_columns(self._col0, hi)
        return self.matrix_columns(int(self.tick_grid_start[self._local(start_tick)]), hi)

    def _matrix_history(self, s: int, end_tick: int, window_ticks: int | None) -> StreamHistory:
        a, b = self.history_columns(end_tick, window_ticks)
        row = self._matrix[s, a:b]
        cols = np.flatnonzero(np.isfinite(row))
        y = row[cols]
        if self._abnormal is not None:
            y = np.where(self._abnormal[s, a:b][cols], np.nan, y)
        pos = cols + (a + self._col0)
        return StreamHistory(self.timestamps_at(pos), y, pos)

    def seasonal_naive_scale(self, season_length: int, before_tick: int | None = None,
                             streams: np.ndarray | None = None, since_tick: int | None = None,
                             min_pairs: int = 1) -> np.ndarray:
        """Each stream's mean absolute seasonal difference, the MASE denominator.

        Over the pairs ``(t, t - season_length)`` whose later row is dated before ``boundaries[before_tick]``
        (all pairs when None) and, with ``since_tick``, whose earlier row is dated from
        ``boundaries[since_tick]``: what a live agent at tick ``before_tick - 1`` knows, its window starting at
        ``since_tick``, and never a later row (a stream launched shortly before has only its own early
        pairs, as it would live, not a scale taken from its future). Pairs are taken on the grid, so gaps do not
        pair unrelated hours. NaN for a stream with fewer than ``min_pairs`` such pairs.

        ``streams``: compute only these (each stream's scale depends on its own rows alone; the others are
        NaN). A live tick keeps the scales in its state and needs only the streams that have none yet.
        """
        if self._matrix is not None:
            return self._matrix_scale(season_length, before_tick, streams, since_tick, min_pairs)
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
        if before_tick is not None:
            diff = np.where(ds < self.boundaries[before_tick].to_datetime64(), diff, np.nan)
        if since_tick is not None:
            diff = np.where(ds[lag_idx] >= self.boundaries[since_tick].to_datetime64(), diff, np.nan)
        mean = _nanmean_by_stream(diff, sor, self.n_streams)
        if min_pairs > 1:
            mean[np.bincount(sor[np.isfinite(diff)], minlength=self.n_streams) < min_pairs] = np.nan
        return mean


    def scale_known_at(self, season_length: int, tick: int, since_tick: int = 0,
                       streams: np.ndarray | None = None) -> np.ndarray:
        """The MASE scale an agent gives, at the end of tick ``tick``, to streams that have none yet: the
        seasonal pairs dated before the tick's end, from ``since_tick`` (its training window's first tick;
        0: the whole history), once there are a season's worth of them (``season_length`` pairs; NaN before:
        a scale from a handful of pairs would be kept for good, and a small one would inflate every scaled
        loss after it). Live ticks and the backtest both take it, so that a stream launched late gets the
        same scale in both, and never one taken from its future."""
        return self.seasonal_naive_scale(season_length, before_tick=tick + 1, streams=streams,
                                         since_tick=since_tick if since_tick > 0 else None,
                                         min_pairs=max(1, season_length))

    def _matrix_scale(self, season_length: int, before_tick: int | None, streams,
                      since_tick: int | None, min_pairs: int) -> np.ndarray:
        """seasonal_naive_scale on the matrix: the pairs ``(t, t - season_length)`` are columns apart."""
        wanted = np.arange(self.n_streams) if streams is None else np.unique(np.asarray(streams, dtype=np.int64))
        out = np.full(self.n_streams, np.nan)
        n_cols = self._matrix.shape[1]
        if season_length < 1 or not wanted.size:
            return out
        stamps = self.timestamps_at(self._col0 + np.arange(n_cols, dtype=np.int64))
        # The pairs whose later column is dated before the boundary and whose earlier one from the window's start.
        cut = n_cols if before_tick is None else int(np.searchsorted(stamps, self.boundaries[before_tick].to_datetime64()))
        first = 0 if since_tick is None else int(np.searchsorted(stamps, self.boundaries[since_tick].to_datetime64()))
        total = np.zeros(wanted.size)
        count = np.zeros(wanted.size, dtype=np.int64)
        # Chunks of streams: the differences are a temporary as large as the chunk's matrix.
        for lo in range(0, wanted.size, 4096):
            rows = wanted[lo:lo + 4096]
            m = self._matrix[rows]
            diff = np.abs(m[:, season_length:] - m[:, :-season_length]) if n_cols > season_length \
                else np.empty((rows.size, 0))
            # Sums in time order per stream, as the flat rows' bincount adds them: the same floating-point
            # result, not one a rounding apart.
            ok = np.isfinite(diff)
            at, col = np.nonzero(ok)
            known = (col < cut - season_length) & (col >= first)  # diff column c pairs matrix columns c + L and c
            at, pairs = at[known], diff[at[known], col[known]]
            total[lo:lo + rows.size] = np.bincount(at, weights=pairs, minlength=rows.size)
            count[lo:lo + rows.size] = np.bincount(at, minlength=rows.size)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[wanted] = np.where(count >= max(min_pairs, 1), total / np.maximum(count, 1), np.nan)
        return out


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
