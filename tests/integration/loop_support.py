"""Helpers for the consumer-loop tests: loops on a test's own topics, draining, reading topics back."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from shared.envelope import encode
from shared.events import ArtifactRef, Event, Hyperparameters, ModelTrained, Signature, TrainingStatus
from shared.kafka import ConsumerLoop, RetryPolicy, make_consumer, make_producer
from shared.settings import FerrySettings

STATUS = TrainingStatus.topic


def status(epoch: int, key: str = "edge") -> TrainingStatus:
    return TrainingStatus(model_name="edge", request_id=key, state="progress", epoch=epoch)


def trained_event(model: str = "edge") -> ModelTrained:
    """A valid model.trained (its artifact is not read by the tests that send it)."""
    return ModelTrained(
        model_name=model,
        request_id="r",
        dataset="sklearn:iris",
        split_id="s",
        arch="mlp",
        artifact=ArtifactRef(uri="file:///x", sha256="a" * 64, size_bytes=1, format="onnx"),
        signature=Signature(inputs=[], outputs=[]),
        hyperparameters=Hyperparameters(),
    )


class Loops:
    """Builds loops (and their producers) for one test and closes them all afterwards."""

    def __init__(self, settings: FerrySettings) -> None:
        self.settings = settings
        self._closers: list[Callable[[], Any]] = []

    def group(self, name: str) -> str:
        return f"{self.settings.topic_prefix}{name}"

    def make(
        self,
        handlers: dict[type[Event], list[Callable[..., None]]],
        *,
        group: str = "loop",
        topics: Sequence[str] = (STATUS,),
        consumer: Any = None,
        dlq_producer: Any = None,
        consumer_options: dict[str, Any] | None = None,
        **options: Any,
    ) -> ConsumerLoop:
        full_group = self.group(group)
        consumer = consumer or make_consumer(self.settings, full_group, topics, **(consumer_options or {}))
        if dlq_producer is None:
            dlq_producer = make_producer(self.settings)
            self._closers.append(dlq_producer.close)
        options.setdefault("retry", RetryPolicy(attempts=3, first_backoff_s=0.05))
        loop = ConsumerLoop(
            consumer=consumer, dlq_producer=dlq_producer, group=full_group, handlers=handlers, **options
        )
        self._closers.append(loop.close)
        return loop

    def close(self) -> None:
        while self._closers:
            self._closers.pop()()


def drain(loop: ConsumerLoop, until: Callable[[], bool], timeout_s: float = 90) -> None:
    """Poll the loop until ``until()`` holds; fail after a generous deadline."""
    deadline = time.monotonic() + timeout_s
    while not until():
        assert time.monotonic() < deadline, "timed out waiting for the consumer loop"
        loop.poll_once(timeout_ms=200)


def read_all(settings: FerrySettings, topic: str, expected: int, timeout_s: float = 30) -> list[Any]:
    """Every record of a topic from the start, once ``expected`` have come (or the deadline passed)."""
    consumer = KafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(records) < expected and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=300).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


def committed(settings: FerrySettings, group: str, topic: str) -> dict[int, int | None]:
    """The group's committed offset of each partition of ``topic``."""
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=group, enable_auto_commit=False)
    try:
        partitions = sorted(consumer.partitions_for_topic(topic) or ())
        return {p: consumer.committed(TopicPartition(topic, p)) for p in partitions}
    finally:
        consumer.close(autocommit=False)


def end_offsets(settings: FerrySettings, topic: str) -> dict[int, int]:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return {tp.partition: int(offset) for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


Raw = tuple[bytes | None, bytes | None, list]


def send_raw(settings: FerrySettings, topic: str, messages: Sequence[Raw]) -> list[int]:
    """Send raw (key, value, headers) messages one batch each, in order; returns their offsets."""
    producer = make_producer(settings)
    try:
        return [
            producer.send(topic, key=key, value=value, headers=headers).get(timeout=30).offset
            for key, value, headers in messages
        ]
    finally:
        producer.close()


def encoded(event: Event, **header_overrides: bytes) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
    message = encode(event, source="ferry/test")
    headers = dict(message.headers) | header_overrides
    return message.key, message.value, list(headers.items())
