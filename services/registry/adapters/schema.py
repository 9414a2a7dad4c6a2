"""Running the registry's Alembic migrations from code (the service upgrades at start-up)."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, text

log = logging.getLogger(__name__)
ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"
# Two registry processes starting together must not both migrate: they queue on this advisory lock.
MIGRATION_LOCK_KEY = 0x46455252590001


def alembic_config() -> Config:
    """The registry's Alembic configuration (services/registry/alembic.ini)."""
    return Config(str(ALEMBIC_INI))


def _run(engine: Engine, action: str, revision: str) -> tuple[str | None, str | None] | None:
    """Run the Alembic command under the migration lock; (from, to) when the schema changed, else None."""
    config = alembic_config()
    with engine.begin() as connection:
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        before = MigrationContext.configure(connection).get_current_revision()
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)
        after = MigrationContext.configure(connection).get_current_revision()
    if before == after:
        log.info("registry schema already at %s", after)
        return None
    log.info("registry schema migrated from %s to %s", before, after)
    return before, after


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None] | None:
    """Bring the schema up to ``revision`` (``alembic upgrade head``); (from, to) when it changed, else None.

    Registry processes starting together queue on an advisory lock: one migrates, the others find it done.
    """
    return _run(engine, "upgrade", revision)


def downgrade(engine: Engine, revision: str = "base") -> tuple[str | None, str | None] | None:
    """Take the schema down to ``revision``; ``base`` removes every table."""
    return _run(engine, "downgrade", revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for an empty database."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
