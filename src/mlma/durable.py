"""Making a written file survive a power cut: flush its bytes, and the folder entry of its rename, to disk.

A file written and renamed into place is on disk only once the kernel has flushed its bytes and the folder that
gained its name; until then a crash of the machine (not of the process) can leave an empty or missing file where
the program had reported success. The model artifacts (:mod:`mlma.registry`) and the store's backups
(:meth:`mlma.store.Store.backup`) use these before saying a file is written.

>>> import tempfile
>>> from pathlib import Path
>>> folder = Path(tempfile.mkdtemp())
>>> _ = (folder / "f").write_bytes(b"x")
>>> fsync_file(folder / "f"); fsync_dir(folder)
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

__all__ = ["fsync_dir", "fsync_file", "syncfs"]


def fsync_file(path: str | os.PathLike) -> None:
    """Flush the bytes of the file at ``path`` to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Make the renames into the folder ``path`` durable (POSIX); a no-op where folders cannot be opened or
    flushed (Windows, some network file systems)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def syncfs(path: str | os.PathLike) -> bool:
    """Flush the whole file system holding ``path`` to disk (Linux ``syncfs``): one call instead of an fsync
    per file for a large batch of new files. False where unavailable (then fsync each file)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        call = ctypes.CDLL(None, use_errno=True).syncfs
        fd = os.open(Path(path), os.O_RDONLY)
    except (OSError, AttributeError):
        return False
    try:
        if call(fd) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"syncfs of {path} failed: {os.strerror(errno)}")
        return True
    finally:
        os.close(fd)
