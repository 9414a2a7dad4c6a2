"""The Kafka edge: the publisher every service uses and the one consumer loop they all run.

The loop lives in shared/consumer_loop.py (its contract is there), its dead-letter copies in
shared/dead_letter.py, its delivery-attempt log in shared/delivery.py; all are imported from here.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import AuthorizationError

from shared.consumer_loop import ConsumerLoop
from shared.consumer_support import DEFAULT_TRANSIENT, Handler, RetryPolicy, bind_handlers, is_transient
from shared.dead_letter import dlq_topic
from shared.envelope import encode
from shared.events import Event
from shared.settings import FerrySettings

__all__ = [
    "DEFAULT_TRANSIENT",
    "ConsumerLoop",
    "Handler",
    "KafkaPublisher",
    "ListPublisher",
    "Publisher",
    "RetryPolicy",
    "bind_handlers",
    "dlq_topic",
    "is_transient",
    "make_consumer",
    "make_producer",
    "stop_on_signals",
]

log = logging.getLogger(__name__)


class Publisher(Protocol):
    def publish(self, event: Event, *, event_id: str | None = None) -> None: ...

    def publish_batch(self, items: Sequence[tuple[Event, str | None]]) -> list[Exception | None]:
        """Send every (event, event_id) at once, then wait: one result per item, None when acked."""
        ...


def send_all(sends: Sequence[Callable[[], Any]], *, timeout_s: float) -> list[Exception | None]:
    """Call every send (each returns a producer future), then wait for each ack: one result per send,
    None when acked, else its error (a send that raised, or an ack that failed or timed out)."""
    futures: list[Any] = []
    for send in sends:
        try:
            futures.append(send())
        except Exception as error:  # noqa: BLE001 - reported per send, like a failed ack
            futures.append(error)
    results: list[Exception | None] = []
    for future in futures:
        if isinstance(future, Exception):
            results.append(future)
            continue
        try:
            future.get(timeout=timeout_s)
            results.append(None)
        except Exception as error:  # noqa: BLE001 - the caller decides what a failed ack means
            results.append(error)
    return results


class WriteRefused(AuthorizationError):
    """The broker refused this client's write: the topic is outside its user's ACL (never retried)."""

    def __init__(self, user: str | None, topic: str) -> None:
        super().__init__(
            f"the broker refused {user or 'this client'!r} writing {topic}: the topic is outside its ACL "
            "(shared/kafka_access.py lists what each Kafka user may write)"
        )


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
            try:
                future.get(timeout=30)
            except AuthorizationError as error:
                raise WriteRefused(self._settings.kafka_username, self._settings.topic(event.topic)) from error

    def publish_batch(self, items: Sequence[tuple[Event, str | None]]) -> list[Exception | None]:
        """Send all, then wait for every ack: a batch costs one round trip, not one per event.

        Order within a partition is kept: the producer is idempotent, so its retries never reorder.
        """
        return send_all([partial(self._send, event, event_id) for event, event_id in items], timeout_s=30)

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
        **settings.kafka_client_options(),
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
        **settings.kafka_client_options(),
        "group_id": group,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        # Kafka's default batch: the loop commits and marks once per batch, so bigger batches cost less.
        "max_poll_records": 500,
        # A consumer that died (kill -9) holds its partitions until its session times out: FERRY_KAFKA_SESSION_
        # TIMEOUT_MS, not kafka-python's 45 s; heartbeats every third of it, as Kafka advises.
        "session_timeout_ms": settings.kafka_session_timeout_ms,
        "heartbeat_interval_ms": max(300, settings.kafka_session_timeout_ms // 3),
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


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM and SIGINT set ``stop``: the loop finishes the message in hand, commits, and returns."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())


def kafka_answers(settings: FerrySettings) -> bool:
    """Ask the broker for its cluster metadata (with this process's credential); True when it answers."""
    import socket

    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    host, _, port = settings.kafka_bootstrap.split(",")[0].strip().rpartition(":")
    try:  # a cheap check first: the admin client's reconnect back-off grows to seconds
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    try:
        admin = KafkaAdminClient(**settings.kafka_client_options(), request_timeout_ms=3000, client_id="ferry-probe")
    except (KafkaError, OSError, ValueError):
        return False
    try:
        admin.describe_cluster()
        return True
    except (KafkaError, OSError):
        return False
    finally:
        admin.close()


def offsets_since(consumer: KafkaConsumer, topic: str, since_ms: int) -> dict[TopicPartition, int]:
    """Per partition of ``topic`` (its full name), the first offset of a record written at or after ``since_ms``
    (Kafka's offsets-for-times, never a scan), or the partition's end when none is that recent."""
    partitions = [TopicPartition(topic, number) for number in sorted(consumer.partitions_for_topic(topic) or ())]
    if not partitions:
        return {}
    found = consumer.offsets_for_times({tp: since_ms for tp in partitions})
    ends = consumer.end_offsets(partitions)
    return {tp: (found[tp].offset if found.get(tp) is not None else int(ends[tp])) for tp in partitions}


def read_up_to(
    consumer: KafkaConsumer,
    ends: dict[TopicPartition, int],
    *,
    deadline: float,
    give_up: Callable[[], bool] = lambda: False,
) -> tuple[list[Any], bool]:
    """The records of the assigned partitions from their positions up to ``ends`` (end offsets read
    before), and whether they were all read: False when ``deadline`` (monotonic) or ``give_up`` came first."""
    records: list[Any] = []
    while any(consumer.position(tp) < end for tp, end in ends.items()):
        if time.monotonic() > deadline or give_up():
            return records, False
        for tp, batch in consumer.poll(timeout_ms=300).items():
            records += [record for record in batch if record.offset < ends[tp]]
    return records, True
