"""Which streams an audited action touched, when its target names many (``streams:40``, ``group:city=c03``).

The audit entry of a pin of 40 streams or of a city said how many and which group, not which streams: the
stream's page, ``mlma audit --stream`` and ``GET /api/audit?stream=`` could not find it. One row per stream and
entry; append-only, as the audit log is (the database refuses updates and deletes).

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "audit_streams",
        sa.Column("stream_id", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("audit_id", sa.BigInteger, nullable=False, autoincrement=False),
        sa.PrimaryKeyConstraint("stream_id", "audit_id", name="pk_audit_streams"),
    )
    if op.get_bind().dialect.name == "postgresql":
        # The audit log's function (migration 0001) raises for any table it guards.
        op.execute("CREATE TRIGGER audit_streams_append_only BEFORE UPDATE OR DELETE ON audit_streams "
                   "FOR EACH ROW EXECUTE FUNCTION mlma_audit_log_append_only()")
        op.execute("CREATE TRIGGER audit_streams_no_truncate BEFORE TRUNCATE ON audit_streams "
                   "FOR EACH STATEMENT EXECUTE FUNCTION mlma_audit_log_append_only()")
    else:
        for event in ("UPDATE", "DELETE"):
            op.execute(f"CREATE TRIGGER audit_streams_no_{event.lower()} BEFORE {event} ON audit_streams "
                       "BEGIN SELECT RAISE(ABORT, 'audit_streams is append-only'); END")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_streams_no_truncate ON audit_streams")
        op.execute("DROP TRIGGER IF EXISTS audit_streams_append_only ON audit_streams")
    op.drop_table("audit_streams")
