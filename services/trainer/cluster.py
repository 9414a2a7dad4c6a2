"""Training on a Kubernetes cluster: a request whose world is larger than one trainer's becomes a PyTorchJob.

``submit`` creates the job (idempotent: its name comes from the request id). ``run`` lists the jobs every
trainer started (by their label), then watches them from the list's resourceVersion, renewing the watch
from the last version seen, and listing again when the server says that version is gone. What a job says
becomes what a local run would have published:

- Running: a ``progress`` status (no epoch yet: the pods do not reach Kafka);
- Succeeded: the pods' record of their artifact (``CompletedRequests``), its bytes verified in the store by
  digest, then the same ``model.trained`` and ``completed`` status as a local run;
- Failed, or deleted before it ended: a ``failed`` status with the pods' reason, or the operator's.

An announced job is deleted. A restarted trainer finds the jobs still there by their label and carries on:
a job that ended while no trainer watched is announced then. Two trainers may both announce an ending;
the events carry ids derived from the request, so the second copy is the same event.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from services.trainer.adapters.completed import CompletedRequests
from services.trainer.adapters.kube import JobApi, JobConflict, JobGone, WatchExpired
from services.trainer.adapters.pytorchjob import SELECTOR, JobSpec, JobState, job_name, manifest, read_job
from services.trainer.domain import InvalidRequest, plan_training
from services.trainer.handlers import Publish, announce, status
from services.trainer.service import load_split
from shared.artifacts import ArtifactError, ArtifactStore
from shared.consumer_support import Backoff
from shared.events import TrainingRequested

log = logging.getLogger(__name__)


def status_event_id(request_id: str, state: str) -> str:
    """One id per request and state: a second trainer's copy of a job's ending is the same event."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"ferry:training.status:{request_id}:{state}"))


@dataclass
class ClusterTraining:
    """PyTorchJobs for the requests one trainer cannot hold, and what their runs publish."""

    jobs: JobApi
    spec: JobSpec
    publish: Publish
    store: ArtifactStore
    completed: CompletedRequests
    max_world_size: int = 64
    watch_timeout_s: int = 15
    _known: dict[str, TrainingRequested] = field(default_factory=dict)
    _running: set[str] = field(default_factory=set)

    def check(self, request: TrainingRequested) -> None:
        """Refuse, before any job exists, what the job would refuse (InvalidRequest with the reason)."""
        if request.compression.distill_from is not None:
            raise InvalidRequest("distillation needs the registry's champion; a cluster job trains without one")
        parts = load_split(request)
        if parts.dataset.is_text:
            raise InvalidRequest("a text model trains in one process; use world_size 1")
        plan_training(request, parts.dataset, budget_s=self.spec.budget_s, max_world_size=self.max_world_size)

    def submit(self, request: TrainingRequested) -> str:
        """Create the request's job, or find the one a previous delivery created; its name."""
        name = job_name(request.request_id)
        try:
            self.jobs.create(manifest(request, self.spec))
        except JobConflict:
            existing = read_job(self.jobs.get(name))
            if existing.request.request_id != request.request_id:
                raise RuntimeError(f"PyTorchJob {name} belongs to another request") from None
            log.info("PyTorchJob %s exists already (a redelivered request)", name)
        return name

    def run(self, stop: threading.Event) -> None:
        """List, then watch and renew, until ``stop``; outages of the API server or the store are waited out."""
        backoff, version = Backoff(), ""
        while not stop.is_set():
            try:
                version = version or self.resync()
                for event in self.jobs.watch(SELECTOR, version, self.watch_timeout_s):
                    self.observe(event.type, event.job)
                    version = str((event.job.get("metadata") or {}).get("resourceVersion") or version)
                    if stop.is_set():
                        return
                backoff.reset()
            except WatchExpired:
                version = ""  # list again: what happened meanwhile is in the list
            except Exception as error:  # noqa: BLE001 - the watcher outlives API server and store outages
                log.warning("watching PyTorchJobs failed (%s: %s); listing again", type(error).__name__, error)
                version = ""
                stop.wait(backoff.next())

    def resync(self) -> str:
        """Observe every job as it is now; a known job missing from the list ended unseen. The list's version."""
        items, version = self.jobs.list(SELECTOR)
        listed = set()
        for job in items:
            self.observe("ADDED", job)
            listed.add(str((job.get("metadata") or {}).get("name")))
        for name in set(self._known) - listed:
            self._vanished(name, self._known[name])
        return version

    def observe(self, kind: str, job: dict[str, Any]) -> None:
        """What one job (ADDED, MODIFIED or DELETED) says, published once by this trainer."""
        try:
            state = read_job(job)
        except (ValueError, ValidationError) as error:
            log.warning("ignoring a PyTorchJob with Ferry's label but no valid request: %s", error)
            return
        if state.name not in self._known:
            if kind == "DELETED" or state.deleting:
                return  # one this trainer announced (and deleted), or another trainer is ending
            self._known[state.name] = state.request
        if state.phase == "succeeded":
            self._succeeded(state)
        elif state.phase == "failed":
            self._failed(state, state.reason)
        elif kind == "DELETED":
            self._failed(state, f"the PyTorchJob {state.name} was deleted before it finished")
        elif state.phase == "running" and state.name not in self._running:
            self._running.add(state.name)
            self.publish(
                status(state.request, "progress", epochs=state.request.hyperparameters.epochs),
                event_id=status_event_id(state.request.request_id, "running"),
            )

    def _succeeded(self, state: JobState) -> None:
        request = state.request
        record = self.completed.get(request.request_id)
        if record is None or record.model_name != request.model_name:
            self._failed(state, f"the PyTorchJob {state.name} succeeded but recorded no artifact")
            return
        try:
            self.store.verify(record.artifact.sha256, size_bytes=record.artifact.size_bytes)
        except ArtifactError as error:
            self._failed(state, f"the PyTorchJob {state.name}'s artifact failed verification: {error}")
            return
        announce(record, self.publish)
        log.info("PyTorchJob %s trained request %s: %s", state.name, request.request_id, record.artifact.sha256)
        self._finish(state)

    def _failed(self, state: JobState, reason: str) -> None:
        reason = self.completed.failure(state.request.request_id) or reason
        self.publish(
            status(state.request, "failed", reason=reason), event_id=status_event_id(state.request.request_id, "failed")
        )
        log.info("PyTorchJob %s failed request %s: %s", state.name, state.request.request_id, reason)
        self._finish(state)

    def _vanished(self, name: str, request: TrainingRequested) -> None:
        """A job gone while no watch ran: another trainer may have announced it; else it was deleted."""
        gone = JobState(name=name, request=request, phase="pending", deleting=True)
        if self.completed.get(request.request_id) is not None:
            self._succeeded(gone)
        else:
            self._failed(gone, f"the PyTorchJob {name} was deleted before it finished")

    def _finish(self, state: JobState) -> None:
        """Forget the job and delete it: its ending is announced."""
        self._known.pop(state.name, None)
        self._running.discard(state.name)
        if state.deleting:
            return
        with contextlib.suppress(JobGone):  # another trainer deleted it first
            self.jobs.delete(state.name)
