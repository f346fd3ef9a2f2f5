"""How a SQLite store's file is opened: normally, or read-only where mlma cannot write it.

Standard library only, so that both the store's engine (:mod:`mlma.store.engine`) and the quick read path
of ``mlma status`` (:mod:`mlma.store.glance`) open a file the same way.
"""

from __future__ import annotations

import os
from pathlib import Path


def _read_only_file_system(folder: Path) -> bool:
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (OSError, AttributeError):  # no statvfs (Windows): not known to be read-only
        return False


def sqlite_open_mode(path: Path) -> str | None:
    """None to open the file normally, else the URI parameter of a read-only open."""
    if not path.is_file():
        return None  # a new store: created, or the error says why not
    folder = path.parent
    if os.access(path, os.W_OK) and os.access(folder, os.W_OK):
        return None
    wal = Path(f"{path}-wal")
    shm = Path(f"{path}-shm")
    if os.access(folder, os.W_OK) or (shm.exists() and wal.exists()):
        return "mode=ro"
    if wal.exists() and wal.stat().st_size > 0:
        # Committed changes wait in the log, which SQLite cannot read without its shared-memory file.
        return "mode=ro"
    if not _read_only_file_system(folder):
        return "mode=ro"  # another user's store: its owner may write it while we read, so never immutable
    return "immutable=1"  # nothing can change the file while it is on a read-only medium
