"""FERRY_MONITOR_ENGINE=external end to end: a fault injected into the real gateway → a real Prometheus fires
the generated rule → two real Alertmanagers (an HA pair that has not met: each sends every notification) →
the monitor's webhook, with the generated config's ``credentials_file`` → one ``alert`` event on Kafka → the
real evaluator rolls the version back, and the registry's history shows it.

The monitor still evaluates the rule itself but publishes nothing of its own, so the topic holds exactly one
fired and one resolved event for the episode, though four webhooks carried it.
"""

from __future__ import annotations

import secrets
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from monitor_support import ALERTMANAGER, Alertmanager, AlertWatcher, base_env, short_rules, skip_without, start_monitor
from support import ServiceProcess, free_port, wait_for
from test_monitor_gateway import CLASSES, FEATURES, Traffic, one_hot_model
from test_monitor_prometheus import Prometheus

from services.monitor.adapters.rules_file import read_rules
from services.monitor.provisioning.prometheus import (
    ScrapeTarget,
    alerting_rules,
    alertmanager_config,
    prometheus_config,
)
from shared.artifacts import ArtifactStore
from shared.events import (
    AlertChanged,
    ArtifactRef,
    Hyperparameters,
    ModelDecided,
    ModelTrained,
    Signature,
    TensorSpec,
)
from shared.kafka import KafkaPublisher
from shared.settings import FerrySettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ADMIN = "external-admin-token-0123456789"
RULE = "GatewayErrorRatio"


@dataclass
class Loop:
    model: str
    registry: str
    gateway: str
    monitor: str
    alertmanagers: list[Alertmanager]
    watcher: AlertWatcher
    settings: FerrySettings

    def deployment(self) -> dict[str, Any]:
        answer = httpx.get(f"{self.registry}/api/v1/models/{self.model}/deployment", timeout=5)
        return answer.json() if answer.status_code == 200 else {}

    def history(self) -> list[tuple[str, int | None, str]]:
        answer = httpx.get(f"{self.registry}/api/v1/models/{self.model}/deployment/history", timeout=5)
        return [(e["action"], e["to_champion"], e["actor"]) for e in reversed(answer.json()["items"])]

    def mine(self, state: str) -> list[AlertChanged]:
        return [e for e in self.watcher.of(RULE, state) if e.model_name == self.model and "marker" not in e.labels]


def one_rule(path: Path) -> Path:
    """The shipped error-ratio rule alone, shortened: nothing else fires, so every notification is this episode's."""
    document = yaml.safe_load(short_rules(path).read_text())
    document["rules"] = [rule for rule in document["rules"] if rule["name"] == RULE]
    path.write_text(yaml.safe_dump(document))
    return path


def champion(registry: str, model: str) -> int | None:
    answer = httpx.get(f"{registry}/api/v1/models/{model}/deployment", timeout=5)
    return answer.json().get("champion") if answer.status_code == 200 else None


def register_two_versions(settings: FerrySettings, registry: str, model: str) -> None:
    """v1, then v2 promoted over it: v2 is a fresh champion that a rollback alert sends back to v1."""
    signature = Signature(
        inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, FEATURES])],
        outputs=[TensorSpec(name="probabilities", datatype="FP32", shape=[-1, CLASSES])],
    )
    uniform = {str(c): 1 / CLASSES for c in range(CLASSES)}
    publisher = KafkaPublisher(settings, source="test")
    try:
        for version, scale in ((1, 5.0), (2, 6.0)):
            uri, sha256, size = ArtifactStore(settings.resolved_artifact_root).put_bytes(one_hot_model(scale))
            publisher.publish(
                ModelTrained(
                    model_name=model,
                    request_id=f"external-{version}",
                    signature=signature,
                    dataset="sklearn:iris",
                    split_id="s",
                    arch="mlp",
                    hyperparameters=Hyperparameters(epochs=1),
                    artifact=ArtifactRef(uri=uri, sha256=sha256, size_bytes=size, format="onnx"),
                )
            )
            url = f"{registry}/api/v1/models/{model}/versions/{version}"
            wait_for(lambda url=url: httpx.get(url, timeout=5).status_code == 200, what=f"v{version} registered")
            publisher.publish(
                ModelDecided(
                    model_name=model,
                    version=version,
                    decision="promote",
                    stage="champion",
                    reason="the test's champion",
                    report={"candidate": {"prediction_distribution": uniform}},
                )
            )
            wait_for(lambda v=version: champion(registry, model) == v, what=f"v{version} champion")
    finally:
        publisher.close()


@pytest.fixture
def loop(ferry_settings: FerrySettings, fresh_database_url: str, tmp_path: Path) -> Iterator[Loop]:
    skip_without("prometheus", ALERTMANAGER)
    model = f"ext-{uuid.uuid4().hex[:8]}"  # the alert topic is the session's: this test's events are its model's
    registry_port, gateway_port = free_port(), free_port()
    registry, gateway = f"http://127.0.0.1:{registry_port}", f"http://127.0.0.1:{gateway_port}"
    env = {
        **base_env(ferry_settings, tmp_path / "home"),
        "FERRY_DATABASE_URL": fresh_database_url,
        "FERRY_REGISTRY_URL": registry,
        "FERRY_REGISTRY_PORT": str(registry_port),
        "FERRY_REGISTRY_RELAY_IDLE_S": "0.05",
    }
    token = secrets.token_urlsafe(24)
    (tmp_path / "webhook-tokens").write_text(f"alertmanager {token}\n")
    (tmp_path / "alertmanager-token").write_text(token)
    rules_file = one_rule(tmp_path / "rules.yaml")
    processes = [ServiceProcess("registry", env, tmp_path / "registry.log").start()]
    servers: list[Prometheus | Alertmanager] = []
    watcher = AlertWatcher(ferry_settings)
    traffic = Traffic(gateway, model=model)
    try:
        register_two_versions(ferry_settings, registry, model)
        gateway_env = {**env, "FERRY_GATEWAY_PORT": str(gateway_port), "FERRY_GATEWAY_ADMIN_TOKEN": ADMIN}
        processes.append(ServiceProcess("gateway", {**gateway_env, "FERRY_GATEWAY_DEVICE": "cpu"}, tmp_path / "gw.log"))
        processes[-1].start(wait=False)
        monitor, monitor_url = start_monitor(
            env,
            tmp_path,
            engine="external",
            rules_file=str(rules_file),
            targets=f"gateway={gateway}/metrics",
            webhook_tokens_file=str(tmp_path / "webhook-tokens"),
        )
        processes.append(monitor)
        # The generated route with Alertmanager's waits shortened, through the generator's own options.
        routed = alertmanager_config(
            monitor_url,
            credentials_file=str(tmp_path / "alertmanager-token"),
            group_wait="1s",
            group_interval="1s",
        )
        alertmanagers = [Alertmanager(routed, tmp_path / f"alertmanager-{n}") for n in (1, 2)]
        servers += alertmanagers
        config = prometheus_config(
            [ScrapeTarget("gateway", f"127.0.0.1:{gateway_port}")],
            scrape_interval="1s",
            evaluation_interval="1s",
            alertmanager=[am.address for am in alertmanagers],
        )
        servers.append(Prometheus(config, alerting_rules(read_rules(rules_file)), tmp_path / "prometheus"))
        evaluator_env = {**env, "FERRY_EVALUATOR_PORT": str(free_port()), "FERRY_EVALUATOR_RESYNC_INTERVAL_S": "1"}
        processes.append(ServiceProcess("evaluator", evaluator_env, tmp_path / "evaluator.log").start())
        wait_for(
            lambda: httpx.get(f"{gateway}/v2/models/{model}/versions/2/ready", timeout=5).status_code == 200,
            timeout_s=120,
            what="the gateway serving v2",
        )
        threading.Thread(target=traffic.run, daemon=True).start()
        yield Loop(model, registry, gateway, monitor_url, alertmanagers, watcher, ferry_settings)
    finally:
        traffic.stop.set()
        for server in reversed(servers):
            server.stop()
        codes = {process.name: process.stop() for process in reversed(processes)}
        watcher.close()
    assert {name: code for name, code in codes.items() if name != "gateway"} == {
        "registry": 0,
        "monitor": 0,
        "evaluator": 0,
    }


def test_prometheus_and_alertmanager_fire_one_alert_event_and_the_evaluator_rolls_back(loop: Loop) -> None:
    answer = httpx.put(
        f"{loop.gateway}/admin/faults/{loop.model}/2",
        json={"error_rate": 1.0},
        headers={"Authorization": f"Bearer {ADMIN}"},
        timeout=10,
    )
    assert answer.status_code < 300, answer.text
    wait_for(lambda: loop.deployment().get("champion") == 1, timeout_s=120, what="v2 rolled back to v1")
    assert loop.history()[-1] == ("rollback", 1, "evaluator")

    # v1 serves again: v2's requests stop, Prometheus resolves, both Alertmanagers send the resolution too.
    wait_for(lambda: all(am.webhooks_sent() >= 2 for am in loop.alertmanagers), timeout_s=120, what="4 webhooks")
    # A marker behind them in the rule's partition (the key is rule:model): once it is read, every copy
    # published before it was read too.
    marker = AlertChanged(
        model_name=loop.model, rule=RULE, state="resolved", value=0, threshold=0, labels={"marker": "end"}
    )
    publisher = KafkaPublisher(loop.settings, source="test")
    publisher.publish(marker)
    publisher.close()
    wait_for(lambda: any("marker" in e.labels for e in loop.watcher.of(RULE)), what="the marker")

    [fired], [resolved] = loop.mine("fired"), loop.mine("resolved")
    assert (fired.version, fired.action, fired.severity) == (2, "rollback", "critical")
    assert resolved.since == fired.since  # the same episode
    assert [entry[0] for entry in loop.history()] == ["promote", "promote", "rollback"]
    alerts = httpx.get(f"{loop.monitor}/api/v1/alerts", timeout=5).json()
    assert alerts["engine"] == "external"
