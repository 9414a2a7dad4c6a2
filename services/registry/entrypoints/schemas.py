"""The REST API's request and response bodies, and its opaque pagination cursors."""

from __future__ import annotations

import base64
import binascii
import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from services.registry.adapters.orm import (
    Deployment,
    DeploymentHistory,
    Evaluation,
    ModelVersion,
    RegisteredModel,
    version_layout,
)
from services.registry.domain import VersionStatus
from shared.events import MODEL_NAME_PATTERN, ArtifactRef, Signature

MAX_INT32 = 2**31 - 1
VersionNumber = Annotated[int, Field(ge=1, le=MAX_INT32)]


def _storable(text: str) -> str:
    """PostgreSQL text holds neither NUL characters nor lone surrogates: refuse them at the edge."""
    if "\x00" in text:
        raise ValueError("must not contain NUL characters")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError("must be valid Unicode text") from error
    return text


Reason = Annotated[str, Field(min_length=1, max_length=2000), AfterValidator(_storable)]


class InvalidCursor(ValueError):
    """A pagination cursor that this API did not hand out."""


def _encode(tag: str, value: str) -> str:
    return base64.urlsafe_b64encode(f"{tag}{value}".encode()).decode().rstrip("=")


def _decode(cursor: str, tag: str) -> str:
    """The value inside a cursor of this kind (``tag``); InvalidCursor when it is not one of ours."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeError, ValueError) as error:
        raise InvalidCursor("invalid cursor") from error
    if not text.startswith(tag):
        raise InvalidCursor("invalid cursor")
    return text[len(tag) :]


def encode_cursor(position: int) -> str:
    """An opaque cursor for the page after ``position``."""
    return _encode("p", str(position))


def decode_cursor(cursor: str) -> int:
    """The position a cursor stands for; InvalidCursor when it is not one of ours."""
    value = _decode(cursor, "p")
    if not value.isdigit() or len(value) > 11:
        raise InvalidCursor("invalid cursor")
    return int(value)


def encode_name_cursor(name: str) -> str:
    """An opaque cursor for the page after the model ``name``."""
    return _encode("n", name)


def decode_name_cursor(cursor: str) -> str:
    """The model name a cursor stands for; InvalidCursor when it is not one of ours."""
    value = _decode(cursor, "n")
    if not re.fullmatch(MODEL_NAME_PATTERN, value):
        raise InvalidCursor("invalid cursor")
    return value


class Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class ErrorOut(Out):
    error: str


class ValidationErrorOut(Out):
    error: str
    detail: list[dict[str, Any]]


class ModelOut(Out):
    name: str
    description: str
    tags: dict[str, Any]
    latest_version: int
    champion: int | None
    challenger: int | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, model: RegisteredModel, deployment: Deployment | None) -> ModelOut:
        return cls(
            name=model.name,
            description=model.description,
            tags=model.tags,
            latest_version=model.latest_version,
            champion=deployment.champion_version if deployment else None,
            challenger=deployment.challenger_version if deployment else None,
            created_at=model.created_at,
            updated_at=model.updated_at,
        )


class ModelPage(Out):
    items: list[ModelOut]
    next_cursor: str | None = Field(description="pass as ?cursor= for the next page; null on the last page")


class VersionOut(Out):
    model_name: str
    version: int
    status: VersionStatus
    artifact: ArtifactRef
    signature: Signature
    metrics: dict[str, float]
    dataset: str
    split_id: str
    arch: str
    hyperparameters: dict[str, Any]
    compression: dict[str, Any]
    timings: dict[str, float]
    training_request_id: str | None
    parent_model: str | None
    parent_version: int | None
    source_event_id: str | None
    tags: dict[str, Any]
    created_at: datetime
    updated_at: datetime


def version_fields(model_name: str, version: ModelVersion) -> dict[str, Any]:
    """A VersionOut's fields as plain data, following the one layout (orm.version_layout) the views use too."""
    layout = version_layout()
    fields: dict[str, Any] = {name: getattr(version, column) for name, column in layout.fields.items()}
    fields["artifact"] = {name: getattr(version, column) for name, column in layout.artifact.items()}
    fields["model_name"] = model_name
    return fields


class VersionPage(Out):
    items: list[VersionOut]
    next_cursor: str | None


class EvaluationOut(Out):
    candidate_version: int
    baseline_version: int | None
    metrics: dict[str, float]
    baseline_metrics: dict[str, float]
    decision: str
    stage: str | None
    canary_weight: float | None
    reason: str
    actor: str
    source_event_id: str | None
    created_at: datetime
    report: dict[str, Any] = Field(default_factory=dict, description="the evaluator's whole report")

    @classmethod
    def of(cls, evaluation: Evaluation) -> EvaluationOut:
        fields = cls.model_fields.keys()
        return cls(**{name: getattr(evaluation, name) for name in fields})


class DeploymentOut(Out):
    model_name: str
    champion: int | None
    challenger: int | None
    canary_weight: float
    shadow: bool
    revision: int
    updated_at: datetime | None

    @classmethod
    def of(cls, model_name: str, deployment: Deployment | None) -> DeploymentOut:
        if deployment is None:
            return cls(
                model_name=model_name,
                champion=None,
                challenger=None,
                canary_weight=0.0,
                shadow=False,
                revision=0,
                updated_at=None,
            )
        return cls(
            model_name=model_name,
            champion=deployment.champion_version,
            challenger=deployment.challenger_version,
            canary_weight=deployment.canary_weight,
            shadow=deployment.shadow,
            revision=deployment.revision,
            updated_at=deployment.updated_at,
        )


class DeploymentChangeOut(DeploymentOut):
    changed: bool = Field(description="false when the deployment already was as asked (no new revision)")


class HistoryEntryOut(Out):
    revision: int
    action: str
    from_champion: int | None
    to_champion: int | None
    from_challenger: int | None
    to_challenger: int | None
    from_canary_weight: float
    to_canary_weight: float
    shadow: bool
    actor: str
    reason: str
    source_event_id: str | None
    created_at: datetime
    forced: bool = Field(
        description="a rejected or rolled-back version promoted by hand with force (the reason says why)"
    )

    @classmethod
    def of(cls, entry: DeploymentHistory) -> HistoryEntryOut:
        return cls(**{name: getattr(entry, name) for name in cls.model_fields})


class HistoryPage(Out):
    items: list[HistoryEntryOut]
    next_cursor: str | None


class TrainingOut(Out):
    """Where a version came from: a subset of VersionOut's fields, ``training_request_id`` as ``request_id``."""

    request_id: str | None
    dataset: str
    split_id: str
    arch: str
    hyperparameters: dict[str, Any]
    compression: dict[str, Any]
    timings: dict[str, float]
    parent_model: str | None
    parent_version: int | None
    source_event_id: str | None

    @classmethod
    def of(cls, version: ModelVersion) -> TrainingOut:
        return cls(**{name: getattr(version, TRAINING_RENAMES.get(name, name)) for name in cls.model_fields})


TRAINING_RENAMES = {"request_id": "training_request_id"}


class LineageOut(Out):
    """Where a version came from and where it went: training request → artifact → evaluations → deployments."""

    model_name: str
    version: int
    status: VersionStatus
    training: TrainingOut
    artifact: ArtifactRef
    signature: Signature
    metrics: dict[str, float]
    evaluations: list[EvaluationOut]
    deployments: list[HistoryEntryOut]


# --- write requests ------------------------------------------------------------------------------


class PromoteAction(BaseModel):
    """Promote a version: with a canary weight (or stage=canary) it becomes the challenger, else the champion."""

    model_config = ConfigDict(extra="forbid")
    action: Literal["promote"]
    version: VersionNumber
    stage: Literal["canary", "champion"] | None = None
    canary_weight: float | None = Field(default=None, ge=0, le=1)
    shadow: bool | None = Field(default=None, description="mirror traffic to the challenger; default: weight == 0")
    force: bool = Field(
        default=False, description="promote a rejected or rolled-back version all the same (recorded in the history)"
    )
    reason: Reason


class SetCanaryWeightAction(BaseModel):
    """Change the share of traffic the challenger gets."""

    model_config = ConfigDict(extra="forbid")
    action: Literal["set_canary_weight"]
    canary_weight: float = Field(ge=0, le=1)
    shadow: bool | None = None
    reason: Reason


class RollbackAction(BaseModel):
    """Roll a version back: the challenger is withdrawn, or the champion replaced by the previous one."""

    model_config = ConfigDict(extra="forbid")
    action: Literal["rollback"]
    version: VersionNumber | None = Field(default=None, description="default: the current champion")
    reason: Reason


DeploymentAction = Annotated[PromoteAction | SetCanaryWeightAction | RollbackAction, Field(discriminator="action")]
