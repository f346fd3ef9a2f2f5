"""Request dependencies: the application's context, who is asking, and whether their role suffices.

A request proves who it is with ``Authorization: Bearer <token>`` (scripts, curl) or with the web page's
session cookie. Requests that change something and rely on the cookie must carry the session's CSRF
secret in ``X-CSRF-Token``; a bearer token needs none, because a browser never adds it on its own.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Any

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from mlma.api import auth
from mlma.api.auth import Principal
from mlma.control import Operations
from mlma.store import Store

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_bearer = HTTPBearer(auto_error=False, description="An API token from `mlma token create NAME --role ROLE`.")


@dataclass
class AppContext:
    """What every request of one application shares."""

    store: Store
    operations: Operations
    secret: bytes
    group_by: str | None = "city"
    defaults: dict[str, Any] = field(default_factory=dict)
    public_metrics: bool = False
    secure_cookies: bool = False
    owns_store: bool = False
    #: The project's alert receivers' names: /metrics serves their delivery counters from 0.
    receivers: tuple[str, ...] = ()

    # Per server (its session key), not fixed: see mlma.api.auth.cookie_names.
    @property
    def session_cookie(self) -> str:
        return auth.cookie_names(self.secret)[0]

    @property
    def csrf_cookie(self) -> str:
        return auth.cookie_names(self.secret)[1]


def context(request: Request) -> AppContext:
    return request.app.state.mlma


def unauthorized(message: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, message, headers={"WWW-Authenticate": "Bearer"})


def identify(ctx: AppContext, request: Request) -> Principal:
    """Who sent ``request``, from its headers alone (the body is not read): the bearer token, or the session
    cookie with, for a request that changes something, its CSRF secret. 401 or 403 otherwise."""
    header = request.headers.get("authorization")
    if header:
        scheme, _, credentials = header.partition(" ")
        if scheme.lower() != "bearer" or not credentials.strip():
            raise unauthorized("the Authorization header must be 'Bearer <token>'")
        found = auth.authenticate(ctx.store, credentials.strip())
        if found is None:
            raise unauthorized("the bearer token is unknown or revoked")
        return found
    cookie = request.cookies.get(ctx.session_cookie)
    if cookie is None:
        raise unauthorized("log in: send 'Authorization: Bearer <token>' or log in on the web page")
    session = auth.read_session(ctx.secret, cookie)
    if session is None:
        raise unauthorized("the session is invalid or has expired; log in again")
    found = auth.session_principal(ctx.store, session)
    if found is None:
        raise unauthorized("the session has ended (logged out) or its token was revoked; log in again")
    expected = request.headers.get(auth.SESSION_HEADER)
    # The page names the session it was opened with: after a log-in in another tab of the browser (as someone
    # else, perhaps) the cookie names another session, and this tab's action would be audited under a name
    # it does not show. Refused before the CSRF check, so the answer says what happened.
    if expected is not None and not hmac.compare_digest(expected.encode("utf-8", "replace"),
                                                        auth.session_tag(session).encode("ascii")):
        raise HTTPException(status.HTTP_409_CONFLICT,
                            f"this page was opened for another session: the browser has logged in again since, "
                            f"as {found.actor} (in another tab or window); nothing was done: reload the page",
                            headers={auth.SESSION_CHANGED_HEADER: "1"})
    if request.method not in SAFE_METHODS:
        sent = request.headers.get(auth.CSRF_HEADER, "")
        if not sent or not hmac.compare_digest(sent.encode("utf-8", "replace"), session.csrf.encode("utf-8")):
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                f"missing or wrong {auth.CSRF_HEADER} header: a request that changes something "
                                f"with the session cookie must repeat the {ctx.csrf_cookie} cookie's value in it")
    request.state.session = session
    return found


def principal(request: Request, _credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
              ctx: AppContext = Depends(context)) -> Principal:
    """The token behind the request; 401 if there is none. A request with a body was identified already,
    before its body was read (:class:`mlma.api.guard.RequestGuard`)."""
    known = getattr(request.state, "principal", None)
    if known is not None:
        return known
    return identify(ctx, request)


def require(role: str):
    """A dependency that lets the request through only with ``role`` or a stronger one (else 403)."""
    auth.check_role(role)

    def check(who: Principal = Depends(principal)) -> Principal:
        if not who.may(role):
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                f"token {who.name!r} has role {who.role}; this needs {role} or higher")
        return who

    check.__name__ = f"require_{role}"
    return check


viewer = require("viewer")
operator = require("operator")
admin = require("admin")
