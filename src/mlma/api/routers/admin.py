"""Logging in and out of the web page, and token management (admins)."""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request, Response
from pydantic import Field

from mlma.api import auth
from mlma.api.auth import Principal
from mlma.api.deps import AppContext, admin, context, principal, unauthorized
from mlma.api.inputs import Body, check_known_query, check_request_text
from mlma.api.schemas import CreatedToken, LoggedOut, Problem, Revoked, Session, Token
from mlma.store.queries import QueryError
from mlma.store.tokens import LastAdminError

router = APIRouter(prefix="/api", tags=["access"],
                   dependencies=[Depends(check_request_text), Depends(check_known_query)])
#: The error answers of the token endpoints: no valid token (401), not an admin's (403).
ADMIN_ONLY = {401: {"model": Problem}, 403: {"model": Problem}}


class Login(Body):
    token: str = Field(..., min_length=1, max_length=256, description="an API token")


class NewToken(Body):
    name: str = Field(..., min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$",
                      description="whose token: actions are audited as user:<name>")
    role: Literal["viewer", "operator", "admin"] = "viewer"


def _set_session_cookies(response: Response, ctx: AppContext, token_id: int) -> auth.Session:
    value, session = auth.start_session(ctx.store, token_id, ctx.secret)
    # Named per server (mlma.api.auth.cookie_names): another project's dashboard on this host keeps its own.
    response.set_cookie(ctx.session_cookie, value, max_age=auth.SESSION_SECONDS, httponly=True, samesite="lax",
                        secure=ctx.secure_cookies, path="/")
    # Readable by the page's script (not HttpOnly), which sends it back in the X-CSRF-Token header.
    response.set_cookie(ctx.csrf_cookie, session.csrf, max_age=auth.SESSION_SECONDS, httponly=False,
                        samesite="lax", secure=ctx.secure_cookies, path="/")
    return session


@router.post("/session", response_model=Session, responses={401: {"model": Problem}},
             summary="Log the web page in: exchange a token for a session cookie")
def login(body: Login, response: Response, ctx: AppContext = Depends(context)) -> dict:
    found = auth.authenticate(ctx.store, body.token)
    if found is None:
        raise unauthorized("unknown or revoked token")
    session = _set_session_cookies(response, ctx, found.token_id)
    return {"name": found.name, "role": found.role, "actor": found.actor, "csrf": session.csrf,
            "csrf_cookie": ctx.csrf_cookie, "session": auth.session_tag(session)}


@router.delete("/session", response_model=LoggedOut, responses={401: {"model": Problem}, 403: {"model": Problem}},
               summary="Log the web page out: the session ends on the server too")
def logout(request: Request, response: Response, _: Principal = Depends(principal),
           ctx: AppContext = Depends(context)) -> dict:
    session = getattr(request.state, "session", None)
    if session is not None:  # a bearer request has no session to end: it said logged out, and nothing ended
        auth.end_session(ctx.store, session)
    response.delete_cookie(ctx.session_cookie, path="/")
    response.delete_cookie(ctx.csrf_cookie, path="/")
    return {"logged_out": session is not None}


@router.get("/tokens", response_model=list[Token], responses=ADMIN_ONLY, summary="API tokens (never their secrets)")
def tokens(include_revoked: bool = False, _: Principal = Depends(admin), ctx: AppContext = Depends(context)) -> list:
    return [t.as_dict() for t in auth.list_tokens(ctx.store, include_revoked=include_revoked)]


@router.post("/tokens", status_code=201, response_model=CreatedToken,
             responses={**ADMIN_ONLY, 409: {"model": Problem, "description": "A token of that name exists."}},
             summary="Create a token; its secret is in this answer only")
def create(body: NewToken, who: Principal = Depends(admin), ctx: AppContext = Depends(context)) -> dict:
    try:
        info, plain = auth.create_token(ctx.store, body.name, body.role, by=who.actor)
    except ValueError as exc:
        raise HTTPException(409, str(exc)) from None
    return {**info.as_dict(), "token": plain}


@router.delete("/tokens/{name}", response_model=Revoked,
               responses={**ADMIN_ONLY, 404: {"model": Problem, "description": "No active token has that name."},
                          409: {"model": Problem, "description": "The last active admin token (revoke it from the "
                                                                 "shell: mlma token revoke --last-admin)."}},
               summary="Revoke a token (its web sessions end too)")
def revoke(name: str, reason: Annotated[str | None, Query(description="Why (kept in the audit log), as "
                                                                        "every action's reason")] = None,
           who: Principal = Depends(admin), ctx: AppContext = Depends(context)) -> dict:
    try:
        revoked = auth.revoke_token(ctx.store, name, by=who.actor, reason=reason)
    except LastAdminError as exc:
        raise HTTPException(409, str(exc)) from None
    except ValueError as exc:  # a reason the audit log cannot keep (too long, control characters)
        raise QueryError("reason", str(exc)) from None
    if not revoked:
        raise HTTPException(404, f"no active token named {name!r}")
    return {"revoked": name}
