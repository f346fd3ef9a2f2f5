"""API tokens in the store (``api_tokens``): only each token's sha256 is kept, never the token.

:mod:`mlma.api.auth` makes the secrets, checks names and roles and decides who may do what; this module is
the table. Creating and revoking a token are audited in the same transaction, so they are
:class:`~mlma.store.transaction.Transaction` methods (:meth:`~mlma.store.transaction.Transaction.add_token`,
:meth:`~mlma.store.transaction.Transaction.revoke_token`) built on :func:`insert` and :func:`revoke`.

Examples
--------
>>> from mlma.store import Store
>>> store = Store.create("sqlite://")
>>> with store.transaction() as tx:
...     info = tx.add_token("ana", "viewer", "ab" * 32, by="user:root")
>>> [t.name for t in list_tokens(store)], active_token(store, "ab" * 32)
(['ana'], (1, 'ana', 'viewer'))
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from mlma.store import schema as S
from mlma.store.lock import one_writer_at_a_time


@dataclass(frozen=True)
class TokenInfo:
    """A token as listed: never its secret."""

    id: int
    name: str
    role: str
    created_at: dt.datetime
    created_by: str
    last_used_at: dt.datetime | None
    revoked_at: dt.datetime | None

    def as_dict(self) -> dict:
        return {"id": self.id, "name": self.name, "role": self.role, "created_at": _iso(self.created_at),
                "created_by": self.created_by, "last_used_at": _iso(self.last_used_at),
                "revoked_at": _iso(self.revoked_at), "active": self.revoked_at is None}


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat()


class LastAdminError(ValueError):
    """Revoking this token would leave no active admin token: nobody could manage tokens over the API."""


def insert(conn: sa.Connection, now: dt.datetime, name: str, role: str, token_sha256: str, by: str) -> TokenInfo:
    """Record a new token; ``ValueError`` if a token has that name, in any case (``op`` and ``OP`` would read as
    one person in the audit log, ``user:op`` and ``user:OP``)."""
    t = S.api_tokens
    # The unique index is of the name as written: "op" and "OP" created at once would both pass the look-up.
    one_writer_at_a_time(conn, "api_tokens")
    taken = conn.execute(sa.select(t.c.name).where(sa.func.lower(t.c.name) == name.lower())).scalars().first()
    if taken is not None:
        same = "" if taken == name else f" ({taken!r}: names differ in more than case)"
        raise ValueError(f"a token named {name!r} exists{same}; revoke it first (mlma token revoke {taken}) or "
                         f"choose another name")
    try:
        token_id = conn.execute(sa.insert(t).values(name=name, role=role, token_sha256=token_sha256, created_at=now,
                                                    created_by=by).returning(t.c.id)).scalar_one()
    except sa.exc.IntegrityError as exc:
        # Two requests for one new name at once: both found it free, the unique name refuses the second (the
        # caller's transaction is rolled back with this error).
        if not any(mark in str(exc.orig) for mark in ("api_tokens.name", "uq_api_tokens_name")):  # SQLite, PG
            raise
        raise ValueError(f"a token named {name!r} exists; revoke it first (mlma token revoke {name}) or choose "
                         f"another name") from None
    return TokenInfo(int(token_id), name, role, now, by, None, None)


def revoke(conn: sa.Connection, now: dt.datetime, name: str, *, last_admin: bool = False) -> int | None:
    """Revoke the active token called ``name``, renaming it ``<name>#<id>`` so that the name can be given
    again; returns its id, or None if there is no such token. :class:`LastAdminError` for the last active admin
    token, unless ``last_admin``."""
    t = S.api_tokens
    row = conn.execute(sa.select(t.c.id, t.c.role).where(t.c.name == name, t.c.revoked_at.is_(None))).first()
    if row is None:
        return None
    if row.role == "admin" and not last_admin:
        # Locked: two admins revoking each other at once on PostgreSQL must not both find the other still there.
        admins = conn.execute(sa.select(t.c.id).where(t.c.role == "admin", t.c.revoked_at.is_(None))
                              .with_for_update()).scalars().all()
        if list(admins) == [row.id]:
            raise LastAdminError(
                f"token {name!r} is the last active admin token: without it nobody can manage tokens over the API "
                "or the web page; create another admin token first (mlma token create NAME --role admin), or revoke "
                "it from the shell with mlma token revoke --last-admin")
    # Only if still active: of two revocations at once, the second finds the row revoked by the first.
    done = conn.execute(sa.update(t).where(t.c.id == row.id, t.c.revoked_at.is_(None))
                        .values(revoked_at=now, name=f"{name}#{row.id}"))
    return int(row.id) if done.rowcount == 1 else None


def list_tokens(store, *, include_revoked: bool = False) -> list[TokenInfo]:
    """Tokens, oldest first (active ones only unless ``include_revoked``)."""
    t = S.api_tokens
    query = sa.select(t).order_by(t.c.id)
    if not include_revoked:
        query = query.where(t.c.revoked_at.is_(None))
    with store._read() as conn:
        rows = conn.execute(query).all()
    return [TokenInfo(int(r.id), r.name, r.role, r.created_at, r.created_by, r.last_used_at, r.revoked_at)
            for r in rows]


def active_token(store, token_sha256: str) -> tuple[int, str, str] | None:
    """``(id, name, role)`` of the active token with that sha256, or None."""
    t = S.api_tokens
    with store._read() as conn:
        row = conn.execute(sa.select(t.c.id, t.c.name, t.c.role).where(
            t.c.token_sha256 == token_sha256, t.c.revoked_at.is_(None))).first()
    return None if row is None else (int(row.id), row.name, row.role)


def touch(store, token_id: int) -> bool:
    """Record that the token was used now, if that can be done at once: False (nothing written) on a
    read-only store, one the database refuses the write to, or while another writer holds the lock (a tick's
    commit), so that a read never waits for, or fails on, this bookkeeping."""
    if store.read_only:
        return False
    try:
        with store._write_at_once() as conn:
            conn.execute(sa.update(S.api_tokens).where(S.api_tokens.c.id == int(token_id))
                         .values(last_used_at=store._now(conn)))
    except sa.exc.DBAPIError:  # SQLite's "database is locked"; PostgreSQL's lock_timeout, a read-only transaction
        return False           # (default_transaction_read_only, a standby) or a role that may not write
    return True
