"""The handlers against the in-memory fake and against real PostgreSQL: one test class, two adapters."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session, sessionmaker
from test_registry_support import trained_event

from services.registry.adapters import schema
from services.registry.adapters.memory import MemoryDatabase
from services.registry.adapters.orm import DeploymentHistory, Evaluation, ModelVersion, OutboxMessage
from services.registry.adapters.repository import SqlUnitOfWork, UnitOfWork, retry_conflicts
from services.registry.domain import Decision, DecisionNotApplicable, ModelNotFound, VersionNotFound
from services.registry.handlers import handle_deployment_command, handle_model_decided, handle_model_trained
from shared.envelope import EventMeta
from shared.events import EVENT_TYPES, ModelDecided, ModelTrained, new_id, utc_now

pytest_plugins = ["test_registry_support"]


def meta_for(event: Any, event_id: str | None = None) -> EventMeta:
    return EventMeta(event_id=event_id or new_id(), source="tests", time=utc_now(), traceparent=None,
                     type_name=event.type_name)  # fmt: skip


@dataclass
class Backend:
    """A unit-of-work factory and a way to look at what it stored."""

    uow: Callable[[], UnitOfWork]
    rows: Callable[[type], list[Any]]


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.integration)])
def backend(request: pytest.FixtureRequest) -> Iterator[Backend]:
    if request.param == "memory":
        database = MemoryDatabase()
        tables: dict[type, Callable[[], list[Any]]] = {
            ModelVersion: lambda: sorted(database.state.versions.values(), key=lambda row: (row.model_id, row.number)),
            OutboxMessage: lambda: list(database.state.outbox),
            DeploymentHistory: lambda: list(database.state.history),
            Evaluation: lambda: list(database.state.evaluations),
        }
        yield Backend(uow=database.uow, rows=lambda table: tables[table]())
        return
    engine = create_engine(request.getfixturevalue("fresh_database_url"), pool_size=25)
    schema.upgrade(engine)
    sessions = sessionmaker(engine, expire_on_commit=False)

    def rows(table: type) -> list[Any]:
        with Session(engine) as session:
            order = (table.model_id, table.number) if table is ModelVersion else (table.id,)  # type: ignore[attr-defined]
            return list(session.scalars(select(table).order_by(*order)))

    yield Backend(uow=lambda: SqlUnitOfWork(sessions), rows=rows)
    engine.dispose()


def register(backend: Backend, event: ModelTrained, event_id: str | None = None) -> int | None:
    return handle_model_trained(event, meta_for(event, event_id), uow=backend.uow()).version


def decided(backend: Backend, version: int, decision: str, event_id: str | None = None, **fields: Any) -> Any:
    event = ModelDecided(model_name="digits", version=version, decision=decision, reason=f"{decision} it",  # type: ignore[arg-type]
                         metrics={"accuracy": 0.9}, **fields)  # fmt: skip
    return handle_model_decided(event, meta_for(event, event_id), uow=backend.uow())


def published(backend: Backend, type_name: str) -> list[Any]:
    return [EVENT_TYPES[row.type_name].model_validate(row.payload) for row in backend.rows(OutboxMessage)
            if row.type_name == type_name]  # fmt: skip


def test_the_same_event_twice_makes_one_version(backend: Backend) -> None:
    event, event_id = trained_event(), new_id()
    assert register(backend, event, event_id) == 1
    assert register(backend, event, event_id) is None
    assert [row.number for row in backend.rows(ModelVersion)] == [1]
    registered = published(backend, "ferry.model.registered.v1")
    assert len(registered) == 1 and registered[0].version == 1
    assert registered[0].artifact == event.artifact and registered[0].training_request_id == event.request_id


def test_a_redelivery_under_a_new_id_with_the_same_request_and_artifact_makes_no_version(backend: Backend) -> None:
    event = trained_event()
    assert register(backend, event) == 1
    assert register(backend, event) == 1  # new event id, same request id and sha256
    assert register(backend, trained_event()) == 2  # another request: a new version
    assert [row.number for row in backend.rows(ModelVersion)] == [1, 2]
    assert len(published(backend, "ferry.model.registered.v1")) == 2


def test_twenty_concurrent_registrations_number_one_to_twenty(backend: Backend) -> None:
    events = [trained_event("concurrent") for _ in range(20)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        numbers = list(pool.map(lambda event: retry_conflicts(lambda: register(backend, event)), events))
    assert sorted(numbers) == list(range(1, 21))  # type: ignore[type-var]
    assert sorted(row.number for row in backend.rows(ModelVersion)) == list(range(1, 21))


def test_promote_canary_then_champion_then_rollback(backend: Backend) -> None:
    for _ in range(3):
        register(backend, trained_event())
    decided(backend, 1, "promote", stage="champion")
    decided(backend, 2, "promote", stage="champion")
    decided(backend, 3, "promote", stage="canary", canary_weight=0.25)
    decided(backend, 2, "rollback")
    statuses = {row.number: row.status for row in backend.rows(ModelVersion)}
    assert statuses == {1: "champion", 2: "rolled_back", 3: "challenger"}
    history = backend.rows(DeploymentHistory)
    assert [(row.revision, row.action, row.from_champion, row.to_champion) for row in history] == [
        (1, "promote", None, 1), (2, "promote", 1, 2), (3, "promote", 2, 2), (4, "rollback", 2, 1)]  # fmt: skip
    changes = published(backend, "ferry.deployment.changed.v1")
    assert [change.revision for change in changes] == [1, 2, 3, 4]
    assert changes[-1].champion.version == 1 and changes[-1].challenger.version == 3
    assert changes[-1].canary_weight == 0.25 and changes[-1].champion.signature.inputs[0].name == "input"
    assert len(backend.rows(Evaluation)) == 4


def test_a_decision_event_applies_once(backend: Backend) -> None:
    register(backend, trained_event())
    event_id = new_id()
    assert decided(backend, 1, "promote", event_id=event_id, stage="champion") is not None
    assert decided(backend, 1, "promote", event_id=event_id, stage="champion") is None
    assert len(backend.rows(Evaluation)) == 1 and len(backend.rows(DeploymentHistory)) == 1


def test_decisions_that_cannot_apply_change_nothing(backend: Backend) -> None:
    with pytest.raises(ModelNotFound):
        decided(backend, 1, "promote")
    register(backend, trained_event())
    event_id = new_id()
    with pytest.raises(VersionNotFound):
        decided(backend, 7, "promote", event_id=event_id)
    decided(backend, 1, "promote", stage="champion")
    with pytest.raises(DecisionNotApplicable):
        decided(backend, 1, "rollback")
    assert len(backend.rows(Evaluation)) == 1  # only the applied promote left a trace
    register(backend, trained_event())
    assert decided(backend, 2, "reject", event_id=event_id) is not None  # the failed attempt claimed no id


def test_a_users_command_takes_the_same_path_and_is_credited(backend: Backend) -> None:
    register(backend, trained_event())
    register(backend, trained_event())
    decided(backend, 1, "promote", stage="champion")
    command = Decision(model_name="digits", kind="promote", reason="manual", actor="user:alice", version=2,
                       canary_weight=0.5)  # fmt: skip
    outcome = handle_deployment_command(command, uow=backend.uow())
    assert outcome.after.challenger == 2 and outcome.after.canary_weight == 0.5
    last = backend.rows(DeploymentHistory)[-1]
    assert (last.actor, last.reason, last.source_event_id) == ("user:alice", "manual", None)
    assert published(backend, "ferry.deployment.changed.v1")[-1].actor == "user:alice"
