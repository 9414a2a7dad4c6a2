"""Small parts of the consumer loop: retry policy, what counts as transient, trace parents, rebalances."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kafka import AsyncConsumerRebalanceListener, KafkaConsumer
from kafka.errors import KafkaError
from kafka.structs import TopicPartition
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from shared.envelope import EventMeta
from shared.errors import TransientError

log = logging.getLogger("shared.kafka")

Handler = Callable[[Any, EventMeta], None]
"""A handler takes the typed event and its envelope; its dependencies are bound by bootstrap."""


def bind_handlers(
    table: Mapping[type[Any], Sequence[Callable[..., Any]]], **dependencies: Any
) -> dict[type[Any], list[Handler]]:
    """A service's ``HANDLERS`` table with the dependencies bound by closure: each handler is then called
    ``handler(event, meta, **dependencies)``."""

    def bind(handler: Callable[..., Any]) -> Handler:
        def run(event: Any, meta: EventMeta) -> None:
            handler(event, meta, **dependencies)

        return run

    return {event_type: [bind(handler) for handler in handlers] for event_type, handlers in table.items()}


DEFAULT_TRANSIENT: tuple[type[BaseException], ...] = (TransientError, ConnectionError, TimeoutError, KafkaError)


def is_transient(error: BaseException, transient: tuple[type[BaseException], ...] = DEFAULT_TRANSIENT) -> bool:
    """Worth retrying: one of ``transient``, except a KafkaError that says it is not retriable."""
    if isinstance(error, KafkaError) and not error.retriable:
        return False
    return isinstance(error, transient)


@dataclass(frozen=True)
class RetryPolicy:
    """In-place retries of a transient handler failure, before the message is fetched again later."""

    attempts: int = 5
    first_backoff_s: float = 0.2
    max_backoff_s: float = 5.0

    def backoffs(self) -> Iterable[float]:
        delay = self.first_backoff_s
        for _ in range(self.attempts - 1):
            yield delay
            delay = min(delay * 2, self.max_backoff_s)


class Backoff:
    """Growing pauses between retries of something that keeps failing (a commit, a poll)."""

    def __init__(self, first_s: float = 0.5, max_s: float = 30.0) -> None:
        self._first_s, self._max_s, self._next_s = first_s, max_s, first_s

    def next(self) -> float:
        delay, self._next_s = self._next_s, min(self._next_s * 2, self._max_s)
        return delay

    def reset(self) -> None:
        self._next_s = self._first_s


def remote_parent(traceparent: str | None) -> Context | None:
    """The producer's span from a W3C ``traceparent`` (``00-<32 hex>-<16 hex>-<2 hex>``), as the parent
    context of the handling.

    Parsed by hand: the propagator's regular expression costs more than a whole no-op handling.
    """
    if not traceparent or len(traceparent) < 55 or traceparent[:2] == "ff":
        return None
    if traceparent[2] != "-" or traceparent[35] != "-" or traceparent[52] != "-":
        return None
    try:
        trace_id, span_id = int(traceparent[3:35], 16), int(traceparent[36:52], 16)
        flags = int(traceparent[53:55], 16)
    except ValueError:
        return None
    if not trace_id or not span_id:
        return None
    return trace.set_span_in_context(NonRecordingSpan(SpanContext(trace_id, span_id, True, TraceFlags(flags))))


def unreadable_partition(consumer: KafkaConsumer) -> TopicPartition | None:
    """The partition whose records kafka-python failed to parse (after a CorruptRecordError from poll).

    The error does not name its partition; the fetcher's in-line record set does. Reaching into it is
    the price of not dying on such a record (kafka-python is pinned < 4, and a test through the real
    broker pins this behaviour down).
    """
    fetcher = getattr(consumer, "_fetcher", None)
    parsed = getattr(fetcher, "_next_partition_records", None)
    partition = getattr(parsed, "topic_partition", None)
    if isinstance(partition, TopicPartition) and partition in consumer.assignment():
        return partition
    return None


class RebalanceParty(Protocol):
    """What the rebalance listener needs from the loop."""

    consumer: KafkaConsumer

    def take_pending(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, Any]: ...

    def partitions_left(self, partitions: set[TopicPartition], *, clean: bool) -> None: ...

    def partitions_came(self, partitions: set[TopicPartition]) -> None: ...


class Rebalance(AsyncConsumerRebalanceListener):
    """Commits what finished before partitions leave; notices crashed batches when they arrive.

    Async because kafka-python runs listeners on its IO thread, where a blocking commit is refused.
    The loop's thread is inside ``poll`` or ``close`` meanwhile, so the loop's state is not shared.
    """

    def __init__(self, loop: RebalanceParty) -> None:
        self._loop = loop

    async def on_partitions_revoked(self, revoked: Any) -> None:
        partitions = set(revoked)
        offsets = self._loop.take_pending(partitions)
        if offsets:
            try:
                await self._loop.consumer.commit_async(offsets)
            except Exception as error:  # noqa: BLE001 - the next owner re-reads from the last commit
                log.warning("commit on revoke failed (%s); the next owner re-reads those offsets", error)
        self._loop.partitions_left(partitions, clean=True)

    async def on_partitions_lost(self, lost: Any) -> None:
        partitions = set(lost)
        self._loop.take_pending(partitions)  # the group has moved on: a commit would be refused
        self._loop.partitions_left(partitions, clean=False)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        self._loop.partitions_came(set(assigned))
