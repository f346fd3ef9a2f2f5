"""Who may do what: API tokens with roles, and the signed session cookie of the web page.

A token is a random secret shown once, when it is created; the store keeps only its sha256 (table
``api_tokens``), so a copy of the database does not let anyone in. Each token has a name (the person or
system it belongs to: actions taken with it are audited as ``user:<name>``) and a role:

==========  ==================================================================================
viewer      reads everything: fleet, streams, the queue, actions, the audit log, metrics
operator    and acts: re-train, pin, roll back, mark abnormal, silence, approve, ...
admin       and manages tokens
==========  ==================================================================================

The web page exchanges a token for a session cookie (``mlma_session_<tag>``): an HMAC-signed payload naming
a session kept in the store (:mod:`mlma.store.sessions`), an expiry and a CSRF secret; HttpOnly and
SameSite=Lax. Logging out ends the session in the store, so the cookie is worthless afterwards on every
server process, also if someone kept a copy. A state-changing request that relies on
the cookie must repeat the CSRF secret in the ``X-CSRF-Token`` header (the page reads it from the
``mlma_csrf_<tag>`` cookie, which a page on another site cannot read). The session and its token are checked in
the store on every request, so revoking a token ends its sessions too.

Cookies ignore the port: two dashboards on one host (two projects on two ports) would overwrite each other's
cookies and log each other out. The ``<tag>`` in the names is derived from the session key
(:func:`cookie_names`), which differs per project and is shared by the server processes of one project. The page
learns the CSRF cookie's name from the server (``GET /api/me``, the log-in's answer) and the session's public
tag (:func:`session_tag`), which it sends back in ``X-MLMA-Session``: a tab opened for one session is refused
(409) once the browser has logged in again, as someone else perhaps, in another tab.

Examples
--------
>>> from mlma.store import Store
>>> store = Store.create("sqlite://")
>>> info, plain = create_token(store, "ana", "operator", by="user:root")
>>> plain.startswith("mlma_"), info.role
(True, 'operator')
>>> authenticate(store, plain).actor
'user:ana'
>>> authenticate(store, "mlma_wrong") is None
True
>>> revoke_token(store, "ana", by="user:root")
True
>>> authenticate(store, plain) is None
True
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from mlma.store import Store, sessions, tokens
from mlma.store.records import check_actor
from mlma.store.schema import ROLES  # weakest first: a role may do everything the roles before it may
from mlma.store.tokens import TokenInfo  # noqa: F401 - what list_tokens returns, named here for the API

TOKEN_PREFIX = "mlma_"
#: The start of the session and CSRF cookies' names; each server adds its tag (:func:`cookie_names`).
SESSION_COOKIE = "mlma_session"
CSRF_COOKIE = "mlma_csrf"
CSRF_HEADER = "X-CSRF-Token"
#: The page sends the tag of the session it was opened with (:func:`session_tag`); optional for other clients.
SESSION_HEADER = "X-MLMA-Session"
#: Set on the 409 that answers a page opened for another session, so the page can tell it from other 409s.
SESSION_CHANGED_HEADER = "X-MLMA-Session-Changed"
#: How long a web session lasts before the token has to be given again.
SESSION_SECONDS = 12 * 3600
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
# last_used_at is written at most this often per token: a write per request would queue every read
# behind the agent's tick transaction on SQLite.
_TOUCH_EVERY_SECONDS = 60.0


@dataclass(frozen=True)
class Principal:
    """The token a request was made with: its id, name and role."""

    token_id: int
    name: str
    role: str

    @property
    def actor(self) -> str:
        """How the audit log names this principal's actions."""
        return f"user:{self.name}"

    def may(self, role: str) -> bool:
        """Whether this principal has at least ``role``.

        >>> Principal(1, "ana", "operator").may("viewer"), Principal(1, "ana", "operator").may("admin")
        (True, False)
        """
        return ROLES.index(self.role) >= ROLES.index(role)


def hash_token(plain: str) -> str:
    """The sha256 the store keeps of a token.

    >>> hash_token("mlma_x")[:12]
    '3667dfaef7d5'
    """
    return hashlib.sha256(plain.encode("utf-8")).hexdigest()


def check_role(role: str) -> str:
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
    return role


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"a token name is 1-64 letters, digits or . _ @ - (starting with a letter or digit), "
                         f"e.g. 'ana' or 'grafana'; got {name!r}")
    return name


def create_token(store: Store, name: str, role: str, *, by: str) -> tuple[TokenInfo, str]:
    """Create a token; returns its record and the plain token, which is not stored and cannot be shown again.

    Raises ``ValueError`` for a bad name or role, or when an active token has that name already.
    """
    check_name(name)
    check_role(role)
    check_actor(by)
    plain = TOKEN_PREFIX + secrets.token_urlsafe(30)
    with store.transaction() as tx:
        info = tx.add_token(name, role, hash_token(plain), by=by)
        tx.audit(by, "token-create", f"token:{name}", {"role": role, "token_id": info.id})
    return info, plain


def list_tokens(store: Store, *, include_revoked: bool = False) -> list[TokenInfo]:
    """Tokens, oldest first (active ones only unless ``include_revoked``)."""
    return tokens.list_tokens(store, include_revoked=include_revoked)


def revoke_token(store: Store, name: str, *, by: str, reason: str | None = None, last_admin: bool = False) -> bool:
    """Revoke the active token called ``name`` (its sessions end too); False if there is none.

    The revoked row stays (renamed ``<name>#<id>``) so that its name can be given to a new token. The last
    active admin token is kept (:class:`~mlma.store.tokens.LastAdminError`, a ValueError) unless ``last_admin``:
    the shell, which can create tokens, may revoke it; the API, for which it is the only way in, may not.
    """
    check_actor(by)
    with store.transaction() as tx:
        token_id = tx.revoke_token(name, last_admin=last_admin)
        if token_id is None:
            return False
        tx.audit(by, "token-revoke", f"token:{name}", {"token_id": token_id}, reason)
    return True


class _Toucher:
    """Records when tokens were last used, at most once a minute per token; a touch that could not be made at
    once (another writer held the lock) is tried again by the token's next request."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, int], float] = {}
        self._lock = threading.Lock()

    def __call__(self, store: Store, token_id: int) -> None:
        now = time.monotonic()
        key = (store.url, token_id)
        with self._lock:
            if now - self._seen.get(key, -1e18) < _TOUCH_EVERY_SECONDS:
                return
            self._seen[key] = now
        if not tokens.touch(store, token_id):
            with self._lock:
                if self._seen.get(key) == now:
                    del self._seen[key]


_touch = _Toucher()


def authenticate(store: Store, plain: str | None, *, touch: bool = True) -> Principal | None:
    """The principal of an active token, or None for a missing, unknown or revoked one."""
    if not plain or not isinstance(plain, str) or len(plain) > 256:
        return None
    found = tokens.active_token(store, hash_token(plain))
    if found is None:
        return None
    if touch:
        _touch(store, found[0])
    return Principal(*found)


# -- sessions ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Session:
    """What a session cookie carries: the store's session id, its expiry and the CSRF secret."""

    session_id: str
    expires: int
    csrf: str


def cookie_names(secret: bytes) -> tuple[str, str]:
    """The names of the session and CSRF cookies of the servers whose session key is ``secret``.

    Derived from the key (a one-way hash, so the names say nothing about it): the server processes of one project
    share them, two projects on one host (cookies ignore the port) do not.

    >>> cookie_names(b"k" * 32) == cookie_names(b"k" * 32), cookie_names(b"k" * 32) != cookie_names(b"x" * 32)
    (True, True)
    >>> cookie_names(b"k" * 32)[0].startswith("mlma_session_")
    True
    """
    tag = hmac.new(secret, b"mlma cookie names", hashlib.sha256).hexdigest()[:12]
    return f"{SESSION_COOKIE}_{tag}", f"{CSRF_COOKIE}_{tag}"


def session_tag(session: Session) -> str:
    """A public name of a session, which the page sends back (``X-MLMA-Session``) to say which session it was
    opened with. A hash of the session's id: it neither is nor reveals a credential (the cookie stays HttpOnly)."""
    return hashlib.sha256(f"mlma session tag:{session.session_id}".encode("utf-8")).hexdigest()[:24]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_session(secret: bytes, session_id: str, *, seconds: int = SESSION_SECONDS) -> tuple[str, Session]:
    """A session cookie value for the store's ``session_id`` and the session it carries.

    >>> value, session = sign_session(b"k" * 32, "abc")
    >>> read_session(b"k" * 32, value) == session
    True
    >>> read_session(b"x" * 32, value) is None
    True
    """
    session = Session(str(session_id), int(time.time()) + int(seconds), secrets.token_urlsafe(24))
    payload = _b64(json.dumps({"s": session.session_id, "e": session.expires, "c": session.csrf},
                              separators=(",", ":")).encode())
    mac = _b64(hmac.new(secret, payload.encode("ascii"), hashlib.sha256).digest())
    return f"{payload}.{mac}", session


def read_session(secret: bytes, value: str | None) -> Session | None:
    """The session in a cookie value, or None if it is malformed, forged or expired (whether it was ended
    by a log-out is the store's to say: :func:`session_principal`)."""
    # A cookie is Latin-1 text to the server; anything not ASCII cannot be one of ours (and compare_digest
    # refuses non-ASCII text with a TypeError).
    if not value or len(value) > 1024 or value.count(".") != 1 or not value.isascii():
        return None
    payload, mac = value.split(".")
    expected = _b64(hmac.new(secret, payload.encode("ascii"), hashlib.sha256).digest())
    if not hmac.compare_digest(mac, expected):
        return None
    try:
        data = json.loads(_unb64(payload))
        session = Session(str(data["s"]), int(data["e"]), str(data["c"]))
    except (ValueError, KeyError, TypeError):
        return None
    if session.expires < time.time():
        return None
    return session


def start_session(store: Store, token_id: int, secret: bytes, *,
                  seconds: int = SESSION_SECONDS) -> tuple[str, Session]:
    """Log a token in: a session recorded in the store, and the signed cookie value that names it."""
    return sign_session(secret, sessions.start_session(store, token_id, seconds=seconds), seconds=seconds)


def session_principal(store: Store, session: Session) -> Principal | None:
    """The principal of a session that has not ended (log-out) and whose token is not revoked."""
    found = sessions.session_token(store, session.session_id)
    return None if found is None else Principal(*found)


def end_session(store: Store, session: Session) -> bool:
    """Log out: the session ends in the store, for every server process."""
    return sessions.end_session(store, session.session_id)


def load_or_create_secret(path: str | os.PathLike) -> bytes:
    """The key that signs session cookies, kept in a file readable by its owner only; made on first use.

    Several server processes may start at once on one project folder (docs/api.md): the key is written whole
    under a temporary name and then linked into place, so a process never reads a file being written (it read
    an empty one and signed with an empty key), and the first link wins. A file that does not hold a 32-byte key
    is refused, naming it.
    """
    import tempfile

    path = Path(path)
    try:
        return _read_secret(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    fd, written = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # readable by its owner only
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(key.hex() + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(written, path)
        except FileExistsError:  # another server process made it first: use theirs
            return _read_secret(path)
        except OSError:  # a file system without hard links (some network or FUSE mounts): create it in place
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                return _read_secret(path)
            with os.fdopen(fd, "w") as handle:
                handle.write(key.hex() + "\n")
    finally:
        os.unlink(written)
    return key


def _read_secret(path: Path) -> bytes:
    text = path.read_text().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != 32:
        raise ValueError(f"{path} does not hold a session key (64 hexadecimal digits, {len(text)} characters "
                         "found): delete it and start the server processes again (web sessions then end; API "
                         "tokens are not affected)")
    return key
