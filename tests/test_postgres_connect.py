"""The quick path of ``mlma status`` reads a PostgreSQL URL into psycopg's arguments as the store's engine
(SQLAlchemy's psycopg dialect) does, or leaves the URL to the engine."""

from __future__ import annotations

import pytest

from mlma.store.engine import make_engine
from mlma.store.postgres_connect import plain_connection

URLS = [
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "postgresql://mlma@db/fleet",
    "postgresql+psycopg://mlma:p%40ss%3Aword@db.example.com:6543/my%20fleet",
    "postgresql+psycopg://us%2Fer:@db/fleet",
    "postgresql+psycopg:///fleet",                                          # the local socket
    "postgresql+psycopg://mlma@[::1]:5432/fleet",
    "postgresql+psycopg://mlma@db",
    "postgresql+psycopg://mlma@db/fleet?connect_timeout=3&statement_timeout=5min&sslmode=require",
    "postgresql+psycopg://mlma@db/fleet?options=-csearch_path%3Dx&keepalives_idle=15",
    "postgresql+psycopg://mlma@db/fleet?options=-c%20statement_timeout%3D1s&application_name=",
]


@pytest.mark.parametrize("url", URLS)
def test_a_plain_url_gives_the_engines_connection_arguments_and_log_name(url):
    engine = make_engine(url)
    try:
        _, expected = engine.dialect.create_connect_args(engine.url)
        expected.pop("context", None)    # SQLAlchemy's own type adapters
        shown = engine.url.set(query={}).render_as_string(hide_password=True)
    finally:
        engine.dispose()
    connection = plain_connection(url)
    assert connection is not None
    assert connection.kwargs == expected
    assert connection.shown == shown


@pytest.mark.parametrize("url", [
    "sqlite:///mlma.db", "sqlite://", "postgresql+asyncpg://mlma@db/fleet", "postgresql+psycopg2://mlma@db/x",
    "postgresql+psycopg://mlma@h1,h2/fleet", "postgresql+psycopg://mlma@db/fleet?host=other",
    "postgresql+psycopg://mlma@db/fleet?sslmode=require&sslmode=disable", "postgresql+psycopg://mlma@db:x/fleet",
    "not a url",
])
def test_any_other_url_is_left_to_the_engine(url):
    assert plain_connection(url) is None


def test_the_limits_a_log_line_names_are_the_urls_else_mlmas():
    assert plain_connection("postgresql+psycopg://mlma@db/fleet?connect_timeout=4&statement_timeout=1min").limits \
        == {"connect_timeout": "4 s", "statement_timeout": "1min", "tcp_user_timeout": "60000 ms"}
    assert plain_connection("postgresql+psycopg://mlma@db/fleet").limits \
        == {"connect_timeout": "10 s", "statement_timeout": "15min", "tcp_user_timeout": "60000 ms"}
