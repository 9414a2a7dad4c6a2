"""One function per event or command. Each runs in one unit of work: the state change, the outbox
rows that announce it and the applied event id commit together, or not at all."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from services.registry.adapters.orm import Deployment, DeploymentHistory, Evaluation, ModelVersion, RegisteredModel
from services.registry.adapters.repository import Repository, UnitOfWork
from services.registry.domain import Decision, DeploymentState, Outcome, VersionStatus, decide
from shared.envelope import EventMeta
from shared.events import (
    ArtifactRef,
    DeployedVersion,
    DeploymentChanged,
    Event,
    ModelDecided,
    ModelRegistered,
    ModelTrained,
    Signature,
    new_id,
    utc_now,
)

EVENT_ID_NAMESPACE = uuid.UUID("5d0c5f0e-3f4e-4c8e-9a53-8f2d0f1e7a11")


@dataclass(frozen=True)
class Registration:
    """What a model.trained event did: the version it maps to, and whether it was created just now."""

    version: int | None
    created: bool


def derived_event_id(source_event_id: str, what: str) -> str:
    """A stable id for an event caused by another: re-applying the cause could never mint a new id."""
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, f"{source_event_id}/{what}"))


def handle_model_trained(event: ModelTrained, meta: EventMeta, *, uow: UnitOfWork) -> Registration:
    """Register the artifact as the model's next version and announce it; repeats change nothing."""
    with uow:
        model_id, number = uow.repo.next_version_number(event.model_name)  # locks the model row
        if not uow.repo.claim_event(meta.event_id, meta.type_name):
            return Registration(version=None, created=False)
        version = version_from_event(event, meta)
        version.model_id, version.number = model_id, number
        if not uow.repo.add_version(version):  # the same request and artifact, under a new event id
            existing = uow.repo.version_number_by_request(model_id, event.request_id, event.artifact.sha256)
            return Registration(version=existing, created=False)  # rolled back: the number is not used
        announcement = registered_event(event.model_name, version)
        uow.repo.add_outbox(announcement, derived_event_id(meta.event_id, "registered"))
        uow.commit()
        return Registration(version=version.number, created=True)


def handle_model_decided(
    event: ModelDecided, meta: EventMeta, *, uow: UnitOfWork, default_canary_weight: float = 0.1
) -> Outcome | None:
    """Record the evaluation and apply the evaluator's decision; None when the event was applied before."""
    decision = Decision(
        model_name=event.model_name, kind=event.decision, reason=event.reason, actor=event.actor,
        version=event.version, stage=event.stage, canary_weight=event.canary_weight,
    )  # fmt: skip
    evaluation = Evaluation(
        candidate_version=event.version, baseline_version=event.baseline_version, metrics=_finite(event.metrics),
        baseline_metrics=_finite(event.baseline_metrics), decision=event.decision, stage=event.stage,
        canary_weight=event.canary_weight, reason=event.reason, actor=event.actor, source_event_id=meta.event_id,
        created_at=utc_now(), report=event.report,
    )  # fmt: skip
    return apply_decision(
        decision, uow=uow, source_event_id=meta.event_id, evaluation=evaluation,
        default_canary_weight=default_canary_weight,
    )  # fmt: skip


def handle_deployment_command(decision: Decision, *, uow: UnitOfWork, default_canary_weight: float = 0.1) -> Outcome:
    """A user's promote, canary weight or rollback: the same path as the evaluator's decisions."""
    outcome = apply_decision(
        decision, uow=uow, source_event_id=None, evaluation=None, default_canary_weight=default_canary_weight
    )
    assert outcome is not None  # only an already-applied event id yields None, and commands carry none
    return outcome


def apply_decision(
    decision: Decision,
    *,
    uow: UnitOfWork,
    source_event_id: str | None,
    evaluation: Evaluation | None,
    default_canary_weight: float,
) -> Outcome | None:
    """Lock the model, decide, write statuses, evaluation, deployment, history and outbox; commit."""
    with uow:
        model = uow.repo.lock_model(decision.model_name, create=False)
        if source_event_id is not None and not uow.repo.claim_event(source_event_id, ModelDecided.type_name):
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
            _record_change(uow.repo, model, deployment, outcome, decision, source_event_id, versions)
        uow.commit()
        return outcome


def _record_change(
    repo: Repository,
    model: RegisteredModel,
    deployment: Deployment,
    outcome: Outcome,
    decision: Decision,
    source_event_id: str | None,
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
            model_id=model.id, revision=after.revision, action=decision.kind, from_champion=before.champion,
            to_champion=after.champion, from_challenger=before.challenger, to_challenger=after.challenger,
            from_canary_weight=before.canary_weight, to_canary_weight=after.canary_weight, shadow=after.shadow,
            actor=decision.actor, reason=decision.reason, source_event_id=source_event_id, created_at=utc_now(),
        )
    )  # fmt: skip
    changed = DeploymentChanged(
        model_name=model.name, revision=after.revision, champion=_deployed(versions, after.champion),
        challenger=_deployed(versions, after.challenger), canary_weight=after.canary_weight, shadow=after.shadow,
        reason=decision.reason, actor=decision.actor,
    )  # fmt: skip
    event_id = derived_event_id(source_event_id, "deployment.changed") if source_event_id else new_id()
    repo.add_outbox(changed, event_id)


def state_of(deployment: Deployment) -> DeploymentState:
    """The domain's view of a deployment row."""
    return DeploymentState(
        champion=deployment.champion_version, challenger=deployment.challenger_version,
        canary_weight=deployment.canary_weight, shadow=deployment.shadow, revision=deployment.revision,
    )  # fmt: skip


def artifact_of(version: ModelVersion) -> ArtifactRef:
    return ArtifactRef(
        uri=version.artifact_uri, sha256=version.artifact_sha256, size_bytes=version.artifact_size_bytes,
        format=version.artifact_format,
    )  # fmt: skip


def _deployed(versions: Mapping[int, ModelVersion], number: int | None) -> DeployedVersion | None:
    if number is None:
        return None
    version = versions[number]
    return DeployedVersion(version=number, artifact=artifact_of(version), signature=Signature(**version.signature))


def registered_event(model_name: str, version: ModelVersion) -> ModelRegistered:
    """The model.registered announcement of a stored version."""
    return ModelRegistered(
        model_name=model_name, version=version.number, artifact=artifact_of(version),
        signature=Signature(**version.signature), dataset=version.dataset, split_id=version.split_id,
        metrics=version.metrics, training_request_id=version.training_request_id,
    )  # fmt: skip


def version_from_event(event: ModelTrained, meta: EventMeta) -> ModelVersion:
    """A new version row (unnumbered) from a model.trained event."""
    now = utc_now()
    dropped = sorted(name for name, value in {**event.metrics, **event.timings}.items() if not math.isfinite(value))
    tags = {"arch": event.arch, **({"non_finite_metrics": ",".join(dropped)} if dropped else {})}
    parent_model = (event.compression.distill_from or event.model_name) if event.teacher_version is not None else None
    return ModelVersion(
        status="registered", artifact_uri=event.artifact.uri, artifact_sha256=event.artifact.sha256,
        artifact_size_bytes=event.artifact.size_bytes, artifact_format=event.artifact.format,
        signature=event.signature.model_dump(mode="json"), metrics=_finite(event.metrics), dataset=event.dataset,
        split_id=event.split_id, arch=event.arch, hyperparameters=event.hyperparameters.model_dump(mode="json"),
        compression=event.compression.model_dump(mode="json"), timings=_finite(event.timings),
        training_request_id=event.request_id, parent_model=parent_model,
        parent_version=event.teacher_version, source_event_id=meta.event_id, tags=tags, created_at=now,
        updated_at=now,
    )  # fmt: skip


def _finite(values: Mapping[str, float]) -> dict[str, float]:
    """JSON (and PostgreSQL's jsonb) has no NaN or infinity: such metrics are left out, and tagged."""
    return {name: value for name, value in values.items() if math.isfinite(value)}


Handler = Callable[..., Any]
HANDLERS: dict[type[Event], list[Handler]] = {
    ModelTrained: [handle_model_trained],
    ModelDecided: [handle_model_decided],
}
