"""What the store keeps: the data time before which observations, verdicts and forecasts were pruned.

One row, written by ``Store.prune`` before it deletes anything and only ever moved later; an ingest drops the
rows older than it (a file re-sent whole would otherwise bring the pruned rows back). Also an index of the
revisions by ``ds``, which the prune deletes by.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "retention",
        sa.Column("id", sa.Integer, autoincrement=False, nullable=False),
        sa.Column("kept_from", sa.DateTime(timezone=False), nullable=False),
        sa.Column("set_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("set_by", sa.Text, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_retention"),
        sa.CheckConstraint("id = 1", name="ck_retention_one_row"),
    )
    # Store.prune deletes revisions by ds, slice by slice: without this index each slice read the whole table.
    op.create_index("ix_observation_revisions_ds", "observation_revisions", ["ds"])


def downgrade() -> None:
    op.drop_index("ix_observation_revisions_ds", table_name="observation_revisions")
    op.drop_table("retention")
