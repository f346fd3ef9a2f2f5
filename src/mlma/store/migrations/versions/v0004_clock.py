"""The project's clock: frequency and tick length, fixed by the first ingest that can tell them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "clock",
        sa.Column("id", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("freq", sa.Text, nullable=False),
        sa.Column("tick", sa.Text, nullable=False),
        sa.Column("fixed_at", UTC, nullable=False),
        sa.Column("fixed_by", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_clock"),
        sa.CheckConstraint("id = 1", name="ck_clock_one_row"),
    )


def downgrade() -> None:
    op.drop_table("clock")
