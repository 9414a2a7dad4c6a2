"""Fixtures and helpers shared by the registry's integration tests (the other test_registry_* files load
this module with ``pytest_plugins``). Each test gets its own PostgreSQL database on the session's server
(conftest's ``fresh_database_url``), migrated by the registry, and dropped after."""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import TopicPartition
from pydantic import SecretStr
from support import wait_for

from services.registry.bootstrap import Registry, bootstrap, consumer_loop
from services.registry.settings import RegistrySettings
from shared.artifacts import ArtifactStore
from shared.envelope import Decoded, decode
from shared.events import ArtifactRef, Event, Hyperparameters, ModelTrained, Signature, TensorSpec, new_id
from shared.kafka import KafkaPublisher, RetryPolicy
from shared.settings import FerrySettings

API_TOKEN = secrets.token_urlsafe(24)  # a real secret: the registry refuses placeholders at start-up
SIGNATURE = Signature(
    inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, 64])],
    outputs=[TensorSpec(name="probabilities", datatype="FP32", shape=[-1, 10])],
)


def trained_event(
    model: str = "digits",
    *,
    request_id: str | None = None,
    content: bytes | None = None,
    store: ArtifactStore | None = None,
) -> ModelTrained:
    """A model.trained event; with a store, its artifact really exists there (else it is nowhere)."""
    content = content if content is not None else uuid.uuid4().bytes * 8
    if store is not None:
        uri, sha256, size = store.put_bytes(content)
    else:
        sha256, size = hashlib.sha256(content).hexdigest(), len(content)
        uri = f"/nonexistent/{sha256}.onnx"
    return ModelTrained(
        model_name=model,
        request_id=request_id or new_id(),
        artifact=ArtifactRef(uri=uri, sha256=sha256, size_bytes=size, format="onnx"),
        signature=SIGNATURE,
        metrics={"val_accuracy": 0.97, "val_loss": 0.1},
        dataset="sklearn:digits",
        split_id="split-1",
        arch="mlp",
        hyperparameters=Hyperparameters(epochs=3),
    )


@pytest.fixture
def registry_settings(ferry_settings: FerrySettings, fresh_database_url: str) -> RegistrySettings:
    """Registry settings on this test's topics and database, with an API token."""
    return RegistrySettings(
        ferry=ferry_settings.model_copy(update={"database_url": fresh_database_url}),
        api_token=SecretStr(API_TOKEN),
        relay_idle_s=0.05,
        db_pool_size=25,
        consumer_group=f"registry-{uuid.uuid4().hex[:8]}",
    )


@pytest.fixture
def registry(registry_settings: RegistrySettings) -> Iterator[Registry]:
    """The registry wired to the real database (migrated) and the real broker; nothing running yet."""
    built = bootstrap(registry_settings)
    try:
        yield built
    finally:
        built.stop.set()
        built.close()


@contextmanager
def running(registry: Registry, *, relay: bool = True, consumer: bool = True) -> Iterator[None]:
    """Run the consumer loop and/or the outbox relay in threads for the block's duration."""
    threads: list[threading.Thread] = []
    dlq = None
    registry.stop.clear()
    if consumer:
        loop, dlq = consumer_loop(registry, retry=RetryPolicy(attempts=2, first_backoff_s=0.05))
        threads.append(threading.Thread(target=loop.run, name="test-consumer", daemon=True))
    if relay:
        threads.append(threading.Thread(target=registry.relay.run, name="test-relay", daemon=True))
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        registry.stop.set()
        for thread in threads:
            thread.join(15)
        if dlq is not None:
            dlq.close(timeout=5)


def publish(settings: FerrySettings, *events: Event, event_id: str | None = None) -> str:
    """Send events to their topics as any producer would; returns the last one's event id."""
    publisher = KafkaPublisher(settings, source="tests")
    sent = ""
    try:
        for event in events:
            sent = event_id or new_id()
            publisher.publish(event, event_id=sent)
    finally:
        publisher.close()
    return sent


def committed(settings: RegistrySettings, topic: str) -> int:
    """How many messages of ``topic`` the registry's consumer group has committed, all partitions together."""
    admin = KafkaAdminClient(bootstrap_servers=settings.ferry.kafka_bootstrap)
    try:
        offsets = admin.list_group_offsets(settings.consumer_group).get(settings.consumer_group, {})
    except KafkaError:  # the group's coordinator is not settled yet
        return 0
    finally:
        admin.close()
    full_topic = settings.ferry.topic(topic)
    return sum(meta.offset for partition, meta in offsets.items() if partition.topic == full_topic and meta.offset > 0)


class TopicReader:
    """Reads a topic from its beginning without a consumer group (assigned partitions)."""

    def __init__(self, settings: FerrySettings, topic: str) -> None:
        self.topic = settings.topic(topic)
        self._consumer = KafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            consumer_timeout_ms=200,
        )
        partitions = wait_for(lambda: self._consumer.partitions_for_topic(self.topic), what=f"{self.topic} metadata")
        self._consumer.assign([TopicPartition(self.topic, partition) for partition in sorted(partitions)])
        self.records: list[Any] = []

    def read(self, count: int, *, timeout_s: float = 30.0) -> list[Decoded]:
        """At least ``count`` messages (all read so far), decoded."""
        deadline = time.monotonic() + timeout_s
        while len(self.records) < count and time.monotonic() < deadline:
            for batch in self._consumer.poll(timeout_ms=200).values():
                self.records.extend(batch)
        return [decode(record.headers, record.key, record.value) for record in self.records]

    def settle(self, wait_s: float = 1.0) -> list[Decoded]:
        """Everything that arrives within ``wait_s`` more."""
        return self.read(len(self.records) + 10_000, timeout_s=wait_s)

    def close(self) -> None:
        self._consumer.close()


@pytest.fixture
def topic_reader(ferry_settings: FerrySettings) -> Iterator[Callable[[str], TopicReader]]:
    """A factory of TopicReaders, all closed after the test."""
    readers: list[TopicReader] = []

    def open_reader(topic: str) -> TopicReader:
        reader = TopicReader(ferry_settings, topic)
        readers.append(reader)
        return reader

    yield open_reader
    for reader in readers:
        reader.close()
