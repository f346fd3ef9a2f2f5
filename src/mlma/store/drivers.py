"""Exogenous driver values in the store: observed with the actuals, or known in advance.

Two ways in:

- an ingest of actuals (:meth:`~mlma.store.Store.ingest_frame`) stores the numeric columns besides
  ``unique_id, ds, y`` as *observed* values (what the weather was, whether a campaign ran);
- ``mlma ingest --future FILE`` (:meth:`~mlma.store.Store.ingest_future`) stores values *known in advance* for
  coming timestamps (a weather forecast, a campaign calendar, a price list). A later file revises an earlier
  one: the newest ingest's value is in force.

The table ``driver_values`` is append-only, one row per value and ingest, so what was known when stays in
the store (``ingests.at`` says when). The value in force for a ``(stream, ds, driver)`` is the observed one if
any, else the one from the newest ingest (:func:`driver_values`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import sqlalchemy as sa

from mlma.store import bulk
from mlma.store import schema as S

__all__ = ["driver_columns", "content_hash", "DriverWrite", "insert_values", "ingest_future", "driver_values"]

_COLUMNS = {"stream_id": "int", "ds": "ds", "name": "text", "ingest_id": "int", "value": "float",
            "observed": "bool"}


def driver_columns(frame: pd.DataFrame) -> list[str]:
    """The numeric columns of a canonical frame besides ``unique_id, ds, y`` (and ``stream_id``)."""
    skip = {"unique_id", "ds", "y", "stream_id"}
    return [str(c) for c in frame.columns if c not in skip
            and (pd.api.types.is_numeric_dtype(frame[c]) or pd.api.types.is_bool_dtype(frame[c]))]


def content_hash(frame: pd.DataFrame, columns: list[str], base: str) -> str:
    """``base`` (the hash of the frame's other content) extended with the driver columns' values, so that a
    frame that differs only in its drivers is not taken for a duplicate."""
    if not columns:
        return base
    digest = hashlib.sha256(base.encode())
    key = pd.util.hash_pandas_object(frame[["unique_id", "ds", *columns]], index=False).to_numpy()
    digest.update(np.sort(key).tobytes())
    digest.update("\x1f".join(columns).encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class DriverWrite:
    """What :func:`insert_values` stored: ``n`` values; ``revised``, per driver, the values that changed one the
    store held for the same ``(stream, ds, driver)``: for observed values, of rows the store held, a value that
    differs from the row's newest observed one or that the row had none of; for values known in advance, a value
    that differs from the newest an earlier file gave where there is no observed value (the new one is in force:
    last writer wins; an observed value would be instead). ``rows``
    (observed values only): rows the store held with the same ``y`` that such a value changed."""

    n: int = 0
    revised: dict[str, int] = field(default_factory=dict)
    rows: int = 0


def insert_values(conn: sa.Connection, stream_id: np.ndarray, ns: np.ndarray, frame: pd.DataFrame,
                  columns: list[str], ingest_id: int, *, observed: bool, y: np.ndarray | None = None) -> DriverWrite:
    """Append the finite values of ``columns`` (aligned with ``stream_id``/``ns``, and with ``y``, the rows'
    targets, for observed values) and count what they changed (:class:`DriverWrite`). Observed values are
    written before the rows' observations are: the rows the store held are the rows it held before the
    ingest."""
    parts = {k: [] for k in _COLUMNS}
    ys = []
    for name in columns:
        values = pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
        keep = np.isfinite(values)
        n = int(keep.sum())
        parts["stream_id"].append(stream_id[keep])
        parts["ds"].append(np.asarray(ns)[keep].astype("datetime64[ns]"))
        parts["name"].append(np.full(n, name, dtype=object))
        parts["ingest_id"].append(np.full(n, ingest_id, dtype=np.int64))
        parts["value"].append(values[keep])
        parts["observed"].append(np.full(n, observed))
        if y is not None:
            ys.append(np.asarray(y, dtype=np.float64)[keep])
    if not columns:
        return DriverWrite()
    data = {k: np.concatenate(v) for k, v in parts.items()}
    if not len(data["ds"]):  # every cell blank (no campaign that day, a weather feed down): nothing to write
        return DriverWrite()
    staged = {"stream_id": "int", "ds": "ds", "name": "text", "value": "float"}
    rows = {k: data[k] for k in staged}
    if observed and y is not None:
        staged["y"], rows["y"] = "float", np.concatenate(ys)
    d, obs = S.driver_values, S.observations
    lo, hi = (pd.Timestamp(t).to_pydatetime() for t in (data["ds"].min(), data["ds"].max()))
    # Anything to compare with in the values' time span? Not for most ingests (a new day's actuals, a plan for
    # hours no earlier plan gave): found down the ds index, they are stored without counting, whose joins grow
    # with the table.
    if observed:
        before = sa.select(obs.c.ds).where(obs.c.ds >= lo, obs.c.ds <= hi)
    else:
        before = sa.select(d.c.ds).where(d.c.ds >= lo, d.c.ds <= hi, d.c.observed == sa.false(),
                                         d.c.ingest_id < ingest_id)
    compare = conn.execute(before.limit(1)).first() is not None
    with bulk.staged(conn, "mlma_stage_drivers", staged, rows, key=("stream_id", "ds", "name")) as st:
        if not observed:
            # Every value known in advance is kept: what was known when stays on record. preserve_rowcount (here
            # and below): SQLAlchemy gives an INSERT ... SELECT's row count on PostgreSQL only when asked.
            n = conn.execute(sa.insert(d).from_select(list(_COLUMNS), sa.select(
                st.c.stream_id, st.c.ds, st.c.name, sa.literal(ingest_id, sa.Integer), st.c.value, sa.false()))
                .execution_options(preserve_rowcount=True)).rowcount
            if not (n and compare):
                return DriverWrite(n=int(n))
            counted = dict(conn.execute(sa.select(st.c.name, sa.func.count())
                                        .where(_changed(st, ingest_id, lo, hi, observed=False))
                                        .group_by(st.c.name)).all())
            return DriverWrite(n=int(n), revised={name: int(counted[name]) for name in columns if counted.get(name)})
        # Observed values sent again unchanged (a feed that re-sends its last days every day) are not stored again:
        # each copy added a row per value, read by every tick's window. A changed value is stored (the newest wins).
        # The newest is correlated by name to the staged row: nested two levels down, it was not correlated by
        # itself (it took the newest ingest of any staged key, so rows re-sent by a rolling feed were stored again).
        other = d.alias("newest")
        newest_any = sa.select(sa.func.max(other.c.ingest_id)).where(_same_key(other, st)).correlate(st) \
            .scalar_subquery()
        keep = ~sa.exists(sa.select(d.c.ingest_id).where(_same_key(d, st), d.c.ingest_id == newest_any,
                                                         d.c.value == st.c.value, d.c.observed == sa.true()))
        if not compare:
            n = conn.execute(sa.insert(d).from_select(list(_COLUMNS), sa.select(
                st.c.stream_id, st.c.ds, st.c.name, sa.literal(ingest_id, sa.Integer), st.c.value, sa.true())
                .where(keep)).execution_options(preserve_rowcount=True)).rowcount
            return DriverWrite(n=int(n))
        # A value not stored is unchanged (the newest value of its key is an observed one, and equal), so what
        # changed is among the values stored: those are picked out of the staged ones once, into a table of their
        # own, and counted there. Counting over all the staged values again took two more passes over them on every
        # rolling re-send, most of whose values are unchanged and not stored.
        kept = {"stream_id": "int", "ds": "ds", "name": "text", "value": "float", "y": "float"}
        with bulk.staged(conn, "mlma_stage_drivers_kept", kept, {k: [] for k in kept}) as new:
            conn.execute(sa.insert(new).from_select(list(kept), sa.select(
                st.c.stream_id, st.c.ds, st.c.name, st.c.value, st.c.y if "y" in staged else sa.null()).where(keep)))
            n = conn.execute(sa.insert(d).from_select(list(_COLUMNS), sa.select(
                new.c.stream_id, new.c.ds, new.c.name, sa.literal(ingest_id, sa.Integer), new.c.value, sa.true()))
                .execution_options(preserve_rowcount=True)).rowcount
            changed = _changed(new, ingest_id, lo, hi, observed=True)
            counted = dict(conn.execute(sa.select(new.c.name, sa.func.count()).where(changed)
                                        .group_by(new.c.name)).all())
            revised = {name: int(counted[name]) for name in columns if counted.get(name)}  # in the file's order
            n_rows = 0
            if y is not None and revised:
                # Rows whose y is the same but a driver value changed: revised rows too, not unchanged ones (a row
                # whose y changed is counted as revised already).
                same_y = sa.exists(sa.select(obs.c.ingest_id).where(obs.c.stream_id == new.c.stream_id,
                                                                    obs.c.ds == new.c.ds, obs.c.y == new.c.y))
                keys = sa.select(new.c.stream_id, new.c.ds).where(changed, same_y).distinct().subquery()
                n_rows = int(conn.execute(sa.select(sa.func.count()).select_from(keys)).scalar_one())
    return DriverWrite(n=int(n), revised=revised, rows=n_rows)


def _same_key(t, values) -> sa.ColumnElement:
    """``t``'s row is of the same ``(stream, ds, driver)`` as the row of ``values``."""
    return sa.and_(t.c.stream_id == values.c.stream_id, t.c.ds == values.c.ds, t.c.name == values.c.name)


def _changed(values, ingest_id: int, lo, hi, *, observed: bool) -> sa.ColumnElement:
    """Whether a row of ``values`` (a table of ``stream_id, ds, name, value`` in ``lo..hi``) changed what earlier
    ingests held for its ``(stream, ds, driver)``, compared with their newest value of the same kind. Observed: a
    value of a row the store held (an observation) that differs from the row's newest observed one, or that it
    had none of (a corrected temperature, a campaign flag sent late). Known in advance: a value an earlier file
    gave, replaced by a different one (last writer wins), where no observed value is, which would be in force
    instead of either (so the note that this file's values are in force is true of those it counts)."""
    d, obs = S.driver_values, S.observations
    # The newest per (stream, ds, driver), correlated by name to the row: nested two levels down, it was not
    # correlated by itself (it took the newest ingest of any of the rows' keys).
    other = d.alias("newest_earlier")  # its own name: it must not correlate to the row it is compared with
    newest = sa.select(sa.func.max(other.c.ingest_id)).where(
        _same_key(other, values), other.c.observed == (sa.true() if observed else sa.false()),
        other.c.ingest_id < ingest_id).correlate(values).scalar_subquery()
    earlier = d.alias("earlier")
    # The time span said again (the key implies it): the planner then reads that span of the table down the ds
    # index, not the whole table. Not said for the lookups by key without ingest_id below: there SQLite, and
    # PostgreSQL with the statistics of before a large ingest, took it for the way in and read the span's index
    # row by row (30 s, not 1 s, for 200,000 corrected values).
    span = sa.and_(earlier.c.ds >= lo, earlier.c.ds <= hi)
    of_newest = sa.select(earlier.c.ingest_id).where(_same_key(earlier, values), span, earlier.c.ingest_id == newest)
    same = sa.exists(of_newest.where(earlier.c.value == values.c.value))
    if observed:
        held = sa.exists(sa.select(obs.c.ingest_id).where(obs.c.stream_id == values.c.stream_id,
                                                          obs.c.ds == values.c.ds))
        return sa.and_(held, ~same)
    seen = d.alias("observed_value")
    observed_value = sa.exists(sa.select(seen.c.ingest_id).where(_same_key(seen, values), seen.c.observed == sa.true()))
    return sa.and_(sa.exists(of_newest), ~same, ~observed_value)


def check_future_times(frame: pd.DataFrame, clock, source: str) -> None:
    """Refuse (:class:`mlma.data.DataError`, nothing written) future driver values off the project's grid
    (``00:30`` in an hourly project): no forecast ever asks for such a time, so they would never be read (a
    shifted time zone?). Nothing is checked before the clock is fixed. Values far ahead are kept: a calendar of
    holidays or campaigns may run years past the actuals."""
    from mlma.calendar import on_tick_grid
    from mlma.data import DataError

    if clock is None or not len(frame):
        return
    ds = pd.DatetimeIndex(frame["ds"])
    off = ~on_tick_grid(ds, clock.freq, clock.tick)
    if off.any():
        first = int(np.flatnonzero(off)[0])
        raise DataError(f"{source}: {int(off.sum()):,} future driver row(s) are off the project's grid ({clock}), "
                        f"e.g. {ds[first]} for stream {frame['unique_id'].iloc[first]!r}: no forecast asks for that "
                        f"time (a shifted time zone?); nothing was written", source=source, column="ds",
                        unique_id=str(frame["unique_id"].iloc[first]))


def calendar_note(frame: pd.DataFrame, clock) -> str | None:
    """A note when a file of future values looks like a daily calendar in a project whose grid is finer (every
    row at midnight, one a stream and day): each value applies to its own timestamp only, so the day's other
    hours get none (they are filled, or 0 for an event driver), which is seldom what was meant.

    >>> from types import SimpleNamespace
    >>> days = pd.DataFrame({"unique_id": "a", "ds": pd.date_range("2025-01-01", periods=3, freq="D")})
    >>> calendar_note(days, SimpleNamespace(freq="h")).split(":")[0]
    'every row is at midnight, one per stream and day, but the project steps every 1 hour'
    >>> calendar_note(days, SimpleNamespace(freq="D")) is None
    True
    """
    if clock is None or not len(frame):
        return None
    try:
        step = pd.Timedelta(pd.tseries.frequencies.to_offset(clock.freq))
    except ValueError:  # months, quarters: no fixed step, and finer than a day they are not
        return None
    ds = pd.DatetimeIndex(frame["ds"])
    if step >= pd.Timedelta("1D") or (ds != ds.normalize()).any():  # (unique_id, ds) is unique: one a day
        return None
    hours = step.total_seconds() / 3600
    every = f"{hours:g} hour" + ("s" if hours != 1 else "") if hours >= 1 else f"{step.total_seconds() / 60:g} min"
    return (f"every row is at midnight, one per stream and day, but the project steps every {every}: a value "
            f"applies to its own timestamp only, so the day's other steps get none (filled: an event driver's with "
            f"0, another's from a season earlier). A daily calendar needs one row per step of the day")


def ingest_future(store, frame: pd.DataFrame, source: str, sha: str):
    """Store a checked frame of future driver values (:func:`mlma.data.read_future_drivers`) as one ingest.

    Rows of streams the store has not seen are skipped (their actuals must come first: a stream is created
    by its actuals) and counted in ``rows_dropped``, with a finding naming an example; so are rows older than
    the data the store keeps (:meth:`~mlma.store.Store.prune`). The same content sent again once those
    streams' actuals are in is not a duplicate: their rows are stored then. A file none of whose rows is taken
    is refused (:class:`mlma.data.DataError` naming the reason that took the most rows; nothing is written), as
    a file of actuals with no usable row is. Values that replace a different one an earlier file gave, for
    hours without an observed value of the driver (in force where there is one), are counted per driver
    (``drivers_revised``) and said in a finding (``future-replaced``).
    """
    from mlma.data import DataError
    from mlma.store.records import IngestReport, driver_counts

    columns = [c for c in frame.columns if c not in ("unique_id", "ds")]
    rows_read, findings = len(frame), []
    zones = frame.attrs.get("timezone_note")  # read_future_drivers converted zones to UTC, as the actuals' were
    calendar = calendar_note(frame, store.clock())
    if calendar:
        findings.append({"code": "daily-calendar", "severity": "warning", "message": calendar})
    if zones:
        findings.append({"code": "timezone-converted", "severity": "repaired",
                         "message": f"timestamps carried time zones: {zones} and made tz-naive, as this project's "
                                    "actuals were"})
    with store._write() as conn:
        now = store._now(conn)
        kept_from = conn.execute(sa.select(S.retention.c.kept_from)).scalar()  # in the transaction: a prune
        if kept_from is not None:                                                 # cannot slip in between
            old = (frame["ds"] < pd.Timestamp(kept_from)).to_numpy()
            if old.any():
                findings.append({"code": "before-kept", "severity": "dropped",
                                 "message": f"dropped {int(old.sum()):,} row(s) older than the data the project "
                                            f"keeps (pruned before {pd.Timestamp(kept_from)})",
                                 "n_rows": int(old.sum())})
                frame = frame.loc[~old]
        uid = frame["unique_id"].astype(str).to_numpy(dtype=object)
        ns = frame["ds"].to_numpy(dtype="datetime64[ns]")
        distinct, codes = np.unique(uid, return_inverse=True) if len(uid) else (np.empty(0, object), np.empty(0, int))
        ids = store._lookup_streams(conn, distinct) if len(distinct) else np.empty(0, np.int64)
        known = ids[codes] >= 0 if len(uid) else np.zeros(0, bool)
        # A file with rows of streams not known yet is recorded under its content and those streams, so that
        # the same file sent again after their actuals came is not taken for a duplicate: their rows go in then.
        sha = sha if known.all() else hashlib.sha256(
            "\x1f".join([sha, "unknown streams", *map(str, distinct[ids < 0])]).encode()).hexdigest()
        seen = store._seen_ingest(conn, sha)
        if seen is not None:
            return seen
        if (~known).any():
            unknown = distinct[ids < 0]
            findings.append({"code": "future-unknown-streams", "severity": "warning",
                             "message": f"skipped {int((~known).sum()):,} row(s) of {len(unknown):,} stream(s) "
                                        f"the store has no actuals for, e.g. {unknown[0]!r}: ingest their "
                                        "actuals first", "n_rows": int((~known).sum())})
        if rows_read and not known.any():
            # Nothing to take: refused as a file of actuals without a usable row is (recording an empty ingest
            # made the command succeed, and the same file sent again "already ingested").
            skipped = [f for f in findings if f.get("n_rows")]
            top = max(skipped, key=lambda f: f["n_rows"])
            raise DataError(f"{source}: no usable rows left: none of its {rows_read:,} row(s) was taken; most rows "
                            f"({top['n_rows']:,}) were dropped as {top['code']}: {top['message']}; nothing was "
                            "written", source=source)
        ingest_id = conn.execute(sa.insert(S.ingests).values(
            source=source, content_sha256=sha, at=now, findings=findings, rows_read=rows_read,
            rows_accepted=int(known.sum()), rows_dropped=rows_read - int(known.sum()), rows_new=0, rows_revised=0,
            rows_unchanged=0, n_streams=int(len(np.unique(codes[known]))) if known.any() else 0, new_streams=0,
            first_ds=pd.Timestamp(ns[known].min()).to_pydatetime() if known.any() else None,
            last_ds=pd.Timestamp(ns[known].max()).to_pydatetime() if known.any() else None,
        ).returning(S.ingests.c.id)).scalar_one()
        sub = frame.loc[known]
        written = insert_values(conn, ids[codes][known], ns[known], sub, columns, ingest_id, observed=False)
        n = written.n
        if written.revised:
            # Last writer wins, but not unsaid: how many values an earlier file gave this one replaced.
            findings.append({"code": "future-replaced", "severity": "info",
                             "message": f"replaced {sum(written.revised.values()):,} value(s) that an earlier file "
                                        f"gave for the same stream and time with different ones "
                                        f"({driver_counts(written.revised)}): this file's values are in force"})
        conn.execute(sa.update(S.ingests).where(S.ingests.c.id == ingest_id).values(rows_new=n, findings=findings))
    first = pd.Timestamp(ns[known].min()) if known.any() else None
    last = pd.Timestamp(ns[known].max()) if known.any() else None
    return IngestReport(ingest_id=ingest_id, source=source, content_sha256=sha, duplicate=False, at=now,
                        rows_read=rows_read, rows_accepted=int(known.sum()), rows_dropped=rows_read - int(known.sum()),
                        rows_new=n, n_streams=int(len(np.unique(codes[known]))) if known.any() else 0,
                        first_ds=first, last_ds=last, notes=tuple(f["message"] for f in findings),
                        drivers_revised=written.revised)


def driver_values(store, names, start=None, end=None, *, as_of_ingest: int | None = None,
                  streams=None) -> pd.DataFrame:
    """The driver values in force, as a wide frame ``stream_id, ds, <name>...`` sorted by stream and time.

    Parameters
    ----------
    names
        The drivers wanted (other stored columns are left out).
    start, end
        Data-time bounds ``start <= ds < end`` (tz-naive), either may be None.
    as_of_ingest
        Only what the store knew after this ingest (earlier ingests included): what was known when.
    streams
        Only these stream ids (read down the primary key, 10,000 ids a statement); default all.
    """
    names = [str(n) for n in names]
    t = S.driver_values
    columns = ["stream_id", "ds", *names]
    if not names:
        return pd.DataFrame({"stream_id": np.empty(0, np.int64), "ds": np.empty(0, "datetime64[ns]")})
    query = sa.select(t.c.stream_id, t.c.ds, t.c.name, t.c.value, t.c.ingest_id, t.c.observed) \
        .where(t.c.name.in_(names))
    if start is not None:
        query = query.where(t.c.ds >= pd.Timestamp(start).to_pydatetime())
    if end is not None:
        query = query.where(t.c.ds < pd.Timestamp(end).to_pydatetime())
    if as_of_ingest is not None:
        query = query.where(t.c.ingest_id <= int(as_of_ingest))
    with store._read() as conn:
        if streams is None:
            rows = conn.execute(query).all()
        else:
            ids = sorted({int(i) for i in streams})
            rows = [row for chunk in bulk.id_chunks(ids)
                    for row in conn.execute(query.where(t.c.stream_id.in_(chunk))).all()]
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype="int64" if c == "stream_id" else "datetime64[ns]" if c == "ds"
                                          else "float64") for c in columns})
    long = pd.DataFrame(rows, columns=["stream_id", "ds", "name", "value", "ingest_id", "observed"])
    long["ds"] = pd.to_datetime(long["ds"]).astype("datetime64[ns]")
    # In force: observed beats known in advance, then the newest ingest.
    long = long.sort_values(["observed", "ingest_id"], kind="stable") \
        .drop_duplicates(["stream_id", "ds", "name"], keep="last")
    wide = long.pivot(index=["stream_id", "ds"], columns="name", values="value").reset_index()
    for name in names:
        if name not in wide.columns:
            wide[name] = np.nan
    wide.columns.name = None
    return wide[columns].sort_values(["stream_id", "ds"], kind="stable").reset_index(drop=True)
