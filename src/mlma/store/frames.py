"""DataFrames from query rows, built column by column.

``pd.DataFrame(rows)`` reads a list of row tuples one value at a time and then guesses each column's type;
at tens of thousands of rows that costs more than the query. :func:`rows_frame` turns the rows into one
typed NumPy array per column instead (the store knows each column's type from the schema) and gives the
same frame, dtypes included, as the row-wise build (:func:`rowwise_frame`, kept as the reference the tests
and ``benchmarks/bench_store_reads.py`` compare with):

- ``INT``: int64; float64 with NaN when some values are NULL; object when all are;
- ``FLOAT``: float64 with NaN for NULL; object when all are NULL;
- ``BOOL``: bool; object when some are NULL;
- ``TEXT``: text, pandas' string dtype (object when all values are NULL).

An empty result has object columns, as before.

>>> rows = [(1, 0.5, True, "a"), (2, None, False, None)]
>>> columns = {"tick": INT, "p_value": FLOAT, "retrain": BOOL, "reason": TEXT}
>>> frame = rows_frame(rows, columns)
>>> frame.dtypes.astype(str).tolist()
['int64', 'float64', 'bool', 'str']
>>> frame.equals(rowwise_frame(rows, columns))
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

INT, FLOAT, BOOL, TEXT = "int", "float", "bool", "text"


def rowwise_frame(rows: Sequence[tuple], columns: Mapping[str, str]) -> pd.DataFrame:
    """The row-wise build: ``pd.DataFrame(rows, columns=...)`` (the reference :func:`rows_frame` equals)."""
    return pd.DataFrame(rows, columns=list(columns))


def rows_frame(rows: Sequence[tuple], columns: Mapping[str, str]) -> pd.DataFrame:
    """A frame of query ``rows`` with ``columns`` ({name: INT, FLOAT, BOOL or TEXT}), built column-wise."""
    if not len(rows):
        return pd.DataFrame([], columns=list(columns))
    values_by_column = list(zip(*rows))
    if len(values_by_column) != len(columns):
        raise ValueError(f"rows have {len(values_by_column)} values, but {len(columns)} columns are named")
    return pd.DataFrame({name: _column(values, kind)
                         for (name, kind), values in zip(columns.items(), values_by_column)})


def _column(values: tuple, kind: str) -> np.ndarray:
    if kind == TEXT:
        return _objects(values)
    if kind not in (INT, FLOAT, BOOL):
        raise ValueError(f"unknown column kind {kind!r}; known: {INT}, {FLOAT}, {BOOL}, {TEXT}")
    if None in values:
        if kind == BOOL or all(v is None for v in values):
            return _objects(values)
        return np.array(values, dtype=np.float64)  # NULL becomes NaN, as pandas makes it
    return np.array(values, dtype={INT: np.int64, FLOAT: np.float64, BOOL: np.bool_}[kind])


def _objects(values: tuple) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


#: The columns of :meth:`mlma.store.Store.verdicts` before its ``label`` (the query's order).
VERDICT_COLUMNS = {"tick": INT, "stream_id": INT, "unique_id": TEXT, "verdict": INT, "p_value": FLOAT,
                   "effect": FLOAT, "retrain": BOOL, "reason": TEXT, "loss": FLOAT, "reference_loss": FLOAT,
                   "model_version": INT}


def verdict_labels(codes: np.ndarray) -> list[str]:
    """The labels of verdict ``codes`` (:class:`mlma.policy.Verdict`), by one array lookup.

    >>> verdict_labels(np.array([0, 1, 0]))
    ['ok', 'degraded', 'ok']
    """
    from mlma.policy import Verdict  # the store does not need the policy module until it labels verdicts

    codes = np.asarray(codes)
    known = np.array(sorted(int(v) for v in Verdict))
    if codes.size and not np.isin(codes, known).all():
        bad = sorted(set(codes[~np.isin(codes, known)].tolist()))
        raise ValueError(f"unknown verdict code(s) {bad} in the store; known: {known.tolist()}")
    lookup = np.empty(known.max() + 1, dtype=object)
    for v in Verdict:
        lookup[int(v)] = v.label
    return lookup[codes.astype(np.int64)].tolist()


def rowwise_verdict_labels(codes) -> list[str]:
    """The labels one verdict at a time (the reference :func:`verdict_labels` equals)."""
    from mlma.policy import Verdict

    return [Verdict(int(c)).label for c in codes]
