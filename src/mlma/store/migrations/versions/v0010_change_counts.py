"""Counts of champion moves and override changes; the verdicts' index by stream dropped.

``change_counts`` holds one row per kind of change a live tick must notice (``champions``, ``overrides``),
raised in the transaction of every such change. A live tick read all 10,000 champions (and scanned the
streams' overrides) every tick to find the rare move a person made; it now reads two numbers and re-reads
only when one moved.

The verdicts' secondary index ``(stream_id, tick)`` made each tick's 10,000 inserts land on 10,000 random
index pages: a tick's verdict insert grew from 28 to 50 ms over 40 ticks at 10,000 streams on PostgreSQL.
One stream's verdict history is read by the primary key ``(tick, stream_id)`` instead, a lookup per tick.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

KINDS = ("champions", "overrides")


def upgrade() -> None:
    table = op.create_table(
        "change_counts",
        sa.Column("name", sa.String(32), nullable=False),
        sa.Column("value", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_change_counts"),
    )
    op.bulk_insert(table, [{"name": kind, "value": 0} for kind in KINDS])
    op.drop_index("ix_verdicts_stream_id_tick", table_name="verdicts")


def downgrade() -> None:
    op.create_index("ix_verdicts_stream_id_tick", "verdicts", ["stream_id", "tick"])
    op.drop_table("change_counts")
