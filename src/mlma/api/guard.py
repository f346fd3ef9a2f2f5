"""Who is asking, and how much, before a request's body is read.

FastAPI reads and parses a request's body before it runs the endpoint's dependencies, the authentication
among them: an anonymous client could make the server read and parse any amount of JSON. This ASGI
middleware runs first. For every request that may carry a body (any method but GET, HEAD and OPTIONS):

1. it identifies the sender from the headers alone (bearer token, or session cookie and CSRF header) and
   answers 401 or 403 without reading a byte of the body; only the log-in (``POST /api/session``) is
   anonymous, and its body is limited to :data:`LOGIN_BODY_BYTES`;
2. it answers 413 when ``Content-Length`` is over the limit, and stops a body sent without a length
   (chunked) as soon as it grows over the limit, so that at most ``limit`` bytes are ever buffered.

The server then never holds more of an unauthenticated body than the web server's own read buffer.
"""

from __future__ import annotations

import json

from fastapi import HTTPException
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlma.api.deps import SAFE_METHODS, AppContext, identify

#: The default limit of a request body (``mlma serve --max-body-mb``): room for an action on 100,000
#: streams named one by one.
MAX_BODY_BYTES = 8 * 1024 * 1024
#: The log-in body holds one token.
LOGIN_BODY_BYTES = 4096
#: Requests that may be made without a token (method, path).
ANONYMOUS = frozenset({("POST", "/api/session")})


def too_large(limit: int) -> HTTPException:
    return HTTPException(413, f"the request body is larger than this server accepts ({limit:,} bytes; "
                              f"the limit is set with mlma serve --max-body-mb)")


class RequestGuard:
    """ASGI middleware: authentication before the body, and a size limit on it (see the module docstring)."""

    def __init__(self, app: ASGIApp, ctx: AppContext, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        if isinstance(max_body_bytes, bool) or not isinstance(max_body_bytes, int) or max_body_bytes < 1024:
            raise ValueError(f"max_body_bytes must be a whole number >= 1024, got {max_body_bytes!r}")
        self.app = app
        self.ctx = ctx
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] in SAFE_METHODS:
            await self.app(scope, receive, send)
            return
        anonymous = (scope["method"], scope["path"]) in ANONYMOUS
        limit = LOGIN_BODY_BYTES if anonymous else self.max_body_bytes
        request = Request(scope)
        if not anonymous:
            try:
                who = await run_in_threadpool(identify, self.ctx, request)
            except HTTPException as exc:
                await _answer(send, exc)
                return
            request.state.principal = who
        length = request.headers.get("content-length")
        if length is not None:
            if not length.isdigit():
                await _answer(send, HTTPException(400, f"Content-Length must be a number of bytes, got {length!r}"))
                return
            if int(length) > limit:
                await _answer(send, too_large(limit))
                return
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    # FastAPI passes an HTTPException raised while it reads the body on to the app's handlers.
                    raise too_large(limit)
            return message

        await self.app(scope, counted, send)


async def _answer(send: Send, exc: HTTPException) -> None:
    body = json.dumps({"detail": exc.detail}).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode("ascii")),
               (b"connection", b"close")]
    for name, value in (exc.headers or {}).items():
        headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})
