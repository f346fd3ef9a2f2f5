"""The model registry: every model version per stream, the champion alias and its history.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UTC = sa.DateTime(timezone=True)
DATA_TIME = sa.DateTime(timezone=False)


def json_type() -> sa.types.TypeEngine:
    return sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("stream_id", sa.BigInteger, nullable=False),
        sa.Column("version", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("created_tick", sa.Integer),
        sa.Column("train_start", DATA_TIME),
        sa.Column("train_end", DATA_TIME),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("params", json_type(), nullable=False),
        sa.Column("metrics", json_type(), nullable=False),
        sa.Column("check_result", json_type(), nullable=False),
        sa.Column("artifact_sha256", sa.String(64), nullable=False),
        sa.Column("artifact_bytes", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("stream_id", "version", name="pk_model_versions"),
        sa.ForeignKeyConstraint(["stream_id"], ["streams.id"], name="fk_model_versions_stream_id_streams"),
    )
    op.create_index("ix_model_versions_artifact_sha256", "model_versions", ["artifact_sha256"])
    op.create_table(
        "champions",
        sa.Column("stream_id", sa.BigInteger, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("since", UTC, nullable=False),
        sa.Column("moved_by", sa.Text, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("tick", sa.Integer),
        sa.PrimaryKeyConstraint("stream_id", name="pk_champions"),
        sa.ForeignKeyConstraint(["stream_id"], ["streams.id"], name="fk_champions_stream_id_streams"),
        sa.ForeignKeyConstraint(["stream_id", "version"], ["model_versions.stream_id", "model_versions.version"],
                                name="fk_champions_version_model_versions"),
    )
    op.create_table(
        "champion_history",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True),
        sa.Column("stream_id", sa.BigInteger, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("previous_version", sa.Integer),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("moved_by", sa.Text, nullable=False),
        sa.Column("reason", sa.Text),
        sa.Column("at", UTC, nullable=False),
        sa.Column("tick", sa.Integer),
        sa.PrimaryKeyConstraint("id", name="pk_champion_history"),
        sa.ForeignKeyConstraint(["stream_id"], ["streams.id"], name="fk_champion_history_stream_id_streams"),
        sa.CheckConstraint("action IN ('promote', 'rollback')", name="ck_champion_history_action"),
    )
    op.create_index("ix_champion_history_stream_id_at", "champion_history", ["stream_id", "at"])


def downgrade() -> None:
    for table in ("champion_history", "champions", "model_versions"):
        op.drop_table(table)
