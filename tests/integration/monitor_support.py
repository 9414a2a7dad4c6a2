"""Helpers for the monitor's integration tests: a stand-in target with the gateway's metric names,
the monitor as a real process, a watcher of the ``alert`` topic, a webhook receiver.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import threading
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from support import ServiceProcess, free_port, wait_for

from services.monitor.provisioning.render import to_yaml
from shared.envelope import decode
from shared.events import AlertChanged, InferenceLogged, InputReference, LoggedTensor, new_id
from shared.kafka import Publisher, make_consumer
from shared.local.stack import PROJECT_ROOT
from shared.registry_models import EvaluationOut, VersionOut
from shared.settings import FerrySettings


class _Server:
    """A threading HTTP server on a free loopback port, stopped by ``close``."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.port = free_port()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class FakeGateway:
    """Prometheus text with the gateway's metric names, driven by a traffic thread: each tick adds
    requests (failing at ``error_rate``, lasting ``latency_s``) and predictions (by ``class_weights``) for
    one model version; ``consumer_lag`` sets the Kafka consumer lag gauge of a group."""

    def __init__(self, model: str = "digits", version: str = "1") -> None:
        self.model, self.version = model, version
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "ferry_gateway_requests", "", ["model", "version", "route", "outcome"], registry=self.registry
        )
        self.predictions = Counter(
            "ferry_gateway_predictions", "", ["model", "version", "class"], registry=self.registry
        )
        self.duration = Histogram(
            "ferry_gateway_request_duration_seconds",
            "",
            ["model", "version"],
            buckets=(0.001, 0.01, 0.1, 1),
            registry=self.registry,
        )
        self.lag = Gauge("ferry_kafka_consumer_lag", "", ["group"], registry=self.registry)
        self.error_rate = 0.0
        self.latency_s = 0.005
        self.class_weights: dict[str, int] = {}
        self.per_tick = 20
        self.publisher: Publisher | None = None
        """Set, the gateway also logs inputs to ``inference.logged`` (``log_inputs``)."""
        self._stop = threading.Event()
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                body = generate_latest(gateway.registry)
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _Server(Handler)
        self._traffic = threading.Thread(target=self._run, daemon=True)
        self._traffic.start()

    @property
    def url(self) -> str:
        return f"{self.server.url}/metrics"

    def consumer_lag(self, group: str, lag: float) -> None:
        self.lag.labels(group).set(lag)

    def log_inputs(self, rows: np.ndarray) -> None:
        assert self.publisher is not None, "give the fake gateway a publisher to log inputs"
        log_inputs(self.publisher, rows, version=int(self.version), model=self.model)

    def _run(self) -> None:
        for outcome in ("ok", "error"):  # as the gateway does: every outcome's series exists from the start
            self.requests.labels(self.model, self.version, "champion", outcome).inc(0)
        while not self._stop.wait(0.2):
            failed = round(self.per_tick * self.error_rate)
            self.requests.labels(self.model, self.version, "champion", "error").inc(failed)
            self.requests.labels(self.model, self.version, "champion", "ok").inc(self.per_tick - failed)
            for cls, weight in self.class_weights.items():
                self.predictions.labels(self.model, self.version, cls).inc(weight)
            self.duration.labels(self.model, self.version).observe(self.latency_s)

    def close(self) -> None:
        self._stop.set()
        self.server.close()


def version_body(model: str, version: int, input_reference: InputReference) -> bytes:
    """A version as the registry shows it, carrying ``input_reference``."""
    now = datetime.now(UTC)
    shown = VersionOut.model_validate(
        {
            "model_name": model,
            "version": version,
            "status": "registered",
            "artifact": {"uri": "file:///x", "sha256": "0" * 64, "size_bytes": 1, "format": "onnx"},
            "signature": {"inputs": [], "outputs": []},
            "metrics": {},
            "dataset": "sklearn:iris",
            "split_id": "s",
            "arch": "mlp",
            "hyperparameters": {},
            "compression": {},
            "timings": {},
            "training_request_id": None,
            "parent_model": None,
            "parent_version": None,
            "source_event_id": None,
            "tags": {},
            "created_at": now,
            "updated_at": now,
            "input_reference": input_reference,
        }
    )
    return shown.model_dump_json().encode()


class FakeRegistry:
    """The registry's evaluations route, answering a promote decision whose report carries ``reference`` (the
    drift reference) for each version of ``references``, and its version route for each of ``input_references``
    (the input drift reference); any other path is a 404."""

    def __init__(
        self,
        references: dict[tuple[str, str], dict[str, float]],
        input_references: dict[tuple[str, str], InputReference] | None = None,
    ) -> None:
        def body(model: str, version: str, reference: dict[str, float]) -> bytes:
            evaluation = EvaluationOut(
                candidate_version=int(version),
                baseline_version=None,
                metrics={},
                baseline_metrics={},
                decision="promote",
                stage="champion",
                canary_weight=None,
                reason="the test's reference",
                actor="evaluator",
                source_event_id=None,
                created_at=datetime.now(UTC),
                report={"candidate": {"prediction_distribution": reference}},
            )
            return json.dumps([evaluation.model_dump(mode="json")]).encode()

        answers = {
            f"/api/v1/models/{model}/versions/{version}/evaluations": body(model, version, reference)
            for (model, version), reference in references.items()
        }
        for (model, version), input_reference in (input_references or {}).items():
            answers[f"/api/v1/models/{model}/versions/{version}"] = version_body(model, int(version), input_reference)

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                found = answers.get(self.path.partition("?")[0])
                payload = found if found is not None else b'{"error": "not found"}'
                self.send_response(200 if found is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _Server(Handler)
        self.url = self.server.url

    def close(self) -> None:
        self.server.close()


def log_inputs(
    publisher: Publisher, rows: np.ndarray, *, version: int, model: str = "digits", per_record: int = 10
) -> None:
    """Publish ``rows`` as the gateway logs answered requests: ``inference.logged`` records of ``per_record`` rows."""
    for start in range(0, len(rows), per_record):
        batch = np.asarray(rows[start : start + per_record], dtype=np.float64)
        tensor = LoggedTensor(name="input", datatype="FP32", shape=list(batch.shape), data=batch.ravel().tolist())
        publisher.publish(
            InferenceLogged(
                model_name=model,
                request_id=new_id(),
                version=version,
                route="champion",
                inputs=[tensor],
                outputs=[],
            )
        )


class WebhookReceiver:
    """Records the JSON bodies POSTed to it."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                receiver.bodies.append(json.loads(self.rfile.read(length)))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = _Server(Handler)
        self.url = f"{self.server.url}/hook"

    def statuses(self, rule: str) -> list[str]:
        return [
            alert["status"] for body in self.bodies for alert in body["alerts"] if alert["labels"]["alertname"] == rule
        ]

    def close(self) -> None:
        self.server.close()


class AlertWatcher:
    """Collects every AlertChanged on the ``alert`` topic from the start, in a background thread."""

    def __init__(self, settings: FerrySettings) -> None:
        self.events: list[tuple[AlertChanged, str]] = []
        self._consumer = make_consumer(settings, f"watch-{uuid.uuid4().hex[:8]}", [AlertChanged.topic])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for records in self._consumer.poll(timeout_ms=200).values():
                for record in records:
                    decoded = decode(record.headers, record.key, record.value)
                    assert isinstance(decoded.event, AlertChanged)
                    self.events.append((decoded.event, decoded.meta.event_id))

    def of(self, rule: str, state: str | None = None) -> list[AlertChanged]:
        return [e for e, _ in list(self.events) if e.rule == rule and (state is None or e.state == state)]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._consumer.close()


SHORT = {"window": "4s", "for": "1s"}


def short_rules(path: Path, *, drift_min_samples: int = 20) -> Path:
    """The shipped rules with windows and ``for`` durations shortened (same kinds, metrics, thresholds)."""
    document = yaml.safe_load((PROJECT_ROOT / "deploy" / "alerts" / "rules.yaml").read_text())
    for rule in document["rules"]:
        rule["for"] = SHORT["for"]
        if "window" in rule:
            rule["window"] = SHORT["window"]
        if rule["kind"] == "drift":
            rule["min_samples"] = drift_min_samples
    path.write_text(yaml.safe_dump(document))
    return path


def base_env(settings: FerrySettings, home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "FERRY_HOME": str(home),
        "FERRY_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "FERRY_TOPIC_PREFIX": settings.topic_prefix,
        "FERRY_ARTIFACT_ROOT": settings.resolved_artifact_root,
        "PYTHONUNBUFFERED": "1",
    }


def start_monitor(env: dict[str, str], tmp_path: Path, **settings: str) -> tuple[ServiceProcess, str]:
    """A monitor process on a port of its own, ready; returns it and its URL."""
    env = {
        **env,
        "FERRY_MONITOR_SCRAPE_INTERVAL_S": "0.5",
        "FERRY_MONITOR_CONSUMER_GROUP": f"monitor-{uuid.uuid4().hex[:8]}",
        **{f"FERRY_MONITOR_{key.upper()}": value for key, value in settings.items()},
    }
    monitor = ServiceProcess("monitor", env, tmp_path / "monitor.log").start()
    return monitor, monitor.url


def active(monitor_url: str, rule: str, state: str = "firing") -> list[dict[str, Any]]:
    alerts = httpx.get(f"{monitor_url}/api/v1/alerts", timeout=10).json()["active"]
    return [alert for alert in alerts if alert["rule"] == rule and alert["state"] == state]


ALERTMANAGER = "prometheus-alertmanager"
_WEBHOOK_SENT = re.compile(
    r'^alertmanager_notifications_(total|failed_total)\{[^}]*integration="webhook"[^}]*\} (\S+)$', re.MULTILINE
)


def skip_without(*binaries: str) -> None:
    """Skip the test, naming the Debian package to install, when a binary it runs is missing."""
    packages = {"prometheus": "prometheus", "promtool": "prometheus", ALERTMANAGER: "prometheus-alertmanager"}
    missing = [name for name in binaries if shutil.which(name) is None]
    if missing:
        wanted = sorted({packages.get(name, name) for name in missing})
        pytest.skip(f"{', '.join(missing)} not installed (Debian: apt-get install {' '.join(wanted)})")


class Alertmanager:
    """A real Alertmanager (Debian's ``prometheus-alertmanager``) on a port of its own, clustering off: two of
    them are an HA pair that has not met, so each sends every notification, as peers do across a partition."""

    def __init__(self, config: dict[str, Any], folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "alertmanager.yml").write_text(to_yaml(config))
        self.address = f"127.0.0.1:{free_port()}"
        self.log = folder / "alertmanager.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    ALERTMANAGER,
                    f"--config.file={folder / 'alertmanager.yml'}",
                    f"--storage.path={folder / 'data'}",
                    f"--web.listen-address={self.address}",
                    "--cluster.listen-address=",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for(self._ready, timeout_s=60, what=f"Alertmanager ready (log {self.log})")

    def _ready(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()[-3000:]
        try:
            return httpx.get(f"http://{self.address}/-/ready", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def webhooks_sent(self) -> int:
        """Webhook notifications that got a 2xx: attempted minus failed, from Alertmanager's own metrics."""
        text = httpx.get(f"http://{self.address}/metrics", timeout=10).text
        counts = {"total": 0.0, "failed_total": 0.0}
        for kind, value in _WEBHOOK_SENT.findall(text):
            counts[kind] += float(value)
        return int(counts["total"] - counts["failed_total"])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)
