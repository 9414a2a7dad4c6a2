"""The transactional outbox: what is committed is published, in order, even across a crash."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import func, select
from test_registry_support import TopicReader, trained_event

from services.registry.adapters.orm import OutboxMessage
from services.registry.adapters.outbox import RELAY_LOCK_KEY, OutboxRelay, PublishFailed
from services.registry.bootstrap import Registry, bootstrap
from services.registry.handlers import handle_model_trained
from services.registry.settings import RegistrySettings
from shared.envelope import EventMeta
from shared.events import Event, ModelRegistered, new_id, utc_now
from shared.kafka import ListPublisher

pytestmark = pytest.mark.integration
pytest_plugins = ["test_registry_support"]


def register_many(registry: Registry, count: int, model: str = "digits") -> None:
    for _ in range(count):
        event = trained_event(model)
        meta = EventMeta(event_id=new_id(), source="tests", time=utc_now(), traceparent=None, type_name=event.type_name)
        handle_model_trained(event, meta, uow=registry.uow())


def outbox_rows(registry: Registry) -> list[OutboxMessage]:
    with registry.session_factory() as session:
        return list(session.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def test_rows_committed_before_a_crash_are_published_by_the_next_relay(
    registry: Registry,
    registry_settings: RegistrySettings,
    topic_reader: Callable[[str], TopicReader],
) -> None:
    register_many(registry, 5)  # committed; the relay never ran: the process "died" here
    pending = outbox_rows(registry)
    assert [row.sent_at for row in pending] == [None] * 5
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
    assert all(row.sent_at is not None for row in outbox_rows(restarted))


class FlakyPublisher(ListPublisher):
    """Takes ``accept`` events, then fails like an unreachable broker."""

    def __init__(self, accept: int) -> None:
        super().__init__()
        self.accept = accept

    def publish(self, event: Event, *, event_id: str | None = None) -> None:
        if len(self.events) >= self.accept:
            raise TimeoutError("broker unreachable")
        super().publish(event, event_id=event_id)


def test_a_failed_publish_keeps_the_rest_pending_and_in_order(registry: Registry) -> None:
    register_many(registry, 5)
    flaky = FlakyPublisher(accept=2)
    with pytest.raises(PublishFailed, match="broker unreachable"):
        OutboxRelay(registry.session_factory, flaky).relay_once()
    rows = outbox_rows(registry)
    assert [row.sent_at is not None for row in rows] == [True, True, False, False, False]
    assert rows[2].attempts == 1 and "broker unreachable" in (rows[2].last_error or "")
    healthy = ListPublisher()
    assert OutboxRelay(registry.session_factory, healthy).relay_once() == 3
    assert flaky.event_ids + healthy.event_ids == [row.event_id for row in rows]
    assert [event.version for event in healthy.events] == [3, 4, 5]  # type: ignore[attr-defined]


def test_only_one_relay_drains_at_a_time(registry: Registry) -> None:
    register_many(registry, 3)
    first, second = ListPublisher(), ListPublisher()
    with registry.session_factory() as session, session.begin():
        session.scalar(select(func.pg_advisory_xact_lock(RELAY_LOCK_KEY)))  # another process is relaying
        assert OutboxRelay(registry.session_factory, first).relay_once() == 0
    assert OutboxRelay(registry.session_factory, second).relay_once() == 3
    assert first.events == []
