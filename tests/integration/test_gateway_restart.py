"""A gateway that restarts while the registry is away rebuilds what it serves from Kafka and the store.

Real processes on the real broker and database: the registry deploys a champion and a canary, a gateway
serves them; the registry stops, the gateway is killed (SIGKILL, as a node loses a pod) and started
again. It becomes ready from the compacted ``deployment.changed`` alone and answers with the champion,
the canary and the pinned versions while the registry is still down.
"""

from __future__ import annotations

import signal
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_helpers import infer_json
from support import ServiceProcess, free_port, wait_for
from test_gateway_service import ROW, TOKEN, env, processes, promote, register, version_of  # noqa: F401

from services.gateway.adapters.deployment_log import KafkaDeployments, Replay
from services.gateway.sample_models import classifier_signature
from shared.artifacts import ArtifactStore
from shared.events import ArtifactRef, DeployedVersion, DeploymentChanged
from shared.kafka import KafkaPublisher, make_producer
from shared.settings import FerrySettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def pinned(url: str, version: int) -> str:
    response = httpx.post(f"{url}/v2/models/flowers/versions/{version}/infer", json=infer_json([ROW]), timeout=30)
    assert response.status_code == 200, response.text
    return str(response.json()["model_version"])


def served(url: str) -> tuple[set[str], str, str]:
    """The versions the route keys reach, and the answers pinned to v1 and v2."""
    return {version_of(url, key=f"user-{i}") for i in range(40)}, pinned(url, 1), pinned(url, 2)


def test_a_restarted_gateway_serves_the_champion_and_canary_with_the_registry_down(
    env: dict[str, str],  # noqa: F811
    ferry_settings: FerrySettings,
    processes: list[ServiceProcess],  # noqa: F811
    tmp_path: Path,
) -> None:
    registry_url = f"http://127.0.0.1:{env['FERRY_REGISTRY_PORT']}"
    env = {**env, "FERRY_REGISTRY_URL": registry_url}
    registry = ServiceProcess("registry", env, tmp_path / "registry.log").start()
    processes.append(registry)
    store = ArtifactStore(ferry_settings.resolved_artifact_root)
    register(ferry_settings, store, [1, 2])
    wait_for(
        lambda: httpx.get(f"{registry_url}/api/v1/models/flowers").json().get("latest_version") == 2,
        what="2 versions",
        timeout_s=90,
    )
    promote(registry_url, 1, stage="champion")
    promote(registry_url, 2, stage="canary", canary_weight=0.5)

    first = ServiceProcess("gateway", env, tmp_path / "gateway-1.log").start()
    processes.append(first)
    wait_for(lambda: served(first.url)[0] == {"1", "2"}, what="the first gateway serving v1 and the v2 canary")
    before, status_before = served(first.url), _status(first.url)

    assert registry.stop(signal.SIGTERM) == 0, registry.tail()
    first.send_signal(signal.SIGKILL)
    first.wait()

    # Same port, same everything; only the registry is missing.
    second = ServiceProcess("gateway", first.env, tmp_path / "gateway-2.log").start(timeout_s=120)
    processes.append(second)
    assert not registry.running
    assert served(second.url) == before == ({"1", "2"}, "1", "2")
    status = _status(second.url)
    assert status == status_before and status["canary_weight"] == 0.5
    assert (status["champion"]["version"], status["challenger"]["version"]) == (1, 2)
    assert "replayed deployment.changed: 1 models" in second.output()


def _status(url: str) -> dict[str, Any]:
    state = dict(httpx.get(f"{url}/status", timeout=10).json()["models"]["flowers"])
    for role in ("champion", "challenger", "previous"):
        if state[role]:
            state[role].pop("provider")
    return state


def _changed(model: str, revision: int, champion: int) -> DeploymentChanged:
    artifact = ArtifactRef(uri="ignored", sha256=f"{champion:064x}", size_bytes=10, format="onnx")
    version = DeployedVersion(version=champion, artifact=artifact, signature=classifier_signature(8, 3))
    return DeploymentChanged(model_name=model, revision=revision, champion=version)


def test_the_replay_reads_to_the_end_and_keeps_the_highest_revision_per_model(ferry_settings: FerrySettings) -> None:
    publisher = KafkaPublisher(ferry_settings, source="test/replay")
    for model, revision, champion in [("iris", 1, 1), ("digits", 1, 1), ("iris", 2, 2), ("iris", 3, 3)]:
        publisher.publish(_changed(model, revision, champion))
    publisher.close()
    producer = make_producer(ferry_settings)  # a record no one can read: skipped here, the group's to dead-letter
    producer.send(ferry_settings.topic("deployment.changed"), key=b"iris", value=b"not an event").get(timeout=30)
    producer.close()

    replay = KafkaDeployments(ferry_settings, timeout_s=30).replay()
    assert replay.complete
    assert {name: (d.revision, d.champion and d.champion.version) for name, d in replay.deployments.items()} == {
        "iris": (3, 3),
        "digits": (1, 1),
    }

    no_topic = ferry_settings.model_copy(update={"topic_prefix": f"t{uuid.uuid4().hex[:10]}."})
    assert KafkaDeployments(no_topic, timeout_s=30).replay() == Replay({}, complete=True)
    away = ferry_settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}"})
    assert KafkaDeployments(away, timeout_s=3).replay() == Replay({}, complete=False)
