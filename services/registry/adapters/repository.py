"""The write side of the registry's database: a repository and a unit of work over one transaction."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

from opentelemetry import propagate
from sqlalchemy import func, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from services.registry.adapters import statements
from services.registry.adapters.orm import (
    Deployment,
    DeploymentHistory,
    Evaluation,
    ModelAudit,
    ModelVersion,
    OutboxMessage,
    RegisteredModel,
)
from services.registry.domain import ModelNotFound
from shared.errors import PermanentError, TransientError
from shared.events import Event, utc_now
from shared.faults import fault_point

log = logging.getLogger(__name__)
T = TypeVar("T")

AFTER_COMMIT = "registry.after_commit"
"""Fault point: a change and its outbox rows are committed; the relay was not told, the offset not committed."""
UNIQUE_VIOLATION = "23505"
RETRYABLE_STATES = {"40001", "40P01"}  # serialization failure, deadlock detected


class Repository(Protocol):
    """What the handlers need of storage; the SQL one and the in-memory fake both provide it."""

    def lock_model(self, name: str, *, create: bool) -> RegisteredModel: ...
    def next_version_number(self, name: str) -> tuple[int, int]: ...
    def claim_event(self, source: str, event_id: str, type_name: str) -> bool: ...
    def add_version(self, version: ModelVersion) -> bool: ...
    def version_number_by_request(self, model_id: int, request_id: str, sha256: str) -> int | None: ...
    def versions(self, model: RegisteredModel, numbers: Iterable[int]) -> dict[int, ModelVersion]: ...
    def deployment(self, model: RegisteredModel) -> Deployment: ...
    def former_champions(self, model: RegisteredModel) -> list[int]: ...
    def add_evaluation(self, evaluation: Evaluation) -> None: ...
    def add_history(self, entry: DeploymentHistory) -> None: ...
    def add_outbox(self, event: Event, event_id: str) -> None: ...
    def add_audit(self, entry: ModelAudit) -> None: ...


class UnitOfWork(Protocol):
    """One transaction: ``with uow: ... uow.commit()``; leaving without commit rolls back."""

    @property
    def repo(self) -> Repository: ...

    def __enter__(self) -> Self: ...
    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None: ...
    def commit(self) -> None: ...


def new_model(name: str) -> RegisteredModel:
    """A model row with every column set, so that fakes and the database agree."""
    now = utc_now()
    return RegisteredModel(name=name, description="", tags={}, latest_version=0, created_at=now, updated_at=now)


def new_deployment(model_id: int) -> Deployment:
    return Deployment(
        model_id=model_id,
        champion_version=None,
        challenger_version=None,
        canary_weight=0.0,
        shadow=False,
        revision=0,
        updated_at=utc_now(),
    )


def outbox_values(event: Event, event_id: str) -> dict[str, Any]:
    """The columns of the outbox row that will carry ``event`` to its topic, in the trace of the change."""
    return {
        "event_id": event_id,
        "type_name": event.type_name,
        "topic": event.topic,
        "partition_key": event.partition_key(),
        "payload": event.model_dump(mode="json"),
        "created_at": utc_now(),
        "sent_at": None,
        "attempts": 0,
        "last_error": None,
        "status": "pending",
        "traceparent": active_traceparent(),
    }


def active_traceparent() -> str | None:
    """The W3C traceparent of the span in progress (a consumed event's, an HTTP request's), or None."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def check_event_identity(source: str, event_id: str) -> None:
    """An event is identified by (source, id); a blank one could never be told apart from the next."""
    if not event_id.strip() or not source.strip():
        raise PermanentError("an event needs a non-empty ce_id and ce_source to be applied exactly once")


def outbox_message(event: Event, event_id: str) -> OutboxMessage:
    """The outbox row that will carry ``event`` to its topic."""
    return OutboxMessage(**outbox_values(event, event_id))


class SqlRepository:
    """The repository on a SQLAlchemy session; the caller's unit of work owns the transaction."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def lock_model(self, name: str, *, create: bool) -> RegisteredModel:
        """The model row, locked FOR UPDATE until commit: every writer of a model queues here."""
        model = self._select_for_update(name)
        if model is None and create:
            row = new_model(name)
            values = {
                column: getattr(row, column)
                for column in ("name", "description", "tags", "latest_version", "created_at", "updated_at")
            }
            statement = insert(RegisteredModel).values(**values).on_conflict_do_nothing(index_elements=["name"])
            model_id = self.session.execute(statement.returning(RegisteredModel.id)).scalar()
            if model_id is not None:
                self.session.add(new_deployment(model_id))
            model = self._select_for_update(name)
        if model is None:
            raise ModelNotFound(name)
        return model

    def _select_for_update(self, name: str) -> RegisteredModel | None:
        query = select(RegisteredModel).where(RegisteredModel.name == name).with_for_update()
        return self.session.scalars(query).one_or_none()

    def next_version_number(self, name: str) -> tuple[int, int]:
        """Lock the model row (made on first use) and take its next version number: (model id, number).

        One UPDATE both locks and counts; a transaction that rolls back gives its number back.
        """
        values = {"model_name": name, "now": utc_now()}
        row = self.session.execute(statements.take_version_number(), values).first()
        if row is None:
            self.lock_model(name, create=True)
            row = self.session.execute(statements.take_version_number(), values).one()
        return int(row[0]), int(row[1])

    def claim_event(self, source: str, event_id: str, type_name: str) -> bool:
        """Record the event (source, id) as applied in this transaction; False when it already was."""
        check_event_identity(source, event_id)
        values = {"source": source, "event_id": event_id, "type_name": type_name, "applied_at": utc_now()}
        return self.session.connection().execute(statements.claim_event(), values).first() is not None

    def add_version(self, version: ModelVersion) -> bool:
        """Insert a numbered version; False when the model already has this request's artifact."""
        values = statements.row_values(version)
        return self.session.connection().execute(statements.insert_version(), values).first() is not None

    def version_number_by_request(self, model_id: int, request_id: str, sha256: str) -> int | None:
        query = select(ModelVersion.number).where(
            ModelVersion.model_id == model_id,
            ModelVersion.training_request_id == request_id,
            ModelVersion.artifact_sha256 == sha256,
        )
        return self.session.scalars(query).first()

    def versions(self, model: RegisteredModel, numbers: Iterable[int]) -> dict[int, ModelVersion]:
        wanted = set(numbers)
        if not wanted:
            return {}
        query = select(ModelVersion).where(ModelVersion.model_id == model.id, ModelVersion.number.in_(wanted))
        return {version.number: version for version in self.session.scalars(query)}

    def deployment(self, model: RegisteredModel) -> Deployment:
        found = self.session.get(Deployment, model.id)
        if found is None:  # a model row without its deployment row cannot be made by this code
            found = new_deployment(model.id)
            self.session.add(found)
        return found

    def former_champions(self, model: RegisteredModel) -> list[int]:
        """Versions that were champion before a change, the most recently replaced first."""
        last_change = func.max(DeploymentHistory.id)
        query = (
            select(DeploymentHistory.from_champion)
            .where(
                DeploymentHistory.model_id == model.id,
                DeploymentHistory.from_champion.is_not(None),
                DeploymentHistory.from_champion.is_distinct_from(DeploymentHistory.to_champion),
            )
            .group_by(DeploymentHistory.from_champion)
            .order_by(last_change.desc())
        )
        return [number for number in self.session.scalars(query) if number is not None]

    def add_evaluation(self, evaluation: Evaluation) -> None:
        self.session.add(evaluation)

    def add_history(self, entry: DeploymentHistory) -> None:
        self.session.add(entry)

    def add_outbox(self, event: Event, event_id: str) -> None:
        self.session.connection().execute(statements.insert_outbox(), outbox_values(event, event_id))

    def add_audit(self, entry: ModelAudit) -> None:
        self.session.add(entry)


class SqlUnitOfWork:
    """A session and its transaction; ``after_commit`` runs once the commit succeeded (wakes the relay)."""

    def __init__(self, session_factory: sessionmaker[Session], after_commit: Callable[[], None] | None = None) -> None:
        self._session_factory = session_factory
        self._after_commit = after_commit

    def __enter__(self) -> Self:
        self.session = self._session_factory()
        self.repo = SqlRepository(self.session)
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.session.rollback()
        self.session.close()

    def commit(self) -> None:
        self.session.commit()
        fault_point(AFTER_COMMIT)
        if self._after_commit is not None:
            self._after_commit()


def _sqlstate(error: BaseException) -> str | None:
    return getattr(getattr(error, "orig", None), "sqlstate", None)


def retry_conflicts(action: Callable[[], T], *, attempts: int = 8, backoff_s: float = 0.01) -> T:
    """Run ``action``, again when it lost a race: unique violations, serialization failures, deadlocks.

    A unique violation that survives every attempt is no race but a contradiction: PermanentError.
    A serialization failure or deadlock that does is a TransientError (retried later, never dead-lettered).
    """
    for attempt in range(1, attempts + 1):
        try:
            return action()
        except IntegrityError as error:
            if _sqlstate(error) != UNIQUE_VIOLATION:
                raise
            if attempt == attempts:
                message = f"unique constraint still violated after {attempts} attempts: {error.orig}"
                raise PermanentError(message) from error
            log.info("lost a race (unique violation), retrying: %s", error.orig)
        except OperationalError as error:
            if _sqlstate(error) not in RETRYABLE_STATES:
                raise
            if attempt == attempts:
                raise TransientError(f"conflict persisted after {attempts} attempts: {error.orig}") from error
            log.info("transaction conflict, retrying: %s", error.orig)
        time.sleep(backoff_s * attempt)
    raise AssertionError("unreachable")
