"""Moving many rows at once: temporary staging tables, COPY on PostgreSQL, executemany on SQLite.

Everything the agent writes per stream (observations, verdicts, forecasts) goes through here, so that a
tick costs a handful of statements whatever the fleet's size. Values are converted column by column with
numpy rather than row by row through SQLAlchemy's type system.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import sqlalchemy as sa

from mlma.store import copybinary, serial

# Column kinds of staging tables and their SQL types per dialect.
_SQL_TYPES = {
    "sqlite": {"int": "INTEGER", "int?": "INTEGER", "float": "REAL", "ds": "TEXT", "text": "TEXT", "str": "TEXT",
               "bool": "INTEGER", "utc": "TEXT", "json": "TEXT", "blob": "BLOB"},
    "postgresql": {"int": "BIGINT", "int?": "BIGINT", "float": "DOUBLE PRECISION", "ds": "TIMESTAMP",
                   "text": "TEXT", "str": "TEXT", "bool": "BOOLEAN", "utc": "TIMESTAMPTZ", "json": "JSONB",
                   "blob": "BYTEA"},
}
# SQLAlchemy's text format for DateTime on SQLite; raw values must match it exactly for keys to compare.
_SQLITE_DS_WIDTH = 26


def ds_to_db(values, dialect: str) -> list:
    """Naive data timestamps as the driver wants them: SQLite text as SQLAlchemy writes it, or datetimes.

    Timestamps are kept to the microsecond (PostgreSQL's resolution); finer ones are refused rather than
    silently rounded, because ``ds`` is part of the key.

    >>> ds_to_db(pd.to_datetime(["2024-01-01 01:00"]), "sqlite")
    ['2024-01-01 01:00:00.000000']
    """
    us = _ds_microseconds(values).astype("datetime64[us]")
    if dialect == "sqlite":
        text = np.datetime_as_string(us, unit="us").astype(f"<U{_SQLITE_DS_WIDTH}")
        # 'YYYY-MM-DDTHH:MM:SS.ffffff' -> a space at position 10, done on the code points in place.
        if text.size:
            text.view(np.uint32).reshape(-1, _SQLITE_DS_WIDTH)[:, 10] = ord(" ")
        return text.tolist()
    return us.tolist()


def _ds_microseconds(values) -> np.ndarray:
    """Naive timestamps as ``int64`` microseconds since 1970, refusing NaT and sub-microsecond ones."""
    ns = np.asarray(pd.DatetimeIndex(np.asarray(values).ravel()).as_unit("ns").asi8)
    if ns.size and (ns == np.iinfo(np.int64).min).any():
        raise ValueError("timestamps must not be missing (NaT)")
    if ns.size and (ns % 1000).any():
        raise ValueError("timestamps finer than a microsecond cannot be stored; round ds to microseconds")
    return ns // 1000


def ds_from_db(values: Sequence, dialect: str) -> np.ndarray:
    """The inverse of :func:`ds_to_db`: a ``datetime64[ns]`` array."""
    if len(values) == 0:
        return np.empty(0, dtype="datetime64[ns]")
    # SQLite gives the text ds_to_db wrote, PostgreSQL naive datetimes: numpy parses both.
    return np.array(values, dtype="datetime64[us]").astype("datetime64[ns]")


def utc_to_db(when: dt.datetime, dialect: str):
    """A wall-clock instant as the driver wants it for raw statements (see :class:`~mlma.store.schema.UTCDateTime`)."""
    when = when.astimezone(dt.timezone.utc)
    if dialect == "sqlite":
        return when.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
    return when


def _column_values(kind: str, values, dialect: str) -> list:
    if kind == "ds":
        return ds_to_db(values, dialect)
    array = np.asarray(values)
    if kind == "int":
        return array.astype(np.int64).tolist()
    if kind == "float":
        as_float = array.astype(np.float64)
        bad = ~np.isfinite(as_float)
        if not bad.any():
            return as_float.tolist()
        # NULL for NaN: both backends would otherwise store NaN, which SQL comparisons treat oddly.
        out = as_float.astype(object)
        out[bad] = None
        return out.tolist()
    if kind == "int?":
        ints, null = _nullable_ints(array)
        out = ints.astype(object)
        out[null] = None
        return out.tolist()
    if kind == "bool":
        return array.astype(bool).tolist()
    if kind == "utc":
        return [None if v is None else utc_to_db(v, dialect) for v in values]
    if kind == "json":
        return _json_texts(values)
    if kind == "blob":
        return [bytes(v) for v in values]
    if kind == "text":
        return [None if (v is None or (isinstance(v, float) and np.isnan(v)) or v == "") else str(v)
                for v in array.tolist()]
    if kind == "str":
        return [None if v is None else str(v) for v in values]
    raise ValueError(f"unknown column kind {kind!r}")


def _json_texts(values) -> list[str]:
    """Each value as JSON text, written once per distinct object: a queued action's parameters repeat on each
    of its 100,000 streams. Each object is kept with its text, so no other object can take its id meanwhile.

    >>> same = {"version": 2}
    >>> _json_texts([same, same, {"version": 3}])
    ['{"version": 2}', '{"version": 2}', '{"version": 3}']
    """
    seen: dict[int, tuple[object, str]] = {}
    out = []
    for value in values:
        if id(value) not in seen:
            seen[id(value)] = (value, serial.dumps(value))
        out.append(seen[id(value)][1])
    return out


def _nullable_ints(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """An ``int?`` column as int64 (0 where missing) and which rows are NULL (NaN, None, ``pd.NA``)."""
    numbers = pd.to_numeric(pd.Series(values), errors="raise").astype("Float64")
    return numbers.to_numpy(np.float64, na_value=0.0).astype(np.int64), numbers.isna().to_numpy()


#: Rows converted to driver values at a time: the Python objects of a batch cost about 200 bytes a row, so
#: converting millions of rows at once (a large ingest) took gigabytes; batches keep it to tens of MB.
#: Ids per ``IN (...)`` list: PostgreSQL takes at most 65,535 bind parameters in one statement.
IDS_PER_STATEMENT = 10_000


def id_chunks(ids: Sequence[int]) -> Iterator[list[int]]:
    """``ids`` in lists of at most :data:`IDS_PER_STATEMENT`, for one ``IN (...)`` statement each.

    >>> [len(c) for c in id_chunks(range(25_000))]
    [10000, 10000, 5000]
    >>> list(id_chunks([]))
    []
    """
    ids = [int(i) for i in ids]
    for lo in range(0, len(ids), IDS_PER_STATEMENT):
        yield ids[lo:lo + IDS_PER_STATEMENT]


BATCH_ROWS = 100_000


def insert_rows(conn: sa.Connection, table: str, columns: Mapping[str, str], data: Mapping[str, object]) -> int:
    """Insert columns of equal length into ``table``: COPY on PostgreSQL, executemany on SQLite.

    ``columns`` maps column names to kinds (``int``, ``int?`` (nullable), ``float`` (NaN and infinities are
    NULL), ``ds``, ``text`` ('' is NULL), ``str`` (text as given: '' stays ''), ``bool``, ``utc`` (aware
    datetimes), ``json``, ``blob`` (bytes)); ``data`` maps the same names to arrays. Rows go in batches of :data:`BATCH_ROWS`, so memory stays
    bounded whatever the number of rows. Returns the number of rows.
    """
    names = list(columns)
    lengths = {len(data[c]) for c in names}
    if len(lengths) > 1:
        raise ValueError(f"columns for {table} differ in length: {[len(data[c]) for c in names]}")
    n = lengths.pop() if lengths else 0
    if n == 0:
        return 0
    copy_types = _binary_copy_types(conn, table, columns) if conn.dialect.name == "postgresql" else None
    for lo in range(0, n, BATCH_ROWS):
        batch = {c: _slice(data[c], lo, lo + BATCH_ROWS) for c in names}
        _insert_batch(conn, table, columns, batch, copy_types)
    return n


#: For each column kind, the PostgreSQL column types it is sent to in COPY's binary format, which converts
#: nothing on the server. Anything else (JSON, aware timestamps, a kind sent to another type) goes as text.
_BINARY_TYPES = {"int": ("int2", "int4", "int8", "float8"), "int?": ("int2", "int4", "int8", "float8"),
                 "float": ("float8",), "bool": ("bool",), "ds": ("timestamp",), "text": ("text", "varchar"),
                 "str": ("text", "varchar"), "blob": ("bytea",)}


def _binary_copy_types(conn: sa.Connection, table: str, columns: Mapping[str, str]) -> list[str] | None:
    """The PostgreSQL type names of ``table``'s ``columns`` for a binary COPY, or None to COPY as text.

    Binary COPY built from numpy arrays (:mod:`mlma.store.copybinary`) sends numbers, timestamps and bytes
    as they are in memory, where text COPY formats each value and psycopg handles one row at a time:
    several times faster for a tick's verdicts and packed forecasts.
    """
    if not set(columns.values()) <= set(_BINARY_TYPES):
        return None
    cursor = conn.connection.driver_connection.cursor()
    try:
        cursor.execute("SELECT a.attname, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
                       "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped", (table,))
        types = dict(cursor.fetchall())
    finally:
        cursor.close()
    if any(types.get(c) not in _BINARY_TYPES[kind] for c, kind in columns.items()):
        return None
    return [types[c] for c in columns]


def _binary_fields(columns: Mapping[str, str], data: Mapping[str, object], types: Sequence[str]
                   ) -> list[copybinary.Field]:
    """The columns as :class:`~mlma.store.copybinary.Field`, with the same NULL rules as
    :func:`_column_values`."""
    fields = []
    for (name, kind), pg_type in zip(columns.items(), types):
        values = data[name]
        if kind == "ds":
            fields.append(copybinary.Field(pg_type, _ds_microseconds(values)))
        elif kind in ("text", "str", "blob"):
            fields.append(copybinary.Field(pg_type, _column_values(kind, values, "postgresql")))
        elif kind == "int?":
            fields.append(copybinary.Field(pg_type, *_nullable_ints(np.asarray(values))))
        elif kind == "float":
            as_float = np.asarray(values).astype(np.float64)
            null = ~np.isfinite(as_float)
            fields.append(copybinary.Field(pg_type, np.where(null, 0.0, as_float), null))
        elif kind == "bool":
            fields.append(copybinary.Field(pg_type, np.asarray(values).astype(bool)))
        else:  # int
            fields.append(copybinary.Field(pg_type, np.asarray(values).astype(np.int64)))
    return fields


def _slice(values, lo: int, hi: int):
    if isinstance(values, pd.Series):
        return values.iloc[lo:hi]
    if isinstance(values, (np.ndarray, pd.Index, list, tuple)):
        return values[lo:hi]
    return list(values)[lo:hi]


def _insert_batch(conn: sa.Connection, table: str, columns: Mapping[str, str], data: Mapping[str, object],
                  copy_types: list[str] | None = None) -> None:
    dialect = conn.dialect.name
    names = list(columns)
    quoted = ", ".join(names)
    if dialect == "postgresql" and copy_types is not None:
        stream = copybinary.encode(_binary_fields(columns, data, copy_types))
        cursor = conn.connection.driver_connection.cursor()
        try:
            with cursor.copy(f"COPY {table} ({quoted}) FROM STDIN (FORMAT BINARY)") as copy:
                copy.write(stream)
        finally:
            cursor.close()
        return
    converted = [_column_values(columns[c], data[c], dialect) for c in names]
    n = len(converted[0]) if converted else 0
    if n == 0:
        return
    if dialect == "postgresql":
        cursor = conn.connection.driver_connection.cursor()
        try:
            with cursor.copy(f"COPY {table} ({quoted}) FROM STDIN") as copy:
                for row in zip(*converted):
                    copy.write_row(row)
        finally:
            cursor.close()
    else:
        marks = ", ".join("?" for _ in names)
        conn.exec_driver_sql(f"INSERT INTO {table} ({quoted}) VALUES ({marks})", list(zip(*converted)))


@contextlib.contextmanager
def staged(conn: sa.Connection, name: str, columns: Mapping[str, str], data: Mapping[str, object],
           *, key: Sequence[str] = ()) -> Iterator[sa.TableClause]:
    """A temporary table filled with ``data`` for the duration of the block, for set-based joins.

    Yields a lightweight table clause for Core queries. ``key`` columns get an index (a primary key),
    which the joins against large tables want.
    """
    dialect = conn.dialect.name
    types = _SQL_TYPES[dialect]
    conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
    body = ", ".join(f"{c} {types[k]}" for c, k in columns.items())
    if key:
        body += f", PRIMARY KEY ({', '.join(key)})"
    conn.exec_driver_sql(f"CREATE TEMPORARY TABLE {name} ({body})")
    insert_rows(conn, name, columns, data)
    if dialect == "postgresql":
        conn.exec_driver_sql(f"ANALYZE {name}")
    try:
        yield sa.table(name, *[sa.column(c) for c in columns])
    finally:
        # After a failed statement PostgreSQL refuses everything until rollback, which drops the table.
        if conn.in_transaction() and not _aborted(conn):
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")


def _aborted(conn: sa.Connection) -> bool:
    if conn.dialect.name != "postgresql":
        return False
    import psycopg

    status = conn.connection.driver_connection.info.transaction_status
    return status == psycopg.pq.TransactionStatus.INERROR
