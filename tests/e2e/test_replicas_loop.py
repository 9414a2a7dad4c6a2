"""Two of everything: `ferry up` with FERRY_REPLICAS=registry=2,trainer=2,evaluator=2,gateway=2,monitor=2 runs the
whole loop on its own Kafka and PostgreSQL, in its own home, on its own ports.

First champion, canary, bake, champion, an injected gateway fault, the monitor's alert, the rollback: the
deployment history holds exactly what one process of each would record, every decision reaches the registry
once (copies on model.decided share one id), the error alert goes out once, nothing is dead-lettered, every
gateway ends on the registry's revision. The evaluator that leads the bakes is killed with -9 once the canary
decision is seen; the other completes the bake.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from kafka import KafkaConsumer, TopicPartition
from support import free_port, wait_for

from shared.local.stack import PROJECT_ROOT
from shared.local.system import settings_environment
from shared.settings import FerrySettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SERVICES = ("registry", "trainer", "evaluator", "gateway", "monitor")
ADMIN = "replicas-admin-token-0123456789"
LEADING = re.compile(r"^ferry_evaluator_bake_leader(\{[^}]*\})? 1(\.0)?$", re.MULTILINE)
ERROR_RULE = {
    "name": "GatewayErrorRatio",
    "kind": "counter_ratio",
    "numerator": {"metric": "ferry_gateway_requests_total", "match": {"outcome": "error|timeout"}},
    "denominator": {"metric": "ferry_gateway_requests_total"},
    "min_denominator": 20,
    "group_by": ["model", "version"],
    "window": "4s",
    "threshold": 0.05,
    "for": "1s",
    "severity": "critical",
    "action": "rollback",
    "summary": "More than 5% of a version's requests fail.",
}


@dataclass
class System:
    home: Path
    env: dict[str, str]
    settings: FerrySettings

    def ferry(self, *args: str, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "shared.cli", *args]
        return subprocess.run(
            command, env=self.env, capture_output=True, text=True, timeout=timeout_s, cwd=PROJECT_ROOT
        )

    def status(self) -> dict[str, dict[str, Any]]:
        return {part["name"]: part for part in json.loads(self.ferry("status", "--json").stdout)}

    def urls(self, service: str) -> list[str]:
        parts = self.status()
        return [f"http://127.0.0.1:{parts[name]['port']}" for name in (service, f"{service}-2")]

    def logs(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-2500:]}" for log in (self.home / "logs").glob("*.log"))


@pytest.fixture(scope="module")
def system(no_leftovers: None) -> Iterator[System]:
    home = (PROJECT_ROOT / ".ferry-test" / str(os.getpid()) / "replicas").absolute()
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    settings = FerrySettings(
        home=home,
        cache_dir=PROJECT_ROOT / ".ferry" / "cache",
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        kafka_controller_port=free_port(),
        postgres_port=free_port(),
        kafka_session_timeout_ms=3000,
    )
    (home / "settings.json").write_text(settings.model_dump_json())  # so a killed session's leftovers get stopped
    rules = home / "rules.yaml"
    rules.write_text(yaml.safe_dump({"rules": [ERROR_RULE]}))
    registry_port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FERRY_", "OTEL_", "AWS_"))}
    env |= settings_environment(settings) | {
        "FERRY_REPLICAS": ",".join(f"{name}=2" for name in SERVICES),
        "FERRY_REGISTRY_PORT": str(registry_port),
        "FERRY_REGISTRY_URL": f"http://127.0.0.1:{registry_port}",
        "FERRY_TRAINER_METRICS_PORT": str(free_port()),
        "FERRY_EVALUATOR_PORT": str(free_port()),
        "FERRY_GATEWAY_PORT": str(free_port()),
        "FERRY_MONITOR_PORT": str(free_port()),
        "FERRY_SUPERVISOR_START_SECS": "2",
        "FERRY_REGISTRY_RELAY_IDLE_S": "0.05",
        "FERRY_EVALUATOR_BAKE_S": "20",
        "FERRY_EVALUATOR_RESYNC_INTERVAL_S": "2",
        "FERRY_EVALUATOR_LATENCY_TOLERANCE_MS": "50",  # timings are not what this test judges
        "FERRY_EVALUATOR_LATENCY_RUNS": "100",
        "FERRY_MONITOR_RULES_FILE": str(rules),
        "FERRY_MONITOR_SCRAPE_INTERVAL_S": "1",
        "FERRY_GATEWAY_ADMIN_TOKEN": ADMIN,
    }
    running = System(home, env, settings)
    try:
        up = running.ferry("up", timeout_s=600)
        assert up.returncode == 0, f"ferry up failed:\n{up.stdout}\n{up.stderr}\n{running.logs()}"
        yield running
    finally:
        running.ferry("down", timeout_s=240)
        shutil.rmtree(home, ignore_errors=True)


class Traffic:
    """Infer requests to every gateway in turn until stopped; failures are what the fault is for."""

    def __init__(self, gateways: list[str]) -> None:
        self.gateways, self.stop = gateways, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        rows = np.random.default_rng(0).random((4, 64), dtype=np.float32) * 16
        body = {"inputs": [{"name": "input", "shape": [4, 64], "datatype": "FP32", "data": rows.ravel().tolist()}]}
        with httpx.Client(timeout=10) as client:
            while not self.stop.wait(0.05):
                for gateway in self.gateways:
                    with contextlib.suppress(httpx.HTTPError):
                        client.post(f"{gateway}/v2/models/digits/infer", json=body)


def read_topic(settings: FerrySettings, topic: str) -> list[Any]:
    """Every record of ``topic`` from its start to its end now."""
    consumer = KafkaConsumer(**settings.kafka_client_options(), enable_auto_commit=False)
    try:
        partitions = [
            TopicPartition(settings.topic(topic), p) for p in consumer.partitions_for_topic(settings.topic(topic)) or ()
        ]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        records: list[Any] = []
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            for batch in consumer.poll(timeout_ms=500).values():
                records += batch
        return records
    finally:
        consumer.close()


def header(record: Any, name: str) -> str:
    return next(value.decode() for key, value in record.headers if key == name)


def dead_lettered(settings: FerrySettings) -> dict[str, int]:
    consumer = KafkaConsumer(**settings.kafka_client_options())
    try:
        found = {}
        for topic in (t for t in consumer.topics() if t.startswith(settings.topic_prefix) and t.endswith(".dlq")):
            partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
            found[topic] = sum(consumer.end_offsets(partitions).values())
        return found
    finally:
        consumer.close()


def train(system: System, hidden: str, epochs: int, seed: int) -> None:
    arguments = ["--model", "digits", "--dataset", "sklearn:digits", "--hidden-sizes", hidden]
    result = system.ferry("train", *arguments, "--epochs", str(epochs), "--seed", str(seed), "--wait")
    assert result.returncode == 0, result.stdout + result.stderr


def bake_leader(system: System) -> str:
    """The evaluator process that completes bakes now (its gauge says so)."""

    def leader() -> str | None:
        for name, url in zip(("evaluator", "evaluator-2"), system.urls("evaluator"), strict=True):
            with contextlib.suppress(httpx.HTTPError):
                if LEADING.search(httpx.get(f"{url}/metrics", timeout=5).text):
                    return name
        return None

    return str(wait_for(leader, what="an evaluator leading the bakes", timeout_s=60, detail=system.logs, poll_s=0.5))


def test_two_of_everything_run_the_loop_as_one_of_each_would(system: System) -> None:
    parts = system.status()
    for service in SERVICES:
        for name in (service, f"{service}-2"):
            assert parts[name]["state"] == "running" and parts[name]["healthy"], (name, parts[name])
    assert len({parts[f"{s}{k}"]["port"] for s in SERVICES for k in ("", "-2")}) == 2 * len(SERVICES)
    api = f"{system.env['FERRY_REGISTRY_URL']}/api/v1/models/digits"

    def deployment() -> dict[str, Any]:
        answer = httpx.get(f"{api}/deployment", timeout=5)
        return answer.json() if answer.status_code == 200 else {}

    def until(what: str, probe: Any, timeout_s: float = 180) -> Any:
        return wait_for(probe, what=what, timeout_s=timeout_s, detail=system.logs, poll_s=0.5)

    train(system, "16", 6, 3)
    until("v1 as the first champion", lambda: deployment().get("champion") == 1)
    train(system, "96", 30, 1)
    until("v2 as the canary", lambda: deployment().get("challenger") == 2)
    leader = bake_leader(system)
    killed = system.status()[leader]["pid"]
    os.kill(killed, signal.SIGKILL)  # mid-bake: the canary decision is in, the promotion is not
    until("v2 promoted after its bake", lambda: deployment().get("champion") == 2)

    gateways = system.urls("gateway")
    for gateway in gateways:
        put = httpx.put(
            f"{gateway}/admin/faults/digits/2",
            json={"error_rate": 1.0},
            headers={"Authorization": f"Bearer {ADMIN}"},
            timeout=10,
        )
        assert put.status_code == 200, put.text
    traffic = Traffic(gateways)
    traffic.thread.start()
    try:
        until("v2 rolled back after the monitor's alert", lambda: deployment().get("champion") == 1)
    finally:
        traffic.stop.set()
        traffic.thread.join(timeout=30)

    history = list(reversed(httpx.get(f"{api}/deployment/history", timeout=5).json()["items"]))
    assert [(e["action"], e["to_champion"], e["to_challenger"]) for e in history] == [
        ("promote", 1, None),
        ("promote", 1, 2),
        ("promote", 2, None),
        ("rollback", 1, None),
    ]
    revision = deployment()["revision"]

    def gateway_revisions() -> list[int] | None:
        seen = [httpx.get(f"{g}/status", timeout=5).json()["models"]["digits"]["revision"] for g in gateways]
        return seen if seen == [revision] * len(gateways) else None

    until("every gateway on the registry's revision", gateway_revisions, timeout_s=60)

    decided = read_topic(system.settings, "model.decided")
    ids = Counter(header(record, "ce_id") for record in decided)
    assert len(ids) == 4, ids  # first champion, canary, champion, rollback: copies share their id
    alerts = [json.loads(r.value) for r in read_topic(system.settings, "alert")]
    fired = [(a["rule"], a["version"]) for a in alerts if a["state"] == "fired"]
    assert fired == [("GatewayErrorRatio", 2)]  # two monitors, one alert
    assert all(count == 0 for count in dead_lettered(system.settings).values())
    restarted = system.status()[leader]
    assert restarted["pid"] != killed and restarted["restarts"] >= 1
