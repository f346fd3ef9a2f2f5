"""Errors the store raises, each with a message that says what to do."""

from __future__ import annotations

import datetime as dt


class StoreError(RuntimeError):
    """Base class of the store's errors."""


class SchemaError(StoreError):
    """The database's schema is missing, older or newer than this version of mlma expects.

    Attributes
    ----------
    url
        The database (password hidden).
    current
        The revision the database is at (None: no mlma schema).
    expected
        The revision this version of mlma needs.
    """

    def __init__(self, message: str, *, url: str, current: str | None, expected: str) -> None:
        super().__init__(message)
        self.url = url
        self.current = current
        self.expected = expected


class LockHeld(StoreError):
    """Another holder has a live lease on the lock.

    Attributes
    ----------
    name, holder, acquired_at, heartbeat_at, expires_at
        The lock and the lease that is in the way.
    """

    def __init__(self, name: str, holder: str, acquired_at: dt.datetime, heartbeat_at: dt.datetime,
                 expires_at: dt.datetime) -> None:
        self.name = name
        self.holder = holder
        self.acquired_at = acquired_at
        self.heartbeat_at = heartbeat_at
        self.expires_at = expires_at
        super().__init__(
            f"lock {name!r} is held by {holder!r} (acquired {_fmt(acquired_at)}, last heartbeat "
            f"{_fmt(heartbeat_at)}, expires {_fmt(expires_at)}): another agent is working on this store. "
            f"If that agent crashed, the lock can be taken once it expires, or a person can break it with "
            f"`mlma unlock --reason ...` (Store.break_lock({name!r}, by='user:NAME', reason=...)).")


class LockLost(StoreError):
    """The lease was taken over (it expired) or broken: whatever was done under it must not be committed."""


class TickAlreadyDone(StoreError):
    """The tick was already committed; it is never written twice."""


class StateCorrupted(StoreError):
    """A saved agent state's bytes do not match the hash recorded with them."""


class ChampionMoved(ValueError):
    """A conditional champion move (:attr:`~mlma.store.ChampionMove.if_serving`) found another version serving
    than the mover saw: someone else moved the stream first. Nothing of its batch was moved."""


def _fmt(when: dt.datetime | None) -> str:
    if when is None:
        return "?"
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
