"""Plain records the store takes and returns."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import pandas as pd

from mlma.store.state import StateEncoding
from mlma.visible import UNSTORABLE_IN_NAME, UNSTORABLE_IN_TEXT, unstorable

_ACTOR = re.compile(r"^(agent|user:\S.*)$")


def check_actor(by: str, what: str = "by") -> str:
    """Validate who did something: ``'agent'`` or ``'user:<name>'``.

    >>> check_actor("user:ana")
    'user:ana'
    >>> check_actor("ana")
    Traceback (most recent call last):
    ...
    ValueError: by must be 'agent' or 'user:<name>', got 'ana'
    """
    if not isinstance(by, str) or not _ACTOR.match(by):
        raise ValueError(f"{what} must be 'agent' or 'user:<name>', got {by!r}")
    found = UNSTORABLE_IN_NAME.search(by)  # a name printed in the audit log: "\x1b[2J" cleared the reader's terminal
    if found is not None:
        raise ValueError(f"{what} must not hold {unstorable(found.group())}, got {by!r}")
    return by


#: The longest reason a person may give for an action (the audit log keeps it); the REST API's limit too.
MAX_REASON = 2000


def check_reason(reason: str | None) -> str | None:
    r"""Validate a person's reason for the audit log: text of at most :data:`MAX_REASON` characters, without
    NUL (which PostgreSQL cannot store) or other control characters but tabs and line breaks (the audit log is
    printed to terminals). One check for every door (CLI, API, Python).

    >>> check_reason("before the holiday")
    'before the holiday'
    >>> check_reason("x" * 2001)
    Traceback (most recent call last):
    ...
    ValueError: reason must be at most 2,000 characters, got 2,001
    >>> check_reason("outage\x1b[2J")
    Traceback (most recent call last):
    ...
    ValueError: reason must not hold a control character ('\x1b'): tabs and line breaks are the only control characters it may hold (an escape sequence reaches the terminal of whoever reads the audit log), got 'outage\x1b[2J'

    """
    if reason is None:
        return None
    if not isinstance(reason, str):
        raise ValueError(f"reason must be text, got {type(reason).__name__}")
    if len(reason) > MAX_REASON:
        raise ValueError(f"reason must be at most {MAX_REASON:,} characters, got {len(reason):,}")
    if "\x00" in reason:
        raise ValueError("reason must not contain a NUL character")
    found = UNSTORABLE_IN_TEXT.search(reason)
    if found is not None and found.group() >= "\ud800":  # a surrogate: bytes that are not UTF-8, which no store keeps
        raise ValueError(f"reason must not hold {unstorable(found.group())}; write it in UTF-8")
    if found is not None:
        raise ValueError(f"reason must not hold {unstorable(found.group())}: tabs and line breaks are the only "
                         "control characters it may hold (an escape sequence reaches the terminal of whoever reads "
                         f"the audit log), got {reason[:80]!r}")
    return reason


#: How many row ids an audit entry's target names, and its params list: a request may name 100,000 ids.
AUDIT_TARGET_IDS, AUDIT_PARAM_IDS = 20, 1_000


def audited_ids(what: str, ids: Sequence[int]) -> tuple[str, dict[str, Any]]:
    """The audit target and params of an action on rows by id (escalations, queued actions, abnormal periods):
    the target names the first 20 ids and how many more, the params count them and list the first 1,000, so that
    a request naming 100,000 ids is an entry of a few KB (an action on many streams is audited by its count, the
    streams it touched kept beside the entry).

    >>> audited_ids("escalations", [3, 4])
    ('escalations:3,4', {'count': 2, 'ids': [3, 4]})
    >>> target, params = audited_ids("actions", range(1, 100_001))
    >>> target[-24:], params["count"], len(params["ids"])
    ('18,19,20 and 99,980 more', 100000, 1000)
    """
    ids = [int(i) for i in ids]
    more = f" and {len(ids) - AUDIT_TARGET_IDS:,} more" if len(ids) > AUDIT_TARGET_IDS else ""
    return (f"{what}:" + ",".join(map(str, ids[:AUDIT_TARGET_IDS])) + more,
            {"count": len(ids), "ids": ids[:AUDIT_PARAM_IDS]})


def listed_ids(ids: Sequence[int], shown: int = 10) -> str:
    """Ids in an error message: the first ``shown`` and how many more, as an unknown stream is named.

    >>> listed_ids([7]), listed_ids(range(2, 100_002))
    ('[7]', '[2, 3, 4, 5, 6, 7, 8, 9, 10, 11] (and 99,990 more)')
    """
    ids = list(ids)
    return str(ids[:shown]) + (f" (and {len(ids) - shown:,} more)" if len(ids) > shown else "")


def utc_instant(value: Any, what: str) -> dt.datetime:
    """A wall-clock instant (when something happened) from anything pandas parses, as an aware UTC
    ``datetime``; a naive value is taken as UTC. The store's instant columns hold these.

    >>> utc_instant("2026-12-04 10:00+01:00", "when")
    datetime.datetime(2026, 12, 4, 9, 0, tzinfo=datetime.timezone.utc)
    >>> utc_instant(None, "since")
    Traceback (most recent call last):
    ...
    ValueError: since must be a time, got None
    """
    stamp = pd.Timestamp(value)
    if stamp is pd.NaT:
        raise ValueError(f"{what} must be a time, got {value!r}")
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.to_pydatetime()


@dataclass(frozen=True)
class Clock:
    """The project's clock: its frequency and tick length, fixed once (``Store.clock()``)."""

    freq: str
    tick: str
    fixed_at: dt.datetime | None = None
    fixed_by: str = ""

    def __str__(self) -> str:
        return f"frequency {self.freq}, tick {self.tick}" + (f" (fixed by {self.fixed_by})" if self.fixed_by else "")


def driver_counts(counts: Mapping[str, int]) -> str:
    """Counts per driver for a message.

    >>> driver_counts({"temperature": 1200, "promo": 3})
    '1,200 temperature, 3 promo'
    """
    return ", ".join(f"{n:,} {name}" for name, n in counts.items())


@dataclass(frozen=True)
class IngestReport:
    """What one call of :meth:`~mlma.store.Store.ingest_frame` did.

    Attributes
    ----------
    ingest_id
        The ingest's row; for a duplicate, the earlier ingest of the same content.
    duplicate
        True when content with this hash was ingested before: nothing was written.
    rows_read, rows_dropped
        Rows in the source and rows validation dropped (from the :class:`~mlma.data.ValidationReport`).
    rows_accepted
        Rows offered to the store (= ``rows_new + rows_revised + rows_unchanged``).
    rows_new, rows_revised, rows_unchanged
        Observations added, corrected (a different ``y`` for an existing ``unique_id, ds``, the old value kept
        in ``observation_revisions``; or the same ``y`` with changed observed driver values) and already present
        with the same values. For values known in advance (``Store.ingest_future``), ``rows_new`` is the
        values stored.
    drivers_revised
        Per driver, the values this ingest changed: observed values of rows the store held that differ from
        their newest observed value (or that the row had none of); values known in advance that replace a
        different value an earlier file gave for the same ``(unique_id, ds)`` (the newest is in force), where no
        observed value of the driver is (which would be in force instead). The old values stay in the store.
    n_streams, new_streams
        Streams in the frame, and how many of them the store had not seen before.
    """

    ingest_id: int
    source: str
    content_sha256: str
    duplicate: bool
    at: dt.datetime
    rows_read: int = 0
    rows_accepted: int = 0
    rows_dropped: int = 0
    rows_new: int = 0
    rows_revised: int = 0
    rows_unchanged: int = 0
    n_streams: int = 0
    new_streams: int = 0
    first_ds: pd.Timestamp | None = None
    last_ds: pd.Timestamp | None = None
    #: The :class:`~mlma.data.ValidationReport` of a checked ingest (``Store.ingest_file``), else None.
    validation: Any = field(default=None, repr=False, compare=False)
    #: Where the rows validation rejected were listed (a CSV file), if they were.
    rejected_path: Any = field(default=None, repr=False, compare=False)
    #: The project's clock after this ingest, if it is known.
    clock: Any = field(default=None, repr=False, compare=False)
    #: Whether this ingest fixed that clock (the first that could tell the frequency).
    clock_fixed: bool = field(default=False, repr=False, compare=False)
    #: What a future drivers' ingest (``Store.ingest_future``) dropped, repaired or replaced, one message each
    #: (its findings, also kept with the ingest's record); a checked ingest's are in ``validation``.
    notes: tuple[str, ...] = field(default=(), repr=False, compare=False)
    #: Driver name -> values changed (see above); empty when none changed.
    drivers_revised: Mapping[str, int] = field(default_factory=dict, repr=False, compare=False)

    @property
    def changed(self) -> bool:
        """Whether the store's observations (or their observed driver values) changed."""
        return self.rows_new + self.rows_revised > 0

    def __str__(self) -> str:
        if self.duplicate:
            return (f"{self.source}: already ingested (content sha256 {self.content_sha256[:12]}..., ingest "
                    f"#{self.ingest_id}); nothing changed")
        return (f"{self.source}: ingest #{self.ingest_id}: {self.rows_new} new, {self.rows_revised} revised, "
                f"{self.rows_unchanged} unchanged of {self.rows_accepted} rows ({self.rows_dropped} dropped by "
                f"validation) in {self.n_streams} streams ({self.new_streams} new)"
                + (f"; driver values revised: {driver_counts(self.drivers_revised)}" if self.drivers_revised else ""))


@dataclass(frozen=True)
class AgentState:
    """A saved agent state: the per-stream arrays as of the end of ``tick``."""

    tick: int
    arrays: Mapping[str, np.ndarray]
    sha256: str
    size_bytes: int
    saved_at: dt.datetime


@dataclass(frozen=True)
class TickWrite:
    """What :meth:`~mlma.store.Store.write_tick` wrote: row counts, the new escalations' ids, the numbers
    given to the new model versions (in the order given), the saved state's sha256, how many earlier
    escalations were resolved because their condition cleared, by kind, and the saved state itself (equal to
    what :meth:`~mlma.store.Store.load_state` would read back; its arrays are read-only copies), so that the
    next tick of the same process need not read it.

    ``changes`` are the :meth:`~mlma.store.Store.change_counts` as the tick committed them (its own champion
    moves counted); ``unseen_changes`` the kinds that someone other than the tick changed after the
    caller's ``TickRecord.seen_changes`` (empty when the record named none); ``moves_left_out`` the tick's
    champion moves a person's move made while it ran took precedence over."""

    tick: int
    n_verdicts: int
    n_forecasts: int
    escalation_ids: list[int]
    versions: np.ndarray
    state_sha256: str | None
    resolved: Mapping[str, int] = field(default_factory=dict)
    state: AgentState | None = None
    changes: Mapping[str, int] = field(default_factory=dict)
    unseen_changes: frozenset[str] = frozenset()
    #: The tick's champion moves not made because a person moved the stream while it ran
    #: (:attr:`TickRecord.champions_read`).
    moves_left_out: tuple = ()


#: Challenger checks not over: the version is in shadow, or waits for a person's approval (it is still in use).
UNDECIDED_RESULTS = ("pending", "awaiting-approval")


@dataclass(frozen=True)
class NewVersion:
    """A model version to record: its artifact is already in the :class:`~mlma.registry.ArtifactStore`.

    Build it with :meth:`mlma.registry.ModelRegistry.prepare`, which writes the artifact. The version
    number is given when it is recorded (one more than the stream's latest). With ``promote`` it becomes
    the stream's champion in the same transaction, moved by ``by`` for ``reason``.
    """

    stream: int
    artifact_sha256: str
    artifact_bytes: int
    spec: str
    train_start: pd.Timestamp | None = None
    train_end: pd.Timestamp | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    check: Mapping[str, Any] = field(default_factory=dict)
    promote: bool = False
    by: str = "agent"
    reason: str | None = None

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[0-9a-f]{64}", str(self.artifact_sha256)):
            raise ValueError(f"artifact_sha256 must be 64 lower-case hex digits, got {self.artifact_sha256!r}")
        check_actor(self.by)


@dataclass(frozen=True)
class ChampionMove:
    """Move a stream's champion alias to an existing version (``action``: promote or rollback).

    ``if_serving`` makes the move conditional on what the mover saw serving: the version (0: no champion)
    that must still serve when the move commits, checked under the stream's row lock. A move asked on a
    stale view (a person rolled the stream back while a tick ran) is then refused or left out
    (:func:`mlma.store.store.move_champions`) instead of overwriting the other; one whose version serves
    already (the same move sent twice at once) changes nothing. None: unconditional.
    """

    stream: int
    version: int
    by: str
    reason: str | None = None
    action: str = "promote"
    if_serving: int | None = None

    def __post_init__(self) -> None:
        check_actor(self.by)
        if self.by != "agent":
            check_reason(self.reason)
        if self.action not in ("promote", "rollback"):
            raise ValueError(f"action must be 'promote' or 'rollback', got {self.action!r}")


@dataclass(frozen=True)
class ModelVersion:
    """One recorded model version of one stream (a row of ``model_versions``, with the stream's unique_id)."""

    stream_id: int
    unique_id: str
    version: int
    created_at: dt.datetime
    created_tick: int | None
    train_start: pd.Timestamp | None
    train_end: pd.Timestamp | None
    spec: str
    params: Mapping[str, Any]
    metrics: Mapping[str, Any]
    check: Mapping[str, Any]
    artifact_sha256: str
    artifact_bytes: int
    #: When version retention pruned the version's artifact (``[registry] keep_versions``, ``mlma prune
    #: --versions``); None: it is kept. A pruned version is history only: it cannot be loaded or put in service.
    artifact_pruned_at: dt.datetime | None = None

    @property
    def pruned(self) -> bool:
        """Whether the version's artifact was pruned by version retention."""
        return self.artifact_pruned_at is not None


@dataclass(frozen=True)
class ChampionChange:
    """One move of a stream's champion alias (a row of ``champion_history``)."""

    stream_id: int
    version: int
    previous_version: int | None
    action: str
    moved_by: str
    reason: str | None
    at: dt.datetime
    tick: int | None

    def __str__(self) -> str:
        what = "rollback to" if self.action == "rollback" else "promotion of"
        return f"{what} version {self.version} by {self.moved_by}" + (f": {self.reason}" if self.reason else "")


def forecast_frame(y_hat: np.ndarray, ds: Any, model_version: np.ndarray | None = None,
                   stream_ids: np.ndarray | None = None) -> pd.DataFrame:
    """Turn the agent's forecast array into the long frame :meth:`~mlma.store.Store.write_tick` takes.

    Parameters
    ----------
    y_hat
        ``(n_streams, steps)`` forecasts; NaN (no forecast) rows and cells are left out.
    ds
        The ``steps`` timestamps forecast (one grid for the fleet), or an ``(n_streams, steps)`` array.
    model_version
        Per stream: the version that made the forecast.
    stream_ids
        Per row of ``y_hat``: its stream id (default ``0..n-1``, the agent's indexes).

    Examples
    --------
    >>> y = np.array([[1.0, 2.0], [np.nan, np.nan]])
    >>> forecast_frame(y, pd.to_datetime(["2024-01-01 00:00", "2024-01-01 01:00"]), np.array([3, 0]))
       stream_id                  ds  y_hat  model_version
    0          0 2024-01-01 00:00:00    1.0              3
    1          0 2024-01-01 01:00:00    2.0              3
    """
    y_hat = np.asarray(y_hat, dtype=np.float64)
    if y_hat.ndim != 2:
        raise ValueError(f"y_hat must be a 2-d array (streams x steps), got shape {y_hat.shape}")
    n, steps = y_hat.shape
    ids = np.arange(n, dtype=np.int64) if stream_ids is None else np.asarray(stream_ids, dtype=np.int64)
    if ids.shape != (n,):
        raise ValueError(f"stream_ids must have one id per row of y_hat ({n}), got shape {ids.shape}")
    stamps = np.asarray(pd.to_datetime(np.asarray(ds).ravel())).astype("datetime64[ns]")
    if stamps.size == steps:
        stamps = np.broadcast_to(stamps, (n, steps))
    elif stamps.size == n * steps:
        stamps = stamps.reshape(n, steps)
    else:
        raise ValueError(f"ds must hold {steps} timestamps (one per column of y_hat) or one per cell, "
                         f"got {stamps.size}")
    keep = np.isfinite(y_hat)
    rows, cols = np.nonzero(keep)
    frame = pd.DataFrame({"stream_id": ids[rows], "ds": stamps[rows, cols], "y_hat": y_hat[rows, cols]})
    if model_version is not None:
        mv = np.asarray(model_version, dtype=np.int64)
        if mv.shape != (n,):
            raise ValueError(f"model_version must have one entry per row of y_hat ({n}), got shape {mv.shape}")
        frame["model_version"] = mv[rows]
    return frame


#: Verdict labels a summary counts (``mlma.policy.Verdict``, in code order); the store does not import the policy.
SUMMARY_VERDICTS = ("ok", "degraded", "warming-up", "cooling-down", "pinned", "no-data", "unmonitored", "cold",
                    "abnormal")


#: A summary field left out of the stored JSON when it is None (rows written before it existed have no key).
_LEFT_OUT_WHEN_NONE = {"left_out_when_none": True}


@dataclass(frozen=True)
class TickSummary:
    """What one tick did fleet-wide: the ``ticks.summary`` column, for charts, metrics and ``mlma status``.

    Written by :meth:`~mlma.store.Store.write_tick` as JSON (through :mod:`mlma.store.serial`, so a non-finite
    number is stored as ``null``) and read back with :meth:`parse`, the one place that knows the stored shape.
    The JSON keys are the field names; ``driver_values_filled`` and ``next_tick`` are left out when None. Rows written
    before a field existed parse with its default, and keys this version does not know are ignored.

    >>> s = TickSummary(n_streams=3, verdicts={"ok": 2, "degraded": 1}, retrains=1, loss=float("nan"))
    >>> TickSummary.parse(s.to_json()) == TickSummary(n_streams=3, verdicts={"ok": 2, "degraded": 1}, retrains=1)
    True
    >>> TickSummary.parse(None) is None
    True
    >>> TickSummary(n_streams=-1)
    Traceback (most recent call last):
    ...
    ValueError: tick summary: n_streams must be a whole number >= 0, got -1
    """

    n_streams: int = 0
    #: Streams per verdict label (every label of :data:`SUMMARY_VERDICTS`, 0 included, for a tick that judged).
    verdicts: Mapping[str, int] = field(default_factory=dict)
    retrains: int = 0
    promoted: int = 0
    rejected: int = 0
    initial_fits: int = 0
    fit_failures: int = 0
    #: Models whose forecast failed this tick (the stream has no forecast, or the challenger was rejected).
    forecast_failures: int = 0
    #: Seconds spent fitting (re-trainings and first fits), summed over streams.
    compute_seconds: float = 0.0
    #: Fleet mean loss of the tick's scored timestamps (None: nothing was scored).
    loss: float | None = None
    #: Fleet mean of the streams' mean losses in the policy's own loss (``[monitor] loss``: absolute, squared or
    #: relative), the units of ``reference_loss``, over streams with a loss (None: nothing was scored).
    policy_loss: float | None = None
    #: Fleet mean of the streams' reference losses, over streams with both a loss and a reference.
    reference_loss: float | None = None
    #: Summed stream losses over summed references, same streams.
    loss_ratio: float | None = None
    escalations: int = 0
    #: Earlier escalations the agent resolved this tick because their condition cleared.
    escalations_resolved: int = 0
    awaiting_approval: int = 0
    pinned: int = 0
    duration_seconds: float = 0.0
    #: Future driver values the forecasts needed and nobody ingested (None: the project has no future drivers).
    driver_values_filled: int | None = field(default=None, metadata=_LEFT_OUT_WHEN_NONE)
    #: The next tick's bounds (``mlma.store.glance.NextTick.to_summary``), so `mlma status` can tell whether it
    #: is due without the clock (None: written by an mlma that did not record it).
    next_tick: Mapping[str, Any] | None = field(default=None, metadata=_LEFT_OUT_WHEN_NONE)

    def __post_init__(self) -> None:
        # Which check a field gets follows from its annotation (see _SUMMARY_KINDS below the class).
        for name in _SUMMARY_KINDS["int"]:
            _whole(getattr(self, name), name)
        for name in _SUMMARY_KINDS["int | None"]:
            if getattr(self, name) is not None:
                _whole(getattr(self, name), name)
        if self.next_tick is not None and not isinstance(self.next_tick, Mapping):
            raise ValueError(f"tick summary: next_tick must be a JSON object or None, got {self.next_tick!r}")
        for name in _SUMMARY_KINDS["float"]:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not value >= 0:
                raise ValueError(f"tick summary: {name} must be a number >= 0, got {value!r}")
        for name in _SUMMARY_KINDS["float | None"]:
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float, np.number))):
                raise ValueError(f"tick summary: {name} must be a number or None, got {value!r}")
            # NaN and infinities mean "no number": stored as null, so normalised to None here.
            if value is not None and not np.isfinite(value):
                object.__setattr__(self, name, None)
        if not isinstance(self.verdicts, Mapping):
            raise ValueError(f"tick summary: verdicts must map a verdict label to a count, got {self.verdicts!r}")
        for label, count in self.verdicts.items():
            _whole(count, f"verdicts[{label!r}]")
        object.__setattr__(self, "verdicts", {str(k): int(v) for k, v in self.verdicts.items()})

    def to_json(self) -> dict[str, Any]:
        """The stored JSON object (plain Python values; non-finite numbers already None)."""
        out = {name: getattr(self, name) for name in _SUMMARY_FIELDS}
        out["verdicts"] = dict(self.verdicts)
        for optional in _SUMMARY_LEFT_OUT_WHEN_NONE:
            if out[optional] is None:
                del out[optional]
        if self.next_tick is not None:
            out["next_tick"] = dict(self.next_tick)
        return out

    @classmethod
    def parse(cls, value: Any) -> TickSummary | None:
        """The summary stored in ``ticks.summary`` (a JSON object, or None for a tick written without one)."""
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise ValueError(f"ticks.summary must be a JSON object, got {type(value).__name__}")
        known = {k: v for k, v in value.items() if k in _SUMMARY_FIELDS}
        for name in _SUMMARY_KINDS["float"]:
            if known.get(name, 0) is None:
                known[name] = 0.0
        return cls(**known)


_SUMMARY_FIELDS = tuple(f.name for f in fields(TickSummary))
#: The summary's fields by annotation (this module's annotations are strings): ``int`` whole numbers >= 0,
#: ``int | None`` the same or None, ``float`` numbers >= 0 (a stored null reads as 0), ``float | None`` numbers
#: where a non-finite one means None. A field annotated otherwise has its own check in ``__post_init__``.
_SUMMARY_KINDS = {kind: tuple(f.name for f in fields(TickSummary) if f.type == kind)
                  for kind in ("int", "int | None", "float", "float | None")}
_SUMMARY_LEFT_OUT_WHEN_NONE = tuple(f.name for f in fields(TickSummary) if f.metadata.get("left_out_when_none"))


def _whole(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"tick summary: {name} must be a whole number >= 0, got {value!r}")


@dataclass(frozen=True)
class PruneReport:
    """What :meth:`~mlma.store.Store.prune` deleted (or, with ``dry_run``, would delete).

    Attributes
    ----------
    kept_from
        The data time before which the store keeps nothing now (observations, driver values, revisions).
    through_tick
        The last tick whose verdicts and forecasts went (the last that ended by ``kept_from``); None: none.
    rows
        Rows deleted per table: ``observations``, ``driver_values``, ``observation_revisions``, ``verdicts``,
        ``forecasts`` (a forecast row holds one block of streams' forecasts for one tick).
    dry_run
        True when nothing was deleted.
    """

    kept_from: pd.Timestamp
    through_tick: int | None
    rows: Mapping[str, int]
    dry_run: bool = False

    def __str__(self) -> str:
        verb = "would delete" if self.dry_run else "deleted"
        counts = ", ".join(f"{n:,} {table}" for table, n in self.rows.items())
        ticks = f"; verdicts and forecasts through tick {self.through_tick}" if self.through_tick is not None else ""
        return f"{verb} the rows before {self.kept_from}: {counts}{ticks}"


@dataclass(frozen=True)
class VersionPruneReport:
    """What a version prune (:meth:`mlma.registry.ModelRegistry.prune_versions`) marked and deleted, or, with
    ``dry_run``, would.

    Attributes
    ----------
    keep
        The newest versions kept per stream (besides every version still in use).
    versions, streams
        Versions whose artifact was marked pruned now, and the streams they belong to.
    files, bytes
        Artifact files deleted (no kept version refers to them), and their size as recorded.
    leftover
        Of ``files``, those a prune stopped part way had marked and not deleted yet.
    dry_run
        True when nothing was marked or deleted.
    """

    keep: int
    versions: int
    streams: int
    files: int
    bytes: int
    leftover: int = 0
    dry_run: bool = False

    def __str__(self) -> str:
        verb = "would prune" if self.dry_run else "pruned"
        gone = "would delete" if self.dry_run else "deleted"
        left = f", {self.leftover:,} of them left by a prune stopped part way" if self.leftover else ""
        return (f"{verb} the artifacts of {self.versions:,} model version(s) of {self.streams:,} stream(s), keeping "
                f"each stream's newest {self.keep} and every version in use; {gone} {self.files:,} artifact "
                f"file(s), {_size(self.bytes)}{left}; the versions' rows stay")


def _size(n: int) -> str:
    """``n`` bytes for a person: ``512 B``, ``3.4 MB``, ``1.2 GB``."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


@dataclass(frozen=True)
class VersionCheck:
    """The challenger check's outcome for a version recorded earlier (``model_versions.check_result``)."""

    stream: int
    version: int
    check: Mapping[str, Any]


@dataclass(frozen=True)
class TickRecord:
    """Everything one tick produced, written by :meth:`~mlma.store.Store.write_tick` in one transaction.

    Validated when built, so that a malformed record fails with a message naming the field before any
    database work. Only ``tick`` is required.

    Attributes
    ----------
    tick
        The tick's number (>= 0).
    verdicts
        A :class:`~mlma.policy.Decision` (its arrays over stream ids ``0..n-1``) or a frame with
        ``stream_id, verdict`` and optional ``p_value, effect, retrain, reason, loss, reference_loss,
        model_version``.
    forecasts
        Frame ``stream_id, ds, y_hat`` and optional ``model_version`` (:func:`forecast_frame`): the forecasts
        issued at the end of this tick.
    escalations
        New :class:`~mlma.escalations.Escalation` items (``stream`` -1 for none).
    resolve_escalations
        Escalation kind -> stream ids whose condition cleared this tick (``TickReport.cleared``): their
        unresolved escalations of that kind are resolved by the agent before this tick's new ones are added.
    new_versions, expected_versions
        Model versions to record (:meth:`mlma.registry.ModelRegistry.prepare`), and the numbers the caller
        expects them to get (it saves them in its state in the same transaction; a difference rolls back).
    champion_moves
        Champion moves to existing versions.
    version_checks
        :class:`VersionCheck` items: challenger outcomes for versions recorded earlier.
    audit
        Extra audit entries: mappings with ``actor, action`` and optional ``target, params, reason``.
    applied_actions
        Queued stream actions (``stream_actions`` ids) this tick carried out, with their outcome text.
    state
        The agent's and policy's per-stream arrays (see :meth:`~mlma.store.Store.save_state`), or a
        :class:`~mlma.store.state.StateEncoding` of them already under way (the live agent starts it when its
        tick is done, so that compressing the state overlaps the rest of the tick).
    summary
        The tick's :class:`TickSummary`.
    seen_changes
        The :meth:`~mlma.store.Store.change_counts` the caller read when it looked at what it depends on
        (the champions, the overrides): :attr:`TickWrite.unseen_changes` then names the kinds that someone
        else changed since.
    champions_read
        Each stream's serving version (by stream id; -1 or 0: none) as the caller read the registry. The
        tick's champion moves (promoted new versions and ``champion_moves``) are then made only where it still
        serves: a person's roll-back or promotion committed while the tick ran stands, and the tick's move of
        that stream is left out (:attr:`TickWrite.moves_left_out`). None: unconditional.
    start, end, agent_id
        The tick's data window and agent, when :meth:`~mlma.store.Store.begin_tick` was not called.

    >>> TickRecord(3, expected_versions=[1])
    Traceback (most recent call last):
    ...
    ValueError: tick record 3: expected_versions has 1 number(s) for 0 new version(s)
    """

    tick: int
    verdicts: Any = None
    forecasts: pd.DataFrame | None = None
    escalations: tuple = ()
    resolve_escalations: Mapping[str, Sequence[int]] = field(default_factory=dict)
    new_versions: tuple = ()
    expected_versions: tuple | None = None
    champion_moves: tuple = ()
    version_checks: tuple = ()
    audit: tuple = ()
    applied_actions: Mapping[int, str] = field(default_factory=dict)
    state: Mapping[str, np.ndarray] | StateEncoding | None = None
    summary: TickSummary | None = None
    start: Any = None
    end: Any = None
    agent_id: str | None = None
    seen_changes: Mapping[str, int] | None = None
    champions_read: Any = None

    def __post_init__(self) -> None:
        tick = self.tick
        if isinstance(tick, bool) or not isinstance(tick, (int, np.integer)) or tick < 0:
            raise ValueError(f"tick record: tick must be a whole number >= 0, got {tick!r}")
        where = f"tick record {int(tick)}"
        for name in ("escalations", "new_versions", "champion_moves", "version_checks", "audit"):
            value = getattr(self, name)
            if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence):
                raise ValueError(f"{where}: {name} must be a list, got {type(value).__name__}")
            object.__setattr__(self, name, tuple(value))
        if self.verdicts is not None and not isinstance(self.verdicts, pd.DataFrame) and not (
                hasattr(self.verdicts, "verdict") and hasattr(self.verdicts, "retrain")):
            raise ValueError(f"{where}: verdicts must be a Decision or a DataFrame, got "
                             f"{type(self.verdicts).__name__}")
        if isinstance(self.verdicts, pd.DataFrame) and not {"stream_id", "verdict"} <= set(self.verdicts.columns):
            raise ValueError(f"{where}: the verdicts frame needs columns stream_id and verdict, has "
                             f"{list(self.verdicts.columns)}")
        if self.forecasts is not None:
            if not isinstance(self.forecasts, pd.DataFrame):
                raise ValueError(f"{where}: forecasts must be a DataFrame, got {type(self.forecasts).__name__}")
            if not {"stream_id", "ds", "y_hat"} <= set(self.forecasts.columns):
                raise ValueError(f"{where}: the forecasts frame needs columns stream_id, ds, y_hat, has "
                                 f"{list(self.forecasts.columns)}")
        for i, item in enumerate(self.escalations):
            if not all(hasattr(item, a) for a in ("stream", "tick", "kind", "severity", "message")):
                raise ValueError(f"{where}: escalations[{i}] is not an Escalation: {item!r}")
        self._check_items("new_versions", NewVersion)
        self._check_items("champion_moves", ChampionMove)
        self._check_items("version_checks", VersionCheck)
        if self.expected_versions is not None:
            expected = tuple(int(v) for v in self.expected_versions)
            if len(expected) != len(self.new_versions):
                raise ValueError(f"{where}: expected_versions has {len(expected)} number(s) for "
                                 f"{len(self.new_versions)} new version(s)")
            object.__setattr__(self, "expected_versions", expected)
        for i, entry in enumerate(self.audit):
            if not isinstance(entry, Mapping) or not {"actor", "action"} <= set(entry):
                raise ValueError(f"{where}: audit[{i}] must be a mapping with actor and action, got {entry!r}")
            check_actor(entry["actor"], f"{where}: audit[{i}] actor")
        if not isinstance(self.resolve_escalations, Mapping):
            raise ValueError(f"{where}: resolve_escalations must map an escalation kind to stream ids")
        from mlma.escalations import ESCALATION_KINDS  # plain data, no import cycle

        unknown = sorted(set(self.resolve_escalations) - set(ESCALATION_KINDS))
        if unknown:
            raise ValueError(f"{where}: resolve_escalations names unknown escalation kind(s) {unknown}")
        object.__setattr__(self, "resolve_escalations",
                           {k: [int(s) for s in v] for k, v in self.resolve_escalations.items()})
        if not isinstance(self.applied_actions, Mapping) or not all(
                isinstance(t, str) for t in self.applied_actions.values()):
            raise ValueError(f"{where}: applied_actions must map a stream action id to its outcome text")
        if self.summary is not None and not isinstance(self.summary, TickSummary):
            raise ValueError(f"{where}: summary must be a TickSummary, got {type(self.summary).__name__}")
        if self.state is not None and not isinstance(self.state, (Mapping, StateEncoding)):
            raise ValueError(f"{where}: state must map array names to numpy arrays, got {type(self.state).__name__}")

    def _check_items(self, name: str, kind: type) -> None:
        for i, item in enumerate(getattr(self, name)):
            if not isinstance(item, kind):
                raise ValueError(f"tick record {int(self.tick)}: {name}[{i}] must be a {kind.__name__}, "
                                 f"got {type(item).__name__}")
