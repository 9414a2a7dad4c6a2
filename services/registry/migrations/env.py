"""Alembic environment of the registry: runs on a connection handed over by the service, or on a URL."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import create_engine, pool
from sqlalchemy.engine import Connection

from services.registry.adapters.orm import Base

config = context.config
target_metadata = Base.metadata


def _url() -> str:
    """The URL given with -x url=..., else sqlalchemy.url, else FERRY_DATABASE_URL / the embedded server."""
    explicit = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if explicit:
        return explicit
    from shared.settings import FerrySettings

    return FerrySettings().resolved_database_url


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def run_offline() -> None:
    """Emit the SQL instead of running it (alembic upgrade head --sql)."""
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Run against the service's connection when given one, else open one."""
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as opened:
        _run(opened)


if context.is_offline_mode():
    run_offline()
else:
    run_online()
