"""A small in-memory Kubernetes API for PyTorchJobs: the calls of ``JobApi``, with resource versions, label
selectors, 409/404, and a watch that replays what happened after a version (410 when that version is gone)."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from typing import Any

from services.trainer.adapters.kube import JobConflict, JobEvent, JobGone, WatchExpired


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
