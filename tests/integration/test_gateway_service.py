"""Gateway processes following real deployments: the real registry process, Kafka and PostgreSQL.

Two `python -m services.gateway` processes load the champion from the registry at start, follow
every `deployment.changed`, swap a new champion in under continuous load with zero failed requests,
refuse a corrupt artifact while the old version keeps serving, and give the same answer for the same
route key once a canary is set; SIGTERM stops them cleanly.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_helpers import infer_json
from support import ServiceProcess, free_port, wait_for

from services.gateway.sample_models import classifier_bytes, classifier_signature
from shared.artifacts import ArtifactStore
from shared.events import ArtifactRef, Hyperparameters, ModelTrained, new_id
from shared.kafka import KafkaPublisher
from shared.settings import FerrySettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]
TOKEN = "gateway-it-token"
ROW = [0.5, -0.2, 1.1, 0.0, -1.3, 0.7, 0.2, 0.9]


@pytest.fixture
def env(ferry_settings: FerrySettings, fresh_database_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "FERRY_HOME": str(tmp_path / "home"),
        "FERRY_KAFKA_BOOTSTRAP": ferry_settings.kafka_bootstrap,
        "FERRY_TOPIC_PREFIX": ferry_settings.topic_prefix,
        "FERRY_DATABASE_URL": fresh_database_url,
        "FERRY_ARTIFACT_ROOT": ferry_settings.resolved_artifact_root,
        "FERRY_API_TOKEN": TOKEN,
        "FERRY_REGISTRY_PORT": str(free_port()),
        "FERRY_REGISTRY_RELAY_IDLE_S": "0.05",
        "FERRY_GATEWAY_DEVICE": "cpu",
        "PYTHONUNBUFFERED": "1",
    }


@pytest.fixture
def processes() -> Iterator[list[ServiceProcess]]:
    started: list[ServiceProcess] = []
    yield started
    for process in started:
        process.close()


def register(settings: FerrySettings, store: ArtifactStore, seeds: list[int]) -> None:
    publisher = KafkaPublisher(settings, source="test/gateway")
    for seed in seeds:
        uri, sha256, size = store.put_bytes(classifier_bytes(8, 3, seed=seed))
        publisher.publish(
            ModelTrained(
                model_name="flowers",
                request_id=new_id(),
                artifact=ArtifactRef(uri=uri, sha256=sha256, size_bytes=size, format="onnx"),
                signature=classifier_signature(8, 3),
                dataset="sklearn:iris",
                split_id="s1",
                arch="mlp",
                hyperparameters=Hyperparameters(epochs=1),
            )
        )
    publisher.close()


def promote(registry: str, version: int, **extra: Any) -> None:
    body = {"action": "promote", "version": version, "reason": "gateway test", **extra}
    response = httpx.post(
        f"{registry}/api/v1/models/flowers/deployment",
        json=body,
        timeout=30,
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 200, response.text


def version_of(url: str, key: str = "k") -> str:
    response = httpx.post(
        f"{url}/v2/models/flowers/infer", json=infer_json([ROW]), timeout=30, headers={"x-ferry-route-key": key}
    )
    return str(response.json()["model_version"]) if response.status_code == 200 else ""


def test_gateways_follow_deployments_swap_under_load_and_refuse_a_corrupt_artifact(
    env: dict[str, str], ferry_settings: FerrySettings, processes: list[ServiceProcess], tmp_path: Path
) -> None:
    registry = f"http://127.0.0.1:{env['FERRY_REGISTRY_PORT']}"
    processes.append(ServiceProcess("registry", {**env, "FERRY_REGISTRY_URL": registry}, tmp_path / "registry.log"))
    processes[0].start()
    store = ArtifactStore(ferry_settings.resolved_artifact_root)
    register(ferry_settings, store, [1, 2, 3, 4])
    wait_for(
        lambda: httpx.get(f"{registry}/api/v1/models/flowers").json().get("latest_version") == 4,
        what="4 versions",
        timeout_s=90,
    )
    promote(registry, 1, stage="champion")

    for index in range(2):
        gateway_env = {**env, "FERRY_REGISTRY_URL": registry}
        processes.append(ServiceProcess("gateway", gateway_env, tmp_path / f"gateway-{index}.log").start(wait=False))
    for process in processes[1:]:
        process.wait_ready()
    gateways = [process.url for process in processes[1:]]
    assert {version_of(url) for url in gateways} == {"1"}

    stop, seen, failures = threading.Event(), Counter[str](), list[str]()

    def load(url: str) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while not stop.is_set():
                response = client.post("/v2/models/flowers/infer", json=infer_json([ROW]))
                if response.status_code == 200:
                    seen[response.json()["model_version"]] += 1
                else:
                    failures.append(f"{response.status_code}: {response.text}")

    workers = [threading.Thread(target=load, args=(url,)) for url in gateways for _ in range(3)]
    for worker in workers:
        worker.start()
    try:
        promote(registry, 2, stage="champion")
        wait_for(lambda: {version_of(url) for url in gateways} == {"2"}, what="both gateways serving v2", timeout_s=90)
        time.sleep(0.5)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert failures == [] and seen["1"] > 0 and seen["2"] > 0

    # v3's stored file is damaged after registration: its digest no longer matches, so it is never served.
    sha3 = httpx.get(f"{registry}/api/v1/models/flowers/versions/3").json()["artifact"]["sha256"]
    damaged = bytearray(classifier_bytes(8, 3, seed=3))
    damaged[-1] ^= 0xFF
    Path(store.uri(sha3)).write_bytes(bytes(damaged))
    promote(registry, 3, stage="champion")
    for url in gateways:
        wait_for(lambda u=url: _refused(u) >= 1, what=f"{url} refusing v3", timeout_s=90)
        assert version_of(url) == "2"

    promote(registry, 4, stage="canary", canary_weight=0.5)
    wait_for(
        lambda: all(_status(url)["challenger"] for url in gateways),
        what="both gateways loading the canary",
        timeout_s=90,
    )
    answers = [[version_of(url, key=f"user-{i}") for i in range(60)] for url in gateways]
    assert answers[0] == answers[1] and set(answers[0]) == {"2", "4"}

    for process in processes[1:]:
        assert process.stop(signal.SIGTERM) == 0, process.tail()


def _status(url: str) -> dict[str, Any]:
    return dict(httpx.get(f"{url}/status", timeout=10).json()["models"]["flowers"])


def _refused(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("ferry_gateway_deployments_total") and 'outcome="refused"' in line
    )
