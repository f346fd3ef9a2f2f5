"""An ingest's accepted rows packed as three binary arrays: one row of ``observation_batches`` per ingest.

The observation window (:mod:`mlma.store.window`) learns each tick's new rows. Read back from the
``observations`` table they arrive as one Python tuple per row (a day of 10,000 hourly streams is 240,000
tuples, 0.7 s to fetch and convert); packed, the same rows are three byte strings that numpy reads without
a copy. The ``observations`` table stays the truth: a batch is a copy kept for the newest
:data:`KEEP_INGESTS` ingests, and none is kept for an ingest of more than :data:`MAX_ROWS` rows.

The format, fixed (migration 0008 creates the table; only this module packs and unpacks it):

- ``stream_ids``: little-endian ``int64`` stream ids;
- ``ds``: little-endian ``int64`` microseconds since 1970-01-01 (the data's naive time, as the ``ds``
  columns hold it);
- ``y``: little-endian ``float64`` values;

one element per accepted row of the ingest, in the order the ingest wrote them, with ``n_rows`` giving the
count (a check against a damaged row).

>>> import pandas as pd
>>> batch = pack(np.array([3, 1]), pd.to_datetime(["2024-01-01 01:00", "2024-01-01 00:00"]).values,
...              np.array([2.5, -1.0]))
>>> batch.n_rows, len(batch.stream_ids), len(batch.ds)
(2, 16, 16)
>>> sid, ds, y = unpack(batch.n_rows, batch.stream_ids, batch.ds, batch.y)
>>> sid.tolist(), [str(t) for t in ds], y.tolist()
([3, 1], ['2024-01-01T01:00:00.000000000', '2024-01-01T00:00:00.000000000'], [2.5, -1.0])
>>> unpack(3, batch.stream_ids, batch.ds, batch.y)
Traceback (most recent call last):
...
ValueError: a packed observation batch is damaged: n_rows is 3 but its arrays hold 2, 2 and 2 elements
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SID_DTYPE = np.dtype("<i8")
DS_DTYPE = np.dtype("<i8")
Y_DTYPE = np.dtype("<f8")
#: Batches of the newest this many ingests (by id) are kept; older ones are deleted by the ingest that
#: makes them older (a window more than this many ingests behind reads the rows instead).
KEEP_INGESTS = 32
#: No batch for an ingest of more rows than this (a backfill): it would double the write of a large file
#: for a copy that only a window already built from it could use (96 MB at 4 M rows).
MAX_ROWS = 4_000_000


@dataclass(frozen=True)
class PackedBatch:
    """One ``observation_batches`` row's content."""

    n_rows: int
    stream_ids: bytes
    ds: bytes
    y: bytes


def pack(stream_id: np.ndarray, ds: np.ndarray, y: np.ndarray) -> PackedBatch:
    """Pack an ingest's rows (stream ids, ``datetime64`` timestamps to the microsecond, values).

    Raises ``ValueError`` when the columns differ in length.
    """
    sid = np.asarray(stream_id)
    stamps = np.asarray(ds).astype("datetime64[us]").view(np.int64)
    values = np.asarray(y)
    if not (len(sid) == len(stamps) == len(values)):
        raise ValueError(f"batch columns differ in length: {len(sid)} stream ids, {len(stamps)} timestamps, "
                         f"{len(values)} values")
    return PackedBatch(len(sid), sid.astype(SID_DTYPE, copy=False).tobytes(),
                       stamps.astype(DS_DTYPE, copy=False).tobytes(), values.astype(Y_DTYPE, copy=False).tobytes())


def unpack(n_rows: int, stream_ids: bytes, ds: bytes, y: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A packed batch back to stream ids (int64), ``datetime64[ns]`` timestamps and values (float64).

    Raises ``ValueError`` when an array's length disagrees with ``n_rows`` (a damaged row).
    """
    sizes = [len(b) // d.itemsize if len(b) % d.itemsize == 0 else -1
             for b, d in ((stream_ids, SID_DTYPE), (ds, DS_DTYPE), (y, Y_DTYPE))]
    if sizes != [int(n_rows)] * 3:
        raise ValueError(f"a packed observation batch is damaged: n_rows is {n_rows} but its arrays hold "
                         f"{sizes[0]}, {sizes[1]} and {sizes[2]} elements")
    sid = np.frombuffer(stream_ids, dtype=SID_DTYPE).astype(np.int64)
    us = np.frombuffer(ds, dtype=DS_DTYPE).astype(np.int64)
    values = np.frombuffer(y, dtype=Y_DTYPE).astype(np.float64)
    return sid, us.astype("datetime64[us]").astype("datetime64[ns]"), values
