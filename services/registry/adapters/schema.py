"""Running the registry's Alembic migrations from code (the service upgrades at start-up)."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, text

ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"
# Two registry processes starting together must not both migrate: they queue on this advisory lock.
MIGRATION_LOCK_KEY = 0x46455252590001


def alembic_config() -> Config:
    """The registry's Alembic configuration (services/registry/alembic.ini)."""
    return Config(str(ALEMBIC_INI))


def _run(engine: Engine, action: str, revision: str) -> None:
    config = alembic_config()
    with engine.begin() as connection:
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Bring the schema up to ``revision`` (``alembic upgrade head``)."""
    _run(engine, "upgrade", revision)


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Take the schema down to ``revision``; ``base`` removes every table."""
    _run(engine, "downgrade", revision)


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at, or None for an empty database."""
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()
