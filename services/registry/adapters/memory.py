"""An in-memory repository and unit of work: the fake that unit tests pass instead of PostgreSQL.

It keeps the same ORM objects the SQL repository returns (never attached to a session) and gives the
same guarantees the handlers rely on: numbering under the model "lock", event-id claims, and
all-or-nothing commits (a unit of work left without commit restores the state it started from).
"""

from __future__ import annotations

import copy
import itertools
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

from services.registry.adapters.orm import (
    Deployment,
    DeploymentHistory,
    Evaluation,
    ModelAudit,
    ModelVersion,
    OutboxMessage,
    RegisteredModel,
)
from services.registry.adapters.repository import check_event_identity, new_deployment, new_model, outbox_message
from services.registry.domain import ModelNotFound
from shared.events import Event


@dataclass
class MemoryState:
    """Everything the fake database holds."""

    models: dict[str, RegisteredModel] = field(default_factory=dict)
    versions: dict[tuple[int, int], ModelVersion] = field(default_factory=dict)
    deployments: dict[int, Deployment] = field(default_factory=dict)
    evaluations: list[Evaluation] = field(default_factory=list)
    history: list[DeploymentHistory] = field(default_factory=list)
    outbox: list[OutboxMessage] = field(default_factory=list)
    applied: set[tuple[str, str]] = field(default_factory=set)
    audit: list[ModelAudit] = field(default_factory=list)


class MemoryRepository:
    """The Repository protocol over a MemoryState."""

    def __init__(self, state: MemoryState, ids: Iterable[int]) -> None:
        self.state = state
        self._ids = iter(ids)

    def lock_model(self, name: str, *, create: bool) -> RegisteredModel:
        model = self.state.models.get(name)
        if model is None and create:
            model = new_model(name)
            model.id = next(self._ids)
            self.state.models[name] = model
            self.state.deployments[model.id] = new_deployment(model.id)
        if model is None:
            raise ModelNotFound(name)
        return model

    def claim_event(self, source: str, event_id: str, type_name: str) -> bool:
        check_event_identity(source, event_id)
        if (source, event_id) in self.state.applied:
            return False
        self.state.applied.add((source, event_id))
        return True

    def next_version_number(self, name: str) -> tuple[int, int]:
        model = self.lock_model(name, create=True)
        model.latest_version += 1
        return model.id, model.latest_version

    def add_version(self, version: ModelVersion) -> bool:
        if self.version_number_by_request(version.model_id, version.training_request_id or "", version.artifact_sha256):
            return False
        version.id = next(self._ids)
        self.state.versions[(version.model_id, version.number)] = version
        return True

    def version_number_by_request(self, model_id: int, request_id: str, sha256: str) -> int | None:
        for (owner, number), version in sorted(self.state.versions.items()):
            if owner == model_id and (version.training_request_id, version.artifact_sha256) == (request_id, sha256):
                return number
        return None

    def versions(self, model: RegisteredModel, numbers: Iterable[int]) -> dict[int, ModelVersion]:
        found = {number: self.state.versions.get((model.id, number)) for number in numbers}
        return {number: version for number, version in found.items() if version is not None}

    def deployment(self, model: RegisteredModel) -> Deployment:
        return self.state.deployments[model.id]

    def former_champions(self, model: RegisteredModel) -> list[int]:
        ordered: list[int] = []
        for entry in reversed(self.state.history):
            replaced = entry.from_champion
            if replaced is None or entry.model_id != model.id or replaced == entry.to_champion:
                continue
            if replaced not in ordered:
                ordered.append(replaced)
        return ordered

    def add_evaluation(self, evaluation: Evaluation) -> None:
        self.state.evaluations.append(evaluation)

    def add_history(self, entry: DeploymentHistory) -> None:
        self.state.history.append(entry)

    def add_outbox(self, event: Event, event_id: str) -> None:
        message = outbox_message(event, event_id)
        message.id = next(self._ids)
        self.state.outbox.append(message)

    def add_audit(self, entry: ModelAudit) -> None:
        entry.id = next(self._ids)
        self.state.audit.append(entry)


class MemoryDatabase:
    """Shared fake storage; ``uow()`` hands out units of work over it, serialised by one lock."""

    def __init__(self, after_commit: Callable[[], None] | None = None) -> None:
        self.state = MemoryState()
        self.lock = threading.RLock()
        self.ids = itertools.count(1)
        self.after_commit = after_commit
        self.commits = 0

    def uow(self) -> MemoryUnitOfWork:
        return MemoryUnitOfWork(self)


class MemoryUnitOfWork:
    """All-or-nothing over the fake: a snapshot on entry is restored unless ``commit`` ran."""

    def __init__(self, database: MemoryDatabase) -> None:
        self._database = database

    def __enter__(self) -> Self:
        self._database.lock.acquire()
        self._snapshot = copy.deepcopy(self._database.state)
        self.repo = MemoryRepository(self._database.state, self._database.ids)
        self._committed = False
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        try:
            if not self._committed:
                self._database.state.__dict__.update(self._snapshot.__dict__)
        finally:
            self._database.lock.release()

    def commit(self) -> None:
        self._committed = True
        self._snapshot = copy.deepcopy(self._database.state)
        self._database.commits += 1
        if self._database.after_commit is not None:
            self._database.after_commit()


@dataclass(frozen=True)
class SentMessage:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


class _Acked:
    """A send future that is already acked."""

    def get(self, timeout: float | None = None) -> None:
        return None


class ListSender:
    """The outbox relay's sender without a broker (the bench's --no-kafka, API-only processes): keeps what it sent."""

    def __init__(self) -> None:
        self.messages: list[SentMessage] = []

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None, headers: Any = None) -> _Acked:
        self.messages.append(SentMessage(topic, key, value, list(headers or [])))
        return _Acked()

    def close(self, timeout: float | None = None) -> None:
        """Nothing to release."""
