"""Schema migrations with Alembic, run from Python: no ``alembic.ini`` and no command line needed.

The migration scripts ship inside the package (``mlma/store/migrations``). :func:`upgrade` brings a
database to a revision (default: the newest, ``"head"``), :func:`current_revision` reads where a database
is, and :func:`head_revision` says what this version of mlma expects.

Authoring a new migration (for developers of mlma)::

    from alembic import command
    from mlma.store.migrate import alembic_config
    command.revision(alembic_config(), message="add column x", rev_id="0003")

then edit the new file in ``migrations/versions``, add the same change to :mod:`mlma.store.schema`
(``tests/test_store.py`` checks that both agree) and set :data:`SCHEMA_REVISION` to the new revision.

Alembic is imported only when a migration runs or the scripts are read: opening a store whose schema is
current needs one ``SELECT`` on ``alembic_version`` (Alembic's import alone takes about 0.15 s, which a
read-only command such as ``mlma status`` should not pay).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where used: the revision constants below are read without SQLAlchemy
    import sqlalchemy as sa
    from alembic.config import Config
    from alembic.script import ScriptDirectory

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: The newest revision of the packaged migrations, which :mod:`mlma.store.schema` describes; a store at this
#: revision is opened without reading the migration scripts (``tests/test_store.py`` checks it is the head).
SCHEMA_REVISION = "0014"
#: Alembic's table holding the revision a database is at.
VERSION_TABLE = "alembic_version"


def alembic_config(connection: sa.Connection | None = None) -> Config:
    """An Alembic :class:`~alembic.config.Config` pointing at the packaged migrations.

    With ``connection``, migrations run on that connection (inside its transaction).
    """
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("version_path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


@lru_cache(maxsize=1)
def _scripts() -> ScriptDirectory:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config())


def head_revision() -> str:
    """The schema revision this version of mlma works with.

    >>> head_revision()
    '0014'
    """
    return _scripts().get_current_head()


def known_revisions() -> list[str]:
    """Every revision the packaged migrations know, oldest first.

    >>> revisions = known_revisions()
    >>> revisions[:3], revisions[-1], len(revisions)
    (['0001', '0002', '0003'], '0014', 14)
    """
    return [s.revision for s in reversed(list(_scripts().walk_revisions()))]


def current_revision(connection: sa.Connection) -> str | None:
    """The revision a database is at; None for a database without mlma's schema.

    A plain read of Alembic's version table (what Alembic itself reads), so no Alembic import is needed.
    """
    import sqlalchemy as sa

    if not sa.inspect(connection).has_table(VERSION_TABLE):
        return None
    table = sa.table(VERSION_TABLE, sa.column("version_num"))
    versions = connection.execute(sa.select(table.c.version_num)).scalars().all()
    if len(versions) > 1:
        raise ValueError(f"the database is at several schema revisions at once ({', '.join(versions)}); mlma's "
                         f"migrations are linear, so its {VERSION_TABLE} table was edited by hand")
    return versions[0] if versions else None


def upgrade(engine: sa.Engine, revision: str = "head") -> str | None:
    """Migrate the database behind ``engine`` to ``revision``; returns the revision it is at afterwards.

    Two upgrades at once (two hosts, a job run again) take turns: on PostgreSQL the second waits for the first's
    transaction-scoped advisory lock of the schema, then finds the store migrated and does nothing (before, it
    ran the same migrations into the first's and failed with a traceback, ``relation "retention" already
    exists``); SQLite's write transaction serialises them by itself."""
    import sqlalchemy as sa
    from alembic import command

    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(sa.text("SELECT pg_advisory_xact_lock(hashtext('mlma.migrate.' || current_schema()))"))
        command.upgrade(alembic_config(connection), revision)
    with engine.connect() as connection:
        return current_revision(connection)
