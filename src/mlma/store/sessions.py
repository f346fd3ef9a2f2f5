"""Web sessions in the store: started at log-in, ended at log-out, looked up on every request.

The cookie carries a random session id; the store keeps only its sha256 (like API tokens), so a copy of
the database does not let anyone in. Because the check reads the store, a log-out (or a revoked token)
ends the session for every server process at once, and a restart changes nothing.

Examples
--------
>>> from mlma.store import Store
>>> from mlma.api.auth import create_token
>>> store = Store.create("sqlite://")
>>> info, _ = create_token(store, "ana", "viewer", by="user:root")
>>> sid = start_session(store, info.id, seconds=3600)
>>> session_token(store, sid)
(1, 'ana', 'viewer')
>>> end_session(store, sid), session_token(store, sid)
(True, None)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets

import sqlalchemy as sa

from mlma.store import schema as S

#: Ended or expired sessions are deleted this long after their expiry (when a new session starts).
KEEP_ENDED = dt.timedelta(days=1)


def _hash(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("ascii")).hexdigest()


def start_session(store, token_id: int, *, seconds: int) -> str:
    """A new session for ``token_id`` lasting ``seconds``; returns its id (for the cookie only)."""
    session_id = secrets.token_urlsafe(32)
    w = S.web_sessions
    with store._write() as conn:
        now = store._now(conn)
        conn.execute(sa.delete(w).where(w.c.expires_at < now - KEEP_ENDED))
        conn.execute(sa.insert(w).values(id_sha256=_hash(session_id), token_id=int(token_id), created_at=now,
                                         expires_at=now + dt.timedelta(seconds=int(seconds))))
    return session_id


def session_token(store, session_id: str) -> tuple[int, str, str] | None:
    """``(token id, name, role)`` of a live session (not ended, not expired, its token not revoked), else None."""
    if not isinstance(session_id, str) or not session_id.isascii() or len(session_id) > 128:
        return None
    w, t = S.web_sessions, S.api_tokens
    with store._read() as conn:
        now = store._now(conn)
        row = conn.execute(sa.select(t.c.id, t.c.name, t.c.role).join(w, w.c.token_id == t.c.id).where(
            w.c.id_sha256 == _hash(session_id), w.c.ended_at.is_(None), w.c.expires_at > now,
            t.c.revoked_at.is_(None))).first()
    return None if row is None else (int(row.id), row.name, row.role)


def end_session(store, session_id: str) -> bool:
    """End a session (log-out); False if it had ended already or never existed."""
    if not isinstance(session_id, str) or not session_id.isascii():
        return False
    w = S.web_sessions
    with store._write() as conn:
        changed = conn.execute(sa.update(w).where(w.c.id_sha256 == _hash(session_id), w.c.ended_at.is_(None))
                               .values(ended_at=store._now(conn))).rowcount
    return bool(changed)
