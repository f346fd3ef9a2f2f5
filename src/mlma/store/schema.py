"""The store's tables, as SQLAlchemy Core metadata.

The migrations in ``mlma/store/migrations/versions`` create exactly these tables (a test compares the
migrated database with this metadata); queries are built from these objects. Two column types carry the
conventions:

- :class:`UTCDateTime` for wall-clock instants (when something happened): stored as ``timestamptz`` on
  PostgreSQL and as ISO text on SQLite, always handed back as timezone-aware UTC ``datetime`` objects.
- ``DateTime`` (naive) for data time (``ds``, training windows, tick bounds): the data contract's
  timestamps are tz-naive, so they are stored as given, to the microsecond.

Stream ids are dense integers from 0, assigned in order of first appearance and never reused, so that a
stream's id is also its row in the agent's per-stream arrays.

The high-volume tables written per stream and tick (``observations``, ``observation_revisions``,
``verdicts``, ``forecasts``) have no foreign keys: PostgreSQL checks foreign keys row by row, which
tripled the time of a 240,000-row insert when measured. The store writes these tables only through
set-based statements whose stream ids come from ``streams`` (ingest) or are checked against the id range
(:meth:`~mlma.store.Store.write_tick`). The low-volume tables keep theirs.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from sqlalchemy.types import TypeDecorator

#: Statuses of a tick and of an escalation.
TICK_STATUSES = ("running", "done", "failed")
ESCALATION_STATUSES = ("open", "acknowledged", "resolved", "silenced")
CHAMPION_ACTIONS = ("promote", "rollback")

metadata = sa.MetaData(naming_convention={
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
})


class UTCDateTime(TypeDecorator):
    """A wall-clock instant in UTC: accepts aware datetimes (converted) or naive ones (taken as UTC),
    returns aware UTC datetimes on every backend."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if not isinstance(value, dt.datetime):
            raise TypeError(f"expected a datetime, got {value!r}")
        value = value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)
        # SQLite has no time zones: keep naive UTC text so that text comparison orders instants.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        if isinstance(value, str):  # raw SQLite text, e.g. from a function result
            value = dt.datetime.fromisoformat(value)
        return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value.astimezone(dt.timezone.utc)


def _json() -> sa.types.TypeEngine:
    # JSONB on PostgreSQL (indexable, compact), JSON text elsewhere.
    from sqlalchemy.dialects.postgresql import JSONB

    return sa.JSON().with_variant(JSONB(), "postgresql")


Double = sa.Double
DataTime = sa.DateTime(timezone=False)

streams = sa.Table(
    "streams", metadata,
    sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("unique_id", sa.Text, nullable=False, unique=True),
    sa.Column("first_seen", UTCDateTime, nullable=False),
    sa.Column("last_seen", UTCDateTime, nullable=False),
    sa.Column("first_ds", DataTime),
    sa.Column("last_ds", DataTime),
    sa.Column("attributes", _json(), nullable=False),
    sa.Column("overrides", _json(), nullable=False),
)

ingests = sa.Table(
    "ingests", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("source", sa.Text, nullable=False),
    sa.Column("content_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("rows_read", sa.BigInteger, nullable=False),
    sa.Column("rows_accepted", sa.BigInteger, nullable=False),
    sa.Column("rows_dropped", sa.BigInteger, nullable=False),
    sa.Column("rows_new", sa.BigInteger, nullable=False),
    sa.Column("rows_revised", sa.BigInteger, nullable=False),
    sa.Column("rows_unchanged", sa.BigInteger, nullable=False),
    sa.Column("n_streams", sa.Integer, nullable=False),
    sa.Column("new_streams", sa.Integer, nullable=False),
    sa.Column("first_ds", DataTime),
    sa.Column("last_ds", DataTime),
    sa.Column("findings", _json(), nullable=False),
)

observations = sa.Table(
    "observations", metadata,
    sa.Column("stream_id", sa.BigInteger, primary_key=True),
    sa.Column("ds", DataTime, primary_key=True),
    sa.Column("y", Double, nullable=False),
    sa.Column("ingest_id", sa.Integer, nullable=False),
    sa.Column("revisions", sa.Integer, nullable=False),
    sa.Index(None, "ds"),
)

# One row per recent ingest: its accepted rows as three little-endian arrays (mlma.store.batches; migration
# 0008), written with the rows, for the newest batches.KEEP_INGESTS ingests. The observation window reads
# these instead of the rows; the observations table stays the truth.
observation_batches = sa.Table(
    "observation_batches", metadata,
    sa.Column("ingest_id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("n_rows", sa.BigInteger, nullable=False),
    sa.Column("stream_ids", sa.LargeBinary, nullable=False),
    sa.Column("ds", sa.LargeBinary, nullable=False),
    sa.Column("y", sa.LargeBinary, nullable=False),
)

#: Values of exogenous drivers, append-only: one row per (stream, ds, driver) and per ingest that brought it.
#: ``observed``: it came with the actuals (what happened); otherwise it was known in advance (``mlma ingest
#: --future``: a forecast, a plan). The value in force is the observed one, else the one of the newest
#: ingest; older rows keep what was known when (see mlma.store.drivers).
driver_values = sa.Table(
    "driver_values", metadata,
    sa.Column("stream_id", sa.BigInteger, primary_key=True),
    sa.Column("ds", DataTime, primary_key=True),
    sa.Column("name", sa.Text, primary_key=True),
    sa.Column("ingest_id", sa.Integer, primary_key=True),
    sa.Column("value", Double, nullable=False),
    sa.Column("observed", sa.Boolean, nullable=False),
    sa.Index(None, "ds"),
)

observation_revisions = sa.Table(
    "observation_revisions", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("stream_id", sa.BigInteger, nullable=False),
    sa.Column("ds", DataTime, nullable=False),
    sa.Column("old_y", Double, nullable=False),
    sa.Column("new_y", Double, nullable=False),
    sa.Column("old_ingest_id", sa.Integer, nullable=False),
    sa.Column("ingest_id", sa.Integer, nullable=False),
    sa.Index(None, "stream_id", "ds"),
    sa.Index(None, "ds"),  # migration 0012: Store.prune deletes by ds
)

ticks = sa.Table(
    "ticks", metadata,
    sa.Column("tick", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("start_ds", DataTime),
    sa.Column("end_ds", DataTime),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("finished_at", UTCDateTime),
    sa.Column("agent_id", sa.Text),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("error", sa.Text),
    # What the tick did, fleet-wide (counts by verdict, re-trainings, compute...): the dashboard's time
    # series, so that charts never aggregate the per-stream tables (migration 0003).
    sa.Column("summary", _json()),
    sa.CheckConstraint("status IN ('running', 'done', 'failed')", name="status"),
)

verdicts = sa.Table(
    "verdicts", metadata,
    sa.Column("tick", sa.Integer, primary_key=True),
    sa.Column("stream_id", sa.BigInteger, primary_key=True),
    sa.Column("verdict", sa.SmallInteger, nullable=False),
    sa.Column("p_value", Double),
    sa.Column("effect", Double),
    sa.Column("retrain", sa.Boolean, nullable=False),
    sa.Column("reason", sa.Text),
    # Mean loss of the tick's batch and of the reference it was tested against, and the serving version
    # (migration 0003).
    sa.Column("loss", Double),
    sa.Column("reference_loss", Double),
    sa.Column("model_version", sa.Integer),
    # No index by stream (migration 0010 dropped it): a tick's 10,000 rows went to 10,000 random places of it,
    # which made each tick's insert slower than the one before. One stream's history is read by primary key,
    # one (tick, stream) lookup per tick shown.
)

# One row per issuing tick and block of 64 consecutive stream ids, the streams' horizons packed as arrays
# (mlma.store.packed; migration 0009, one row per stream before): a tick of 10,000 streams writes 157 rows.
# first_ds/last_ds bound the row's timestamps, so that a reader can select rows by data time without unpacking
# them; one stream's forecasts are in the rows of its block.
forecasts = sa.Table(
    "forecasts", metadata,
    sa.Column("issued_tick", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("block", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("first_ds", DataTime, nullable=False),
    sa.Column("last_ds", DataTime, nullable=False),
    sa.Column("n_values", sa.Integer, nullable=False),
    sa.Column("stream_ids", sa.LargeBinary, nullable=False),
    sa.Column("steps", sa.LargeBinary, nullable=False),
    sa.Column("model_versions", sa.LargeBinary, nullable=False),
    sa.Column("ds_packed", sa.LargeBinary, nullable=False),
    sa.Column("y_hat_packed", sa.LargeBinary, nullable=False),
    sa.Index(None, "block", "issued_tick"),
)

escalations = sa.Table(
    "escalations", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("stream_id", sa.BigInteger, sa.ForeignKey("streams.id")),
    sa.Column("tick", sa.Integer),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("severity", sa.SmallInteger, nullable=False),
    sa.Column("message", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("silenced_until", UTCDateTime),
    sa.CheckConstraint("status IN ('open', 'acknowledged', 'resolved', 'silenced')", name="status"),
    sa.Index(None, "status"),
    sa.Index(None, "stream_id"),
)

audit_log = sa.Table(
    "audit_log", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("actor", sa.Text, nullable=False),
    sa.Column("action", sa.Text, nullable=False),
    sa.Column("target", sa.Text),
    sa.Column("params", _json(), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Index(None, "at"),
)

# Which streams an audit entry's action touched when its target names many (migration 0013): one row per
# stream and entry, so that a stream's page finds a pin of its city. Append-only, as the log is.
audit_streams = sa.Table(
    "audit_streams", metadata,
    sa.Column("stream_id", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("audit_id", sa.BigInteger, primary_key=True, autoincrement=False),
)

agent_state = sa.Table(
    "agent_state", metadata,
    sa.Column("tick", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("saved_at", UTCDateTime, nullable=False),
    sa.Column("format", sa.String(16), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("n_streams", sa.BigInteger),
    sa.Column("blob", sa.LargeBinary, nullable=False),
)

# Parts of an agent state saved ahead of its row (PostgreSQL; migration 0011, Store.stage_state_part): the row's
# blob names each part's id and sha256. Stored EXTERNAL on PostgreSQL, as the state's blob.
state_parts = sa.Table(
    "state_parts", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("tick", sa.Integer, nullable=False),
    sa.Column("saved_at", UTCDateTime, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("blob", sa.LargeBinary, nullable=False),
)

locks = sa.Table(
    "locks", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.Text, nullable=False),
    sa.Column("token", sa.String(32), nullable=False),
    sa.Column("acquired_at", UTCDateTime, nullable=False),
    sa.Column("heartbeat_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
)

# -- the model registry (migration 0002) -------------------------------------------------------------------
model_versions = sa.Table(
    "model_versions", metadata,
    sa.Column("stream_id", sa.BigInteger, sa.ForeignKey("streams.id"), primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("created_tick", sa.Integer),
    sa.Column("train_start", DataTime),
    sa.Column("train_end", DataTime),
    sa.Column("spec", sa.Text, nullable=False),
    sa.Column("params", _json(), nullable=False),
    sa.Column("metrics", _json(), nullable=False),
    sa.Column("check_result", _json(), nullable=False),
    sa.Column("artifact_sha256", sa.String(64), nullable=False),
    sa.Column("artifact_bytes", sa.BigInteger, nullable=False),
    # When version retention deleted (or queued for deletion) the version's artifact (migration 0014); the row
    # stays. None: the artifact is kept.
    sa.Column("artifact_pruned_at", UTCDateTime),
    sa.Index(None, "artifact_sha256"),
)

# Artifact files a version prune marked for deletion and has not deleted yet (migration 0014): the prune records
# them with the marked rows, then deletes the files, then these rows; a prune stopped between leaves them for
# the next one (mlma.store.version_retention).
artifact_deletions = sa.Table(
    "artifact_deletions", metadata,
    sa.Column("artifact_sha256", sa.String(64), primary_key=True),
    sa.Column("queued_at", UTCDateTime, nullable=False),
)

champions = sa.Table(
    "champions", metadata,
    sa.Column("stream_id", sa.BigInteger, sa.ForeignKey("streams.id"), primary_key=True),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("since", UTCDateTime, nullable=False),
    sa.Column("moved_by", sa.Text, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("tick", sa.Integer),
    sa.ForeignKeyConstraint(["stream_id", "version"], ["model_versions.stream_id", "model_versions.version"],
                            name="fk_champions_version_model_versions"),
)

champion_history = sa.Table(
    "champion_history", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("stream_id", sa.BigInteger, sa.ForeignKey("streams.id"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("previous_version", sa.Integer),
    sa.Column("action", sa.String(16), nullable=False),
    sa.Column("moved_by", sa.Text, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("at", UTCDateTime, nullable=False),
    sa.Column("tick", sa.Integer),
    sa.CheckConstraint("action IN ('promote', 'rollback')", name="action"),
    sa.Index(None, "stream_id", "at"),
)

# -- the engineer's controls, access tokens and alert deliveries (migration 0003) --------------------------
#: Requests that the next tick carries out for a stream, and their states.
STREAM_ACTION_KINDS = ("retrain", "reset-reference", "approve", "reject")
STREAM_ACTION_STATUSES = ("pending", "applied", "cancelled")
#: Roles of API tokens, weakest first: each role may do what the ones before it may.
ROLES = ("viewer", "operator", "admin")

stream_actions = sa.Table(
    "stream_actions", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("stream_id", sa.BigInteger, sa.ForeignKey("streams.id"), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("params", _json(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("applied_tick", sa.Integer),
    sa.Column("applied_at", UTCDateTime),
    sa.Column("outcome", sa.Text),
    sa.CheckConstraint("kind IN ('retrain', 'reset-reference', 'approve', 'reject')", name="kind"),
    sa.CheckConstraint("status IN ('pending', 'applied', 'cancelled')", name="status"),
    sa.Index(None, "status"),
    sa.Index(None, "stream_id"),
)

abnormal_periods = sa.Table(
    "abnormal_periods", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("stream_id", sa.BigInteger, sa.ForeignKey("streams.id")),
    sa.Column("start_ds", DataTime, nullable=False),
    sa.Column("end_ds", DataTime, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("cancelled_at", UTCDateTime),
    sa.Index(None, "end_ds"),
)

api_tokens = sa.Table(
    "api_tokens", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("name", sa.Text, nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("created_by", sa.Text, nullable=False),
    sa.Column("last_used_at", UTCDateTime),
    sa.Column("revoked_at", UTCDateTime),
    sa.CheckConstraint("role IN ('viewer', 'operator', 'admin')", name="role"),
)

alert_notifications = sa.Table(
    "alert_notifications", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("receiver", sa.Text, nullable=False),
    sa.Column("group_key", sa.Text, nullable=False),
    sa.Column("escalation_ids", _json(), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("sent_at", UTCDateTime),
    sa.CheckConstraint("status IN ('sent', 'failed')", name="status"),
    sa.Index(None, "receiver", "group_key"),
)

# -- web sessions (migration 0005) -------------------------------------------------------------------------
#: A web page's session: the cookie names it by a random id, of which the store keeps the sha256 only.
#: Log-out sets ``ended_at``; a session counts only while it has not ended, has not expired and its token
#: is not revoked, checked on every request, so log-out holds across server processes and restarts.
web_sessions = sa.Table(
    "web_sessions", metadata,
    sa.Column("id_sha256", sa.String(64), primary_key=True),
    sa.Column("token_id", sa.Integer, sa.ForeignKey("api_tokens.id"), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("ended_at", UTCDateTime),
    sa.Index(None, "expires_at"),
)

# -- the project's clock (migration 0004) ------------------------------------------------------------------
clock = sa.Table(
    "clock", metadata,
    # One row: the project's frequency and tick length, fixed by the first ingest that can tell them
    # (or by mlma.toml), never changed after; tick numbers and every grid depend on them.
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("freq", sa.Text, nullable=False),
    sa.Column("tick", sa.Text, nullable=False),
    sa.Column("fixed_at", UTCDateTime, nullable=False),
    sa.Column("fixed_by", sa.Text, nullable=False),
    sa.CheckConstraint("id = 1", name="one_row"),
)

# -- what the store keeps (migration 0012) -----------------------------------------------------------------
retention = sa.Table(
    "retention", metadata,
    # One row once the store was pruned (Store.prune): observations, driver values and revisions before
    # kept_from are gone, and so are the verdicts and forecasts of the ticks that ended by then; ingests drop
    # rows older than it. Only ever moved later.
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("kept_from", DataTime, nullable=False),
    sa.Column("set_at", UTCDateTime, nullable=False),
    sa.Column("set_by", sa.Text, nullable=False),
    sa.CheckConstraint("id = 1", name="one_row"),
)

# -- what changed, counted (migration 0010) -----------------------------------------------------------------
#: What :class:`change_counts` counts: champion moves (by anyone, in or outside a tick) and per-stream overrides.
CHANGE_KINDS = ("champions", "overrides")

change_counts = sa.Table(
    "change_counts", metadata,
    # One row per kind, its value raised by every transaction that changes that kind (in the transaction,
    # so a rolled-back change counts nothing): a reader that remembers the value it last saw re-reads 10,000
    # champions or the streams' overrides only when they moved.
    sa.Column("name", sa.String(32), primary_key=True),
    sa.Column("value", sa.BigInteger, nullable=False),
)
