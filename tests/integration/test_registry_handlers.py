"""The handlers against the in-memory fake and against real PostgreSQL: one test class, two adapters."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
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
from shared.artifacts import ArtifactStore
from shared.envelope import EventMeta
from shared.errors import PermanentError
from shared.events import EVENT_TYPES, ModelDecided, ModelTrained, new_id, utc_now

pytest_plugins = ["test_registry_support"]


def meta_for(event: Any, event_id: str | None = None, source: str = "tests") -> EventMeta:
    return EventMeta(
        event_id=event_id if event_id is not None else new_id(),
        source=source,
        time=utc_now(),
        traceparent=None,
        type_name=event.type_name,
    )


@dataclass
class Backend:
    """A unit-of-work factory, an artifact store, and a way to look at what it stored."""

    uow: Callable[[], UnitOfWork]
    rows: Callable[[type], list[Any]]
    store: ArtifactStore

    def trained(self, model: str = "digits") -> ModelTrained:
        """A model.trained event whose artifact is in this backend's store."""
        return trained_event(model, store=self.store)


@pytest.fixture(params=["memory", pytest.param("postgres", marks=pytest.mark.integration)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    if request.param == "memory":
        database = MemoryDatabase()
        tables: dict[type, Callable[[], list[Any]]] = {
            ModelVersion: lambda: sorted(database.state.versions.values(), key=lambda row: (row.model_id, row.number)),
            OutboxMessage: lambda: list(database.state.outbox),
            DeploymentHistory: lambda: list(database.state.history),
            Evaluation: lambda: list(database.state.evaluations),
        }
        yield Backend(uow=database.uow, rows=lambda table: tables[table](), store=store)
        return
    engine = create_engine(request.getfixturevalue("fresh_database_url"), pool_size=25)
    schema.upgrade(engine)
    sessions = sessionmaker(engine, expire_on_commit=False)

    def rows(table: type) -> list[Any]:
        with Session(engine) as session:
            order = (table.model_id, table.number) if table is ModelVersion else (table.id,)  # type: ignore[attr-defined]
            return list(session.scalars(select(table).order_by(*order)))

    yield Backend(uow=lambda: SqlUnitOfWork(sessions), rows=rows, store=store)
    engine.dispose()


def register(backend: Backend, event: ModelTrained, event_id: str | None = None, source: str = "tests") -> int | None:
    meta = meta_for(event, event_id, source)
    return handle_model_trained(event, meta, uow=backend.uow(), artifacts=backend.store).version


def decided(
    backend: Backend, version: int, decision: str, event_id: str | None = None, source: str = "tests", **fields: Any
) -> Any:
    event = ModelDecided(
        model_name="digits",
        version=version,
        decision=decision,
        reason=f"{decision} it",  # type: ignore[arg-type]
        metrics={"accuracy": 0.9},
        **fields,
    )
    return handle_model_decided(event, meta_for(event, event_id, source), uow=backend.uow())


def published(backend: Backend, type_name: str) -> list[Any]:
    return [
        EVENT_TYPES[row.type_name].model_validate(row.payload)
        for row in backend.rows(OutboxMessage)
        if row.type_name == type_name
    ]


def test_the_same_event_twice_makes_one_version(backend: Backend) -> None:
    event, event_id = backend.trained(), new_id()
    assert register(backend, event, event_id) == 1
    assert register(backend, event, event_id) is None
    assert [row.number for row in backend.rows(ModelVersion)] == [1]
    registered = published(backend, "ferry.model.registered.v1")
    assert len(registered) == 1 and registered[0].version == 1
    assert registered[0].artifact == event.artifact and registered[0].training_request_id == event.request_id


def test_a_redelivery_under_a_new_id_with_the_same_request_and_artifact_makes_no_version(backend: Backend) -> None:
    event = backend.trained()
    assert register(backend, event) == 1
    assert register(backend, event) == 1  # new event id, same request id and sha256
    assert register(backend, backend.trained()) == 2  # another request: a new version
    assert [row.number for row in backend.rows(ModelVersion)] == [1, 2]
    assert len(published(backend, "ferry.model.registered.v1")) == 2


def test_twenty_concurrent_registrations_number_one_to_twenty(backend: Backend) -> None:
    events = [backend.trained("concurrent") for _ in range(20)]
    with ThreadPoolExecutor(max_workers=20) as pool:
        numbers = list(pool.map(lambda event: retry_conflicts(lambda: register(backend, event)), events))
    assert sorted(numbers) == list(range(1, 21))  # type: ignore[type-var]
    assert sorted(row.number for row in backend.rows(ModelVersion)) == list(range(1, 21))


def test_promote_canary_then_champion_then_rollback(backend: Backend) -> None:
    for _ in range(3):
        register(backend, backend.trained())
    decided(backend, 1, "promote", stage="champion")
    decided(backend, 2, "promote", stage="champion")
    decided(backend, 3, "promote", stage="canary", canary_weight=0.25)
    decided(backend, 2, "rollback")
    statuses = {row.number: row.status for row in backend.rows(ModelVersion)}
    assert statuses == {1: "champion", 2: "rolled_back", 3: "challenger"}
    history = backend.rows(DeploymentHistory)
    assert [(row.revision, row.action, row.from_champion, row.to_champion) for row in history] == [
        (1, "promote", None, 1),
        (2, "promote", 1, 2),
        (3, "promote", 2, 2),
        (4, "rollback", 2, 1),
    ]
    changes = published(backend, "ferry.deployment.changed.v1")
    assert [change.revision for change in changes] == [1, 2, 3, 4]
    assert changes[-1].champion.version == 1 and changes[-1].challenger.version == 3
    assert changes[-1].canary_weight == 0.25 and changes[-1].champion.signature.inputs[0].name == "input"
    assert len(backend.rows(Evaluation)) == 4


def test_class_labels_are_kept_with_the_version_and_travel_to_the_deployment(backend: Backend) -> None:
    digits = [f"digit {number}" for number in range(10)]
    plain = backend.trained()
    labelled = plain.model_copy(update={"request_id": new_id(), "signature": plain.signature.labelled(digits)})
    assert register(backend, plain) == 1  # an event from before labels: none stored, none invented
    assert register(backend, labelled) == 2
    stored = {row.number: row.signature.get("labels") for row in backend.rows(ModelVersion)}
    assert stored == {1: None, 2: digits}
    assert [event.signature.labels for event in published(backend, "ferry.model.registered.v1")] == [None, digits]
    decided(backend, 2, "promote", stage="champion")
    [change] = published(backend, "ferry.deployment.changed.v1")
    assert change.champion.signature.labels == digits


def test_a_decision_event_applies_once(backend: Backend) -> None:
    register(backend, backend.trained())
    event_id = new_id()
    assert decided(backend, 1, "promote", event_id=event_id, stage="champion") is not None
    assert decided(backend, 1, "promote", event_id=event_id, stage="champion") is None
    assert len(backend.rows(Evaluation)) == 1 and len(backend.rows(DeploymentHistory)) == 1


def test_decisions_that_cannot_apply_change_nothing(backend: Backend) -> None:
    with pytest.raises(ModelNotFound):
        decided(backend, 1, "promote")
    register(backend, backend.trained())
    event_id = new_id()
    with pytest.raises(VersionNotFound):
        decided(backend, 7, "promote", event_id=event_id)
    decided(backend, 1, "promote", stage="champion")
    with pytest.raises(DecisionNotApplicable):
        decided(backend, 1, "rollback")
    assert len(backend.rows(Evaluation)) == 1  # only the applied promote left a trace
    register(backend, backend.trained())
    assert decided(backend, 2, "reject", event_id=event_id) is not None  # the failed attempt claimed no id


def test_a_users_command_takes_the_same_path_and_is_credited(backend: Backend) -> None:
    register(backend, backend.trained())
    register(backend, backend.trained())
    decided(backend, 1, "promote", stage="champion")
    command = Decision(
        model_name="digits", kind="promote", reason="manual", actor="user:alice", version=2, canary_weight=0.5
    )
    outcome = handle_deployment_command(command, uow=backend.uow())
    assert outcome.after.challenger == 2 and outcome.after.canary_weight == 0.5
    last = backend.rows(DeploymentHistory)[-1]
    assert (last.actor, last.reason, last.source_event_id) == ("user:alice", "manual", None)
    assert published(backend, "ferry.deployment.changed.v1")[-1].actor == "user:alice"


def test_an_event_is_identified_by_source_and_id(backend: Backend) -> None:
    shared_id = new_id()
    assert register(backend, backend.trained(), shared_id, source="trainer-a") == 1
    assert register(backend, backend.trained(), shared_id, source="trainer-b") == 2  # another source: another event
    assert register(backend, backend.trained(), shared_id, source="trainer-a") is None  # (source, id) seen: a no-op
    assert [row.number for row in backend.rows(ModelVersion)] == [1, 2]
    registered = published(backend, "ferry.model.registered.v1")
    assert [event.version for event in registered] == [1, 2]  # and their announcements have distinct event ids
    assert decided(backend, 1, "promote", shared_id, source="evaluator-a", stage="champion") is not None
    assert decided(backend, 2, "promote", shared_id, source="evaluator-b", stage="champion") is not None
    assert decided(backend, 2, "promote", shared_id, source="evaluator-b", stage="champion") is None
    assert len(backend.rows(DeploymentHistory)) == 2 and len(backend.rows(Evaluation)) == 2
    with pytest.raises(PermanentError, match="non-empty ce_id"):
        register(backend, backend.trained(), "", source="trainer-a")
    assert len(backend.rows(ModelVersion)) == 2


def test_a_rejected_version_is_promoted_only_by_force_with_the_history_saying_so(backend: Backend) -> None:
    register(backend, backend.trained())
    register(backend, backend.trained())
    decided(backend, 1, "promote", stage="champion")
    decided(backend, 2, "reject")
    with pytest.raises(DecisionNotApplicable, match="version 2 was rejected; promoting it needs force"):
        decided(backend, 2, "promote", stage="champion")  # the evaluator's event can never force it
    command = Decision(
        model_name="digits",
        kind="promote",
        reason="the test set was wrong",
        actor="user:alice",
        version=2,
        stage="champion",
    )
    with pytest.raises(DecisionNotApplicable, match="needs force"):
        handle_deployment_command(command, uow=backend.uow())
    assert [row.status for row in backend.rows(ModelVersion)] == ["champion", "rejected"]
    forced = handle_deployment_command(Decision(**{**command.__dict__, "force": True}), uow=backend.uow())
    assert forced.after.champion == 2 and forced.forced
    last = backend.rows(DeploymentHistory)[-1]
    assert (last.action, last.forced, last.actor) == ("promote", True, "user:alice")
    assert last.reason == "the test set was wrong"
    assert [row.forced for row in backend.rows(DeploymentHistory)] == [False, True]
