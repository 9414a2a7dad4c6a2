"""One function per event or command. Each runs in one unit of work: the state change, the outbox
rows that announce it and the applied event id commit together, or not at all."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from services.registry.adapters.orm import (
    Evaluation,
)
from services.registry.adapters.repository import UnitOfWork
from services.registry.domain import Decision, Outcome
from services.registry.service import (
    Registration,
    apply_decision,
    derived_event_id,
    finite_metrics,
    registered_event,
    verified_artifact_uri,
    version_from_event,
)
from shared.artifacts import ArtifactStore
from shared.envelope import EventMeta
from shared.events import (
    Event,
    ModelDecided,
    ModelTrained,
    utc_now,
)


def handle_model_trained(
    event: ModelTrained, meta: EventMeta, *, uow: UnitOfWork, artifacts: ArtifactStore
) -> Registration:
    """Register the artifact as the model's next version and announce it; repeats change nothing.

    The artifact is verified in the store before the transaction (hashing it while holding the model's row
    lock would hold up every other registration of the model). So a redelivery of an applied event is
    verified again, and dead-lettered should its artifact have vanished since: that loses nothing.
    """
    artifact_uri = verified_artifact_uri(event.artifact, event.model_name, artifacts)
    with uow:
        model_id, number = uow.repo.next_version_number(event.model_name)  # locks the model row
        if not uow.repo.claim_event(meta.source, meta.event_id, meta.type_name):
            return Registration(version=None, created=False)
        version = version_from_event(event, meta, artifact_uri=artifact_uri)
        version.model_id, version.number = model_id, number
        if not uow.repo.add_version(version):  # the same request and artifact, under a new event id
            existing = uow.repo.version_number_by_request(model_id, event.request_id, event.artifact.sha256)
            return Registration(version=existing, created=False)  # rolled back: the number is not used
        announcement = registered_event(event.model_name, version)
        uow.repo.add_outbox(announcement, derived_event_id(meta, "registered"))
        uow.commit()
        return Registration(version=version.number, created=True)


def handle_model_decided(
    event: ModelDecided, meta: EventMeta, *, uow: UnitOfWork, default_canary_weight: float = 0.1
) -> Outcome | None:
    """Record the evaluation and apply the evaluator's decision; None when the event was applied before."""
    decision = Decision(
        model_name=event.model_name,
        kind=event.decision,
        reason=event.reason,
        actor=event.actor,
        version=event.version,
        stage=event.stage,
        canary_weight=event.canary_weight,
    )
    evaluation = Evaluation(
        candidate_version=event.version,
        baseline_version=event.baseline_version,
        metrics=finite_metrics(event.metrics),
        baseline_metrics=finite_metrics(event.baseline_metrics),
        decision=event.decision,
        stage=event.stage,
        canary_weight=event.canary_weight,
        reason=event.reason,
        actor=event.actor,
        source_event_id=meta.event_id,
        created_at=utc_now(),
        report=event.report,
    )
    return apply_decision(
        decision, uow=uow, cause=meta, evaluation=evaluation, default_canary_weight=default_canary_weight
    )


def handle_deployment_command(decision: Decision, *, uow: UnitOfWork, default_canary_weight: float = 0.1) -> Outcome:
    """A user's promote, canary weight or rollback: the same path as the evaluator's decisions."""
    outcome = apply_decision(
        decision, uow=uow, cause=None, evaluation=None, default_canary_weight=default_canary_weight
    )
    assert outcome is not None  # only an already-applied event id yields None, and commands carry none
    return outcome


Handler = Callable[..., Any]
HANDLERS: dict[type[Event], list[Handler]] = {
    ModelTrained: [handle_model_trained],
    ModelDecided: [handle_model_decided],
}
