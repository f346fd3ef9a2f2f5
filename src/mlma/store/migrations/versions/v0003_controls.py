"""Tick summaries and verdict losses; the engineer's controls (queued stream actions, abnormal periods), API tokens and alert deliveries.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UTC = sa.DateTime(timezone=True)
DATA_TIME = sa.DateTime(timezone=False)


def json_type() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(JSONB(), "postgresql")


def big_id() -> sa.types.TypeEngine:
    return sa.BigInteger().with_variant(sa.Integer, "sqlite")


def upgrade() -> None:
    op.add_column("ticks", sa.Column("summary", json_type()))
    op.add_column("verdicts", sa.Column("loss", sa.Double))
    op.add_column("verdicts", sa.Column("reference_loss", sa.Double))
    op.add_column("verdicts", sa.Column("model_version", sa.Integer))
    op.create_table(
        "stream_actions",
        sa.Column("id", big_id(), autoincrement=True, nullable=False),
        sa.Column("stream_id", sa.BigInteger, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("params", json_type(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("applied_tick", sa.Integer),
        sa.Column("applied_at", UTC),
        sa.Column("outcome", sa.Text),
        sa.PrimaryKeyConstraint("id", name="pk_stream_actions"),
        sa.ForeignKeyConstraint(["stream_id"], ["streams.id"], name="fk_stream_actions_stream_id_streams"),
        sa.CheckConstraint("kind IN ('retrain', 'reset-reference', 'approve', 'reject')",
                           name="ck_stream_actions_kind"),
        sa.CheckConstraint("status IN ('pending', 'applied', 'cancelled')", name="ck_stream_actions_status"),
    )
    op.create_index("ix_stream_actions_status", "stream_actions", ["status"])
    op.create_index("ix_stream_actions_stream_id", "stream_actions", ["stream_id"])
    op.create_table(
        "abnormal_periods",
        sa.Column("id", big_id(), autoincrement=True, nullable=False),
        sa.Column("stream_id", sa.BigInteger),
        sa.Column("start_ds", DATA_TIME, nullable=False),
        sa.Column("end_ds", DATA_TIME, nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("cancelled_at", UTC),
        sa.PrimaryKeyConstraint("id", name="pk_abnormal_periods"),
        sa.ForeignKeyConstraint(["stream_id"], ["streams.id"], name="fk_abnormal_periods_stream_id_streams"),
    )
    op.create_index("ix_abnormal_periods_end_ds", "abnormal_periods", ["end_ds"])
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("created_by", sa.Text, nullable=False),
        sa.Column("last_used_at", UTC),
        sa.Column("revoked_at", UTC),
        sa.PrimaryKeyConstraint("id", name="pk_api_tokens"),
        sa.UniqueConstraint("name", name="uq_api_tokens_name"),
        sa.UniqueConstraint("token_sha256", name="uq_api_tokens_token_sha256"),
        sa.CheckConstraint("role IN ('viewer', 'operator', 'admin')", name="ck_api_tokens_role"),
    )
    op.create_table(
        "alert_notifications",
        sa.Column("id", big_id(), autoincrement=True, nullable=False),
        sa.Column("receiver", sa.Text, nullable=False),
        sa.Column("group_key", sa.Text, nullable=False),
        sa.Column("escalation_ids", json_type(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("error", sa.Text),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("sent_at", UTC),
        sa.PrimaryKeyConstraint("id", name="pk_alert_notifications"),
        sa.CheckConstraint("status IN ('sent', 'failed')", name="ck_alert_notifications_status"),
    )
    op.create_index("ix_alert_notifications_receiver_group_key", "alert_notifications", ["receiver", "group_key"])


def downgrade() -> None:
    op.drop_table("alert_notifications")
    op.drop_table("api_tokens")
    op.drop_table("abnormal_periods")
    op.drop_table("stream_actions")
    op.drop_column("verdicts", "model_version")
    op.drop_column("verdicts", "reference_loss")
    op.drop_column("verdicts", "loss")
    op.drop_column("ticks", "summary")
