"""Schema migrations with Alembic, run from Python: no ``alembic.ini`` and no command line needed.

The migration scripts ship inside the package (``mlma/store/migrations``). :func:`upgrade` brings a
database to a revision (default: the newest, ``"head"``), :func:`current_revision` reads where a database
is, and :func:`head_revision` says what this version of mlma expects.

Authoring a new migration (for developers of mlma)::

    from alembic import command
    from mlma.store.migrate import alembic_config
    command.revision(alembic_config(), message="add column x", rev_id="0003")

then edit the new file in ``migrations/versions`` and add the same change to :mod:`mlma.store.schema`
(``tests/test_store.py`` checks that both agree).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """An Alembic :class:`~alembic.config.Config` pointing at the packaged migrations.

    With ``connection``, migrations run on that connection (inside its transaction).
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("version_path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@lru_cache(maxsize=1)
def _scripts() -> ScriptDirectory:
    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The schema revision this version of mlma works with.

    >>> head_revision()
    '0006'
    """
    return _scripts().get_current_head()


def known_revisions() -> list[str]:
    """Every revision the packaged migrations know, oldest first.

    >>> known_revisions()
    ['0001', '0002', '0003', '0004', '0005', '0006']
    """
    return [s.revision for s in reversed(list(_scripts().walk_revisions()))]


def current_revision(connection: sa.Connection) -> str | None:
    """The revision a database is at; None for a database without mlma's schema."""
    return MigrationContext.configure(connection).get_current_revision()


def upgrade(engine: sa.Engine, revision: str = "head") -> str | None:
    """Migrate the database behind ``engine`` to ``revision``; returns the revision it is at afterwards."""
    with engine.begin() as connection:
        command.upgrade(alembic_config(connection), revision)
    with engine.connect() as connection:
        return current_revision(connection)
