"""The agent's per-stream arrays as one blob, hashed so that a damaged blob is never loaded.

The blob is a zip archive of ``.npy`` arrays, each compressed with Zstandard (``NAME.npy.zst``): the format
``npz-zstd``. Most of a fleet's state is float32 losses of the monitor's reference and window, which the
stdlib's deflate shrinks only at several times the cost of storing them, and a live tick writes the state every
tick. Measured on the state of a steady-state fleet of 10,000 streams (33 MB of arrays, seasonal naive's losses
of counts): deflate (level 1, array by array where a probe said it paid) 246 ms into 6.2 MB; Zstandard level 3
93 ms into 5.1 MB (best of three, beside other work). Blobs of the earlier ``npz`` format (deflated or stored
``.npy`` members, what ``numpy.savez`` writes) are still read.

A part of a state that is final early can be saved apart, ahead of the rest (:class:`StagedPart`; on
PostgreSQL, ``Store.stage_state_part``); the state's blob then names it by id and sha256 in a member of its own
(``store.parts.json``), so that its hash covers the part's.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import io
import json
import zipfile
from collections.abc import Callable, Mapping

import numpy as np
import zstandard

from mlma.store.errors import StateCorrupted
from mlma.store.glance import PARTS_MEMBER

#: The format name recorded with each blob (``agent_state.format``); ``npz`` blobs of earlier versions load too.
FORMAT = "npz-zstd"
#: Zstandard's level: 3 (its default) cost no more than 1 on the state and made it 30 % smaller.
ZSTD_LEVEL = 3
_COMPRESSED = ".npy.zst"


def encode_state(arrays: Mapping[str, np.ndarray]) -> tuple[bytes, str]:
    """Pack named arrays into a blob (:data:`FORMAT`); returns the blob and its sha256.

    Object arrays are refused: loading them would need pickle, and a state read back from a shared
    database must not be able to run code.

    >>> blob, sha = encode_state({"agent.champion": np.array([3, -1])})
    >>> decode_state(blob, sha)["agent.champion"].tolist()
    [3, -1]
    """
    if not isinstance(arrays, Mapping) or not arrays:
        raise ValueError("state must be a non-empty mapping of names to numpy arrays")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", allowZip64=True) as archive:
        for name, value in _checked(arrays).items():
            _write_member(archive, name, value)
    blob = buffer.getvalue()
    return blob, hashlib.sha256(blob).hexdigest()


def _checked(arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    clean = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"state array names must be non-empty strings, got {name!r}")
        if name.startswith("store."):
            raise ValueError(f"state array name {name!r}: names starting 'store.' are the store's own")
        value = np.asarray(value)
        if value.dtype.hasobject:
            raise ValueError(f"state array {name!r} has dtype object; store numbers, booleans or fixed-width "
                             "strings (e.g. np.array(list_of_str, dtype=str)), or a padded 2-d array for "
                             "ragged lists")
        clean[name] = value
    return clean


def _write_member(archive: zipfile.ZipFile, name: str, value: np.ndarray) -> None:
    member = io.BytesIO()
    np.lib.format.write_array(member, value, allow_pickle=False)
    # A compressor per member: they are cheap to make and not to be shared between threads. Compressing
    # releases the GIL, so a state encoded in a thread (StateEncoding) leaves the tick's own work running.
    data = zstandard.ZstdCompressor(level=ZSTD_LEVEL).compress(member.getbuffer())
    info = zipfile.ZipInfo(f"{name}{_COMPRESSED}", date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    archive.writestr(info, data)


def _read_only(arrays: Mapping[str, np.ndarray], copy: bool) -> dict[str, np.ndarray]:
    kept = {}
    for name, value in _checked(arrays).items():
        value = np.array(value, copy=True) if copy else value
        value.flags.writeable = False
        kept[name] = value
    return kept


class StagedPart:
    """Arrays of a state that are final before the rest of it, encoded and saved in a thread of their own.

    ``save(blob, sha256)`` stores the encoded part and returns its id; it runs in the thread, so that a
    database writing tens of MB works while the caller goes on. The part counts only once the blob of a state
    names it (:meth:`StateEncoding.add_part`). Without ``save`` the part is not saved apart: the state's own
    blob takes its arrays. The arrays are kept read-only (copied first unless ``copy=False``).

    >>> saved = {}
    >>> part = StagedPart({"policy.ref": np.zeros((2, 3))}, lambda blob, sha: saved.setdefault(sha, 7))
    >>> part.result()[0], part.arrays["policy.ref"].flags.writeable
    (7, False)
    >>> StagedPart({}, lambda blob, sha: 8).apart
    False
    """

    def __init__(self, arrays: Mapping[str, np.ndarray], save: Callable[[bytes, str], int] | None = None, *,
                 copy: bool = True) -> None:
        if not isinstance(arrays, Mapping):
            raise ValueError("a state part must be a mapping of names to numpy arrays")
        #: The part's arrays, read-only.
        self.arrays = _read_only(arrays, copy)
        #: Whether the part is saved apart from the state's blob (an empty part, such as the state of a
        #: policy that keeps none, is not).
        self.apart = save is not None and bool(self.arrays)
        self._future: concurrent.futures.Future | None = None
        if self.apart:
            worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mlma-stage-state")
            self._future = worker.submit(self._encode_and_save, save)
            worker.shutdown(wait=False)  # the thread ends with its one task

    def _encode_and_save(self, save: Callable[[bytes, str], int]) -> tuple[int, str, int]:
        blob, sha = encode_state(self.arrays)
        return int(save(blob, sha)), sha, len(blob)

    def result(self) -> tuple[int, str, int]:
        """The saved part's id, sha256 and size in bytes (waits for the thread; its error is raised here)."""
        if self._future is None:
            raise ValueError("this part is not saved apart: its arrays go into the state's own blob")
        return self._future.result()


class StateEncoding:
    """A state encoded (as :func:`encode_state` does) in a thread of its own while the caller goes on, given
    in parts: the parts that are final early start compressing early.

    The live agent hands over the agent's arrays as soon as its tick is done (compressing them takes about as
    long as writing the tick's rows) and the registry versions it names just before the commit. Each part is
    copied when it is added (read-only copies: what is saved stays what was saved, whoever holds the
    arrays), so the caller may change its arrays at once.

    >>> encoding = StateEncoding()
    >>> encoding.add({"agent.champion": np.array([3, -1])})
    >>> encoding.add({"live.version": np.array([2, 0])})
    >>> blob, sha = encoding.result()
    >>> sorted(decode_state(blob, sha)), encoding.arrays["live.version"].flags.writeable
    (['agent.champion', 'live.version'], False)
    >>> encoding.close()
    """

    def __init__(self) -> None:
        #: The read-only copies of every part added so far.
        self.arrays: dict[str, np.ndarray] = {}
        self._buffer = io.BytesIO()
        self._archive = zipfile.ZipFile(self._buffer, "w", allowZip64=True)
        self._worker = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="mlma-encode-state")
        self._written: list[concurrent.futures.Future] = []
        self._result: tuple[bytes, str] | None = None
        #: The parts saved apart from the blob, which it names (:meth:`add_part`).
        self.parts: list[StagedPart] = []

    def add(self, arrays: Mapping[str, np.ndarray], *, copy: bool = True) -> None:
        """Copy ``arrays`` and start writing them into the blob; names must be new.

        ``copy=False`` hands the arrays over instead (a copy of the policy's 30 MB at 10,000 streams costs
        10 ms): they are made read-only, so that a change by the caller after all fails loudly instead of
        changing the saved state.
        """
        if self._result is not None:
            raise RuntimeError("the state's blob is finished; nothing can be added to it")
        if not isinstance(arrays, Mapping):
            raise ValueError("state must be a non-empty mapping of names to numpy arrays")
        twice = sorted(set(arrays) & set(self.arrays))
        if twice:
            raise ValueError(f"state arrays {twice[:3]} were given twice")
        copies = _read_only(arrays, copy)
        self.arrays.update(copies)
        self._written.append(self._worker.submit(self._write, copies))

    def add_part(self, part: StagedPart) -> None:
        """Take a part of the state: one saved apart is named in the blob (its id and sha256, waited for
        when the blob is finished: :data:`~mlma.store.glance.PARTS_MEMBER`); one that is not has its arrays
        written into the blob."""
        if not part.apart:
            self.add(part.arrays, copy=False)
            return
        if self._result is not None:
            raise RuntimeError("the state's blob is finished; nothing can be added to it")
        twice = sorted(set(part.arrays) & set(self.arrays))
        if twice:
            raise ValueError(f"state arrays {twice[:3]} were given twice")
        self.arrays.update(part.arrays)
        self.parts.append(part)

    def _write(self, arrays: dict[str, np.ndarray]) -> None:
        for name, value in arrays.items():
            _write_member(self._archive, name, value)

    def result(self) -> tuple[bytes, str]:
        """The finished blob and its sha256 (waits for the parts still being written)."""
        if self._result is None:
            if not self.arrays:
                raise ValueError("state must be a non-empty mapping of names to numpy arrays")
            for written in self._written:
                written.result()  # an error of the thread is raised here
            if self.parts:
                saved = [part.result() for part in self.parts]
                info = zipfile.ZipInfo(PARTS_MEMBER, date_time=(1980, 1, 1, 0, 0, 0))
                self._archive.writestr(info, json.dumps({"ids": [i for i, _, _ in saved],
                                                         "sha256": [sha for _, sha, _ in saved]}))
            self._archive.close()
            blob = self._buffer.getvalue()
            self._result = blob, hashlib.sha256(blob).hexdigest()
        return self._result

    def close(self) -> None:
        """Stop the thread (parts not written yet are dropped); the result, if made, stays."""
        if self._result is not None:
            self._worker.shutdown(wait=False)
            return
        # Unfinished (the tick failed): the member being written ends, then the archive is dropped.
        self._worker.shutdown(wait=True, cancel_futures=True)
        self._archive.close()


def decode_state(blob: bytes, sha256: str) -> dict[str, np.ndarray]:
    """Unpack a blob from :func:`encode_state` (or of the earlier ``npz`` format) after checking it against
    its recorded hash.

    >>> old = io.BytesIO()
    >>> np.savez_compressed(old, counts=np.arange(3))
    >>> decode_state(old.getvalue(), hashlib.sha256(old.getvalue()).hexdigest())["counts"].tolist()
    [0, 1, 2]
    """
    actual = hashlib.sha256(blob).hexdigest()
    if actual != sha256:
        raise StateCorrupted(f"agent state blob does not match its recorded sha256 ({sha256[:12]}... recorded, "
                             f"{actual[:12]}... found): the row was altered or damaged; restore it from a backup")
    out = {}
    decompressor = zstandard.ZstdDecompressor()
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        for member in archive.namelist():
            if member == PARTS_MEMBER:
                continue  # the parts saved apart, which the store reads (state_part_references)
            data = archive.read(member)
            if member.endswith(_COMPRESSED):
                name, data = member[:-len(_COMPRESSED)], decompressor.decompress(data)
            elif member.endswith(".npy"):
                name = member[:-len(".npy")]
            else:
                raise StateCorrupted(f"agent state blob holds {member!r}, which is not an array of the state")
            out[name] = np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)
    return out
