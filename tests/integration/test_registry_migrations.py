"""The registry's schema comes from Alembic alone: up from empty, down to nothing, and it matches the ORM."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from services.registry.adapters import schema
from services.registry.adapters.orm import Base

pytestmark = pytest.mark.integration
pytest_plugins = ["test_registry_support"]

TABLES = {"registered_models", "model_versions", "evaluations", "deployments", "deployment_history", "outbox",
          "applied_events"}  # fmt: skip


def test_upgrade_from_empty_then_downgrade_to_base_and_up_again(fresh_database_url: str) -> None:
    engine = create_engine(fresh_database_url, poolclass=NullPool)
    head = ScriptDirectory.from_config(schema.alembic_config()).get_current_head()
    assert schema.current_revision(engine) is None
    schema.upgrade(engine)
    assert schema.current_revision(engine) == head
    assert set(inspect(engine).get_table_names()) >= TABLES
    schema.downgrade(engine, "base")
    assert schema.current_revision(engine) is None
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    with engine.connect() as connection:  # the trigger's function went too
        assert connection.scalar(text("SELECT count(*) FROM pg_proc WHERE proname LIKE 'deployment_history%'")) == 0
    schema.upgrade(engine)
    assert schema.current_revision(engine) == head
    engine.dispose()


def test_the_orm_matches_the_migrated_schema(fresh_database_url: str) -> None:
    engine = create_engine(fresh_database_url, poolclass=NullPool)
    schema.upgrade(engine)
    with engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    engine.dispose()
    assert differences == []


def test_upgrading_twice_is_harmless_and_history_is_append_only(fresh_database_url: str) -> None:
    engine = create_engine(fresh_database_url, poolclass=NullPool)
    schema.upgrade(engine)
    schema.upgrade(engine)
    with engine.begin() as connection:
        model_id = connection.scalar(text("INSERT INTO registered_models (name) VALUES ('m') RETURNING id"))
        connection.execute(
            text(
                "INSERT INTO deployment_history (model_id, revision, action, from_canary_weight, to_canary_weight, "
                "shadow, actor, reason) VALUES (:id, 1, 'promote', 0, 0, false, 'test', 'r')"
            ),  # fmt: skip
            {"id": model_id},
        )
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
        connection.execute(text("UPDATE deployment_history SET reason = 'rewritten'"))
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
        connection.execute(text("DELETE FROM deployment_history"))
    engine.dispose()
