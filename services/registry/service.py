"""The registry's application layer: registrations and decisions over the repository, one unit of work
each. The handlers (events) and the routes (REST commands) both call it."""

from __future__ import annotations

import functools
import math
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

from services.registry.adapters.orm import (
    Deployment,
    DeploymentHistory,
    Evaluation,
    ModelAudit,
    ModelVersion,
    RegisteredModel,
    version_columns,
)
from services.registry.adapters.repository import Repository, UnitOfWork
from services.registry.domain import (
    ArtifactRejected,
    Decision,
    DeploymentState,
    Outcome,
    VersionNotFound,
    VersionStatus,
    check_archivable,
    decide,
    merge_tags,
)
from shared.artifacts import ArtifactError, ArtifactStore
from shared.envelope import EventMeta
from shared.errors import TransientError
from shared.events import (
    ArtifactRef,
    DeployedVersion,
    DeploymentChanged,
    ModelDecided,
    ModelRegistered,
    ModelTrained,
    Signature,
    new_id,
    utc_now,
)
from shared.registry_models import MAX_TAGS, ModelEdit, VersionEdit

EVENT_ID_NAMESPACE = uuid.UUID("5d0c5f0e-3f4e-4c8e-9a53-8f2d0f1e7a11")


@dataclass(frozen=True)
class Registration:
    """What a model.trained event did: the version it maps to, and whether it was created just now."""

    version: int | None
    created: bool


def derived_event_id(cause: EventMeta, what: str) -> str:
    """A stable id for an event caused by another: re-applying the cause could never mint a new id.

    The cause is identified as CloudEvents does, by (source, id): the same id from two sources are two causes.
    """
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{cause.source}\x00{cause.event_id}/{what}"))


def verified_artifact_uri(artifact: ArtifactRef, model_name: str, artifacts: ArtifactStore) -> str:
    """The store's own URI of the artifact, once the store holds it intact; ArtifactRejected otherwise.

    The URI an event carries is never opened: it must name the store's key for the digest, and the store's
    copy must have the stated digest and size. A store that cannot be reached is a TransientError (retried).
    """
    if not artifacts.is_own_uri(artifact.uri, artifact.sha256):
        shown = artifact.uri if len(artifact.uri) <= 300 else artifact.uri[:300] + "…"
        raise ArtifactRejected(model_name, f"{shown!r} is not the artifact store's key for sha256 {artifact.sha256}")
    try:
        artifacts.verify(artifact.sha256, size_bytes=artifact.size_bytes)
    except ArtifactError as error:  # missing, a link out of the store, another size or digest
        raise ArtifactRejected(model_name, str(error)) from error
    except PermissionError as error:
        raise ArtifactRejected(model_name, f"the store's copy of {artifact.sha256} is not readable") from error
    except OSError as error:
        raise TransientError(f"the artifact store is unreachable: {type(error).__name__}: {error}") from error
    return artifacts.uri(artifact.sha256)


def apply_decision(
    decision: Decision,
    *,
    uow: UnitOfWork,
    cause: EventMeta | None,
    evaluation: Evaluation | None,
    default_canary_weight: float,
) -> Outcome | None:
    """Lock the model, decide, write statuses, evaluation, deployment, history and outbox; commit.

    ``cause`` is the event that asked for the decision (None for a user's command).
    """
    with uow:
        model = uow.repo.lock_model(decision.model_name, create=False)
        if cause is not None and not uow.repo.claim_event(cause.source, cause.event_id, ModelDecided.type_name):
            return None
        deployment = uow.repo.deployment(model)
        state = state_of(deployment)
        former = uow.repo.former_champions(model) if decision.kind == "rollback" else []
        wanted = {decision.version, state.champion, state.challenger, *former} - {None}
        versions = uow.repo.versions(model, (number for number in wanted if number is not None))
        statuses = {number: cast(VersionStatus, version.status) for number, version in versions.items()}
        outcome = decide(
            state, decision, statuses, former_champions=former, default_canary_weight=default_canary_weight
        )
        for number, status in outcome.status_changes.items():
            if versions[number].status != status:
                versions[number].status = status
                versions[number].updated_at = utc_now()
        if evaluation is not None:
            evaluation.model_id = model.id
            uow.repo.add_evaluation(evaluation)
        if outcome.deployment_changed:
            _record_change(uow.repo, model, deployment, outcome, decision, cause, versions)
        uow.commit()
        return outcome


def _record_change(
    repo: Repository,
    model: RegisteredModel,
    deployment: Deployment,
    outcome: Outcome,
    decision: Decision,
    cause: EventMeta | None,
    versions: Mapping[int, ModelVersion],
) -> None:
    before, after = outcome.before, outcome.after
    deployment.champion_version = after.champion
    deployment.challenger_version = after.challenger
    deployment.canary_weight = after.canary_weight
    deployment.shadow = after.shadow
    deployment.revision = after.revision
    deployment.updated_at = utc_now()
    repo.add_history(
        DeploymentHistory(
            model_id=model.id,
            revision=after.revision,
            action=decision.kind,
            from_champion=before.champion,
            to_champion=after.champion,
            from_challenger=before.challenger,
            to_challenger=after.challenger,
            from_canary_weight=before.canary_weight,
            to_canary_weight=after.canary_weight,
            shadow=after.shadow,
            actor=decision.actor,
            reason=decision.reason,
            source_event_id=cause.event_id if cause else None,
            created_at=utc_now(),
            forced=outcome.forced,
        )
    )
    changed = DeploymentChanged(
        model_name=model.name,
        revision=after.revision,
        champion=_deployed(versions, after.champion),
        challenger=_deployed(versions, after.challenger),
        canary_weight=after.canary_weight,
        shadow=after.shadow,
        reason=decision.reason,
        actor=decision.actor,
    )
    event_id = derived_event_id(cause, "deployment.changed") if cause else new_id()
    repo.add_outbox(changed, event_id)


def state_of(deployment: Deployment) -> DeploymentState:
    """The domain's view of a deployment row."""
    return DeploymentState(
        champion=deployment.champion_version,
        challenger=deployment.challenger_version,
        canary_weight=deployment.canary_weight,
        shadow=deployment.shadow,
        revision=deployment.revision,
    )


def artifact_of(version: ModelVersion) -> ArtifactRef:
    return ArtifactRef(
        uri=version.artifact_uri,
        sha256=version.artifact_sha256,
        size_bytes=version.artifact_size_bytes,
        format=version.artifact_format,
    )


def _deployed(versions: Mapping[int, ModelVersion], number: int | None) -> DeployedVersion | None:
    if number is None:
        return None
    version = versions[number]
    return DeployedVersion(version=number, artifact=artifact_of(version), signature=Signature(**version.signature))


def registered_event(model_name: str, version: ModelVersion) -> ModelRegistered:
    """The model.registered announcement of a stored version."""
    return ModelRegistered(
        model_name=model_name,
        version=version.number,
        artifact=artifact_of(version),
        signature=Signature(**version.signature),
        dataset=version.dataset,
        split_id=version.split_id,
        metrics=version.metrics,
        training_request_id=version.training_request_id,
    )


def version_from_event(event: ModelTrained, meta: EventMeta, *, artifact_uri: str) -> ModelVersion:
    """A new version row (unnumbered) from a model.trained event, its artifact at the store's ``artifact_uri``.

    The columns that the event carries under the same name are copied (see ``copied_version_columns``);
    the rest are set here. A test holds the two lists to the table.
    """
    now = utc_now()
    dropped = sorted(name for name, value in {**event.metrics, **event.timings}.items() if not math.isfinite(value))
    tags = {
        "arch": event.arch,
        **({"lineage": event.lineage} if event.lineage != "ferry" else {}),
        **({"non_finite_metrics": ",".join(dropped)} if dropped else {}),
    }
    parent_model = (event.compression.distill_from or event.model_name) if event.teacher_version is not None else None
    copied = event.model_dump(mode="json", include=set(copied_version_columns()))
    return ModelVersion(
        **{
            **copied,
            "metrics": finite_metrics(event.metrics),
            "timings": finite_metrics(event.timings),
            "status": "registered",
            "artifact_uri": artifact_uri,
            "artifact_sha256": event.artifact.sha256,
            "artifact_size_bytes": event.artifact.size_bytes,
            "artifact_format": event.artifact.format,
            "training_request_id": event.request_id,
            "parent_model": parent_model,
            "parent_version": event.teacher_version,
            "source_event_id": meta.event_id,
            "tags": tags,
            "description": "",
            "created_at": now,
            "updated_at": now,
        }
    )


@functools.cache
def copied_version_columns() -> tuple[str, ...]:
    """The version columns a model.trained event carries under the same name (dataset, signature, metrics, …)."""
    return tuple(name for name in version_columns() if name in ModelTrained.model_fields)


def finite_metrics(values: Mapping[str, float]) -> dict[str, float]:
    """JSON (and PostgreSQL's jsonb) has no NaN or infinity: such metrics are left out, and tagged."""
    return {name: value for name, value in values.items() if math.isfinite(value)}


@dataclass(frozen=True)
class Edited:
    """What an edit or archive did: the fields that changed (empty when it asked for what already was)."""

    changes: dict[str, dict[str, object]]


def edit_model(name: str, edit: ModelEdit, *, uow: UnitOfWork, actor: str) -> Edited:
    """Change the model's description and merge its tags; audited, one transaction. ModelNotFound, InvalidEdit."""
    with uow:
        model = uow.repo.lock_model(name, create=False)
        changes = _apply_edit(model, edit)
        if changes:
            uow.repo.add_audit(_audit(model, None, "edit", changes, actor, edit.reason))
            uow.commit()
        return Edited(changes)


def edit_version(name: str, number: int, edit: VersionEdit, *, uow: UnitOfWork, actor: str) -> Edited:
    """Edit a version's description and tags, and archive it when ``status`` says so; audited.

    The model's row is locked, as a decision locks it: a version cannot be promoted while it is archived.
    ModelNotFound, VersionNotFound, InvalidEdit, VersionInUse (a deployed version is never archived).
    """
    with uow:
        model = uow.repo.lock_model(name, create=False)
        version = uow.repo.versions(model, [number]).get(number)
        if version is None:
            raise VersionNotFound(name, number)
        changes = _apply_edit(version, edit)
        archiving = edit.status == "archived" and version.status != "archived"
        if archiving:
            check_archivable(name, number, state_of(uow.repo.deployment(model)))
            changes["status"] = {"from": version.status, "to": "archived"}
            version.status = "archived"
        if changes:
            version.updated_at = utc_now()
            action = "archive" if archiving else "edit"
            uow.repo.add_audit(_audit(model, number, action, changes, actor, edit.reason))
            uow.commit()
        return Edited(changes)


def _apply_edit(row: RegisteredModel | ModelVersion, edit: ModelEdit) -> dict[str, dict[str, object]]:
    changes: dict[str, dict[str, object]] = {}
    if edit.description is not None and edit.description != row.description:
        changes["description"] = {"from": row.description, "to": edit.description}
        row.description = edit.description
    if edit.tags:
        tags, tag_changes = merge_tags(row.tags, edit.tags, max_tags=MAX_TAGS)
        if tag_changes:
            row.tags = tags  # a new dict: the ORM sees a JSONB column change only on assignment
            changes.update(tag_changes)
    if changes:
        row.updated_at = utc_now()
    return changes


def _audit(
    model: RegisteredModel,
    version: int | None,
    action: str,
    changes: dict[str, dict[str, object]],
    actor: str,
    reason: str | None,
) -> ModelAudit:
    return ModelAudit(
        model_id=model.id,
        version=version,
        action=action,
        changes=changes,
        actor=actor,
        reason=reason,
        created_at=utc_now(),
    )
