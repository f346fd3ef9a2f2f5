"""Issued forecasts packed one row per stream and tick: the horizon's timestamps and values as two arrays.

A tick issues ``steps`` forecasts per stream (24 for day-ahead hourly data). Stored one row per value,
10,000 streams cost 240,000 rows a tick, each converted, sent and indexed on its own: the largest part of a
tick's write. Packed, they cost 10,000 rows, each holding the stream's horizon as two little-endian arrays:

- ``ds_packed``: ``int64`` microseconds since 1970-01-01 (the data's naive time, as stored in ``ds``
  columns elsewhere), strictly increasing;
- ``y_hat_packed``: ``float64`` values, finite, one per timestamp.

The format is fixed (migration 0007 writes it too); only this module packs and unpacks it.

>>> rows = pack(np.array([4, 4, 7]), pd.to_datetime(["2024-01-01 01:00", "2024-01-01 00:00",
...             "2024-01-01 00:00"]).values, np.array([2.0, 1.0, 5.0]))
>>> rows.stream_id.tolist(), rows.steps.tolist()
([4, 7], [2, 1])
>>> ids, ds, y = unpack(rows.stream_id, rows.ds_packed, rows.y_hat_packed)
>>> ids.tolist(), y.tolist(), str(ds[1])
([4, 4, 7], [1.0, 2.0, 5.0], '2024-01-01T01:00:00.000000000')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

DS_DTYPE = np.dtype("<i8")
Y_DTYPE = np.dtype("<f8")


@dataclass(frozen=True)
class PackedForecasts:
    """One row per stream: what :func:`pack` returns, column by column."""

    stream_id: np.ndarray       # int64, increasing
    first_ds: np.ndarray        # datetime64[ns]
    last_ds: np.ndarray         # datetime64[ns]
    steps: np.ndarray           # int64
    ds_packed: list[bytes]
    y_hat_packed: list[bytes]
    model_version: np.ndarray | None  # float64 with NaN for none, or None when no row has one

    def __len__(self) -> int:
        return len(self.stream_id)


def _microseconds(ds) -> np.ndarray:
    ns = np.asarray(pd.DatetimeIndex(np.asarray(ds).ravel()).as_unit("ns").asi8)
    if ns.size and (ns == np.iinfo(np.int64).min).any():
        raise ValueError("forecast timestamps must not be missing (NaT)")
    if ns.size and (ns % 1000).any():
        raise ValueError("forecast timestamps finer than a microsecond cannot be stored; round ds to microseconds")
    return ns // 1000


def _split(buffer: bytes, bounds: np.ndarray, itemsize: int) -> list[bytes]:
    view = memoryview(buffer)
    edges = (bounds * itemsize).tolist()
    return [bytes(view[lo:hi]) for lo, hi in zip(edges[:-1], edges[1:])]


def pack(stream_id, ds, y_hat, model_version=None) -> PackedForecasts:
    """Group long forecast columns (one value per stream and timestamp, in any order) into one row per stream.

    Raises ``ValueError`` for a timestamp forecast twice for one stream, for non-finite values, and for a
    stream whose values name different model versions (a tick's forecasts of a stream come from one model).
    """
    ids = np.asarray(stream_id).astype(np.int64, copy=False)
    us = _microseconds(ds)
    y = np.asarray(y_hat, dtype=np.float64)
    if not (len(ids) == len(us) == len(y)):
        raise ValueError(f"forecast columns differ in length: {len(ids)} stream ids, {len(us)} timestamps, "
                         f"{len(y)} values")
    if not np.isfinite(y).all():
        raise ValueError("forecasts y_hat must be finite; leave out streams without a forecast")
    n = len(ids)
    # Frames from forecast_frame come ordered by stream and time: then no sort (and no copy) is needed.
    ordered = n < 2 or bool(np.all((ids[1:] > ids[:-1]) | ((ids[1:] == ids[:-1]) & (us[1:] > us[:-1]))))
    order = None
    if not ordered:
        order = np.lexsort((us, ids))
        ids, us, y = ids[order], us[order], y[order]
    new_stream = np.ones(n, dtype=bool)
    new_stream[1:] = ids[1:] != ids[:-1]
    if n > 1:
        repeated = ~new_stream[1:] & (us[1:] == us[:-1])
        if repeated.any():
            i = int(np.flatnonzero(repeated)[0])
            raise ValueError(f"stream id {int(ids[i])} has two forecasts for "
                             f"{pd.Timestamp(int(us[i]), unit='us')}; a tick issues one per timestamp")
    starts = np.flatnonzero(new_stream)
    bounds = np.append(starts, n)
    versions = None
    if model_version is not None:
        v = np.asarray(model_version)
        v = v if order is None else v[order]
        v = (v.astype(np.float64) if v.dtype.kind in "iuf"
             else pd.to_numeric(pd.Series(v), errors="raise").to_numpy(np.float64, na_value=np.nan))
        head = np.repeat(v[starts], np.diff(bounds))
        mixed = ~((v == head) | (np.isnan(v) & np.isnan(head)))
        if mixed.any():
            i = int(np.flatnonzero(mixed)[0])
            raise ValueError(f"stream id {int(ids[i])}: its forecasts name several model versions; a tick's "
                             "forecasts of one stream come from one model")
        versions = v[starts] if n else np.empty(0)
    stamps = (us * 1000).astype("datetime64[ns]")
    return PackedForecasts(
        stream_id=ids[starts], first_ds=stamps[starts], last_ds=stamps[bounds[1:] - 1] if n else stamps[:0],
        steps=np.diff(bounds), ds_packed=_split(us.astype(DS_DTYPE).tobytes(), bounds, DS_DTYPE.itemsize),
        y_hat_packed=_split(y.astype(Y_DTYPE).tobytes(), bounds, Y_DTYPE.itemsize), model_version=versions)


def unpack(stream_id: Sequence[int], ds_packed: Sequence[bytes], y_hat_packed: Sequence[bytes]
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows from :func:`pack` back to long columns: stream ids, ``datetime64[ns]`` timestamps, values.

    Raises ``ValueError`` when a row's two arrays disagree in length (a damaged row).
    """
    ds_parts = [bytes(b) for b in ds_packed]
    y_parts = [bytes(b) for b in y_hat_packed]
    ds_steps = np.fromiter((len(b) for b in ds_parts), dtype=np.int64, count=len(ds_parts))
    y_steps = np.fromiter((len(b) for b in y_parts), dtype=np.int64, count=len(y_parts))
    if (ds_steps % DS_DTYPE.itemsize).any() or not np.array_equal(ds_steps // DS_DTYPE.itemsize,
                                                                  y_steps // Y_DTYPE.itemsize):
        raise ValueError("a packed forecast row is damaged: its timestamps and values differ in length")
    steps = ds_steps // DS_DTYPE.itemsize
    us = np.frombuffer(b"".join(ds_parts), dtype=DS_DTYPE).astype(np.int64)
    y = np.frombuffer(b"".join(y_parts), dtype=Y_DTYPE).astype(np.float64)
    ids = np.repeat(np.asarray(stream_id, dtype=np.int64), steps)
    return ids, (us * 1000).astype("datetime64[ns]"), y


def row_steps(ds_packed: bytes) -> int:
    """How many forecasts one packed row holds."""
    return len(ds_packed) // DS_DTYPE.itemsize
