"""Plain records the store takes and returns."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

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
    return by


@dataclass(frozen=True)
class Clock:
    """The project's clock: its frequency and tick length, fixed once (``Store.clock()``)."""

    freq: str
    tick: str
    fixed_at: dt.datetime | None = None
    fixed_by: str = ""

    def __str__(self) -> str:
        return f"frequency {self.freq}, tick {self.tick}" + (f" (fixed by {self.fixed_by})" if self.fixed_by else "")


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
        Observations added, corrected (a different ``y`` for an existing ``unique_id, ds``; the old value
        is kept in ``observation_revisions``) and already present with the same value.
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

    @property
    def changed(self) -> bool:
        """Whether the store's observations changed."""
        return self.rows_new + self.rows_revised > 0

    def __str__(self) -> str:
        if self.duplicate:
            return (f"{self.source}: already ingested (content sha256 {self.content_sha256[:12]}..., ingest "
                    f"#{self.ingest_id}); nothing changed")
        return (f"{self.source}: ingest #{self.ingest_id}: {self.rows_new} new, {self.rows_revised} revised, "
                f"{self.rows_unchanged} unchanged of {self.rows_accepted} rows ({self.rows_dropped} dropped by "
                f"validation) in {self.n_streams} streams ({self.new_streams} new)")


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
    given to the new model versions (in the order given) and the saved state's sha256."""

    tick: int
    n_verdicts: int
    n_forecasts: int
    escalation_ids: list[int]
    versions: np.ndarray
    state_sha256: str | None


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
    """Move a stream's champion alias to an existing version (``action``: promote or rollback)."""

    stream: int
    version: int
    by: str
    reason: str | None = None
    action: str = "promote"

    def __post_init__(self) -> None:
        check_actor(self.by)
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
