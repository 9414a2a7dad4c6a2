"""What online accuracy needs from the registry, and the gauges that expose it.

Per served version: its class names (a feedback label given by name is resolved through them) and the lower
bound of its evaluated accuracy, ``report["candidate"]["intervals"]["accuracy"]["low"]`` of the newest
evaluation report that has one: the bound the online accuracy alert compares with. Both are cached, read by
the thread of :class:`OnlineView` (never by the consumer), and a registry away only delays them.

The gauges ``ferry_monitor_online_accuracy``, ``ferry_monitor_online_feedback_count``,
``ferry_monitor_online_rmse``, ``ferry_monitor_online_value_count`` and
``ferry_monitor_evaluation_accuracy_low`` (all ``{model, version}``) are what the ``online_accuracy`` rule
reads, in the monitor's own engine (it scrapes the monitor, itself included) as in Prometheus.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from services.monitor.domain.online_accuracy import OnlineAccuracy, Score
from shared.events import MODEL_NAME_PATTERN
from shared.registry_client import RegistryClient
from shared.registry_errors import RegistryError, RegistryNotFound

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Facts:
    labels: tuple[str, ...] | None
    accuracy_low: float | None


def accuracy_low_of(reports: Iterable[Mapping[str, Any]]) -> float | None:
    """The lower bound of the candidate's accuracy in the newest report that has one; each level is checked."""
    for report in reports:
        candidate = report.get("candidate")
        intervals = candidate.get("intervals") if isinstance(candidate, dict) else None
        accuracy = intervals.get("accuracy") if isinstance(intervals, dict) else None
        low = accuracy.get("low") if isinstance(accuracy, dict) else None
        if isinstance(low, int | float) and not isinstance(low, bool) and math.isfinite(low):
            return float(low)
    return None


class RegistryFacts:
    """Class names and evaluated accuracy bounds per (model, version), from the registry, cached."""

    def __init__(
        self, client: RegistryClient, *, ttl_s: float = 300.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._client = client
        self._ttl_s = ttl_s
        self._clock = clock
        self._cache: dict[tuple[str, int], tuple[float, Facts]] = {}
        self._lock = threading.Lock()

    def get(self, model: str, version: int) -> Facts | None:
        with self._lock:
            entry = self._cache.get((model, version))
        return entry[1] if entry else None

    def labels(self, model: str, version: int) -> Sequence[str] | None:
        found = self.get(model, version)
        return found.labels if found else None

    def refresh(self, wanted: Iterable[tuple[str, int]]) -> None:
        """Fetch what is wanted and not freshly cached; a failure leaves the cache as it was."""
        now = self._clock()
        for model, version in sorted(set(wanted)):
            entry = self._cache.get((model, version))
            if entry and entry[0] > now or not re.match(MODEL_NAME_PATTERN, model):
                continue
            try:
                facts = self.fetch(model, version)
            except RegistryError as error:
                log.warning("facts of %s v%s not available yet: %s", model, version, error)
                continue
            # Cached briefly while the bound is unknown: the evaluator may not have judged the version yet.
            ttl = self._ttl_s if facts.accuracy_low is not None else min(self._ttl_s, 30.0)
            with self._lock:
                self._cache[(model, version)] = (now + ttl, facts)

    def fetch(self, model: str, version: int) -> Facts:
        try:
            found = self._client.version(model, version)
            evaluations = self._client.evaluations(model, version, limit=20)
        except RegistryNotFound:
            return Facts(None, None)
        labels = tuple(found.signature.labels) if found.signature.labels else None
        return Facts(labels, accuracy_low_of(evaluation.report for evaluation in evaluations))

    def close(self) -> None:
        self._client.close()


class FactSource(Protocol):
    """What :class:`OnlineView` reads: RegistryFacts, or a test's fake."""

    def labels(self, model: str, version: int) -> Sequence[str] | None: ...

    def get(self, model: str, version: int) -> Facts | None: ...

    def refresh(self, wanted: Iterable[tuple[str, int]]) -> None: ...


class OnlineView:
    """Recomputes the scores every interval on its own thread (after refreshing the facts) and keeps them for
    the gauges and the API: a scrape of /metrics never waits for the registry."""

    def __init__(self, online: OnlineAccuracy, facts: FactSource) -> None:
        self.online = online
        self.facts = facts
        self.scores: dict[tuple[str, int], Score] = {}
        self.bounds: dict[tuple[str, int], float] = {}

    def update(self) -> None:
        versions = self.online.versions()
        self.facts.refresh(versions)
        self.scores = self.online.scores(self.facts.labels)
        bounds = {}
        for key in versions:
            found = self.facts.get(*key)
            if found is not None and found.accuracy_low is not None:
                bounds[key] = found.accuracy_low
        self.bounds = bounds

    def run(self, stop: threading.Event, interval_s: float) -> None:
        """Update every ``interval_s`` until ``stop``; a failed update is logged and the next one comes."""
        while not stop.is_set():
            try:
                self.update()
            except Exception:  # noqa: BLE001 - the next update tries again
                log.exception("online accuracy update failed")
            stop.wait(interval_s)


def register_online_gauges(view: OnlineView) -> None:
    """The gauges of the online scores and of the evaluated bounds, per (model, version)."""
    meter = metrics.get_meter("ferry.monitor")

    def score_gauge(read: Callable[[Score], float | None]) -> Callable[[CallbackOptions], list[Observation]]:
        def observe(_: CallbackOptions) -> list[Observation]:
            found = []
            for (model, version), score in list(view.scores.items()):
                value = read(score)
                if value is not None:
                    found.append(Observation(value, {"model": model, "version": str(version)}))
            return found

        return observe

    def bound(_: CallbackOptions) -> list[Observation]:
        return [Observation(low, {"model": m, "version": str(v)}) for (m, v), low in list(view.bounds.items())]

    for name, read, description in (
        ("ferry.monitor.online.accuracy", lambda s: s.accuracy, "share of judged answers feedback found right"),
        ("ferry.monitor.online.feedback_count", lambda s: s.count or None, "judged answers the accuracy rests on"),
        ("ferry.monitor.online.rmse", lambda s: s.rmse, "root mean squared error of a regressor's judged answers"),
        ("ferry.monitor.online.value_count", lambda s: s.value_count or None, "judged values the RMSE rests on"),
    ):
        meter.create_observable_gauge(name, [score_gauge(read)], unit="1", description=description)
    meter.create_observable_gauge(
        "ferry.monitor.evaluation.accuracy_low",
        [bound],
        unit="1",
        description="lower bound of the evaluated accuracy (the evaluation report's interval)",
    )
