"""Batched artifact writes (``ArtifactStore.put_bytes_many``, ``ArtifactStore.batch``): the same artifacts as
one by one, one flush of the file system before the renames and one after (an fsync per file and directory
for small batches), and nothing named before its bytes are on disk."""

from __future__ import annotations

import hashlib
import os
import pickle

import pytest

from mlma import registry as registry_module
from mlma.registry import ArtifactMissing, ArtifactStore, ModelRegistry
from mlma.store import Store


def _files(root) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.is_file())


def test_many_artifacts_equal_the_one_by_one_artifacts(tmp_path):
    blobs = [os.urandom(int(n)) for n in (1, 10, 100, 1000, 10_000)] + [b"same", b"same"]
    one = ArtifactStore(tmp_path / "one")
    many = ArtifactStore(tmp_path / "many")
    expected = [one.put_bytes(b) for b in blobs]
    assert many.put_bytes_many(blobs) == expected
    assert _files(many.root) == _files(one.root) and len(_files(many.root)) == 6
    for (sha, _), blob in zip(expected, blobs):
        assert many.get_bytes(sha) == blob
    # Again: nothing new to write, the same answers.
    assert many.put_bytes_many(blobs) == expected


def test_a_damaged_artifact_is_rewritten(tmp_path):
    artifacts = ArtifactStore(tmp_path)
    (sha, _), = artifacts.put_bytes_many([b"model"])
    artifacts.path(sha).write_bytes(b"rot")
    artifacts.put_bytes_many([b"model"])
    assert artifacts.get_bytes(sha) == b"model"


def test_the_disk_is_flushed_before_any_rename_and_after_the_last(tmp_path, monkeypatch):
    events = []
    real_replace = os.replace
    monkeypatch.setattr(registry_module.durable, "syncfs", lambda path: events.append("sync") or True)
    monkeypatch.setattr(registry_module.os, "replace", lambda a, b: events.append("rename") or real_replace(a, b))
    n = registry_module.SYNCFS_MIN_FILES
    ArtifactStore(tmp_path).put_bytes_many([os.urandom(50) for _ in range(n)])
    assert events == ["sync"] + ["rename"] * n + ["sync"]


def test_a_small_batch_fsyncs_its_files_and_directories_instead_of_the_whole_file_system(tmp_path, monkeypatch):
    # syncfs would also flush every other program's dirty pages on the disk: a tick with a handful of new
    # models must not wait for a database's ingest on the same file system.
    events = []
    real_replace = os.replace
    monkeypatch.setattr(registry_module.durable, "syncfs", lambda path: events.append(("sync", path)) or True)
    monkeypatch.setattr(registry_module.durable, "fsync_file", lambda path: events.append(("file", path)))
    monkeypatch.setattr(registry_module.durable, "fsync_dir", lambda path: events.append(("dir", path)))
    monkeypatch.setattr(registry_module.os, "replace", lambda a, b: events.append(("rename", b)) or real_replace(a, b))
    n = registry_module.SYNCFS_MIN_FILES - 1
    artifacts = ArtifactStore(tmp_path)
    results = artifacts.put_bytes_many([os.urandom(50) for _ in range(n)])
    kinds = [kind for kind, _ in events]
    shards = {sha[:2] for sha, _ in results}
    # The shard folders are new: their entries in the root folder are flushed too, after them.
    assert kinds == ["file"] * n + ["rename"] * n + ["dir"] * (len(shards) + 1)
    assert [p for kind, p in events if kind == "dir"][-1] == artifacts.root
    # Into existing folders only: the root is not flushed again.
    for i in range(256):
        (artifacts.root / f"{i:02x}").mkdir(exist_ok=True)
    events.clear()
    artifacts.put_bytes_many([os.urandom(50) for _ in range(n)])
    assert events and ("dir", artifacts.root) not in events


def test_without_syncfs_each_file_and_each_directory_is_fsynced_once(tmp_path, monkeypatch):
    events = []
    real_replace = os.replace
    monkeypatch.setattr(registry_module.durable, "syncfs", lambda path: False)
    monkeypatch.setattr(registry_module.durable, "fsync_file", lambda path: events.append(("file", path)))
    monkeypatch.setattr(registry_module.durable, "fsync_dir", lambda path: events.append(("dir", path)))
    monkeypatch.setattr(registry_module.os, "replace", lambda a, b: events.append(("rename", b)) or real_replace(a, b))
    blobs = [os.urandom(50) for _ in range(40)]
    results = ArtifactStore(tmp_path).put_bytes_many(blobs)
    kinds = [kind for kind, _ in events]
    assert kinds == ["file"] * 40 + ["rename"] * 40 + ["dir"] * (len({sha[:2] for sha, _ in results}) + 1)
    # Each shard folder, then the root that gained their entries.
    assert sorted(p for kind, p in events if kind == "dir") == sorted({tmp_path / sha[:2] for sha, _ in results}
                                                                        | {tmp_path})


def test_a_failure_mid_batch_leaves_no_temporary_file_and_only_whole_artifacts(tmp_path, monkeypatch):
    real_replace = os.replace
    calls = []

    def failing_replace(a, b):
        calls.append(b)
        if len(calls) == 5:
            raise OSError("disk full")
        real_replace(a, b)

    monkeypatch.setattr(registry_module.os, "replace", failing_replace)
    artifacts = ArtifactStore(tmp_path)
    blobs = [os.urandom(64) for _ in range(10)]
    with pytest.raises(OSError, match="disk full"):
        artifacts.put_bytes_many(blobs)
    names = _files(tmp_path)
    assert len(names) == 4 and not any(n.endswith(".tmp") for n in names)
    wanted = {hashlib.sha256(b).hexdigest(): b for b in blobs}
    for name in names:
        assert artifacts.get_bytes(name) == wanted[name]


def test_a_batch_writes_on_leaving_and_its_hashes_cannot_be_recorded_before(tmp_path):
    store = Store.create("sqlite://")
    registry = ModelRegistry(store, tmp_path)
    store.stream_ids(["zone-1"])
    with registry.artifacts.batch():
        item = registry.prepare("zone-1", {"level": 3.0}, spec="naive", promote=True)
        assert not registry.artifacts.exists(item.artifact_sha256)
        with pytest.raises(ArtifactMissing):
            registry.register_many([item])
    assert registry.artifacts.load(item.artifact_sha256) == {"level": 3.0}
    (number,) = registry.register_many([item])
    assert registry.load("zone-1") == {"level": 3.0} and int(number) == 1


def test_a_batch_that_raises_writes_nothing_and_a_large_one_flushes_on_the_way(tmp_path):
    artifacts = ArtifactStore(tmp_path)
    with pytest.raises(KeyError):
        with artifacts.batch():
            artifacts.put({"a": 1})
            raise KeyError("boom")
    assert _files(tmp_path) == []
    blob = pickle.dumps(list(range(100)), protocol=pickle.HIGHEST_PROTOCOL)
    with artifacts.batch(max_bytes=len(blob) * 3):
        shas = [artifacts.put(list(range(100 + i)))[0] for i in range(7)]
        assert sum(artifacts.exists(s) for s in shas) == 6  # two flushes of three on the way
    assert all(artifacts.exists(s) for s in shas)
    with pytest.raises(ValueError, match="max_bytes must be a positive whole number"):
        artifacts.batch(max_bytes=0)
