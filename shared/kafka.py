"""The Kafka edge: the publisher every service uses and the one consumer loop they all run.

Loop contract: poll → decode → dispatch to the handlers → (their effects are durable) → commit.
Transient failures are retried with back-off and then re-polled, never dead-lettered; a message
that cannot be decoded, or whose handler fails permanently, goes to ``<topic>.dlq`` with headers
naming the reason and the loop moves on.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import (
    CommitFailedError,
    IllegalGenerationError,
    KafkaError,
    RebalanceInProgressError,
    UnknownMemberIdError,
)
from kafka.structs import OffsetAndMetadata, TopicPartition
from opentelemetry import metrics, propagate, trace

from shared.envelope import Decoded, DecodeError, EventMeta, decode, encode
from shared.errors import PermanentError, TransientError
from shared.events import Event
from shared.settings import FerrySettings

log = logging.getLogger(__name__)

Handler = Callable[[Any, EventMeta], None]
"""A handler takes the typed event and its envelope; its dependencies are bound by bootstrap."""


REBALANCE_ERRORS = (CommitFailedError, RebalanceInProgressError, IllegalGenerationError, UnknownMemberIdError)
DEFAULT_TRANSIENT: tuple[type[BaseException], ...] = (TransientError, ConnectionError, TimeoutError, KafkaError)


class Publisher(Protocol):
    def publish(self, event: Event, *, event_id: str | None = None) -> None: ...

    def publish_batch(self, items: Sequence[tuple[Event, str | None]]) -> list[Exception | None]:
        """Send every (event, event_id) at once, then wait: one result per item, None when acked."""
        ...


class KafkaPublisher:
    """Publishes events in CloudEvents binary mode; acks=all and idempotence, waits for the ack."""

    def __init__(self, settings: FerrySettings, *, source: str, producer: KafkaProducer | None = None) -> None:
        self._settings = settings
        self._source = source
        self._producer = producer or make_producer(settings)

    def publish(self, event: Event, *, event_id: str | None = None, wait: bool = True) -> None:
        """Send one event; with ``wait`` it returns once the broker has it durably."""
        future = self._send(event, event_id)
        if wait:
            future.get(timeout=30)

    def publish_batch(self, items: Sequence[tuple[Event, str | None]]) -> list[Exception | None]:
        """Send all, then wait for every ack: a batch costs one round trip, not one per event.

        Order within a partition is kept: the producer is idempotent, so its retries never reorder.
        """
        sent: list[Any] = []
        for event, event_id in items:
            try:
                sent.append(self._send(event, event_id))
            except Exception as error:  # noqa: BLE001 - reported per item, like a failed ack
                sent.append(error)
        results: list[Exception | None] = []
        for future in sent:
            if isinstance(future, Exception):
                results.append(future)
                continue
            try:
                future.get(timeout=30)
                results.append(None)
            except Exception as error:  # noqa: BLE001 - the caller decides what a failed ack means
                results.append(error)
        return results

    def _send(self, event: Event, event_id: str | None) -> Any:
        message = encode(event, source=self._source, event_id=event_id)
        return self._producer.send(
            self._settings.topic(event.topic), key=message.key, value=message.value, headers=message.headers
        )

    def flush(self) -> None:
        self._producer.flush(timeout=30)

    def close(self) -> None:
        self._producer.close(timeout=10)


@dataclass
class ListPublisher:
    """In-memory publisher for unit tests: keeps what was published, in order."""

    events: list[Event] = field(default_factory=list)
    event_ids: list[str | None] = field(default_factory=list)

    def publish(self, event: Event, *, event_id: str | None = None) -> None:
        self.events.append(event)
        self.event_ids.append(event_id)

    def publish_batch(self, items: Sequence[tuple[Event, str | None]]) -> list[Exception | None]:
        results: list[Exception | None] = []
        for event, event_id in items:
            try:
                self.publish(event, event_id=event_id)
                results.append(None)
            except Exception as error:  # noqa: BLE001 - a subclass may fail like a broker would
                results.append(error)
        return results

    def of_type(self, event_class: type[Event]) -> list[Any]:
        return [event for event in self.events if isinstance(event, event_class)]


def make_producer(settings: FerrySettings, **overrides: Any) -> KafkaProducer:
    """A producer with the design's delivery guarantees (acks=all, idempotence)."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "retries": 5,
    }
    options.update(overrides)
    return KafkaProducer(**options)


def make_consumer(settings: FerrySettings, group: str, topics: Sequence[str], **overrides: Any) -> KafkaConsumer:
    """A consumer of the design topics (short names), committing by hand."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.kafka_bootstrap,
        "group_id": group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": 50,
        # A consumer that died hands its partitions on after 10 s, not kafka-python's 45 s.
        "session_timeout_ms": 10_000,
        # Notice new partitions (and topics created after the join) within seconds, not kafka-python's 5 minutes.
        "metadata_max_age_ms": 5_000,
    }
    options.update(overrides)
    consumer = KafkaConsumer(**options)
    names = [settings.topic(name) for name in topics]
    for name in names:
        # Load the topics' metadata before the group join: a leader that assigns partitions before it
        # knows a topic assigns none of it (a known race with freshly created topics).
        consumer.partitions_for_topic(name)
    consumer.subscribe(names)
    return consumer


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5
    first_backoff_s: float = 0.2
    max_backoff_s: float = 5.0

    def backoffs(self) -> Iterable[float]:
        delay = self.first_backoff_s
        for _ in range(self.attempts - 1):
            yield delay
            delay = min(delay * 2, self.max_backoff_s)


class _Retry(Exception):
    """Internal: a message whose transient failure outlived its retries; re-poll it later."""


class ConsumerLoop:
    """The one consumer loop: every service runs its handlers through this."""

    def __init__(
        self,
        *,
        consumer: KafkaConsumer,
        dlq_producer: KafkaProducer,
        group: str,
        handlers: Mapping[type[Event], Sequence[Handler]],
        retry: RetryPolicy = RetryPolicy(),
        transient: tuple[type[BaseException], ...] = DEFAULT_TRANSIENT,
        stop: threading.Event | None = None,
    ) -> None:
        self._consumer = consumer
        self._dlq = dlq_producer
        self._group = group
        self._handlers = handlers
        self._retry = retry
        self._transient = transient
        self.stop_event = stop or threading.Event()
        self._closed = False
        self._pending: dict[TopicPartition, OffsetAndMetadata] = {}
        meter = metrics.get_meter("ferry.kafka")
        self._consumed = meter.create_counter("ferry.events.consumed", unit="1", description="events by outcome")
        self._dead_lettered = meter.create_counter("ferry.events.dead_lettered", unit="1")
        self._tracer = trace.get_tracer("ferry.kafka")

    def run(self) -> None:
        """Poll until stopped; commit what finished; close the consumer."""
        log.info("consumer loop started", extra={"group": self._group})
        try:
            while not self.stop_event.is_set():
                self.poll_once()
        finally:
            self.close()
            log.info("consumer loop stopped", extra={"group": self._group})

    def close(self) -> None:
        """Leave the group and release the consumer (offsets were committed as messages finished)."""
        if not self._closed:
            self._closed = True
            self._flush_commits()
            self._consumer.close(autocommit=False)

    def poll_once(self, timeout_ms: int = 500) -> int:
        """Handle one poll's worth of messages; returns how many were finished (their offsets committed or pending)."""
        batches = self._consumer.poll(timeout_ms=timeout_ms)
        self._flush_commits()  # what a rebalance kept us from committing last time
        finished = 0
        for partition, records in batches.items():
            for record in records:
                if self.stop_event.is_set():
                    break
                try:
                    self._process(record)
                except _Retry:
                    # Leave this offset uncommitted and fetch it again on a later poll.
                    self._consumer.seek(partition, record.offset)
                    break
                epoch = record.leader_epoch if record.leader_epoch is not None else -1
                self._pending[partition] = OffsetAndMetadata(record.offset + 1, "", epoch)
                self._flush_commits()
                finished += 1
        return finished

    def _flush_commits(self) -> None:
        """Commit the finished offsets of the partitions we own.

        During a rebalance the commit is refused; the offsets stay pending and are committed after the
        next poll has rejoined the group. A partition that moved to another member meanwhile is
        re-read from its last committed offset there: at-least-once, and the handlers are idempotent.
        """
        if not self._pending:
            return
        owned = self._consumer.assignment()
        offsets = {partition: offset for partition, offset in self._pending.items() if partition in owned}
        try:
            if offsets:
                self._consumer.commit(offsets)
        except REBALANCE_ERRORS as error:
            log.warning("offset commit deferred by a group rebalance: %s", error)
            return
        self._pending.clear()

    def _process(self, record: Any) -> None:
        try:
            decoded = decode(record.headers, record.key, record.value)
        except DecodeError as error:
            self._dead_letter(record, reason=str(error), error_type="DecodeError")
            return
        try:
            self._dispatch(decoded)
        except _Retry:
            raise
        except PermanentError as error:
            self._dead_letter(record, reason=str(error), error_type="PermanentError")
            return
        except Exception as error:  # noqa: BLE001 - a handler bug must not kill the loop; the DLQ keeps the event
            log.exception("handler failed permanently", extra={"topic": record.topic, "offset": record.offset})
            self._dead_letter(record, reason=f"{type(error).__name__}: {error}", error_type=type(error).__name__)
            return
        self._consumed.add(1, {"topic": record.topic, "group": self._group, "outcome": "handled"})

    def _dispatch(self, decoded: Decoded) -> None:
        handlers = self._handlers.get(type(decoded.event), ())
        for handler in handlers:
            self._call_with_retries(handler, decoded)

    def _call_with_retries(self, handler: Handler, decoded: Decoded) -> None:
        backoffs = iter(self._retry.backoffs())
        carrier = {"traceparent": decoded.meta.traceparent} if decoded.meta.traceparent else {}
        context = propagate.extract(carrier)
        while True:
            try:
                with self._tracer.start_as_current_span(
                    f"handle {decoded.meta.type_name}", context=context, kind=trace.SpanKind.CONSUMER
                ):
                    handler(decoded.event, decoded.meta)
                return
            except self._transient as error:
                delay = next(backoffs, None)
                if delay is None or self.stop_event.is_set():
                    log.warning("transient failure outlived its retries; will re-poll: %s", error)
                    self._consumed.add(1, {"group": self._group, "outcome": "retry_later"})
                    raise _Retry() from error
                log.warning("transient failure, retrying in %.1fs: %s", delay, error)
                self.stop_event.wait(delay)

    def _dead_letter(self, record: Any, *, reason: str, error_type: str) -> None:
        headers = list(record.headers or []) + [
            ("ferry_dlq_reason", reason.encode()[:4000]),
            ("ferry_dlq_error_type", error_type.encode()),
            ("ferry_dlq_topic", record.topic.encode()),
            ("ferry_dlq_partition", str(record.partition).encode()),
            ("ferry_dlq_offset", str(record.offset).encode()),
            ("ferry_dlq_group", self._group.encode()),
            ("ferry_dlq_time", str(time.time()).encode()),
        ]
        log.warning("dead-lettering %s@%s/%s: %s", record.topic, record.partition, record.offset, reason)
        # Wait for the DLQ's ack before the offset is committed: nothing may be lost in between.
        self._dlq.send(dlq_topic(record.topic), key=record.key, value=record.value, headers=headers).get(timeout=30)
        self._dead_lettered.add(1, {"topic": record.topic, "group": self._group})
        self._consumed.add(1, {"topic": record.topic, "group": self._group, "outcome": "dead_lettered"})


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set ``stop``: the loop finishes the message in hand, commits, and returns."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())


def dlq_topic(topic: str) -> str:
    """The dead-letter topic of a topic."""
    return f"{topic}.dlq"
