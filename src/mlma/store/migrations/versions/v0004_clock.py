"""The project's clock: frequency and tick length, fixed by the first ingest that can tell them; JSON
values an older mlma stored with NaN or Infinity (possible on SQLite only) rewritten with null.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import json

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
    if op.get_bind().dialect.name == "sqlite":
        _null_non_finite_json()


# JSON columns that may hold NaN or Infinity written by mlma before 0004 (the audit log is append-only and
# read only through Python, which parses those tokens as null since 0004).
_JSON_COLUMNS = {"ticks": ("tick", ["summary"]), "ingests": ("id", ["findings"]),
                 "streams": ("id", ["attributes", "overrides"]), "stream_actions": ("id", ["params"])}


def _null_non_finite_json() -> None:
    """SQLite's JSON functions refuse NaN and Infinity (a tick summary holding one made /metrics fail)."""
    conn = op.get_bind()
    for table, (key, columns) in _JSON_COLUMNS.items():
        for column in columns:
            rows = conn.exec_driver_sql(
                f"SELECT {key}, {column} FROM {table} WHERE {column} LIKE '%NaN%' OR {column} LIKE '%Infinity%'"
            ).fetchall()
            for row_key, text in rows:
                cleaned = json.dumps(json.loads(text, parse_constant=lambda _token: None))
                if cleaned != text:
                    conn.exec_driver_sql(f"UPDATE {table} SET {column} = ? WHERE {key} = ?", (cleaned, row_key))


def downgrade() -> None:
    op.drop_table("clock")
