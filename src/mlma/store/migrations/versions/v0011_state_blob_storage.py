"""PostgreSQL stores the agent state's blob as it is, without trying to compress it again.

The blob is already compressed (Zstandard, :mod:`mlma.store.state`). PostgreSQL's default storage for a
``bytea`` column (``EXTENDED``) first runs its own compressor (pglz) over every value large enough to be
moved out of line, which finds nothing in compressed bytes and costs as much as storing them: a 22 MB blob
took 350-410 ms to write with ``EXTENDED`` against 180-240 ms with ``EXTERNAL`` (out of line, uncompressed),
and a live tick of 10,000 streams with ridge writes one such blob. SQLite has no such setting.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # Rows written before keep their (pglz) form; new ones are stored uncompressed, out of line.
        op.execute("ALTER TABLE agent_state ALTER COLUMN blob SET STORAGE EXTERNAL")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE agent_state ALTER COLUMN blob SET STORAGE EXTENDED")
