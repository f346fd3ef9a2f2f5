"""Which registry version serves each stream, lean: the three columns a live tick compares with its state.

:meth:`mlma.registry.ModelRegistry.champions` joins each champion with its stream's name and its version's
record (eleven columns), which a person reading the registry wants; a live tick only asks, every tick,
whether a person moved a champion since (a roll-back, a promotion), which needs the stream, the version and
who moved it. At 10,000 streams the lean read is several times cheaper than the full one.

Examples
--------
>>> from mlma.store import Store
>>> store = Store.create("sqlite://")
>>> serving_versions(store)
(array([], dtype=int64), array([], dtype=int64), array([], dtype=object))
"""

from __future__ import annotations

import numpy as np
import sqlalchemy as sa

from mlma.store import schema as S
from mlma.store.store import Store


def serving_versions(store: Store) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every stream with a champion: its id, the serving version and who moved it there (by stream id)."""
    ch = S.champions
    with store._read() as conn:
        rows = conn.execute(sa.select(ch.c.stream_id, ch.c.version, ch.c.moved_by).order_by(ch.c.stream_id)).all()
    if not rows:
        return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, dtype=object)
    sid, version, by = zip(*rows)
    return np.asarray(sid, dtype=np.int64), np.asarray(version, dtype=np.int64), np.asarray(by, dtype=object)
