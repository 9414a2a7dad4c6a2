"""The trainer's handlers: one per event, dependencies passed in by bootstrap (or a test)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from services.trainer.adapters.completed import CompletedRequests
from services.trainer.adapters.scratch import run_folder
from services.trainer.adapters.teachers import TeacherSource
from services.trainer.domain import EpochReport, Teacher, TrainingFailed
from services.trainer.service import JobLimits, TrainedModel, run_training
from shared.artifacts import ArtifactStore
from shared.envelope import EventMeta
from shared.events import ArtifactRef, Event, ModelTrained, TrainingRequested, TrainingStatus
from shared.faults import fault_point
from shared.kafka import is_transient
from shared.telemetry import CLIENT_ERROR

if TYPE_CHECKING:
    from services.trainer.cluster import ClusterTraining

log = logging.getLogger(__name__)

State = Literal["started", "progress", "completed", "failed"]


class Publish(Protocol):
    def __call__(self, event: Event, *, event_id: str | None = None) -> None: ...


@dataclass(frozen=True)
class TrainerDeps:
    """What the handlers need from the outside world; bootstrap builds it, tests fake parts of it."""

    store: ArtifactStore
    publish: Publish
    teachers: TeacherSource
    completed: CompletedRequests
    work_root: Path
    limits: JobLimits = JobLimits()
    record_outcome: Callable[[str, float], None] = lambda outcome, seconds: None
    """Called once per request with its outcome (completed, failed, republished, dispatched, error) and seconds."""
    cluster: ClusterTraining | None = None
    """Where a world larger than ``limits.max_world_size`` trains (a PyTorchJob); None: nowhere, it is refused."""


def model_trained_event_id(request_id: str) -> str:
    """One event id per request: a re-published ModelTrained is the same event to the registry."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ferry:model.trained:{request_id}"))


def handle_training_requested(event: TrainingRequested, meta: EventMeta | None, *, deps: TrainerDeps) -> None:
    """Train, store and announce a model; a bad request ends as TrainingStatus failed, not an error."""
    started = time.monotonic()
    done = deps.completed.get(event.request_id)
    if done is not None and deps.store.has(done.artifact.sha256):
        log.info("request %s already completed; re-publishing its ModelTrained", event.request_id)
        announce(done, deps.publish)
        deps.record_outcome("republished", time.monotonic() - started)
        return
    cluster = deps.cluster if event.world_size > deps.limits.max_world_size else None
    if cluster is None:
        deps.publish(status(event, "started", epochs=event.hyperparameters.epochs))
    try:
        if cluster is not None:
            _dispatch(event, cluster, deps.publish)
            deps.record_outcome("dispatched", time.monotonic() - started)
            return
        trained = _train(event, deps)
    except TrainingFailed as failure:
        log.info("training request %s failed: %s", event.request_id, failure, extra=CLIENT_ERROR)
        deps.publish(status(event, "failed", reason=str(failure)))
        deps.record_outcome("failed", time.monotonic() - started)
        return
    except Exception as error:
        if is_transient(error):
            raise  # the consumer loop retries: the broker or the registry may come back
        # A bug, or a Kafka error that will not pass: tell the requester, then let the loop dead-letter it.
        deps.publish(status(event, "failed", reason=f"trainer error: {type(error).__name__}: {error}"))
        deps.record_outcome("error", time.monotonic() - started)
        raise
    announce(trained, deps.publish)
    log.info("trained request %s: artifact %s", event.request_id, trained.artifact.sha256)
    deps.record_outcome("completed", time.monotonic() - started)


def _dispatch(event: TrainingRequested, cluster: ClusterTraining, publish: Publish) -> None:
    """Hand a large world to the cluster (refused first as the job would refuse it, with TrainingFailed); the
    PyTorchJob's watcher publishes what follows."""
    cluster.check(event)
    publish(status(event, "started", epochs=event.hyperparameters.epochs))
    name = cluster.submit(event)
    log.info("training request %s runs as PyTorchJob %s", event.request_id, name)


def _train(event: TrainingRequested, deps: TrainerDeps) -> ModelTrained:
    """Run the job in a scratch folder, store the artifact, record the request as completed."""
    with run_folder(deps.work_root) as workdir:
        teacher = None
        if event.compression.distill_from is not None:
            teacher = deps.teachers.fetch(event.compression.distill_from, workdir)
        progress = partial(_report_progress, event, deps.publish)
        trained = run_training(event, workdir=workdir, progress=progress, teacher=teacher, limits=deps.limits)
        model_trained = stored_model(event, trained, teacher, deps.store)
    deps.completed.put(model_trained)
    return model_trained


def stored_model(
    event: TrainingRequested, trained: TrainedModel, teacher: Teacher | None, store: ArtifactStore
) -> ModelTrained:
    """Put the trained file in the store; the ModelTrained that announces it."""
    uri, sha256, size = store.put_file(trained.path)
    return ModelTrained(
        model_name=event.model_name,
        request_id=event.request_id,
        artifact=ArtifactRef(uri=uri, sha256=sha256, size_bytes=size, format=trained.format),
        signature=trained.signature,
        metrics=trained.metrics,
        dataset=event.dataset,
        split_id=trained.split_id,
        arch=event.arch,
        hyperparameters=event.hyperparameters,
        compression=event.compression,
        teacher_version=teacher.version if teacher else None,
        timings=trained.timings,
        slices=event.slices,
        input_reference=trained.input_reference,
        cause=event.cause,
    )


def announce(model_trained: ModelTrained, publish: Publish) -> None:
    """Publish a verified artifact's ModelTrained (its id derived from the request) and the completed status."""
    publish(model_trained, event_id=model_trained_event_id(model_trained.request_id))
    publish(
        TrainingStatus(
            model_name=model_trained.model_name,
            request_id=model_trained.request_id,
            state="completed",
            val_accuracy=model_trained.metrics.get("val_accuracy"),
            val_loss=model_trained.metrics.get("val_loss"),
            artifact_sha256=model_trained.artifact.sha256,
        )
    )


def _report_progress(event: TrainingRequested, publish: Publish, report: EpochReport) -> None:
    publish(
        status(
            event,
            "progress",
            epoch=report.epoch,
            epochs=report.epochs,
            train_loss=report.train_loss,
            val_loss=report.val_loss,
            val_accuracy=report.val_accuracy,
        )
    )
    fault_point("trainer.mid_training")  # crash tests: FERRY_FAULT_POINT=trainer.mid_training@<epoch>


def status(event: TrainingRequested, state: State, **fields: Any) -> TrainingStatus:
    """A TrainingStatus of this request."""
    return TrainingStatus(model_name=event.model_name, request_id=event.request_id, state=state, **fields)


HANDLERS: dict[type[Event], list[Callable[..., None]]] = {TrainingRequested: [handle_training_requested]}
