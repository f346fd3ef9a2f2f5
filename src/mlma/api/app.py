"""The FastAPI application: JSON under ``/api``, the dashboard at ``/``, ``/metrics``, ``/openapi.json``.

No page or script is fetched from another site: the dashboard is a static HTML page with its own script
and style sheet, and FastAPI's interactive ``/docs`` (which loads Swagger UI from a CDN) is switched off;
the OpenAPI schema is at ``/openapi.json``.

Examples
--------
>>> from fastapi.testclient import TestClient
>>> from mlma.store import Store
>>> from mlma.api.auth import create_token
>>> store = Store.create("sqlite://")
>>> _, token = create_token(store, "ana", "viewer", by="user:root")
>>> client = TestClient(create_app(store))
>>> client.get("/api/fleet").status_code
401
>>> client.get("/api/fleet", headers={"Authorization": f"Bearer {token}"}).json()["n_streams"]
0
"""

from __future__ import annotations

import json
import logging
import math
import secrets
from contextlib import asynccontextmanager
from pathlib import Path
from types import EllipsisType
from typing import Any

from fastapi import Depends, FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.routing import Match

from mlma.api import auth
from mlma.api.deps import AppContext, viewer
from mlma.api.guard import MAX_BODY_BYTES, RequestGuard
from mlma.api.schemas import Health
from mlma.store.queries import QueryError
from mlma.api.routers import actions, admin, read
from mlma.control import Operations
from mlma.store import Store
from mlma.store.engine import StoreOperationalError, store_trouble, unreachable_reason

log = logging.getLogger("mlma.api")
STATIC = Path(__file__).parent / "static"
#: Where a project keeps the key that signs session cookies (relative to the project folder).
SECRET_FILE = Path(".mlma") / "session-key"
_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def create_app(source: Any, *, artifacts: str | Path | None = None, secret: bytes | None = None,
               group_by: str | None | EllipsisType = ..., public_metrics: bool = False, secure_cookies: bool = False,
               max_body_bytes: int = MAX_BODY_BYTES) -> FastAPI:
    """Build the API and dashboard for a project or a store.

    Parameters
    ----------
    source
        A :class:`~mlma.project.ProjectConfig`, a project folder, a store URL, or an open
        :class:`~mlma.store.Store` (which the caller keeps and closes).
    artifacts
        The model artifact folder (roll-backs and promotions need the registry). Default: the project's,
        or ``artifacts/`` beside a SQLite file.
    secret
        The key that signs session cookies. Default: the project's ``.mlma/session-key`` (made on first
        use); for a bare store, a random key, so sessions end when the server stops.
    group_by
        The stream attribute that groups escalations in the queue (e.g. ``city``); None: no grouping by
        attribute. Default: the project's ``[queue] group_by`` (``city`` for a bare store, as in a new project).
    public_metrics
        Serve ``/metrics`` without a token (for a Prometheus that cannot send one).
    secure_cookies
        Mark cookies ``Secure`` (serve over HTTPS, e.g. behind a reverse proxy).
    max_body_bytes
        The largest request body accepted (413 beyond). Every body but the log-in's is read only after the
        sender was authenticated (:mod:`mlma.api.guard`).
    """
    from mlma.project import MonitorSection, ProjectConfig, QueueSection, load_config

    if secret is not None and (not isinstance(secret, bytes) or len(secret) < 16):
        raise ValueError("secret must be at least 16 random bytes")
    config = None
    owns = False
    if isinstance(source, Store):
        store = source
    elif isinstance(source, ProjectConfig):
        config = source
    elif isinstance(source, (str, Path)) and Path(source).is_dir():
        config = load_config(Path(source))
    elif isinstance(source, str):
        store, owns = Store.open(source), True
    else:
        raise TypeError(f"source must be a ProjectConfig, a project folder, a store URL or a Store, got {source!r}")
    # A bare store has no mlma.toml: the monitoring and queue defaults are those of a new project.
    monitor, queue = MonitorSection(), QueueSection()
    if config is not None:
        monitor, queue = config.monitor, config.queue
        store, owns = Store.open(config.store_url), True
        artifacts = artifacts or config.artifacts_dir
        if secret is None:
            secret = auth.load_or_create_secret(config.root / SECRET_FILE)
    if group_by is ...:
        group_by = queue.grouping()
    defaults = {"alpha": monitor.alpha, "delta": monitor.delta, "cooldown_ticks": monitor.cooldown_ticks}
    if secret is None:
        secret = secrets.token_bytes(32)
        log.info("no session key given: web sessions last until this server stops")
    receivers = tuple(r.name for r in config.alert_receivers) if config is not None else ()
    ctx = AppContext(store=store, operations=Operations(store, _registry(store, artifacts)), secret=secret,
                     group_by=group_by, defaults=defaults, public_metrics=public_metrics,
                     secure_cookies=secure_cookies, owns_store=owns, receivers=receivers)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        if ctx.owns_store:
            store.close()

    # No redirect_slashes: its redirect names an absolute URL built from the request's own scheme, which behind
    # a proxy that ends TLS is http. SlashTolerant below serves such paths in place instead.
    app = FastAPI(title="mlma", summary="The Machine Learning Monitoring Agent's API: the fleet, the engineer's "
                                        "queue and the actions on it.", version=_version(),
                  docs_url=None, redoc_url=None, openapi_url="/openapi.json", lifespan=lifespan,
                  redirect_slashes=False)
    app.state.mlma = ctx
    app.include_router(read.router)
    app.include_router(actions.router)
    app.include_router(admin.router)
    _add_errors(app)
    _add_pages(app, ctx)
    # Added before the headers middleware, so that its 401 and 413 answers get the security headers too.
    app.add_middleware(RequestGuard, ctx=ctx, max_body_bytes=max_body_bytes)

    @app.middleware("http")
    async def headers(request: Request, call_next):
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", _CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        if request.url.path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    # Added last, so it runs first: the guard (the log-in's exemption) and the headers see the route's path.
    app.add_middleware(SlashTolerant, router=app.router)
    return app


class SlashTolerant:
    """ASGI middleware: a path that names no route but does with its trailing slash removed (``/api/fleet/``),
    or with one added, is served as that route's path, for every router, without a redirect.

    Starlette's own answer (``redirect_slashes``) is a redirect to an absolute URL made from the request's
    scheme and host. Behind a reverse proxy that ends TLS the scheme the server sees is http (unless uvicorn
    trusts that proxy's ``X-Forwarded-Proto``, by default only one on the same host), so a client that follows
    it sends its token and body again in the clear; a client that follows no redirect (httpx by default) gets
    an empty 307 instead of the answer. Serving the path in place needs no URL at all. A path that a route
    matches as it is (a stream id ending in ``/`` under ``/api/streams/{unique_id:path}``) is left alone; one
    that matches neither way is a 404.

    >>> from fastapi.testclient import TestClient
    >>> client = TestClient(create_app(Store.create("sqlite://")))
    >>> answer = client.get("/healthz/", headers={"X-Forwarded-Proto": "https"}, follow_redirects=False)
    >>> answer.status_code, "location" in answer.headers
    (200, False)
    """

    def __init__(self, app, router) -> None:
        self.app = app
        self.router = router

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["path"] != "/" and not self._routed(scope, scope["path"]):
            path = scope["path"]
            other = (path.rstrip("/") or "/") if path.endswith("/") else path + "/"
            if self._routed(scope, other):
                scope = {**scope, "path": other}
                raw = scope.get("raw_path")
                if isinstance(raw, bytes):  # what uvicorn logs: the path served
                    scope["raw_path"] = (raw.rstrip(b"/") or b"/") if path.endswith("/") else raw + b"/"
        await self.app(scope, receive, send)

    def _routed(self, scope, path: str) -> bool:
        """Whether a route takes ``path`` (for any method: a wrong one is the route's 405, as before)."""
        probe = {**scope, "path": path}
        return any(route.matches(probe)[0] is not Match.NONE for route in self.router.routes)


def _version() -> str:
    from mlma import __version__

    return __version__


def _registry(store: Store, artifacts):
    from mlma.registry import ModelRegistry

    if artifacts is not None:
        return ModelRegistry(store, artifacts)
    try:
        return ModelRegistry(store)
    except ValueError:  # PostgreSQL or an in-memory store without a folder: no roll-backs from the API
        return None


class _EscapedJSONResponse(JSONResponse):
    """JSON with every non-ASCII character escaped: a validation error may echo a lone surrogate from the
    request (valid JSON, but not encodable as UTF-8), which the default rendering turns into a 500."""

    def render(self, content: Any) -> bytes:
        return json.dumps(_finite(content), ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def _finite(value: Any) -> Any:
    """``value`` with infinite and NaN numbers (echoed inputs such as ``{"version": NaN}``) as text: JSON has none."""
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


#: How deep a validation error echoes the input it refused: a body nested hundreds of levels deep (``[[[...]]]``)
#: made the echo's encoding recurse past Python's limit, a 500.
ECHO_DEPTH = 8


def _shallow(value: Any, depth: int = ECHO_DEPTH) -> Any:
    """``value`` with what lies deeper than ``depth`` levels of lists and mappings given as ``"..."``.

    >>> _shallow({"a": [[1, [2]]]}, depth=3)
    {'a': [[1, '...']]}
    """
    if not isinstance(value, (dict, list, tuple)):
        return value
    if depth <= 0:
        return "..."
    if isinstance(value, dict):
        return {k: _shallow(v, depth - 1) for k, v in value.items()}
    return [_shallow(v, depth - 1) for v in value]


def _add_errors(app: FastAPI) -> None:
    def validation(loc: list[str], message: str, kind: str = "value_error") -> JSONResponse:
        return _EscapedJSONResponse({"detail": [{"type": kind, "loc": loc, "msg": message}]}, status_code=422)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError):
        errors = [{**error, "input": _shallow(error["input"])} if "input" in error else error
                  for error in exc.errors()]
        return _EscapedJSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)

    @app.exception_handler(actions.FieldError)
    async def field_error(_request: Request, exc: actions.FieldError):
        return validation(["body", *exc.field.split(".")], str(exc))

    @app.exception_handler(QueryError)
    async def query_error(_request: Request, exc: QueryError):
        return validation(["query", exc.field], str(exc))

    @app.exception_handler(actions.RegistryMissing)
    async def no_registry(_request: Request, exc: actions.RegistryMissing):
        return JSONResponse({"detail": f"{exc}; start the server with the artifact folder (mlma serve --project DIR)"},
                            status_code=503)

    @app.exception_handler(StoreOperationalError)
    async def store_unavailable(request: Request, exc: StoreOperationalError):
        # The store could not serve the request (a bare 500 said nothing). Nothing was written: the request's
        # transaction was rolled back. The driver's own text stays in the server's log: it names the database's
        # host and port, and /healthz and refused tokens reach here unauthenticated.
        text, headers = store_trouble(exc)
        log.warning("%s %s: %s (%s)", request.method, request.url.path, text, unreachable_reason(exc))
        return JSONResponse({"detail": f"{text}; nothing was changed"}, status_code=503, headers=headers)


def _add_pages(app: FastAPI, ctx: AppContext) -> None:
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    @app.get("/healthz", tags=["meta"], response_model=Health,
             summary="Liveness: the store answers (no token needed)")
    def healthz() -> dict:
        return {"status": "ok", "schema": ctx.store.schema_revision()}

    # HEAD too (load balancers and uptime checkers often probe with it): the same check, no body.
    @app.head("/healthz", include_in_schema=False)
    def healthz_head() -> Response:
        ctx.store.schema_revision()
        return Response(status_code=200)

    @app.get("/metrics", tags=["meta"], summary="Prometheus metrics (viewer token unless served publicly)",
             dependencies=[] if ctx.public_metrics else [Depends(viewer)])
    def metrics(request: Request) -> Response:
        # Imported here: the metrics module is optional for the rest of the API.
        try:
            from mlma.metrics import render_metrics
        except ImportError as exc:
            return JSONResponse({"detail": f"metrics are not available: {exc}"}, status_code=501)
        body, content_type = render_metrics(ctx.store, accept=request.headers.get("accept"), receivers=ctx.receivers)
        return Response(content=body, media_type=content_type)
