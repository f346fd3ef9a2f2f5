"""Issued forecasts packed one row per stream and tick (the horizon as two little-endian arrays); on
PostgreSQL, agent state blobs stored without TOAST compression.

A tick of 10,000 hourly streams wrote 240,000 forecast rows; packed it writes 10,000 (mlma.store.packed
describes the format). Existing rows are converted one issuing tick at a time, so memory stays bounded by a
tick's forecasts; the downgrade converts them back.

The agent state blob is already deflated where that pays (mlma.store.state); PostgreSQL compressed it again
(pglz, on every value over 2 kB), which cost most of a 20 MB state's write. ``STORAGE EXTERNAL`` keeps it out
of line, uncompressed.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

DATA_TIME = sa.DateTime(timezone=False)
# The packed format, frozen here as it was at this revision (mlma.store.packed reads and writes it).
DS_DTYPE, Y_DTYPE = np.dtype("<i8"), np.dtype("<f8")


def _ticks(conn, table: str) -> list[int]:
    return [int(t) for (t,) in conn.execute(sa.text(f"SELECT DISTINCT issued_tick FROM {table} "
                                                    "ORDER BY issued_tick"))]


def _microseconds(values) -> np.ndarray:
    # SQLite hands back the text SQLAlchemy wrote, PostgreSQL naive datetimes: numpy parses both.
    return np.array(values, dtype="datetime64[us]").astype(np.int64)


def _pack_tick(conn, tick: int, old: str, new: sa.Table) -> None:
    rows = conn.execute(sa.text(f"SELECT stream_id, ds, y_hat, model_version FROM {old} "
                                "WHERE issued_tick = :t ORDER BY stream_id, ds"), {"t": tick}).all()
    if not rows:
        return
    ids = np.array([r[0] for r in rows], dtype=np.int64)
    us = _microseconds([r[1] for r in rows])
    y = np.array([r[2] for r in rows], dtype=np.float64)
    versions = [r[3] for r in rows]
    starts = np.flatnonzero(np.r_[True, ids[1:] != ids[:-1]])
    bounds = np.append(starts, len(ids)).tolist()
    out = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        # The old rows allowed one version per value; a stream's forecasts of one tick came from one model,
        # so the first one stands for the row.
        out.append({"issued_tick": tick, "stream_id": int(ids[lo]), "first_ds": _datetime(us[lo]),
                    "last_ds": _datetime(us[hi - 1]), "steps": hi - lo,
                    "ds_packed": us[lo:hi].astype(DS_DTYPE).tobytes(),
                    "y_hat_packed": y[lo:hi].astype(Y_DTYPE).tobytes(),
                    "model_version": None if versions[lo] is None else int(versions[lo])})
    conn.execute(sa.insert(new), out)


def _datetime(us: int):
    return np.datetime64(int(us), "us").astype(object)


def _packed_columns() -> list:
    return [sa.Column("issued_tick", sa.Integer, nullable=False, autoincrement=False),
            sa.Column("stream_id", sa.BigInteger, nullable=False, autoincrement=False),
            sa.Column("first_ds", DATA_TIME, nullable=False),
            sa.Column("last_ds", DATA_TIME, nullable=False),
            sa.Column("steps", sa.Integer, nullable=False),
            sa.Column("ds_packed", sa.LargeBinary, nullable=False),
            sa.Column("y_hat_packed", sa.LargeBinary, nullable=False),
            sa.Column("model_version", sa.Integer)]


def _row_columns() -> list:
    return [sa.Column("issued_tick", sa.Integer, nullable=False),
            sa.Column("stream_id", sa.BigInteger, nullable=False),
            sa.Column("ds", DATA_TIME, nullable=False),
            sa.Column("y_hat", sa.Double, nullable=False),
            sa.Column("model_version", sa.Integer)]


def _set_aside(conn, index: str, aside: str) -> None:
    """Rename the current forecasts table to ``aside``, freeing its names for the new one."""
    op.drop_index(index, table_name="forecasts")
    op.rename_table("forecasts", aside)
    if conn.dialect.name == "postgresql":  # constraint names are schema-wide there
        op.execute(f"ALTER TABLE {aside} RENAME CONSTRAINT pk_forecasts TO pk_{aside}")


def upgrade() -> None:
    conn = op.get_bind()
    _set_aside(conn, "ix_forecasts_stream_id_ds", "forecasts_v6")
    op.create_table("forecasts", *_packed_columns(),
                    sa.PrimaryKeyConstraint("issued_tick", "stream_id", name="pk_forecasts"))
    new = sa.Table("forecasts", sa.MetaData(), *_packed_columns())
    for tick in _ticks(conn, "forecasts_v6"):
        _pack_tick(conn, tick, "forecasts_v6", new)
    op.drop_table("forecasts_v6")
    op.create_index("ix_forecasts_stream_id_last_ds", "forecasts", ["stream_id", "last_ds"])
    if conn.dialect.name == "postgresql":
        op.execute("ALTER TABLE agent_state ALTER COLUMN blob SET STORAGE EXTERNAL")


def downgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        op.execute("ALTER TABLE agent_state ALTER COLUMN blob SET STORAGE EXTENDED")
    _set_aside(conn, "ix_forecasts_stream_id_last_ds", "forecasts_v7")
    op.create_table("forecasts", *_row_columns(),
                    sa.PrimaryKeyConstraint("issued_tick", "stream_id", "ds", name="pk_forecasts"))
    old = sa.Table("forecasts", sa.MetaData(), *_row_columns())
    for tick in _ticks(conn, "forecasts_v7"):
        rows = conn.execute(sa.text("SELECT stream_id, ds_packed, y_hat_packed, model_version FROM forecasts_v7 "
                                    "WHERE issued_tick = :t ORDER BY stream_id"), {"t": tick}).all()
        out = []
        for sid, ds_blob, y_blob, version in rows:
            us = np.frombuffer(bytes(ds_blob), dtype=DS_DTYPE)
            y = np.frombuffer(bytes(y_blob), dtype=Y_DTYPE)
            out.extend({"issued_tick": tick, "stream_id": int(sid), "ds": _datetime(u), "y_hat": float(v),
                        "model_version": version} for u, v in zip(us.tolist(), y.tolist()))
        if out:
            conn.execute(sa.insert(old), out)
    op.drop_table("forecasts_v7")
    op.create_index("ix_forecasts_stream_id_ds", "forecasts", ["stream_id", "ds"])
