"""The transactional outbox against the real broker: what is committed is published, each model's events in
order even when a send fails mid-batch, an undeliverable row is parked without blocking the rest, and one
relay is active at a time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from kafka import KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType, KafkaAdminClient
from kafka.errors import KafkaTimeoutError
from sqlalchemy import select
from support import wait_for
from test_registry_support import TopicReader, trained_event

from services.registry.adapters.orm import OutboxMessage
from services.registry.adapters.outbox import OutboxRelay, PublishFailed
from services.registry.bootstrap import SOURCE, Registry, bootstrap
from services.registry.handlers import handle_model_trained
from services.registry.settings import RegistrySettings
from shared.envelope import Decoded, EventMeta, decode
from shared.events import ModelRegistered, new_id, utc_now

pytestmark = pytest.mark.integration
pytest_plugins = ["test_registry_support"]


def register(registry: Registry, model: str, **metrics: float) -> None:
    event = trained_event(model, store=registry.artifacts)
    if metrics:
        event = event.model_copy(update={"metrics": metrics})
    meta = EventMeta(event_id=new_id(), source="tests", time=utc_now(), traceparent=None, type_name=event.type_name)
    handle_model_trained(event, meta, uow=registry.uow(), artifacts=registry.artifacts)


def outbox_rows(registry: Registry) -> list[OutboxMessage]:
    with registry.session_factory() as session:
        return list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def relay_of(registry: Registry, sender: Any) -> OutboxRelay:
    return OutboxRelay(registry.engine, sender, topic=registry.settings.ferry.topic, source=SOURCE, batch_size=50)


def versions_seen(received: list[Decoded]) -> dict[str, list[int]]:
    """Each model's versions in the order a consumer first saw them (a redelivered event id counts once)."""
    seen: dict[str, list[int]] = {}
    first_ids: set[str] = set()
    for item in received:
        if item.meta.event_id in first_ids:
            continue
        first_ids.add(item.meta.event_id)
        assert isinstance(item.event, ModelRegistered)
        seen.setdefault(item.event.model_name, []).append(item.event.version)
    return seen


def test_rows_committed_before_a_crash_are_published_by_the_next_relay(
    registry: Registry,
    registry_settings: RegistrySettings,
    topic_reader: Callable[[str], TopicReader],
) -> None:
    for _ in range(5):
        register(registry, "digits")  # committed; the relay never ran: the process "died" here
    pending = outbox_rows(registry)
    assert [row.status for row in pending] == ["pending"] * 5
    registry.close()

    restarted = bootstrap(registry_settings)  # the next start: migrations are a no-op, the relay drains
    try:
        assert restarted.relay.relay_once() == 5
        received = topic_reader("model.registered").read(5)
    finally:
        restarted.close()
    assert [item.meta.event_id for item in received] == [row.event_id for row in pending]
    assert [item.event.version for item in received] == [1, 2, 3, 4, 5]  # type: ignore[attr-defined]
    assert all(isinstance(item.event, ModelRegistered) and item.meta.source == "ferry.registry" for item in received)
    assert all(row.status == "sent" and row.sent_at is not None for row in outbox_rows(restarted))


class FailedAck:
    def get(self, timeout: float | None = None) -> None:
        raise KafkaTimeoutError("injected: the broker did not ack in time")


class FailOneSend:
    """The real producer, but the send of one chosen event id fails once, as an unanswered request would."""

    def __init__(self, producer: KafkaProducer, event_id: str) -> None:
        self.producer = producer
        self.event_id = event_id.encode()
        self.failed = 0

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None, headers: Any = None) -> Any:
        if not self.failed and ("ce_id", self.event_id) in (headers or []):
            self.failed += 1
            return FailedAck()
        return self.producer.send(topic, value=value, key=key, headers=headers)


def test_a_send_that_fails_mid_batch_never_lets_a_later_event_of_its_model_overtake_it(
    registry: Registry, topic_reader: Callable[[str], TopicReader]
) -> None:
    for number in range(6):
        register(registry, "digits")
        if number % 2:
            register(registry, "iris")  # another model's rows in the same batch
    rows = outbox_rows(registry)
    digits_rows = [row for row in rows if row.partition_key == "digits"]
    flaky = FailOneSend(registry.sender, digits_rows[2].event_id)  # type: ignore[arg-type]
    flaky_relay = relay_of(registry, flaky)
    with pytest.raises(PublishFailed, match="injected"):
        flaky_relay.relay_once()
    flaky_relay.close()
    assert flaky.failed == 1
    statuses = {row.event_id: row for row in outbox_rows(registry)}
    assert [statuses[row.event_id].status for row in digits_rows] == ["sent", "sent"] + ["pending"] * 4
    assert statuses[digits_rows[2].event_id].attempts == 1
    assert "injected" in (statuses[digits_rows[2].event_id].last_error or "")
    assert all(statuses[row.event_id].status == "sent" for row in rows if row.partition_key == "iris")

    assert relay_of(registry, registry.sender).relay_once() == 4
    received = topic_reader("model.registered").read(len(rows))
    received = received + topic_reader("model.registered").settle(0.5)[len(received) :]
    assert versions_seen(received) == {"digits": [1, 2, 3, 4, 5, 6], "iris": [1, 2, 3]}
    assert len(received) == len(rows)  # nothing was sent twice either
    assert {row.status for row in outbox_rows(registry)} == {"sent"}


def limit_message_size(registry: Registry, topic: str, max_bytes: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=registry.settings.ferry.kafka_bootstrap)
    try:
        name = registry.settings.ferry.topic(topic)
        admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, name, {"max.message.bytes": str(max_bytes)})])
        wait_for(
            lambda: admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name, ["max.message.bytes"])]),
            what="the topic's new size limit",
        )
    finally:
        admin.close()


def test_a_row_too_large_for_the_topic_is_parked_and_blocks_nothing(
    registry: Registry, topic_reader: Callable[[str], TopicReader]
) -> None:
    limit_message_size(registry, "model.registered", 4096)
    register(registry, "digits")
    register(registry, "iris")
    register(registry, "digits", **{f"metric_{index:04d}_{'x' * 40}": 0.5 for index in range(200)})  # ~12 kB
    register(registry, "iris")
    register(registry, "digits")
    relay = relay_of(registry, registry.sender)
    assert wait_for(lambda: relay.relay_once() or None, what="a pass that publishes") == 4
    assert relay.relay_once() == 0  # the parked row is not retried, nor does it hold anything up
    rows = outbox_rows(registry)
    [parked] = [row for row in rows if row.status == "failed"]
    assert parked.partition_key == "digits" and parked.payload["version"] == 2
    assert parked.last_error is not None and "MessageSizeTooLarge" in parked.last_error and parked.sent_at is None
    assert [row.status for row in rows if row is not parked] == ["sent"] * 4
    relay.refresh_stats()
    relay.close()
    assert (relay.failed, relay.pending) == (1, 0)
    received = topic_reader("model.registered").read(4)
    assert versions_seen(received + topic_reader("model.registered").settle(0.5)[4:]) == {
        "digits": [1, 3],
        "iris": [1, 2],
    }


def test_one_relay_is_active_at_a_time_and_another_takes_over(
    registry: Registry, topic_reader: Callable[[str], TopicReader]
) -> None:
    for _ in range(3):
        register(registry, "digits")
    first, second = relay_of(registry, registry.sender), relay_of(registry, registry.sender)
    assert first.relay_once() == 3 and first.is_leader
    register(registry, "digits")
    assert second.relay_once() == 0 and not second.is_leader  # the first holds the lock, between passes too
    first.close()  # its process ends: the lock goes with its connection
    assert second.relay_once() == 1 and second.is_leader
    second.close()
    received = topic_reader("model.registered").read(4)
    assert [item.event.version for item in received] == [1, 2, 3, 4]  # type: ignore[attr-defined]
    assert len(topic_reader("model.registered").settle(0.5)) == 4  # nobody published anything twice


def test_headers_of_a_relayed_event_name_the_registry_and_its_id(registry: Registry) -> None:
    register(registry, "digits")
    [row] = outbox_rows(registry)
    future_record: list[Any] = []

    class Capture:
        def send(self, topic: str, value: bytes | None = None, key: bytes | None = None, headers: Any = None) -> Any:
            future_record.append((topic, key, value, headers))
            return registry.sender.send(topic, value=value, key=key, headers=headers)

    relay = relay_of(registry, Capture())
    assert relay.relay_once() == 1
    relay.close()
    topic, key, value, headers = future_record[0]
    decoded = decode(headers, key, value)
    assert topic == registry.settings.ferry.topic("model.registered") and key == b"digits"
    assert (decoded.meta.event_id, decoded.meta.source) == (row.event_id, "ferry.registry")
