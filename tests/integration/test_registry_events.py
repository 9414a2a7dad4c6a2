"""Events through the real broker: model.trained and model.decided in, model.registered and
deployment.changed out, contradictions dead-lettered, a database outage retried and never dead-lettered."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from sqlalchemy import func, select
from support import wait_for
from test_registry_support import TopicReader, committed, publish, running, trained_event

from services.registry.adapters.memory import ListSender
from services.registry.adapters.orm import AppliedEvent, DeploymentHistory, Evaluation, ModelVersion
from services.registry.adapters.repository import SqlUnitOfWork
from services.registry.bootstrap import Registry, bootstrap, consumer_loop
from services.registry.settings import RegistrySettings
from shared.events import DeploymentChanged, ModelDecided, ModelRegistered
from shared.kafka import RetryPolicy, make_consumer

pytestmark = pytest.mark.integration
pytest_plugins = ["test_registry_support"]


def count(registry: Registry, table: type) -> int:
    with registry.session_factory() as session:
        return int(session.scalar(select(func.count()).select_from(table)) or 0)


def test_model_trained_delivered_twice_through_kafka_makes_one_version(
    registry: Registry,
    topic_reader: Callable[[str], TopicReader],
) -> None:
    settings = registry.settings.ferry
    event = trained_event(store=registry.artifacts)
    first_id = publish(settings, event)
    publish(settings, event, event_id=first_id)  # the same message again (a producer retry, a replay)
    publish(settings, event)  # a redelivery under a new id: same request id, same sha256
    registered = topic_reader("model.registered")
    with running(registry):
        wait_for(lambda: committed(registry.settings, "model.trained") == 3, what="all three deliveries handled")
        received = registered.read(1)
        received = registered.settle(1.5)
    assert count(registry, ModelVersion) == 1
    assert count(registry, AppliedEvent) == 1  # the redelivery under a new id changed nothing, so left no trace
    assert len(received) == 1 and isinstance(received[0].event, ModelRegistered)
    assert received[0].event.version == 1 and received[0].event.artifact.sha256 == event.artifact.sha256


def test_decisions_through_kafka_change_the_deployment_and_contradictions_are_dead_lettered(
    registry: Registry,
    topic_reader: Callable[[str], TopicReader],
) -> None:
    settings = registry.settings.ferry
    publish(settings, trained_event(store=registry.artifacts), trained_event(store=registry.artifacts))
    decide = lambda version, decision, **extra: publish(  # noqa: E731
        settings, ModelDecided(model_name="digits", version=version, decision=decision, reason="test", **extra)
    )
    changed, dead = topic_reader("deployment.changed"), topic_reader("model.decided.dlq")
    with running(registry):
        wait_for(lambda: count(registry, ModelVersion) == 2, what="two versions")
        decide(1, "promote", stage="champion")
        decide(2, "promote", stage="canary", canary_weight=0.2)
        decide(1, "rollback")  # the champion has no predecessor: cannot apply
        decide(9, "promote", stage="champion")  # no such version
        decide(2, "reject")  # the canary is withdrawn
        decide(2, "promote", stage="champion")  # a rejected version: the evaluator can never promote it
        changes = changed.read(3)
        dead.read(3)
    assert [change.event.revision for change in changes] == [1, 2, 3]  # type: ignore[attr-defined]
    canary = changes[1].event
    assert isinstance(canary, DeploymentChanged) and canary.champion and canary.challenger
    assert (canary.champion.version, canary.challenger.version, canary.canary_weight) == (1, 2, 0.2)
    assert canary.actor == "evaluator" and canary.champion.artifact.uri.endswith(".onnx")
    assert changes[2].event.challenger is None  # type: ignore[attr-defined]
    reasons = [dict(record.headers)["ferry_dlq_reason"].decode() for record in dead.records]
    assert len(reasons) == 3
    assert "no champion precedes version 1" in reasons[0] and "has no version 9" in reasons[1]
    assert "version 2 was rejected; promoting it needs force" in reasons[2]
    assert count(registry, Evaluation) == 3 and count(registry, DeploymentHistory) == 3


def test_a_database_outage_is_retried_never_dead_lettered(
    registry_settings: RegistrySettings,
    topic_reader: Callable[[str], TopicReader],
) -> None:
    ferry = registry_settings.ferry
    dead_database = ferry.model_copy(update={"database_url": "postgresql+psycopg://ferry@127.0.0.1:1/nowhere"})
    broken = bootstrap(
        registry_settings.model_copy(update={"ferry": dead_database}), migrate=False, sender=ListSender()
    )
    attempts = threading.Event()
    original = broken.uow

    def counted_uow() -> SqlUnitOfWork:
        attempts.set()
        return original()

    broken.uow = counted_uow  # type: ignore[method-assign]
    consumer = make_consumer(ferry, registry_settings.consumer_group, ["model.trained", "model.decided"])
    loop, dlq = consumer_loop(broken, consumer=consumer, retry=RetryPolicy(attempts=2, first_backoff_s=0.01))
    dead = topic_reader("model.trained.dlq")
    event = trained_event(store=broken.artifacts)
    publish(ferry, event)
    try:
        wait_for(lambda: loop.poll_once(timeout_ms=200) or attempts.is_set(), what="a delivery attempt")
        for _ in range(3):
            assert loop.poll_once(timeout_ms=200) == 0  # retried, never finished, never dead-lettered
    finally:
        consumer.close()
        dlq.close()
        broken.close()
    assert dead.settle(1.0) == []
    healed = bootstrap(registry_settings)  # the database is back: the same group picks the event up again
    try:
        with running(healed, relay=False):
            wait_for(lambda: count(healed, ModelVersion) == 1, what="the version after the outage")
    finally:
        healed.close()
