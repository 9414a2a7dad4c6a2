"""The monitor against the real gateway: a version made to fail through the gateway's fault-injection
admin API fires GatewayErrorRatio (on Kafka, asking for a rollback) and resolves once it is healthy; a
skewed input stream fires PredictionDrift for that version; a real Prometheus scraping the same gateway
with the generated config fires the error-ratio alert too."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import pytest
from monitor_support import AlertWatcher, active, base_env, short_rules, skip_without, start_monitor
from support import ServiceProcess, free_port, wait_for
from test_monitor_metric_names import exposed, generated_names, owner

from services.monitor.adapters.rules_file import read_rules
from services.monitor.provisioning.prometheus import ScrapeTarget, alerting_rules, prometheus_config
from shared.artifacts import ArtifactStore
from shared.events import ArtifactRef, Hyperparameters, ModelDecided, ModelTrained, Signature, TensorSpec
from shared.kafka import KafkaPublisher
from shared.settings import FerrySettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN, ADMIN = "monitor-test-token", "monitor-admin-token"
FEATURES, CLASSES = 4, 3


def one_hot_model(scale: float = 5.0) -> bytes:
    """Softmax(scale · x · W) with W the identity on the first three features: a row one-hot in feature c is
    class c (another scale, another artifact)."""
    from onnx import TensorProto, helper, numpy_helper

    weights = np.zeros((FEATURES, CLASSES), dtype=np.float32)
    weights[:CLASSES, :CLASSES] = scale * np.eye(CLASSES, dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["input", "w", "b"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "one_hot",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", FEATURES])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", CLASSES])],
        [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(np.zeros(CLASSES, np.float32), "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


@dataclass
class Traffic:
    """Infer requests in a loop, one row of each class in ``classes`` per request."""

    url: str
    classes: list[int] = field(default_factory=lambda: [0, 1, 2])
    model: str = "digits"
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.wait(0.02):
                rows = np.zeros((len(self.classes), FEATURES), dtype=np.float32)
                rows[np.arange(len(self.classes)), self.classes] = 1.0
                body = {
                    "inputs": [
                        {"name": "input", "shape": list(rows.shape), "datatype": "FP32", "data": rows.ravel().tolist()}
                    ]
                }
                with contextlib.suppress(httpx.HTTPError):  # a failed request is what some tests want
                    client.post(f"{self.url}/v2/models/{self.model}/infer", json=body)


@dataclass
class Loop:
    registry: str
    gateway: str
    gateway_port: int
    monitor: str
    traffic: Traffic
    watcher: AlertWatcher
    rules_file: Path

    def fault(self, error_rate: float | None) -> None:
        url = f"{self.gateway}/admin/faults/digits/1"
        headers = {"Authorization": f"Bearer {ADMIN}"}
        answer = (
            httpx.put(url, json={"error_rate": error_rate}, headers=headers, timeout=10)
            if error_rate is not None
            else httpx.delete(url, headers=headers, timeout=10)
        )
        assert answer.status_code < 300, answer.text


def register_served_version(settings: FerrySettings, registry: str) -> None:
    content = one_hot_model()
    uri, sha256, size = ArtifactStore(settings.resolved_artifact_root).put_bytes(content)
    signature = Signature(
        inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, FEATURES])],
        outputs=[TensorSpec(name="probabilities", datatype="FP32", shape=[-1, CLASSES])],
    )
    publisher = KafkaPublisher(settings, source="test")
    try:
        publisher.publish(
            ModelTrained(
                model_name="digits",
                request_id="monitor-gateway",
                signature=signature,
                dataset="sklearn:iris",
                split_id="s",
                arch="mlp",
                hyperparameters=Hyperparameters(epochs=1),
                artifact=ArtifactRef(uri=uri, sha256=sha256, size_bytes=size, format="onnx"),
            )
        )
        version = f"{registry}/api/v1/models/digits/versions/1"
        wait_for(lambda: httpx.get(version, timeout=5).status_code == 200, what="version 1 registered")
        uniform = {str(c): 1 / CLASSES for c in range(CLASSES)}
        publisher.publish(
            ModelDecided(
                model_name="digits",
                version=1,
                decision="promote",
                stage="champion",
                reason="first champion",
                report={"candidate": {"prediction_distribution": uniform}},
            )
        )
        wait_for(lambda: httpx.get(f"{version}/evaluations", timeout=5).json(), what="the evaluation stored")
    finally:
        publisher.close()


@pytest.fixture
def loop(ferry_settings: FerrySettings, fresh_database_url: str, tmp_path: Path) -> Iterator[Loop]:
    env = base_env(ferry_settings, tmp_path / "home")
    registry_port, gateway_port = free_port(), free_port()
    registry = f"http://127.0.0.1:{registry_port}"
    gateway = f"http://127.0.0.1:{gateway_port}"
    env = {
        **env,
        "FERRY_DATABASE_URL": fresh_database_url,
        "FERRY_API_TOKEN": TOKEN,
        "FERRY_REGISTRY_URL": registry,
        "FERRY_REGISTRY_PORT": str(registry_port),
        "FERRY_REGISTRY_RELAY_IDLE_S": "0.05",
    }
    processes = [ServiceProcess("registry", env, tmp_path / "registry.log").start()]
    watcher = AlertWatcher(ferry_settings)
    traffic: Traffic | None = None
    try:
        register_served_version(ferry_settings, registry)
        gateway_env = {
            **env,
            "FERRY_GATEWAY_PORT": str(gateway_port),
            "FERRY_GATEWAY_ADMIN_TOKEN": ADMIN,
            "FERRY_GATEWAY_DEVICE": "cpu",
        }
        processes.append(ServiceProcess("gateway", gateway_env, tmp_path / "gateway.log").start())
        wait_for(
            lambda: httpx.get(f"{gateway}/v2/models/digits/ready", timeout=5).status_code == 200,
            what="the gateway serving digits v1",
        )
        rules_file = short_rules(tmp_path / "rules.yaml")
        monitor, monitor_url = start_monitor(
            env, tmp_path, rules_file=str(rules_file), targets=f"gateway={gateway}/metrics"
        )
        processes.append(monitor)
        traffic = Traffic(gateway)
        threading.Thread(target=traffic.run, daemon=True).start()
        yield Loop(registry, gateway, gateway_port, monitor_url, traffic, watcher, rules_file)
    finally:
        if traffic is not None:
            traffic.stop.set()
        codes = {process.name: process.stop() for process in reversed(processes)}
        watcher.close()
    # The monitor and the registry stop cleanly; the gateway's own tests judge how it stops.
    assert {name: code for name, code in codes.items() if name != "gateway"} == {"registry": 0, "monitor": 0}


def test_an_injected_fault_fires_a_rollback_alert_that_resolves_and_skew_fires_drift(loop: Loop) -> None:
    wait_for(lambda: "ferry_gateway_predictions_total" in exposed(f"{loop.gateway}/metrics"), what="traffic")
    # Every gateway name the generated files use is really exposed (but those that need shedding, rate
    # limiting or shadowing to happen first).
    eventful = {
        "ferry_gateway_shed_total",
        "ferry_gateway_rate_limited_total",
        "ferry_gateway_shadow_comparisons_total",
    }
    assert {n for n in generated_names() if owner(n) == "gateway"} - eventful <= exposed(f"{loop.gateway}/metrics")
    loop.fault(1.0)
    [fired] = wait_for(lambda: loop.watcher.of("GatewayErrorRatio", "fired"), what="GatewayErrorRatio on Kafka")
    assert (fired.model_name, fired.version, fired.action) == ("digits", 1, "rollback")
    assert active(loop.monitor, "GatewayErrorRatio")[0]["labels"] == {"model": "digits", "version": "1"}
    loop.fault(None)
    wait_for(lambda: loop.watcher.of("GatewayErrorRatio", "resolved"), what="the resolution on Kafka")
    assert loop.watcher.of("PredictionDrift") == []  # balanced inputs: the held-out distribution

    loop.traffic.classes = [2, 2, 2]
    [drift] = wait_for(lambda: loop.watcher.of("PredictionDrift", "fired"), what="PredictionDrift on Kafka")
    assert (drift.model_name, drift.version) == ("digits", 1) and drift.value > 0.2


def test_a_real_prometheus_on_the_real_gateway_fires_the_error_ratio_alert_too(loop: Loop, tmp_path: Path) -> None:
    skip_without("prometheus")
    from test_monitor_prometheus import Prometheus

    targets = [
        ScrapeTarget("gateway", f"127.0.0.1:{loop.gateway_port}"),
        ScrapeTarget("monitor", loop.monitor.removeprefix("http://")),
    ]
    config = prometheus_config(targets, scrape_interval="1s", evaluation_interval="1s", alertmanager=None)
    prometheus = Prometheus(config, alerting_rules(read_rules(loop.rules_file)), tmp_path / "prometheus")
    try:
        loop.fault(1.0)
        [labels] = wait_for(lambda: prometheus.firing("GatewayErrorRatio"), what="Prometheus firing")
        assert (labels["model"], labels["version"], labels["action"]) == ("digits", "1", "rollback")
        wait_for(lambda: loop.watcher.of("GatewayErrorRatio", "fired"), what="the monitor firing too")
        loop.fault(None)
        wait_for(lambda: not prometheus.firing("GatewayErrorRatio"), what="Prometheus resolving")
    finally:
        prometheus.stop()
