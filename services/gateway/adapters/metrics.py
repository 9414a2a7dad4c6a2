"""The gateway's metrics, named as the monitor's rules expect them in Prometheus.

The request path only bumps plain counters in this process (a dict update, well under a microsecond);
the values are read when ``/metrics`` is scraped (or OTLP exports). The OpenTelemetry SDK costs 30-40
µs per measurement, more than the whole request path of a minimal ASGI server (bench/gateway_bench.py),
so counters and gauges are OpenTelemetry *observable* instruments over these aggregates (Prometheus and
OTLP both see them), and the two histograms, for which OpenTelemetry has no observable instrument, are
exposed by a Prometheus collector in the same registry. Exposed names:

``ferry_gateway_requests_total{model,version,route,outcome}``, ``ferry_gateway_request_duration_seconds``
``{model,version}``, ``ferry_gateway_batch_size{model,version}``, ``ferry_gateway_queue_depth``
``{model,version}``, ``ferry_gateway_inflight``, ``ferry_gateway_shed_total{model,kind}``,
``ferry_gateway_rate_limited_total{model}``, ``ferry_gateway_predictions_total{model,version,class}``,
``ferry_gateway_shadow_comparisons_total{model,version,agreed}``, ``ferry_gateway_deployments_total``
``{model,outcome}``; many models per process (``residency.py``): ``ferry_gateway_loads_total{model,outcome}``,
``ferry_gateway_evictions_total{model,reason}``, ``ferry_gateway_cold_start_seconds{model,version}`` (a
version's load on demand), ``ferry_gateway_memory_used_bytes{device}``, ``ferry_gateway_memory_budget_bytes``
``{device}`` and ``ferry_gateway_resident_versions``.
"""

from __future__ import annotations

import bisect
import threading
import weakref
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from prometheus_client import REGISTRY
from prometheus_client.core import HistogramMetricFamily

from shared.events import Signature
from shared.regression import as_values, bin_of

DURATION_BUCKETS_S = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
Labels = tuple[str, ...]

COUNTERS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    # attribute of GatewayMetrics: (OpenTelemetry name, unit, label names)
    "requests": ("ferry.gateway.requests", "{request}", ("model", "version", "route", "outcome")),
    "shed": ("ferry.gateway.shed", "{request}", ("model", "kind")),
    "rate_limited": ("ferry.gateway.rate_limited", "{request}", ("model",)),
    "predictions": ("ferry.gateway.predictions", "{prediction}", ("model", "version", "class")),
    "shadow_comparisons": ("ferry.gateway.shadow_comparisons", "{comparison}", ("model", "version", "agreed")),
    "deployments": ("ferry.gateway.deployments", "{deployment}", ("model", "outcome")),
    "loads": ("ferry.gateway.loads", "{load}", ("model", "outcome")),
    "evictions": ("ferry.gateway.evictions", "{eviction}", ("model", "reason")),
}
HISTOGRAMS: dict[str, tuple[str, tuple[float, ...]]] = {
    "duration": ("ferry_gateway_request_duration_seconds", DURATION_BUCKETS_S),
    "batch_size": ("ferry_gateway_batch_size", BATCH_BUCKETS),
    "cold_start": ("ferry_gateway_cold_start_seconds", DURATION_BUCKETS_S),
}
Memory = Callable[[], Iterable[tuple[str, int, int, int]]]
"""Per device: (device, bytes counted, bytes allowed (0: no limit), resident versions)."""


class LocalHistogram:
    """Bucket counts and sums per label set."""

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.series: dict[Labels, list[float]] = {}  # counts per bucket (+Inf last), then the sum

    def record(self, labels: Labels, value: float) -> None:
        series = self.series.get(labels)
        if series is None:
            series = self.series[labels] = [0.0] * (len(self.bounds) + 2)
        series[bisect.bisect_left(self.bounds, value)] += 1
        series[-1] += value


class GatewayMetrics:
    """This gateway's aggregates; every live instance is exported (tests build several in one process)."""

    def __init__(
        self, *, inflight: Callable[[], int], queue_depths: Callable[[], Iterable[tuple[str, int, int]]]
    ) -> None:
        self.inflight = inflight
        self.queue_depths = queue_depths
        self.memory: Memory = lambda: ()
        self.counters: dict[str, defaultdict[Labels, float]] = {name: defaultdict(float) for name in COUNTERS}
        self.histograms = {name: LocalHistogram(bounds) for name, (_, bounds) in HISTOGRAMS.items()}
        _install_exporters()
        _LIVE.add(self)

    def prepare(self, model: str, version: int) -> None:
        """Zero series for a version just loaded: a rate over a series that appears with its first error
        would miss that error, and an error ratio needs its numerator's series from the start."""
        requests = self.counters["requests"]
        for route in ("champion", "canary"):
            for outcome in ("ok", "error", "timeout"):
                requests.setdefault((model, str(version), route, outcome), 0.0)

    def count(self, counter: str, labels: Labels, amount: float = 1) -> None:
        self.counters[counter][labels] += amount

    def request(self, model: str, version: int, route: str, outcome: str, seconds: float | None) -> None:
        version_label = str(version)
        self.counters["requests"][(model, version_label, route, outcome)] += 1
        if seconds is not None:
            self.histograms["duration"].record((model, version_label), seconds)

    def loaded(self, model: str, version: int, outcome: str, seconds: float | None) -> None:
        """A version's session loaded on demand (or at start in the background), or its load failed."""
        self.counters["loads"][(model, outcome)] += 1
        if seconds is not None:
            self.histograms["cold_start"].record((model, str(version)), seconds)

    def batch(self, model: str, version: int, size: int) -> None:
        self.histograms["batch_size"].record((model, str(version)), size)

    def predicted(self, model: str, version: int, output: np.ndarray, signature: Signature | None = None) -> None:
        """Count each row's predicted class (the arg-max of a 2-D output); a regressor's, the drift bin of its
        predicted value (bins from its signature; none counted without them)."""
        counts = self.counters["predictions"]
        version_label = str(version)
        if signature is not None and signature.is_regressor:
            values = as_values(output)
            if signature.bin_edges is None or values is None or values.shape[0] == 0:
                return
            for predicted_bin, count in zip(
                *np.unique(bin_of(values, signature.bin_edges), return_counts=True), strict=True
            ):
                counts[(model, version_label, str(int(predicted_bin)))] += int(count)
            return
        if output.ndim != 2 or output.shape[0] == 0:
            return
        if output.shape[0] == 1:
            counts[(model, version_label, str(int(output[0].argmax())))] += 1
            return
        for predicted_class, count in zip(*np.unique(output.argmax(axis=1), return_counts=True), strict=True):
            counts[(model, version_label, str(int(predicted_class)))] += int(count)


_LIVE: weakref.WeakSet[GatewayMetrics] = weakref.WeakSet()
_installed = threading.Lock()
_done: list[bool] = []


def _install_exporters() -> None:
    """Once per process: the observable instruments and the histogram collector, over every live instance."""
    with _installed:
        if _done:
            return
        _done.append(True)
        meter = metrics.get_meter("ferry.gateway")
        for attribute, (name, unit, label_names) in COUNTERS.items():
            meter.create_observable_counter(name, [_counter_callback(attribute, label_names)], unit=unit)
        meter.create_observable_gauge(
            "ferry.gateway.inflight",
            [_inflight],
            unit="{request}",
            description="requests admitted and not yet answered",
        )
        meter.create_observable_gauge(
            "ferry.gateway.queue_depth",
            [_queues],
            unit="{request}",
            description="requests waiting for a batch, per version",
        )
        for name, index, unit, description in (
            ("ferry.gateway.memory_used", 1, "By", "memory counted for loaded sessions, per device"),
            ("ferry.gateway.memory_budget", 2, "By", "memory allowed for loaded sessions (0: no limit)"),
            ("ferry.gateway.resident_versions", 3, "{version}", "versions with a session loaded, per device"),
        ):
            meter.create_observable_gauge(name, [_memory_callback(index)], unit=unit, description=description)
        REGISTRY.register(_HistogramCollector())


def _counter_callback(attribute: str, label_names: tuple[str, ...]) -> Callable[[CallbackOptions], list[Observation]]:
    def observe(_: CallbackOptions) -> list[Observation]:
        merged: defaultdict[Labels, float] = defaultdict(float)
        for instance in list(_LIVE):
            for labels, value in list(instance.counters[attribute].items()):
                merged[labels] += value
        return [Observation(value, dict(zip(label_names, labels, strict=True))) for labels, value in merged.items()]

    return observe


def _memory_callback(index: int) -> Callable[[CallbackOptions], list[Observation]]:
    def observe(_: CallbackOptions) -> list[Observation]:
        merged: defaultdict[str, int] = defaultdict(int)
        for instance in list(_LIVE):
            for row in instance.memory():
                merged[row[0]] += int(row[index])
        return [Observation(value, {"device": device}) for device, value in merged.items()]

    return observe


def _inflight(_: CallbackOptions) -> list[Observation]:
    return [Observation(sum(instance.inflight() for instance in list(_LIVE)))]


def _queues(_: CallbackOptions) -> list[Observation]:
    return [
        Observation(depth, {"model": model, "version": str(version)})
        for instance in list(_LIVE)
        for model, version, depth in instance.queue_depths()
    ]


class _HistogramCollector:
    """Exposes the local histograms in Prometheus' text format, beside OpenTelemetry's metrics."""

    def collect(self) -> Iterator[Any]:
        for attribute, (name, bounds) in HISTOGRAMS.items():
            family = HistogramMetricFamily(name, f"gateway {attribute.replace('_', ' ')}", labels=["model", "version"])
            merged: dict[Labels, list[float]] = {}
            for instance in list(_LIVE):
                for labels, series in list(instance.histograms[attribute].series.items()):
                    into = merged.setdefault(labels, [0.0] * len(series))
                    for index, value in enumerate(series):
                        into[index] += value
            for labels, series in merged.items():
                cumulative, buckets = 0.0, []
                for bound, count in zip([*map(str, bounds), "+Inf"], series[:-1], strict=True):
                    cumulative += count
                    buckets.append((bound, cumulative))
                family.add_metric(list(labels), buckets, series[-1])
            yield family
