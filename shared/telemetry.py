"""Telemetry set-up: OpenTelemetry metrics (Prometheus on /metrics, OTLP when configured),
a tracer provider, and JSON logs that carry the trace ids."""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

# Sub-millisecond inference and request times need finer buckets than OTel's defaults.
LATENCY_BUCKETS_MS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)
# The same bounds for histograms whose unit is the second (``..._seconds`` in Prometheus), from 50 µs.
LATENCY_BUCKETS_S = (0.00005, *(bound / 1000 for bound in LATENCY_BUCKETS_MS))


@dataclass
class Telemetry:
    meter_provider: MeterProvider
    tracer_provider: TracerProvider

    def shutdown(self) -> None:
        self.meter_provider.shutdown()
        self.tracer_provider.shutdown()


def setup_telemetry(service: str, *, log_level: str = "INFO", json_logs: bool = True) -> Telemetry:
    """Install the global meter and tracer providers for this process; call once, from bootstrap."""
    resource = Resource.create({"service.name": f"ferry-{service}", "service.namespace": "ferry"})
    readers: list[MetricReader] = [PrometheusMetricReader()]
    otlp = spans_exported()
    if otlp:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    # Bucket bounds follow the instrument's unit: milliseconds and seconds each get their own.
    views = [
        View(instrument_name=pattern, instrument_unit=unit, aggregation=ExplicitBucketHistogramAggregation(bounds))
        for pattern in ("*latency*", "*duration*")
        for unit, bounds in (("ms", LATENCY_BUCKETS_MS), ("s", LATENCY_BUCKETS_S))
    ]
    meter_provider = MeterProvider(resource=resource, metric_readers=readers, views=views)
    metrics.set_meter_provider(meter_provider)
    tracer_provider = TracerProvider(resource=resource)
    if otlp:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(tracer_provider)
    configure_logging(service, level=log_level, json_logs=json_logs)
    return Telemetry(meter_provider, tracer_provider)


def spans_exported() -> bool:
    """Whether this process exports traces (OTLP configured): only then is a span per message worth its cost."""
    return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))


def metrics_payload() -> tuple[bytes, str]:
    """The Prometheus text exposition of this process's metrics, and its content type."""
    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST


class JsonFormatter(logging.Formatter):
    """One JSON object per line, with the active trace and span ids."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self._service = service

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "service": self._service,
            "logger": record.name,
            "message": record.getMessage(),
        }
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            entry["trace_id"] = format(context.trace_id, "032x")
            entry["span_id"] = format(context.span_id, "016x")
        event = getattr(record, "event", None)
        if event is not None:  # e.g. "client_error": a mistake of the caller's, not the service's
            entry["event"] = event
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


CLIENT_ERROR = {"event": "client_error"}
"""``extra=`` of a log call about a client's mistake (a bad request, a malformed event): WARNING or INFO,
never ERROR, and marked so that an operator can tell them from the service's own failures."""


def _mark_invalid_requests(record: logging.LogRecord) -> bool:
    """uvicorn reports a malformed HTTP request on its ``uvicorn.error`` logger: a client's mistake."""
    if record.name == "uvicorn.error" and str(record.msg).startswith("Invalid HTTP request"):
        record.event = "client_error"
    return True


def configure_logging(service: str, *, level: str = "INFO", json_logs: bool = True) -> None:
    """Route the root logger to stderr, as JSON lines by default."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_mark_invalid_requests)
    handler.setFormatter(
        JsonFormatter(service) if json_logs else logging.Formatter("%(levelname)s %(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("kafka").setLevel(logging.WARNING)  # kafka-python logs every connection at INFO
    # httpx and httpcore log every request at INFO: the monitor's scrapes and the registry clients' calls
    # would fill the log with lines nobody reads. FERRY_HTTP_CLIENT_LOG_LEVEL=INFO brings them back.
    http_level = os.environ.get("FERRY_HTTP_CLIENT_LOG_LEVEL", "WARNING").upper()
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(http_level)
