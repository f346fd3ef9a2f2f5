"""Alembic environment: runs the migrations on the connection that :mod:`mlma.store.migrate` hands over.

Alembic executes this file when it migrates. Imported any other way (``pytest --doctest-modules`` imports
every module of the package) it does nothing, because Alembic's context is not set up then.
"""

from __future__ import annotations

from alembic import context


def _run() -> None:
    from mlma.store.schema import metadata

    config = context.config
    connection = config.attributes.get("connection")
    if connection is None:
        # Run from the alembic command line: `-x url=...` or sqlalchemy.url in the config.
        from mlma.store.store import _make_engine

        url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
        engine = _make_engine(url)
        with engine.connect() as connection:
            _migrate(connection, metadata)
        engine.dispose()
    else:
        _migrate(connection, metadata)


def _migrate(connection, metadata) -> None:
    context.configure(connection=connection, target_metadata=metadata,
                      render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


if getattr(context, "config", None) is not None:
    _run()
