"""Values of exogenous drivers: observed with the actuals, or known in advance (mlma ingest --future).

Revision ID: 0006
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "driver_values",
        sa.Column("stream_id", sa.BigInteger, nullable=False),
        sa.Column("ds", sa.DateTime(timezone=False), nullable=False),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("ingest_id", sa.Integer, nullable=False),
        sa.Column("value", sa.Double, nullable=False),
        sa.Column("observed", sa.Boolean, nullable=False),
        sa.PrimaryKeyConstraint("stream_id", "ds", "name", "ingest_id", name="pk_driver_values"),
    )
    op.create_index("ix_driver_values_ds", "driver_values", ["ds"])


def downgrade() -> None:
    op.drop_index("ix_driver_values_ds", table_name="driver_values")
    op.drop_table("driver_values")
