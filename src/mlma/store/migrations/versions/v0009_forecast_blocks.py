"""Issued forecasts packed one row per issuing tick and block of 64 consecutive stream ids (one row per stream
and tick before).

A live tick of 10,000 streams wrote 10,000 forecast rows, about 70 ms of a 0.4 s tick in row and index
work alone; in blocks it writes 157. mlma.store.packed describes the format. Existing rows are converted one
issuing tick at a time, so memory stays bounded by a tick's forecasts; the downgrade converts them back. On
PostgreSQL the arrays (25 kB a row at hourly day-ahead forecasts) are stored out of line without TOAST
compression, which would try, and fail, to shrink every float array on every write.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

DATA_TIME = sa.DateTime(timezone=False)
# Both formats, frozen here as they were at this revision (mlma.store.packed reads and writes the new one).
BLOCK_STREAMS = 64
ID, STEPS, VERSION, DS, Y = (np.dtype(t) for t in ("<i8", "<i4", "<i8", "<i8", "<f8"))
NO_VERSION = -1
ARRAYS = ("stream_ids", "steps", "model_versions", "ds_packed", "y_hat_packed")


def _block_columns() -> list:
    return [sa.Column("issued_tick", sa.Integer, nullable=False, autoincrement=False),
            sa.Column("block", sa.BigInteger, nullable=False, autoincrement=False),
            sa.Column("first_ds", DATA_TIME, nullable=False),
            sa.Column("last_ds", DATA_TIME, nullable=False),
            sa.Column("n_values", sa.Integer, nullable=False),
            *(sa.Column(name, sa.LargeBinary, nullable=False) for name in ARRAYS)]


def _stream_columns() -> list:
    return [sa.Column("issued_tick", sa.Integer, nullable=False, autoincrement=False),
            sa.Column("stream_id", sa.BigInteger, nullable=False, autoincrement=False),
            sa.Column("first_ds", DATA_TIME, nullable=False),
            sa.Column("last_ds", DATA_TIME, nullable=False),
            sa.Column("steps", sa.Integer, nullable=False),
            sa.Column("ds_packed", sa.LargeBinary, nullable=False),
            sa.Column("y_hat_packed", sa.LargeBinary, nullable=False),
            sa.Column("model_version", sa.Integer)]


def _ticks(conn, table: str) -> list[int]:
    return [int(t) for (t,) in conn.execute(sa.text(f"SELECT DISTINCT issued_tick FROM {table} "
                                                    "ORDER BY issued_tick"))]


def _datetime(us: int):
    return np.datetime64(int(us), "us").astype(object)


def _set_aside(conn, index: str, aside: str) -> None:
    """Rename the current forecasts table to ``aside``, freeing its names for the new one."""
    op.drop_index(index, table_name="forecasts")
    op.rename_table("forecasts", aside)
    if conn.dialect.name == "postgresql":  # constraint names are schema-wide there
        op.execute(f"ALTER TABLE {aside} RENAME CONSTRAINT pk_forecasts TO pk_{aside}")


def _to_blocks(conn, tick: int, new: sa.Table) -> None:
    rows = conn.execute(sa.text("SELECT stream_id, ds_packed, y_hat_packed, model_version FROM forecasts_v8 "
                                "WHERE issued_tick = :t ORDER BY stream_id"), {"t": tick}).all()
    groups: dict[int, list] = {}
    for row in rows:
        groups.setdefault(int(row[0]) // BLOCK_STREAMS, []).append(row)
    out = []
    for block, members in groups.items():
        ds = [np.frombuffer(bytes(r[1]), dtype=DS) for r in members]
        steps = np.array([len(d) for d in ds], dtype=STEPS)
        us = np.concatenate(ds)
        out.append({"issued_tick": tick, "block": block, "first_ds": _datetime(us.min()),
                    "last_ds": _datetime(us.max()), "n_values": int(steps.sum()),
                    "stream_ids": np.array([r[0] for r in members], dtype=ID).tobytes(),
                    "steps": steps.tobytes(),
                    "model_versions": np.array([NO_VERSION if r[3] is None else r[3] for r in members],
                                               dtype=VERSION).tobytes(),
                    "ds_packed": us.astype(DS).tobytes(),
                    "y_hat_packed": b"".join(bytes(r[2]) for r in members)})
    if out:
        conn.execute(sa.insert(new), out)


def _to_streams(conn, tick: int, old: sa.Table) -> None:
    rows = conn.execute(sa.text("SELECT stream_ids, steps, model_versions, ds_packed, y_hat_packed FROM "
                                "forecasts_v9 WHERE issued_tick = :t ORDER BY block"), {"t": tick}).all()
    out = []
    for ids_blob, steps_blob, versions_blob, ds_blob, y_blob in rows:
        ids = np.frombuffer(bytes(ids_blob), dtype=ID)
        steps = np.frombuffer(bytes(steps_blob), dtype=STEPS).astype(np.int64)
        versions = np.frombuffer(bytes(versions_blob), dtype=VERSION)
        us = np.frombuffer(bytes(ds_blob), dtype=DS)
        y = np.frombuffer(bytes(y_blob), dtype=Y)
        edges = np.concatenate([[0], np.cumsum(steps)]).tolist()
        for sid, version, lo, hi in zip(ids.tolist(), versions.tolist(), edges[:-1], edges[1:]):
            out.append({"issued_tick": tick, "stream_id": sid, "first_ds": _datetime(us[lo]),
                        "last_ds": _datetime(us[hi - 1]), "steps": hi - lo, "ds_packed": us[lo:hi].tobytes(),
                        "y_hat_packed": y[lo:hi].tobytes(),
                        "model_version": None if version == NO_VERSION else version})
    if out:
        conn.execute(sa.insert(old), out)


def upgrade() -> None:
    conn = op.get_bind()
    _set_aside(conn, "ix_forecasts_stream_id_last_ds", "forecasts_v8")
    op.create_table("forecasts", *_block_columns(),
                    sa.PrimaryKeyConstraint("issued_tick", "block", name="pk_forecasts"))
    new = sa.Table("forecasts", sa.MetaData(), *_block_columns())
    for tick in _ticks(conn, "forecasts_v8"):
        _to_blocks(conn, tick, new)
    op.drop_table("forecasts_v8")
    op.create_index("ix_forecasts_block_issued_tick", "forecasts", ["block", "issued_tick"])
    if conn.dialect.name == "postgresql":
        for name in ARRAYS:
            op.execute(f"ALTER TABLE forecasts ALTER COLUMN {name} SET STORAGE EXTERNAL")


def downgrade() -> None:
    conn = op.get_bind()
    _set_aside(conn, "ix_forecasts_block_issued_tick", "forecasts_v9")
    op.create_table("forecasts", *_stream_columns(),
                    sa.PrimaryKeyConstraint("issued_tick", "stream_id", name="pk_forecasts"))
    old = sa.Table("forecasts", sa.MetaData(), *_stream_columns())
    for tick in _ticks(conn, "forecasts_v9"):
        _to_streams(conn, tick, old)
    op.drop_table("forecasts_v9")
    op.create_index("ix_forecasts_stream_id_last_ds", "forecasts", ["stream_id", "last_ds"])
