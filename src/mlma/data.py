"""The data contract: reading long frames, validating them, frequencies and the agent's ticks.

Every stream of a fleet arrives as rows of one long frame (the Nixtla convention): ``unique_id`` (str),
``ds`` (tz-naive ``datetime64[ns]``), ``y`` (float64) and optional exogenous columns, sorted by
``unique_id`` then ``ds``. :func:`read_frame` brings a file or a frame into that shape by renaming columns,
:func:`validate` checks and repairs it and says what it did (a :class:`ValidationReport` of
:class:`Finding` objects: nothing is repaired or dropped silently) and :func:`infer_frequency` finds the
fleet's :class:`Frequency`. The frequency, its season and the agent's ticks (:class:`TickGrid`,
:func:`make_tick_grid`) belong to :mod:`mlma.calendar` and are re-exported here.

Examples
--------
>>> import pandas as pd
>>> raw = pd.DataFrame({
...     "zone": ["b", "b", "a", "a", "a"],
...     "hour": ["2024-01-01 01:00", "2024-01-01 00:00", "2024-01-01 00:00",
...              "2024-01-01 01:00", "2024-01-01 02:00"],
...     "orders": [5, 4, 1, 2, 3],
... })
>>> checked = validate(read_frame(raw, id_col="zone", time_col="hour", target_col="orders"))
>>> checked.frame
  unique_id                  ds    y
0         a 2024-01-01 00:00:00  1.0
1         a 2024-01-01 01:00:00  2.0
2         a 2024-01-01 02:00:00  3.0
3         b 2024-01-01 00:00:00  4.0
4         b 2024-01-01 01:00:00  5.0
>>> checked.freq.alias, checked.freq.season_length
('h', 24)
>>> [f.code for f in checked.report.findings]
['unsorted', 'short-series', 'summary']
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import math
import os
import re
import unicodedata
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset

# The calendar (frequency, season rule, tick grid) lives in mlma.calendar; its names are re-exported here
# because the data contract speaks of them (validate returns a Frequency) and many callers import them from
# mlma.data.
from mlma.calendar import (
    _DAY,
    _EPOCH_WEEKDAY,
    _HOUR,
    _MINUTE,
    _NAT,
    _SECOND,
    _WEEK,
    Frequency,
    TickGrid,
    _alias_from_spec,
    _month_position,
    _Spec,
    _to_ns,
    grid_offsets,
    make_tick_grid,
    on_tick_grid,
)
from mlma.visible import NAME_EDGES, UNSTORABLE_IN_NAME, unstorable

__all__ = [
    "CANONICAL_COLUMNS",
    "CLOCK_WORDS",
    "DataError",
    "FleetContext",
    "FrequencyPending",
    "file_columns",
    "Finding",
    "Frequency",
    "IngestLimits",
    "TickGrid",
    "ValidatedData",
    "ValidationReport",
    "infer_frequency",
    "make_tick_grid",
    "read_frame",
    "read_timestamp",
    "validate",
]

ID, TIME, TARGET = "unique_id", "ds", "y"
CANONICAL_COLUMNS = (ID, TIME, TARGET)
SEVERITIES = ("error", "dropped", "repaired", "warning", "info")

_WEEKDAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MAX_EXAMPLES = 3
_CSV_SUFFIXES = (".csv", ".txt")
_COMPRESSION_SUFFIXES = (".gz", ".bz2", ".zip", ".xz", ".zst")
_PARQUET_SUFFIXES = (".parquet", ".pq")
# Attributes read_frame leaves on its result so that validate can name the file and its line numbers.
_ATTR_SOURCE = "mlma.source"
_ATTR_FIRST_LINE = "mlma.first_data_line"
_ATTR_DROPPED = "mlma.dropped_columns"
#: Cells of numeric columns that hold no number: column -> (positions, the first such cell's text).
_ATTR_UNREAD = "mlma.unread_values"
_ATTR_TIME_COL = "mlma.time_col"
# An observation window is only inferred from streams that span this many cycles (days or weeks):
# with fewer, a slot that is never observed may be chance rather than a schedule.
_WINDOW_MIN_CYCLES = 3


# --------------------------------------------------------------------------------------------------------
# Errors and findings
# --------------------------------------------------------------------------------------------------------


class DataError(ValueError):
    """Input data that breaks the data contract.

    Parameters
    ----------
    message
        What is wrong, naming the file, column, rows and streams concerned.
    source
        The file (or other source) the data came from, if known.
    column
        The column concerned, if one is.
    rows
        Numbers of the rows concerned: 1-based line numbers for CSV files (data row ``i``, counted from
        0, is line ``i + 2``), otherwise index labels of the frame (0-based positions for files).
    unique_id
        The stream concerned, if exactly one is.
    streams
        All streams concerned.
    report
        The validation report collected so far, when the error comes from :func:`validate`.

    Examples
    --------
    >>> err = DataError("bad dates", source="sales.csv", column="ds", rows=[4, 9])
    >>> err.rows.tolist(), isinstance(err, ValueError)
    ([4, 9], True)
    """

    def __init__(self, message: str, *, source: str | None = None, column: str | None = None,
                 rows: Sequence[int] | np.ndarray | None = None, unique_id: str | None = None,
                 streams: Sequence[str] = (), report: ValidationReport | None = None) -> None:
        super().__init__(message)
        self.source = source
        self.column = column
        self.rows = np.asarray(rows if rows is not None else [], dtype=np.int64)
        self.unique_id = unique_id
        self.streams = tuple(streams)
        self.report = report


class FrequencyPending(DataError):
    """The data cannot tell its frequency yet: every stream has a single timestamp so far (a daily panel fed a
    day per file). Not broken data: a later file settles it."""


@dataclass(frozen=True)
class Finding:
    """One thing :func:`validate` noticed, repaired or dropped.

    Attributes
    ----------
    code
        A stable, short identifier (see ``docs/data.md`` for the list), e.g. ``"duplicate-identical"``.
    severity
        ``"error"`` (the data cannot be used as is), ``"dropped"`` (rows were removed), ``"repaired"``
        (rows were changed or reordered, no information lost), ``"warning"`` (usable, but look) or
        ``"info"``.
    message
        A readable sentence with a few examples and counts.
    unique_id
        The stream concerned when exactly one is, else None.
    n_rows
        How many rows are concerned (for ``"dropped"``: how many were removed).
    examples
        At most a few concrete examples, readable on their own.
    column
        The column concerned, if one is.
    streams
        Every stream concerned (may be long; not shown in the repr).
    rows
        Every row concerned, numbered as in :class:`DataError` (not shown in the repr).
    """

    code: str
    severity: str
    message: str
    unique_id: str | None = None
    n_rows: int = 0
    examples: tuple[str, ...] = ()
    column: str | None = None
    streams: tuple[str, ...] = field(default=(), repr=False)
    rows: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int64), repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, got {self.severity!r}")


@dataclass(frozen=True)
class ValidationReport:
    """Everything :func:`validate` found, in the order it found it.

    Examples
    --------
    >>> report = ValidationReport((Finding("gaps", "warning", "3 rows missing", unique_id="a", n_rows=3),))
    >>> [f.code for f in report.warnings], report.errors
    (['gaps'], ())
    >>> print(report)
    data: 1 finding (1 warning)
      [warning] gaps: 3 rows missing
    """

    findings: tuple[Finding, ...] = ()
    source: str | None = None
    n_rows_in: int = 0
    n_rows_out: int = 0

    @property
    def errors(self) -> tuple[Finding, ...]:
        """Findings of severity ``"error"``."""
        return self._of("error")

    @property
    def warnings(self) -> tuple[Finding, ...]:
        """Findings of severity ``"warning"``."""
        return self._of("warning")

    @property
    def codes(self) -> tuple[str, ...]:
        """The codes of all findings, in order."""
        return tuple(f.code for f in self.findings)

    def by_code(self, code: str) -> tuple[Finding, ...]:
        """Findings with the given code."""
        return tuple(f for f in self.findings if f.code == code)

    def _of(self, severity: str) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.severity == severity)

    def to_frame(self) -> pd.DataFrame:
        """One row per finding: code, severity, unique_id, n_streams, n_rows, column, message, examples."""
        columns = ["code", "severity", "unique_id", "n_streams", "n_rows", "column", "message", "examples"]
        rows = [{"code": f.code, "severity": f.severity, "unique_id": f.unique_id, "n_streams": len(f.streams),
                 "n_rows": f.n_rows, "column": f.column, "message": f.message,
                 "examples": "; ".join(f.examples)} for f in self.findings]
        return pd.DataFrame(rows, columns=columns)

    def __str__(self) -> str:
        counts = {s: len(self._of(s)) for s in SEVERITIES}
        tally = ", ".join(f"{n} {s if s in ('dropped', 'repaired', 'info') else s + ('s' if n > 1 else '')}"
                          for s, n in counts.items() if n)
        n = len(self.findings)
        lines = [f"{self.source or 'data'}: {n} finding{'s' if n != 1 else ''}" + (f" ({tally})" if n else "")]
        order = {s: i for i, s in enumerate(SEVERITIES)}
        for f in sorted(self.findings, key=lambda f: order[f.severity]):
            lines.append(f"  [{f.severity}] {f.code}: {f.message}")
        return "\n".join(lines)

    def raise_if_errors(self) -> None:
        """Raise a :class:`DataError` describing every error finding, if there is any."""
        errors = self.errors
        if not errors:
            return
        first = errors[0]
        where = f"{self.source}: " if self.source else ""
        if len(errors) == 1:
            message = where + first.message
        else:
            message = where + f"{len(errors)} problems:\n" + "\n".join(f"  - {f.message}" for f in errors)
        raise DataError(message, source=self.source, column=first.column, rows=first.rows,
                        unique_id=first.unique_id, streams=first.streams, report=self)


@dataclass(frozen=True)
class ValidatedData:
    """A frame that honours the data contract, its frequency and the report of what was done to it.

    ``freq`` is None only when :func:`validate` was given a ``context`` without a frequency and the data
    cannot tell it yet (every stream has a single row): a project's first daily file, for instance.
    """

    frame: pd.DataFrame
    freq: Frequency | None
    report: ValidationReport


# --------------------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------------------


def _source_suffix(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in _COMPRESSION_SUFFIXES:
        suffixes = suffixes[:-1]
    return suffixes[-1] if suffixes else ""


def is_parquet(path: str | os.PathLike) -> bool:
    """Whether mlma reads the file as Parquet (``.parquet`` or ``.pq``, in any case), the rest as CSV.

    >>> is_parquet("a.PQ"), is_parquet("a.parquet"), is_parquet("a.csv.gz")
    (True, True, False)
    """
    return _source_suffix(Path(path)) in _PARQUET_SUFFIXES


def _is_polars(obj: Any) -> bool:
    return type(obj).__module__.split(".")[0] == "polars"


def read_frame(source: Any, *, id_col: str | Sequence[str] | None = ID, time_col: str = TIME,
               target_col: str = TARGET, exog: Sequence[str] | None = None) -> pd.DataFrame:
    """Read a long frame and rename its columns to ``unique_id, ds, y``.

    Values are not parsed or checked here (that is :func:`validate`'s job, which names the bad rows),
    except that the stream key is read as text so that ids such as ``"007"`` keep their zeros.

    Parameters
    ----------
    source
        A pandas DataFrame, a polars DataFrame (or LazyFrame), or the path of a CSV file (``.csv``,
        optionally compressed: ``.csv.gz``...) or a Parquet file (``.parquet``, ``.pq``).
    id_col
        The column naming the stream; a list of columns is joined with ``" / "`` into one key; None when
        the data holds a single stream (its ``unique_id`` is then ``"series"``).
    time_col, target_col
        The timestamp and target columns.
    exog
        Exogenous columns to keep, in this order. None keeps every other column that is numeric or
        boolean and drops the rest (text labels such as a region name): validate reports them as
        ``columns-dropped``. ``[]`` keeps none.

    Returns
    -------
    pandas.DataFrame
        Columns ``unique_id, ds, y`` and the exogenous ones, rows in the source's order, a fresh
        RangeIndex. ``attrs`` remember the source file and its first data line for :func:`validate`.

    Raises
    ------
    DataError
        When a configured column is missing or would collide with a canonical name, or when a column name
        appears more than once (in the CSV header as written, the Parquet schema or the frame).
    ValueError
        For a file suffix other than CSV or Parquet.

    Examples
    --------
    >>> import pandas as pd
    >>> raw = pd.DataFrame({"store": [1, 1], "day": ["2024-01-01", "2024-01-02"], "sales": [3, 4],
    ...                     "price": [1.5, 1.6], "note": ["x", "y"]})
    >>> read_frame(raw, id_col="store", time_col="day", target_col="sales").columns.tolist()
    ['unique_id', 'ds', 'y', 'price']
    >>> read_frame(raw, id_col="shop", time_col="day", target_col="sales")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    mlma.data.DataError: input frame: missing column 'shop' (id_col); columns present: 'store', 'day', ...
    """
    if isinstance(id_col, str) or id_col is None:
        id_cols: list[str] = [] if id_col is None else [id_col]
    else:
        id_cols = list(id_col)
        if not id_cols:
            raise ValueError("id_col must name at least one column, or be None for a single stream")
    for name, value in (("time_col", time_col), ("target_col", target_col)):
        if not isinstance(value, str) or not value:
            raise ValueError(f"{name} must be a column name, got {value!r}")
    if exog is not None and isinstance(exog, str):
        raise ValueError(f"exog must be a list of column names, got the string {exog!r}")

    label: str | None = None
    first_line: int | None = None
    if isinstance(source, pd.DataFrame):
        frame = source
    elif _is_polars(source):
        frame = (source.collect() if hasattr(source, "collect") else source).to_pandas()
        label = None
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = str(source)
        suffix = _source_suffix(path)
        if suffix in _CSV_SUFFIXES:
            frame = _read_csv(path, id_cols)
            first_line = 2
        elif suffix in _PARQUET_SUFFIXES:
            check_column_names(file_columns(path), label)
            frame = pd.read_parquet(path)
        else:
            raise ValueError(f"cannot read {label}: unknown file type {suffix or '(no suffix)'!r}; "
                             f"use .csv (optionally .csv.gz, .csv.zip ...) or .parquet")
    else:
        raise TypeError(f"source must be a pandas or polars DataFrame or a CSV/Parquet path, "
                        f"got {type(source).__name__}")

    where = label or "input frame"
    check_column_names(list(frame.columns), where, source=label)
    index_names = [n for n in frame.index.names if n is not None]
    wanted = [*id_cols, time_col, target_col, *(exog or [])]
    moved_index = any(c not in frame.columns and c in index_names for c in wanted)
    if moved_index:
        frame = frame.reset_index()
    roles = [(c, "id_col") for c in id_cols] + [(time_col, "time_col"), (target_col, "target_col")]
    roles += [(c, "exog") for c in (exog or [])]
    missing = [(c, role) for c, role in roles if c not in frame.columns]
    if missing:
        present = ", ".join(repr(str(c)) for c in frame.columns)
        named = ", ".join(f"{c!r} ({role})" for c, role in missing)
        noun = "column" if len(missing) == 1 else "columns"
        raise DataError(f"{where}: missing {noun} {named}; columns present: {present}",
                        source=label, column=missing[0][0])

    used = {*id_cols, time_col, target_col}
    for canonical, own in ((ID, id_cols[0] if len(id_cols) == 1 else None), (TIME, time_col),
                           (TARGET, target_col)):
        if canonical in frame.columns and canonical != own and canonical not in used:
            raise DataError(f"{where}: column {canonical!r} already exists and would clash with the column "
                            f"renamed to {canonical!r}; rename or drop it first", source=label,
                            column=canonical)

    for c, role in roles:
        nested = _first_nested(frame[c])
        if nested is not None:
            raise DataError(f"{where}: column {str(c)!r} ({role}) holds nested values (lists, maps or structs, e.g. "
                            f"{_short(nested)}), not numbers, text or timestamps; flatten it where the file is made",
                            source=label, column=str(c))
        if c == target_col and pd.api.types.is_bool_dtype(frame[c].dtype):
            raise DataError(f"{where}: column {str(c)!r} (target_col) holds true/false values, not numbers; a "
                            f"forecast target is a number (write 0 and 1 if that is what is meant)", source=label,
                            column=str(c))
    extra = [c for c in frame.columns if c not in used]
    dropped: dict[str, str] = {}
    numbers: dict[Any, pd.Series] = {}
    unread: dict[str, tuple[np.ndarray, str]] = {}
    if exog is None:
        keep = []
        for c in extra:
            if pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]):
                keep.append(c)
                if pd.api.types.is_float_dtype(frame[c]):  # inf is no value: read as missing, and said
                    values = frame[c].to_numpy(dtype=np.float64, na_value=np.nan)
                    bad = np.flatnonzero(np.isinf(values))
                    if bad.size:
                        numbers[c] = pd.Series(np.where(np.isinf(values), np.nan, values), index=frame.index)
                        unread[str(c)] = (bad, str(frame[c].iloc[bad[0]]))
                continue
            nested = _first_nested(frame[c])
            if nested is not None:  # a struct or list column of a Spark or BigQuery export: no driver
                dropped[str(c)] = _short(nested)
                continue
            # A column of numbers with a few cells of text (a typo, "n/a") keeps its numbers; the cells that are
            # no number are reported. A column with more text (a region's name, codes such as "0042"/"A17",
            # "3,5" decimals) is dropped.
            values, filled = _numbers_in(frame[c])
            parsed = np.isfinite(values.to_numpy())
            if parsed.any() and parsed.sum() >= 0.95 * filled.sum():
                keep.append(c)
                numbers[c] = values
                bad = np.flatnonzero(filled & ~parsed)
                if bad.size:
                    unread[str(c)] = (bad, str(frame[c].iloc[bad[0]]))
            else:
                first = np.flatnonzero(filled)
                dropped[str(c)] = str(frame[c].iloc[first[0]]) if first.size else ""
    else:
        keep = list(exog)
        duplicate = {c for c in keep if keep.count(c) > 1}
        if duplicate:
            raise ValueError(f"exog lists {sorted(duplicate)} more than once")
        clash = [c for c in keep if c in used or c in CANONICAL_COLUMNS]
        if clash:
            raise ValueError(f"exog must not include the id, time or target columns, got {clash}")

    if not id_cols:
        ids = pd.Series("series", index=frame.index, dtype="str")
    elif len(id_cols) == 1:
        ids = frame[id_cols[0]]
    else:
        ids = frame[id_cols[0]].astype("str")
        for c in id_cols[1:]:
            ids = ids + " / " + frame[c].astype("str")
    out = pd.DataFrame({ID: ids.array, TIME: frame[time_col].array, TARGET: frame[target_col].array})
    for c in keep:
        out[c] = numbers[c].to_numpy(dtype=np.float64) if c in numbers else frame[c].array
    if isinstance(source, pd.DataFrame) and not moved_index:
        # Keep the caller's index labels so that validate can name rows the way the caller knows them.
        out.index = frame.index
    out.attrs = {_ATTR_SOURCE: label, _ATTR_FIRST_LINE: first_line, _ATTR_DROPPED: dropped,
                 _ATTR_UNREAD: unread, _ATTR_TIME_COL: time_col}
    return out


def _first_nested(values: pd.Series) -> Any:
    """The first cell of ``values`` that is a list, map, array or struct (a Parquet nested column), or None.

    Only a column that pandas calls ``mixed`` is looked through cell by cell.

    >>> _first_nested(pd.Series([None, {"a": 1}], dtype=object)), _first_nested(pd.Series(["a", 1.5]))
    ({'a': 1}, None)
    """
    if values.dtype != object or pd.api.types.infer_dtype(values, skipna=True) != "mixed":
        return None
    return next((v for v in values if isinstance(v, (list, tuple, dict, set, np.ndarray))), None)


def _short(value: Any, limit: int = 40) -> str:
    """``repr(value)``, cut to ``limit`` characters for a message."""
    text = repr(value.tolist() if isinstance(value, np.ndarray) else value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _numbers_in(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """The numbers of a column of text (NaN where a cell is none; infinite ones are no number either), and
    which cells are filled (not missing or blank). Each distinct text is read once.

    >>> numbers, filled = _numbers_in(pd.Series(["1.5", "abc", None, " ", "inf"]))
    >>> numbers.tolist(), filled.tolist()
    ([1.5, nan, nan, nan, nan], [True, True, False, False, True])
    """
    if isinstance(values.dtype, pd.CategoricalDtype):
        codes, distinct = values.cat.codes.to_numpy(), pd.Series(values.cat.categories.astype(object))
    else:
        codes, uniques = pd.factorize(values.astype(object), use_na_sentinel=True)
        distinct = pd.Series(uniques, dtype=object)
    parsed = pd.to_numeric(distinct, errors="coerce").to_numpy(dtype=np.float64, copy=True)
    parsed[~np.isfinite(parsed)] = np.nan
    blank = distinct.astype(str).str.strip().eq("").to_numpy(dtype=bool)
    have = codes >= 0
    numbers = np.full(len(values), np.nan)
    numbers[have] = parsed[codes[have]]
    filled = have.copy()
    filled[have] = ~blank[codes[have]]
    return pd.Series(numbers, index=values.index), filled


def why_not_attribute_name(name: Any) -> str | None:
    """Why ``name`` cannot name a stream attribute, or None when it can: groups are written ``key=value``
    (``--group city=Berlin``, ``?attr=city=Berlin``), so a name holding ``=`` would be split in the wrong place
    and the group could never be chosen; an empty name chooses nothing.

    >>> why_not_attribute_name("city"), why_not_attribute_name("reg=ion")
    (None, "it holds '=', which separates an attribute's name from its value in a group (city=Berlin)")
    """
    text = str(name)
    if not text.strip():
        return "it is empty"
    if "=" in text:
        return "it holds '=', which separates an attribute's name from its value in a group (city=Berlin)"
    return None


def check_column_names(names: Sequence[Any], where: str, source: str | None = None) -> None:
    """Raise a :class:`DataError` when a column name appears more than once (positions are 1-based), or holds a
    control character (a driver's name is stored: PostgreSQL's text takes no NUL).

    pandas reads a CSV header ``y,...,y`` as ``y`` and ``y.1``, and the second would pass as a driver: which of
    the two is the target is the sender's to say. Empty names (a trailing comma) are not names and not checked.
    """
    for i, name in enumerate(names, start=1):
        found = UNSTORABLE_IN_NAME.search(str(name))
        if found is not None:
            raise DataError(f"{where}: the name of column {i} ({str(name)!r}) holds {unstorable(found.group())}; "
                            "give the column a plain name", source=source, column=str(name))
    seen: dict[str, list[int]] = {}
    for i, name in enumerate(names, start=1):
        if name is None or (isinstance(name, float) and math.isnan(name)) or str(name) == "":
            continue
        seen.setdefault(str(name), []).append(i)
    repeated = {name: at for name, at in seen.items() if len(at) > 1}
    if not repeated:
        return
    parts = [f"{name!r} (columns {', '.join(str(i) for i in at)})" for name, at in repeated.items()]
    noun = "name" if len(repeated) == 1 else "names"
    raise DataError(f"{where}: duplicate column {noun} {', '.join(parts)}; each column needs its own name, "
                    f"so that which one is the target (or a driver) is not guessed", source=source,
                    column=next(iter(repeated)))


def drop_nameless_columns(frame: pd.DataFrame, names: Sequence[Any], where: str, first_line: int = 2) -> pd.DataFrame:
    """``frame`` (a CSV file's, whose header is ``names``) without its columns whose header cell is empty; one of
    them that holds a value refuses the file (:class:`DataError`, naming the column's position and line).

    pandas names such a column by its position (``Unnamed: 3``): a comma at the end of every line makes an empty
    one, which is no column; one with values would have been stored as a driver (or an attribute) of that made-up
    name, which changes when a column is added before it.

    >>> frame = pd.DataFrame({"unique_id": ["a"], "y": [1.0], "Unnamed: 2": [None]})
    >>> drop_nameless_columns(frame, ["unique_id", "y", ""], "f.csv").columns.tolist()
    ['unique_id', 'y']
    >>> drop_nameless_columns(frame.assign(**{"Unnamed: 2": [2.5]}), ["unique_id", "y", ""], "f.csv")
    Traceback (most recent call last):
    ...
    mlma.data.DataError: f.csv: column 3 of the header has no name but holds values (line 2: '2.5'); name it in the header, or remove it
    """
    nameless = [i for i, name in enumerate(names) if not str(name).strip()]
    if not nameless or len(names) != len(frame.columns):
        return frame
    for i in nameless:
        column = frame.iloc[:, i]
        # Cells of spaces are empty too (a line ending ", "); a number is shown as written, 7 not 7.0.
        shown = column.map(lambda v: None if pd.isna(v) else _number_text(v) if isinstance(v, float) else str(v))
        filled = np.flatnonzero((shown.notna() & (shown.str.strip() != "")).to_numpy(dtype=bool))
        if len(filled):
            raise DataError(f"{where}: column {i + 1} of the header has no name but holds values (line "
                            f"{filled[0] + first_line}: {shown.iloc[filled[0]]!r}); name it in the header, or "
                            "remove it", source=where)
    return frame.drop(columns=frame.columns[nameless])


def file_columns(path: str | os.PathLike) -> list:
    """A CSV or Parquet file's column names as written, before pandas renames a repeated one (``y``, ``y.1``)
    or fails on it: the Parquet schema (of a file, or of a dataset folder), or the CSV file's first line."""
    path = Path(path)
    if _source_suffix(path) in _PARQUET_SUFFIXES:
        return _parquet_columns(path)
    with csv_errors_named(path):
        header = pd.read_csv(path, header=None, nrows=1, dtype=str, keep_default_na=False)
    return header.iloc[0].tolist() if len(header) else []


@contextlib.contextmanager
def csv_errors_named(path: Path):
    """pandas' own words for a CSV file it cannot parse ("No columns to parse from file", "EOF inside string")
    named no file: say which, and what is wrong in a user's terms. A compressed file cut short or damaged (a
    copy that stopped part way) raised EOFError, which the CLI turned into a bare "Aborted.", or a decompressor's
    own error with a traceback."""
    import lzma
    import zipfile
    import zlib

    import zstandard
    from pandas.io.common import infer_compression

    try:
        if infer_compression(str(path), "infer") == "zstd":
            _check_zstd_whole(Path(path))  # pandas reads a .zst cut short as the rows before the cut, in silence
        yield
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty (not even a header line)", source=str(path)) from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: cannot read it as CSV ({exc}); a quote left open, or a line with more fields "
                        "than the header?", source=str(path)) from None
    except (EOFError, OSError, zlib.error, lzma.LZMAError, zipfile.BadZipFile, zstandard.ZstdError) as exc:
        compression = infer_compression(str(path), "infer")
        if compression is None or isinstance(exc, (FileNotFoundError, PermissionError, IsADirectoryError)):
            raise
        raise DataError(f"{path}: the {compression}-compressed file is damaged or incomplete (cut short by a copy "
                        f"that stopped part way?): {type(exc).__name__}: {exc or 'the data end too soon'}",
                        source=str(path)) from None


def _check_zstd_whole(path: Path) -> None:
    """Raise ``EOFError`` when a zstd file stops inside a frame (a copy cut short): its decompressor, which
    pandas reads with, returns what there is and says nothing. Read once per version of the file (its size and
    time), as the reads of its header and its rows each ask."""
    stat = path.stat()
    if _zstd_whole(str(path), stat.st_size, stat.st_mtime_ns):
        return
    raise EOFError("the data end inside a zstd frame")


@functools.lru_cache(maxsize=16)
def _zstd_whole(path: str, size: int, mtime_ns: int) -> bool:
    import zstandard

    frame, started = zstandard.ZstdDecompressor().decompressobj(), False
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            while block:  # a file may hold several frames, one after another
                frame.decompress(block)  # the text itself is not kept: pandas reads it again
                started = True
                if not frame.eof:
                    break
                block, frame, started = frame.unused_data, zstandard.ZstdDecompressor().decompressobj(), False
    return not started or frame.eof


def _parquet_columns(path: Path) -> list[str]:
    """The column names of a Parquet file (or dataset folder) as stored (pandas cannot read a file that repeats
    one)."""
    try:
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        return []
    # A folder (a dataset written by Spark, Dask or pyarrow in parts) has one schema for all its parts.
    try:
        schema = pq.ParquetDataset(path).schema if path.is_dir() else pq.read_schema(path)
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError: "magic bytes not found"
        raise ValueError(f"{path}: cannot read it as Parquet: {exc}") from None
    meta = schema.pandas_metadata or {}
    index_columns = {c for c in meta.get("index_columns", []) if isinstance(c, str)}
    return [n for n in schema.names if n not in index_columns]


#: Rows read from a CSV file at a time; each chunk's text columns become categoricals at once, so reading
#: a file costs about 20 bytes a row rather than a Python string per cell (a 230 MB file needed 3.5 GB).
CSV_CHUNK_ROWS = 500_000


def _read_csv(path: Path, id_cols: list[str], chunk_rows: int | None = None) -> pd.DataFrame:
    """A CSV file's rows, its header checked (:func:`check_column_names`) and its columns without a name dropped
    (:func:`drop_nameless_columns`); ids in ``id_cols`` as text."""
    try:
        with csv_errors_named(path):
            return _read_utf8_csv(path, id_cols, chunk_rows)
    except UnicodeDecodeError as exc:
        line = _first_line_not_utf8(path)
        why, encoding = _likely_encoding(path)
        raise DataError(f"{path}: {'line ' + str(line) + ' is' if line else 'it is'} not UTF-8 text (byte "
                        f"{exc.object[exc.start:exc.start + 1]!r}{why}); save the file as UTF-8 (a spreadsheet's "
                        f"'CSV UTF-8', or `iconv -f {encoding} -t utf-8`) and ingest it again; nothing was written",
                        source=str(path), rows=[line] if line else None) from None


def _csv_cell(path: Path, column: Any, row: int) -> str | None:
    """The text of ``column`` in data row ``row`` (0-based) of a CSV file as written (a number too large to read,
    ``1e400``, is read as inf), for a message; None if it cannot be read again."""
    try:
        cell = pd.read_csv(path, usecols=[column], dtype=str, skiprows=range(1, row + 1), nrows=1,
                           keep_default_na=False)[column]
    except (OSError, ValueError, KeyError):
        return None
    return str(cell.iloc[0]) if len(cell) else None


def _first_line_not_utf8(path: Path) -> int | None:
    """The 1-based line of a CSV file (plain or compressed as pandas reads it) where UTF-8 decoding fails."""
    import codecs

    from pandas.io.common import get_handle

    decoder = codecs.getincrementaldecoder("utf-8")()
    line = 1
    try:
        with get_handle(path, "rb", compression="infer", is_text=False) as handle:
            while block := handle.handle.read(1 << 16):
                try:
                    decoder.decode(block)
                except UnicodeDecodeError as exc:
                    return line + block.count(b"\n", 0, exc.start)
                line += block.count(b"\n")
    except OSError:
        return None
    return None


def _likely_encoding(path: Path) -> tuple[str, str]:
    """What a file that is not UTF-8 likely is, said and as iconv names it: UTF-16 by its byte-order mark, else
    a Windows code page (what spreadsheets write by default)."""
    from pandas.io.common import get_handle

    try:
        with get_handle(path, "rb", compression="infer", is_text=False) as handle:  # a .csv.gz's own bytes
            start = handle.handle.read(2)
    except OSError:
        start = b""
    if start in (b"\xff\xfe", b"\xfe\xff"):
        return ": it begins with a UTF-16 byte-order mark, so it is UTF-16", "utf-16"
    return ", as a Windows code page such as cp1252 writes letters like ü or é", "cp1252"


def _read_utf8_csv(path: Path, id_cols: list[str], chunk_rows: int | None = None) -> pd.DataFrame:
    def options(header: pd.Index) -> dict:
        # Missing-value markers apply to every column except the stream key, where "NA" may be a real id
        # (Namibia) and must stay text.
        defaults = list(pd._libs.parsers.STR_NA_VALUES)  # type: ignore[attr-defined]
        return dict(dtype={c: "str" for c in id_cols if c in header}, keep_default_na=False,
                    na_values={c: ([] if c in id_cols else defaults) for c in header})

    return read_csv_checked(path, options, chunk_rows=chunk_rows or CSV_CHUNK_ROWS)


def read_csv_checked(path: Path, options: Callable[[pd.Index], dict], chunk_rows: int | None = None
                     ) -> pd.DataFrame:
    """A CSV file read with pandas' ``options`` (made of its header's names), its header checked
    (:func:`check_column_names`) and its columns without a name dropped (:func:`drop_nameless_columns`); in chunks
    of ``chunk_rows``, their text as categoricals, if given.

    A comma at the end of every data line but not of the header: pandas takes the first column for an index and
    moves every name one column on (the dates read as ids, the values as dates). The fields are read as the header
    names them; a value past the header's last name is refused (pandas would drop it with a warning).
    """
    names = file_columns(path)
    check_column_names(names, str(path), source=str(path))
    first = pd.read_csv(path, nrows=1, dtype=str, keep_default_na=False)
    chosen = dict(options(first.columns), index_col=None if isinstance(first.index, pd.RangeIndex) else False)
    if chosen["index_col"] is False and (line := _first_line_with_more_fields(path, len(names))) is not None:
        raise DataError(f"{path}: line {line} has a value past the header's {len(names)} column names; name its "
                        "column in the header (line 1), or remove it; nothing was written", source=str(path),
                        rows=[line])
    with warnings.catch_warnings():
        # "... a loss of data with index_col=False": pandas' guess, which the line above has made sure of.
        warnings.simplefilter("ignore", pd.errors.ParserWarning)
        if chunk_rows is None:
            frame = pd.read_csv(path, **chosen)
        else:
            chunks = [_compact_text(chunk) for chunk in pd.read_csv(path, chunksize=chunk_rows, **chosen)]
            frame = _concat_chunks(chunks) if chunks else pd.read_csv(path, **chosen)
    return drop_nameless_columns(frame, names, str(path))


def _first_line_with_more_fields(path: Path, fields: int) -> int | None:
    """The 1-based line of a CSV file whose record has a non-empty field past the first ``fields``."""
    import csv
    import io

    from pandas.io.common import get_handle

    with get_handle(path, "rb", compression="infer", is_text=False) as handle:
        reader = csv.reader(io.TextIOWrapper(handle.handle, encoding="utf-8", newline=""))
        start = 1
        for record in reader:
            if any(cell.strip() for cell in record[fields:]):
                return start
            start = reader.line_num + 1
    return None


def _compact_text(chunk: pd.DataFrame) -> pd.DataFrame:
    """Text columns as categoricals (ids and timestamps repeat: few distinct values, small integer codes)."""
    for col in chunk.columns:
        values = chunk[col]
        if not (pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype)):
            chunk[col] = pd.Categorical(values.astype(object))
    return chunk


def _concat_chunks(chunks: list[pd.DataFrame]) -> pd.DataFrame:
    """One frame of the chunks, with the dtype read_csv would have given the whole file's column (numeric
    columns stay numeric; a column that is text in any chunk is text, as a categorical, in all)."""
    columns = {}
    for col in chunks[0].columns:
        parts = [c[col] for c in chunks]
        if all(isinstance(p.dtype, pd.CategoricalDtype) for p in parts):
            columns[col] = pd.Series(pd.api.types.union_categoricals([p.array for p in parts]))
        elif any(isinstance(p.dtype, pd.CategoricalDtype) for p in parts):
            as_text = [p.astype(object).where(p.notna(), None) if not isinstance(p.dtype, pd.CategoricalDtype)
                       else p.astype(object) for p in parts]
            texts = [pd.Categorical(t.map(lambda v: v if v is None or isinstance(v, str) else _number_text(v)))
                     for t in as_text]
            columns[col] = pd.Series(pd.api.types.union_categoricals(texts))
        else:
            columns[col] = pd.concat(parts, ignore_index=True)
        for c in chunks:
            del c[col]  # free each chunk's column as soon as it is merged
    return pd.DataFrame(columns)


def _number_text(value: Any) -> str | None:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return str(value)


# --------------------------------------------------------------------------------------------------------
# Parsing columns
# --------------------------------------------------------------------------------------------------------


def _parse_dates(column: pd.Series) -> tuple[np.ndarray, np.ndarray, str | None, _NonISODates | None]:
    """Parse a timestamp column into ns since the epoch.

    Datetime columns (tz-aware ones are converted to UTC) are taken as they are; text must be ISO 8601.
    Returns the values, a mask of rows that could not be parsed, a note when time zones were converted to
    UTC (None otherwise), and a :class:`_NonISODates` when most of the column's text is not ISO 8601 (then
    the column is refused whole: its layout would have to be guessed), else None.
    """
    dtype = column.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        converted = column.dt.tz_convert("UTC").dt.tz_localize(None)
        ns = _to_ns(_in_ns_range(pd.DatetimeIndex(converted)))
        return ns, ns == _NAT, f"time zone {dtype.tz} converted to UTC", None
    if pd.api.types.is_datetime64_dtype(dtype):
        ns = _to_ns(_in_ns_range(pd.DatetimeIndex(column)))
        return ns, ns == _NAT, None, None
    if len(column) and column.isna().all():  # a column of empty cells reads as floats: it holds no numbers either
        raise DataError("column 'ds' is empty: no row has a timestamp", column=TIME)
    if pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
        raise DataError(f"column 'ds' holds numbers ({dtype}), not timestamps; convert them to dates first "
                        f"(e.g. pd.to_datetime(...) with the right unit or format)", column=TIME)
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    values = pd.Index(np.asarray(uniques, dtype=object))
    parsed, note = _parse_unique_dates(values)
    ns_unique = np.append(parsed, _NAT)  # code -1 (missing) maps to the last slot
    ns = ns_unique[codes]
    return ns, ns == _NAT, note, _NonISODates.find(values, parsed, codes)


def _parse_unique_dates(values: pd.Index) -> tuple[np.ndarray, str | None]:
    """Parse distinct timestamp values (ISO 8601 strings, datetimes) once each, with one known format.

    Only ISO 8601 is read (pandas' ``format="ISO8601"``: year first, with or without a time, ``T``, fractions
    and UTC offsets). Nothing else is guessed: ``03/02/2025`` is 3 February to some senders and 2 March to
    others, and a wrong guess moves the data by weeks. Values that do not parse come back as NaT.
    """
    if len(values) == 0:
        return np.empty(0, dtype=np.int64), None
    is_text = np.fromiter((isinstance(v, str) for v in values), dtype=bool, count=len(values))
    out = np.full(len(values), _NAT, dtype=np.int64)
    notes = []
    if is_text.any():
        # Year first and then a zone's name ("2025-02-04 00:00:00 UTC", as BigQuery exports timestamps) cannot
        # be misread: the name is read as the offset it stands for. pandas reads "now" and "today" as the wall
        # clock's time: no data time, so they are not read (NaT, a bad row).
        text = pd.Index([_ZONE_NAME.sub("+00:00", v) if v.strip().lower() not in CLOCK_WORDS else "" for v in
                         values[is_text]], dtype=object)
        best, note = _to_datetime_quietly(text, "ISO8601")
        if best is not None:
            if best.tz is not None:
                note = note or (f"time zone {best.tz} converted to UTC" if str(best.tz) != "UTC"
                                else "already in UTC")
                best = best.tz_convert("UTC").tz_localize(None)
            out[is_text] = _to_ns(_in_ns_range(best))
            notes.append(note)
    if not is_text.all():
        # Datetime objects in a column of objects (e.g. frames of several time zones concatenated): each is an
        # instant already, taken in UTC; anything else is not a timestamp (NaT, reported as a bad row).
        # Numbers are not instants (pandas would read them as nanoseconds since 1970): NaT, a bad row.
        objects = pd.Series([v if isinstance(v, (datetime.date, np.datetime64)) else None for v in values[~is_text]],
                            dtype=object)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            instants = pd.to_datetime(objects, errors="coerce", utc=True)
        aware = any(getattr(v, "tzinfo", None) is not None for v in objects)
        out[~is_text] = _to_ns(_in_ns_range(pd.DatetimeIndex(instants).tz_localize(None)))
        notes.append("time zones converted to UTC" if aware else None)
    return out, next((n for n in notes if n), None)


#: How numbers a spreadsheet wrote for a locale look, the usual reason a whole column fails: what is said.
_NUMBER_FORMATS = (
    (r"[-+]?\d{1,3}(,\d{3})+\.\d+|[-+]?\d{1,3}(,\d{3}){2,}",
     " (written with thousands separators, e.g. '1,010.35': write numbers without them, decimals with a point)"),
    (r"[-+]?\d{1,3}(\.\d{3})+,\d+",
     " (written with thousands points and a decimal comma, e.g. '1.010,35': write numbers without thousands "
     "separators, decimals with a point)"),
    (r"[-+]?\d{1,3},\d{3}",
     " (written with a comma, e.g. '1,234': a thousands separator or a decimal comma; write numbers without "
     "thousands separators, decimals with a point)"),
    (r"[-+]?\d+,\d+", " (written with a decimal comma, e.g. '1,5': write decimals with a point)"),
)


def _number_format_hint(cells: pd.Series) -> str:
    """What a column's cells that are not numbers look like, when a locale's number format explains them, or "".

    >>> _number_format_hint(pd.Series(["1,010.35", "n/a"])), _number_format_hint(pd.Series(["3,5"]))[:30]
    (" (written with thousands separators, e.g. '1,010.35': write numbers without them, decimals with a point)", ' (written with a decimal comma')
    """
    text = pd.Series(cells, dtype=object).astype(str).str.strip()
    for pattern, said in _NUMBER_FORMATS:
        if text.str.fullmatch(pattern).any():
            return said
    return ""


def _in_ns_range(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """``index`` (tz-naive) with the instants nanoseconds since 1970 cannot hold, before 1677-09-21 or after
    2262-04-11, as NaT: rows that cannot be read, dropped and listed. A CSV's text and a Parquet file's
    timestamps in micro- or milliseconds (or dates) can name them; converted, they raised pandas' bare
    "Out of bounds nanosecond timestamp" and refused the whole file."""
    if index.unit == "ns":
        return index
    return index.where((index >= pd.Timestamp.min) & (index <= pd.Timestamp.max))


#: Words pandas reads as the wall clock's time; never a timestamp of data (nor a date a person gives an action).
CLOCK_WORDS = frozenset({"now", "today"})


def read_timestamp(value: Any) -> tuple[pd.Timestamp, bool, str]:
    """One timestamp read as a data file's time column is read (ISO 8601 text or a datetime, never guessed):
    ``(stamp, zoned, why_not)``. ``stamp`` is tz-naive, in UTC when the value carried an offset or zone
    (``zoned``), NaT when it is not read; ``why_not`` then says why, when more can be said than "not ISO 8601"
    (a date written day or month first, with both its readings; a word for the current time). For the dates a
    person gives an action (:mod:`mlma.params`).

    >>> read_timestamp("2025-02-01T06:00+05:00")[:2]
    (Timestamp('2025-02-01 01:00:00'), True)
    >>> read_timestamp("01/02/2025")[2]
    "day and month could be swapped ('01/02/2025' is 1 February read day first, 2 January read month first)"
    >>> read_timestamp("now")
    (NaT, False, "'now' is not read as the current time: give the date")
    """
    text = value.strip() if isinstance(value, str) else value
    given = pd.Index([text], dtype=object)
    ns, note = _parse_unique_dates(given)
    stamp = pd.Timestamp(ns.view("datetime64[ns]")[0])
    if not pd.isna(stamp):
        return stamp, note is not None, ""
    if isinstance(text, str) and text.lower() in CLOCK_WORDS:
        return pd.NaT, False, f"{text!r} is not read as the current time: give the date"
    found = _NonISODates.find(given, ns, np.zeros(1, dtype=np.intp))
    # The column's wording ("in every one of them") is for many values; here there is one.
    why = found.ambiguity.replace(" in every one of them", "").removeprefix("; ") if found is not None else ""
    return pd.NaT, False, why


# A year-first timestamp followed by a zone's name that means UTC ("2025-02-04 00:00:00 UTC").
_ZONE_NAME = re.compile(r"(?<=\d)\s*(?:UTC|GMT)\s*$")


# A date written day or month first (03/02/2025, 3.2.25, 03-02-2025): which field is the month is not in the text.
_DAY_MONTH_FIRST = r"^\s*(\d{1,2})[./-](\d{1,2})[./-](\d{2}|\d{4})(?!\d)"


@dataclass(frozen=True)
class _NonISODates:
    """A text time column most of whose values are not ISO 8601: refused whole, never guessed."""

    n_rows: int
    rows: np.ndarray  # positions of the rows whose value is not ISO 8601
    examples: tuple[str, ...]
    ambiguity: str

    @classmethod
    def find(cls, values: pd.Index, parsed: np.ndarray, codes: np.ndarray) -> _NonISODates | None:
        """The column's non-ISO values when they are most of its non-blank rows (else None: a few stray values
        are bad rows, reported one by one)."""
        failed = parsed == _NAT
        if not failed.any():
            return None
        # Non-text values (an object that is no timestamp) are never blank.
        text = pd.Series([v.strip() if isinstance(v, str) else None for v in values[failed]], dtype=object)
        blank = np.zeros(len(values), dtype=bool)  # an empty cell is a missing timestamp, not a format
        blank[failed] = (text == "").to_numpy(dtype=bool)
        per_value = np.bincount(codes[codes >= 0], minlength=len(values))
        n_present = int(per_value[~blank].sum())
        n_failed = int(per_value[failed & ~blank].sum())
        if n_failed == 0 or 2 * n_failed <= n_present:
            return None
        foreign = failed & ~blank
        rows = np.flatnonzero(foreign[np.where(codes >= 0, codes, 0)] & (codes >= 0))
        text = pd.Series(values[foreign], dtype=object).astype(str).str.strip()
        examples = tuple(text.head(_MAX_EXAMPLES))
        fields = text.str.extract(_DAY_MONTH_FIRST)
        matched = fields.notna().all(axis=1).to_numpy()
        ambiguity = ""
        if matched.any():
            first, second = (fields[i][matched].astype(int).to_numpy() for i in (0, 1))
            either = (first <= 12) & (second <= 12)
            pick = int(np.flatnonzero(either)[0]) if either.any() else 0
            shown = str(text[matched].iloc[pick])
            a, b = int(first[pick]), int(second[pick])
            readings = (f"{shown!r} is {a} {_month_name(b)} read day first, {b} {_month_name(a)} read month first"
                        if either.any() else "")
            if either.all():
                ambiguity = f"; day and month could be swapped in every one of them ({readings})"
            elif either.any():
                ambiguity = f"; day and month could be swapped ({readings})"
            else:
                ambiguity = f"; dates written day or month first ({shown!r}) are not guessed"
        return cls(n_failed, rows, examples, ambiguity)

    def message(self, column: str, where: str = "") -> str:
        shown = ", ".join([repr(self.examples[0]) + where, *(repr(e) for e in self.examples[1:])])
        return (f"the time column {column!r} holds {self.n_rows:,} timestamp{'s' if self.n_rows != 1 else ''} that "
                f"{'are' if self.n_rows != 1 else 'is'} not ISO 8601 (e.g. {shown}){self.ambiguity}; text "
                f"timestamps must be ISO dates, YYYY-MM-DD with an optional time (2025-02-03 or "
                f"2025-02-03 14:00): rewrite the column, or parse it with an explicit format "
                f"(pandas.to_datetime(..., format=...)) and pass datetimes")


def _month_name(month: int) -> str:
    return pd.Timestamp(2000, month, 1).month_name() if 1 <= month <= 12 else f"month {month}"


def _to_datetime_quietly(values: pd.Index, fmt: str | None) -> tuple[pd.DatetimeIndex | None, str | None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            parsed = pd.to_datetime(values, errors="coerce", format=fmt)
            note = None
        except (ValueError, TypeError) as exc:
            if "utc=True" not in str(exc):
                return None, None
            parsed = pd.to_datetime(values, errors="coerce", format=fmt, utc=True)
            note = "mixed UTC offsets (or offsets mixed with naive times) converted to UTC"
        else:
            # pandas 2 returns mixed offsets as an Index of objects (with a warning) where pandas 3 raises:
            # the same values, the same conversion.
            if not isinstance(parsed, pd.DatetimeIndex) and parsed.notna().any():
                parsed = pd.to_datetime(values, errors="coerce", format=fmt, utc=True)
                note = "mixed UTC offsets (or offsets mixed with naive times) converted to UTC"
    return (parsed, note) if isinstance(parsed, pd.DatetimeIndex) else (None, None)


def _parse_target(column: pd.Series) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(column.dtype):
        return column.to_numpy(dtype=np.float64, na_value=np.nan)
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    numbers = pd.to_numeric(pd.Series(uniques, dtype=object), errors="coerce").to_numpy(dtype=np.float64,
                                                                                       na_value=np.nan)
    return np.append(numbers, np.nan)[codes]


def stream_id_text(values: Any, verbatim: frozenset[str] = frozenset()) -> pd.Series:
    """Stream ids as mlma knows them: text without surrounding white space, in Unicode's composed form (NFC;
    missing values stay missing), except the ids in ``verbatim``, which a project already holds as they are
    written (stored before mlma stripped and composed them) and which keep their streams.

    ``"zone-1 "`` (a CSV written with ``", "``) is ``"zone-1"``, not a stream of its own, and ``"Zürich"`` is one
    stream whether its ``ü`` came as one character or as ``u`` and a combining mark (a Mac's file names, some
    exports): wherever an id is read from a file (actuals, future drivers, attributes, abnormal periods) or
    named by a person (:meth:`mlma.store.Store.resolve`). Done once per distinct value.

    >>> stream_id_text([" a", "a", None, 7, " b"], verbatim=frozenset({" b"})).tolist()
    ['a', 'a', nan, '7', ' b']
    >>> stream_id_text(["Zu\u0308rich", "Z\u00fcrich"]).nunique()
    1
    """
    series = values if isinstance(values, pd.Series) else pd.Series(list(values), dtype=object)
    codes, uniques = pd.factorize(series, use_na_sentinel=True)
    text = np.append(np.asarray(_id_texts(pd.Index(uniques).astype("str"), verbatim), dtype=object), np.nan)
    return pd.Series(text[codes], index=series.index, dtype=object)


def _id_texts(raw: pd.Index, verbatim: frozenset[str]) -> pd.Index:
    """The rule of :func:`stream_id_text` on distinct ids as text: stripped and composed, but for those in
    ``verbatim``."""
    text = raw.str.replace(NAME_EDGES, "", regex=True).str.normalize("NFC")
    return pd.Index(np.where(raw.isin(list(verbatim)), raw, text), dtype="str") if verbatim else text


#: The longest stream id mlma takes, in characters: PostgreSQL indexes at most 2,704 bytes of a key, and a
#: character takes up to 4 bytes in UTF-8.
MAX_ID_LENGTH = 500


def has_control_character(text: str) -> bool:
    r"""Whether ``text`` holds a character no id or column name may hold: a control character (NUL, a tab, a line
    break) or a lone surrogate.

    >>> has_control_character("temperature"), has_control_character("a\x00b")
    (False, True)
    """
    return UNSTORABLE_IN_NAME.search(text) is not None


def unusable_ids(ids: Any) -> np.ndarray:
    r"""Per id (text), whether no store can keep it: a control character or more than :data:`MAX_ID_LENGTH`
    characters (:func:`why_unusable` says which).

    >>> unusable_ids(["zone-1", "a\x00b", "x" * 501, "Zürich"]).tolist()
    [False, True, True, False]
    """
    # Python's re on each id (the distinct ids, not rows): a string column of Arrow cannot hold a surrogate.
    return np.fromiter((len(text) > MAX_ID_LENGTH or UNSTORABLE_IN_NAME.search(text) is not None
                        for text in map(str, ids)), dtype=bool, count=len(ids))


def why_unusable(uid: str) -> str:
    r"""Why :func:`unusable_ids` refuses ``uid``, shown short.

    >>> why_unusable("a\x00b")
    "unique_id 'a\\x00b' holds a control character ('\\x00')"
    >>> why_unusable("x" * 600)
    "unique_id 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxx...' has 600 characters, more than 500"
    """
    shown = repr(uid if len(uid) <= 40 else uid[:30] + "...")
    found = UNSTORABLE_IN_NAME.search(uid)
    if found is not None:
        return f"unique_id {shown} holds {unstorable(found.group())}"
    return f"unique_id {shown} has {len(uid):,} characters, more than {MAX_ID_LENGTH}"


def id_text(uid: str) -> str:
    """One stream id by the rule of :func:`stream_id_text` (without white space around it, composed).

    >>> id_text(" zone-1 "), id_text("Zu\u0308rich") == "Z\u00fcrich", id_text("\ufeffzone-1\u200b")
    ('zone-1', True, 'zone-1')
    """
    return unicodedata.normalize("NFC", NAME_EDGES.sub("", uid))


def _stream_keys(column: pd.Series, verbatim: frozenset[str] = frozenset()
                 ) -> tuple[np.ndarray, pd.Index, np.ndarray, np.ndarray]:
    """Codes of the stream keys in sorted order, the sorted keys as text, a mask of missing keys, and a mask
    of the keys whose spaces around them were removed.

    A key that is missing (None, NaN) or empty or blank text (``""``, ``"  "``) names no stream: code -1.
    A key is its text without surrounding white space (:func:`stream_id_text`), except the keys in
    ``verbatim``: ids a project already holds with their spaces (stored before mlma stripped them), whose
    rows must stay with their streams.

    >>> codes, keys, missing, padded = _stream_keys(pd.Series(["b", " a", "a ", "", None, 1, "1"]))
    >>> codes.tolist(), keys.tolist(), missing.tolist(), np.flatnonzero(padded).tolist()
    ([2, 1, 1, -1, -1, 0, 0], ['1', 'a', 'b'], [False, False, False, True, True, False, False], [1, 2])
    >>> _stream_keys(pd.Series([" a", "a "]), verbatim=frozenset({" a"}))[1].tolist()
    [' a', 'a']
    """
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    raw = pd.Index(uniques).astype("str")
    text = _id_texts(raw, verbatim)
    blank = np.asarray(text == "", dtype=bool)
    padded = np.append(np.asarray(raw != text, dtype=bool) & ~blank, False)  # the last slot: a missing key
    # Different raw values may print alike (1 and "1", "a" and "a "); they are one stream.
    merged_named, keys = pd.factorize(text[~blank], sort=True)
    merged = np.full(len(text) + 1, -1, dtype=np.int64)  # the last slot: code -1 (missing)
    merged[np.flatnonzero(~blank)] = merged_named
    slots = np.where(codes >= 0, codes, len(text))
    codes = merged[slots]
    return codes.astype(np.int64), pd.Index(keys, dtype="str"), codes < 0, padded[slots]


# --------------------------------------------------------------------------------------------------------
# Vectorised helpers over streams
# --------------------------------------------------------------------------------------------------------


def _group_mode(groups: np.ndarray, values: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """The most common value of each group (ties: the smallest) and how often it occurs.

    Groups without values get value 0 and count 0.

    >>> _group_mode(np.array([0, 0, 0, 2, 2]), np.array([5, 5, 7, 9, 8]), 3)
    (array([5, 0, 8]), array([2, 0, 1]))
    """
    mode = np.zeros(n_groups, dtype=np.int64)
    count = np.zeros(n_groups, dtype=np.int64)
    if len(values) == 0:
        return mode, count
    vcodes, uniques = pd.factorize(values, sort=True)
    k = len(uniques)
    if n_groups * k <= 4_000_000:
        table = np.bincount(groups * k + vcodes, minlength=n_groups * k).reshape(n_groups, k)
        best = table.argmax(axis=1)
        count = table[np.arange(n_groups), best]
        mode = np.where(count > 0, np.asarray(uniques)[best], 0).astype(np.int64)
        return mode, count
    order = np.lexsort((vcodes, groups))
    g, v = groups[order], vcodes[order]
    new_run = np.r_[True, (g[1:] != g[:-1]) | (v[1:] != v[:-1])]
    starts = np.flatnonzero(new_run)
    run_g, run_v = g[starts], v[starts]
    run_n = np.diff(np.r_[starts, len(g)])
    pick = np.lexsort((run_v, -run_n, run_g))
    first = pick[np.r_[True, run_g[pick][1:] != run_g[pick][:-1]]]
    mode[run_g[first]] = np.asarray(uniques)[run_v[first]]
    count[run_g[first]] = run_n[first]
    return mode, count


@dataclass
class _StreamSpecs:
    """Per-stream frequency evidence: kind 0 unknown (one row), 1 fixed, 2 calendar, 3 calendar-like but
    not stamped on month starts or ends; size in ns or months; anchor code for comparisons."""

    kind: np.ndarray
    size: np.ndarray
    weekday: np.ndarray
    anchor: np.ndarray
    phase: np.ndarray

    def spec(self, s: int) -> _Spec:
        if self.kind[s] == 2:
            return _Spec(True, int(self.size[s]), anchor="start" if self.anchor[s] == 0 else "end",
                         phase=int(self.phase[s]))
        wd = int(self.weekday[s])
        return _Spec(False, int(self.size[s]), weekday=None if wd < 0 else wd)

    def key(self) -> np.ndarray:
        return np.stack([self.kind, self.size, self.weekday, self.anchor, self.phase], axis=1)


def _spec_key(spec: _Spec) -> np.ndarray:
    if spec.calendar:
        return np.array([2, spec.size, -1, 0 if spec.anchor == "start" else 1, spec.phase])
    return np.array([1, spec.size, -1 if spec.weekday is None else spec.weekday, -1, 0])


#: Rows per block when per-stream statistics are computed block by block (whole streams per block), which
#: bounds the temporary arrays of a large file.
_BLOCK_ROWS = 1_000_000


def _infer_stream_specs(stream: np.ndarray, ns: np.ndarray, n_streams: int) -> _StreamSpecs:
    """Per-stream frequency from the modal spacing of sorted, unique timestamps (gaps do not matter).

    Large inputs are done in blocks of whole streams (``stream`` is sorted), with the same result.
    """
    if len(stream) <= _BLOCK_ROWS:
        return _infer_stream_specs_block(stream, ns, n_streams)
    parts = [_infer_stream_specs_block(stream[lo:hi] - stream[lo], ns[lo:hi], int(stream[hi - 1] - stream[lo]) + 1)
             for lo, hi in _stream_blocks(stream)]
    return _StreamSpecs(**{name: np.concatenate([getattr(p, name) for p in parts])
                           for name in ("kind", "size", "weekday", "anchor", "phase")})


def _stream_blocks(stream: np.ndarray):
    """``(lo, hi)`` row ranges of about :data:`_BLOCK_ROWS` rows holding whole streams (``stream`` sorted and
    dense: each block holds streams ``stream[lo]..stream[hi - 1]``)."""
    if len(stream) <= _BLOCK_ROWS:
        yield 0, len(stream)
        return
    starts = np.flatnonzero(np.r_[True, stream[1:] != stream[:-1]])
    lo = 0
    while lo < len(stream):
        # The block ends at the first stream start at or after lo + _BLOCK_ROWS.
        j = np.searchsorted(starts, lo + _BLOCK_ROWS, side="left")
        hi = int(starts[j]) if j < len(starts) else len(stream)
        yield lo, hi
        lo = hi


def _infer_stream_specs_block(stream: np.ndarray, ns: np.ndarray, n_streams: int) -> _StreamSpecs:
    same = stream[1:] == stream[:-1]
    diffs = (ns[1:] - ns[:-1])[same]
    mode, count = _group_mode(stream[1:][same], diffs, n_streams)
    kind = np.where(count > 0, 1, 0).astype(np.int64)
    size = mode.copy()
    weekday = np.full(n_streams, -1, dtype=np.int64)
    anchor = np.full(n_streams, -1, dtype=np.int64)
    phase = np.zeros(n_streams, dtype=np.int64)

    calendar = (kind == 1) & (mode >= 28 * _DAY)
    if calendar.any():
        rows = calendar[stream]
        s, t = stream[rows], ns[rows]
        months, where = _month_position(t)
        same_c = s[1:] == s[:-1]
        month_step, _ = _group_mode(s[1:][same_c], (months[1:] - months[:-1])[same_c], n_streams)
        n_rows = np.bincount(s, minlength=n_streams)
        n_start = np.bincount(s[where == 0], minlength=n_streams)
        n_end = np.bincount(s[where == 1], minlength=n_streams)
        stamped = 2 * np.maximum(n_start, n_end) > n_rows
        mod_of_stream = np.where(month_step % 12 == 0, 12, np.where(month_step % 3 == 0, 3, 1))
        row_phase = months % mod_of_stream[s]
        phase_mode, _ = _group_mode(s, row_phase, n_streams)
        ok = calendar & stamped & (month_step > 0)
        kind[ok] = 2
        size[ok] = month_step[ok]
        anchor[ok] = np.where(n_start >= n_end, 0, 1)[ok]
        phase[ok] = phase_mode[ok]
        kind[calendar & ~ok] = 3

    weekly = (kind == 1) & (size % _WEEK == 0)
    if weekly.any():
        rows = weekly[stream]
        s, t = stream[rows], ns[rows]
        offset, _ = _group_mode(s, t % size[s], n_streams)
        weekday[weekly] = (_EPOCH_WEEKDAY + offset[weekly] // _DAY) % 7
    return _StreamSpecs(kind, size, weekday, anchor, phase)


def _describe_stream_spec(specs: _StreamSpecs, s: int) -> str:
    if specs.kind[s] == 3:
        return "about monthly, but not stamped on month starts or ends"
    if specs.kind[s] == 0:
        return "a single row"
    return _alias_from_spec(specs.spec(s))


#: The least share of a stream's spacings that must be single steps of the project's frequency for a stream
#: whose common spacing is a few steps to count as that frequency with gaps (:func:`_gapped_streams`).
_GAPPED_SHARE = 0.1


def _gapped_streams(given: Frequency, specs: _StreamSpecs, candidates: np.ndarray, stream: np.ndarray,
                    t: np.ndarray) -> np.ndarray:
    """Streams of ``candidates`` that have ``given``'s fixed step with gaps, not a coarser step of their own.

    A stream that missed readings (a sensor down every other hour) can have a most common spacing of a few
    steps; single steps among its spacings show that it reports at the step. Data of a coarser frequency (daily
    totals in an hourly file) has none, or a stray one: a row stamped off its hour, a weekly feed that moved its
    day once, a two-day schedule that restarts each month. So at least :data:`_GAPPED_SHARE` of a stream's
    spacings must be single steps. Calendar frequencies, and streams spaced a month or more apart, are left to
    the month rules.

    >>> ns = pd.to_datetime(["2024-01-01 00:00", "2024-01-01 02:00", "2024-01-01 04:00", "2024-01-01 05:00",
    ...                      "2024-01-01 07:00", "2024-01-01 00:00", "2024-01-01 02:00", "2024-01-01 04:00"])
    >>> stream, t = np.array([0, 0, 0, 0, 0, 1, 1, 1]), ns.to_numpy("datetime64[ns]").view("int64")
    >>> specs = _infer_stream_specs(stream, t, 2)
    >>> _gapped_streams(Frequency("h"), specs, np.array([True, True]), stream, t).tolist()
    [True, False]
    """
    out = np.zeros(len(candidates), dtype=bool)
    step = given.step
    if step is None:
        return out
    step_ns = step.value
    coarser = candidates & (specs.kind == 1) & (specs.size > step_ns) & (specs.size % step_ns == 0)
    if not coarser.any():
        return out
    rows = coarser[stream]
    s, ts = stream[rows], t[rows]
    same = s[1:] == s[:-1]
    spacings = np.bincount(s[1:][same], minlength=len(candidates))
    single = np.bincount(s[1:][same & (ts[1:] - ts[:-1] == step_ns)], minlength=len(candidates))
    return coarser & (single > 0) & (single >= _GAPPED_SHARE * spacings)


def _fleet_spec(specs: _StreamSpecs, given: Frequency | None
                ) -> tuple[_Spec | None, np.ndarray, str]:
    """The fleet's frequency and a mask of streams that disagree with it (with a message)."""
    known = specs.kind > 0
    key = specs.key()
    if given is not None:
        target = _spec_key(given._spec)
        compare = np.ones(key.shape[1], dtype=bool)
        if not given.is_calendar and given._spec.weekday is None:
            compare[2] = False  # '7D' accepts weekly data stamped on any weekday
        disagree = known & ~np.all(key[:, compare] == target[compare], axis=1)
        return given._spec, disagree, f"freq={given.alias!r}"
    usable = specs.kind == 1
    usable |= specs.kind == 2
    if not usable.any():
        return None, known, ""
    distinct, inverse, counts = np.unique(key[usable], axis=0, return_inverse=True, return_counts=True)
    # Most streams win; ties go to the shorter step.
    best = sorted(range(len(distinct)), key=lambda i: (-counts[i], distinct[i][0], distinct[i][1]))[0]
    fleet_key = distinct[best]
    disagree = known & ~np.all(key == fleet_key, axis=1)
    spec = specs.spec(int(np.flatnonzero(usable)[np.flatnonzero(inverse.ravel() == best)[0]]))
    return spec, disagree, f"{int(counts[best]):,} of {int(known.sum()):,} streams"


# --------------------------------------------------------------------------------------------------------
# Formatting
# --------------------------------------------------------------------------------------------------------


def _fmt_list(items: Sequence[Any], limit: int = _MAX_EXAMPLES) -> str:
    shown = ", ".join(str(x) for x in items[:limit])
    rest = len(items) - limit
    return shown + (f" and {rest:,} more ({len(items):,} in total)" if rest > 0 else "")


def _fmt_ts(ns: int) -> str:
    ts = pd.Timestamp(int(ns), unit="ns")
    return ts.strftime("%Y-%m-%d") if ts == ts.normalize() else ts.strftime("%Y-%m-%d %H:%M:%S").removesuffix(":00")


def _fmt_duration(ns: int) -> str:
    for unit, name in ((_DAY, "day"), (_HOUR, "hour"), (_MINUTE, "minute"), (_SECOND, "second")):
        if ns >= unit:
            amount = ns / unit
            text = f"{amount:.0f}" if ns % unit == 0 else f"{amount:.1f}"
            return f"{text} {name}{'' if text == '1' else 's'}"
    return f"{ns} ns"


def _fmt_share(share: float) -> str:
    return "<0.1%" if 0 < share < 0.001 else f"{share:.1%}"


def _fmt_clock(ns: int) -> str:
    minutes = (ns // _MINUTE) % (24 * 60)
    seconds = (ns // _SECOND) % 60
    return f"{minutes // 60:02d}:{minutes % 60:02d}" + (f":{seconds:02d}" if seconds else "")


# --------------------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------------------


class _RowNumbers:
    """The number of each input row in messages (line numbers of a CSV file, else index labels), computed for
    the rows asked about: an array for every row of a large file would cost 8 bytes a row for nothing."""

    def __init__(self, index: pd.Index, offset: int) -> None:
        self.offset = int(offset)
        if isinstance(index, pd.RangeIndex):
            self.start, self.step, self.labels = index.start, index.step, None
        elif pd.api.types.is_integer_dtype(index.dtype):
            self.labels = np.asarray(index, dtype=np.int64)
        else:
            self.start, self.step, self.labels = 0, 1, None

    def __getitem__(self, positions):
        positions = np.asarray(positions, dtype=np.int64)
        base = self.labels[positions] if self.labels is not None else self.start + self.step * positions
        return base + self.offset


class _Validator:
    """One validation run: arrays over the input's rows, a set of live rows, and the findings so far."""

    def __init__(self, df: pd.DataFrame, source: str | None, on_bad_rows: str) -> None:
        self.df = df
        self.source = source
        self.drop = on_bad_rows == "drop"
        self.findings: list[Finding] = []
        first_line = df.attrs.get(_ATTR_FIRST_LINE)
        self.row_numbers = _RowNumbers(df.index, first_line or 0)
        self.row_word = "line" if first_line is not None else "row"
        #: Streams whose rows were all dropped for being off the project's grid (``stream-off-grid``): the
        #: frequency check counts them with its own, so that the two "fewer than half" rules cannot together
        #: drop most of a file's streams.
        self.streams_off_clock = 0

    # bookkeeping ----------------------------------------------------------------------------------------

    def add(self, code: str, severity: str, message: str, *, streams: Sequence[str] = (),
            n_rows: int = 0, examples: Sequence[str] = (), column: str | None = None,
            positions: np.ndarray | None = None) -> None:
        streams = tuple(streams)
        rows = (self.row_numbers[positions] if positions is not None else np.empty(0, dtype=np.int64))
        self.findings.append(Finding(code, severity, message, streams[0] if len(streams) == 1 else None,
                                     int(n_rows), tuple(examples[:_MAX_EXAMPLES]), column, streams, rows))

    def where(self, positions: np.ndarray) -> str:
        numbers = np.sort(self.row_numbers[positions])
        word = self.row_word + ("s" if len(numbers) != 1 else "")
        shown = ", ".join(str(n) for n in numbers[:_MAX_EXAMPLES])
        rest = len(numbers) - _MAX_EXAMPLES
        return f"{word} {shown}" + (f" and {rest:,} more ({len(numbers):,} in total)" if rest > 0 else "")

    def bad_rows(self, code: str, positions: np.ndarray, keys: np.ndarray | None, what: str, column: str,
                 examples: Sequence[str]) -> None:
        """Record rows that break the contract: an error (raise mode) or a drop (drop mode)."""
        if len(positions) == 0:
            return
        streams = sorted(set(keys.tolist())) if keys is not None else []
        in_streams = (f" in stream{'s' if len(streams) != 1 else ''} {_fmt_list([repr(s) for s in streams])}"
                      if streams else "")
        if self.drop:
            message = f"dropped {len(positions):,} {what}{in_streams}: {self.where(positions)}"
            self.add(code, "dropped", message, streams=streams, n_rows=len(positions), examples=examples,
                     column=column, positions=positions)
        else:
            message = f"{len(positions):,} {what}{in_streams}: {self.where(positions)}"
            self.add(code, "error", message, streams=streams, n_rows=len(positions), examples=examples,
                     column=column, positions=positions)

    def example(self, pos: int, key: str | None, detail: str) -> str:
        who = f"{key!r}, " if key is not None else ""
        return f"{self.row_word} {self.row_numbers[pos]} ({who}{detail})"


def validate(data: Any, *, freq: Frequency | str | None = None, source: str | None = None,
             on_bad_rows: Literal["raise", "drop"] = "raise", min_length: int | None = None,
             context: FleetContext | None = None) -> ValidatedData:
    """Check a long frame against the data contract, repair what is safe, and report everything.

    Parameters
    ----------
    data
        A frame from :func:`read_frame` (or anything :func:`read_frame` accepts with the canonical
        column names: a pandas or polars frame or a CSV/Parquet path).
    freq
        The expected frequency (alias or :class:`Frequency`); inferred when None. Streams whose own
        spacing disagrees with it are errors.
    source
        A name for the data in messages; default: the file :func:`read_frame` read.
    on_bad_rows
        ``"raise"`` (default): rows that cannot be used (unparsable dates, missing or non-finite ``y``,
        conflicting duplicates, timestamps off the stream's grid) are errors and :class:`DataError` is
        raised after all checks ran, naming every problem. ``"drop"``: such rows are removed and each
        removal is reported. Problems that no row drop can fix (missing columns, mixed frequencies)
        raise in both modes; with a project's ``context`` and ``"drop"``, streams of another spacing
        (``stream-frequency``) or with most timestamps off the project's grid (``stream-off-grid``) that are,
        together, fewer than half of the file's have their rows dropped instead.
    min_length
        Streams with fewer rows get a ``short-series`` warning; default two seasons.
    context
        What a project already holds (:class:`FleetContext`): its frequency and tick, its newest data and
        each stream's recent range of values. Rows are then also checked against it, with the limits of
        ``context.limits`` (:class:`IngestLimits`): values out of range, timestamps in the future, far
        ahead of the project's data or off its grid are bad rows (raised or dropped like the others), an
        observed driver value out of its range is an error (raise) or dropped from its row (drop), and
        a file whose frequency differs from the project's is refused. Without a frequency in the context,
        data that cannot tell its frequency yet gives ``freq=None`` instead of an error.

    Returns
    -------
    ValidatedData
        ``frame`` (canonical: ``unique_id`` str, ``ds`` datetime64[ns], ``y`` float64, extras, sorted,
        fresh index), ``freq`` and ``report``.

    Raises
    ------
    DataError
        See ``on_bad_rows``; its ``report`` holds every finding.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"unique_id": "a", "ds": ["2024-01-01", "2024-01-02", "2024-01-02", "oops"],
    ...                    "y": [1.0, 2.0, 2.0, 3.0]})
    >>> validate(df)
    Traceback (most recent call last):
    ...
    mlma.data.DataError: 1 unparsable timestamp in stream 'a': row 3
    >>> checked = validate(df, on_bad_rows="drop", min_length=1)
    >>> print(checked.report)
    data: 3 findings (2 dropped, 1 info)
      [dropped] unparsable-date: dropped 1 unparsable timestamp in stream 'a': row 3
      [dropped] duplicate-identical: dropped 1 exact duplicate row (same unique_id, ds and values) in stream 'a': row 1
      [info] summary: 1 stream, 2 rows, frequency D (season 7), 2024-01-01 to 2024-01-02
    """
    if on_bad_rows not in ("raise", "drop"):
        raise ValueError(f"on_bad_rows must be 'raise' or 'drop', got {on_bad_rows!r}")
    if min_length is not None and (not isinstance(min_length, (int, np.integer)) or min_length < 1):
        raise ValueError(f"min_length must be a positive integer or None, got {min_length!r}")
    given = Frequency.coerce(freq) if freq is not None else None
    if context is not None and context.freq is not None:
        if given is not None and given != context.freq:
            raise ValueError(f"freq={given.alias!r} disagrees with the context's frequency {context.freq.alias!r}")
        given = context.freq
    df = data if isinstance(data, pd.DataFrame) else read_frame(data)
    source = source if source is not None else df.attrs.get(_ATTR_SOURCE)
    check_column_names(list(df.columns), source or "input frame", source=source)
    missing = [c for c in CANONICAL_COLUMNS if c not in df.columns]
    if missing:
        where = f"{source}: " if source else ""
        present = ", ".join(repr(str(c)) for c in df.columns)
        raise DataError(f"{where}missing column{'s' if len(missing) > 1 else ''} "
                        f"{', '.join(repr(c) for c in missing)}; columns present: {present} (use read_frame "
                        f"with id_col=, time_col=, target_col= to rename)", source=source, column=missing[0])
    if len(df) == 0:
        raise DataError(f"{source + ': ' if source else ''}the data has no rows", source=source)
    if pd.api.types.is_bool_dtype(df[TARGET].dtype):
        raise DataError(f"{source + ': ' if source else ''}column 'y' holds true/false values, not numbers; a "
                        f"forecast target is a number (write 0 and 1 if that is what is meant)", source=source,
                        column=TARGET)
    v = _Validator(df, source, on_bad_rows)
    try:
        frame, fleet_freq = _run_checks(v, df, given, min_length, context)
    except DataError as exc:
        if exc.source is None and source is not None:
            exc.source = source
            exc.args = (f"{source}: {exc.args[0]}",)
        raise
    report = ValidationReport(tuple(v.findings), source, len(df), len(frame))
    report.raise_if_errors()
    return ValidatedData(frame, fleet_freq, report)


def _run_checks(v: _Validator, df: pd.DataFrame, given: Frequency | None, min_length: int | None,
                context: FleetContext | None = None) -> tuple[pd.DataFrame, Frequency | None]:
    n = len(df)
    alive = np.ones(n, dtype=bool)
    codes, keys, id_missing, padded = _stream_keys(df[ID], context.verbatim_ids if context is not None
                                                   else frozenset())
    key_of = lambda pos: keys[codes[pos]] if codes[pos] >= 0 else None  # noqa: E731
    if padded.any():
        rows = np.flatnonzero(padded)
        values = [repr(str(k)) for k in pd.unique(df[ID].iloc[rows])]
        v.add("id-spaces", "repaired", f"removed the spaces around {len(values):,} unique_id value"
              f"{'s' if len(values) != 1 else ''} ({_fmt_list(values)}), or invisible characters around them (a "
              f"byte-order mark, a zero-width space), or composed their letters, on {v.where(rows)}: a stream's id "
              "is its text without them, its letters composed (NFC: ü as one character, not u and a combining "
              "mark)", column=ID, n_rows=len(rows), positions=rows)

    for column, first in (df.attrs.get(_ATTR_DROPPED) or {}).items():
        v.add("columns-dropped", "info",
              f"ignored the non-numeric column {column!r}" + (f" (first value {first!r})" if first else "")
              + ": no driver value of it is stored (pass exog=[...] to read_frame to keep it)", column=column)
    for column, (rows, first) in (df.attrs.get(_ATTR_UNREAD) or {}).items():
        cells = f"{len(rows):,} cell that is" if len(rows) == 1 else f"{len(rows):,} cells that are"
        v.add("values-unread", "warning",
              f"column {column!r}: {cells} no number, first {first!r} on {v.where(rows)}: not stored as driver "
              "values (the column's other values and these rows' actuals are)", column=column, n_rows=len(rows),
              positions=rows)

    # stream key ------------------------------------------------------------------------------------------
    bad = np.flatnonzero(id_missing)
    raw_id = df[ID]
    v.bad_rows("missing-id", bad, None, "row" + ("s" if len(bad) != 1 else "") + " without a unique_id "
               "(missing, empty or blank)", ID,
               [v.example(p, None, "unique_id is missing" if pd.isna(raw_id.iloc[p])
                          else f"unique_id={raw_id.iloc[p]!r}") for p in bad[:_MAX_EXAMPLES]])
    alive[bad] = False
    unusable = unusable_ids(keys)
    if unusable.any():
        bad = np.flatnonzero(alive & unusable[np.maximum(codes, 0)])
        v.bad_rows("bad-id", bad, None, "row" + ("s" if len(bad) != 1 else "") + " whose unique_id no store "
                   f"keeps (a control character, or more than {MAX_ID_LENGTH} characters)", ID,
                   [v.example(p, None, why_unusable(str(keys[codes[p]]))) for p in bad[:_MAX_EXAMPLES]])
        alive[bad] = False

    # timestamps ------------------------------------------------------------------------------------------
    ns, ds_bad, tz_note, foreign = _parse_dates(df[TIME])
    if foreign is not None:
        # Refused whole in both modes: dropping every row would only hide that the layout is not ISO 8601.
        shown = foreign.rows[:1]
        v.add("non-iso-date", "error", foreign.message(df.attrs.get(_ATTR_TIME_COL) or TIME, f" on {v.where(shown)}"),
              n_rows=foreign.n_rows, column=TIME, positions=foreign.rows,
              examples=[v.example(p, key_of(p), f"ds={df[TIME].iloc[p]!r}") for p in foreign.rows[:_MAX_EXAMPLES]])
        ValidationReport(tuple(v.findings), v.source, n, 0).raise_if_errors()
    if tz_note is not None:
        _check_timezone_mix(v, df[TIME], ~ds_bad)
    if context is not None and (~ds_bad).any():
        _check_time_zones_match(v, context.time_zones, tz_note is not None)
    bad = np.flatnonzero(ds_bad & alive)
    raw_ds = df[TIME]
    v.bad_rows("unparsable-date", bad, keys[codes[bad]].to_numpy() if len(bad) else None,
               "unparsable timestamp" + ("s" if len(bad) != 1 else ""), TIME,
               [v.example(p, key_of(p), f"ds={raw_ds.iloc[p]!r}") for p in bad[:_MAX_EXAMPLES]])
    alive[bad] = False
    if tz_note is not None:
        v.add("timezone-converted", "repaired",
              f"timestamps carried time zones: {tz_note} and made tz-naive", n_rows=int(alive.sum()),
              column=TIME)

    # target ----------------------------------------------------------------------------------------------
    y = _parse_target(df[TARGET])
    bad = np.flatnonzero(~np.isfinite(y) & alive)
    raw_y = df[TARGET]
    v.bad_rows("non-finite-target", bad, keys[codes[bad]].to_numpy() if len(bad) else None,
               "row" + ("s" if len(bad) != 1 else "") + " whose y is missing, infinite or not a number"
               + (_number_format_hint(raw_y.iloc[bad[:1000]]) if len(bad) else ""),
               TARGET, [v.example(p, key_of(p), f"y={raw_y.iloc[p]!r}") for p in bad[:_MAX_EXAMPLES]])
    alive[bad] = False

    # the project's boundary --------------------------------------------------------------------------------
    if context is not None:
        _check_against_context(v, context, df, alive, codes, keys, ns, y)

    # order -----------------------------------------------------------------------------------------------
    idx = np.flatnonzero(alive)
    c, t = codes[idx], ns[idx]
    # From here on the live rows' copies are used: freeing the full-length arrays (and re-ordering one array
    # at a time below) keeps a large file's peak memory down by a few arrays of 8 bytes a row.
    key_of = None  # noqa: F841 - releases the closure over codes
    del codes, ns, ds_bad, id_missing, alive
    if len(idx) > 1:
        dc, dt = np.diff(c), np.diff(t)
        in_order = np.all((dc > 0) | ((dc == 0) & (dt >= 0)))
        del dc, dt
        if not in_order:
            order = np.lexsort((t, c))  # stable: rows with equal keys keep their input order
            moved = int(np.count_nonzero(order != np.arange(len(order))))
            idx = idx[order]
            c = c[order]
            t = t[order]
            del order
            v.add("unsorted", "repaired", f"rows were not sorted by unique_id, ds; sorted them ({moved:,} rows "
                  f"moved)", n_rows=moved)

    if context is not None and context.limits.value_range_factor > 0 and len(idx):
        idx, c, t = _check_value_range(v, context, idx, c, t, y, keys, df[TARGET])

    # duplicates ------------------------------------------------------------------------------------------
    if len(idx) > 1:
        same = (c[1:] == c[:-1]) & (t[1:] == t[:-1])
        if same.any():
            idx, c, t = _resolve_duplicates(v, df, idx, c, t, y, same, keys)

    if len(idx) == 0:
        pruned = [f for f in v.findings if f.code == "before-kept"]
        dropped = sorted((f for f in v.findings if f.severity == "dropped"), key=lambda f: -f.n_rows)
        # The error is often all a person reads: it names the reason that took the most rows.
        most = (f"; most rows ({dropped[0].n_rows:,}) were dropped as {dropped[0].code}: {dropped[0].message}"
                if dropped and not pruned else "")
        v.add("empty", "error", "no usable rows left" + (
            f": every row is older than the data the project keeps (pruned before {context.kept_from}), or was "
            "dropped for the reasons above" if pruned and context is not None else "") + most)
        ValidationReport(tuple(v.findings), v.source, n, 0).raise_if_errors()

    # streams and frequency -------------------------------------------------------------------------------
    new_stream = np.r_[True, c[1:] != c[:-1]]
    stream = np.cumsum(new_stream) - 1
    n_streams = int(stream[-1]) + 1
    stream_keys = keys[c[new_stream]]
    specs = _infer_stream_specs(stream, t, n_streams)
    fleet, disagree, basis = _fleet_spec(specs, given)
    if fleet is None:
        calendar_like = np.flatnonzero(specs.kind == 3)
        if context is not None and not len(calendar_like):
            # A project's first files may hold one row per stream (a daily panel fed a day at a time):
            # the rows are fine, the frequency is simply not known yet.
            v.add("frequency-pending", "info",
                  f"every stream has a single timestamp, so the frequency is not known yet; it is fixed by the "
                  f"first file that, with the rows already stored, gives a stream two timestamps",
                  n_rows=len(idx), column=TIME)
            frame = _assemble(df, idx, keys, c, t, y)
            _check_driver_ranges(v, context, frame, idx, c, keys)
            return frame, None
        if len(calendar_like):
            names = [repr(stream_keys[s]) for s in calendar_like]
            v.add("unknown-frequency", "error",
                  f"cannot infer the frequency: stream{'s' if len(names) > 1 else ''} {_fmt_list(names)} "
                  f"{'are' if len(names) > 1 else 'is'} spaced about a month or more apart but not stamped on "
                  f"the first or last day of the month; stamp monthly, quarterly and yearly data on month "
                  f"starts (MS) or ends (ME)", streams=[stream_keys[s] for s in calendar_like])
        else:
            v.add("unknown-frequency", "error",
                  "cannot infer the frequency: every stream has a single row; give it, e.g. 'h' or 'D' "
                  "(`--freq` of `mlma backtest`, `[data] freq` in mlma.toml, `freq=` in Python)")
        ValidationReport(tuple(v.findings), v.source, n, 0).raise_if_errors()
    fleet_freq = given if given is not None else Frequency(_alias_from_spec(fleet))
    if disagree.any() and given is not None:
        disagree &= ~_gapped_streams(given, specs, disagree, stream, t)
    if disagree.any():
        groups: dict[str, list[str]] = {}
        for s in np.flatnonzero(disagree):
            groups.setdefault(_describe_stream_spec(specs, s), []).append(str(stream_keys[s]))
        parts = [f"{_fmt_list([repr(k) for k in ks])} look{'s' if len(ks) == 1 else ''} {alias}"
                 for alias, ks in sorted(groups.items(), key=lambda kv: -len(kv[1]))]
        bad_streams = [str(stream_keys[s]) for s in np.flatnonzero(disagree)]
        expected = (f"the fleet's frequency is {fleet_freq.alias} ({basis})" if given is None
                    else f"the project's frequency is {given.alias} ({context.clock_note})"
                    if context is not None and context.freq is not None else f"expected {basis}")
        rows = idx[disagree[stream]]
        # In a project's file read with drop, a few streams of another frequency are one zone's trouble: their
        # rows are dropped and listed, the fleet's are kept. A file whose streams mostly disagree is a file of
        # another frequency (a daily export sent to an hourly project) and is refused whole, as in raise mode;
        # so is any disagreement before the project's clock is fixed (the file's majority is no clock).
        off_clock = v.streams_off_clock  # dropped already, off the grid: out of n_streams, counted with these
        if (context is not None and context.freq is not None and v.drop
                and 2 * (len(bad_streams) + off_clock) < n_streams + off_clock):
            v.bad_rows("stream-frequency", rows, keys[c[disagree[stream]]].to_numpy(),
                       f"row{'s' if len(rows) != 1 else ''} spaced unlike the project's data ({expected}, "
                       f"but {'; '.join(parts)})", TIME,
                       [v.example(p, str(keys[c_]), f"ds={df[TIME].iloc[p]!r}")
                        for p, c_ in zip(rows[:_MAX_EXAMPLES], c[disagree[stream]][:_MAX_EXAMPLES])])
        else:
            also = (f"; with the {off_clock:,} stream{'s' if off_clock != 1 else ''} whose timestamps are off the "
                    f"project's grid, half the file's streams or more are not on the project's clock"
                    if off_clock and v.drop else "")
            v.add("mixed-frequency", "error",
                  f"streams disagree on the frequency: {expected}, but {'; '.join(parts)}{also}",
                  streams=bad_streams, n_rows=len(rows),
                  examples=[f"{k!r}: {a}" for a, ks in groups.items() for k in ks[:1]])
        keep = ~disagree[stream]
        idx, c, t, stream = idx[keep], c[keep], t[keep], stream[keep]
        remap = np.cumsum(~disagree) - 1
        stream = remap[stream]
        stream_keys = stream_keys[~disagree]
        n_streams = len(stream_keys)

    if len(idx):
        idx, c, t, stream, stream_keys, n_streams = _check_grid(v, fleet, idx, c, t, stream, stream_keys,
                                                                n_streams, keys)
    if len(idx) and context is None and not fleet.calendar:  # a project's grid is checked against its clock
        _check_phases(v, fleet, t, stream, stream_keys, n_streams)
    if len(idx):
        _check_gaps(v, fleet, t, stream, stream_keys, n_streams)
        if context is None:  # a project's file is a slice of streams whose history is in the store
            _check_streams(v, fleet_freq, y[idx], stream, stream_keys, n_streams, min_length)

    del stream  # not needed any more: one array of 8 bytes a row less while the frame is built
    frame = _assemble(df, idx, keys, c, t, y)
    if len(idx):
        _check_exog(v, frame)
        if context is not None:  # after _check_exog: a value dropped here is said once, not as missing too
            _check_driver_ranges(v, context, frame, idx, c, keys)
        first, last = _fmt_ts(t.min()), _fmt_ts(t.max())
        v.add("summary", "info",
              f"{n_streams:,} stream{'s' if n_streams != 1 else ''}, "
              f"{len(idx):,} row{'s' if len(idx) != 1 else ''}, frequency "
              f"{fleet_freq.alias} (season {fleet_freq.season_length}), {first} to {last}")
    return frame, fleet_freq


def _resolve_duplicates(v: _Validator, df: pd.DataFrame, idx: np.ndarray, c: np.ndarray, t: np.ndarray,
                        y: np.ndarray, same: np.ndarray, keys: pd.Index
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Drop exact duplicates; for conflicting ones keep the last row (drop mode) or report an error."""
    pair = np.flatnonzero(same)  # rows pair and pair + 1 share unique_id and ds
    a, b = idx[pair], idx[pair + 1]
    equal = y[a] == y[b]
    for col in df.columns:
        if col in CANONICAL_COLUMNS:
            continue
        values = df[col].to_numpy()
        va, vb = values[a], values[b]
        equal &= (va == vb) | (pd.isna(va) & pd.isna(vb))
    group = np.cumsum(np.r_[True, ~same]) - 1  # one id per (unique_id, ds) key, over sorted rows
    conflict_key = np.zeros(group[-1] + 1, dtype=bool)
    conflict_key[group[pair[~equal]]] = True
    loser = pair  # every row that has a later row with the same key
    conflicting = conflict_key[group[loser]]

    exact = loser[~conflicting]
    if len(exact):
        # Exact duplicates lose nothing when dropped, so they are dropped in both modes.
        streams = sorted(set(keys[c[exact]].tolist()))
        in_streams = f" in stream{'s' if len(streams) != 1 else ''} {_fmt_list([repr(s) for s in streams])}"
        v.add("duplicate-identical", "dropped",
              f"dropped {len(exact):,} exact duplicate row{'s' if len(exact) != 1 else ''} (same unique_id, ds "
              f"and values){in_streams}: {v.where(idx[exact])}", streams=streams, n_rows=len(exact),
              positions=idx[exact],
              examples=[v.example(idx[p], str(keys[c[p]]), f"ds={_fmt_ts(t[p])}") for p in exact[:_MAX_EXAMPLES]])

    clash = loser[conflicting]
    if len(clash):
        keys_hit = np.unique(group[clash])
        in_group = np.isin(group, keys_hit)
        all_rows = np.flatnonzero(in_group)
        # Most of a file colliding is not a feed's corrections but a broken time column (an hourly file whose
        # ds lost its time of day, a Parquet date32 column): keeping the last row of each key would overwrite
        # accepted values with one arbitrary hour's, so the file is refused in both modes.
        broken = 2 * len(clash) > len(idx)
        examples = []
        for g in keys_hit[:_MAX_EXAMPLES]:
            members = np.flatnonzero(group == g)
            ys = ", ".join(f"{y[idx[m]]:g}" for m in members)
            kept = f" ({v.row_word} {v.row_numbers[idx[members[-1]]]} kept)" if v.drop and not broken else ""
            examples.append(f"{keys[c[members[0]]]!r} at {_fmt_ts(t[members[0]])}: "
                            f"{v.row_word}s {', '.join(str(v.row_numbers[idx[m]]) for m in members)} "
                            f"have y = {ys}{kept}")
        streams = sorted(set(keys[c[clash]].tolist()))
        in_streams = f"in stream{'s' if len(streams) != 1 else ''} {_fmt_list([repr(s) for s in streams])}"
        if broken:
            midnight = bool(np.all(t[all_rows] % _DAY == 0))
            v.add("duplicate-conflict", "error",
                  f"most rows ({len(clash):,} of {len(idx):,}) repeat the (unique_id, ds) of another row with a "
                  f"different value {in_streams}: the ds column cannot tell them apart"
                  + (" (every such ds is a date without a time of day: was the time lost on export?)" if midnight
                     else "") + f"; e.g. {examples[0]}", streams=streams, n_rows=len(all_rows),
                  positions=idx[all_rows], examples=examples, column=TIME)
        elif v.drop:
            v.add("duplicate-conflict", "dropped",
                  f"dropped {len(clash):,} row{'s' if len(clash) != 1 else ''} whose (unique_id, ds) repeats "
                  f"with different values {in_streams}, keeping the last occurrence of each: "
                  f"{v.where(idx[clash])}; e.g. {examples[0]}", streams=streams, n_rows=len(clash),
                  positions=idx[clash],
                  examples=examples, column=TARGET)
        else:
            v.add("duplicate-conflict", "error",
                  f"{len(keys_hit):,} (unique_id, ds) pair{'s repeat' if len(keys_hit) != 1 else ' repeats'} with "
                  f"different values {in_streams}: {v.where(idx[all_rows])} (use on_bad_rows='drop' to keep "
                  f"the last occurrence)", streams=streams, n_rows=len(all_rows), positions=idx[all_rows],
                  examples=examples, column=TARGET)
    keep = np.ones(len(idx), dtype=bool)
    keep[loser] = False
    return idx[keep], c[keep], t[keep]


def _check_grid(v: _Validator, fleet: _Spec, idx: np.ndarray, c: np.ndarray, t: np.ndarray,
                stream: np.ndarray, stream_keys: pd.Index, n_streams: int, keys: pd.Index):
    """Rows whose timestamp is off their stream's grid (e.g. 10:17 in an hourly stream)."""
    if fleet.calendar:
        months, where = _month_position(t)
        modulus = fleet.phase_modulus
        step_phase, _ = _group_mode(stream, months % fleet.size, n_streams)
        on_grid = (where == (0 if fleet.anchor == "start" else 1))
        on_grid &= (months % modulus) == fleet.phase % modulus
        on_grid &= (months - step_phase[stream]) % fleet.size == 0
        grid_name = f"the {_alias_from_spec(fleet)} grid"
    else:
        on_grid = np.empty(len(t), dtype=bool)
        for lo, hi in _stream_blocks(stream):  # by blocks of whole streams: bounded temporaries
            first = int(stream[lo])
            phase, _ = _group_mode(stream[lo:hi] - first, t[lo:hi] % fleet.size, int(stream[hi - 1]) - first + 1)
            on_grid[lo:hi] = (t[lo:hi] - phase[stream[lo:hi] - first]) % fleet.size == 0
        grid_name = f"the stream's {_alias_from_spec(fleet)} grid"
    off = np.flatnonzero(~on_grid)
    if len(off) == 0:
        return idx, c, t, stream, stream_keys, n_streams
    share = np.bincount(stream[off], minlength=n_streams) / np.bincount(stream, minlength=n_streams)
    hint = (" (most rows of some streams are off the grid: is this event data? aggregate it to a regular "
            "frequency first)" if share.max() > 0.5 else "")
    if (fleet.calendar or fleet.size >= 86_400 * 10**9) and any(f.code == "timezone-converted" for f in v.findings):
        # Dates at local midnight with their UTC offset: converted to UTC, they leave their day (23:00 the day
        # before in winter, 22:00 in summer in Berlin), and one of the two seasons is off the grid.
        hint += (" (the timestamps carried UTC offsets and were converted to UTC: dates written at local midnight "
                 "with their offset land off their day, by another amount in summer time; for data of whole "
                 "days write the dates without an offset, e.g. 2024-01-01)")
    v.bad_rows("off-grid", idx[off], keys[c[off]].to_numpy(),
               f"timestamp{'s' if len(off) != 1 else ''} off {grid_name}{hint}", TIME,
               [v.example(idx[p], str(keys[c[p]]), f"ds={_fmt_ts(t[p])}") for p in off[:_MAX_EXAMPLES]])
    keep = on_grid
    idx, c, t, stream = idx[keep], c[keep], t[keep], stream[keep]
    if len(idx) == 0:
        return idx, c, t, stream, stream_keys[:0], 0
    present = np.bincount(stream, minlength=n_streams) > 0
    remap = np.cumsum(present) - 1
    return idx, c, t, remap[stream], stream_keys[present], int(present.sum())


def _check_phases(v: _Validator, fleet: _Spec, t: np.ndarray, stream: np.ndarray, stream_keys: pd.Index,
                  n_streams: int) -> None:
    """Streams on their own grid but not the fleet's: hourly at :30 where the others are at :00.

    Each stream is on its own grid by now (:func:`_check_grid`), which is all the data contract asks. But a
    backtest replays the fleet on one grid (:class:`mlma.fleet.FleetData`), so a warning names the shifted
    streams (``shifted-grid``) and :func:`mlma.backtest.run_backtest` refuses the data with it. The fleet's
    grid is the one most streams share (ties: most rows, then the earliest in the step).
    """
    firsts = np.flatnonzero(np.r_[True, stream[1:] != stream[:-1]])  # rows are sorted by stream
    phase = np.zeros(n_streams, dtype=np.int64)
    phase[stream[firsts]] = t[firsts] % fleet.size
    if (phase == phase[0]).all():
        return
    rows = np.bincount(stream, minlength=n_streams)
    values, inverse, counts = np.unique(phase, return_inverse=True, return_counts=True)
    row_counts = np.bincount(inverse.ravel(), weights=rows)
    best = sorted(range(len(values)), key=lambda i: (-counts[i], -row_counts[i], values[i]))[0]
    shifted = phase != values[best]
    groups: dict[int, list[str]] = {}
    for s in np.flatnonzero(shifted):
        groups.setdefault(int((phase[s] - values[best]) % fleet.size), []).append(repr(str(stream_keys[s])))
    parts = [f"{_fmt_list(names)} {'is' if len(names) == 1 else 'are'} {_fmt_duration(offset)} after it"
             for offset, names in sorted(groups.items(), key=lambda kv: -len(kv[1]))]
    on = firsts[~shifted[stream[firsts]]][0]  # the first row of the first stream on the fleet's grid
    first_rows = firsts[shifted[stream[firsts]]]
    v.add("shifted-grid", "warning",
          f"streams are on shifted {_alias_from_spec(fleet)} grids: {int(counts[best]):,} of {n_streams:,} "
          f"streams share the grid of {str(stream_keys[stream[on]])!r} (from {_fmt_ts(int(t[on]))}), but "
          f"{'; '.join(parts)}; a backtest replays the fleet on one grid and refuses this: move their "
          "timestamps onto the others' (or resample them)",
          streams=[str(stream_keys[s]) for s in np.flatnonzero(shifted)],
          n_rows=int(rows[shifted].sum()),
          examples=[f"{str(stream_keys[stream[p]])!r} from {_fmt_ts(int(t[p]))}"
                    for p in first_rows[:_MAX_EXAMPLES]])


def _check_gaps(v: _Validator, fleet: _Spec, t: np.ndarray, stream: np.ndarray, stream_keys: pd.Index,
                n_streams: int) -> None:
    """Missing grid points: a regular daily (or weekly) observation window is info, other gaps a warning."""
    starts = np.flatnonzero(np.r_[True, stream[1:] != stream[:-1]])
    ends = np.r_[starts[1:], len(t)] - 1
    first, last = t[starts], t[ends]
    count = ends - starts + 1
    if fleet.calendar:
        months, _ = _month_position(t)
        expected = (months[ends] - months[starts]) // fleet.size + 1
    else:
        expected = (last - first) // fleet.size + 1
    missing = expected - count
    if not missing.any():
        return

    inside_missing = missing.copy()
    window_of: dict[tuple[str, int], list[int]] = {}
    step = fleet.size
    if not fleet.calendar and (step < _DAY and _DAY % step == 0 or step == _DAY):
        cycle = _DAY if step < _DAY else _WEEK
        candidates = np.flatnonzero((missing > 0) & (last - first >= _WINDOW_MIN_CYCLES * cycle))
        if len(candidates):
            windows = _observation_windows(t, stream, candidates, first, last, count, step, cycle)
            for s, label, slots, missing_inside in windows:
                inside_missing[s] = missing_inside
                window_of.setdefault((label, slots), []).append(s)

    for (label, slots), members in sorted(window_of.items(), key=lambda kv: -len(kv[1])):
        names = [str(stream_keys[s]) for s in members]
        per = "day" if step < _DAY else "week"
        unit = _alias_from_spec(fleet)
        v.add("observation-window", "info",
              f"observation window {label} ({slots} of {(_DAY if per == 'day' else _WEEK) // step} {unit} "
              f"slots a {per}) in stream{'s' if len(names) != 1 else ''} {_fmt_list([repr(k) for k in names])}: "
              f"timestamps outside it are not expected and not counted as gaps",
              streams=names, n_rows=int((missing[members] - inside_missing[members]).sum()))

    gappy = np.flatnonzero(inside_missing > 0)
    if len(gappy) == 0:
        return
    same = stream[1:] == stream[:-1]
    longest = np.zeros(n_streams, dtype=np.int64)
    np.maximum.at(longest, stream[1:][same], (t[1:] - t[:-1])[same])
    worst = gappy[np.argsort(-inside_missing[gappy], kind="stable")]
    windowed = {s for members in window_of.values() for s in members}
    examples = []
    for s in worst[:_MAX_EXAMPLES]:
        text = (f"{stream_keys[s]!r}: {inside_missing[s]:,} of {inside_missing[s] + count[s]:,} expected rows "
                f"missing ({_fmt_share(inside_missing[s] / (inside_missing[s] + count[s]))})")
        if s not in windowed and not fleet.calendar:
            text += f", longest gap {_fmt_duration(longest[s] - step)}"
        examples.append(text)
    names = [str(stream_keys[s]) for s in worst]
    total = int(inside_missing[gappy].sum())
    v.add("gaps", "warning",
          f"{total:,} missing timestamp{'s' if total != 1 else ''} in {len(gappy):,} "
          f"stream{'s' if len(gappy) != 1 else ''} (not filled): {'; '.join(examples)}"
          + (f"; and {len(gappy) - _MAX_EXAMPLES:,} more stream{'s' if len(gappy) - _MAX_EXAMPLES != 1 else ''}"
             if len(gappy) > _MAX_EXAMPLES else ""),
          streams=names, n_rows=total, examples=examples)


def _observation_windows(t: np.ndarray, stream: np.ndarray, candidates: np.ndarray, first: np.ndarray,
                         last: np.ndarray, count: np.ndarray, step: int, cycle: int):
    """For each candidate stream: the daily (or weekly) window of slots it is ever observed in.

    The window is the complement of the longest circular run of slots that never hold an observation.
    Yields ``(stream, label, slots in window, missing rows inside the window)`` for streams whose window
    is narrower than the whole cycle.
    """
    n_slots = cycle // step
    is_candidate = np.zeros(int(stream.max()) + 1, dtype=bool)
    is_candidate[candidates] = True
    rows = is_candidate[stream]
    local = np.full(len(is_candidate), -1, dtype=np.int64)
    results = []
    chunk = max(1, 4_000_000 // n_slots)
    phase_all = t % step
    for lo in range(0, len(candidates), chunk):
        block = candidates[lo:lo + chunk]
        local[:] = -1
        local[block] = np.arange(len(block))
        sel = rows & (local[stream] >= 0)
        s_loc = local[stream[sel]]
        phase = np.zeros(len(block), dtype=np.int64)
        phase[s_loc] = phase_all[sel]  # on-grid rows share their stream's phase
        slot = ((t[sel] - phase[s_loc]) % cycle) // step
        seen = np.zeros((len(block), n_slots), dtype=bool)
        seen[s_loc, slot] = True
        r, col = np.nonzero(seen)
        row_start = np.flatnonzero(np.r_[True, r[1:] != r[:-1]])
        row_end = np.r_[row_start[1:], len(r)] - 1
        nxt = np.empty_like(col)
        nxt[:-1] = col[1:]
        nxt[row_end] = col[row_start] + n_slots
        gap = nxt - col - 1
        longest = np.maximum.reduceat(gap, row_start)
        at = np.flatnonzero(gap == longest[r])
        first_at = at[np.r_[True, r[at][1:] != r[at][:-1]]]
        end_slot = col[first_at]
        start_slot = (end_slot + longest + 1) % n_slots
        width = n_slots - longest
        narrower = longest > 0
        if not narrower.any():
            continue
        # Expected observations of each slot inside [first, last]: how many k put
        # phase + slot * step + k * cycle in that interval.
        offsets = (phase[:, None] + np.arange(n_slots)[None, :] * step) % cycle
        lo_t, hi_t = first[block][:, None], last[block][:, None]
        per_slot = (hi_t - offsets) // cycle - (-((offsets - lo_t) // cycle)) + 1
        per_slot = np.maximum(per_slot, 0)
        in_window = ((np.arange(n_slots)[None, :] - start_slot[:, None]) % n_slots) < width[:, None]
        expected_inside = (per_slot * in_window).sum(axis=1)
        for j in np.flatnonzero(narrower):
            s = int(block[j])
            a = int((phase[j] + start_slot[j] * step) % cycle)
            b = int((phase[j] + end_slot[j] * step) % cycle)
            if cycle == _DAY:
                label = f"{_fmt_clock(a)}-{_fmt_clock(b)}"
            else:
                day_a = (_EPOCH_WEEKDAY + a // _DAY) % 7
                day_b = (_EPOCH_WEEKDAY + b // _DAY) % 7
                label = _WEEKDAY_NAMES[day_a] if day_a == day_b else f"{_WEEKDAY_NAMES[day_a]}-{_WEEKDAY_NAMES[day_b]}"
            results.append((s, label, int(width[j]), int(expected_inside[j] - count[s])))
    return results


def _check_streams(v: _Validator, freq: Frequency, y: np.ndarray, stream: np.ndarray, stream_keys: pd.Index,
                   n_streams: int, min_length: int | None) -> None:
    count = np.bincount(stream, minlength=n_streams)
    limit = min_length if min_length is not None else 2 * freq.season_length
    short = np.flatnonzero(count < limit)
    if len(short):
        names = [str(stream_keys[s]) for s in short]
        v.add("short-series", "warning",
              f"{len(short):,} stream{'s' if len(short) != 1 else ''} {'have' if len(short) != 1 else 'has'} fewer "
              f"than {limit} rows{' (two seasons)' if min_length is None else ''}: "
              f"{_fmt_list([f'{k!r} ({count[s]})' for k, s in zip(names, short)])}",
              streams=names, n_rows=int(count[short].sum()),
              examples=[f"{k!r}: {count[s]} rows" for k, s in zip(names, short)])
    starts = np.flatnonzero(np.r_[True, stream[1:] != stream[:-1]])
    lo = np.minimum.reduceat(y, starts)
    hi = np.maximum.reduceat(y, starts)
    constant = np.flatnonzero((lo == hi) & (count >= 2))
    if len(constant):
        names = [str(stream_keys[s]) for s in constant]
        v.add("constant-series", "warning",
              f"{len(constant):,} stream{'s' if len(constant) != 1 else ''} never change"
              f"{'s' if len(constant) == 1 else ''}: "
              f"{_fmt_list([f'{k!r} (y = {lo[s]:g})' for k, s in zip(names, constant)])}",
              streams=names, n_rows=int(count[constant].sum()),
              examples=[f"{k!r}: y = {lo[s]:g} in all {count[s]} rows" for k, s in zip(names, constant)],
              column=TARGET)


def _check_exog(v: _Validator, frame: pd.DataFrame) -> None:
    for col in frame.columns[3:]:
        values = frame[col]
        if not (pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype)):
            v.add("exog-non-numeric", "warning",
                  f"exogenous column {col!r} is not numeric ({values.dtype}); models that need numbers will "
                  f"not use it as is", column=str(col))
            continue
        n_missing = int(values.isna().sum())
        if n_missing:
            streams = sorted(set(frame.loc[values.isna(), ID].tolist()))
            v.add("exog-missing", "warning",
                  f"exogenous column {col!r} is missing in {n_missing:,} row{'s' if n_missing != 1 else ''} of "
                  f"{len(streams):,} stream{'s' if len(streams) != 1 else ''} (not filled)",
                  column=str(col), streams=streams, n_rows=n_missing)


def _key_column(keys: pd.Index, c: np.ndarray) -> pd.Series:
    """The ``unique_id`` column of the canonical frame: ``keys[c]`` as text, built in Arrow when pyarrow is
    there (no Python string per row: a large file's frame is about 15 bytes a row smaller)."""
    try:
        import pyarrow as pa
    except ImportError:  # pragma: no cover - pyarrow is a dependency; kept for minimal installs
        return pd.Series(keys.take(c), dtype="str")
    column = pd.Series(pd.array(pa.array(np.asarray(keys, dtype=object), type=pa.large_string()).take(pa.array(c)),
                                dtype="str"))
    return column if column.dtype == pd.Series(keys[:0], dtype="str").dtype else column.astype("str")


def _assemble(df: pd.DataFrame, idx: np.ndarray, keys: pd.Index, c: np.ndarray, t: np.ndarray,
              y: np.ndarray) -> pd.DataFrame:
    columns: dict[str, Any] = {
        ID: _key_column(keys, c),
        TIME: pd.Series(t.view("datetime64[ns]")),
        TARGET: pd.Series(y[idx], dtype=np.float64),
    }
    for col in df.columns:
        if col not in CANONICAL_COLUMNS:
            columns[col] = df[col].take(idx).reset_index(drop=True)
    # No copy: the columns are fresh arrays already (a copy would cost a large file two more of them).
    return pd.DataFrame(columns, copy=False)


# --------------------------------------------------------------------------------------------------------
# The project's boundary: rows checked against what a project already holds
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IngestLimits:
    """How far new rows may stray from a project's data before they are rejected (``[data]`` in mlma.toml).

    Parameters
    ----------
    max_ahead_ticks
        Rows whose ``ds`` is more than this many ticks after the project's newest accepted data are
        rejected (``ahead-of-fleet``): one row dated in 2200 would otherwise move the agent's clock by
        tens of thousands of empty ticks. A file that holds at least half of the project's streams (or the
        project's first file) moves the reference to the lower median over its streams of each stream's
        newest timestamp (a backfill after an outage), which a few wild rows cannot set. 0: no limit.
    max_future
        Rows later than the current time (UTC) plus this duration are rejected (``future-timestamp``):
        actuals are observations, and the clock must never run ahead of real time. One day of slack allows
        for local time stamps. None: no limit (for replaying data dated in the future).
    value_range_factor
        ``y`` is rejected (``out-of-range``) when it lies further outside the stream's range than this
        many times the range's scale. The range is the stream's stored values of its last 7 ticks (min
        to max; trusted, since they were accepted); for a stream without stored values, the interquartile
        range of its values in this file (robust: a few wild values cannot widen it). The scale is the
        largest of the range's width and its bounds' absolute values, so a stream of orders between 0 and
        120 accepts -12,000 to 12,120 with the default 100: real surges pass, unit errors and overflowing
        values do not. Streams whose range is all zeros are not checked this way. 0: off.
        The file's observed driver values (its numeric columns besides ``y``) are checked by the same rule,
        each against the driver's recent range over the file's streams (the union of their stored ranges,
        ``FleetContext.driver_ranges``, else of the interquartile ranges of their values of the driver in this
        file): a value outside is dropped, not stored, and its row is kept
        (``driver-out-of-range``), since one typed ``promo=1000`` in a 0/1 flag moved the stream's forecasts by
        40 % and widened the range a forecast's future values are checked against.
    max_abs_value
        ``|y|`` above this is rejected for every stream, new ones included (``out-of-range``): far below
        the float64 overflow that turned one value of 1e308 into infinite losses and a tick that could not
        be stored, far above any count or amount a forecast is made for.

    Examples
    --------
    >>> IngestLimits(max_future="12h").max_future
    Timedelta('0 days 12:00:00')
    >>> IngestLimits(max_abs_value=-1)
    Traceback (most recent call last):
    ...
    ValueError: max_abs_value must be a positive finite number, got -1
    """

    max_ahead_ticks: int = 7
    max_future: Any = "1D"
    value_range_factor: float = 100.0
    max_abs_value: float = 1e15

    def __post_init__(self) -> None:
        if isinstance(self.max_ahead_ticks, bool) or not isinstance(self.max_ahead_ticks, (int, np.integer)) \
                or not 0 <= self.max_ahead_ticks <= 1_000_000:
            raise ValueError(f"max_ahead_ticks must be an integer from 0 (no limit) to 1,000,000, got "
                             f"{self.max_ahead_ticks!r}")
        if self.max_future is not None:
            try:
                future = pd.Timedelta(self.max_future)
            except (ValueError, TypeError):
                raise ValueError(f"max_future must be a duration such as '1D' or '12h', or 'off', got "
                                 f"{self.max_future!r}") from None
            if future is pd.NaT or future < pd.Timedelta(0) or future > pd.Timedelta(days=36_500):
                raise ValueError(f"max_future must be a duration from 0 to 100 years, got {self.max_future!r}")
            object.__setattr__(self, "max_future", future)
        for name, lowest in (("value_range_factor", 0.0), ("max_abs_value", None)):
            value = getattr(self, name)
            ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool) \
                and math.isfinite(value) and (value >= 0 if lowest is not None else value > 0)
            if not ok:
                kind = "a finite number >= 0 (0: off)" if lowest is not None else "a positive finite number"
                raise ValueError(f"{name} must be {kind}, got {value!r}")


@dataclass(frozen=True)
class FleetContext:
    """What a project already holds, to check new rows against (see :func:`validate`).

    Attributes
    ----------
    freq, tick
        The project's frequency and tick length (its clock); None while not known yet.
    front
        The project's newest accepted timestamp; None for a project without data.
    n_streams
        How many streams the project knows: a file with at least half of them may move ``front`` forward.
    ranges
        Per stream (index ``unique_id``): ``lo`` and ``hi``, the min and max of its recently stored values.
    driver_ranges
        Per stream and driver (index ``unique_id, name``): ``lo`` and ``hi``, the min and max of its recently
        stored observed driver values (``Store.driver_ranges``); the file's observed driver values are checked
        against them (``driver-out-of-range``, see :class:`IngestLimits`). None: taken from the file alone.
    now
        The current time, UTC, tz-naive (default: the time of the check).
    limits
        :class:`IngestLimits`.
    clock_note
        How the clock was set, for messages (e.g. ``"fixed by the first ingest, day-1.csv"``).
    kept_from
        The time before which the project was pruned (``Store.kept_from``): older rows are dropped.
    verbatim_ids
        Ids with spaces around them that the project already holds as they are: not stripped.
    time_zones
        How the project's timestamps came (``Store.time_zones``): ``"zoned"`` (with time zones or offsets, kept
        in UTC), ``"naive"`` (on the local clock of its first files), or None (no data yet). A file of the other
        kind is refused whole: converting or not converting it would shift it by its offset.
    """

    freq: Frequency | None = None
    tick: str | None = None
    front: pd.Timestamp | None = None
    ranges: pd.DataFrame | None = None
    driver_ranges: pd.DataFrame | None = None
    now: pd.Timestamp | None = None
    limits: IngestLimits = field(default_factory=IngestLimits)
    clock_note: str = "the project's clock"
    n_streams: int = 0
    kept_from: pd.Timestamp | None = None
    verbatim_ids: frozenset[str] = frozenset()
    time_zones: str | None = None


_OFFSET_AT_END = r":\d{2}(?::\d{2})?(?:[.,]\d+)?\s*(?:[Zz]|UTC|GMT|[+-]\d{2}(?::?\d{2})?)$"


def _check_timezone_mix(v: _Validator, column: pd.Series, parsed: np.ndarray) -> None:
    """Refuse a column that mixes naive timestamps with ones that carry a UTC offset or time zone.

    Converting such a column to UTC would treat the naive ones as UTC, a guess that silently moves them by
    the offset (it revised 37 scored values when measured); which clock they are on is the sender's to say.
    """
    if isinstance(column.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_dtype(column.dtype):
        return
    codes, uniques = pd.factorize(column, use_na_sentinel=True)
    uniques = pd.Series(np.asarray(uniques, dtype=object))
    text = uniques.map(lambda u: isinstance(u, str))
    aware = uniques.map(lambda u: getattr(u, "tzinfo", None) is not None)
    aware[text] = uniques[text].str.strip().str.contains(_OFFSET_AT_END, regex=True).to_numpy(dtype=bool)
    aware = aware.to_numpy(dtype=bool)
    valid = np.bincount(codes[(codes >= 0) & parsed], minlength=len(uniques)) > 0
    if not (aware & valid).any() or not (~aware & valid).any():
        return
    row_aware = np.zeros(len(column), dtype=bool)
    row_naive = np.zeros(len(column), dtype=bool)
    has = codes >= 0
    row_aware[has] = aware[codes[has]] & parsed[has]
    row_naive[has] = ~aware[codes[has]] & parsed[has]
    naive_pos, aware_pos = np.flatnonzero(row_naive), np.flatnonzero(row_aware)
    v.add("mixed-timezones", "error",
          f"the ds column mixes {len(naive_pos):,} timestamp{'s' if len(naive_pos) != 1 else ''} without a time "
          f"zone ({v.where(naive_pos)}, e.g. {column.iloc[naive_pos[0]]!r}) with {len(aware_pos):,} that carry "
          f"a UTC offset or zone ({v.where(aware_pos)}, e.g. {column.iloc[aware_pos[0]]!r}); which clock the "
          f"naive ones are on cannot be guessed: give every timestamp an offset, or none",
          n_rows=len(naive_pos), column=TIME, positions=naive_pos,
          examples=[v.example(p, None, f"ds={column.iloc[p]!r}") for p in naive_pos[:_MAX_EXAMPLES]])


def _check_time_zones_match(v: _Validator, project: str | None, zoned: bool) -> None:
    """Refuse a file whose timestamps are not of the project's kind (:attr:`FleetContext.time_zones`)."""
    if project == "zoned" and not zoned:
        v.add("timezone-mismatch", "error",
              "the ds timestamps carry no time zone, but this project's came with time zones and are kept in UTC: "
              "give each timestamp its offset (2025-02-03T14:00:00+01:00, or Z for UTC); read as UTC, local times "
              "would be shifted by their offset", column=TIME)
    elif project == "naive" and zoned:
        v.add("timezone-mismatch", "error",
              "the ds timestamps carry time zones, but this project's are tz-naive, on the clock of its first "
              "files: give tz-naive timestamps on that clock; converted to UTC, they would be shifted by their "
              "offset", column=TIME)


def _check_against_context(v: _Validator, context: FleetContext, df: pd.DataFrame, alive: np.ndarray,
                           codes: np.ndarray, keys: pd.Index, ns: np.ndarray, y: np.ndarray) -> None:
    """Rows that break the project's boundary (see :class:`IngestLimits`) become bad rows."""
    limits = context.limits
    raw_y, raw_ds = df[TARGET], df[TIME]

    def reject(code: str, mask: np.ndarray, what: str, column: str, detail) -> None:
        """Drop (or refuse) the live rows of ``mask``; ``what`` says what one is, its first word the noun."""
        bad = np.flatnonzero(mask & alive)
        if len(bad):
            noun, _, rest = what.partition(" ")
            what = f"{noun}{'' if len(bad) == 1 else 's'} {rest}".rstrip()
            v.bad_rows(code, bad, keys[codes[bad]].to_numpy(), what, column,
                       [v.example(p, str(keys[codes[p]]), detail(p)) for p in bad[:_MAX_EXAMPLES]])
            alive[bad] = False

    reject("out-of-range", (y > limits.max_abs_value) | (y < -limits.max_abs_value),
           f"row whose |y| exceeds max_abs_value={limits.max_abs_value:g}", TARGET,
           lambda p: f"y={raw_y.iloc[p]!r}")
    if context.kept_from is not None:
        # Dropped in both modes, as exact duplicates are: a file re-sent whole (the usual daily export) holds
        # them, they are not bad data, and the project chose not to keep them.
        old = np.flatnonzero((ns < context.kept_from.value) & alive)
        if len(old):
            v.add("before-kept", "dropped", f"dropped {len(old):,} row{'s' if len(old) != 1 else ''} older than the "
                  f"data the project keeps (pruned before {context.kept_from}): {v.where(old)}", n_rows=len(old),
                  positions=old, column=TIME,
                  examples=[v.example(p, str(keys[codes[p]]), f"ds={raw_ds.iloc[p]!r}") for p in old[:_MAX_EXAMPLES]])
            alive[old] = False
    now = context.now if context.now is not None else pd.Timestamp.now(tz="UTC").tz_localize(None)
    if limits.max_future is not None:
        latest = now + limits.max_future
        reject("future-timestamp", ns > latest.value,
               f"timestamp later than now plus max_future ({_fmt_ts(latest.value)} UTC)", TIME,
               lambda p: f"ds={raw_ds.iloc[p]!r}")
    if context.freq is not None and context.tick is not None and alive.any():
        _check_project_grid(v, context, alive, codes, keys, ns, reject, raw_ds)
    if context.tick is not None and limits.max_ahead_ticks and alive.any():
        front = context.front
        newest = np.full(len(keys), _NAT, dtype=np.int64)
        live = alive & (codes >= 0)
        np.maximum.at(newest, codes[live], ns[live])
        newest = np.sort(newest[newest != _NAT])
        # A file that covers at least half of the project's streams may move the reference forward (a
        # backfill after an outage): to its streams' lower median newest timestamp, which a few wild rows
        # cannot move. A file of a few streams is judged against the project's data alone.
        if len(newest) and (front is None or 2 * len(newest) >= context.n_streams):
            file_front = pd.Timestamp(int(newest[(len(newest) - 1) // 2]))
            front = file_front if front is None else max(pd.Timestamp(front), file_front)
        limit = pd.Timestamp(front) + limits.max_ahead_ticks * to_offset(context.tick)
        reject("ahead-of-fleet", ns > limit.value,
               f"timestamp more than max_ahead_ticks={limits.max_ahead_ticks} ticks of {context.tick} after the "
               f"project's newest data ({_fmt_ts(pd.Timestamp(front).value)}; limit {_fmt_ts(limit.value)})", TIME,
               lambda p: f"ds={raw_ds.iloc[p]!r}")


def _check_project_grid(v: _Validator, context: FleetContext, alive: np.ndarray, codes: np.ndarray,
                        keys: pd.Index, ns: np.ndarray, reject, raw_ds: pd.Series) -> None:
    """Timestamps off the project's grid (:func:`on_tick_grid`), which all streams share in live operation.

    A stray row is rejected on its own; a stream with most of its rows off the grid is data of another
    frequency (an hourly file in a daily project) or of a shifted clock. With drop, when such streams are fewer
    than half of the file's, their rows are dropped (``stream-off-grid``) and the fleet's are kept, as for
    streams spaced at another frequency (``stream-frequency``); otherwise they refuse the whole file.
    """
    on = np.ones(len(ns), dtype=bool)
    for lo in range(0, len(ns), _BLOCK_ROWS):  # in slices: bounded temporaries for a large file
        part, live = on[lo:lo + _BLOCK_ROWS], alive[lo:lo + _BLOCK_ROWS]
        part[live] = on_tick_grid(ns[lo:lo + _BLOCK_ROWS][live].view("datetime64[ns]"), context.freq, context.tick)
    off = alive & ~on & (codes >= 0)
    if not off.any():
        return
    n_all = np.bincount(codes[alive & (codes >= 0)], minlength=len(keys))
    n_off = np.bincount(codes[off], minlength=len(keys))
    other = (2 * n_off > n_all) & (n_all >= 2)
    zoned_days = _zoned_days_hint(context, raw_ds, np.flatnonzero(off))
    if other.any():
        names = [str(k) for k in keys[np.flatnonzero(other)]]
        rows = np.flatnonzero(off & other[np.maximum(codes, 0)])
        offsets = grid_offsets(ns[rows].view("datetime64[ns]"), context.freq, context.tick)
        if zoned_days:
            what = f"off the project's {context.freq.alias} grid ({context.clock_note}): {zoned_days}"
        elif offsets is not None and len(np.unique(offsets)) == 1:
            # Every row off the grid by the same amount: the project's frequency with a shifted clock.
            minutes, seconds = divmod(int(offsets[0]) // 1_000_000_000, 60)
            shift = " ".join(part for part in (f"{minutes // 60} h" if minutes >= 60 else "",
                                               f"{minutes % 60} min" if minutes % 60 else "",
                                               f"{seconds} s" if seconds else "") if part) or "under a second"
            what = (f"off the project's {context.freq.alias} grid ({context.clock_note}), every one by the same "
                    f"{shift} after it: the project's frequency with a shifted clock (a time zone with a "
                    f"{shift} offset, a logger stamping late?); give timestamps on the grid")
        else:
            what = (f"off the project's {context.freq.alias} grid ({context.clock_note}): this looks like data of "
                    "another frequency")
        examples = [v.example(p, str(keys[codes[p]]), f"ds={raw_ds.iloc[p]!r}") for p in rows[:_MAX_EXAMPLES]]
        in_file = int(np.count_nonzero(n_all))
        if v.drop and 2 * len(names) < in_file:
            # One zone's logger on a shifted clock is its trouble, not the fleet's: its rows (all of them, the
            # few on the grid too: a stream's data on two clocks is not to be trusted) go, the others' stay.
            every = np.flatnonzero(alive & other[np.maximum(codes, 0)] & (codes >= 0))
            v.bad_rows("stream-off-grid", every, keys[codes[every]].to_numpy(),
                       f"row{'s' if len(every) != 1 else ''} of {'a stream' if len(names) == 1 else 'streams'} with "
                       f"most timestamps {what}", TIME, examples)
            alive[every] = False
            v.streams_off_clock += len(names)
        else:
            v.add("mixed-frequency", "error",
                  f"stream{'s' if len(names) != 1 else ''} {_fmt_list([repr(k) for k in names])} "
                  f"{'have' if len(names) != 1 else 'has'} most timestamps {what}, e.g. {v.where(rows)}",
                  streams=names, n_rows=len(rows), column=TIME, positions=rows, examples=examples)
        off &= ~other[np.maximum(codes, 0)]
    reject("off-grid", off, f"timestamp off the project's {context.freq.alias} grid ({context.clock_note})"
           + (f" ({zoned_days})" if zoned_days else ""), TIME, lambda p: f"ds={raw_ds.iloc[p]!r}")


def _zoned_days_hint(context: FleetContext, raw_ds: pd.Series, rows: np.ndarray) -> str:
    """Why rows of whole days are off the grid when their timestamps carry a UTC offset, or "": dates written at
    local midnight with their offset (``2024-01-01T00:00+01:00``) are converted to UTC on reading, which moves
    them off their day (to 23:00 the day before; to 22:00 in summer time)."""
    whole_days = context.freq.is_calendar or context.freq.step >= pd.Timedelta(days=1)
    if not whole_days or not len(rows):
        return ""
    zoned = [text for text in (str(raw_ds.iloc[p]).strip() for p in rows[:20])
             if re.search(r"(Z|[+-]\d\d:?\d\d)$", text)]
    if not zoned:
        return ""
    utc = pd.Timestamp(zoned[0]).tz_convert("UTC").tz_localize(None)
    return (f"they carry a UTC offset ({zoned[0]!r} is {utc} in UTC, the time mlma reads it as), so dates written "
            "at local midnight land off their day, by another amount in summer time; for data of whole days write "
            "the dates without an offset (2024-01-01)")


def range_bounds(lo, hi, factor: float) -> tuple[np.ndarray, np.ndarray]:
    """Bounds beyond which a value is out of a range ``lo..hi`` (arrays): further outside than ``factor`` times
    the range's scale, the larger of its width and its bounds' sizes, so that 0..120 accepts -12,000..12,120
    with the factor 100. -inf/inf where the range cannot judge: no value (NaN), all zeros, or ``factor`` 0.
    The rule of ``IngestLimits.value_range_factor`` for ``y``, and of the future drivers' values a forecast is
    made from (:class:`mlma.training.ModelService`).

    >>> low, high = range_bounds(np.array([0.0, 0.0, np.nan]), np.array([120.0, 0.0, np.nan]), 100)
    >>> low.tolist(), high.tolist()
    ([-12000.0, -inf, -inf], [12120.0, inf, inf])
    """
    lo, hi = np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
    with np.errstate(invalid="ignore"):
        scale = np.maximum(hi - lo, np.maximum(np.abs(lo), np.abs(hi)))
    judged = np.isfinite(scale) & (scale > 0) & (factor > 0)
    return np.where(judged, lo - factor * scale, -np.inf), np.where(judged, hi + factor * scale, np.inf)


def _set_quartiles(lo: np.ndarray, hi: np.ndarray, values: np.ndarray, codes: np.ndarray) -> None:
    """Each stream's first and third quartile of ``values`` (its rows' stream ``codes``, a block of whole
    streams) into ``lo`` and ``hi`` at its code: the interquartile range a range check judges a stream by when
    nothing of it is stored (robust: a few wild values cannot widen it).

    >>> lo, hi = np.full(2, np.nan), np.full(2, np.nan)
    >>> _set_quartiles(lo, hi, np.array([5.0, 1.0, 9.0, 3.0, 7.0, 40.0]), np.array([0, 0, 0, 0, 0, 1]))
    >>> lo.tolist(), hi.tolist()
    ([3.0, 40.0], [7.0, 40.0])
    """
    order = np.lexsort((values, codes))
    sorted_codes = codes[order]
    starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
    counts = np.diff(np.r_[starts, len(sorted_codes)])
    lo[sorted_codes[starts]] = values[order[starts + (counts - 1) // 4]]
    hi[sorted_codes[starts]] = values[order[starts + (3 * (counts - 1)) // 4]]


def _check_value_range(v: _Validator, context: FleetContext, idx: np.ndarray, c: np.ndarray, t: np.ndarray,
                       y: np.ndarray, keys: pd.Index, raw_y: pd.Series):
    """Rows whose ``y`` lies far outside the stream's range (see :class:`IngestLimits`), on rows sorted by
    stream; returns the rows kept. The range is the stored recent min..max, else the interquartile range of
    the stream's values in this file, computed in blocks of whole streams (bounded temporaries)."""
    factor = context.limits.value_range_factor
    lo, hi = np.full(len(keys), np.nan), np.full(len(keys), np.nan)
    for a, b in _stream_blocks(c):
        _set_quartiles(lo, hi, y[idx[a:b]], c[a:b])
    if context.ranges is not None and len(context.ranges):
        stored = context.ranges.reindex(pd.Index(keys, dtype=object).astype(str))
        known = stored["lo"].notna().to_numpy()
        lo[known] = stored["lo"].to_numpy(dtype=np.float64)[known]
        hi[known] = stored["hi"].to_numpy(dtype=np.float64)[known]
    low, high = range_bounds(lo, hi, factor)
    bad = []
    for a, b in _stream_blocks(c):
        yb, cb = y[idx[a:b]], c[a:b]
        bad.append(a + np.flatnonzero((yb < low[cb]) | (yb > high[cb])))
    bad = np.concatenate(bad) if bad else np.empty(0, dtype=np.int64)
    if len(bad) == 0:
        return idx, c, t
    v.bad_rows("out-of-range", idx[bad], keys[c[bad]].to_numpy(),
               f"row{'s' if len(bad) != 1 else ''} whose y lies more than value_range_factor={factor:g} times the "
               f"stream's scale outside its recent range", TARGET,
               [v.example(idx[p], str(keys[c[p]]), f"y={raw_y.iloc[idx[p]]!r}, range {lo[c[p]]:g} to {hi[c[p]]:g}")
                for p in bad[:_MAX_EXAMPLES]])
    keep = np.ones(len(idx), dtype=bool)
    keep[bad] = False
    return idx[keep], c[keep], t[keep]


def _check_driver_ranges(v: _Validator, context: FleetContext, frame: pd.DataFrame, idx: np.ndarray,
                         c: np.ndarray, keys: pd.Index) -> None:
    """Observed driver values far outside the driver's recent range (the rule of ``y``, :class:`IngestLimits`):
    set missing in ``frame`` (rows aligned with ``idx``/``c``, sorted by stream), so that they are not stored,
    and reported per driver (``driver-out-of-range``); their rows are kept.

    The range is the driver's over the file's streams: the union of each stream's stored recent range
    (``context.driver_ranges``), or, for a stream without one, of the interquartile range of its values in this
    file; where that union is all 0, the column's interquartile range in this file. Over the streams, not per
    stream as for ``y``: a driver is one quantity in one unit for the fleet, and a stream's own window is often
    flat or nearly (a 0/1 flag without a promotion; a dry week's 0.1 mm of rain), against which a real event
    (a storm of 20 mm) would be dropped where a typed ``promo=1000`` should be."""
    factor = context.limits.value_range_factor
    if not factor or not len(idx):
        return
    stored = context.driver_ranges
    names = set(stored.index.get_level_values("name")) if stored is not None and len(stored) else set()
    text_keys = pd.Index(keys, dtype=object).astype(str)
    for col in frame.columns:
        if col in CANONICAL_COLUMNS or pd.api.types.is_bool_dtype(frame[col].dtype) \
                or not pd.api.types.is_numeric_dtype(frame[col].dtype):
            continue  # a flag of True/False cannot stray, and non-numbers are not stored as driver values
        values = frame[col].to_numpy(dtype=np.float64, na_value=np.nan, copy=True)  # set below: not a view
        finite = np.isfinite(values)
        if not finite.any():
            continue
        lo, hi = np.full(len(keys), np.nan), np.full(len(keys), np.nan)
        known = np.zeros(len(keys), dtype=bool)
        if str(col) in names:
            held = stored.xs(str(col), level="name").reindex(text_keys)
            known = held["lo"].notna().to_numpy()
            lo[known] = held["lo"].to_numpy(dtype=np.float64)[known]
            hi[known] = held["hi"].to_numpy(dtype=np.float64)[known]
        # Streams without a stored range: the interquartile range of their values here (robust: the typo among
        # them cannot widen it), only computed for them, in blocks of whole streams (bounded temporaries).
        fresh = finite & ~known[c]
        for a, b in _stream_blocks(c) if fresh.any() else ():
            if fresh[a:b].any():
                _set_quartiles(lo, hi, values[a:b][fresh[a:b]], c[a:b][fresh[a:b]])
        low_value, high_value = np.nanmin(lo), np.nanmax(hi)
        if low_value == 0 and high_value == 0:  # every stream flat at 0: the column's spread in this file
            column = values[finite]
            k = [(len(column) - 1) // 4, (3 * (len(column) - 1)) // 4]
            low_value, high_value = np.partition(column, k)[k]
            del column
        (low,), (high,) = range_bounds([low_value], [high_value], factor)
        with np.errstate(invalid="ignore"):
            bad = np.flatnonzero(finite & ((values < low) | (values > high)))
        if not len(bad):
            continue
        streams = sorted(set(text_keys[c[bad]].tolist()))
        n = len(bad)
        what = (f"{n:,} value{'s' if n != 1 else ''} of driver {col!r} lying more than value_range_factor="
                f"{factor:g} times the scale outside the driver's recent range over the file's streams "
                f"({low_value:g} to {high_value:g}), in stream{'s' if len(streams) != 1 else ''} "
                f"{_fmt_list([repr(s) for s in streams])}: {v.where(idx[bad])}")
        examples = [v.example(idx[p], str(text_keys[c[p]]), f"{col}={values[p]:g}, range {low_value:g} to "
                              f"{high_value:g} (the driver's over the file's streams)") for p in bad[:_MAX_EXAMPLES]]
        if v.drop:
            v.add("driver-out-of-range", "dropped",
                  f"dropped {what}; {'that value was' if n == 1 else 'those values were'} not stored (a value "
                  f"stored before stays in force), the row{'s' if n != 1 else ''} kept (y and the other values "
                  "stored)", streams=streams, n_rows=n, examples=examples,
                  column=str(col), positions=idx[bad])
        else:
            v.add("driver-out-of-range", "error", what, streams=streams, n_rows=n, examples=examples,
                  column=str(col), positions=idx[bad])
        values[bad] = np.nan
        frame[col] = values  # float: an integer column cannot hold the missing value


# --------------------------------------------------------------------------------------------------------
# Frequency inference on canonical frames
# --------------------------------------------------------------------------------------------------------


def infer_frequency(df: pd.DataFrame) -> Frequency:
    """The fleet's frequency: each stream's modal timestamp spacing, which must agree across streams.

    Gaps do not matter (the most common spacing wins); month, quarter and year steps are recognised from
    calendar months, stamped on the first (``MS``, ``QS``, ``YS``) or last (``ME``, ``QE``, ``YE``) day.

    Parameters
    ----------
    df
        A frame with ``unique_id`` and datetime-like ``ds`` (need not be sorted).

    Raises
    ------
    DataError
        When streams disagree (naming them and their spacing) or no stream has two timestamps.

    Examples
    --------
    >>> import pandas as pd
    >>> ds = pd.date_range("2024-01-31", periods=6, freq="ME")
    >>> infer_frequency(pd.DataFrame({"unique_id": "a", "ds": ds})).alias
    'ME'
    >>> mixed = pd.DataFrame({"unique_id": ["a"] * 3 + ["b"] * 3,
    ...                       "ds": list(pd.date_range("2024-01-01", periods=3, freq="h"))
    ...                             + list(pd.date_range("2024-01-01", periods=3, freq="D"))})
    >>> infer_frequency(mixed)
    Traceback (most recent call last):
    ...
    mlma.data.DataError: streams disagree on the frequency: 'a' looks h, 'b' looks D
    """
    missing = [c for c in (ID, TIME) if c not in df.columns]
    if missing:
        raise DataError(f"missing column {missing[0]!r}; columns present: "
                        f"{', '.join(repr(str(c)) for c in df.columns)}", column=missing[0])
    codes, keys, id_missing, _ = _stream_keys(df[ID])
    ns, bad, _, foreign = _parse_dates(df[TIME])
    if foreign is not None:
        raise DataError(foreign.message(TIME), column=TIME)
    ok = ~bad & ~id_missing
    c, t = codes[ok], ns[ok]
    order = np.lexsort((t, c))
    c, t = c[order], t[order]
    keep = np.r_[True, (c[1:] != c[:-1]) | (t[1:] != t[:-1])]
    c, t = c[keep], t[keep]
    if len(c) == 0:
        raise DataError("cannot infer the frequency: no rows with a valid timestamp", column=TIME)
    new_stream = np.r_[True, c[1:] != c[:-1]]
    stream = np.cumsum(new_stream) - 1
    stream_keys = keys[c[new_stream]]
    specs = _infer_stream_specs(stream, t, len(stream_keys))
    known = np.flatnonzero(specs.kind > 0)
    if len(known) == 0:
        raise FrequencyPending("cannot infer the frequency: every stream has a single timestamp", column=TIME)
    described: dict[str, list[str]] = {}
    for s in known:
        described.setdefault(_describe_stream_spec(specs, s), []).append(str(stream_keys[s]))
    if len(described) > 1 or np.any(specs.kind[known] == 3):
        parts = [f"{_fmt_list([repr(k) for k in ks])} look{'s' if len(ks) == 1 else ''} {alias}"
                 for alias, ks in sorted(described.items(), key=lambda kv: -len(kv[1]))]
        streams = [k for ks in described.values() for k in ks]
        raise DataError(f"streams disagree on the frequency: {', '.join(parts)}", column=TIME,
                        streams=streams)
    return Frequency(_alias_from_spec(specs.spec(int(known[0]))))


# -- values of drivers known in advance ----------------------------------------------------------------------
def read_future_drivers(source: Any, *, id_col: str = ID, time_col: str = TIME, target_col: str = TARGET,
                        verbatim_ids: frozenset[str] = frozenset(), time_zones: str | None = None) -> pd.DataFrame:
    """Read and check a file (or frame) of driver values known in advance, for ``mlma ingest --future``.

    The rows carry ``unique_id``, ``ds`` and one numeric column per driver (a weather forecast, a planned
    campaign flag, a price), and no target: these timestamps have not happened yet. Empty cells are allowed
    (a value not known for that timestamp: the forecast then uses the documented fallback, see
    docs/data.md). Their timestamps must be of the project's kind (``time_zones``, as
    :attr:`FleetContext.time_zones`; :meth:`mlma.store.Store.ingest_future` knows it): with time zones in a
    ``"zoned"`` project (converted to UTC, the note in ``attrs["timezone_note"]``), tz-naive otherwise.

    Returns
    -------
    pandas.DataFrame
        ``unique_id`` (str), ``ds`` (tz-naive datetime64[ns]) and the driver columns (float64), in the
        source's row order.

    Raises
    ------
    DataError
        Naming the file, column and rows: a missing id or time column, a target column, no driver column, no
        row, an unparseable timestamp, a non-numeric driver value, or a repeated ``(unique_id, ds)``.

    Examples
    --------
    >>> frame = pd.DataFrame({"unique_id": ["a", "a"], "ds": ["2025-01-02 00:00", "2025-01-02 01:00"],
    ...                       "temperature": [3.5, None]})
    >>> read_future_drivers(frame).dtypes.astype(str).to_dict()
    {'unique_id': 'str', 'ds': 'datetime64[ns]', 'temperature': 'float64'}
    >>> read_future_drivers(frame.assign(y=1.0))
    Traceback (most recent call last):
    ...
    mlma.data.DataError: data frame: a file of future driver values has no target column 'y' (actuals are ingested without --future)
    """
    if isinstance(source, pd.DataFrame):
        frame, label = source, "data frame"
    else:
        path = Path(source)
        label = str(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file")
        # Ids stay text, as in the actuals' files: "007" is not stream "7", and "NA" is an id, not missing.
        if is_parquet(path):
            check_column_names(file_columns(path), label, source=label)
            frame = pd.read_parquet(path)
        else:
            frame = _read_csv(path, [id_col])
    check_column_names(list(frame.columns), label, source=label)
    # Line numbers as the user sees them in a CSV file (header on line 1), rows of a Parquet file from 1, index
    # labels of a frame.
    if isinstance(source, pd.DataFrame):
        line = lambda i: frame.index[i]  # noqa: E731 - one of three numberings
    elif is_parquet(source):
        line = lambda i: i + 1  # noqa: E731
    else:
        line = lambda i: i + 2  # noqa: E731
    missing = [c for c in (id_col, time_col) if c not in frame.columns]
    if missing:
        raise DataError(f"{label}: missing column(s) {missing}; columns present: {list(frame.columns)}",
                        source=label, column=missing[0])
    if target_col in frame.columns:
        raise DataError(f"{label}: a file of future driver values has no target column {target_col!r} (actuals "
                        "are ingested without --future)", source=label, column=target_col)
    drivers = [c for c in frame.columns if c not in (id_col, time_col)]
    if not drivers:
        raise DataError(f"{label}: no driver column besides {id_col!r} and {time_col!r}", source=label)
    if not len(frame):
        raise DataError(f"{label}: the file has no rows (a header only): no future driver value to store",
                        source=label)
    ids = frame[id_col]
    # Blank by the id rule: white space or invisible characters only ("\u200b") name no stream either.
    bad = np.flatnonzero(ids.isna().to_numpy() | (stream_id_text(ids.astype(str)) == "").to_numpy(dtype=bool))
    if bad.size:
        raise DataError(f"{label}: {bad.size} row(s) without a {id_col} (missing, empty or blank), first on "
                        f"line/row {line(bad[0])}",
                        source=label, column=id_col, rows=[line(i) for i in bad[:20]])
    texts = stream_id_text(ids, verbatim_ids)
    codes, distinct = pd.factorize(texts)  # each distinct id judged once, not each of its rows
    bad = np.flatnonzero(unusable_ids(distinct)[codes])
    if bad.size:
        raise DataError(f"{label}: {bad.size} row(s) whose {id_col} no store keeps, first on line/row "
                        f"{line(bad[0])}: {why_unusable(str(texts.iloc[bad[0]]))}",
                        source=label, column=id_col, rows=[line(i) for i in bad[:20]])
    try:  # ISO 8601 text or datetimes only, as for the actuals: a day-first date is never guessed
        ns, unread, tz_note, foreign = _parse_dates(frame[time_col])
    except DataError:
        what = ("is empty: no row has a timestamp" if frame[time_col].isna().all()
                else f"holds numbers ({frame[time_col].dtype}), not timestamps")
        raise DataError(f"{label}: column {time_col!r} {what}; give ISO dates (YYYY-MM-DD HH:MM)", source=label,
                        column=time_col) from None
    if foreign is not None:
        raise DataError(f"{label}: " + foreign.message(time_col, f" on line/row {line(foreign.rows[0])}"),
                        source=label, column=time_col, rows=[line(i) for i in foreign.rows[:20]])
    if tz_note is not None and time_zones is None:
        raise DataError(f"{label}: column {time_col!r} carries time zones, and no checked file of actuals tells yet "
                        "which clock this project's timestamps are on: ingest its actuals first",
                        source=label, column=time_col)
    # The project's kind of timestamps and a naive/zoned mix, by the checks of the actuals' files.
    checked = frame.rename(columns={time_col: TIME})
    if not isinstance(source, pd.DataFrame):
        checked.attrs[_ATTR_FIRST_LINE] = line(0)  # the file's numbering, as `line` counts
    check = _Validator(checked, label, "raise")
    if (~unread).any():
        _check_time_zones_match(check, time_zones or "naive", tz_note is not None)
    if tz_note is not None and not check.findings:
        _check_timezone_mix(check, frame[time_col], ~unread)  # converted to UTC, as the actuals, unless mixed
    if check.findings:
        raise DataError(f"{label}: {check.findings[0].message}", source=label, column=time_col)
    stamps = pd.Series(ns.view("datetime64[ns]"), index=frame.index)
    bad = np.flatnonzero(unread)
    if bad.size:
        raise DataError(f"{label}: {bad.size} timestamp(s) in {time_col!r} cannot be read, first "
                        f"{frame[time_col].iloc[bad[0]]!r} on line/row {line(bad[0])}", source=label,
                        column=time_col, rows=[line(i) for i in bad[:20]])
    out = pd.DataFrame({ID: texts.to_numpy(),
                        TIME: stamps.to_numpy(dtype="datetime64[ns]")})
    out[ID] = out[ID].astype("str")
    for c in drivers:
        if pd.api.types.is_datetime64_any_dtype(frame[c]) or pd.api.types.is_timedelta64_dtype(frame[c]):
            # to_numeric would make nanoseconds of them: a driver of epoch numbers no model can use
            raise DataError(f"{label}: column {c!r} holds times ({frame[c].dtype}), not numbers; every column "
                            f"besides {id_col!r} and {time_col!r} is a driver: drop it from the file",
                            source=label, column=str(c))
        values = pd.to_numeric(frame[c], errors="coerce")
        bad = np.flatnonzero(values.isna().to_numpy() & frame[c].notna().to_numpy())
        if bad.size:
            raise DataError(f"{label}: driver column {c!r} has {bad.size} non-numeric value(s), first "
                            f"{frame[c].iloc[bad[0]]!r} on line/row {line(bad[0])}", source=label, column=str(c),
                            rows=[line(i) for i in bad[:20]])
        bad = np.flatnonzero(np.isinf(values.to_numpy(dtype=np.float64, na_value=np.nan)))
        if bad.size:
            written = str(frame[c].iloc[bad[0]])
            if not isinstance(source, pd.DataFrame) and not is_parquet(source):
                written = _csv_cell(Path(source), c, int(bad[0])) or written  # as written: 1e400 read as inf
            raise DataError(f"{label}: driver column {c!r} has {bad.size} infinite value(s), first "
                            f"{written!r} on line/row {line(bad[0])}: give a number, or leave the "
                            "cell empty (not known)", source=label, column=str(c), rows=[line(i) for i in bad[:20]])
        out[str(c)] = values.to_numpy(dtype=np.float64)
    dup = np.flatnonzero(out.duplicated([ID, TIME], keep=False).to_numpy())
    if dup.size:
        raise DataError(f"{label}: {dup.size} rows repeat a ({id_col}, {time_col}), first {out[ID].iloc[dup[0]]!r} "
                        f"at {out[TIME].iloc[dup[0]]} on line/row {line(dup[0])}", source=label,
                        rows=[line(i) for i in dup[:20]], unique_id=str(out[ID].iloc[dup[0]]))
    if tz_note is not None:
        out.attrs["timezone_note"] = tz_note
    return out
