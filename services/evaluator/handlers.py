"""The evaluator's handlers: a registered version is judged, an alert may roll back, a bake may end.

Each decision is published as ``model.decided`` under an event id derived from its cause, so a
redelivered cause can never make the registry record a second decision; a version the registry already
holds an evaluator's judgement for is not evaluated again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from services.evaluator.adapters.artifact_store import ModelLoader
from services.evaluator.domain.policy import Policy, Verdict
from services.evaluator.domain.production import ProductionPolicy
from services.evaluator.domain.records import (
    OPEN_STATUSES,
    DeploymentRecord,
    EvaluationRecord,
    HistoryRecord,
    VersionRecord,
)
from services.evaluator.domain.report import REPORT_SCHEMA
from services.evaluator.domain.rollout import (
    EVALUATOR_ACTOR,
    Bake,
    BakeBook,
    BakeStep,
    RollbackPlan,
    bake_of_challenger,
    derived_event_id,
    next_bake_step,
    plan_rollback,
)
from services.evaluator.retraining import Retraining, handle_retrain_alert
from services.evaluator.service import DatasetSplits
from services.evaluator.window_evaluation import evaluate_candidate
from shared.datasets import Split
from shared.envelope import EventMeta
from shared.errors import PermanentError, TransientError
from shared.events import AlertChanged, Event, ModelDecided, ModelRegistered
from shared.faults import fault_point

log = logging.getLogger(__name__)
MAX_REASON = 1900


class RegistryReader(Protocol):
    def version(self, model_name: str, version: int) -> VersionRecord | None: ...
    def deployment(self, model_name: str) -> DeploymentRecord | None: ...
    def history(self, model_name: str, *, limit: int = 200) -> list[HistoryRecord]: ...
    def evaluations(self, model_name: str, version: int) -> list[EvaluationRecord]: ...
    def model_names(self) -> list[str]: ...


class Publish(Protocol):
    def __call__(self, event: Event, *, event_id: str | None = None) -> None: ...


@dataclass(frozen=True)
class Rollout:
    bake_s: float = 600.0
    rollback_window_s: float = 3600.0
    give_up_s: float = 600.0
    """How long after its due time a bake waits for the registry to apply its canary."""


@dataclass
class EvaluatorDeps:
    """What the handlers need from the outside world; bootstrap builds it, tests fake parts of it."""

    registry: RegistryReader
    loader: ModelLoader
    publish: Publish
    policy: Policy = field(default_factory=Policy)
    rollout: Rollout = field(default_factory=Rollout)
    bakes: BakeBook = field(default_factory=BakeBook)
    splits: Callable[..., Split] = field(default_factory=DatasetSplits)
    latency_runs: int = 1000
    clock: Callable[[], float] = time.time
    record_decision: Callable[[str], None] = lambda decision: None
    lock: threading.Lock = field(default_factory=threading.Lock)
    """Serialises rollout decisions: an alert's rollback and a bake's promotion never interleave."""
    in_flight: dict[str, tuple[int, float]] = field(default_factory=dict)
    """Per model, the version whose decision was published last and when: the next version of that model
    is judged only once the registry shows that decision (else it would meet yesterday's champion)."""
    in_flight_timeout_s: float = 60.0
    retraining: Retraining | None = None
    """How a ``retrain`` alert becomes a training request; None: such alerts are logged, nothing more."""
    production_split_policy: ProductionPolicy = "both"
    """Which held-out split must hold for a version retrained on a production window."""


def _clip(reason: str) -> str:
    return reason if len(reason) <= MAX_REASON else reason[: MAX_REASON - 1] + "…"


def already_judged(record: VersionRecord, evaluations: list[EvaluationRecord]) -> str | None:
    """Why the version needs no evaluation (judged before, or no longer waiting), or None."""
    if record.status not in OPEN_STATUSES:
        return f"v{record.version} is {record.status} already"
    for evaluation in evaluations:
        if evaluation.actor == EVALUATOR_ACTOR and evaluation.decision in ("promote", "reject"):
            return f"v{record.version} was evaluated before ({evaluation.decision})"
    return None


def handle_model_registered(event: ModelRegistered, meta: EventMeta | None, *, deps: EvaluatorDeps) -> Verdict | None:
    """Judge the new version against the champion and publish the decision; None when judged before."""
    name = event.model_name
    record = deps.registry.version(name, event.version)
    if record is None:
        raise PermanentError(f"the registry does not know {name} v{event.version}")
    if record.artifact.sha256 != event.artifact.sha256:
        raise PermanentError(f"{name} v{event.version}: the event's artifact is not the registry's")
    skip = already_judged(record, deps.registry.evaluations(name, event.version))
    if skip:
        log.info("not evaluating %s: %s", name, skip)
        deps.record_decision("duplicate")
        return None
    _await_earlier_decision(deps, name, record.version)
    deployment = deps.registry.deployment(name)
    champion = _champion(deps, name, deployment)
    evaluation = evaluate_candidate(
        record,
        champion,
        loader=deps.loader,
        splits=deps.splits,
        policy=deps.policy,
        latency_runs=deps.latency_runs,
        production_policy=deps.production_split_policy,
    )
    verdict = evaluation.verdict
    decided = ModelDecided(
        model_name=name,
        version=record.version,
        decision=verdict.decision,
        stage=verdict.stage,
        canary_weight=verdict.canary_weight,
        baseline_version=champion.version if champion else None,
        metrics=evaluation.candidate.flat_metrics() if evaluation.candidate else {},
        baseline_metrics=evaluation.champion.flat_metrics() if evaluation.champion else {},
        reason=_clip(verdict.reason),
        actor=EVALUATOR_ACTOR,
        report=evaluation.report,
    )
    with deps.lock:
        deps.publish(decided, event_id=derived_event_id(name, record.version, record.artifact.sha256, "evaluation"))
        deps.in_flight[name] = (record.version, deps.clock())
        if verdict.stage == "canary":
            deps.bakes.schedule(Bake(name, record.version, deps.clock() + deps.rollout.bake_s))
    fault_point("evaluator.after_decision")
    label = "promote_canary" if verdict.stage == "canary" else verdict.decision
    deps.record_decision(label)
    log.info("%s v%s: %s", name, record.version, verdict.reason)
    return verdict


def _await_earlier_decision(deps: EvaluatorDeps, name: str, version: int) -> None:
    """TransientError (the loop retries) while the registry has not applied our last decision on this model."""
    waiting = deps.in_flight.get(name)
    if waiting is None or waiting[0] == version:
        return
    earlier, published_at = waiting
    found = deps.registry.version(name, earlier)
    if found is not None and found.status in OPEN_STATUSES:
        if deps.clock() - published_at < deps.in_flight_timeout_s:
            raise TransientError(f"the registry has not applied the decision on {name} v{earlier} yet")
        log.warning("the registry never applied the decision on %s v%s; judging v%s regardless", name, earlier, version)
    deps.in_flight.pop(name, None)


def _champion(deps: EvaluatorDeps, name: str, deployment: DeploymentRecord | None) -> VersionRecord | None:
    if deployment is None or deployment.champion is None:
        return None
    champion = deps.registry.version(name, deployment.champion)
    if champion is None:
        raise PermanentError(f"{name}'s champion v{deployment.champion} is missing from the registry")
    return champion


def _alerted_version(event: AlertChanged) -> int | None:
    if event.version is not None:
        return event.version
    label = event.labels.get("version", "")
    return int(label) if label.isdigit() and int(label) > 0 else None


def handle_alert(event: AlertChanged, meta: EventMeta, *, deps: EvaluatorDeps) -> RollbackPlan | None:
    """A fired rollback alert rolls back a baking canary, or a champion within the window after its promotion."""
    if event.state != "fired" or event.action != "rollback":
        return None
    name, version = event.model_name, _alerted_version(event)
    if version is None:
        log.warning("alert %s for %s names no version; nothing to roll back", event.rule, name)
        return None
    words = f"{event.severity}, value {event.value:g} vs threshold {event.threshold:g}"
    with deps.lock:
        deployment = deps.registry.deployment(name)
        history = deps.registry.history(name) if deployment is not None else []
        plan = plan_rollback(
            version,
            event.rule,
            deployment,
            history,
            now=deps.clock(),
            window_s=deps.rollout.rollback_window_s,
            alert_words=words,
        )
        if plan.ignored or deployment is None:
            log.info("alert %s for %s v%s ignored: %s", event.rule, name, version, plan.reason)
            deps.record_decision("alert_ignored")
            return plan
        deps.bakes.retire(name, version)
        report = _rollback_report(event, meta, deployment, plan, deps.rollout)
        decided = ModelDecided(
            model_name=name,
            version=version,
            decision="rollback",
            baseline_version=plan.return_to,
            reason=_clip(plan.reason),
            actor=EVALUATOR_ACTOR,
            report=report,
        )
        deps.publish(decided, event_id=derived_event_id(name, version, deployment.revision, "rollback"))
    deps.record_decision("rollback")
    log.warning("%s v%s: %s", name, version, plan.reason)
    return plan


def _rollback_report(
    event: AlertChanged, meta: EventMeta, deployment: DeploymentRecord, plan: RollbackPlan, rollout: Rollout
) -> dict[str, Any]:
    return {
        "schema": REPORT_SCHEMA,
        "kind": "rollback",
        "model_name": event.model_name,
        "version": plan.version,
        "stage": plan.stage,
        "return_to": plan.return_to,
        "rollback_window_s": rollout.rollback_window_s,
        "alert": {
            "rule": event.rule,
            "severity": event.severity,
            "value": event.value,
            "threshold": event.threshold,
            "labels": dict(event.labels),
            "since": event.since.isoformat(),
            "event_id": meta.event_id,
        },
        "deployment": {
            "champion": deployment.champion,
            "challenger": deployment.challenger,
            "canary_weight": deployment.canary_weight,
            "revision": deployment.revision,
        },
        "decision": {"decision": "rollback", "reason": plan.reason},
    }


def complete_bake(bake: Bake, *, deps: EvaluatorDeps) -> BakeStep:
    """A due bake: promote the canary to champion, look again later, or drop it."""
    name, version = bake.model_name, bake.version
    with deps.lock:
        if not deps.bakes.holds(name, version):
            return BakeStep("drop", "cancelled")
        record = deps.registry.version(name, version)
        deployment = deps.registry.deployment(name)
        history = deps.registry.history(name) if deployment is not None else []
        now = deps.clock()
        step = next_bake_step(
            bake, record, deployment, history, now=now, bake_s=deps.rollout.bake_s, give_up_s=deps.rollout.give_up_s
        )
        if step.action == "wait" and step.wait_until is not None:
            deps.bakes.schedule(replace(bake, due_at=step.wait_until))
            return step
        deps.bakes.cancel(name, version)
        if step.action == "drop" or deployment is None:
            log.info("bake of %s v%s dropped: %s", name, version, step.reason)
            return step
        report = {
            "schema": REPORT_SCHEMA,
            "kind": "bake",
            "model_name": name,
            "version": version,
            "canary_weight": deployment.canary_weight,
            "bake_s": deps.rollout.bake_s,
            "baked_s": step.baked_s,
            "canary_revision": step.canary_revision,
            "champion_before": deployment.champion,
            "decision": {"decision": "promote", "stage": "champion", "reason": step.reason},
        }
        decided = ModelDecided(
            model_name=name,
            version=version,
            decision="promote",
            stage="champion",
            baseline_version=deployment.champion,
            reason=_clip(step.reason),
            actor=EVALUATOR_ACTOR,
            report=report,
        )
        deps.publish(decided, event_id=derived_event_id(name, version, step.canary_revision, "champion"))
    deps.record_decision("promote")
    log.info("%s v%s: %s", name, version, step.reason)
    return step


def resync_bakes(*, deps: EvaluatorDeps) -> int:
    """Rebuild the bakes from the registry: every challenger the evaluator made a canary. Returns how many."""
    found = 0
    for name in deps.registry.model_names():
        deployment = deps.registry.deployment(name)
        if deployment is None or deployment.challenger is None:
            continue
        bake = bake_of_challenger(name, deployment, deps.registry.history(name), deps.rollout.bake_s)
        if bake is not None:
            deps.bakes.schedule(bake, keep_existing=True)
            found += 1
    return found


Handler = Callable[..., Any]
HANDLERS: dict[type[Event], list[Handler]] = {
    ModelRegistered: [handle_model_registered],
    AlertChanged: [handle_alert, handle_retrain_alert],
}
