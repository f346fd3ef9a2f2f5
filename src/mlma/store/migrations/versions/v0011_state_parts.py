"""Parts of an agent state saved ahead of the state's own row, on PostgreSQL.

Most of a state (the monitoring policy's reference and window losses: 20 of 22 MB with ridge at 10,000
streams) is final before the fleet is forecast. A live tick on PostgreSQL saves that part in a thread on a
connection of its own while the tick goes on (``Store.stage_state_part``); the state's row, written in the
tick's transaction, names the part's id and sha256 inside its own blob, so a part counts only once a
committed state names it. Parts are dropped with the states older than the kept ones. Stored ``EXTERNAL``
on PostgreSQL as the state's blob is (migration 0007): the bytes are compressed already.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "state_parts",
        sa.Column("id", sa.Integer, nullable=False, autoincrement=True),
        sa.Column("tick", sa.Integer, nullable=False),
        sa.Column("saved_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("blob", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_state_parts"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE state_parts ALTER COLUMN blob SET STORAGE EXTERNAL")


def downgrade() -> None:
    # The code of revision 0010 reads a state as one blob: each state saved in parts gets them back in its
    # own blob (its sha256 and size recomputed) before the parts' table goes.
    from mlma.store.glance import state_part_references
    from mlma.store.state import decode_state, encode_state

    bind = op.get_bind()
    for tick, sha, blob in bind.execute(sa.text("SELECT tick, sha256, blob FROM agent_state")).all():
        ids, shas = state_part_references(bytes(blob))
        if not ids:
            continue
        arrays = decode_state(bytes(blob), sha)
        found = dict(bind.execute(sa.text("SELECT id, blob FROM state_parts WHERE id IN "
                                          f"({', '.join(str(int(i)) for i in ids)})")).all())
        for i, part_sha in zip(ids, shas):
            if i not in found:
                raise RuntimeError(f"the agent state of tick {tick} names part {i}, which is missing: it cannot be "
                                   "put back in one blob; drop that state (or restore a backup) first")
            arrays.update(decode_state(bytes(found[i]), part_sha))
        whole, whole_sha = encode_state(arrays)
        bind.execute(sa.text("UPDATE agent_state SET blob = :blob, sha256 = :sha, size_bytes = :size "
                             "WHERE tick = :tick"), {"blob": whole, "sha": whole_sha, "size": len(whole), "tick": tick})
    op.drop_table("state_parts")
