"""Inference logging and feedback on the real broker (and the real registry and PostgreSQL for the alert):
a real gateway at sample 1.0 logs what it answers to ``inference.logged``; feedback needs a token and reaches
``inference.feedback``; the real monitor joins the two into online accuracy and fires its alert once, and
only after the minimum count, when feedback contradicts a version's answers."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
import yaml
from gateway_helpers import ListSource, ensure_telemetry, infer_json, store_version
from monitor_support import AlertWatcher, base_env, start_monitor
from support import ServiceProcess, free_port, wait_for

from services.gateway.adapters.inference_log import KafkaLogSink
from services.gateway.bootstrap import Gateway, bootstrap
from services.gateway.domain import Deployment
from services.gateway.entrypoints.api import create_app
from services.gateway.sample_models import classifier_bytes, classifier_signature
from services.gateway.settings import GatewaySettings
from shared.artifacts import ArtifactStore
from shared.envelope import decode
from shared.events import (
    ArtifactRef,
    Event,
    Hyperparameters,
    InferenceFeedback,
    InferenceLogged,
    ModelDecided,
    ModelTrained,
)
from shared.kafka import KafkaPublisher, make_consumer, make_producer
from shared.local.stack import PROJECT_ROOT
from shared.settings import FerrySettings

pytestmark = [pytest.mark.integration]

MODEL = "iris"
TOKEN = "Feedback-Tok3n-for-the-loop-test"
ROWS = [[0.5, -1.0, 2.0, 0.1, 0.0, 1.5, -0.3, 0.7]]


@contextmanager
def kafka_gateway(settings: FerrySettings, tmp_path: Path) -> Iterator[tuple[Gateway, str]]:
    """A real gateway logging every answer (sample 1.0) and passing feedback on, through the real broker."""
    ensure_telemetry()
    store = ArtifactStore(settings.resolved_artifact_root)
    tokens = tmp_path / "feedback-tokens"
    tokens.write_text(f"labeller {TOKEN}\n")
    port = free_port()
    gateway_settings = GatewaySettings(
        ferry=settings, port=port, device="cpu", log_sample=1.0, feedback_tokens_file=tokens
    )
    deployment = Deployment(MODEL, 4, champion=store_version(store, 1), canary_weight=0.0)
    publisher = KafkaPublisher(settings, source="ferry/gateway")
    gateway = bootstrap(
        gateway_settings,
        source=ListSource([deployment]),
        store=store,
        follow_kafka=False,
        log_sink=KafkaLogSink(settings, make_producer=lambda: make_producer(settings, linger_ms=20), source="test"),
        feedback_publisher=publisher,
    )
    server = uvicorn.Server(uvicorn.Config(create_app(gateway), port=port, log_config=None, lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _ready(url), what="the gateway")
        yield gateway, url
    finally:
        server.should_exit = True
        thread.join(30)
        publisher.close()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def read_topic(settings: FerrySettings, event_type: type[Event], count: int) -> list[Any]:
    """The first ``count`` events of the topic, from its beginning."""
    consumer = make_consumer(settings, f"read-{event_type.topic}-{free_port()}", [event_type.topic])
    found: list[Any] = []
    try:

        def more() -> bool:
            for records in consumer.poll(timeout_ms=300).values():
                found.extend(decode(r.headers, r.key, r.value).event for r in records)
            return len(found) >= count

        wait_for(more, what=f"{count} events on {event_type.topic}")
    finally:
        consumer.close()
    return found


def infer(url: str, request_id: str) -> dict[str, Any]:
    response = httpx.post(f"{url}/v2/models/{MODEL}/infer", json=infer_json(ROWS, request_id=request_id), timeout=30)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def feedback(url: str, items: list[dict[str, Any]], token: str | None = TOKEN, model: str = MODEL) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.post(f"{url}/v2/models/{model}/feedback", json={"feedback": items}, headers=headers, timeout=30)


def test_answered_requests_are_logged_with_their_version_route_and_request_id(
    ferry_settings: FerrySettings, tmp_path: Path
) -> None:
    with kafka_gateway(ferry_settings, tmp_path) as (gateway, url):
        answers = [infer(url, f"client-{index}") for index in range(5)]
        logged = read_topic(ferry_settings, InferenceLogged, 5)
        assert gateway.inference.inference_log is not None
        wait_for(lambda: gateway.inference.inference_log.counts[(MODEL, "sent")] == 5, what="5 logs counted sent")
    assert sorted(event.request_id for event in logged) == [f"client-{index}" for index in range(5)]
    for event in logged:
        assert (event.model_name, event.version, event.route, event.revision) == (MODEL, 1, "champion", 4)
        assert event.inputs[0].shape == [1, 8] and event.inputs[0].data == pytest.approx(ROWS[0])
    first = next(event for event in logged if event.request_id == "client-0")
    assert first.outputs[0].data == pytest.approx(answers[0]["outputs"][0]["data"], rel=1e-5)


def test_feedback_needs_a_token_and_reaches_the_feedback_topic(ferry_settings: FerrySettings, tmp_path: Path) -> None:
    with kafka_gateway(ferry_settings, tmp_path) as (_, url):
        item = {"request_id": "client-1", "label": 2}
        unauthenticated = feedback(url, [item], token=None)
        assert unauthenticated.status_code == 401 and "bearer token" in unauthenticated.json()["error"]
        assert feedback(url, [item], token="Wrong-token-of-some-length").status_code == 403
        assert feedback(url, [item], model="nope").status_code == 404
        for bad in ([], [{"request_id": "x"}], [{"request_id": "x", "label": 1, "value": 2.0}], [{"label": 1}]):
            refused = feedback(url, bad)
            assert refused.status_code == 422 and refused.json()["error"].startswith("invalid request")
        accepted = feedback(url, [item, {"request_id": "client-2", "label": "versicolor"}])
        assert accepted.status_code == 202 and accepted.json() == {"accepted": 2}
    [event] = read_topic(ferry_settings, InferenceFeedback, 1)
    assert (event.model_name, event.actor) == (MODEL, "labeller")
    assert [(i.request_id, i.label) for i in event.items] == [("client-1", 2), ("client-2", "versicolor")]


def register_with_bound(settings: FerrySettings, registry_url: str, low: float) -> None:
    """Version 1 of the model in the real registry, with an evaluation whose accuracy interval starts at ``low``."""
    uri, sha256, size = ArtifactStore(settings.resolved_artifact_root).put_bytes(classifier_bytes(8, 3, seed=1))
    trained = ModelTrained(
        model_name=MODEL,
        request_id="loop-test",
        signature=classifier_signature(8, 3),
        dataset="sklearn:iris",
        split_id="s",
        artifact=ArtifactRef(uri=uri, sha256=sha256, size_bytes=size, format="onnx"),
        arch="mlp",
        hyperparameters=Hyperparameters(epochs=1),
    )
    report = {"candidate": {"version": 1, "intervals": {"accuracy": {"estimate": 0.95, "low": low, "high": 0.98}}}}
    decided = ModelDecided(
        model_name=MODEL, version=1, decision="promote", stage="champion", reason="first champion", report=report
    )
    publisher = KafkaPublisher(settings, source="test")
    try:
        publisher.publish(trained)
        version = f"{registry_url}/api/v1/models/{MODEL}/versions/1"
        wait_for(lambda: httpx.get(version, timeout=5).status_code == 200, what="version 1 registered")
        publisher.publish(decided)
        wait_for(lambda: httpx.get(f"{version}/evaluations", timeout=5).json(), what="the evaluation stored")
    finally:
        publisher.close()


def rules_with(path: Path, min_feedback: int) -> Path:
    """The shipped online accuracy rule alone, with a short ``for`` and a small minimum count."""
    document = yaml.safe_load((PROJECT_ROOT / "deploy" / "alerts" / "rules.yaml").read_text())
    [rule] = [rule for rule in document["rules"] if rule["kind"] == "online_accuracy"]
    rule |= {"for": "1s", "min_feedback": min_feedback}
    path.write_text(yaml.safe_dump({"rules": [rule]}))
    return path


def gauge(url: str, name: str) -> float | None:
    found = re.findall(rf'^{name}\{{[^}}]*model="{MODEL}"[^}}]*version="1"[^}}]*\}} (\S+)$', metrics(url), re.M)
    return float(found[0]) if found else None


def metrics(url: str) -> str:
    return httpx.get(f"{url}/metrics", timeout=10).text


def test_contradicting_feedback_fires_the_online_accuracy_alert_once_after_the_minimum(
    ferry_settings: FerrySettings, fresh_database_url: str, tmp_path: Path
) -> None:
    env = base_env(ferry_settings, tmp_path / "home")
    registry_env = {**env, "FERRY_DATABASE_URL": fresh_database_url, "FERRY_REGISTRY_RELAY_IDLE_S": "0.05"}
    registry = ServiceProcess("registry", registry_env, tmp_path / "registry.log").start()
    watcher, monitor = AlertWatcher(ferry_settings), None
    try:
        register_with_bound(ferry_settings, registry.url, low=0.9)
        port = free_port()
        monitor, monitor_url = start_monitor(
            {**env, "FERRY_MONITOR_PORT": str(port)},
            tmp_path,
            rules_file=str(rules_with(tmp_path / "rules.yaml", min_feedback=12)),
            targets=f"monitor=http://127.0.0.1:{port}/metrics",  # it scrapes itself, as by default
            registry_url=registry.url,
        )
        with kafka_gateway(ferry_settings, tmp_path) as (_, url):
            top = [int(max(range(3), key=infer(url, f"r{i}")["outputs"][0]["data"].__getitem__)) for i in range(20)]
            wrong = [{"request_id": f"r{i}", "label": (top[i] + 1) % 3} for i in range(20)]
            assert feedback(url, wrong[:8]).status_code == 202
            wait_for(lambda: gauge(monitor_url, "ferry_monitor_online_feedback_count") == 8, what="8 judged")
            assert gauge(monitor_url, "ferry_monitor_online_accuracy") == 0.0
            assert gauge(monitor_url, "ferry_monitor_evaluation_accuracy_low") == 0.9
            assert watcher.of("OnlineAccuracyBelowEvaluation") == []  # under the minimum count: not judged
            assert feedback(url, wrong[8:]).status_code == 202
            [fired] = wait_for(lambda: watcher.of("OnlineAccuracyBelowEvaluation", "fired"), what="the alert")
        assert (fired.model_name, fired.version) == (MODEL, 1)
        assert fired.value == pytest.approx(-0.9)
        wait_for(lambda: gauge(monitor_url, "ferry_monitor_online_feedback_count") == 20, what="20 judged")
        assert len(watcher.of("OnlineAccuracyBelowEvaluation", "fired")) == 1
    finally:
        codes = [process.stop() for process in (monitor, registry) if process is not None]
        watcher.close()
    assert codes == [0] * len(codes)
