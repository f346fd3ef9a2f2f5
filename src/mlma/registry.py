"""The model registry: every model version of every stream, which one serves, and why it changed.

:class:`ArtifactStore` keeps fitted models on disk as pickles named by the sha256 of their bytes
(``<root>/<sha[:2]>/<sha>``), written to a temporary file and renamed into place so that a crash never
leaves half an artifact, and checked against their name before they are unpickled.

:class:`ModelRegistry` records each version's training window, spec, parameters, metrics and the result
of its challenger check in the :class:`~mlma.store.Store`, moves the per-stream ``champion`` alias
(:meth:`~ModelRegistry.promote`, :meth:`~ModelRegistry.rollback`) and keeps the alias's full history, so
that "which model was serving zone 417 last Tuesday, and why was it replaced?" is one call:
:meth:`~ModelRegistry.champion_at`. Promotions by a person (``by='user:<name>'``) also go to the audit log.

Examples
--------
>>> import tempfile
>>> from mlma.store import Store
>>> store = Store.create("sqlite://")
>>> registry = ModelRegistry(store, tempfile.mkdtemp())
>>> zone = int(store.stream_ids(["zone-417"])[0])
>>> v1 = registry.register(zone, {"level": 10.0}, spec="naive", promote=True, reason="first model")
>>> v2 = registry.register(zone, {"level": 12.0}, spec="naive", promote=True, reason="beat v1 on tick 8",
...                        check={"result": "promoted", "ratio": 0.91})
>>> registry.load("zone-417")
{'level': 12.0}
>>> _ = registry.rollback("zone-417", by="user:ana", reason="v2 over-forecasts the holiday")
>>> [(c.version, c.action, c.moved_by) for c in registry.history("zone-417")]
[(1, 'promote', 'agent'), (2, 'promote', 'agent'), (1, 'rollback', 'user:ana')]
>>> print(registry.champion_at("zone-417", v2.created_at).replaced)
rollback to version 1 by user:ana: v2 over-forecasts the holiday
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import pickle
import secrets
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from mlma import durable
from mlma.store import Store
from mlma.store.errors import StoreError
from mlma.store.records import (ChampionChange, ChampionMove, ModelVersion, NewVersion, VersionPruneReport,
                                check_actor, utc_instant)
from mlma.store.registry_tables import RegistryTables
from mlma.store.store import MovesMade
from mlma.store.version_retention import VersionRetention, check_keep

__all__ = [
    "ArtifactCorrupted",
    "ArtifactMissing",
    "ArtifactPruned",
    "ArtifactStore",
    "ChampionAt",
    "ChampionChange",
    "ChampionMove",
    "DeliveryRefused",
    "ModelRegistry",
    "ModelVersion",
    "MoveOutcome",
    "NewVersion",
    "PublishReport",
    "RegistryListener",
    "VersionPruneReport",
]

log = logging.getLogger("mlma.registry")


class ArtifactCorrupted(StoreError):
    """An artifact's bytes no longer hash to its name: it was altered or damaged, and is not loaded."""


class ArtifactMissing(StoreError, FileNotFoundError):
    """No artifact with that hash is in the artifact store."""


class ArtifactPruned(ArtifactMissing):
    """The version's artifact was deleted by version retention (``[registry] keep_versions``, ``mlma prune
    --versions``): its row is history only, and it cannot be loaded or put in service."""


#: What a refusal of a pruned version names: the setting and the command that prune artifacts.
RETENTION_SETTING = "version retention ([registry] keep_versions in mlma.toml, or `mlma prune --versions`)"


def refuse_pruned(model: ModelVersion, doing: str | None = None) -> None:
    """Raise :class:`ArtifactPruned` if ``model``'s artifact was pruned; ``doing`` says what was refused
    (default: loading it)."""
    if model.artifact_pruned_at is None:
        return
    doing = doing or f"load version {model.version} of stream {model.unique_id!r}"
    raise ArtifactPruned(f"cannot {doing}: version {model.version}'s artifact was "
                         f"pruned on {model.artifact_pruned_at:%Y-%m-%d %H:%M} UTC by {RETENTION_SETTING}; the "
                         f"version's row is kept as history only. Choose a version whose artifact is kept (`mlma "
                         f"versions {model.unique_id}`), or queue a re-fit with `mlma retrain {model.unique_id}`")


def _check_sha(sha: str) -> str:
    if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise ValueError(f"an artifact is named by a sha256 of 64 lower-case hex digits, got {sha!r}")
    return sha


class SharedArtifactsError(ValueError):
    """The artifacts folder holds another store's models too: garbage collection would delete them."""


class ArtifactStore:
    """Fitted models on disk, addressed by the sha256 of their pickled bytes.

    Parameters
    ----------
    root
        The directory, created when the first artifact is written into it (not before: a store opened on a
        folder that does not exist, e.g. a typo in ``mlma.toml``'s ``[store] artifacts``, only reads, and
        finds nothing there, instead of leaving an empty folder behind). For a team on PostgreSQL it must be
        shared by every agent and person that loads models (a network file system or a mounted bucket).

    Examples
    --------
    >>> import tempfile
    >>> artifacts = ArtifactStore(tempfile.mkdtemp())
    >>> sha, size = artifacts.put({"coef": [1.0, 2.0]})
    >>> artifacts.path(sha).relative_to(artifacts.root).parts[0] == sha[:2]
    True
    >>> artifacts.load(sha)
    {'coef': [1.0, 2.0]}
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root).expanduser()
        self._batch = _OpenBatch()

    #: The folder of the signatures of the stores whose models are here (:meth:`sign`).
    SIGNATURES = ".mlma-stores"

    def sign(self, identity: str, label: str) -> bool:
        """Record that the store ``identity`` keeps models here (``label``: how to name it to a person), once:
        :meth:`ModelRegistry.collect_garbage` refuses a folder another store signed, whose models are files this
        store's versions never refer to. Only in a folder that exists (a typo in ``[store] artifacts`` is not
        made a folder: the tick names it), and a signature that cannot be written is a warning, not a failure:
        it guards gc, nothing else. Returns whether it is done (False: the folder does not exist yet)."""
        folder = self.root / self.SIGNATURES
        mark = folder / identity
        try:
            if mark.exists():
                return True
            if not self.root.is_dir():
                return False
            folder.mkdir(exist_ok=True)
            mark.write_text(label + "\n", encoding="utf-8")
            return True
        except OSError as exc:
            log.warning("could not sign the artifacts folder %s for this store (%s): mlma gc in another project "
                        "sharing it would not see this one's models", self.root, exc)
            return True  # said once; not tried at every model

    def unsign(self, identity: str) -> None:
        """Remove the signature ``identity`` (a stale one: :meth:`ModelRegistry.collect_garbage`)."""
        (self.root / self.SIGNATURES / identity).unlink(missing_ok=True)

    def signatures(self) -> dict[str, str]:
        """The stores that signed this folder: identity -> label."""
        folder = self.root / self.SIGNATURES
        if not folder.is_dir():
            return {}
        return {mark.name: mark.read_text(encoding="utf-8", errors="replace").strip()
                for mark in sorted(folder.iterdir()) if mark.is_file()}

    def path(self, sha: str) -> Path:
        """Where the artifact named ``sha`` lives."""
        _check_sha(sha)
        return self.root / sha[:2] / sha

    def exists(self, sha: str) -> bool:
        return self.path(sha).is_file()

    def put(self, obj: Any) -> tuple[str, int]:
        """Pickle ``obj`` and store it; returns its sha256 and size in bytes."""
        return self.put_bytes(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))

    def put_many(self, objs: Iterable[Any]) -> list[tuple[str, int]]:
        """Pickle and store many objects with one flush to disk for all of them (see :meth:`put_bytes_many`)."""
        return self.put_bytes_many([pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL) for obj in objs])

    def put_bytes_many(self, blobs: Iterable[bytes]) -> list[tuple[str, int]]:
        """Store many artifacts; returns each one's sha256 and size, in order.

        As crash-safe as :meth:`put_bytes` one by one, for a fraction of the cost: every new artifact is
        written to a temporary file, the file system is flushed once (``syncfs``; where that is missing, each
        file is fsynced), the files are renamed into place and their directories flushed once more. A crash
        part-way leaves only temporary files (swept by :meth:`collect`) or complete artifacts, and the call
        returns, so its hashes can be recorded, only once every artifact is on disk.

        Examples
        --------
        >>> import tempfile
        >>> artifacts = ArtifactStore(tempfile.mkdtemp())
        >>> [(sha[:8], size) for sha, size in artifacts.put_bytes_many([b"a", b"bb", b"a"])]
        [('ca978112', 1), ('3b64db95', 2), ('ca978112', 1)]
        >>> artifacts.get_bytes(artifacts.put_bytes_many([b"bb"])[0][0])
        b'bb'
        """
        results: list[tuple[str, int]] = []
        todo: dict[str, bytes] = {}
        for data in blobs:
            sha = hashlib.sha256(data).hexdigest()
            results.append((sha, len(data)))
            if sha not in todo and not self._intact(sha):
                todo[sha] = data
        if todo:
            self._write_durably(todo)
        return results

    def batch(self, max_bytes: int = 256 << 20) -> _ArtifactBatch:
        """A context in which :meth:`put` and :meth:`put_bytes` return at once and write on leaving it, in one
        :meth:`put_bytes_many` (or one per ``max_bytes`` of queued artifacts, to bound memory).

        Record the hashes only after the ``with`` block: until then the artifacts may not be on disk
        (:meth:`exists` is False for them, so :meth:`ModelRegistry.register_many` refuses them). When the
        block raises, nothing more is written.

        Examples
        --------
        >>> import tempfile
        >>> artifacts = ArtifactStore(tempfile.mkdtemp())
        >>> with artifacts.batch():
        ...     sha, _ = artifacts.put({"coef": [1.0]})
        ...     artifacts.exists(sha)
        False
        >>> artifacts.exists(sha), artifacts.load(sha)
        (True, {'coef': [1.0]})
        """
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError(f"max_bytes must be a positive whole number, got {max_bytes!r}")
        return _ArtifactBatch(self, max_bytes)

    def _intact(self, sha: str) -> bool:
        """Whether an intact copy of ``sha`` is on disk; one that is counts as written now: its time is
        refreshed, so that :meth:`collect`'s age guard spares it until the tick reusing it has committed (a
        crashed tick's artifacts, the ones `mlma gc` is for, are exactly those its redo reuses)."""
        final = self.path(sha)
        if not (final.is_file() and self._hash_file(final) == sha):
            return False
        with _suppress_os_errors():  # a read-only artifact folder still serves what it holds
            os.utime(final)
        return True

    def _write_durably(self, todo: dict[str, bytes]) -> None:
        """Write ``todo`` (sha -> bytes, none on disk yet) with one flush before and one after the renames."""
        written: list[tuple[str, Path]] = []
        # syncfs flushes every dirty page of the file system, other programs' too (a database ingesting on the
        # same disk took 160 ms a tick for a handful of new models), so it pays only when the batch is large
        # enough that one fsync per file and directory would cost more (the start-up's thousands of models).
        many = len(todo) >= SYNCFS_MIN_FILES
        # A shard folder made now is an entry in the root folder, which must reach the disk too (and the root
        # folder, made now, an entry in its parent).
        made_root = not self.root.is_dir()
        created = made_root
        self.root.mkdir(parents=True, exist_ok=True)
        for parent in {self.path(sha).parent for sha in todo}:
            created |= not parent.is_dir()
            parent.mkdir(parents=True, exist_ok=True)
        # One random tag for the batch: with the hash and the process id it names each temporary file uniquely
        # (O_EXCL says so if not), for less work per file than tempfile.mkstemp.
        tag = f"{os.getpid()}.{secrets.token_hex(6)}"
        try:
            for sha, data in todo.items():
                final = self.path(sha)
                tmp = str(final.parent / f".{sha[:16]}.{tag}.tmp")
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                written.append((tmp, final))
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    os.fchmod(fd, 0o644)  # whatever the umask
                finally:
                    os.close(fd)
            # The data must be on disk before any name points at it, so that no crash leaves a named but
            # incomplete artifact.
            if not (many and durable.syncfs(self.root)):
                for tmp, _ in written:
                    durable.fsync_file(tmp)
            for tmp, final in written:
                os.replace(tmp, final)
        except BaseException:
            for tmp, _ in written:
                with _suppress_os_errors():
                    os.unlink(tmp)
            raise
        if not (many and durable.syncfs(self.root)):
            for parent in sorted({final.parent for _, final in written}):
                durable.fsync_dir(parent)
            if created:
                durable.fsync_dir(self.root)
            if made_root:
                durable.fsync_dir(self.root.parent)

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        """Store raw bytes under their sha256 (no-op if an intact copy is already there)."""
        batch = self._batch.current
        if batch is not None:
            return batch.add(data)
        sha = hashlib.sha256(data).hexdigest()
        final = self.path(sha)
        if self._intact(sha):
            return sha, len(data)
        final.parent.mkdir(parents=True, exist_ok=True)
        # Same directory as the target, so the rename is atomic (same file system).
        fd, tmp = tempfile.mkstemp(dir=final.parent, prefix=f".{sha[:16]}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, final)
        except BaseException:
            with _suppress_os_errors():
                os.unlink(tmp)
            raise
        durable.fsync_dir(final.parent)
        return sha, len(data)

    def get_bytes(self, sha: str) -> bytes:
        """The artifact's bytes, after checking that they still hash to ``sha``."""
        path = self.path(sha)
        try:
            data = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError):  # NotADirectoryError: a file where a folder should be
            raise ArtifactMissing(f"artifact {sha} is not in {self.root} (expected at {path})") from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha:
            raise ArtifactCorrupted(f"artifact {path} is corrupted: its bytes hash to {actual}, not to its name "
                                    f"{sha}; it was altered or damaged and is not loaded. Restore it from a backup "
                                    f"or re-train the model")
        return data

    def load(self, sha: str) -> Any:
        """Unpickle the artifact after verifying its hash (only load artifacts from a root you trust)."""
        return pickle.loads(self.get_bytes(sha))

    def verify(self, sha: str) -> None:
        """Raise :class:`ArtifactMissing` / :class:`ArtifactCorrupted` unless the artifact is intact."""
        self.get_bytes(sha)

    def collect(self, keep: Iterable[str], *, min_age_seconds: float = 3600.0) -> list[str]:
        """Delete artifacts not in ``keep`` and older than ``min_age_seconds``; returns the removed hashes.

        The age guard spares artifacts written (or reused, :meth:`_intact`) for a tick that has not committed
        yet; :meth:`ModelRegistry.collect_garbage` also holds the tick lock, so no tick runs meanwhile.
        """
        keep = set(keep)
        cutoff = time.time() - min_age_seconds
        removed = []
        for path in self.root.glob("??/*"):
            name = path.name
            if name.startswith(".") or len(name) != 64 or name in keep:
                if name.startswith(".") and name.endswith(".tmp") and path.stat().st_mtime < cutoff:
                    path.unlink(missing_ok=True)  # left over by a crash mid-write
                continue
            if path.stat().st_mtime < cutoff:
                path.unlink(missing_ok=True)
                removed.append(name)
        return removed

    @staticmethod
    def _hash_file(path: Path) -> str:
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
        return digest.hexdigest()

    def __repr__(self) -> str:
        return f"ArtifactStore({str(self.root)!r})"


class _OpenBatch(threading.local):
    """The batch open in this thread, if any (each thread batches its own writes)."""

    current: _ArtifactBatch | None = None


class _ArtifactBatch:
    """Artifacts queued by :meth:`ArtifactStore.batch`, written by :meth:`ArtifactStore.put_bytes_many`."""

    def __init__(self, store: ArtifactStore, max_bytes: int) -> None:
        self.store, self.max_bytes = store, max_bytes
        self.queued: list[bytes] = []
        self.size = 0

    def add(self, data: bytes) -> tuple[str, int]:
        self.queued.append(data)
        self.size += len(data)
        if self.size >= self.max_bytes:
            self.flush()
        return hashlib.sha256(data).hexdigest(), len(data)

    def flush(self) -> None:
        queued, self.queued, self.size = self.queued, [], 0
        self.store.put_bytes_many(queued)

    def __enter__(self) -> _ArtifactBatch:
        if self.store._batch.current is not None:
            raise RuntimeError("an artifact batch is already open in this thread")
        self.store._batch.current = self
        return self

    def __exit__(self, kind, value, tb) -> None:
        self.store._batch.current = None
        if kind is None:
            self.flush()


#: Batches of at least this many new artifacts are flushed with one ``syncfs`` instead of an fsync per file.
SYNCFS_MIN_FILES = 64


class _suppress_os_errors:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind, value, tb) -> bool:
        return kind is not None and issubclass(kind, OSError)


# -- records ---------------------------------------------------------------------------------------------
class MoveOutcome(NamedTuple):
    """What a person's promotion or roll-back did: the version it put in service, whether this call moved the
    champion (False: that version served already), and the audit entry of the move (None when not moved, or
    for the agent's moves, which are not audited)."""

    version: int
    moved: bool
    audit_id: int | None = None


@dataclass(frozen=True)
class ChampionAt:
    """Which version served a stream at a moment, since when and why, and what replaced it (if anything)."""

    when: dt.datetime
    model: ModelVersion
    since: ChampionChange
    replaced: ChampionChange | None

    def __str__(self) -> str:
        m = self.model
        trained = f", trained on {m.train_start} to {m.train_end}" if m.train_end is not None else ""
        text = (f"{m.unique_id} at {self.when:%Y-%m-%d %H:%M} UTC: version {m.version} ({m.spec}{trained}), "
                f"champion since {self.since.at:%Y-%m-%d %H:%M} UTC ({self.since})")
        if self.replaced is not None:
            text += f"; replaced {self.replaced.at:%Y-%m-%d %H:%M} UTC ({self.replaced})"
        return text


# -- listeners -------------------------------------------------------------------------------------------
class DeliveryRefused(Exception):
    """Raised by a :class:`RegistryListener` whose side answered and refused one stream's item (e.g. a model
    deleted there): that stream's trouble, which :meth:`ModelRegistry.publish` does not take for the listener's
    side being down."""


class RegistryListener:
    """Something outside mlma that follows the registry (e.g. :class:`mlma.mlflow_sync.MlflowSync`).

    :meth:`ModelRegistry.publish` hands it every version it has not seen and every stream whose champion
    differs from the one it last saw, whoever recorded them (a tick, a person's roll-back, another process).
    What it has seen is its own to say (:meth:`seen`), so the registry's tables are its outbox: a delivery
    that failed is simply offered again by the next :meth:`~ModelRegistry.publish`. The default methods
    ignore everything.
    """

    def seen(self) -> tuple[Mapping[str, int], Mapping[str, int]]:
        """What was delivered: ``({unique_id: highest version}, {unique_id: champion version})``."""
        return {}, {}

    def on_version_created(self, version: ModelVersion) -> None:
        """A new version (called in version order per stream)."""

    def on_champion_moved(self, unique_id: str, change: ChampionChange) -> None:
        """The stream's champion is now ``change.version`` (after its versions were delivered)."""


@dataclass(frozen=True)
class PublishReport:
    """What one :meth:`ModelRegistry.publish` delivered, and what is left for the next one."""

    versions: int
    champions: int
    pending: int
    #: The first error (None: none); ``failed_streams`` streams had one, their items are left for next time.
    error: str | None = None
    failed_streams: int = 0


# -- the registry ----------------------------------------------------------------------------------------
class ModelRegistry:
    """Model versions per stream, the champion alias and its history, over a store and an artifact store.

    Parameters
    ----------
    store
        Where versions and the alias are recorded.
    artifacts
        The :class:`ArtifactStore` or its directory. Default for a SQLite file store: ``artifacts/`` next to
        the database file; a PostgreSQL store needs it given.

    Streams are given by id (int) or ``unique_id`` (str) everywhere.
    """

    def __init__(self, store: Store, artifacts: ArtifactStore | str | os.PathLike | None = None) -> None:
        self.store = store
        if artifacts is None:
            database = store.sqlite_file
            if database is None:
                raise ValueError("artifacts must be given (a directory every agent can reach) unless the store "
                                 "is a SQLite file")
            artifacts = database.parent / "artifacts"
        self.artifacts = artifacts if isinstance(artifacts, ArtifactStore) else ArtifactStore(artifacts)
        self.tables = RegistryTables(store)
        self._signed = False
        self._identity_read: tuple[str | None] | None = None  # read once: (identity,)

    def _identity(self) -> str | None:
        """This store's identity in the artifacts folder's signatures: its clock, fixed when its first data came
        (to the microsecond), so a project keeps it when moved, backed up and restored; None before that (and
        for a store whose clock is only in its saved state, older than the clock table)."""
        clock = self.store.clock(from_state=False)
        if clock is None or clock.fixed_at is None:
            return None
        text = f"{clock.freq}|{clock.tick}|{clock.fixed_at.isoformat()}"
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def sign_artifacts(self) -> None:
        """Sign the artifacts folder for this store (:meth:`ArtifactStore.sign`) until it is signed, this store's
        identity read once per registry. The live agent asks at each tick's start (a project that wrote no model
        since it was upgraded keeps its models there all the same) and once the tick's models are written."""
        if self._signed:
            return
        if self._identity_read is None:
            self._identity_read = (self._identity(),)
        identity = self._identity_read[0]
        self._signed = identity is None or self.artifacts.sign(identity, self._label())

    def _label(self) -> str:
        """How a signature names this store to a person: its URL without a password."""
        return self.store.engine.url.render_as_string(hide_password=True)

    # -- writing -----------------------------------------------------------------------------------------
    def prepare(self, stream: int | str, model: Any, *, spec: str, train_start: Any = None, train_end: Any = None,
                params: Mapping[str, Any] | None = None, metrics: Mapping[str, Any] | None = None,
                check: Mapping[str, Any] | None = None, promote: bool = False, by: str = "agent",
                reason: str | None = None) -> NewVersion:
        """Write ``model``'s artifact and describe the version, without recording it yet.

        Hand the result to :meth:`register_many` or to :meth:`mlma.store.Store.write_tick`
        (``new_versions=``), which records it with the rest of a tick. ``check`` holds the challenger
        check's outcome, e.g. ``{"result": "promoted", "ratio": 0.91, "p_value": 0.03}``.
        """
        if not isinstance(spec, str) or not spec:
            raise ValueError(f"spec must name the model (e.g. 'lightgbm'), got {spec!r}")
        sid = self.store.resolve(stream) if isinstance(stream, str) else int(stream)
        sha, size = self.artifacts.put(model)
        return NewVersion(stream=sid, artifact_sha256=sha, artifact_bytes=size, spec=spec,
                          train_start=None if train_start is None else pd.Timestamp(train_start),
                          train_end=None if train_end is None else pd.Timestamp(train_end),
                          params=dict(params or {}), metrics=dict(metrics or {}), check=dict(check or {}),
                          promote=promote, by=by, reason=reason)

    def register(self, stream: int | str, model: Any, *, spec: str, tick: int | None = None,
                 **details: Any) -> ModelVersion:
        """Store ``model`` and record it as the stream's next version (see :meth:`prepare` for ``details``)."""
        item = self.prepare(stream, model, spec=spec, **details)
        (number,) = self.register_many([item], tick=tick)
        return self.version(item.stream, int(number))

    def register_many(self, items: Sequence[NewVersion], *, tick: int | None = None) -> np.ndarray:
        """Record prepared versions in one transaction (promoting those marked so); returns their numbers."""
        for item in items:
            if not self.artifacts.exists(item.artifact_sha256):
                raise ArtifactMissing(f"artifact {item.artifact_sha256} of stream {item.stream} is not in "
                                      f"{self.artifacts.root}; write it with prepare() first")
        with self.store.transaction() as tx:
            numbers = tx.record_versions(items, tick)
            tx.move_champions([ChampionMove(v.stream, int(n), v.by, v.reason)
                               for v, n in zip(items, numbers) if v.promote], tick)
        return numbers

    def promote(self, stream: int | str, version: int, *, by: str, reason: str | None = None) -> ModelVersion:
        """Make ``version`` the stream's champion (no-op if it already is: a retried promotion changes nothing);
        ``by`` is 'agent' or 'user:<name>'. :class:`~mlma.store.ChampionMoved` (a ``ValueError``) if another
        version was put in service between this call's read and its move (two people at once: the first
        one's stands)."""
        self.put_in_service(stream, version, by=by, reason=reason)
        return self.version(stream, int(version))

    def put_in_service(self, stream: int | str, version: int, *, by: str, reason: str | None = None,
                       from_version: int | None = None) -> MoveOutcome:
        """:meth:`promote`, saying what it changed (``moved`` False: the version served already, also when the
        same promotion sent at the same time moved it first).

        ``from_version`` is the version the caller saw serving (0: none): a promotion asked on a stale view (a
        page left open while the agent or a person put another version in service) is refused, naming the
        move that came between, instead of replacing a model its sender never saw."""
        check_actor(by)
        sid = self.store.resolve(stream)
        current = self.champion(sid)
        if current is not None and current.version == int(version):
            return MoveOutcome(int(version), False)
        serving = 0 if current is None else current.version
        if from_version is not None and int(from_version) != serving:
            raise ValueError(self._not_serving(sid, stream, int(from_version), serving, "promoted"))
        self._check_loadable(stream, self.version(stream, int(version)), "promote")
        return self._move_one(ChampionMove(sid, int(version), by, reason, "promote",
                                           if_serving=0 if current is None else current.version))

    def promote_many(self, streams: Sequence[int | str], versions: Sequence[int], *, by: str,
                     reason: str | None = None) -> None:
        """Promote one version per stream in one transaction."""
        check_actor(by)
        if len(streams) != len(versions):
            raise ValueError(f"streams and versions differ in length: {len(streams)} vs {len(versions)}")
        ids = self._ids(streams)
        for s, v in zip(ids, versions):
            found = self.tables.versions([int(s)], int(v))
            if found:  # a version that does not exist is refused by the move itself, naming the stream
                self._check_loadable(int(s), found[0], "promote")
        self._move([ChampionMove(int(s), int(v), by, reason, "promote") for s, v in zip(ids, versions)])

    def rollback(self, stream: int | str, to_version: int | None = None, *, by: str,
                 reason: str | None = None, from_version: int | None = None) -> ModelVersion:
        """Put an earlier version back in service; default: the one that served before the current one."""
        return self.version(stream, self.roll_back(stream, to_version, by=by, reason=reason,
                                                   from_version=from_version).version)

    def roll_back(self, stream: int | str, to_version: int | None = None, *, by: str,
                  reason: str | None = None, from_version: int | None = None) -> MoveOutcome:
        """:meth:`rollback`, saying what it changed: the version rolled back to and whether this call moved the
        champion (False: that version served already, e.g. the same roll-back was sent twice).

        ``from_version`` is the version the caller saw serving, the one to roll back *from*. A script that may
        send its request again (a timeout, a retry) should give it: without it a second "roll back to the
        previous version" rolls back from the version the first one put in service, which undoes it. With it,
        a roll-back from that version that already happened changes nothing, and one asked while another move
        came between is refused, naming the move.
        """
        check_actor(by)
        sid = self.store.resolve(stream)
        current = self.champion(sid)
        if current is None:
            raise ValueError(f"stream {stream!r} has no champion to roll back")
        if from_version is not None and int(from_version) != current.version:
            last = self.history(sid)[-1]
            if (last.action == "rollback" and last.previous_version == int(from_version)
                    and to_version in (None, last.version)):
                return MoveOutcome(current.version, False)  # this roll-back was made already
            raise ValueError(self._not_serving(sid, stream, int(from_version), current.version, "rolled back"))
        if to_version is None:
            to_version = self.history(sid)[-1].previous_version
            if to_version is None:
                raise ValueError(f"stream {stream!r} has had only one champion (version {current.version}); "
                                 "give to_version")
        if int(to_version) == current.version:  # a retried roll-back to a chosen version, as a retried promotion
            return MoveOutcome(current.version, False)
        self._check_loadable(stream, self.version(stream, int(to_version)), "roll back")
        # Conditional on the version read above: the same roll-back sent twice at once moves once (the second
        # finds the version it rolls back to serving: nothing to do, as for a retried promotion).
        return self._move_one(ChampionMove(sid, int(to_version), by, reason, "rollback",
                                           if_serving=current.version))

    def _not_serving(self, sid: int, stream: int | str, seen: int, serving: int, done: str) -> str:
        """The refusal of a move asked from version ``seen`` (``from_version``) while ``serving`` serves (0: none),
        naming the last move, if any."""
        history = self.history(sid)
        now = (f"version {serving} does since {history[-1].at:%Y-%m-%d %H:%M} UTC ({history[-1]})" if history
               else "no version does")
        return f"version {seen} does not serve stream {stream!r}: {now}; nothing was {done}"

    def _check_loadable(self, stream: int | str, model: ModelVersion, what: str) -> None:
        """Refuse to put a version in service whose artifact was pruned (:class:`ArtifactPruned`), is missing or
        does not match its hash: the next tick could not load it."""
        refuse_pruned(model, f"{what} stream {model.unique_id!r} to version {model.version}")
        try:
            self.artifacts.verify(model.artifact_sha256)
        except (ArtifactCorrupted, ArtifactMissing) as exc:
            kind = "missing" if isinstance(exc, ArtifactMissing) else "damaged (its bytes do not match its hash)"
            raise type(exc)(f"cannot {what} stream {model.unique_id!r} to version {model.version}: its artifact "
                            f"{model.artifact_sha256[:12]}... is {kind}. Choose another version, or queue a "
                            f"re-fit with `mlma retrain {model.unique_id}`") from None

    def _move(self, moves: list[ChampionMove]) -> MovesMade:
        with self.store.transaction() as tx:
            return tx.move_champions(moves)

    def _move_one(self, move: ChampionMove) -> MoveOutcome:
        made = self._move([move])
        return MoveOutcome(int(move.version), bool(made.made), made.audit_ids.get(int(move.stream)))

    def _ids(self, streams: Sequence[int | str]) -> np.ndarray:
        return self.store.resolve_many(streams)

    # -- reading -----------------------------------------------------------------------------------------
    def version(self, stream: int | str, version: int) -> ModelVersion:
        """One version; ``KeyError`` if the stream has no such version."""
        sid = self.store.resolve(stream)
        found = self.tables.versions([sid], int(version))
        if not found:
            raise KeyError(f"stream {stream!r} has no model version {version}")
        return found[0]

    def versions(self, stream: int | str) -> list[ModelVersion]:
        """Every version of the stream, oldest first."""
        return self.tables.versions([self.store.resolve(stream)])

    def champion(self, stream: int | str) -> ModelVersion | None:
        """The serving version of the stream, or None."""
        sid = self.store.resolve(stream)
        version = self.tables.champion_version(sid)
        return None if version is None else self.version(sid, version)

    def champions(self, streams: Sequence[int | str] | None = None) -> pd.DataFrame:
        """The serving version of every stream (or of ``streams``), one row each, in one query.

        Columns: stream_id, unique_id, version, since, moved_by, reason, tick, spec, train_start, train_end,
        artifact_sha256.
        """
        return self.tables.champions(None if streams is None else self._ids(streams).tolist())

    def history(self, stream: int | str) -> list[ChampionChange]:
        """Every move of the stream's champion alias, oldest first."""
        return self.tables.history(self.store.resolve(stream))

    def champion_at(self, stream: int | str, when: Any) -> ChampionAt | None:
        """Which version served the stream at ``when`` (UTC; naive is taken as UTC), since when and why, and
        what replaced it and why; None if it had no champion then."""
        sid = self.store.resolve(stream)
        at = utc_instant(when, "when")
        found = self.tables.serving_at(sid, at)
        if found is None:
            return None
        serving, after = found
        return ChampionAt(at, self.version(sid, serving.version), serving, after)

    def champions_at(self, when: Any, streams: Sequence[int | str] | None = None) -> pd.DataFrame:
        """For every stream (or ``streams``): the version serving at ``when`` and the move that put it there.

        Columns: stream_id, unique_id, version, since, moved_by, action, reason.
        """
        at = utc_instant(when, "when")
        return self.tables.champions_at(at, None if streams is None else self._ids(streams).tolist())

    # -- models ------------------------------------------------------------------------------------------
    def load(self, stream: int | str, version: int | None = None) -> Any:
        """Load a version's model (default: the champion), verifying the artifact's hash first."""
        model = self.champion(stream) if version is None else self.version(stream, version)
        if model is None:
            raise KeyError(f"stream {stream!r} has no champion")
        refuse_pruned(model)
        return self.artifacts.load(model.artifact_sha256)

    def load_champions(self, streams: Sequence[int | str] | None = None) -> dict[int, Any]:
        """The champion model of every stream (or of ``streams``), by stream id, each verified."""
        table = self.champions(streams)
        cache: dict[str, Any] = {}
        out = {}
        for sid, sha in zip(table["stream_id"].tolist(), table["artifact_sha256"].tolist()):
            if sha not in cache:
                cache[sha] = self.artifacts.load(sha)
            out[int(sid)] = cache[sha]
        return out

    # -- listeners ---------------------------------------------------------------------------------------
    def publish(self, listener: RegistryListener, *, max_seconds: float | None = None) -> PublishReport:
        """Deliver to ``listener`` the versions and champion moves it has not seen; never raises.

        Stream by stream: first the champion moves of streams with no new version (a person's roll-back waits
        for no backlog), then each other stream's new versions, oldest first, and its champion. An error
        leaves that stream's remaining items for the next call and goes on with the next stream (a model
        deleted on the listener's side, a lost artifact file: that stream's trouble); three streams failing in
        a row stop the call (the listener's side is down; errors of mlma's own artifact store, such as a lost
        file, and a :class:`DeliveryRefused` are the stream's and do not count). It also stops ``max_seconds``
        after the listener said what it holds (reading it back may be long, and must not use up the time for
        deliveries). What is left is offered again by the next call, since the listener's
        :meth:`~RegistryListener.seen` does not include it.
        """
        try:
            seen_versions, seen_champions = listener.seen()
            deadline = None if max_seconds is None else time.monotonic() + max_seconds
            behind = {sid: int(seen_versions.get(uid, 0)) for sid, uid, top in self.tables.latest_versions()
                      if top > int(seen_versions.get(uid, 0))}
            new = [v for lo in range(0, len(behind), 10_000)
                   for v in self.tables.versions(sorted(behind)[lo:lo + 10_000])
                   if v.version > behind[v.stream_id]]
            champions = self.champions()
        except Exception as exc:  # noqa: BLE001 - a listener never breaks the caller (a tick, an action)
            log.warning("publishing the registry to %r failed before anything was delivered; offered again next "
                        "time: %s: %s", listener, type(exc).__name__, exc)
            return PublishReport(0, 0, -1, f"{type(exc).__name__}: {exc}")
        moved = {int(sid): uid for sid, uid, v in zip(champions["stream_id"], champions["unique_id"],
                                                        champions["version"])
                 if int(seen_champions.get(uid, -1)) != int(v)}
        versions: dict[int, list[ModelVersion]] = {}
        for version in new:
            versions.setdefault(version.stream_id, []).append(version)
        order = [sid for sid in sorted(moved) if sid not in versions] + sorted(versions)
        pending = len(new) + len(moved)
        done_versions = done_champions = in_a_row = 0
        errors: list[str] = []
        out_of_time = False

        def expired() -> bool:
            return deadline is not None and time.monotonic() > deadline

        for sid in order:
            try:
                for version in versions.get(sid, ()):
                    if expired():
                        break
                    listener.on_version_created(version)
                    done_versions += 1
                if expired():  # the stream's champion waits for its versions
                    out_of_time = True
                    break
                if sid in moved:
                    listener.on_champion_moved(moved[sid], self.history(sid)[-1])
                    done_champions += 1
                in_a_row = 0
            except Exception as exc:  # noqa: BLE001 - this stream's items wait for the next call
                errors.append(f"stream {moved.get(sid) or versions[sid][0].unique_id!r}: {type(exc).__name__}: "
                              f"{exc}")
                if isinstance(exc, (StoreError, DeliveryRefused)):  # a lost model file, a refusal: this stream's
                    continue
                in_a_row += 1
                if in_a_row >= 3:
                    break
        left = pending - done_versions - done_champions
        if errors:
            log.warning("publishing the registry to %r: %d stream(s) failed (first %s); delivered %d version(s) "
                        "and %d champion(s), %d item(s) offered again next time", listener, len(errors),
                        errors[0], done_versions, done_champions, left)
        elif out_of_time:
            log.warning("publishing the registry to %r stopped after max_seconds=%g: delivered %d version(s) and "
                        "%d champion(s), %d item(s) left for next time", listener, max_seconds, done_versions,
                        done_champions, left)
        return PublishReport(done_versions, done_champions, left, errors[0] if errors else None, len(errors))

    def collect_garbage(self, *, min_age_seconds: float = 3600.0, holder: str | None = None) -> list[str]:
        """Delete artifacts no recorded version refers to (older than ``min_age_seconds``).

        Holds the tick lock while it reads the recorded hashes and deletes (``holder`` names it; default
        ``gc@host:pid``): a tick records its new versions at its commit, so artifacts it wrote or reused would
        otherwise look unreferenced. Raises :class:`~mlma.store.LockHeld` while a tick runs.
        """
        import socket

        identity = self._identity()
        others = {key: label for key, label in self.artifacts.signatures().items() if key != identity}
        for key in [key for key, label in others.items() if label == self._label()]:
            # This store's URL, another identity: a store re-created there (mlma.db deleted and made again),
            # whose predecessor is gone. Its signature is stale, not another project's.
            log.warning("dropping the stale signature %s of a store re-created at %s", key, self._label())
            self.artifacts.unsign(key)
            del others[key]
        if others:
            raise SharedArtifactsError(
                f"the artifacts folder {self.artifacts.root.resolve()} also holds the models of {len(others)} other "
                f"store(s) ({'; '.join(sorted(others.values())[:3])}): they are files no version of this store refers "
                "to, so gc cannot tell them from a crashed tick's leftovers and would delete them; give each project "
                "an artifacts folder of its own ([store] artifacts in mlma.toml), or, if that project is gone, "
                f"delete its signature in {self.artifacts.root.resolve() / ArtifactStore.SIGNATURES}")
        who = holder or f"gc@{socket.gethostname()}:{os.getpid()}"
        with self.store.tick_lock(who):
            return self.artifacts.collect(self.tables.artifact_hashes(), min_age_seconds=min_age_seconds)

    # -- version retention -------------------------------------------------------------------------------
    def prune_versions(self, keep: int, *, by: str, reason: str | None = None, dry_run: bool = False,
                       protect: Iterable[tuple[int, int]] = (), holder: str | None = None) -> VersionPruneReport:
        """Delete the artifacts of each stream's versions older than its newest ``keep``, keeping every version
        still in use whatever its age; audited (``prune-versions``). The versions' rows stay, marked pruned.

        In use (:func:`mlma.store.version_retention.in_use`): the serving version, the one a roll-back would put
        back (the version that served before it), a challenger in shadow or waiting for approval, and the
        versions in ``protect`` (``(stream_id, version)``: the live agent's saved state names those its next
        tick loads). A file several versions share goes only when none of the versions kept refers to it.

        The rows are marked and the files queued in one transaction, with the audit entry; then the queued files
        are deleted and taken off the queue. A prune stopped between the two (killed) leaves the rows marked and
        the queue, whose files the next prune deletes (``leftover`` in the report). Holds the tick lock while it
        works (``holder`` names it; default ``prune@host:pid``): a tick that reuses an artifact file records the
        version at its commit. :class:`~mlma.store.LockHeld` while a tick runs. ``dry_run`` counts, without the
        lock, and changes nothing.

        Examples
        --------
        >>> import tempfile
        >>> from mlma.store import Store
        >>> store = Store.create("sqlite://")
        >>> registry = ModelRegistry(store, tempfile.mkdtemp())
        >>> _ = store.stream_ids(["zone-1"])
        >>> for level in (1.0, 2.0, 3.0, 4.0):
        ...     _ = registry.register("zone-1", {"level": level}, spec="naive", promote=True)
        >>> dry = registry.prune_versions(1, by="user:ana", dry_run=True)
        >>> dry.versions, dry.files, dry.dry_run
        (2, 2, True)
        >>> report = registry.prune_versions(1, by="user:ana", reason="disk")
        >>> [(v.version, v.pruned) for v in registry.versions("zone-1")]   # 3: the roll-back target
        [(1, True), (2, True), (3, False), (4, False)]
        >>> registry.rollback("zone-1", to_version=1, by="user:ana")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        mlma.registry.ArtifactPruned: cannot roll back stream 'zone-1' to version 1: version 1's artifact was ...
        """
        import socket

        check_actor(by)
        check_keep(keep)
        retention = VersionRetention(self.store)
        protect = {(int(s), int(v)) for s, v in protect}
        if dry_run:
            plan = retention.plan(keep, protect)
            needed = retention.still_needed(retention.queued(), protect)
            left = retention.sizes(sha for sha, used in needed.items() if not used and sha not in plan.orphans)
            return VersionPruneReport(keep, len(plan.pairs), plan.streams, len(plan.orphans) + len(left),
                                      sum(plan.orphans.values()) + sum(left.values()), len(left), dry_run=True)
        who = holder or f"prune@{socket.gethostname()}:{os.getpid()}"
        with self.store.tick_lock(who):
            plan = retention.mark(keep, by=by, reason=reason, protect=protect)
            deleted = self._delete_queued(retention, protect, bool(plan.pairs))
        left = len(set(deleted) - set(plan.orphans))
        return VersionPruneReport(keep, len(plan.pairs), plan.streams, len(deleted), sum(deleted.values()), left)

    def _delete_queued(self, retention: VersionRetention, protect: set[tuple[int, int]],
                       marked: bool = True) -> dict[str, int]:
        """Delete the queued artifact files no kept version refers to now, flush their folders, then take them
        off the queue (those still needed too: their versions are kept again); returns the deleted ones' sizes.
        ``marked``: this prune marked versions (else, with an empty queue, there is nothing to look at)."""
        queued = retention.queued()
        if marked or queued:  # a fleet-wide read (seconds at 100,000 streams): not after every tick for nothing
            # Back in service since the marking (a move checked before it): the version keeps its file and loses
            # its mark; one whose file went already (a prune stopped after its deletions) stays marked, as it is.
            retention.unmark([(s, v) for s, v, sha in retention.marked_in_use(protect)
                              if self.artifacts.exists(sha)])
        deleted: dict[str, int] = {}
        for lo in range(0, len(queued), 5_000):
            chunk = queued[lo:lo + 5_000]
            needed = retention.still_needed(chunk, protect)
            sizes = retention.sizes(chunk)
            folders = set()
            for sha in chunk:
                if needed[sha]:
                    continue
                path = self.artifacts.path(sha)
                try:
                    path.unlink()
                    folders.add(path.parent)
                except FileNotFoundError:  # deleted by the prune that queued it, which stopped before its dequeue
                    pass
                deleted[sha] = sizes.get(sha, 0)
            # The deletions reach the disk before the queue forgets them: a file that came back after a power cut
            # would be referenced by marked rows only, and `mlma gc` would never delete it.
            for folder in sorted(folders):
                durable.fsync_dir(folder)
            retention.dequeue(chunk)
        return deleted
