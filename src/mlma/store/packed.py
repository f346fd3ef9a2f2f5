"""Issued forecasts packed one row per tick and block of streams: the streams' horizons as flat arrays.

A tick issues ``steps`` forecasts per stream (24 for day-ahead hourly data). Stored one row per value,
10,000 streams cost 240,000 rows a tick; one row per stream (migration 0007), 10,000 rows, each converted,
sent and indexed on its own: still about 70 ms of a 0.4 s live tick. Packed by blocks of
:data:`BLOCK_STREAMS` consecutive stream ids (migration 0009), they cost 157 rows. A row holds the streams of
its block that the tick forecast, as little-endian arrays:

- ``stream_ids``: ``int64``, increasing, all in ``[block * BLOCK_STREAMS, (block + 1) * BLOCK_STREAMS)``;
- ``steps``: ``int32``, how many forecasts each of those streams has (at least one);
- ``model_versions``: ``int64``, the registry version each stream's forecasts came from, -1 for none;
- ``ds_packed``: ``int64`` microseconds since 1970-01-01 (the data's naive time, as stored in ``ds``
  columns elsewhere), the streams' timestamps one after the other, strictly increasing within a stream;
- ``y_hat_packed``: ``float64`` values, finite, one per timestamp.

The format is fixed (migration 0009 writes it too); only this module packs and unpacks it. A reader of one
stream reads the rows of its block (:func:`block_of`) and takes its part (:func:`stream_part`).

>>> rows = pack(np.array([4, 4, 70]), pd.to_datetime(["2024-01-01 01:00", "2024-01-01 00:00",
...             "2024-01-01 00:00"]).values, np.array([2.0, 1.0, 5.0]), np.array([3, 3, 1]))
>>> rows.block.tolist(), rows.n_values.tolist()
([0, 1], [2, 1])
>>> ids, ds, y, versions = unpack(rows.stream_ids, rows.steps, rows.model_versions, rows.ds_packed,
...                               rows.y_hat_packed)
>>> ids.tolist(), y.tolist(), str(ds[1]), versions.tolist()
([4, 4, 70], [1.0, 2.0, 5.0], '2024-01-01T01:00:00.000000000', [3.0, 3.0, 1.0])
>>> ds, y, version = stream_part(rows.stream_ids[0], rows.steps[0], rows.model_versions[0],
...                              rows.ds_packed[0], rows.y_hat_packed[0], 4)
>>> y.tolist(), version
([1.0, 2.0], 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: Consecutive stream ids per stored row. Larger blocks mean fewer rows a tick to write; smaller ones less
#: to read for one stream's chart (a row of 64 hourly day-ahead streams is 25 kB).
BLOCK_STREAMS = 64

ID_DTYPE = np.dtype("<i8")
STEPS_DTYPE = np.dtype("<i4")
VERSION_DTYPE = np.dtype("<i8")
DS_DTYPE = np.dtype("<i8")
Y_DTYPE = np.dtype("<f8")
#: ``model_versions`` of a stream whose forecasts name no registry version.
NO_VERSION = -1


def block_of(stream_id: int | np.ndarray) -> int | np.ndarray:
    """The block (stored row within a tick) that holds a stream's forecasts.

    >>> block_of(130), block_of(np.array([0, 63, 64])).tolist()
    (2, [0, 0, 1])
    """
    if isinstance(stream_id, np.ndarray):
        return stream_id // BLOCK_STREAMS
    return int(stream_id) // BLOCK_STREAMS


@dataclass(frozen=True)
class PackedForecasts:
    """One row per block of streams: what :func:`pack` returns, column by column."""

    block: np.ndarray           # int64, increasing
    first_ds: np.ndarray        # datetime64[ns]: the earliest timestamp of the row
    last_ds: np.ndarray         # datetime64[ns]: the latest one
    n_values: np.ndarray        # int64: forecasts in the row
    stream_ids: list[bytes]
    steps: list[bytes]
    model_versions: list[bytes]
    ds_packed: list[bytes]
    y_hat_packed: list[bytes]

    def __len__(self) -> int:
        return len(self.block)


def _microseconds(ds) -> np.ndarray:
    ns = np.asarray(pd.DatetimeIndex(np.asarray(ds).ravel()).as_unit("ns").asi8)
    if ns.size and (ns == np.iinfo(np.int64).min).any():
        raise ValueError("forecast timestamps must not be missing (NaT)")
    if ns.size and (ns % 1000).any():
        raise ValueError("forecast timestamps finer than a microsecond cannot be stored; round ds to microseconds")
    return ns // 1000


def _split(values: np.ndarray, bounds: Sequence[int], dtype: np.dtype) -> list[bytes]:
    buffer = memoryview(np.ascontiguousarray(values, dtype=dtype).tobytes())
    edges = [b * dtype.itemsize for b in bounds]
    return [bytes(buffer[lo:hi]) for lo, hi in zip(edges[:-1], edges[1:])]


def pack(stream_id, ds, y_hat, model_version=None) -> PackedForecasts:
    """Group long forecast columns (one value per stream and timestamp, in any order) into one row per block
    of streams.

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
    if len(ids) and ids.min() < 0:
        raise ValueError(f"stream ids must not be negative, got {int(ids.min())}")
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
    versions = np.full(len(starts), NO_VERSION, dtype=np.int64)
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
        first = v[starts]
        versions = np.where(np.isnan(first), NO_VERSION, np.nan_to_num(first)).astype(np.int64)
    streams = ids[starts]
    blocks = streams // BLOCK_STREAMS
    # Row r holds the streams block_edges[r]:block_edges[r + 1] and their values value_edges[...].
    block_edges = np.append(np.flatnonzero(np.r_[True, blocks[1:] != blocks[:-1]]) if len(blocks) else
                            np.empty(0, dtype=np.int64), len(streams)).tolist()
    value_edges = bounds[block_edges].tolist()
    steps = np.diff(bounds)
    lo, hi = bounds[block_edges[:-1]], bounds[block_edges[1:]] - 1
    stamps = (us * 1000).astype("datetime64[ns]")
    first_ds = np.minimum.reduceat(stamps, lo) if len(lo) else stamps[:0]
    last_ds = np.maximum.reduceat(stamps, lo) if len(lo) else stamps[:0]
    return PackedForecasts(
        block=blocks[block_edges[:-1]], first_ds=first_ds, last_ds=last_ds, n_values=hi - lo + 1,
        stream_ids=_split(streams, block_edges, ID_DTYPE), steps=_split(steps, block_edges, STEPS_DTYPE),
        model_versions=_split(versions, block_edges, VERSION_DTYPE), ds_packed=_split(us, value_edges, DS_DTYPE),
        y_hat_packed=_split(y, value_edges, Y_DTYPE))


def _arrays(stream_ids: bytes, steps: bytes, model_versions: bytes, ds_packed: bytes, y_hat_packed: bytes
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One row's arrays, checked for consistency (a damaged row raises ``ValueError``)."""
    try:
        ids = np.frombuffer(bytes(stream_ids), dtype=ID_DTYPE)
        n = np.frombuffer(bytes(steps), dtype=STEPS_DTYPE)
        versions = np.frombuffer(bytes(model_versions), dtype=VERSION_DTYPE)
        us = np.frombuffer(bytes(ds_packed), dtype=DS_DTYPE)
        y = np.frombuffer(bytes(y_hat_packed), dtype=Y_DTYPE)
    except ValueError as exc:
        raise ValueError(f"a packed forecast row is damaged: {exc}") from None
    if not (len(ids) == len(n) == len(versions)) or int(n.sum()) != len(us) or len(us) != len(y):
        raise ValueError("a packed forecast row is damaged: its arrays disagree in length")
    return ids, n, versions, us, y


def unpack(stream_ids: Sequence[bytes], steps: Sequence[bytes], model_versions: Sequence[bytes],
           ds_packed: Sequence[bytes], y_hat_packed: Sequence[bytes]
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows from :func:`pack` back to long columns: stream ids, ``datetime64[ns]`` timestamps, values and
    model versions (``float64``, NaN for none), in the rows' order.

    Raises ``ValueError`` for a damaged row (its arrays disagree in length).
    """
    parts = [_arrays(*row) for row in zip(stream_ids, steps, model_versions, ds_packed, y_hat_packed)]
    if not parts:
        return (np.empty(0, np.int64), np.empty(0, "datetime64[ns]"), np.empty(0), np.empty(0))
    ids, n, versions, us, y = (np.concatenate(column) for column in zip(*parts))
    n = n.astype(np.int64)
    version = versions.astype(np.float64)
    version[versions == NO_VERSION] = np.nan
    return (np.repeat(ids.astype(np.int64), n), (us.astype(np.int64) * 1000).astype("datetime64[ns]"),
            y.astype(np.float64), np.repeat(version, n))


def stream_part(stream_ids: bytes, steps: bytes, model_versions: bytes, ds_packed: bytes, y_hat_packed: bytes,
                stream: int) -> tuple[np.ndarray, np.ndarray, int | None] | None:
    """One stream's forecasts in a row: timestamps (``datetime64[ns]``), values and model version (None for
    none); None when the row has no forecast of the stream."""
    ids, n, versions, us, y = _arrays(stream_ids, steps, model_versions, ds_packed, y_hat_packed)
    at = int(np.searchsorted(ids, stream))
    if at >= len(ids) or ids[at] != stream:
        return None
    lo = int(n[:at].sum())
    hi = lo + int(n[at])
    version = int(versions[at])
    return ((us[lo:hi].astype(np.int64) * 1000).astype("datetime64[ns]"), y[lo:hi].astype(np.float64),
            None if version == NO_VERSION else version)
