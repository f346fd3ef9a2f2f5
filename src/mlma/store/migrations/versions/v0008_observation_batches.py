"""A copy of each recent ingest's rows packed as three binary arrays (mlma.store.batches), which the
observation window reads instead of one Python tuple per row.

One row per ingest, written by the ingest in the same transaction as its observations; the newest 32 are
kept. Older stores start with none: the window reads the rows of ingests without a batch, as before. On
PostgreSQL the arrays are stored out of line without TOAST compression (compressing a 6 MB batch cost
more than writing it).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

ARRAYS = ("stream_ids", "ds", "y")


def upgrade() -> None:
    op.create_table(
        "observation_batches",
        sa.Column("ingest_id", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("n_rows", sa.BigInteger, nullable=False),
        *(sa.Column(name, sa.LargeBinary, nullable=False) for name in ARRAYS),
        sa.PrimaryKeyConstraint("ingest_id", name="pk_observation_batches"),
    )
    if op.get_bind().dialect.name == "postgresql":
        for name in ARRAYS:
            op.execute(f"ALTER TABLE observation_batches ALTER COLUMN {name} SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.drop_table("observation_batches")
