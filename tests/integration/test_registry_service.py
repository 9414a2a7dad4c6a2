"""The whole process, ``python -m services.registry``, against the real broker and database.

Crashes land where a fault point says (shared/faults.py), never on a timer: each test proves the point was
reached (the report file), restarts the registry, and counts that no event was lost, duplicated (beyond a
redelivery under the same event id, which consumers dedupe) or reordered. Two processes started together
migrate once and relay through one active relay. /metrics carries the registry's own metric names.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from support import ServiceProcess, wait_for
from test_registry_support import TopicReader, publish, trained_event

from services.registry.settings import RegistrySettings
from shared.artifacts import ArtifactStore
from shared.envelope import Decoded
from shared.events import ModelDecided, ModelRegistered
from shared.faults import FAULT_EXIT_CODE, reached

pytestmark = [pytest.mark.integration, pytest.mark.slow]
pytest_plugins = ["test_registry_support"]
OPERATOR_TOKEN = secrets.token_urlsafe(32)


class Service(ServiceProcess):
    """One registry process, with the environment a deployment would give it (not started)."""

    def __init__(self, settings: RegistrySettings, folder: Path, name: str, **extra_env: str) -> None:
        ferry = settings.ferry
        tokens = folder / "api-tokens"
        tokens.write_text(
            f"# written by the test, as make up writes .ferry/secrets/api-tokens\noperator {OPERATOR_TOKEN}\n"
        )
        env = {
            **os.environ,
            "FERRY_HOME": str(folder / "home"),
            "FERRY_DATABASE_URL": str(ferry.database_url),
            "FERRY_KAFKA_BOOTSTRAP": ferry.kafka_bootstrap,
            "FERRY_TOPIC_PREFIX": ferry.topic_prefix,
            "FERRY_ARTIFACT_ROOT": str(ferry.artifact_root),
            "FERRY_REGISTRY_TOKENS_FILE": str(tokens),
            "FERRY_REGISTRY_CONSUMER_GROUP": settings.consumer_group,
            "FERRY_REGISTRY_RELAY_IDLE_S": "0.05",
            "FERRY_REGISTRY_CONSUMER_SESSION_TIMEOUT_MS": "6000",
            "FERRY_FAULT_REPORT": str(folder / "faults.txt"),
        }
        env.pop("FERRY_API_TOKEN", None)
        super().__init__("registry", env | extra_env, folder / f"{name}.log")

    def messages(self) -> list[str]:
        """The ``message`` of every JSON log line."""
        found = []
        for line in self.output().splitlines():
            try:
                found.append(str(json.loads(line).get("message", "")))
            except ValueError:
                continue
        return found

    def get(self, path: str) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", timeout=10)


@pytest.fixture
def services(registry_settings: RegistrySettings, tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """Makes registry processes (not started) on this test's topics and database; kills what is left after."""
    made: list[Service] = []

    def make(name: str = "registry", **extra_env: str) -> Service:
        instance = Service(registry_settings, tmp_path, name, **extra_env)
        made.append(instance)
        return instance

    yield make
    for instance in made:
        instance.close()


def first_seen(received: list[Decoded]) -> list[Decoded]:
    """What a consumer that dedupes on event ids applies: each event id once, in arrival order."""
    seen: set[str] = set()
    unique = []
    for item in received:
        if item.meta.event_id not in seen:
            seen.add(item.meta.event_id)
            unique.append(item)
    return unique


def wait_unique(reader: TopicReader, count: int) -> None:
    """Read until ``count`` distinct event ids arrived (redeliveries of one id count once)."""

    def enough() -> bool:
        return len(first_seen(reader.read(len(reader.records) + 1, timeout_s=0.5))) >= count

    wait_for(enough, timeout_s=90, what=f"{count} distinct events on {reader.topic}")


def check_registered(received: list[Decoded], expected: dict[str, int]) -> None:
    """Every version announced under exactly one event id, each model's versions in order, nothing else."""
    ids_of: dict[tuple[str, int], set[str]] = {}
    for item in received:
        assert isinstance(item.event, ModelRegistered)
        ids_of.setdefault((item.event.model_name, item.event.version), set()).add(item.meta.event_id)
    assert all(len(ids) == 1 for ids in ids_of.values()), ids_of  # a republished row keeps its event id
    order: dict[str, list[int]] = {}
    for item in first_seen(received):
        assert isinstance(item.event, ModelRegistered)
        order.setdefault(item.event.model_name, []).append(item.event.version)
    assert order == {model: list(range(1, count + 1)) for model, count in expected.items()}


FAULT_POINTS = [
    # A registration committed, its offset not: the event comes again. (The relay thread may be between an
    # ack and its mark when the consumer thread crashes, so a broker-side duplicate may or may not appear.)
    ("registry.after_commit@3", None),
    ("registry.outbox.before_publish@1", False),  # rows committed, none published
    ("registry.outbox.before_mark_sent@1", True),  # rows published, not marked: published again, same ids
]


@pytest.mark.parametrize(("fault", "republished"), FAULT_POINTS)
def test_a_crash_at_a_fault_point_loses_duplicates_and_reorders_nothing(
    fault: str,
    republished: bool | None,
    services: Callable[..., Service],
    registry_settings: RegistrySettings,
    tmp_path: Path,
    topic_reader: Callable[[str], TopicReader],
) -> None:
    store = ArtifactStore(str(registry_settings.ferry.artifact_root))
    models = {"digits": 8, "iris": 4}
    events = [trained_event(model, store=store) for model, count in models.items() for _ in range(count)]
    registered, changed = topic_reader("model.registered"), topic_reader("deployment.changed")
    publish(registry_settings.ferry, *events)

    crashing = services("crashing", FERRY_FAULT_POINT=fault).start(wait=False)
    assert crashing.wait(timeout_s=90) == FAULT_EXIT_CODE, crashing.tail()
    assert reached(tmp_path / "faults.txt") == [fault.partition("@")[0]]  # the crash landed where it was meant to

    restarted = services("restarted").start()
    total = sum(models.values())
    wait_unique(registered, total)
    received = registered.settle(1.0)
    check_registered(received, models)
    if republished is not None:  # only a crash after the acks makes a broker-side duplicate
        assert (len(received) > total) is republished

    decisions = [
        ModelDecided(model_name="digits", version=version, decision="promote", stage=stage, reason="test")
        for version, stage in ((1, "champion"), (2, "canary"), (3, "champion"))
    ]
    publish(registry_settings.ferry, *decisions)
    wait_unique(changed, 3)
    revisions = [item.event.revision for item in first_seen(changed.settle(1.0))]  # type: ignore[attr-defined]
    assert revisions == [1, 2, 3]
    assert restarted.get("/api/v1/models/digits").json()["latest_version"] == models["digits"]
    assert restarted.stop(signal.SIGTERM) == 0


def test_two_registries_started_together_migrate_once_and_relay_through_one(
    services: Callable[..., Service],
    registry_settings: RegistrySettings,
    topic_reader: Callable[[str], TopicReader],
) -> None:
    first, second = services("first"), services("second")
    first.start(wait=False)
    second.start()
    first.wait_ready()
    both = [*first.messages(), *second.messages()]
    assert sum("registry schema migrated from None to" in message for message in both) == 1
    assert sum("registry schema already at" in message for message in both) == 1
    active = "this process's outbox relay is the active one"

    def leaders() -> list[Service]:
        return [service for service in (first, second) if active in service.messages()]

    wait_for(leaders, what="a relay to become the active one")
    assert len(leaders()) == 1, both
    [leader] = leaders()
    follower = second if leader is first else first

    store = ArtifactStore(str(registry_settings.ferry.artifact_root))
    registered = topic_reader("model.registered")
    publish(registry_settings.ferry, *(trained_event("digits", store=store) for _ in range(10)))
    wait_unique(registered, 10)
    assert leader.stop(signal.SIGKILL) == -signal.SIGKILL  # the active relay dies; its lock goes with it
    publish(registry_settings.ferry, *(trained_event("digits", store=store) for _ in range(5)))
    wait_unique(registered, 15)
    received = registered.settle(1.0)
    assert len(received) == 15  # two processes, one relay at a time: nothing published twice
    check_registered(received, {"digits": 15})
    assert active in follower.messages()
    assert follower.stop(signal.SIGTERM) == 0


METRIC_NAMES = (
    "ferry_registry_outbox_pending",
    "ferry_registry_outbox_lag_seconds",
    "ferry_registry_outbox_failed",
    "ferry_registry_events_applied_total",
    "ferry_registry_artifact_integrity_failures_total",
    "ferry_events_consumed_total",
    "ferry_registry_handler_duration_milliseconds_bucket",
    "http_server_duration_milliseconds_bucket",
)


def test_tokens_metrics_and_a_tampered_artifact_in_the_running_process(
    services: Callable[..., Service], registry_settings: RegistrySettings
) -> None:
    service = services().start()
    store = ArtifactStore(str(registry_settings.ferry.artifact_root))
    event = trained_event("digits", store=store)
    publish(registry_settings.ferry, event)
    wait_for(lambda: service.get("/api/v1/models/digits/versions/1").status_code == 200, what="version 1")
    assert service.get("/api/v1/models/digits/versions/1/artifact").status_code == 200

    Path(store.uri(event.artifact.sha256)).write_bytes(b"\0" * event.artifact.size_bytes)  # tampered on disk
    tampered = service.get("/api/v1/models/digits/versions/1/artifact")
    assert tampered.status_code == 500 and "integrity" in tampered.json()["error"]
    assert any("artifact integrity failure" in message for message in service.messages())

    body = {"action": "promote", "version": 1, "reason": "by hand"}
    headers = {"Authorization": f"Bearer {OPERATOR_TOKEN}", "X-Ferry-User": "somebody-else"}
    assert httpx.post(f"{service.url}/api/v1/models/digits/deployment", json=body, headers=headers).status_code == 200
    history = service.get("/api/v1/models/digits/deployment/history").json()["items"]
    assert [entry["actor"] for entry in history] == ["user:operator"]  # the token's user, not the header

    exposition = service.get("/metrics").text
    for name in METRIC_NAMES:
        assert f"\n{name}{{" in exposition or f"\n{name} " in exposition, name
    assert metric_value(exposition, "ferry_registry_artifact_integrity_failures_total", model="digits") == 1.0
    assert service.stop(signal.SIGTERM) == 0


def metric_value(exposition: str, name: str, **labels: str) -> float:
    for line in exposition.splitlines():
        if line.startswith(name + "{") and all(f'{key}="{value}"' in line for key, value in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} {labels} not exposed")


@pytest.mark.parametrize(
    ("env", "problem"),
    [({"FERRY_API_TOKEN": "ferry-demo-token"}, "placeholder"), ({"FERRY_API_TOKEN": ""}, "is empty")],
)
def test_a_placeholder_or_empty_token_stops_the_registry_at_start_up(
    services: Callable[..., Service], env: dict[str, Any], problem: str
) -> None:
    service = services(**env)
    service.start(wait=False)
    assert service.wait(timeout_s=90) == 2
    assert "refusing to start: FERRY_API_TOKEN is" in service.output() and problem in service.output()
    assert "ferry-demo-token" not in service.output()  # the refusal never quotes the token
