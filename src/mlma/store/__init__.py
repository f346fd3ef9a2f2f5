"""Persistence for live operation: SQLite by default, PostgreSQL for a team.

:class:`Store` keeps streams, observations (ingested idempotently, corrections recorded), ticks and what
they produced (verdicts, forecasts, escalations), the model registry's rows, an append-only audit log, the
agent's saved per-stream arrays and a lock that keeps two agents from running a tick at once. The schema is
migrated with Alembic (:meth:`Store.upgrade`); :meth:`Store.open` refuses a database whose schema is older
or newer than the code. The model registry and its artifacts on disk are in :mod:`mlma.registry`.
All of mlma's SQL is in this package: other modules call :class:`Store`'s methods, :meth:`Store.transaction`
and the small repositories here (``queries``, ``registry_tables``, ``notifications``, ``counts``,
``tokens``, ``sessions``).
See docs/store.md.

Examples
--------
>>> from mlma.store import Store
>>> store = Store.create("sqlite://")
>>> store.schema_revision()
'0014'
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlma._lazy import lazy_attributes

if TYPE_CHECKING:
    from mlma.store.errors import (ChampionMoved, LockHeld, LockLost, SchemaError, StateCorrupted, StoreError,
                                   TickAlreadyDone)
    from mlma.store.lock import Lease
    from mlma.store.overrides import StreamOverrides
    from mlma.store.records import (AgentState, ChampionChange, ChampionMove, IngestReport, ModelVersion,
                                    NewVersion, PruneReport, TickRecord, TickSummary, TickWrite, VersionCheck,
                                    forecast_frame)
    from mlma.store.store import STATE_HISTORY, Store, file_sha256, frame_sha256
    from mlma.store.transaction import Transaction

# Where each public name lives. They are imported on first use (PEP 562), so that a module of this package
# that needs neither SQLAlchemy nor pandas (mlma.store.glance, for `mlma status`) can be imported alone.
_HOMES = {
    "mlma.store.errors": ("ChampionMoved", "LockHeld", "LockLost", "SchemaError", "StateCorrupted", "StoreError",
                          "TickAlreadyDone"),
    "mlma.store.lock": ("Lease",),
    "mlma.store.overrides": ("StreamOverrides",),
    "mlma.store.records": ("AgentState", "ChampionChange", "ChampionMove", "IngestReport", "ModelVersion",
                           "NewVersion", "PruneReport", "TickRecord", "TickSummary", "TickWrite", "VersionCheck",
                           "forecast_frame"),
    "mlma.store.store": ("STATE_HISTORY", "Store", "file_sha256", "frame_sha256"),
    "mlma.store.transaction": ("Transaction",),
}
__getattr__, __dir__ = lazy_attributes(globals(), _HOMES)


__all__ = [
    "STATE_HISTORY",
    "AgentState",
    "ChampionChange",
    "ChampionMove",
    "ChampionMoved",
    "IngestReport",
    "Lease",
    "ModelVersion",
    "LockHeld",
    "LockLost",
    "NewVersion",
    "PruneReport",
    "SchemaError",
    "StateCorrupted",
    "Store",
    "StoreError",
    "StreamOverrides",
    "TickAlreadyDone",
    "TickRecord",
    "TickSummary",
    "TickWrite",
    "Transaction",
    "VersionCheck",
    "file_sha256",
    "forecast_frame",
    "frame_sha256",
]
