"""How mlma connects to PostgreSQL: the libpq limits it adds unless the URL gives them, the log line when one
fires, and a plain URL read into psycopg's connection arguments.

Standard library only, so that both the store's engine (:mod:`mlma.store.engine`, through SQLAlchemy) and the
quick read path of ``mlma status`` (:mod:`mlma.store.glance`, through psycopg directly) connect with the same
parameters and report a fired limit in the same words.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

#: libpq connection parameters mlma sets on PostgreSQL unless the URL gives them.
POSTGRES_DEFAULTS = {"connect_timeout": "10", "keepalives": "1", "keepalives_idle": "30",
                     "keepalives_interval": "10", "keepalives_count": "3", "tcp_user_timeout": "60000"}
#: The server-side statement timeout unless the URL gives ``statement_timeout`` (PostgreSQL units).
POSTGRES_STATEMENT_TIMEOUT = "15min"
#: The drivers a PostgreSQL URL may name (``postgresql`` means psycopg 3, as :mod:`mlma.store.engine` says).
_SCHEMES = ("postgresql", "postgresql+psycopg")
#: SQLAlchemy's grammar of a database URL (``sqlalchemy.engine.url._parse_url``), so that both paths read a
#: URL into the same parts.
_URL = re.compile(r"""
    (?P<name>[\w+]+)://
    (?:(?P<username>[^:/]*)(?::(?P<password>[^@]*))?@)?
    (?:(?:\[(?P<ipv6host>[^/?]+)\]|(?P<ipv4host>[^/:?]+))?(?::(?P<port>[^/?]*))?)?
    (?:/(?P<database>[^?]*))?
    (?:\?(?P<query>.*))?
    """, re.X)


def with_defaults(query: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A URL's query parameters with mlma's limits added where the URL does not set them, and the statement
    timeout (passed to the server in ``options``).

    >>> query, statement = with_defaults({"connect_timeout": "5", "options": "-csearch_path=x"})
    >>> query["connect_timeout"], query["keepalives_idle"], query["options"], statement
    ('5', '30', '-csearch_path=x -c statement_timeout=15min', '15min')
    """
    query = dict(query)
    statement_timeout = str(query.pop("statement_timeout", POSTGRES_STATEMENT_TIMEOUT))
    for key, value in POSTGRES_DEFAULTS.items():
        query.setdefault(key, value)
    options = query.get("options", "")
    options = options if isinstance(options, str) else " ".join(options)
    if "statement_timeout" not in options:
        query["options"] = f"{options} -c statement_timeout={statement_timeout}".strip()
    return query, statement_timeout


def limits(query: dict[str, Any], statement_timeout: str) -> dict[str, str]:
    """The limits a log line names, from :func:`with_defaults`' result."""
    return {"connect_timeout": f"{query['connect_timeout']} s", "statement_timeout": statement_timeout,
            "tcp_user_timeout": f"{query['tcp_user_timeout']} ms"}


def timeout_fired(exc: BaseException) -> str | None:
    """Which of the connection's limits an error from psycopg comes from, if any.

    >>> timeout_fired(RuntimeError("connection timeout expired")), timeout_fired(RuntimeError("no"))
    ('connect_timeout', None)
    """
    text = str(exc).lower()
    if "statement timeout" in text:
        return "statement_timeout"
    if "timeout expired" in text or "connection timeout" in text:
        return "connect_timeout"
    if "connection timed out" in text or "user timeout" in text:
        return "tcp_user_timeout"
    if "server closed the connection unexpectedly" in text or "connection reset" in text:
        return "keepalives"
    return None


def log_if_timeout(log: logging.Logger, exc: BaseException, fired_limits: dict[str, str], shown: str) -> None:
    """Log an error from psycopg that one of the limits caused (which one, its value, the server)."""
    fired = timeout_fired(exc)
    if fired is not None:
        log.error("PostgreSQL %s (%s) fired on %s: %s", fired, fired_limits.get(fired, "keepalives"), shown,
                  str(exc).strip().splitlines()[0])


@dataclass(frozen=True)
class Connection:
    """psycopg's connection arguments for a store URL, mlma's limits added, as SQLAlchemy's psycopg dialect
    would pass them; ``shown`` is the server as the engine's log names it (no password, no parameters)."""

    kwargs: dict[str, Any]
    limits: dict[str, str]
    shown: str


def plain_connection(url: str) -> Connection | None:
    """The connection to the PostgreSQL store at ``url``; None for any other URL and for one whose reading
    only SQLAlchemy should decide (several hosts, a repeated parameter, a port that is not a number).

    >>> c = plain_connection("postgresql+psycopg://mlma:s%40cret@db:5433/fleet?connect_timeout=5")
    >>> c.kwargs["user"], c.kwargs["password"], c.kwargs["port"], c.kwargs["dbname"], c.kwargs["connect_timeout"]
    ('mlma', 's@cret', 5433, 'fleet', '5')
    >>> c.shown, c.limits["connect_timeout"]
    ('postgresql+psycopg://mlma:***@db:5433/fleet', '5 s')
    >>> plain_connection("sqlite:///mlma.db") is None, plain_connection("postgresql://h1,h2/db") is None
    (True, True)
    """
    match = _URL.match(url)
    if match is None or match["name"] not in _SCHEMES:
        return None
    pairs = parse_qsl(match["query"] or "")
    query = dict(pairs)
    host = match["ipv4host"] or match["ipv6host"]
    port = match["port"]
    if (len(query) < len(pairs) or {"host", "hostaddr", "port"} & set(query) or (host and "," in host)
            or (port and not port.isdigit())):
        return None
    user, password, database = (None if v is None else unquote(v)
                                for v in (match["username"], match["password"], match["database"]))
    query, statement_timeout = with_defaults(query)
    kwargs: dict[str, Any] = {}
    # As SQLAlchemy's URL.translate_connect_args: empty parts are left out.
    for name, value in (("host", host), ("dbname", database), ("user", user), ("password", password),
                        ("port", int(port) if port else None)):
        if value:
            kwargs[name] = value
    kwargs.update(query)
    shown = "postgresql+psycopg://"
    if user is not None:
        shown += quote(user, safe=" +") + (":***" if password is not None else "") + "@"
    if host is not None:
        shown += f"[{host}]" if ":" in host else host
    if port:
        shown += f":{int(port)}"
    if database is not None:
        shown += "/" + quote(database, safe=" +/")
    return Connection(kwargs, limits(query, statement_timeout), shown)
