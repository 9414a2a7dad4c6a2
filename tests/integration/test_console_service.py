"""The console against the real parts: its actions forwarded with the operator's token to the real registry
(on the real PostgreSQL), its replay API on the real broker, and its live board fed by its own consumer
loop over the real training topics. The monitor, evaluator and gateway are not running: their notices show."""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from evaluator_onnx import fitted_digits
from fastapi.testclient import TestClient
from loop_support import STATUS, Loops, drain, encoded, end_offsets, read_all, send_raw, status
from support import ServiceProcess
from test_registry_support import API_TOKEN, trained_event

from services.console.adapters.dead_letters import DeadLetterSource
from services.console.adapters.fresh_compare import FreshCompare
from services.console.adapters.registry import RegistrySource
from services.console.adapters.runs import LiveRuns
from services.console.adapters.services import EvaluatorSource, GatewaySource, MonitorSource
from services.console.bootstrap import replay_tokens
from services.console.entrypoints.api import ConsoleDeps, create_app
from services.console.entrypoints.consumer import build_consumer_loop
from services.console.service import Console
from services.console.settings import ConsoleSettings
from services.registry.bootstrap import Registry
from services.registry.entrypoints.api import create_app as registry_app
from services.registry.handlers import handle_model_trained
from shared.artifacts import ArtifactStore
from shared.datasets import load_dataset, split
from shared.envelope import EventMeta
from shared.errors import PermanentError
from shared.events import ArtifactRef, Hyperparameters, ModelTrained, TrainingRequested, TrainingStatus, new_id, utc_now
from shared.kafka import KafkaPublisher, make_consumer, make_producer
from shared.onnx import open_session, signature_of
from shared.registry_client import RegistryClient
from shared.registry_errors import RegistryNotFound
from shared.settings import FerrySettings
from shared.waiting import wait_for

pytestmark = pytest.mark.integration
pytest_plugins = ["test_registry_support"]

NOBODY = "http://127.0.0.1:9"  # the discard port: nothing answers there
REPLAYER = secrets.token_urlsafe(24)


def console_over(registry_http: httpx.Client | None, settings: FerrySettings, tokens: dict[str, str]) -> TestClient:
    """The console's app over the registry at ``registry_http`` (or none reachable) and the real broker."""
    http = httpx.Client(timeout=1.0)
    registry = RegistrySource(registry_http or httpx.Client(base_url=NOBODY, timeout=1.0))
    console = Console(
        registry=registry,
        monitor=MonitorSource(http, NOBODY),
        evaluator=EvaluatorSource(http, NOBODY),
        gateways=GatewaySource(http, [NOBODY]),
        dead_letters=DeadLetterSource(settings, timeout_s=30),
    )
    return TestClient(create_app(ConsoleDeps(console, LiveRuns(), settings, tokens)))


@pytest.fixture
def registry_http(registry: Registry) -> Iterator[TestClient]:
    """The real registry app with three versions of digits, v1 the champion and v2 its canary at 10%."""
    for number in range(3):
        event = trained_event("digits", store=registry.artifacts, content=f"model-{number}".encode() * 50)
        meta = EventMeta(event_id=new_id(), source="tests", time=utc_now(), traceparent=None, type_name=event.type_name)
        handle_model_trained(event, meta, uow=registry.uow(), artifacts=registry.artifacts)
    with TestClient(registry_app(registry.settings, registry.api_deps())) as http:
        writer = RegistryClient(http, token=API_TOKEN)
        writer.promote("digits", 1, reason="first champion")
        writer.promote("digits", 2, canary_weight=0.1, reason="canary of v2")
        yield http


def history(http: httpx.Client) -> list[tuple[str, str, str]]:
    return [(entry.action, entry.actor, entry.reason) for entry in RegistryClient(http).history("digits")]


def test_an_action_is_forwarded_with_the_operators_token_and_refused_without_it(
    registry_http: TestClient, ferry_settings: FerrySettings
) -> None:
    console = console_over(registry_http, ferry_settings, {})
    before = history(registry_http)
    body = {"action": "set_canary_weight", "canary_weight": 0.5, "reason": "more traffic for v2"}
    for headers in ({}, {"Authorization": f"Bearer {secrets.token_urlsafe(24)}"}):
        answer = console.post("/api/models/digits/deployment", json=body, headers=headers)
        assert answer.status_code in (401, 403) and answer.json()["error"]
    assert history(registry_http) == before  # refused: nothing changed

    preview = console.post("/api/models/digits/deployment/preview", json=body).json()["consequence"]
    assert preview.startswith("Set the canary weight of digits: challenger version 2 goes from 10% to 50%")
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    answer = console.post("/api/models/digits/deployment", json=body, headers=headers)
    assert answer.status_code == 200 and answer.json()["canary_weight"] == 0.5
    rollback = {"action": "rollback", "version": 2, "reason": "withdrawn from the console"}
    assert console.post("/api/models/digits/deployment", json=rollback, headers=headers).status_code == 200
    assert history(registry_http)[:2] == [
        ("rollback", "user:admin", "withdrawn from the console"),
        ("set_canary_weight", "user:admin", "more traffic for v2"),
    ]
    page = console.get("/models/digits").text
    assert "withdrawn from the console" in page and 'data-testid="version-row-3"' in page
    assert "monitor unreachable" in page and "gateway unreachable" in page


def test_a_registry_that_is_away_is_a_notice(ferry_settings: FerrySettings) -> None:
    console = console_over(None, ferry_settings, {})
    for path in ("/", "/models/digits"):
        page = console.get(path)
        assert page.status_code == 200 and "registry unreachable" in page.text


class Refuser:
    """A consumer that refuses the request ids in ``broken`` for good, so they are dead-lettered."""

    def __init__(self) -> None:
        self.broken = {"r1": "artifact a1b2 is not in the store yet"}
        self.seen: list[str] = []

    def handle(self, event: TrainingStatus, meta: EventMeta) -> None:
        self.seen.append(meta.event_id)
        if event.request_id in self.broken:
            raise PermanentError(self.broken[event.request_id])


def test_a_dead_letter_replayed_through_the_console_lands_on_its_topic_with_the_replay_headers(
    ferry_settings: FerrySettings, tmp_path: Path
) -> None:
    tokens_file = tmp_path / "api-tokens"
    tokens_file.write_text(f"alice {REPLAYER}\n")
    tokens = replay_tokens(ConsoleSettings(ferry=ferry_settings, tokens_file=tokens_file))
    console = console_over(None, ferry_settings, tokens)
    loops, refuser = Loops(ferry_settings), Refuser()
    try:
        loop = loops.make({TrainingStatus: [refuser.handle]}, group="console-dlq")
        key, value, headers = encoded(status(1, key="r1"))
        send_raw(ferry_settings, ferry_settings.topic(STATUS), [(key, value, headers)])
        event_id = dict(headers)["ce_id"].decode()
        drain(loop, lambda: event_id in refuser.seen)
        wait_for(lambda: 'data-testid="dead-letter-row"' in console.get("/dead-letters").text, what="it", timeout_s=30)
    finally:
        loops.close()
    page = console.get("/dead-letters?topic=training.status").text
    assert "artifact a1b2 is not in the store yet" in page and f"id {event_id}" in page

    published = end_offsets(ferry_settings, ferry_settings.topic(STATUS))
    url = "/api/v1/dead-letters/training.status/replay"
    assert console.post(url, json={"id": event_id}).status_code == 401
    wrong = {"Authorization": f"Bearer {secrets.token_urlsafe(24)}"}
    assert console.post(url, json={"id": event_id}, headers=wrong).status_code == 403
    assert end_offsets(ferry_settings, ferry_settings.topic(STATUS)) == published  # refused: nothing sent

    answer = console.post(url, json={"id": event_id}, headers={"Authorization": f"Bearer {REPLAYER}"})
    assert answer.status_code == 200 and answer.json()["by"] == "alice"
    records = read_all(ferry_settings, ferry_settings.topic(STATUS), 2)
    [replayed] = [dict(record.headers) for record in records if "ferry_replay_of" in dict(record.headers)]
    assert replayed["ce_id"].decode() == event_id and replayed["ferry_replayed_by"] == b"alice"
    assert replayed["ferry_replayed_by_credential"] == b"bearer"
    assert replayed["ferry_dlq_previous_reason"] == b"artifact a1b2 is not in the store yet"


def test_the_training_board_follows_the_topics_through_the_consoles_own_consumer_loop(
    ferry_settings: FerrySettings,
) -> None:
    publisher = KafkaPublisher(ferry_settings, source="tests")
    try:
        publisher.publish(TrainingRequested(model_name="digits", request_id="r7", dataset="sklearn:digits"))
        publisher.publish(TrainingStatus(model_name="digits", request_id="r7", state="progress", epoch=3, epochs=6))
        publisher.publish(TrainingStatus(model_name="digits", request_id="r8", state="failed", reason="out of memory"))
    finally:
        publisher.close()
    runs = LiveRuns()
    settings = ConsoleSettings(ferry=ferry_settings)
    group = settings.consumer_group()
    consumer = make_consumer(ferry_settings, group, [TrainingRequested.topic, TrainingStatus.topic])
    producer = make_producer(ferry_settings)
    loop = build_consumer_loop(consumer, producer, group=group, runs=runs, stop=threading.Event())
    try:
        drain(loop, lambda: len(runs.snapshot()["runs"]) == 2 and runs.in_progress() and runs.failed())
    finally:
        loop.close()
        producer.close(timeout=5)
    [running] = runs.in_progress()
    assert (running.request_id, running.dataset, running.progress) == ("r7", "sklearn:digits", 0.5)
    [failed] = runs.failed()
    assert (failed.request_id, failed.reason) == ("r8", "out of memory")


def test_the_console_process_starts_serves_and_stops_cleanly(ferry_settings: FerrySettings, tmp_path: Path) -> None:
    """``python -m services.console`` as ``make up`` runs it: ready once its consumer joined; a page with the
    registry away still renders; SIGTERM ends it with status 0. A broken tokens file is refused (exit 2)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("FERRY_")},
        "FERRY_HOME": str(ferry_settings.home),
        "FERRY_KAFKA_BOOTSTRAP": ferry_settings.kafka_bootstrap,
        "FERRY_TOPIC_PREFIX": ferry_settings.topic_prefix,
        "FERRY_REGISTRY_URL": NOBODY,
        "FERRY_MONITOR_URL": NOBODY,
        "FERRY_EVALUATOR_URL": NOBODY,
        "FERRY_GATEWAY_URL": NOBODY,
    }
    console = ServiceProcess("console", env, tmp_path / "console.log")
    try:
        console.start()
        page = httpx.get(f"{console.url}/", timeout=30)
        assert page.status_code == 200 and "registry unreachable" in page.text
        assert httpx.get(f"{console.url}/static/vendor/chart.umd.min.js", timeout=10).status_code == 200
        assert console.stop() == 0
    finally:
        console.close()
    (tmp_path / "bad-tokens").write_text("alice changeme\n")
    refused = ServiceProcess(
        "console", env | {"FERRY_REGISTRY_TOKENS_FILE": str(tmp_path / "bad-tokens")}, tmp_path / "2.log"
    )
    try:
        assert refused.start(wait=False).wait(timeout_s=120) == 2
        assert "refusing to start" in refused.output() and "changeme" not in refused.output()
    finally:
        refused.close()


def test_score_afresh_runs_ferry_compare_against_a_registry_process(
    ferry_settings: FerrySettings, fresh_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Compare page's "Score afresh": ``ferry compare --json`` in a process of its own, on two versions a
    real registry holds (linear models fitted on digits' train part), its table shown as the command gave it."""
    settings = ferry_settings.model_copy(update={"database_url": fresh_database_url})
    environment = {
        "FERRY_HOME": str(tmp_path / "home"),
        "FERRY_DATABASE_URL": fresh_database_url,
        "FERRY_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "FERRY_TOPIC_PREFIX": settings.topic_prefix,
        "FERRY_ARTIFACT_ROOT": settings.resolved_artifact_root,
        "FERRY_API_TOKEN": secrets.token_urlsafe(24),
    }
    for name, value in environment.items():
        monkeypatch.setenv(name, value)  # what the console's own process would have, for its child
    registry = ServiceProcess("registry", {**os.environ}, tmp_path / "registry.log").start()
    try:
        store, held_out = ArtifactStore(settings.resolved_artifact_root), split(load_dataset("sklearn:digits"))
        publisher = KafkaPublisher(settings, source="tests")
        try:
            for data in (fitted_digits(regularisation=0.01, rows=200), fitted_digits()):
                uri, sha256, size = store.put_bytes(data)
                artifact = ArtifactRef(uri=uri, sha256=sha256, size_bytes=size, format="onnx")
                signature = signature_of(open_session(data))
                publisher.publish(
                    ModelTrained(
                        model_name="digits",
                        request_id=new_id(),
                        artifact=artifact,
                        signature=signature,
                        dataset="sklearn:digits",
                        split_id=held_out.split_id,
                        arch="mlp",
                        hyperparameters=Hyperparameters(),
                    )  # fmt: skip
                )
        finally:
            publisher.close()
        client = RegistryClient.connect(registry.url)
        wait_for(lambda: _latest(client) == 2, what="both versions registered", timeout_s=60)
        table = FreshCompare(registry.url, timeout_s=240, latency_runs=20).compare("digits", [1, 2])
    finally:
        registry.close()
    assert [entry["version"] for entry in table["versions"]] == [1, 2] and table["baseline"] == 1
    [difference] = table["differences"]
    assert difference["version"] == 2 and difference["accuracy"]["mcnemar_p"] is not None
    assert difference["accuracy"]["estimate"] > 0  # the model fitted on every train row beats the one on 200


def _latest(client: RegistryClient) -> int:
    try:
        return client.model("digits").latest_version
    except RegistryNotFound:
        return 0
