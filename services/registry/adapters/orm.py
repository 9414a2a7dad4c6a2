"""The registry's tables as SQLAlchemy 2 typed mapped classes.

Alembic owns the schema (migrations/); these classes mirror it, and a test checks that they agree.
CHECK constraints and the append-only trigger live in the migrations only.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Identity,
    Index,
    Integer,
    MetaData,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

Json = dict[str, Any]

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {Json: JSONB, datetime: DateTime(timezone=True)}


class RegisteredModel(Base):
    """A model name and what is known of it; ``latest_version`` numbers the next version."""

    __tablename__ = "registered_models"

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    tags: Mapped[Json] = mapped_column(default=dict)
    latest_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class ModelVersion(Base):
    """One registered artifact of a model, numbered from 1."""

    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("model_id", "number", name="uq_model_versions_model_number"),
        Index("ix_model_versions_model_status_number", "model_id", "status", "number"),
        Index(
            "uq_model_versions_request_artifact",
            "model_id",
            "training_request_id",
            "artifact_sha256",
            unique=True,
            postgresql_where=text("training_request_id IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("registered_models.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(Text)
    artifact_uri: Mapped[str] = mapped_column(Text)
    artifact_sha256: Mapped[str] = mapped_column(Text)
    artifact_size_bytes: Mapped[int] = mapped_column(BigInteger)
    artifact_format: Mapped[str] = mapped_column(Text)
    signature: Mapped[Json]
    metrics: Mapped[Json]
    dataset: Mapped[str] = mapped_column(Text)
    split_id: Mapped[str] = mapped_column(Text)
    arch: Mapped[str] = mapped_column(Text)
    hyperparameters: Mapped[Json]
    compression: Mapped[Json]
    timings: Mapped[Json]
    training_request_id: Mapped[str | None] = mapped_column(Text)
    parent_model: Mapped[str | None] = mapped_column(Text)
    parent_version: Mapped[int | None] = mapped_column(Integer)
    source_event_id: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[Json]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    description: Mapped[str] = mapped_column(Text, default="")
    slices: Mapped[list[Any]] = mapped_column(JSONB, default=list)
    """The training request's named feature ranges, which the evaluator guards (FeatureSlice each)."""
    input_reference: Mapped[Json | None] = mapped_column(default=None)
    cause: Mapped[Json | None] = mapped_column(default=None)
    """The alert that asked for this version's training (RetrainCause), or null for a request of a person's."""


def version_columns() -> tuple[str, ...]:
    """The columns of ``model_versions``, in table order."""
    return tuple(column.key for column in ModelVersion.__table__.columns)


@dataclass(frozen=True)
class VersionLayout:
    """How the API shows a version's columns: the one mapping the views, schemas and handler derive from.

    Every column is public under its own name but ``id`` and ``model_id`` (internal), ``number`` (shown as
    ``version``) and the ``artifact_*`` columns (shown as the ``artifact`` object). The API adds ``model_name``.
    """

    fields: dict[str, str]
    """Top-level API field → column."""
    artifact: dict[str, str]
    """Field of the ``artifact`` object → column."""
    timestamps: frozenset[str]
    """Columns that are times (the API prints them in RFC 3339, UTC)."""


INTERNAL_VERSION_COLUMNS = ("id", "model_id")
RENAMED_VERSION_COLUMNS = {"number": "version"}
ARTIFACT_PREFIX = "artifact_"


@functools.cache
def version_layout() -> VersionLayout:
    """The API's layout over ``model_versions``, derived from the table."""
    fields: dict[str, str] = {}
    artifact: dict[str, str] = {}
    for column in ModelVersion.__table__.columns:
        if column.key in INTERNAL_VERSION_COLUMNS:
            continue
        if column.key.startswith(ARTIFACT_PREFIX):
            artifact[column.key.removeprefix(ARTIFACT_PREFIX)] = column.key
        else:
            fields[RENAMED_VERSION_COLUMNS.get(column.key, column.key)] = column.key
    timestamps = frozenset(column.key for column in ModelVersion.__table__.columns if isinstance(column.type, DateTime))
    return VersionLayout(fields, artifact, timestamps)


class Evaluation(Base):
    """The evaluator's report on a candidate against a baseline, and what it decided."""

    __tablename__ = "evaluations"
    __table_args__ = (Index("ix_evaluations_model_candidate", "model_id", "candidate_version"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("registered_models.id", ondelete="CASCADE"))
    candidate_version: Mapped[int] = mapped_column(Integer)
    baseline_version: Mapped[int | None] = mapped_column(Integer)
    metrics: Mapped[Json]
    baseline_metrics: Mapped[Json]
    decision: Mapped[str] = mapped_column(Text)
    stage: Mapped[str | None] = mapped_column(Text)
    canary_weight: Mapped[float | None] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(Text)
    source_event_id: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    report: Mapped[Json] = mapped_column(default=dict)
    """The evaluator's whole report (both models, the test, the policy); empty for a user's decision."""


class Deployment(Base):
    """What a model serves now; ``revision`` grows by one with every change."""

    __tablename__ = "deployments"
    __table_args__ = (
        ForeignKeyConstraint(
            ["model_id", "champion_version"],
            ["model_versions.model_id", "model_versions.number"],
            name="fk_deployments_champion",
        ),
        ForeignKeyConstraint(
            ["model_id", "challenger_version"],
            ["model_versions.model_id", "model_versions.number"],
            name="fk_deployments_challenger",
        ),
    )

    model_id: Mapped[int] = mapped_column(ForeignKey("registered_models.id", ondelete="CASCADE"), primary_key=True)
    champion_version: Mapped[int | None] = mapped_column(Integer)
    challenger_version: Mapped[int | None] = mapped_column(Integer)
    canary_weight: Mapped[float] = mapped_column(Float, default=0.0)
    shadow: Mapped[bool] = mapped_column(Boolean, default=False)
    revision: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime]


class DeploymentHistory(Base):
    """One deployment change, append-only: from what to what, by whom, why, from which event."""

    __tablename__ = "deployment_history"
    __table_args__ = (UniqueConstraint("model_id", "revision", name="uq_deployment_history_model_revision"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("registered_models.id", ondelete="CASCADE"))
    revision: Mapped[int] = mapped_column(Integer)
    action: Mapped[str] = mapped_column(Text)
    from_champion: Mapped[int | None] = mapped_column(Integer)
    to_champion: Mapped[int | None] = mapped_column(Integer)
    from_challenger: Mapped[int | None] = mapped_column(Integer)
    to_challenger: Mapped[int | None] = mapped_column(Integer)
    from_canary_weight: Mapped[float] = mapped_column(Float)
    to_canary_weight: Mapped[float] = mapped_column(Float)
    shadow: Mapped[bool] = mapped_column(Boolean)
    actor: Mapped[str] = mapped_column(Text)
    reason: Mapped[str] = mapped_column(Text)
    source_event_id: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    forced: Mapped[bool] = mapped_column(Boolean, default=False)
    """A rejected version promoted by hand with ``force`` (the reason says why)."""


class ModelAudit(Base):
    """One edit or archive of a model or a version, append-only: who, what changed (from → to), when.

    Kept apart from DeploymentHistory, whose rows are deployment revisions: an edit routes nothing.
    """

    __tablename__ = "model_audit"
    __table_args__ = (Index("ix_model_audit_model_id_id", "model_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("registered_models.id", ondelete="CASCADE"))
    version: Mapped[int | None] = mapped_column(Integer)
    """The version edited or archived; None for an edit of the model itself."""
    action: Mapped[str] = mapped_column(Text)
    changes: Mapped[Json]
    """Field → {"from": …, "to": …}; tags as ``tags.<key>`` (a removed tag's ``to`` is null)."""
    actor: Mapped[str] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]


class OutboxMessage(Base):
    """An event waiting to be published (status ``pending``), published (``sent``), or parked as ``failed``:
    a row that can never be published (too large for its topic, an invalid payload), with ``last_error``."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_pending", "id", postgresql_where=text("status = 'pending'")),
        Index("ix_outbox_failed", "id", postgresql_where=text("status = 'failed'")),
        Index("ix_outbox_sent_at", "sent_at", postgresql_where=text("sent_at IS NOT NULL")),
    )

    id: Mapped[int] = mapped_column(BigInteger, Identity(), primary_key=True)
    event_id: Mapped[str] = mapped_column(Text, unique=True)
    type_name: Mapped[str] = mapped_column(Text)
    topic: Mapped[str] = mapped_column(Text)
    partition_key: Mapped[str] = mapped_column(Text)
    payload: Mapped[Json]
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, default="pending")
    traceparent: Mapped[str | None] = mapped_column(Text)
    """The W3C trace the change was made in (a consumed event's or an HTTP request's): the event continues it."""


class AppliedEvent(Base):
    """An event, identified as CloudEvents does by (source, id), whose effect is committed: applying it again
    is a no-op."""

    __tablename__ = "applied_events"

    source: Mapped[str] = mapped_column(Text, primary_key=True)
    event_id: Mapped[str] = mapped_column(Text, primary_key=True)
    type_name: Mapped[str] = mapped_column(Text)
    applied_at: Mapped[datetime]
