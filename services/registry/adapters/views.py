"""The read side: queries behind the REST API. They read committed state and change nothing."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import ColumnElement, Select, Text, bindparam, cast, func, or_, select
from sqlalchemy.orm import Session

from services.registry.adapters.orm import (
    Deployment,
    DeploymentHistory,
    Evaluation,
    ModelAudit,
    ModelVersion,
    RegisteredModel,
    version_layout,
)
from services.registry.domain import ModelNotFound, VersionNotFound, VersionStatus


def model_by_name(session: Session, name: str) -> RegisteredModel:
    """The model, or ModelNotFound."""
    model = session.scalars(select(RegisteredModel).where(RegisteredModel.name == name)).one_or_none()
    if model is None:
        raise ModelNotFound(name)
    return model


def list_models(
    session: Session, *, after: str | None, limit: int, prefix: str | None = None
) -> list[tuple[RegisteredModel, Deployment | None]]:
    """Models by name, from just after ``after``, with their deployments; only names starting with ``prefix``."""
    query = select(RegisteredModel, Deployment).outerjoin(Deployment, Deployment.model_id == RegisteredModel.id)
    if prefix:
        query = query.where(RegisteredModel.name.startswith(prefix, autoescape=True))
    if after is not None:
        query = query.where(RegisteredModel.name > after)
    rows = session.execute(query.order_by(RegisteredModel.name).limit(limit)).all()
    return [(model, deployment) for model, deployment in rows]


def _versions_of(name: str) -> Select[ModelVersion]:
    model_id = select(RegisteredModel.id).where(RegisteredModel.name == name).scalar_subquery()
    return select(ModelVersion).where(ModelVersion.model_id == model_id)


def _document() -> ColumnElement[Any]:
    """One version as the API shows it (VersionOut's fields), built by PostgreSQL as JSON text.

    The two hottest reads send these documents as they come: no ORM objects, no JSON parsing, no
    re-serialising. The fields come from the one layout (orm.version_layout) that schemas.version_fields
    also follows; a test checks that every document validates as, and equals, the VersionOut built from
    the ORM row.
    """
    layout = version_layout()

    def value(column: str) -> Any:
        attribute = getattr(ModelVersion, column)
        return _utc_text(attribute) if column in layout.timestamps else attribute

    artifact = func.jsonb_build_object(*_pairs({name: value(column) for name, column in layout.artifact.items()}))
    fields = {"model_name": bindparam("model_name", type_=Text), "artifact": artifact}
    fields.update({name: value(column) for name, column in layout.fields.items()})
    return cast(func.jsonb_build_object(*_pairs(fields)), Text)


def _pairs(fields: dict[str, Any]) -> list[Any]:
    """jsonb_build_object's arguments: name, value, name, value, …"""
    return [item for name, value in fields.items() for item in (name, value)]


def _utc_text(column: Any) -> ColumnElement[str]:
    """A timestamp as the other endpoints print it (RFC 3339, UTC, ``Z``), not jsonb's ``+00:00``."""
    return func.to_char(func.timezone("UTC", column), 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')


@functools.cache
def _documents_query(*, by_status: bool, below: bool, one: bool) -> Select[int, str]:
    """The statement behind version_documents, built once per shape: it is large, and reads are hot."""
    # A scalar subquery, not a join: the planner then walks the (model_id, number) index backwards
    # for "newest first" pages instead of sorting every version of the model.
    model_id = select(RegisteredModel.id).where(RegisteredModel.name == bindparam("model_name")).scalar_subquery()
    query = select(ModelVersion.number, _document()).where(ModelVersion.model_id == model_id)
    if one:
        return query.where(ModelVersion.number == bindparam("number"))
    if by_status:
        query = query.where(ModelVersion.status == bindparam("status"))
    if below:
        query = query.where(ModelVersion.number < bindparam("before"))
    return query.order_by(ModelVersion.number.desc()).limit(bindparam("limit"))


def version_documents(
    session: Session, name: str, *, status: VersionStatus | None, before: int | None, limit: int
) -> list[tuple[int, str]]:
    """A page of a model's versions, newest first, below ``before``: (number, JSON document); ModelNotFound."""
    query = _documents_query(by_status=status is not None, below=before is not None, one=False)
    values = {"model_name": name, "status": status, "before": before, "limit": limit}
    rows = [(number, document) for number, document in session.execute(query, values)]
    if not rows:
        model_by_name(session, name)  # an empty page of a model, or no such model?
    return rows


def version_document(session: Session, name: str, number: int) -> str:
    """One version as a JSON document, or ModelNotFound / VersionNotFound."""
    query = _documents_query(by_status=False, below=False, one=True)
    row = session.execute(query, {"model_name": name, "number": number}).one_or_none()
    if row is None:
        model_by_name(session, name)
        raise VersionNotFound(name, number)
    return str(row[1])


def get_version(session: Session, name: str, number: int) -> ModelVersion:
    """One version of a model (one query), or ModelNotFound / VersionNotFound."""
    version = session.scalars(_versions_of(name).where(ModelVersion.number == number)).one_or_none()
    if version is None:
        model_by_name(session, name)
        raise VersionNotFound(name, number)
    return version


def list_evaluations(session: Session, model_id: int, number: int, *, limit: int) -> list[Evaluation]:
    """Evaluations of one version as the candidate, newest first."""
    query = (
        select(Evaluation)
        .where(Evaluation.model_id == model_id, Evaluation.candidate_version == number)
        .order_by(Evaluation.id.desc())
        .limit(limit)
    )
    return list(session.scalars(query))


def get_deployment(session: Session, model: RegisteredModel) -> Deployment | None:
    return session.get(Deployment, model.id)


def list_history(
    session: Session,
    model_id: int,
    *,
    before: int | None = None,
    limit: int,
    version: int | None = None,
) -> list[DeploymentHistory]:
    """Deployment changes newest first; with ``version``, only those that moved that version."""
    query = select(DeploymentHistory).where(DeploymentHistory.model_id == model_id)
    if before is not None:
        query = query.where(DeploymentHistory.revision < before)
    if version is not None:
        query = query.where(
            or_(
                DeploymentHistory.from_champion == version,
                DeploymentHistory.to_champion == version,
                DeploymentHistory.from_challenger == version,
                DeploymentHistory.to_challenger == version,
            )
        )
    return list(session.scalars(query.order_by(DeploymentHistory.revision.desc()).limit(limit)))


def list_audit(session: Session, model_id: int, *, before: int | None, limit: int) -> list[ModelAudit]:
    """Edits and archives of a model and its versions, newest first, below the entry ``before``."""
    query = select(ModelAudit).where(ModelAudit.model_id == model_id)
    if before is not None:
        query = query.where(ModelAudit.id < before)
    return list(session.scalars(query.order_by(ModelAudit.id.desc()).limit(limit)))
