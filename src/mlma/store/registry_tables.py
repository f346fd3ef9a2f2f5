"""The model registry's reads: model versions, the champion alias and its history (``model_versions``,
``champions``, ``champion_history``).

:class:`mlma.registry.ModelRegistry` adds the artifacts on disk and the rules (what may be promoted);
this module is only the queries. Its writes are :meth:`mlma.store.transaction.Transaction.record_versions`
and :meth:`~mlma.store.transaction.Transaction.move_champions`, so that a tick or a person's action records
them in its own transaction.

Examples
--------
>>> from mlma.store import NewVersion, Store
>>> store = Store.create("sqlite://")
>>> sid = int(store.stream_ids(["zone-1"])[0])
>>> with store.transaction() as tx:
...     numbers = tx.record_versions([NewVersion(stream=sid, artifact_sha256="ab" * 32, artifact_bytes=3,
...                                              spec="naive")])
>>> rows = RegistryTables(store)
>>> [(v.unique_id, v.version, v.spec) for v in rows.versions([sid])], rows.champion_version(sid)
([('zone-1', 1, 'naive')], None)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np
import pandas as pd
import sqlalchemy as sa

from mlma.store import bulk
from mlma.store import schema as S
from mlma.store.records import UNDECIDED_RESULTS, ChampionChange, ModelVersion
from mlma.store.store import Store

#: Columns of :meth:`RegistryTables.champions`.
CHAMPION_COLUMNS = ["stream_id", "unique_id", "version", "since", "moved_by", "reason", "tick", "spec",
                    "train_start", "train_end", "artifact_sha256"]
#: Columns of :meth:`RegistryTables.champions_at`.
CHAMPION_AT_COLUMNS = ["stream_id", "unique_id", "version", "since", "moved_by", "action", "reason"]


class RegistryTables:
    """Reads of the registry's three tables on ``store``; streams are given by id."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def versions(self, stream_ids: Sequence[int] | None = None, version: int | None = None) -> list[ModelVersion]:
        """Model versions of ``stream_ids`` (None: every stream), optionally only number ``version``, ordered by
        stream id then version."""
        mv = S.model_versions
        query = (sa.select(mv, S.streams.c.unique_id).join(S.streams, S.streams.c.id == mv.c.stream_id)
                 .order_by(mv.c.stream_id, mv.c.version))
        if version is not None:
            query = query.where(mv.c.version == int(version))
        ids = None if stream_ids is None else sorted({int(i) for i in stream_ids})
        rows = []
        with self.store._read() as conn:
            if ids is None:
                rows = conn.execute(query).all()
            # In batches: a statement has a bounded number of parameters (SQLite's limit is 32,766).
            for chunk in bulk.id_chunks(ids or ()):
                rows += conn.execute(query.where(mv.c.stream_id.in_(chunk))).all()
            rows.sort(key=lambda r: (r.stream_id, r.version))
        return [ModelVersion(
            stream_id=int(r.stream_id), unique_id=r.unique_id, version=int(r.version), created_at=r.created_at,
            created_tick=r.created_tick, train_start=None if r.train_start is None else pd.Timestamp(r.train_start),
            train_end=None if r.train_end is None else pd.Timestamp(r.train_end), spec=r.spec, params=r.params,
            metrics=r.metrics, check=r.check_result, artifact_sha256=r.artifact_sha256,
            artifact_bytes=int(r.artifact_bytes), artifact_pruned_at=r.artifact_pruned_at) for r in rows]

    def latest_versions(self, stream_ids: Sequence[int] | None = None) -> list[tuple[int, str, int]]:
        """``(stream_id, unique_id, highest version)`` of every stream (or of ``stream_ids``) with a version."""
        mv = S.model_versions
        query = (sa.select(mv.c.stream_id, S.streams.c.unique_id, sa.func.max(mv.c.version))
                 .join(S.streams, S.streams.c.id == mv.c.stream_id)
                 .group_by(mv.c.stream_id, S.streams.c.unique_id).order_by(mv.c.stream_id))
        if stream_ids is not None:
            query = query.where(mv.c.stream_id.in_([int(i) for i in stream_ids]))
        with self.store._read() as conn:
            rows = conn.execute(query).all()
        return [(int(sid), uid, int(top)) for sid, uid, top in rows]

    def undecided_versions(self, stream_ids: Sequence[int] | None = None) -> list[tuple[int, str, int, str]]:
        """``(stream_id, unique_id, version, result)`` of the versions newer than their stream's serving one whose
        challenger check is not over: ``pending`` (in shadow) or ``awaiting-approval``; of every stream, or of
        ``stream_ids``. One statement (per 10,000 ids), whatever the streams' histories hold.

        >>> from mlma.store import Store
        >>> RegistryTables(Store.create("sqlite://")).undecided_versions([1, 2])
        []
        """
        mv, ch = S.model_versions, S.champions
        result = mv.c.check_result["result"].as_string()
        query = (sa.select(mv.c.stream_id, S.streams.c.unique_id, mv.c.version, result)
                 .join(ch, sa.and_(ch.c.stream_id == mv.c.stream_id, mv.c.version > ch.c.version))
                 .join(S.streams, S.streams.c.id == mv.c.stream_id)
                 .where(result.in_(UNDECIDED_RESULTS)).order_by(mv.c.stream_id, mv.c.version))
        ids = None if stream_ids is None else sorted({int(i) for i in stream_ids})
        with self.store._read() as conn:
            if ids is None:
                rows = conn.execute(query).all()
            else:
                rows = [r for chunk in bulk.id_chunks(ids)
                        for r in conn.execute(query.where(mv.c.stream_id.in_(chunk)))]
        return [(int(sid), uid, int(version), str(res)) for sid, uid, version, res in rows]

    def artifact_hashes(self) -> set[str]:
        """The sha256 of every artifact a recorded version refers to."""
        with self.store._read() as conn:
            return {sha for (sha,) in conn.execute(sa.select(S.model_versions.c.artifact_sha256).distinct())}

    def champion_version(self, stream_id: int) -> int | None:
        """The serving version number of the stream, or None."""
        ch = S.champions
        with self.store._read() as conn:
            version = conn.execute(sa.select(ch.c.version).where(ch.c.stream_id == int(stream_id))).scalar()
        return None if version is None else int(version)

    def champions(self, stream_ids: Sequence[int] | None = None) -> pd.DataFrame:
        """The serving version of every stream (or of ``stream_ids``), one row each (:data:`CHAMPION_COLUMNS`)."""
        ch, mv = S.champions, S.model_versions
        # Timestamps come as the driver gives them and are converted column by column below: SQLAlchemy's
        # per-value processing of three timestamps a row was most of this read at 10,000 streams (it runs
        # every tick).
        raw = [sa.type_coerce(c, sa.types.NullType()).label(c.name) for c in (ch.c.since, mv.c.train_start,
                                                                               mv.c.train_end)]
        query = (sa.select(ch.c.stream_id, S.streams.c.unique_id, ch.c.version, raw[0], ch.c.moved_by,
                           ch.c.reason, ch.c.tick, mv.c.spec, raw[1], raw[2], mv.c.artifact_sha256)
                 .join(S.streams, S.streams.c.id == ch.c.stream_id)
                 .join(mv, sa.and_(mv.c.stream_id == ch.c.stream_id, mv.c.version == ch.c.version))
                 .order_by(ch.c.stream_id))
        if stream_ids is not None:
            query = query.where(ch.c.stream_id.in_([int(i) for i in stream_ids]))
        with self.store._read() as conn:
            rows = conn.execute(query).all()
        # Plain tuples: pandas probes each SQLAlchemy Row for attributes it lacks, which raised and caught two
        # exceptions a row.
        frame = pd.DataFrame([tuple(r) for r in rows], columns=CHAMPION_COLUMNS)
        frame["since"] = pd.Series(pd.to_datetime(frame["since"].tolist(), utc=True, format="ISO8601"),
                                   dtype="datetime64[us, UTC]")
        for name in ("train_start", "train_end"):
            # None is NaT: pandas made it NaN in a column of text (a version registered without its training
            # span beside others), which numpy could not convert.
            frame[name] = pd.to_datetime(frame[name].tolist(), format="ISO8601").to_numpy().astype("datetime64[us]")
        return frame

    def serving_versions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Every stream with a champion: its id, the serving version, who moved it there and when (UTC), by
        stream id.

        The lean twin of :meth:`champions` (four columns, no joins), for the live tick, which asks every
        tick only whether a person moved a champion since (a roll-back, a promotion); at 10,000 streams it is
        several times cheaper than the eleven-column join.

        >>> from mlma.store import Store
        >>> RegistryTables(Store.create("sqlite://")).serving_versions()
        (array([], dtype=int64), array([], dtype=int64), array([], dtype=object), array([], dtype=object))
        """
        ch = S.champions
        with self.store._read() as conn:
            rows = conn.execute(sa.select(ch.c.stream_id, ch.c.version, ch.c.moved_by, ch.c.since)
                                .order_by(ch.c.stream_id)).all()
        if not rows:
            return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, dtype=object), np.empty(0, dtype=object)
        sid, version, by, since = zip(*rows)
        return (np.asarray(sid, dtype=np.int64), np.asarray(version, dtype=np.int64), np.asarray(by, dtype=object),
                np.asarray(since, dtype=object))

    def history(self, stream_id: int) -> list[ChampionChange]:
        """Every move of the stream's champion alias, oldest first."""
        h = S.champion_history
        with self.store._read() as conn:
            rows = conn.execute(sa.select(h).where(h.c.stream_id == int(stream_id)).order_by(h.c.at, h.c.id)).all()
        return [_change(r) for r in rows]

    def serving_at(self, stream_id: int, at: dt.datetime) -> tuple[ChampionChange, ChampionChange | None] | None:
        """The move that put the version serving at ``at`` in place and the move after it (None if none);
        None if the stream had no champion then."""
        h = S.champion_history
        sid = int(stream_id)
        with self.store._read() as conn:
            serving = conn.execute(sa.select(h).where(h.c.stream_id == sid, h.c.at <= at)
                                   .order_by(h.c.at.desc(), h.c.id.desc()).limit(1)).first()
            if serving is None:
                return None
            after = conn.execute(sa.select(h).where(h.c.stream_id == sid, sa.or_(
                h.c.at > serving.at, sa.and_(h.c.at == serving.at, h.c.id > serving.id)))
                .order_by(h.c.at, h.c.id).limit(1)).first()
        return _change(serving), None if after is None else _change(after)

    def champions_at(self, at: dt.datetime, stream_ids: Sequence[int] | None = None) -> pd.DataFrame:
        """For every stream (or ``stream_ids``): the version serving at ``at`` and the move that put it there
        (:data:`CHAMPION_AT_COLUMNS`)."""
        h = S.champion_history
        latest = (sa.select(h.c.stream_id, sa.func.max(h.c.id).label("id")).where(h.c.at <= at)
                  .group_by(h.c.stream_id))
        if stream_ids is not None:
            latest = latest.where(h.c.stream_id.in_([int(i) for i in stream_ids]))
        latest = latest.subquery()
        query = (sa.select(h.c.stream_id, S.streams.c.unique_id, h.c.version, h.c.at, h.c.moved_by, h.c.action,
                           h.c.reason).join(latest, latest.c.id == h.c.id)
                 .join(S.streams, S.streams.c.id == h.c.stream_id).order_by(h.c.stream_id))
        with self.store._read() as conn:
            rows = conn.execute(query).all()
        return pd.DataFrame(rows, columns=CHAMPION_AT_COLUMNS)


def _change(row) -> ChampionChange:
    return ChampionChange(stream_id=int(row.stream_id), version=int(row.version),
                          previous_version=None if row.previous_version is None else int(row.previous_version),
                          action=row.action, moved_by=row.moved_by, reason=row.reason, at=row.at, tick=row.tick)
