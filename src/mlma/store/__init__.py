"""Persistence for live operation: SQLite by default, PostgreSQL for a team.

:class:`Store` keeps streams, observations (ingested idempotently, corrections recorded), ticks and what
they produced (verdicts, forecasts, escalations), the model registry's rows, an append-only audit log, the
agent's saved per-stream arrays and a lock that keeps two agents from running a tick at once. The schema is
migrated with Alembic (:meth:`Store.upgrade`); :meth:`Store.open` refuses a database whose schema is older
or newer than the code. The model registry and its artifacts on disk are in :mod:`mlma.registry`.
See docs/store.md.

Examples
--------
>>> from mlma.store import Store
>>> store = Store.create("sqlite://")
>>> store.schema_revision()
'0006'
"""

from mlma.store.errors import (LockHeld, LockLost, SchemaError, StateCorrupted, StoreError,
                               TickAlreadyDone)
from mlma.store.lock import Lease
from mlma.store.records import (AgentState, ChampionMove, IngestReport, NewVersion, TickRecord, TickSummary,
                                TickWrite, VersionCheck, forecast_frame)
from mlma.store.store import STATE_HISTORY, Store, file_sha256, frame_sha256

__all__ = [
    "STATE_HISTORY",
    "AgentState",
    "ChampionMove",
    "IngestReport",
    "Lease",
    "LockHeld",
    "LockLost",
    "NewVersion",
    "SchemaError",
    "StateCorrupted",
    "Store",
    "StoreError",
    "TickAlreadyDone",
    "TickRecord",
    "TickSummary",
    "TickWrite",
    "VersionCheck",
    "file_sha256",
    "forecast_frame",
    "frame_sha256",
]
