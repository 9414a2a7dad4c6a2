"""The registry's schema comes from Alembic alone: up from empty, down to nothing, and it matches the ORM."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from services.registry.adapters import schema
from services.registry.adapters.orm import Base
from services.registry.adapters.repository import SqlRepository

pytestmark = pytest.mark.integration
pytest_plugins = ["test_registry_support"]

TABLES = {
    "registered_models",
    "model_versions",
    "evaluations",
    "deployments",
    "deployment_history",
    "outbox",
    "applied_events",
}


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
            ),
            {"id": model_id},
        )
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
        connection.execute(text("UPDATE deployment_history SET reason = 'rewritten'"))
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
        connection.execute(text("DELETE FROM deployment_history"))
    engine.dispose()


def test_0003_keys_applied_events_by_source_and_carries_the_outbox_over(fresh_database_url: str) -> None:
    engine = create_engine(fresh_database_url, poolclass=NullPool)
    schema.upgrade(engine, "0002")
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO applied_events (event_id, type_name) VALUES ('e1', 't')"))
        connection.execute(
            text(
                "INSERT INTO outbox (event_id, type_name, topic, partition_key, payload, sent_at) VALUES "
                "('sent', 't', 'x', 'k', '{}', now()), ('waiting', 't', 'x', 'k', '{}', NULL)"
            )
        )
    schema.upgrade(engine)
    with engine.begin() as connection:
        assert connection.execute(text("SELECT source, event_id FROM applied_events")).all() == [("", "e1")]
        connection.execute(text("INSERT INTO applied_events (source, event_id, type_name) VALUES ('a', 'e1', 't')"))
        statuses = connection.execute(text("SELECT event_id, status FROM outbox ORDER BY id")).all()
        assert statuses == [("sent", "sent"), ("waiting", "pending")]
    with pytest.raises(DBAPIError, match="ck_outbox_status_known"), engine.begin() as connection:
        connection.execute(text("UPDATE outbox SET status = 'lost'"))
    with pytest.raises(DBAPIError, match="pk_applied_events"), engine.begin() as connection:
        connection.execute(text("INSERT INTO applied_events (source, event_id, type_name) VALUES ('a', 'e1', 't')"))
    schema.downgrade(engine, "0002")  # and back: one row per event id again
    with engine.connect() as connection:
        assert connection.execute(text("SELECT event_id FROM applied_events")).all() == [("e1",)]
    engine.dispose()


def test_two_processes_migrating_at_once_migrate_once(fresh_database_url: str) -> None:
    engines = [create_engine(fresh_database_url, poolclass=NullPool) for _ in range(2)]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(schema.upgrade, engines))
    assert sorted(result is not None for result in results) == [False, True]  # one upgraded, one found it done
    head = ScriptDirectory.from_config(schema.alembic_config()).get_current_head()
    assert all(schema.current_revision(engine) == head for engine in engines)
    for engine in engines:
        engine.dispose()


def test_an_event_applied_before_0003_stays_applied_whatever_its_source(fresh_database_url: str) -> None:
    engine = create_engine(fresh_database_url, poolclass=NullPool)
    schema.upgrade(engine, "0002")
    with engine.begin() as connection:
        connection.execute(text("INSERT INTO applied_events (event_id, type_name) VALUES ('old', 't')"))
    schema.upgrade(engine)
    with Session(engine) as session, session.begin():
        repo = SqlRepository(session)
        assert not repo.claim_event("ferry.evaluator", "old", "t")  # redelivered across the upgrade: a no-op
        assert repo.claim_event("ferry.evaluator", "new", "t")
        assert not repo.claim_event("ferry.evaluator", "new", "t")
        assert repo.claim_event("another.source", "new", "t")
    engine.dispose()


def test_0004_gives_versions_a_description_and_an_append_only_audit(fresh_database_url: str) -> None:
    engine = create_engine(fresh_database_url, poolclass=NullPool)
    schema.upgrade(engine, "0003")
    with engine.begin() as connection:
        model_id = connection.scalar(text("INSERT INTO registered_models (name) VALUES ('m') RETURNING id"))
        connection.execute(
            text(
                "INSERT INTO model_versions (model_id, number, artifact_uri, artifact_sha256, artifact_size_bytes, "
                "artifact_format, dataset, split_id, arch) VALUES (:id, 1, 'u', :sha, 1, 'onnx', 'd', 's', 'mlp')"
            ),
            {"id": model_id, "sha": "0" * 64},
        )
    schema.upgrade(engine, "0004")
    with engine.begin() as connection:
        assert connection.scalar(text("SELECT description FROM model_versions")) == ""
        connection.execute(
            text("INSERT INTO model_audit (model_id, action, changes, actor) VALUES (:id, 'edit', '{}', 'user:a')"),
            {"id": model_id},
        )
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
        connection.execute(text("DELETE FROM model_audit"))
    with pytest.raises(DBAPIError, match="ck_model_audit_action_known"), engine.begin() as connection:
        connection.execute(
            text("INSERT INTO model_audit (model_id, action, changes, actor) VALUES (:id, 'delete', '{}', 'a')"),
            {"id": model_id},
        )
    schema.downgrade(engine, "0003")
    assert "model_audit" not in inspect(engine).get_table_names()
    assert "description" not in {column["name"] for column in inspect(engine).get_columns("model_versions")}
    with engine.connect() as connection:
        assert connection.scalar(text("SELECT count(*) FROM pg_proc WHERE proname = 'model_audit_append_only'")) == 0
    engine.dispose()


def test_the_migrate_command_brings_an_empty_database_to_head_once(fresh_database_url: str) -> None:
    """``python -m services.registry.migrate``: what the Helm chart's pre-install/pre-upgrade hook Job runs."""
    env = os.environ | {"FERRY_DATABASE_URL": fresh_database_url}
    command = [sys.executable, "-m", "services.registry.migrate"]
    first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr[-2000:]
    head = ScriptDirectory.from_config(schema.alembic_config()).get_current_head()
    assert f"to {head}" in first.stdout
    engine = create_engine(fresh_database_url, poolclass=NullPool)
    assert schema.current_revision(engine) == head and set(inspect(engine).get_table_names()) >= TABLES
    engine.dispose()
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout.strip() == "registry schema at head"


def test_the_migrate_command_fails_on_an_unreachable_database() -> None:
    """The Job fails, so Helm stops the install or upgrade before any new registry pod starts."""
    env = os.environ | {"FERRY_DATABASE_URL": "postgresql+psycopg://ferry:Wq8zLr2vKx@127.0.0.1:1/ferry"}
    command = [sys.executable, "-m", "services.registry.migrate", "--wait-s", "0.5"]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert "the registry's database did not answer" in result.stderr and "Wq8zLr2vKx" not in result.stderr
