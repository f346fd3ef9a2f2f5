"""Version retention's SQL: which model versions' artifacts may go, marking them pruned, and the queue of
artifact files to delete (``model_versions.artifact_pruned_at``, ``artifact_deletions``; migration 0014).

:meth:`mlma.registry.ModelRegistry.prune_versions` adds the files on disk and the tick lock; this module is only
the queries. Per stream, the newest ``keep`` versions keep their artifacts, and so does every version still in
use whatever its age (:func:`in_use`): the serving one, the one it would roll back to (the version that served
before it), a challenger in shadow or waiting for approval (its check ``pending`` or ``awaiting-approval``), and
the versions the caller names (the live agent's saved state). The rows stay.

A prune is two steps: :meth:`VersionRetention.mark` marks the rows and queues the files no unmarked version refers
to, with the audit entry, in one transaction; then the caller deletes each queued file that no kept version
refers to by then (:meth:`VersionRetention.still_needed`) and takes it off the queue (:meth:`dequeue`). A prune
stopped between the two leaves the queue for the next one.

Examples
--------
>>> from mlma.store import NewVersion, Store
>>> store = Store.create("sqlite://")
>>> sid = int(store.stream_ids(["zone-1"])[0])
>>> with store.transaction() as tx:
...     numbers = tx.record_versions([NewVersion(stream=sid, artifact_sha256=c * 64, artifact_bytes=3, spec="naive")
...                                   for c in "abc"])
>>> retention = VersionRetention(store)
>>> retention.plan(1).pairs
[(0, 1), (0, 2)]
>>> marked = retention.mark(1, by="user:ana", reason="disk")
>>> marked.pairs, sorted(sha[:2] for sha in retention.queued())
([(0, 1), (0, 2)], ['aa', 'bb'])
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field

import sqlalchemy as sa

from mlma.store import bulk
from mlma.store import schema as S
from mlma.store.records import UNDECIDED_RESULTS, check_actor
from mlma.store.store import Store

__all__ = ["Plan", "UNDECIDED_RESULTS", "VersionRetention", "check_keep", "in_use"]

#: Pairs or hashes per ``IN (...)`` list (two bind parameters a pair: below SQLite's 32,766 and PostgreSQL's 65,535).
PER_STATEMENT = 5_000


@dataclass(frozen=True)
class Plan:
    """What a prune marks: the versions (``(stream_id, version)``, sorted), and of their artifacts those no other
    kept version refers to (``{sha256: bytes}``), which go."""

    pairs: list[tuple[int, int]] = field(default_factory=list)
    orphans: dict[str, int] = field(default_factory=dict)

    @property
    def streams(self) -> int:
        return len({s for s, _ in self.pairs})


def in_use(stream_id, version, check_result) -> sa.ColumnElement[bool]:
    """Whether the version with these columns is still in use: it serves, it is the version its stream would roll
    back to (the one that served before the serving one: the last move's ``previous_version``), or its challenger
    check is not over (:data:`UNDECIDED_RESULTS`)."""
    ch, h = S.champions, S.champion_history
    # Correlated to the outer row through two levels of sub-queries: said explicitly (auto-correlation is one level).
    last = sa.select(sa.func.max(h.c.id)).where(h.c.stream_id == stream_id).correlate_except(h).scalar_subquery()
    later = h.alias("later_move")
    serving = sa.exists().where(ch.c.stream_id == stream_id, ch.c.version == version)
    roll_back_target = sa.exists(sa.select(later.c.id).where(later.c.id == last, later.c.previous_version == version))
    result = sa.func.coalesce(check_result["result"].as_string(), "")
    return sa.or_(serving, roll_back_target, result.in_(UNDECIDED_RESULTS))


class VersionRetention:
    """Version retention's reads and writes on ``store``; streams are given by id."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def plan(self, keep: int, protect: Collection[tuple[int, int]] = ()) -> Plan:
        """The versions a prune keeping ``keep`` per stream would mark now (``protect``: more versions to keep,
        as ``(stream_id, version)``), and the files that would go."""
        check_keep(keep)
        with self.store._read() as conn:
            return self._plan(conn, keep, {(int(s), int(v)) for s, v in protect})

    def _plan(self, conn: sa.Connection, keep: int, protect: set[tuple[int, int]]) -> Plan:
        mv = S.model_versions
        rank = sa.func.row_number().over(partition_by=mv.c.stream_id, order_by=mv.c.version.desc())
        ranked = sa.select(mv.c.stream_id, mv.c.version, mv.c.artifact_sha256, mv.c.artifact_bytes,
                           mv.c.artifact_pruned_at, mv.c.check_result, rank.label("rank")).subquery()
        r = ranked.c
        rows = conn.execute(sa.select(r.stream_id, r.version, r.artifact_sha256, r.artifact_bytes)
                            .where(r.rank > keep, r.artifact_pruned_at.is_(None),
                                   sa.not_(in_use(r.stream_id, r.version, r.check_result)))
                            .order_by(r.stream_id, r.version)).all()
        rows = [row for row in rows if (int(row.stream_id), int(row.version)) not in protect]
        pairs = [(int(row.stream_id), int(row.version)) for row in rows]
        sizes = {row.artifact_sha256: int(row.artifact_bytes) for row in rows}
        if not pairs:
            return Plan()
        # Of these files, those a version that stays unmarked refers to stay: one set-based join against the
        # candidates held in temporary tables (a statement per few thousand of them compiled for seconds each).
        with _staged_pairs(conn, pairs) as marked, _staged_shas(conn, sizes) as files:
            kept = {sha for (sha,) in conn.execute(
                sa.select(mv.c.artifact_sha256).distinct()
                .join(files, files.c.sha == mv.c.artifact_sha256)
                .where(mv.c.artifact_pruned_at.is_(None),
                       sa.not_(sa.exists().where(marked.c.stream_id == mv.c.stream_id,
                                                 marked.c.version == mv.c.version))))}
        return Plan(pairs, {sha: size for sha, size in sizes.items() if sha not in kept})

    def mark(self, keep: int, *, by: str, reason: str | None = None,
             protect: Collection[tuple[int, int]] = ()) -> Plan:
        """Mark the versions of :meth:`plan` pruned and queue their orphaned files for deletion, with an audit
        entry (``prune-versions``: the counts, and the streams touched), in one transaction; returns what it
        marked (nothing, and no audit entry, when nothing is to go).

        The plan is read before the write transaction, so that the database's write lock (all of it, on SQLite)
        is held only for the marking: the caller holds the tick lock, so no tick adds versions meanwhile, and a
        person's roll-back or promotion that puts a planned version back in service before the marking commits
        is found when the files are deleted (:meth:`still_needed`, :meth:`marked_in_use`), as one made just
        after it is."""
        check_keep(keep)
        check_actor(by)
        mv, q = S.model_versions, S.artifact_deletions
        plan = self.plan(keep, protect)
        if not plan.pairs:
            return plan
        with self.store._write() as conn:
            now = self.store._now(conn)
            with _staged_pairs(conn, plan.pairs) as marked:
                conn.execute(sa.update(mv).where(sa.exists().where(marked.c.stream_id == mv.c.stream_id,
                                                                   marked.c.version == mv.c.version))
                             .values(artifact_pruned_at=now))
            if plan.orphans:
                with _staged_shas(conn, plan.orphans) as files:
                    conn.execute(sa.insert(q).from_select(
                        ["artifact_sha256", "queued_at"],
                        sa.select(files.c.sha, sa.literal(now, type_=q.c.queued_at.type))
                        .where(sa.not_(sa.exists().where(q.c.artifact_sha256 == files.c.sha)))))
            self.store._audit(conn, now, by, "prune-versions", "registry",
                              {"keep_versions": keep, "versions": len(plan.pairs), "streams": plan.streams,
                               "files": len(plan.orphans), "bytes": sum(plan.orphans.values())},
                              reason, streams=sorted({s for s, _ in plan.pairs}))
        return plan

    def queued(self) -> list[str]:
        """The artifact files marked for deletion and not deleted yet, by hash."""
        q = S.artifact_deletions
        with self.store._read() as conn:
            return [sha for (sha,) in conn.execute(sa.select(q.c.artifact_sha256).order_by(q.c.artifact_sha256))]

    def still_needed(self, shas: Sequence[str], protect: Collection[tuple[int, int]] = ()) -> dict[str, bool]:
        """For each of ``shas``: whether a kept version refers to it now (one not marked pruned, one in use,
        :func:`in_use`, also if marked, or one in ``protect``), so that its file must stay."""
        mv = S.model_versions
        needed: dict[str, bool] = {}
        with self.store._read() as conn:
            for chunk in _chunks(sorted(set(shas))):
                rows = conn.execute(sa.select(mv.c.artifact_sha256, mv.c.stream_id, mv.c.version,
                                              mv.c.artifact_pruned_at,
                                              in_use(mv.c.stream_id, mv.c.version, mv.c.check_result).label("used"))
                                    .where(mv.c.artifact_sha256.in_(chunk)))
                for sha, s, v, pruned, used in rows:
                    keep = pruned is None or bool(used) or (int(s), int(v)) in protect
                    needed[sha] = needed.get(sha, False) or keep
        return {sha: needed.get(sha, False) for sha in shas}

    def marked_in_use(self, protect: Collection[tuple[int, int]] = ()) -> list[tuple[int, int, str]]:
        """``(stream_id, version, sha256)`` of the versions marked pruned that serve now, are their stream's
        roll-back target, or are in ``protect``: put back in service after the marking by a move checked before
        it (a person's roll-back or promotion does not take the tick lock), whatever the queue holds (a file
        shared with a kept version is not queued)."""
        mv, ch, h = S.model_versions, S.champions, S.champion_history
        last = sa.select(h.c.stream_id, sa.func.max(h.c.id).label("id")).group_by(h.c.stream_id).subquery()
        used = sa.union(sa.select(ch.c.stream_id, ch.c.version),
                        sa.select(h.c.stream_id, h.c.previous_version.label("version"))
                        .join(last, last.c.id == h.c.id).where(h.c.previous_version.is_not(None))).subquery()
        columns = (mv.c.stream_id, mv.c.version, mv.c.artifact_sha256)
        with self.store._read() as conn:
            rows = conn.execute(sa.select(*columns)
                                .join(used, sa.and_(used.c.stream_id == mv.c.stream_id,
                                                    used.c.version == mv.c.version))
                                .where(mv.c.artifact_pruned_at.is_not(None))).all()
            for chunk in _chunks(sorted({(int(s), int(v)) for s, v in protect})):
                rows += conn.execute(sa.select(*columns)
                                     .where(sa.tuple_(mv.c.stream_id, mv.c.version).in_(chunk),
                                            mv.c.artifact_pruned_at.is_not(None))).all()
        return sorted({(int(s), int(v), sha) for s, v, sha in rows})

    def unmark(self, pairs: Collection[tuple[int, int]]) -> int:
        """Clear the pruned mark of these versions (``(stream_id, version)``; their files are on disk); returns
        how many were marked."""
        mv = S.model_versions
        restored = 0
        with self.store._write() as conn:
            for chunk in _chunks(sorted({(int(s), int(v)) for s, v in pairs})):
                restored += conn.execute(sa.update(mv).where(sa.tuple_(mv.c.stream_id, mv.c.version).in_(chunk),
                                                             mv.c.artifact_pruned_at.is_not(None))
                                         .values(artifact_pruned_at=None)).rowcount
        return restored

    def sizes(self, shas: Iterable[str]) -> dict[str, int]:
        """The recorded size of each artifact (the largest any version records; 0 for one none records)."""
        mv = S.model_versions
        sizes: dict[str, int] = {}
        with self.store._read() as conn:
            for chunk in _chunks(sorted(set(shas))):
                for sha, size in conn.execute(sa.select(mv.c.artifact_sha256, sa.func.max(mv.c.artifact_bytes))
                                              .where(mv.c.artifact_sha256.in_(chunk))
                                              .group_by(mv.c.artifact_sha256)):
                    sizes[sha] = int(size)
        return sizes

    def dequeue(self, shas: Sequence[str]) -> None:
        """Take files off the deletion queue (deleted, or needed again)."""
        q = S.artifact_deletions
        with self.store._write() as conn:
            for chunk in _chunks(sorted(set(shas))):
                conn.execute(sa.delete(q).where(q.c.artifact_sha256.in_(chunk)))


def check_keep(keep: int) -> None:
    """Refuse a ``keep`` that is not a whole number >= 1 (``ValueError``)."""
    if isinstance(keep, bool) or not isinstance(keep, int) or keep < 1:
        raise ValueError(f"keep (the newest versions kept per stream) must be a whole number >= 1, got {keep!r}")


def _staged_pairs(conn: sa.Connection, pairs: Sequence[tuple[int, int]]):
    """``(stream_id, version)`` pairs in a temporary table (:func:`mlma.store.bulk.staged`), keyed for joins."""
    return bulk.staged(conn, "mlma_stage_prune_pairs", {"stream_id": "int", "version": "int"},
                       {"stream_id": [s for s, _ in pairs], "version": [v for _, v in pairs]},
                       key=("stream_id", "version"))


def _staged_shas(conn: sa.Connection, shas: Collection[str]):
    """Artifact hashes in a temporary table, keyed for joins."""
    return bulk.staged(conn, "mlma_stage_prune_files", {"sha": "text"}, {"sha": sorted(shas)}, key=("sha",))


def _chunks(items: Sequence) -> Iterable[list]:
    for lo in range(0, len(items), PER_STATEMENT):
        yield list(items[lo:lo + PER_STATEMENT])

