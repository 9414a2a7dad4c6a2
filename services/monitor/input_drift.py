"""Input drift in the monitor's cycle: the logged inputs' windows, the versions' references from the
registry, and each tick's measurement, handed to the rules as the monitor's own series.

The measurement becomes the samples ``ferry_monitor_input_drift_score{model,version}`` and
``ferry_monitor_input_drift_rows{model,version}`` in the engine's window (target ``INPUT_DRIFT_TARGET``),
the very gauges the monitor exports and Prometheus scrapes: both engines judge the same numbers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Protocol

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from services.monitor.domain.input_drift import FeatureDrift, InputDrift
from services.monitor.domain.input_window import InputWindows, VersionKey
from services.monitor.domain.series import Sample
from shared.events import InputReference

INPUT_DRIFT_TARGET = "monitor:input-drift"
SCORE_METRIC = "ferry_monitor_input_drift_score"
ROWS_METRIC = "ferry_monitor_input_drift_rows"


class InputReferenceSource(Protocol):
    def get(self, model: str, version: str) -> InputReference | None: ...

    def refresh(self, wanted: set[tuple[str, str]]) -> None: ...


class NoInputReferences:
    """No registry: no version has a reference, so nothing is measured."""

    def get(self, model: str, version: str) -> InputReference | None:
        return None

    def refresh(self, wanted: set[tuple[str, str]]) -> None:
        return None


class InputDriftTracker:
    """The windows the consumer feeds, and the latest measurement of each version."""

    def __init__(self, windows: InputWindows, references: InputReferenceSource) -> None:
        self.windows = windows
        self._references = references
        self._latest: dict[VersionKey, InputDrift] = {}
        self._lock = threading.Lock()

    def refresh(self) -> None:
        """Fetch the references of the versions with logged inputs (I/O: outside the engine's lock)."""
        self._references.refresh(self.windows.versions())

    def measure(self) -> list[Sample]:
        """Measure every version now; the score and rows samples of each."""
        found = self.windows.measure(self._references.get)
        with self._lock:
            self._latest = found
        return samples_of(found.values())

    def latest(self) -> dict[VersionKey, InputDrift]:
        """The last measurement per (model, version), for the API and the gauges."""
        with self._lock:
            return dict(self._latest)


def samples_of(drifts: Iterable[InputDrift]) -> list[Sample]:
    """The score and rows of each measured version, as series samples."""
    samples = []
    for drift in drifts:
        labels = {"model": drift.model, "version": drift.version}
        samples.append(Sample(SCORE_METRIC, labels, drift.score))
        samples.append(Sample(ROWS_METRIC, labels, float(drift.rows)))
    return samples


def register_input_drift_gauges(tracker: InputDriftTracker) -> None:
    """The monitor's input drift gauges: the score and rows per version (both engines' input_drift rules read
    them), and each reference feature's PSI and p-value (at most MAX_REFERENCE_FEATURES per version)."""
    meter = metrics.get_meter("ferry.monitor")

    def per_version(value: Callable[[InputDrift], float]) -> Callable[[CallbackOptions], list[Observation]]:
        def observe(_: CallbackOptions) -> list[Observation]:
            return [Observation(value(d), {"model": m, "version": v}) for (m, v), d in tracker.latest().items()]

        return observe

    def per_feature(value: Callable[[FeatureDrift], float]) -> Callable[[CallbackOptions], list[Observation]]:
        def observe(_: CallbackOptions) -> list[Observation]:
            return [
                Observation(value(feature), {"model": m, "version": v, "feature": feature.feature})
                for (m, v), drift in tracker.latest().items()
                for feature in drift.features
            ]

        return observe

    gauges = {
        "ferry.monitor.input.drift.score": (per_version(lambda d: d.score), "share of input features that drift"),
        "ferry.monitor.input.drift.rows": (per_version(lambda d: d.rows), "logged input rows measured"),
        "ferry.monitor.feature.drift.psi": (per_feature(lambda f: f.psi), "PSI of a feature against training"),
        "ferry.monitor.feature.drift.p.value": (per_feature(lambda f: f.p_value), "chi-square p-value of a feature"),
    }
    for name, (callback, description) in gauges.items():
        meter.create_observable_gauge(name, [callback], unit="1", description=description)
