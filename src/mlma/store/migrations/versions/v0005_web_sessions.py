"""Web sessions kept in the store, so that logging out ends a session on every server process; per-stream
parameter overrides outside their bounds are dropped.

Before 0005 ``set-params`` accepted any number: a ``cooldown_ticks`` of 1e20 stopped every tick, 2^62 wrapped
to 0, and a ``delta`` of Infinity made the SQLite JSON unreadable (``/api/fleet`` answered 500). Such values
are removed here (the stream falls back to the project's default, as ``set-params ... default`` would do),
each with an audit entry naming the stream and the value. The bounds are those of ``mlma.params`` when this
migration was written, copied so that the migration does not change with later code.

Revision ID: 0005
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import datetime as dt
import json
import math

import sqlalchemy as sa
from alembic import op

revision = "0005"
# The lead re-chains this onto 0004 when both are merged (0004 is another branch's migration).
down_revision = "0004"
branch_labels = None
depends_on = None

UTC = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "web_sessions",
        sa.Column("id_sha256", sa.String(64), nullable=False),
        sa.Column("token_id", sa.Integer, nullable=False),
        sa.Column("created_at", UTC, nullable=False),
        sa.Column("expires_at", UTC, nullable=False),
        sa.Column("ended_at", UTC),
        sa.PrimaryKeyConstraint("id_sha256", name="pk_web_sessions"),
        sa.ForeignKeyConstraint(["token_id"], ["api_tokens.id"], name="fk_web_sessions_token_id_api_tokens"),
    )
    op.create_index("ix_web_sessions_expires_at", "web_sessions", ["expires_at"])
    _drop_invalid_overrides()


def _out_of_bounds(key: str, value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return True
    if key == "delta":  # an integer is compared as it is: float() of a 400-digit one overflows
        return not (0 <= value <= 100 and (isinstance(value, int) or math.isfinite(value)))
    return not (float(value).is_integer() and 0 <= value <= 10_000)


def _drop_invalid_overrides() -> None:
    conn = op.get_bind()
    postgres = conn.dialect.name == "postgresql"
    rows = conn.execute(sa.text("SELECT id, unique_id, CAST(overrides AS TEXT) FROM streams")).all()
    audit = sa.table("audit_log", sa.column("at", sa.DateTime(timezone=True)), sa.column("actor", sa.Text),
                     sa.column("action", sa.Text), sa.column("target", sa.Text), sa.column("params", sa.JSON),
                     sa.column("reason", sa.Text))
    now = dt.datetime.now(dt.timezone.utc)
    for stream_id, unique_id, text in rows:
        try:
            overrides = json.loads(text) if text else {}   # json reads Infinity and NaN, which SQLite kept
        except ValueError:
            overrides = None
        if not isinstance(overrides, dict):
            dropped, kept = {"overrides": text}, {}
        else:
            dropped = {k: v for k, v in overrides.items() if k in ("delta", "cooldown_ticks") and _out_of_bounds(k, v)}
            kept = {k: v for k, v in overrides.items() if k not in dropped}
        if not dropped:
            continue
        value = json.dumps(kept)
        conn.execute(sa.text("UPDATE streams SET overrides = CAST(:v AS JSONB) WHERE id = :id" if postgres else
                             "UPDATE streams SET overrides = :v WHERE id = :id"), {"v": value, "id": stream_id})
        conn.execute(sa.insert(audit).values(
            at=now if postgres else now.replace(tzinfo=None), actor="agent", action="drop-invalid-overrides",
            target=f"stream:{unique_id}", params={"dropped": {k: repr(v) for k, v in dropped.items()}},
            reason="schema migration 0005: parameter values outside their bounds (docs/api.md) are dropped; the "
                   "stream uses the project's default"))


def downgrade() -> None:
    op.drop_table("web_sessions")
