"""A small in-memory Kubernetes API for PyTorchJobs: the calls of ``JobApi``, with resource versions, label
selectors, 409/404, and a watch that replays what happened after a version (410 when that version is gone)."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from services.trainer.adapters.completed import CompletedRequests
from services.trainer.adapters.kube import JobConflict, JobEvent, JobGone, WatchExpired
from services.trainer.adapters.pytorchjob import JobSpec
from services.trainer.cluster import ClusterTraining
from shared.artifacts import ArtifactStore
from shared.events import (
    ArtifactRef,
    Hyperparameters,
    ModelTrained,
    Signature,
    TensorSpec,
    TrainingRequested,
    TrainingStatus,
)
from shared.kafka import ListPublisher


class FakeJobs:
    """What an API server does with one namespace's PyTorchJobs, and a test's hand on their status."""

    def __init__(self, *, stop_when_idle: threading.Event | None = None) -> None:
        self.jobs: dict[str, dict[str, Any]] = {}
        self.history: list[tuple[int, str, dict[str, Any]]] = []
        self.version = 0
        self.oldest_watchable = 0
        self.failures: list[Exception] = []
        """Raised, in order, by the next calls of list (an API server away)."""
        self.stop_when_idle = stop_when_idle
        self.lists = 0

    def _record(self, kind: str, job: dict[str, Any]) -> None:
        self.version += 1
        job["metadata"]["resourceVersion"] = str(self.version)
        self.history.append((self.version, kind, copy.deepcopy(job)))

    def create(self, job: dict[str, Any]) -> dict[str, Any]:
        name = job["metadata"]["name"]
        if name in self.jobs:
            raise JobConflict(f"pytorchjobs {name!r} already exists")
        self.jobs[name] = copy.deepcopy(job)
        self._record("ADDED", self.jobs[name])
        return copy.deepcopy(self.jobs[name])

    def get(self, name: str) -> dict[str, Any]:
        if name not in self.jobs:
            raise JobGone(name)
        return copy.deepcopy(self.jobs[name])

    def delete(self, name: str) -> None:
        if name not in self.jobs:
            raise JobGone(name)
        self._record("DELETED", self.jobs.pop(name))

    def list(self, selector: str) -> tuple[list[dict[str, Any]], str]:
        self.lists += 1
        if self.failures:
            raise self.failures.pop(0)
        return [copy.deepcopy(job) for job in self.jobs.values() if _matches(job, selector)], str(self.version)

    def watch(self, selector: str, resource_version: str, timeout_s: int) -> Iterator[JobEvent]:
        if int(resource_version) < self.oldest_watchable:
            raise WatchExpired("too old resource version")
        for version, kind, job in list(self.history):
            if version > int(resource_version) and _matches(job, selector):
                yield JobEvent(kind, copy.deepcopy(job))
        if self.stop_when_idle is not None:
            self.stop_when_idle.set()  # the watch ran dry: the test's trainer stops, as at a timeout

    def set_condition(self, name: str, condition: str, message: str = "") -> None:
        """The operator's doing: a condition becomes True (Created, Running, Succeeded, Failed)."""
        job = self.jobs[name]
        conditions = job.setdefault("status", {}).setdefault("conditions", [])
        for existing in conditions:
            existing["status"] = "False" if condition in ("Succeeded", "Failed") else existing["status"]
        conditions.append({"type": condition, "status": "True", "reason": f"PyTorchJob{condition}", "message": message})
        self._record("MODIFIED", job)

    def compact(self) -> None:
        """Forget the history: a watch from an older version now gets 410 Gone."""
        self.oldest_watchable = self.version
        self.history.clear()


def _matches(job: dict[str, Any], selector: str) -> bool:
    labels = job["metadata"].get("labels") or {}
    return all(labels.get(key) == value for key, _, value in (term.partition("=") for term in selector.split(",")))


SPEC = JobSpec(image="registry.example/ferry:1", namespace="ml", config_maps=("ferry-settings",), secrets=("s3",))
SIGNATURE = Signature(
    inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, 4])],
    outputs=[TensorSpec(name="probabilities", datatype="FP32", shape=[-1, 3])],
)


def training_request(world_size: int = 4, **fields: object) -> TrainingRequested:
    """A small iris request for a world of ``world_size``."""
    values: dict[str, object] = {
        "model_name": "iris",
        "dataset": "sklearn:iris",
        "world_size": world_size,
        "hyperparameters": Hyperparameters(epochs=5, hidden_sizes=[8]),
    }
    return TrainingRequested(**(values | fields))  # type: ignore[arg-type]


class World:
    """A trainer's cluster path over a fake API, a folder store and a list publisher."""

    def __init__(self, root: Path, jobs: FakeJobs | None = None) -> None:
        self.root = root
        self.jobs = jobs or FakeJobs()
        self.publisher = ListPublisher()
        self.store = ArtifactStore(str(root / "artifacts"))
        self.completed = CompletedRequests(str(root / "artifacts"))
        self.cluster = ClusterTraining(
            self.jobs, SPEC, publish=self.publisher.publish, store=self.store, completed=self.completed
        )

    def restarted(self) -> World:
        """Another trainer process (a restart, or a second replica) on the same cluster and store."""
        return World(self.root, self.jobs)

    def states(self) -> list[str]:
        return [event.state for event in self.publisher.of_type(TrainingStatus)]

    def resync_then_watch(self) -> None:
        self.watch_from(self.cluster.resync())

    def watch_from(self, version: str) -> None:
        for event in self.jobs.watch("app.kubernetes.io/managed-by=ferry-trainer", version, 1):
            self.cluster.observe(event.type, event.job)

    def pods_record(self, request: TrainingRequested, artifact: bytes = b"onnx bytes") -> ModelTrained:
        """What rank 0 of the job does on success: the artifact in the store, its record by request id."""
        uri, sha256, size = self.store.put_bytes(artifact)
        trained = ModelTrained(
            model_name=request.model_name,
            request_id=request.request_id,
            artifact=ArtifactRef(uri=uri, sha256=sha256, size_bytes=size, format="onnx"),
            signature=SIGNATURE,
            dataset=request.dataset,
            split_id="v1-test",
            arch=request.arch,
            hyperparameters=request.hyperparameters,
        )
        self.completed.put(trained)
        return trained
