"""The registry's REST bodies: what ``/api/v1`` answers and what its writes accept.

One set of classes for both sides: the registry's routes answer with them and the registry client
(``shared.registry_client``) reads its answers into them, so a field cannot mean one thing to the
server and another to its callers. Responses ignore fields they do not know (a newer registry may
add some); requests forbid them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from shared.events import INT32_MAX, ArtifactRef, FeatureSlice, InputReference, RetrainCause, Signature

VersionStatus = Literal["registered", "evaluating", "challenger", "champion", "rejected", "archived", "rolled_back"]
VersionNumber = Annotated[int, Field(ge=1, le=INT32_MAX)]


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
    description: str = ""
    slices: list[FeatureSlice] = Field(
        default_factory=list, description="feature ranges the training request asked the evaluator to guard"
    )
    input_reference: InputReference | None = Field(
        default=None, description="the training split's per-feature bins (input drift's reference); null if none"
    )
    cause: RetrainCause | None = Field(
        default=None,
        description="the alert that asked for this version's training and the production window it added; null "
        "when a person or a program asked",
    )

    def validation_summary(self) -> str | None:
        """What the trainer measured on validation rows, for the version's task, as a person reads it:
        ``accuracy 0.9703`` for a classifier, ``RMSE 51.3785 · R² 0.5781`` for a regressor; None when the version
        has none of them (an upload's metrics are its owner's, under names of their own). ``ferry versions`` and
        the console's versions table both show this."""
        shown = VALIDATION_METRICS[self.signature.task or "classification"]
        found = [f"{name} {self.metrics[key]:.4f}" for name, key in shown if key in self.metrics]
        return " · ".join(found) or None

    def cause_summary(self) -> str | None:
        """Why this version was trained, when an alert asked: ``alert InputDrift on v1 (id 3f2c…), +300
        production rows``; None for a version a person or a program asked for. ``ferry versions`` and the
        console's versions table both show this: the first link of the chain alert → request → version."""
        cause = self.cause
        if cause is None:
            return None
        on = f" on v{cause.version}" if cause.version is not None else ""
        return f"alert {cause.rule}{on} (id {cause.alert_id}), +{cause.window_rows} production rows"


VALIDATION_METRICS: dict[str, tuple[tuple[str, str], ...]] = {
    "classification": (("accuracy", "val_accuracy"),),
    "regression": (("RMSE", "val_rmse"), ("R²", "val_r2")),
}
"""Per task, the validation metrics a person is shown of a version: (the name shown, the metric's key)."""


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


class DeploymentOut(Out):
    model_name: str
    champion: int | None
    challenger: int | None
    canary_weight: float
    shadow: bool
    revision: int
    updated_at: datetime | None


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


# --- edits ---------------------------------------------------------------------------------------

MAX_TAG_KEY = 250
MAX_TAG_VALUE = 5000
MAX_TAGS = 100
MAX_DESCRIPTION = 10_000
TagKey = Annotated[str, Field(min_length=1, max_length=MAX_TAG_KEY), AfterValidator(_storable)]
TagValue = Annotated[str, Field(max_length=MAX_TAG_VALUE), AfterValidator(_storable)]
Description = Annotated[str, Field(max_length=MAX_DESCRIPTION), AfterValidator(_storable)]
Tags = Annotated[
    dict[TagKey, TagValue | None],
    Field(max_length=MAX_TAGS, description="merged into the tags: a string sets a tag, null removes it"),
]


class ModelEdit(BaseModel):
    """A PATCH of a model: the fields given change, the others stay; tags are merged."""

    model_config = ConfigDict(extra="forbid")
    description: Description | None = None
    tags: Tags | None = None
    reason: Reason | None = Field(default=None, description="recorded in the audit")


class VersionEdit(ModelEdit):
    """A PATCH of a version; ``status`` may only become ``archived`` (as POST …/archive does)."""

    status: Literal["archived"] | None = None


class ArchiveRequest(BaseModel):
    """POST …/versions/{v}/archive: an optional reason, recorded in the audit."""

    model_config = ConfigDict(extra="forbid")
    reason: Reason | None = None


Alias = Literal["champion", "challenger"]


class AuditEntryOut(Out):
    """One edit or archive: who, what changed (field → {"from", "to"}; tags as ``tags.<key>``), when."""

    version: int | None = Field(description="the version edited; null for the model itself")
    action: Literal["edit", "archive"]
    changes: dict[str, Any]
    actor: str
    reason: str | None
    created_at: datetime


class AuditPage(Out):
    items: list[AuditEntryOut]
    next_cursor: str | None


class ArtifactHeadOut(Out):
    """What ``HEAD`` on an artifact route says: the recorded digest and size, and the media type."""

    sha256: str
    size_bytes: int
    content_type: str


DeploymentAction = Annotated[PromoteAction | SetCanaryWeightAction | RollbackAction, Field(discriminator="action")]


class UploadOut(Out):
    """``POST /models/{name}/versions``: the artifact stored and the ``model.trained`` event announcing it.

    The registry registers the version from that event (``training_request_id`` is ``request_id``), as it
    does a trained one; ``rewritten`` says the stored graph keeps only the per-class probabilities output.
    """

    model_name: str
    request_id: str
    event_id: str
    artifact: ArtifactRef
    signature: Signature
    dataset: str
    split_id: str
    rewritten: bool
