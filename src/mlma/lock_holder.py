"""Who holds the tick lock, and whether that process still runs: the standard library alone, so that ``mlma
status`` (which loads no pandas) can say a holder is gone, as the next tick on that host would find.

>>> holder = agent_identity()
>>> holder.startswith("mlma-agent@"), holder_is_dead(holder)  # this process: alive
(True, False)
"""

from __future__ import annotations

import os
import socket
from pathlib import Path


def agent_identity() -> str:
    """Who holds the lock: ``mlma-agent@host:pid``, and the process's PID namespace where it has one
    (``mlma-agent@host:pid/pidns:4026531836``): two containers on one host may share its name but not their
    process numbers, and a pid is looked up only in the namespace it belongs to (:func:`holder_is_dead`)."""
    namespace = _pid_namespace()
    return f"mlma-agent@{socket.gethostname()}:{os.getpid()}" + (f"/pidns:{namespace}" if namespace else "")


def _pid_namespace() -> int | None:
    """The inode of this process's PID namespace (Linux), or None where there is none to read."""
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None


def holder_is_dead(holder: str) -> bool:
    """True when the lock's holder is an mlma agent process on this host, in this process's PID namespace,
    that no longer runs. A holder in another namespace (a container on the same host), or one whose namespace
    cannot be told, is never taken for dead: its lease runs out instead."""
    prefix = f"mlma-agent@{socket.gethostname()}:"
    if not holder.startswith(prefix):
        return False
    pid_text, _, namespace = holder[len(prefix):].partition("/pidns:")
    ours = _pid_namespace()
    if (str(ours) if ours is not None else "") != namespace:
        return False
    try:
        pid = int(pid_text)
    except ValueError:
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except (OSError, IndexError):
        return False
