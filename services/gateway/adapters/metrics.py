"""The gateway's OpenTelemetry instruments, named as the monitor's rules expect them in Prometheus.

``a.b.c`` with unit ``s`` is exposed as ``a_b_c_seconds``, a counter gains ``_total``, and a unit in
braces adds nothing: ``ferry_gateway_requests_total``, ``ferry_gateway_request_duration_seconds``,
``ferry_gateway_batch_size``, ``ferry_gateway_queue_depth``, ``ferry_gateway_inflight``,
``ferry_gateway_shed_total``, ``ferry_gateway_rate_limited_total``, ``ferry_gateway_predictions_total``,
``ferry_gateway_shadow_comparisons_total``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
# The shared telemetry set-up gives every ``*duration*`` histogram in seconds buckets from 50 µs up;
# the advisory repeats them for a process that did not install that view.
DURATION_BUCKETS_S = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                      0.5, 1.0, 2.5, 5.0, 10.0)  # fmt: skip


class GatewayMetrics:
    """Every instrument of the gateway; the gauges read their values from callbacks at scrape time."""

    def __init__(
        self,
        *,
        inflight: Callable[[], int],
        queue_depths: Callable[[], Iterable[tuple[str, int, int]]],
    ) -> None:
        meter = metrics.get_meter("ferry.gateway")
        self.requests = meter.create_counter("ferry.gateway.requests", unit="{request}",
                                             description="requests by model, version, route and outcome")  # fmt: skip
        self.duration = meter.create_histogram(
            "ferry.gateway.request.duration", unit="s", description="time to answer, per version that ran",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S,
        )  # fmt: skip
        self.batch_size = meter.create_histogram(
            "ferry.gateway.batch.size", unit="{request}", description="requests per session.run",
            explicit_bucket_boundaries_advisory=BATCH_BUCKETS,
        )  # fmt: skip
        self.shed = meter.create_counter("ferry.gateway.shed", unit="{request}",
                                         description="work refused at the bound on work in flight")  # fmt: skip
        self.rate_limited = meter.create_counter("ferry.gateway.rate_limited", unit="{request}",
                                                 description="requests refused by a client's token bucket")  # fmt: skip
        self.predictions = meter.create_counter("ferry.gateway.predictions", unit="{prediction}",
                                                description="predicted classes per version, for drift")  # fmt: skip
        self.shadow_comparisons = meter.create_counter(
            "ferry.gateway.shadow_comparisons", unit="{comparison}",
            description="rows where the shadow (challenger) agreed with the champion, or not",
        )  # fmt: skip
        self.swaps = meter.create_counter(
            "ferry.gateway.deployments", unit="{deployment}", description="deployment changes by outcome"
        )

        def observe_inflight(_: CallbackOptions) -> list[Observation]:
            return [Observation(inflight())]

        def observe_queues(_: CallbackOptions) -> list[Observation]:
            return [Observation(depth, {"model": model, "version": str(version)})
                    for model, version, depth in queue_depths()]  # fmt: skip

        meter.create_observable_gauge("ferry.gateway.inflight", [observe_inflight], unit="{request}",
                                      description="requests admitted and not yet answered")  # fmt: skip
        meter.create_observable_gauge("ferry.gateway.queue_depth", [observe_queues], unit="{request}",
                                      description="requests waiting for a batch, per version")  # fmt: skip

    def request(self, model: str, version: int, route: str, outcome: str, seconds: float | None) -> None:
        labels = {"model": model, "version": str(version)}
        self.requests.add(1, {**labels, "route": route, "outcome": outcome})
        if seconds is not None:
            self.duration.record(seconds, labels)

    def predicted(self, model: str, version: int, output: np.ndarray) -> None:
        """Count each row's predicted class (the arg-max of a 2-D output)."""
        if output.ndim != 2 or output.shape[0] == 0:
            return
        version_label = str(version)
        if output.shape[0] == 1:  # the common case, without np.unique's sort
            self.predictions.add(1, {"model": model, "version": version_label, "class": str(int(output[0].argmax()))})
            return
        classes, counts = np.unique(output.argmax(axis=1), return_counts=True)
        for predicted_class, count in zip(classes.tolist(), counts.tolist(), strict=False):
            self.predictions.add(count, {"model": model, "version": version_label, "class": str(predicted_class)})
