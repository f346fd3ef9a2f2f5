"""The agent's per-stream arrays as one ``.npz`` blob, hashed so that a damaged blob is never loaded."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping

import numpy as np

from mlma.store.errors import StateCorrupted

FORMAT = "npz"


def encode_state(arrays: Mapping[str, np.ndarray]) -> tuple[bytes, str]:
    """Pack named arrays into a compressed ``.npz`` blob; returns the blob and its sha256.

    Object arrays are refused: loading them would need pickle, and a state read back from a shared
    database must not be able to run code.

    >>> blob, sha = encode_state({"agent.champion": np.array([3, -1])})
    >>> decode_state(blob, sha)["agent.champion"].tolist()
    [3, -1]
    """
    if not isinstance(arrays, Mapping) or not arrays:
        raise ValueError("state must be a non-empty mapping of names to numpy arrays")
    clean = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"state array names must be non-empty strings, got {name!r}")
        value = np.asarray(value)
        if value.dtype.hasobject:
            raise ValueError(f"state array {name!r} has dtype object; store numbers, booleans or fixed-width "
                             "strings (e.g. np.array(list_of_str, dtype=str)), or a padded 2-d array for "
                             "ragged lists")
        clean[name] = value
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **clean)
    blob = buffer.getvalue()
    return blob, hashlib.sha256(blob).hexdigest()


def decode_state(blob: bytes, sha256: str) -> dict[str, np.ndarray]:
    """Unpack a blob from :func:`encode_state` after checking it against its recorded hash."""
    actual = hashlib.sha256(blob).hexdigest()
    if actual != sha256:
        raise StateCorrupted(f"agent state blob does not match its recorded sha256 ({sha256[:12]}... recorded, "
                             f"{actual[:12]}... found): the row was altered or damaged; restore it from a backup")
    with np.load(io.BytesIO(blob), allow_pickle=False) as data:
        return {name: data[name] for name in data.files}
