"""The validation boundary of a project's ingest: untrusted rows in, checked rows stored, the rest listed.

:func:`ingest_checked` (``Store.ingest_file``, ``mlma ingest``) is what a feed that mlma does not control
goes through:

1. The file's sha256 is looked up first: content ingested before is not parsed again (idempotent).
2. The project's clock is read: frequency and tick, fixed by the first ingest that could tell them (or by
   ``[data] freq`` / ``tick`` in mlma.toml) and never changed after. A file whose frequency differs is
   refused whole, naming the streams and what they look like; nothing is written. (With ``"drop"``, a
   minority of streams spaced otherwise only lose their rows; a stream with gaps is not another frequency.)
3. The rows are validated (:func:`mlma.data.validate`) with a :class:`~mlma.data.FleetContext`: the
   project's newest data and each stream's recent range of values, and of each of its drivers' observed
   values, checked with :class:`~mlma.data.IngestLimits`. With ``on_bad_rows="drop"`` (the default) bad rows
   are rejected and the good ones kept, and a driver value out of range is dropped from its row, which is kept
   (``driver-out-of-range``); with ``"raise"`` (``mlma ingest --strict``) one bad row or value rejects the file.
4. Every rejected row is listed in a CSV file (``rejects=``): its line, stream, raw values, the finding's
   code and column, and why; so is every row whose driver value was dropped, its value in the reason.
5. The good rows are upserted in one transaction, together with the clock if this ingest fixed it, and
   their further numeric columns as observed driver values (:mod:`mlma.store.drivers`).

Nothing already accepted is lost or changed by a rejected row or a refused file: the only writes are the
final transaction's.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mlma.store.drivers import driver_columns
from mlma.store.records import Clock, IngestReport  # noqa: F401 - IngestReport is what ingest_checked returns
from mlma.visible import storable

if TYPE_CHECKING:  # pragma: no cover
    from mlma.store.store import Store

#: A stream's values of this many recent ticks make its range (:class:`mlma.data.IngestLimits`).
RANGE_TICKS = 7


def ingest_checked(store: Store, data: Any, *, source: str | None = None, freq: str | None = None,
                   tick: str | None = None, on_bad_rows: str = "drop", limits=None,
                   rejects: str | os.PathLike | None = None, read_options: dict | None = None,
                   again: bool = False) -> IngestReport:
    """Check ``data`` (a CSV/Parquet path or a raw frame) against the project and store the good rows.

    Parameters
    ----------
    store
        The project's store.
    data
        A path (its sha256 is the content hash) or a frame :func:`mlma.data.read_frame` accepts.
    source
        The name kept with the ingest (default: the file's name).
    freq, tick
        The project's configured frequency and tick (``[data]`` in mlma.toml), or None to infer them. They
        only matter until the clock is fixed; after that, a configured value that differs is an error.
    on_bad_rows
        ``"drop"``: reject bad rows, keep the rest. ``"raise"``: one bad row rejects the whole file.
    limits
        :class:`mlma.data.IngestLimits` (default: its defaults).
    rejects
        A CSV file to list every rejected row in (written only when a row was rejected).
    read_options
        ``id_col``, ``time_col``, ``target_col``, ``exog`` for :func:`mlma.data.read_frame`.
    again
        Store it even if the same content was ingested before (``mlma ingest --again``): its values are then in
        force again where later ingests replaced them. Otherwise the same content is a no-op.

    Raises
    ------
    mlma.data.DataError
        The file cannot be used (a wrong frequency, mixed time zones, missing columns, or any bad row with
        ``on_bad_rows="raise"``); the message says so and that nothing was written.
    """
    from mlma.data import (DataError, FleetContext, Frequency, IngestLimits, read_frame, stream_id_text,
                           unusable_ids, validate)
    from mlma.store.store import again_key, file_sha256

    limits = limits if limits is not None else IngestLimits()
    read_options = dict(read_options or {})
    is_path = isinstance(data, (str, os.PathLike))
    sha = file_sha256(data) if is_path else None
    if again:  # recorded under a key of its own: no earlier ingest is its duplicate
        sha = again_key(sha)
    elif sha is not None:
        seen = store._ingest_by_hash(sha, actuals=True)
        if seen is not None:
            return seen
    name = storable(source or (Path(data).name if is_path else "frame"))  # a name in bytes not UTF-8: written out
    raw = read_frame(data, **read_options)

    clock = store.clock()
    try:
        if clock is not None:
            check_clock_settings(clock, freq, tick)
        try:
            configured = Frequency(freq) if freq else None
        except ValueError as exc:
            raise ValueError(f"mlma.toml [data] freq: {exc}") from None
    except ValueError as exc:
        raise DataError(f"{name}: {exc}; nothing was written", source=name, column="ds") from None
    if clock is not None:
        frequency, tick_alias, note = Frequency(clock.freq), clock.tick, f"fixed by {clock.fixed_by}"
    else:
        frequency = configured
        tick_alias = _tick_alias(frequency, tick) if frequency is not None else None
        note = "set in mlma.toml" if frequency is not None else ""

    front = store.newest_ds()
    since = None
    if front is not None and tick_alias is not None:
        since = front - RANGE_TICKS * pd.tseries.frequencies.to_offset(tick_alias)
    raw_ids = _distinct_ids(raw)
    # Ids no store keeps are the validation's to refuse, by row (bad-id): not looked up here, where PostgreSQL
    # failed the whole file on them.
    raw_ids = raw_ids[~unusable_ids(stream_id_text(raw_ids).to_numpy(dtype=object))]
    padded = raw_ids[raw_ids != stream_id_text(raw_ids).to_numpy(dtype=object)]
    # Ids the store already holds with their spaces (from before ids were stripped) keep their streams.
    verbatim = frozenset(padded[store.stream_ids(padded, create=False) >= 0]) if len(padded) else frozenset()
    uids = np.unique(stream_id_text(raw_ids, verbatim).to_numpy(dtype=object)) if len(raw_ids) else raw_ids
    ranges = store.value_ranges(uids, since=since)[["lo", "hi"]] if len(uids) else None
    # The file's observed driver values are checked against the same recent window of stored ones (not read at
    # all when the check is off or the file has no driver column).
    names = driver_columns(raw)
    driver_ranges = (store.driver_ranges(uids, names, since=since)[["lo", "hi"]]
                     if len(uids) and names and limits.value_range_factor > 0 else None)
    n_known = store.stream_count() if front is not None else 0
    kept_from = store.kept_from()
    zones = store.time_zones()
    context = FleetContext(freq=frequency, tick=tick_alias, front=front, ranges=ranges, limits=limits,
                           driver_ranges=driver_ranges, clock_note=note or "the project's clock", n_streams=n_known,
                           kept_from=kept_from, verbatim_ids=verbatim, time_zones=zones)

    def check(ctx):
        try:
            return validate(raw, source=name, on_bad_rows=on_bad_rows, context=ctx)
        except DataError as exc:
            written = _write_rejects(rejects, raw, exc.report) if exc.report is not None else None
            hint = f" (the rejected rows are listed in {written})" if written else ""
            exc.args = (f"{exc.args[0]}\nnothing was written{hint}",)
            raise

    checked = check(context)
    new_clock = None
    if clock is None:
        inferred = checked.freq
        if inferred is None:
            inferred = _infer_with_stored(store, checked.frame, name)
        if inferred is not None:
            tick_alias = _tick_alias(inferred, tick)
            new_clock = Clock(inferred.alias, tick_alias, fixed_by=f"the ingest of {name}" if not configured
                              else "mlma.toml")
            # Now that the clock is known, the rows are checked against its grid and its reach too.
            context = FleetContext(freq=inferred, tick=tick_alias, front=front, ranges=ranges, limits=limits,
                                   driver_ranges=driver_ranges, clock_note=f"fixed by this ingest of {name}",
                                   n_streams=n_known, kept_from=kept_from, verbatim_ids=verbatim, time_zones=zones)
            del checked
            checked = check(context)
    similar = _ids_like_stored(store, checked.frame)
    if similar is not None:
        checked = dataclasses.replace(checked, report=dataclasses.replace(
            checked.report, findings=checked.report.findings + (similar,)))
    written = _write_rejects(rejects, raw, checked.report)
    del raw
    # A frame's content hash (sha None) is ingest_frame's, which covers its driver columns too.
    report = store.ingest_frame(checked.frame, name, sha, report=checked.report, clock=new_clock)
    return dataclasses.replace(report, validation=checked.report, rejected_path=written, clock=new_clock or clock,
                               clock_fixed=new_clock is not None)


def _ids_like_stored(store: Store, frame: pd.DataFrame):
    """A warning when new numeric stream ids are stored ids without their leading zeros, or with more (``1``
    against ``00001``: a file whose ids went through a spreadsheet or a number column): they would become
    streams of their own, with models and, later, ``silent`` escalations for the originals. None otherwise.
    Only new all-digit ids are looked at, so a usual ingest reads no stored ids."""
    from mlma.data import Finding

    uids = pd.unique(frame["unique_id"]) if len(frame) else np.empty(0, dtype=object)
    digits = np.array([u for u in uids if isinstance(u, str) and u.isdigit()], dtype=object)
    if not len(digits):
        return None
    new = digits[store.stream_ids(digits, create=False) < 0]
    if not len(new):
        return None
    stored = [u for u in store.streams()["unique_id"] if isinstance(u, str) and u.isdigit()]
    by_number: dict[str, str] = {}
    for uid in stored:
        by_number.setdefault(uid.lstrip("0") or "0", uid)
    pairs = [(uid, by_number[uid.lstrip("0") or "0"]) for uid in new if (uid.lstrip("0") or "0") in by_number]
    if not pairs:
        return None
    shown = ", ".join(f"{a!r} (stored: {b!r})" for a, b in pairs[:5]) + (f" and {len(pairs) - 5:,} more"
                                                                         if len(pairs) > 5 else "")
    rows = int(frame["unique_id"].isin([a for a, _ in pairs]).sum())
    return Finding("id-like-stored", "warning",
                   f"{len(pairs):,} new stream id(s) are stored ids with their leading zeros lost or added: "
                   f"{shown}; they were stored as new streams. If they are the same zones, fix the ids where the "
                   "file is made (keep the id column as text) and send the file again", column="unique_id",
                   n_rows=rows, streams=tuple(a for a, _ in pairs))


def _distinct_ids(raw: pd.DataFrame) -> np.ndarray:
    """The distinct stream ids of a raw frame as text, without a string per row (chunked CSVs are categorical)."""
    if "unique_id" not in raw.columns:
        return np.empty(0, dtype=object)
    column = raw["unique_id"]
    values = column.cat.categories if isinstance(column.dtype, pd.CategoricalDtype) else pd.unique(column.dropna())
    return np.unique(np.asarray(pd.Index(values).astype(str), dtype=object))


def check_clock_settings(clock: Clock, freq: str, tick: str) -> None:
    """Refuse (``ValueError``, naming the mlma.toml key) a ``[data] freq`` or ``tick`` that is not a frequency or
    tick at all, or that differs from the project's ``clock`` (fixed by its first ingest, ``Store.clock()``): a
    project's clock never changes, and a setting the commands passed over silently was a trap.

    >>> clock = Clock("h", "D", fixed_by="the ingest of history.csv")
    >>> check_clock_settings(clock, "h", "24h"), check_clock_settings(clock, "", "")
    (None, None)
    >>> check_clock_settings(clock, "D", "")
    Traceback (most recent call last):
    ...
    ValueError: mlma.toml sets [data] freq = 'D', but the project's clock is frequency h, tick D (fixed by the \
ingest of history.csv); a project's frequency never changes (start a new project for data of another frequency, \
or set freq = 'h' or leave it empty)
    """
    from mlma.data import Frequency

    if freq:
        try:
            configured = Frequency(freq)
        except ValueError as exc:
            raise ValueError(f"mlma.toml [data] freq: {exc}") from None
        if configured.alias != Frequency(clock.freq).alias:
            raise ValueError(f"mlma.toml sets [data] freq = {freq!r}, but the project's clock is {clock}; "
                             "a project's frequency never changes (start a new project for data of another "
                             f"frequency, or set freq = {clock.freq!r} or leave it empty)")
    if tick:
        try:
            configured_tick = _tick_alias(Frequency(clock.freq), tick)
        except ValueError as exc:
            raise ValueError(f"mlma.toml [data] tick: {exc}") from None
        if not _same_tick(configured_tick, clock.tick):
            raise ValueError(f"mlma.toml sets [data] tick = {tick!r}, but the project's clock is {clock}; "
                             "a project's tick never changes (start a new project for another tick, or set "
                             f"tick = {clock.tick!r} or leave it empty)")


def _tick_alias(freq, tick: str | None) -> str:
    """The tick as the live agent names it ('7D', '12MS'...): the configured one, else the frequency's default.

    A configured tick that does not fit the frequency is refused here, before anything is written.
    """
    from mlma.calendar import tick_alias

    return tick_alias(freq, tick or None)


def _same_tick(a: str, b: str) -> bool:
    """Whether two tick aliases are one length ("24h" and "D" are; "7D" and "W-MON" are not, a week is anchored).

    >>> _same_tick("24h", "D"), _same_tick("12MS", "12MS"), _same_tick("7D", "D")
    (True, True, False)
    """
    from pandas.tseries.frequencies import to_offset

    first, second = to_offset(a), to_offset(b)
    if first == second:
        return True
    try:
        return pd.Timedelta(first) == pd.Timedelta(second)
    except (ValueError, TypeError):  # a calendar offset (months) has no fixed length
        return False


def _infer_with_stored(store: Store, frame: pd.DataFrame, name: str):
    """The frequency told by this file's rows together with the stored rows of the same streams, if any."""
    from mlma.data import DataError, FrequencyPending, infer_frequency

    if not len(frame):
        return None
    known = store.stream_ids(frame["unique_id"].unique(), create=False)
    stored = store.observations(streams=[int(i) for i in known if i >= 0]) if (known >= 0).any() else None
    both = frame[["unique_id", "ds"]] if stored is None else pd.concat([stored[["unique_id", "ds"]],
                                                                         frame[["unique_id", "ds"]]])
    try:
        return infer_frequency(both)
    except FrequencyPending:
        return None
    except DataError as exc:
        raise DataError(f"{name}: together with the rows already stored, {exc}; nothing was written",
                        source=name, column="ds", streams=exc.streams) from None


_REASON_COLUMNS = ["line", "code", "column", "unique_id", "ds", "y", "reason"]


#: Dropped rows that are not bad data and are not listed in the rejects file (their count is in the report):
#: a daily export re-sent whole after a prune holds the pruned history again each day, which listed there made
#: every ingest's file hundreds of MB and five times slower.
NOT_LISTED = frozenset({"before-kept"})


#: Findings that drop one value of a row, not the row: the rejects file lists the row with that value.
VALUE_LEVEL = frozenset({"driver-out-of-range"})


def _write_rejects(path, raw: pd.DataFrame, report) -> Path | None:
    """List every row a finding rejected (dropped, or an error naming rows) in a CSV file; its path or None.
    Rows older than the data the project keeps (:data:`NOT_LISTED`) are counted in the report, not listed. A row
    whose driver value alone was dropped (:data:`VALUE_LEVEL`) is listed too, the column naming the driver and
    the reason starting with its value as read (``promo=1000.0: dropped 1 value ...``)."""
    if path is None or report is None:
        return None
    bad = [f for f in report.findings
           if f.severity in ("dropped", "error") and len(f.rows) and f.code not in NOT_LISTED]
    if not bad:
        return None
    first_line = raw.attrs.get("mlma.first_data_line") or 0
    frames = []
    for f in bad:
        numbers = np.asarray(f.rows, dtype=np.int64)
        present = np.isin(numbers - first_line, raw.index.to_numpy())
        sub = raw.loc[numbers[present] - first_line]
        # As read, each value as its own text: a column of midnights would lose its time of day in to_csv.
        column = {name: (sub[name].map(_as_read).to_numpy() if name in sub.columns else None)
                  for name in ("unique_id", "ds", "y")}
        reason = f.message if len(f.message) < 300 else f.message[:297] + "..."
        if f.code in VALUE_LEVEL and f.column in sub.columns:
            # The row is kept and only this value dropped: the reason starts with the value, which the row's
            # unique_id, ds and y do not show.
            reason = (f.column + "=" + sub[f.column].map(_as_read).fillna("") + ": " + reason).to_numpy()
        frames.append(pd.DataFrame({"line": numbers[present], "code": f.code, "column": f.column or "", **column,
                                    "reason": reason}, columns=_REASON_COLUMNS))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", newline="") as handle:
        pd.concat(frames, ignore_index=True).to_csv(handle, index=False, lineterminator="\r\n")
    return path


def _as_read(value) -> str | None:
    """A rejected row's value as the file had it (None for a missing one).

    >>> _as_read(pd.Timestamp("2024-01-02")), _as_read(float("nan")), _as_read("n/a"), _as_read(1.5)
    ('2024-01-02 00:00:00', None, 'n/a', '1.5')
    """
    if value is None or (isinstance(value, float) and value != value) or value is pd.NaT:
        return None
    return str(value)
