"""Core tables: streams, observations, ingests, ticks, verdicts, forecasts, escalations, audit log,
agent state and locks.

Revision ID: 0001
Revises:
Create Date: 2026-11-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Frozen copies of the column types: a migration must keep meaning what it meant when it was written.
UTC = sa.DateTime(timezone=True)
DATA_TIME = sa.DateTime(timezone=False)


def json_type() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(JSONB(), "postgresql")


def serial() -> sa.types.TypeEngine:
    # SQLite only auto-increments an INTEGER PRIMARY KEY.
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "streams",
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("unique_id", sa.Text, nullable=False),
        sa.Column("first_seen", UTC, nullable=False),
        sa.Column("last_seen", UTC, nullable=False),
        sa.Column("first_ds", DATA_TIME),
        sa.Column("last_ds", DATA_TIME),
        sa.Column("attributes", json_type(), nullable=False),
        sa.Column("overrides", json_type(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_streams"),
        sa.UniqueConstraint("unique_id", name="uq_streams_unique_id"),
    )
    op.create_table(
        "ingests",
        sa.Column("id", sa.Integer, autoincrement=True),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("content_sha256", sa.String(64), nullable=False),
        sa.Column("at", UTC, nullable=False),
        sa.Column("rows_read", sa.BigInteger, nullable=False),
        sa.Column("rows_accepted", sa.BigInteger, nullable=False),
        sa.Column("rows_dropped", sa.BigInteger, nullable=False),
        sa.Column("rows_new", sa.BigInteger, nullable=False),
        sa.Column("rows_revised", sa.BigInteger, nullable=False),
        sa.Column("rows_unchanged", sa.BigInteger, nullable=False),
        sa.Column("n_streams", sa.Integer, nullable=False),
        sa.Column("new_streams", sa.Integer, nullable=False),
        sa.Column("first_ds", DATA_TIME),
        sa.Column("last_ds", DATA_TIME),
        sa.Column("findings", json_type(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ingests"),
        sa.UniqueConstraint("content_sha256", name="uq_ingests_content_sha256"),
    )
    op.create_table(
        "observations",
        sa.Column("stream_id", sa.BigInteger, nullable=False),
        sa.Column("ds", DATA_TIME, nullable=False),
        sa.Column("y", sa.Double, nullable=False),
        sa.Column("ingest_id", sa.Integer, nullable=False),
        sa.Column("revisions", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("stream_id", "ds", name="pk_observations"),
    )
    op.create_index("ix_observations_ds", "observations", ["ds"])
    op.create_table(
        "observation_revisions",
        sa.Column("id", serial(), autoincrement=True),
        sa.Column("stream_id", sa.BigInteger, nullable=False),
        sa.Column("ds", DATA_TIME, nullable=False),
        sa.Column("old_y", sa.Double, nullable=False),
        sa.Column("new_y", sa.Double, nullable=False),
        sa.Column("old_ingest_id", sa.Integer, nullable=False),
        sa.Column("ingest_id", sa.Integer, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_observation_revisions"),
    )
    op.create_index("ix_observation_revisions_stream_id_ds", "observation_revisions", ["stream_id", "ds"])
    op.create_table(
        "ticks",
        sa.Column("tick", sa.Integer, autoincrement=False),
        sa.Column("start_ds", DATA_TIME),
        sa.Column("end_ds", DATA_TIME),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("started_at", UTC, nullable=False),
        sa.Column("finished_at", UTC),
        sa.Column("agent_id", sa.Text),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.PrimaryKeyConstraint("tick", name="pk_ticks"),
        sa.CheckConstraint("status IN ('running', 'done', 'failed')", name="ck_ticks_status"),
    )
    op.create_table(
        "verdicts",
        sa.Column("tick", sa.Integer, nullable=False),
        sa.Column("stream_id", sa.BigInteger, nullable=False),
        sa.Column("verdict", sa.SmallInteger, nullable=False),
        sa.Column("p_value", sa.Double),
        sa.Column("effect", sa.Double),
        sa.Column("retrain", sa.Boolean, nullable=False),
        sa.Column("reason", sa.Text),
        sa.PrimaryKeyConstraint("tick", "stream_id", name="pk_verdicts"),
    )
    op.create_index("ix_verdicts_stream_id_tick", "verdicts", ["stream_id", "tick"])
    op.create_table(
        "forecasts",
        sa.Column("issued_tick", sa.Integer, nullable=False),
        sa.Column("stream_id", sa.BigInteger, nullable=False),
        sa.Column("ds", DATA_TIME, nullable=False),
        sa.Column("y_hat", sa.Double, nullable=False),
        sa.Column("model_version", sa.Integer),
        sa.PrimaryKeyConstraint("issued_tick", "stream_id", "ds", name="pk_forecasts"),
    )
    op.create_index("ix_forecasts_stream_id_ds", "forecasts", ["stream_id", "ds"])
    op.create_table(
        "escalations",
        sa.Column("id", serial(), autoincrement=True),
        sa.Column("stream_id", sa.BigInteger),
        sa.Column("tick", sa.Integer),
        sa.Column("kind", sa.Text, nullable=False),
        sa.Column("severity", sa.SmallInteger, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("updated_at", UTC, nullable=False),
        sa.Column("silenced_until", UTC),
        sa.PrimaryKeyConstraint("id", name="pk_escalations"),
        sa.ForeignKeyConstraint(["stream_id"], ["streams.id"], name="fk_escalations_stream_id_streams"),
        sa.CheckConstraint("status IN ('open', 'acknowledged', 'resolved', 'silenced')",
                           name="ck_escalations_status"),
    )
    op.create_index("ix_escalations_status", "escalations", ["status"])
    op.create_index("ix_escalations_stream_id", "escalations", ["stream_id"])
    op.create_table(
        "audit_log",
        sa.Column("id", serial(), autoincrement=True),
        sa.Column("at", UTC, nullable=False),
        sa.Column("actor", sa.Text, nullable=False),
        sa.Column("action", sa.Text, nullable=False),
        sa.Column("target", sa.Text),
        sa.Column("params", json_type(), nullable=False),
        sa.Column("reason", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
    )
    op.create_index("ix_audit_log_at", "audit_log", ["at"])
    _make_audit_log_append_only()
    op.create_table(
        "agent_state",
        sa.Column("tick", sa.Integer, autoincrement=False),
        sa.Column("saved_at", UTC, nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("n_streams", sa.BigInteger),
        sa.Column("blob", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("tick", name="pk_agent_state"),
    )
    op.create_table(
        "locks",
        sa.Column("name", sa.String(64)),
        sa.Column("holder", sa.Text, nullable=False),
        sa.Column("token", sa.String(32), nullable=False),
        sa.Column("acquired_at", UTC, nullable=False),
        sa.Column("heartbeat_at", UTC, nullable=False),
        sa.Column("expires_at", UTC, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_locks"),
    )


def _make_audit_log_append_only() -> None:
    """Refuse UPDATE and DELETE (and TRUNCATE) on the audit log in the database itself."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute("CREATE FUNCTION mlma_audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
                   "BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$")
        op.execute("CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log "
                   "FOR EACH ROW EXECUTE FUNCTION mlma_audit_log_append_only()")
        op.execute("CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log "
                   "FOR EACH STATEMENT EXECUTE FUNCTION mlma_audit_log_append_only()")
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER audit_log_no_{event.lower()} BEFORE {event} ON audit_log "
                       "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_log_no_truncate ON audit_log")
        op.execute("DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log")
        op.execute("DROP FUNCTION IF EXISTS mlma_audit_log_append_only()")
    for table in ("locks", "agent_state", "audit_log", "escalations", "forecasts", "verdicts", "ticks",
                  "observation_revisions", "observations", "ingests", "streams"):
        op.drop_table(table)
