"""The one consumer loop every service runs (imported as ``shared.kafka.ConsumerLoop``).

Contract: poll a batch → decode → dispatch to the handlers (their effects are durable when they
return) → commit the batch's finished offsets, once per batch, and on revoke and close. Never before.

- A transient failure is retried with back-off, then the message is fetched again: never dead-lettered.
  A ``KafkaError`` counts as transient only when it says it is ``retriable``.
- A message that can never succeed goes to ``<topic>.dlq`` with ``ferry_dlq_*`` headers saying why
  (see shared/dead_letter.py): it does not decode or validate, its type belongs to another topic, no
  handler of this service takes it, or its handler failed for good. The copy is retried until the
  broker has it; the message is never skipped. On a topic the loop only observes (``observed_topics``:
  another group owns it and dead-letters there) such a message is logged, counted as ``left_to_owner``
  and skipped, so that N observers do not write N copies of one dead letter.
- A record that cannot even be read (``CorruptRecordError`` from ``poll()``) is dead-lettered as its
  coordinates, counted as ``unreadable``, logged at ERROR and skipped; the loop never spins on it.
- A failed commit (rebalance, timeout, broker away) keeps the offsets pending and is retried.
- A failed poll (broker away) is retried with back-off. Nothing but the stop event ends ``run``.
- Delivery attempts are marked durably once per batch (shared/delivery.py); after a crash the batch
  that was in flight is handled one message at a time, and a message that was in hand for
  ``max_attempts`` deaths of its consumer is dead-lettered unhandled.
- ``start_offsets`` (a group of this process's own, with nothing committed) positions a partition where
  reading it should begin, the first time it is assigned: a monitor refills its windows from the last hour
  of a log (offsets-for-times, ``offsets_since`` in shared/kafka.py) rather than from the topic's start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import CorruptRecordError, KafkaError
from kafka.structs import OffsetAndMetadata, TopicPartition
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context

from shared.commits import OffsetCommitter
from shared.consumer_support import (
    DEFAULT_TRANSIENT,
    Backoff,
    Handler,
    Rebalance,
    RetryPolicy,
    is_transient,
    remote_parent,
    unreadable_partition,
)
from shared.dead_letter import DeadLetterAborted, DeadLetterWriter, Original
from shared.delivery import CrashGuard, DeliveryLog, MemoryDeliveryLog
from shared.envelope import Decoded, DecodeError, decode
from shared.errors import PermanentError
from shared.events import Event
from shared.loop_telemetry import LoopTelemetry
from shared.telemetry import CLIENT_ERROR, spans_exported

log = logging.getLogger("shared.kafka")

IDLE_LAG_INTERVAL_S = 5.0


class _Retry(Exception):
    """Internal: a message whose transient failure outlived its retries; fetch it again later."""


class ConsumerLoop:
    """The one consumer loop: every service runs its handlers through this (see the module's docstring).

    ``delivery_log`` (shared/delivery.py) counts attempts across crashes; the loop closes it. ``spans``:
    a span per handled message (default: when traces are exported); otherwise the handler runs in the
    producer's trace context alone.
    """

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
        delivery_log: DeliveryLog | None = None,
        max_attempts: int = 3,
        commit_timeout_s: float = 10.0,
        spans: bool | None = None,
        observed_topics: Collection[str] = (),
        start_offsets: Mapping[TopicPartition, int] | None = None,
    ) -> None:
        self.consumer = consumer
        self.stop_event = stop or threading.Event()
        self._group = group
        self._handlers = handlers
        self._retry = retry
        self._transient = transient
        self._guard = CrashGuard(delivery_log or MemoryDeliveryLog(), group=group, max_attempts=max_attempts)
        self._dead_letters = DeadLetterWriter(dlq_producer, group=group, stop=self.stop_event)
        # Topics this group only watches (full names): the topic's owning group dead-letters what cannot
        # succeed there, so a copy from every watcher would only repeat it (see _dead_letter).
        self._observed = frozenset(observed_topics)
        self._telemetry = LoopTelemetry(group)
        self._tracer = trace.get_tracer("ferry.kafka")
        self._spans = spans_exported() if spans is None else spans
        self._commits = OffsetCommitter(consumer, timeout_ms=int(commit_timeout_s * 1000))
        self._positions: dict[TopicPartition, int] = {}  # next offset to handle, per partition (for the lag)
        self._start_offsets = dict(start_offsets or {})  # where first reads begin; each used once
        self._poll_backoff = Backoff()
        self._idle_lag_at = 0.0
        self._closed = False
        self.joined = threading.Event()
        """Set once the consumer has joined its group and been given its share (readiness)."""
        subscription = consumer.subscription()
        if subscription:  # re-subscribe with our listener: commit on revoke, look for crashed batches on assign
            quiet = logging.getLogger("kafka.consumer.subscription_state")  # "subscription unchanged": we know
            level = quiet.level
            quiet.setLevel(logging.ERROR)
            try:
                consumer.subscribe(topics=sorted(subscription), listener=Rebalance(self))
            finally:
                quiet.setLevel(level)

    @property
    def counts(self) -> dict[tuple[str, str], int]:
        """Outcomes so far, by (topic, outcome): handled, dead_lettered, retry_later, unreadable."""
        return dict(self._telemetry.totals)

    @property
    def lag(self) -> dict[TopicPartition, int]:
        """The consumer lag per partition, as ``ferry_kafka_consumer_lag`` exposes it."""
        return dict(self._telemetry.lag)

    # --- the loop ----------------------------------------------------------------------------------

    def run(self) -> None:
        """Poll until stopped; commit what finished; close the consumer."""
        log.info("consumer loop started", extra={"group": self._group})
        try:
            while not self.stop_event.is_set():
                self.poll_once()
        except BaseException:
            log.exception("consumer loop of group %s died", self._group)
            raise
        finally:
            self.close()
            log.info("consumer loop stopped", extra={"group": self._group})

    def close(self) -> None:
        """Commit what finished, hand the partitions over cleanly, leave the group."""
        if self._closed:
            return
        self._closed = True
        try:
            if not self._commits.commit(everything=True, force=True):
                log.warning("closing with offsets uncommitted (the broker is away): the next owner re-reads them")
            self._commits.clear()  # nothing left for the revoke that kafka-python calls on close
            self._guard.hand_over(self.consumer.assignment(), clean=True)
            self.consumer.close(autocommit=False)
        except Exception as error:  # noqa: BLE001 - closing must not hide why the loop stopped
            log.warning("closing the consumer of group %s failed: %s", self._group, error)
        finally:
            self._guard.close()

    def poll_once(self, timeout_ms: int = 500) -> int:
        """Handle one poll's batch and commit it; returns how many messages finished."""
        try:
            batches = self.consumer.poll(timeout_ms=timeout_ms)
        except Exception as error:  # noqa: BLE001 - a broker outage or an unreadable record must not end the loop
            self._poll_failed(error)
            return 0
        self._poll_backoff.reset()
        finished = 0
        if batches:
            self._guard.mark(batches)
            for partition, records in batches.items():
                finished += self._handle_partition(partition, records)
            self._record_lag(batches)
            self._telemetry.flush()
        else:
            self._record_idle_lag()
        self._commits.send()  # without waiting: the round trip overlaps the next batch
        return finished

    def flush_commits(self, *, force: bool = False) -> bool:
        """Commit the finished offsets now and wait; True when nothing is left pending (see shared/commits.py)."""
        return self._commits.commit(force=force)

    # --- one batch -----------------------------------------------------------------------------------

    def _handle_partition(self, partition: TopicPartition, records: Sequence[Any]) -> int:
        careful = partition in self._guard.careful_partitions
        last, finished, handled = None, 0, 0  # the last record finished: its offset is committed for the batch
        try:
            for record in records:
                if careful and self._guard.careful_until(partition, record.offset) is None:
                    self.consumer.seek(partition, record.offset)  # past the crashed batch: back as a marked batch
                    break
                if self.stop_event.is_set():
                    self.consumer.seek(partition, record.offset)  # left for the next owner, or the next poll
                    break
                try:
                    if careful:
                        handled += self._handle_carefully(partition, record)
                    else:
                        handled += self._handle(record)
                except (_Retry, DeadLetterAborted):
                    self.consumer.seek(partition, record.offset)  # uncommitted: fetched again by a later poll
                    break
                last, finished = record, finished + 1
                if careful:  # one at a time: a crash now costs the message in hand alone
                    self._commits.finished(partition, record.offset + 1, record.leader_epoch)
                    self._commits.commit(force=True)
        finally:
            if last is not None:
                self._commits.finished(partition, last.offset + 1, last.leader_epoch)
                self._positions[partition] = last.offset + 1
            if handled:
                self._telemetry.count(partition.topic, "handled", handled)
        return finished

    def _handle_carefully(self, partition: TopicPartition, record: Any) -> bool:
        """Count this attempt durably before handling; dead-letter the message once attempts run out."""
        previous = self._guard.previous_attempts(partition, record.offset)
        if previous >= self._guard.max_attempts:
            reason = (
                f"its consumer died {previous} times with this message in hand (a crash, out of memory, a kill) "
                f"before it finished; dead-lettered unhandled after {self._guard.max_attempts} attempts"
            )
            self._dead_letter(Original.of(record), reason=reason, error_type="DeliveryAttemptsExhausted")
            handled = False
        else:
            self._guard.set_attempts(partition, record.offset, previous + 1)
            try:
                handled = self._handle(record)
            except (_Retry, DeadLetterAborted):
                self._guard.set_attempts(partition, record.offset, previous)  # the consumer lived: no attempt
                raise
        self._guard.finished(partition, record.offset)
        return handled

    def _handle(self, record: Any) -> bool:
        """Handle one message, or dead-letter it; True when its handlers ran to the end."""
        try:
            decoded = decode(record.headers, record.key, record.value)
        except DecodeError as error:
            self._dead_letter(Original.of(record), reason=str(error), error_type="DecodeError", client_error=True)
            return False
        event_type = type(decoded.event)
        if not record.topic.endswith(event_type.topic):
            reason = f"{decoded.meta.type_name} belongs on topic {event_type.topic!r}, not {record.topic!r}"
            self._dead_letter(Original.of(record), reason=reason, error_type="WrongTopic", client_error=True)
            return False
        handlers = self._handlers.get(event_type)
        if not handlers:
            reason = f"no handler for {decoded.meta.type_name} in consumer group {self._group!r}"
            self._dead_letter(Original.of(record), reason=reason, error_type="NoHandler", client_error=True)
            return False
        try:
            self._dispatch(handlers, decoded, record.topic)
        except (_Retry, DeadLetterAborted):
            raise
        except PermanentError as error:
            self._dead_letter(Original.of(record), reason=str(error), error_type="PermanentError", client_error=True)
            return False
        except Exception as error:  # noqa: BLE001 - a handler bug must not kill the loop; the DLQ keeps the event
            log.exception("handler failed permanently", extra={"topic": record.topic, "offset": record.offset})
            reason = f"{type(error).__name__}: {error}"
            self._dead_letter(Original.of(record), reason=reason, error_type=type(error).__name__)
            return False
        return True

    def _dispatch(self, handlers: Sequence[Handler], decoded: Decoded, topic: str) -> None:
        """Run the handlers in the producer's trace: each in a span of its own when spans are exported,
        else in the producer's context alone (logs and the events they publish still carry the trace)."""
        parent = remote_parent(decoded.meta.traceparent)
        if self._spans:
            for handler in handlers:
                self._call_with_retries(handler, decoded, topic, parent)
            return
        token = otel_context.attach(parent) if parent is not None else None
        try:
            for handler in handlers:
                try:
                    handler(decoded.event, decoded.meta)
                except Exception as error:  # noqa: BLE001 - sorted out, and retried if transient, off the hot path
                    self._call_with_retries(handler, decoded, topic, None, failed=error)
        finally:
            if token is not None:
                otel_context.detach(token)

    def _call_with_retries(
        self,
        handler: Handler,
        decoded: Decoded,
        topic: str,
        parent: Context | None,
        failed: Exception | None = None,
    ) -> None:
        """Call the handler (again, after it ``failed``); retry transient failures with back-off."""
        backoffs = iter(self._retry.backoffs())
        error = failed
        while True:
            if error is not None:
                if not is_transient(error, self._transient):
                    raise error
                delay = next(backoffs, None)
                if delay is None or self.stop_event.is_set():
                    log.warning("transient failure outlived its retries; will re-poll: %s", error)
                    self._telemetry.count(topic, "retry_later")
                    raise _Retry() from error
                log.warning("transient failure, retrying in %.1fs: %s", delay, error)
                self.stop_event.wait(delay)
            try:
                if self._spans:
                    name = f"handle {decoded.meta.type_name}"
                    with self._tracer.start_as_current_span(name, context=parent, kind=trace.SpanKind.CONSUMER):
                        handler(decoded.event, decoded.meta)
                else:
                    handler(decoded.event, decoded.meta)
                return
            except Exception as failure:  # noqa: BLE001 - sorted out at the top of the next turn
                error = failure

    def _dead_letter(
        self,
        original: Original,
        *,
        reason: str,
        error_type: str,
        outcome: str = "dead_lettered",
        client_error: bool = False,
    ) -> None:
        """``client_error``: the event itself is at fault (malformed, misplaced, contradicting), not the service.

        On an observed topic nothing is sent: the message is skipped and counted as ``left_to_owner``.
        """
        if original.topic in self._observed:
            log.info(
                "skipping %s[%s]@%s, left to the topic's owning group to dead-letter: %s",
                original.topic,
                original.partition,
                original.offset,
                reason,
                extra=CLIENT_ERROR if client_error else None,
            )
            self._telemetry.count(original.topic, "left_to_owner")
            return
        log.warning(
            "dead-lettering %s[%s]@%s: %s",
            original.topic,
            original.partition,
            original.offset,
            reason,
            extra=CLIENT_ERROR if client_error else None,
        )
        # The copy is acked before the offset can be committed: nothing is lost in between.
        self._dead_letters.send(original, reason=reason, error_type=error_type)
        self._telemetry.dead_lettered(original.topic, outcome)

    # --- what goes wrong around the messages -------------------------------------------------------

    def _poll_failed(self, error: Exception) -> None:
        if isinstance(error, CorruptRecordError):
            self._skip_unreadable(error)
            return
        delay = self._poll_backoff.next()
        retriable = isinstance(error, KafkaError) and error.retriable or isinstance(error, OSError | TimeoutError)
        log.log(
            logging.WARNING if retriable else logging.ERROR,
            "poll failed (%s: %s); polling again in %.1fs",
            type(error).__name__,
            error,
            delay,
            exc_info=not retriable,
        )
        self.stop_event.wait(delay)

    def _skip_unreadable(self, error: CorruptRecordError) -> None:
        """Dead-letter the coordinates of a record kafka-python cannot parse, and move past it."""
        partition = unreadable_partition(self.consumer)
        if partition is None:
            # Polling again would spin inside kafka-python on the same record: better to die and be seen.
            raise RuntimeError("a record cannot be read and its partition is unknown") from error
        offset = int(self.consumer.position(partition))
        log.warning(
            "record %s[%s]@%s cannot be read (%s); dead-lettering its coordinates and skipping it",
            partition.topic,
            partition.partition,
            offset,
            error,
            extra=CLIENT_ERROR,
        )
        original = Original(partition.topic, partition.partition, offset, readable=False)
        try:
            self._dead_letter(
                original, reason=f"unreadable record: {error}", error_type=type(error).__name__, outcome="unreadable"
            )
        except DeadLetterAborted:
            return  # stopping; the record is met again after the restart
        self._telemetry.flush()
        self.consumer.seek(partition, offset + 1)  # past it; this also drops kafka-python's broken parse state
        self._commits.finished(partition, offset + 1, None)
        self._positions[partition] = offset + 1
        self._commits.commit(force=True)

    def _record_lag(self, batches: Mapping[TopicPartition, Sequence[Any]]) -> None:
        for partition, records in batches.items():
            highwater = self.consumer.highwater(partition)
            if highwater is not None:
                self._telemetry.set_lag(partition, highwater - self._positions.get(partition, records[-1].offset + 1))

    def _record_idle_lag(self) -> None:
        """After a poll that brought nothing: the lag of the partitions read so far, every few seconds.

        From our own record of the positions: KafkaConsumer.position() may reach out to the coordinator,
        and called with no time to wait it was seen to leave a consumer fetching nothing.
        """
        now = time.monotonic()
        if now < self._idle_lag_at:
            return
        self._idle_lag_at = now + IDLE_LAG_INTERVAL_S
        for partition, position in list(self._positions.items()):
            try:
                highwater = self.consumer.highwater(partition)
            except KafkaError:  # no longer assigned
                continue
            if highwater is not None:
                self._telemetry.set_lag(partition, highwater - position)

    # --- rebalances (the listener calls these from inside poll and close) ----------------------------

    def take_pending(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, OffsetAndMetadata]:
        return self._commits.take(partitions)

    def partitions_left(self, partitions: set[TopicPartition], *, clean: bool) -> None:
        self._guard.hand_over(partitions, clean=clean)
        for partition in partitions:
            self._positions.pop(partition, None)
        self._telemetry.forget(partitions)

    def partitions_came(self, partitions: set[TopicPartition]) -> None:
        for partition in partitions & self._start_offsets.keys():
            # Inside poll, before it fetches: the first read of the partition begins here. Once only: when the
            # partition comes back after a rebalance, the loop's own commits say where it goes on.
            self.consumer.seek(partition, self._start_offsets.pop(partition))
        self.joined.set()
        for partition, (first, last) in self._guard.take_over(partitions).items():
            log.warning(
                "partition %s[%s]: offsets %s..%s were in hand when its consumer died; handling "
                "them one at a time, counting attempts",
                partition.topic,
                partition.partition,
                first,
                last,
            )
