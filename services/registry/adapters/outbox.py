"""The outbox relay: publishes committed outbox rows, each model's in order, and marks them sent.

**One relay is active** across all registry processes: it holds a session-level PostgreSQL advisory
lock on a connection of its own for as long as it relays. A process that dies drops that connection
and the lock with it; another process's relay takes over on its next pass. No transaction is open
while the broker is awaited: a pass reads the pending rows (one short transaction), publishes them
(none), then records what happened (one short transaction).

**Order.** Rows are grouped by partition key (the model name) and sent in waves: a wave carries the
oldest unsent row of every key, and a key's next row leaves only once the broker has acked the one
before it. A key whose row fails stops for the rest of the pass. So no consumer ever sees a model's
event N+1 before N, even when the broker refuses one record of a batch and takes the next (kafka-python
splits a batch the broker finds too large, and an idempotent producer bumps its epoch after a failed
batch: sending a key's rows together could ack N+1 after failing N).

**Failures.** A row that can never be published (its payload no longer validates, or it is larger than
the broker accepts) is parked: status ``failed``, the reason in ``last_error``, counted by the gauge
``ferry_registry_outbox_failed``; its key's later rows go on. Any other failure leaves the row pending
(``attempts`` + 1, ``last_error``) and ``run`` retries the pass with back-off.

**Delivery is at-least-once.** A crash between the commit of a change and the publish only delays its
events; a crash after the broker's ack and before the rows are marked sent republishes them under the
same event ids, in the same order, which consumers dedupe on. Fault points mark both places.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any, Protocol

from kafka.errors import InvalidRecordError, MessageSizeTooLargeError, RecordListTooLargeError
from pydantic import ValidationError
from sqlalchemy import Connection, Engine, delete, func, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import sessionmaker

from services.registry.adapters.orm import OutboxMessage
from services.registry.adapters.statements import table_of
from shared.envelope import encode
from shared.events import EVENT_TYPES, Event, utc_now
from shared.faults import fault_point
from shared.kafka import send_all

log = logging.getLogger(__name__)

RELAY_LOCK_KEY = 0x46455252590002
PRUNE_EVERY_S = 600.0
CHECK_EVERY_S = 1.0
"""How often the relay confirms its lock connection is alive, and refreshes its gauges (not every pass)."""
BEFORE_PUBLISH = "registry.outbox.before_publish"
"""Fault point: rows are committed and read, nothing of this pass is published yet."""
BEFORE_MARK_SENT = "registry.outbox.before_mark_sent"
"""Fault point: the broker has acked this pass's rows, the outbox does not say so yet."""
NEVER_DELIVERABLE: tuple[type[Exception], ...] = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    InvalidRecordError,
    ValueError,
    TypeError,
)
"""Errors that no retry can cure (ValueError covers pydantic's ValidationError and bad encodings)."""


class Sender(Protocol):
    """What the relay needs of a Kafka producer: ``send`` returns a future whose ``get`` waits for the ack."""

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None, headers: Any = None) -> Any: ...


class UndeliverableRow(ValueError):
    """An outbox row whose payload no longer validates as its event type."""


class PublishFailed(Exception):
    """The broker did not take a row; its key stopped there, the pass is retried later."""


@dataclass(frozen=True)
class PendingRow:
    """An outbox row as the relay reads it (plain values: no session stays open while publishing)."""

    id: int
    event_id: str
    type_name: str
    topic: str
    partition_key: str
    payload: dict[str, Any]
    traceparent: str | None


@dataclass
class PassResult:
    """What one pass did: rows acked, rows parked for good, rows left pending (and why)."""

    sent: list[int] = field(default_factory=list)
    parked: list[tuple[int, str]] = field(default_factory=list)
    retry: list[tuple[int, str]] = field(default_factory=list)


def event_of(row: PendingRow) -> Event:
    """Rebuild the typed event an outbox row carries."""
    event_class = EVENT_TYPES.get(row.type_name)
    if event_class is None:
        raise UndeliverableRow(f"unknown event type {row.type_name!r}")
    try:
        return event_class.model_validate(row.payload)
    except ValidationError as error:
        raise UndeliverableRow(f"payload is not a valid {row.type_name}: {error}") from error


def describe_error(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"[:4000]


class OutboxRelay:
    """Drains the outbox into Kafka; ``run`` loops until ``stop_event`` is set, ``relay_once`` is one pass."""

    def __init__(
        self,
        engine: Engine,
        sender: Sender,
        *,
        topic: Callable[[str], str],
        source: str,
        batch_size: int = 200,
        idle_s: float = 0.2,
        retention: timedelta = timedelta(hours=24),
        ack_timeout_s: float = 30.0,
        stop: threading.Event | None = None,
    ) -> None:
        self._engine = engine
        self._sessions = sessionmaker(engine)
        self._sender = sender
        self._topic = topic
        self._source = source
        self._batch_size = batch_size
        self._idle_s = idle_s
        self._retention = retention
        self._ack_timeout_s = ack_timeout_s
        self.stop_event = stop or threading.Event()
        self._wake = threading.Event()
        self._leader: Connection | None = None
        self._leader_checked = 0.0
        self._stats_refreshed = 0.0
        self._last_prune = time.monotonic()
        self.pending = 0
        self.failed = 0
        self.lag_s = 0.0
        self.published = 0

    def wake(self) -> None:
        """Tell the relay that rows were committed (called after a unit of work commits)."""
        self._wake.set()

    @property
    def is_leader(self) -> bool:
        """True while this relay holds the lock that makes it the active one."""
        return self._leader is not None

    def run(self) -> None:
        """Relay until stopped; on failure back off (up to 5 s) and try again, never give up."""
        backoff = 0.0
        while not self.stop_event.is_set():
            self._wake.clear()
            try:
                sent = self.relay_once()
                if time.monotonic() - self._stats_refreshed >= CHECK_EVERY_S:
                    self.refresh_stats()
                self._prune_if_due()
                backoff = 0.0
            except Exception as error:  # noqa: BLE001 - database or broker away: retry, never stop relaying
                backoff = min(max(backoff * 2, 0.2), 5.0)
                log.warning("outbox relay failed, retrying in %.1fs: %s", backoff, error)
                self.stop_event.wait(backoff)
                continue
            if sent < self._batch_size:
                self._wake.wait(self._idle_s)

    def relay_once(self) -> int:
        """One pass over up to a batch of pending rows; returns how many were published.

        Raises PublishFailed when a row was left pending (the rows of other keys went out all the same).
        """
        if not self._lead():
            return 0  # another registry process is relaying
        rows = self._pending_rows()
        if not rows:
            return 0
        fault_point(BEFORE_PUBLISH)
        result = self._publish(rows)
        fault_point(BEFORE_MARK_SENT)
        self._record(result)
        self.published += len(result.sent)
        if result.retry:
            raise PublishFailed(f"{len(result.retry)} row(s) left pending: {result.retry[0][1]}")
        return len(result.sent)

    def close(self) -> None:
        """Give up the relay's lock (another process's relay takes over)."""
        if self._leader is not None:
            leader, self._leader = self._leader, None
            leader.invalidate()  # the connection is closed, not pooled: the session's lock goes with it
            leader.close()

    def _lead(self) -> bool:
        """Hold (or take) the relay lock on a connection of our own; False while another process holds it."""
        if self._leader is not None:
            if time.monotonic() - self._leader_checked < CHECK_EVERY_S:
                return True  # a lock lost in between costs at most a duplicate (same event id), never an order
            try:
                self._leader.exec_driver_sql("SELECT 1")
                self._leader_checked = time.monotonic()
                return True
            except DBAPIError as error:
                log.warning("the outbox relay lost its lock connection (%s); another relay may take over", error)
                self.close()
        connection = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        try:
            locked = bool(connection.scalar(select(func.pg_try_advisory_lock(RELAY_LOCK_KEY))))
        except BaseException:
            connection.close()
            raise
        if not locked:
            connection.close()
            return False
        self._leader, self._leader_checked = connection, time.monotonic()
        log.info("this process's outbox relay is the active one")
        return True

    def _pending_rows(self) -> list[PendingRow]:
        columns = [getattr(OutboxMessage, name) for name in PendingRow.__dataclass_fields__]
        query = select(*columns).where(OutboxMessage.status == "pending").order_by(OutboxMessage.id)
        with self._sessions() as session:
            return [PendingRow(*row) for row in session.execute(query.limit(self._batch_size))]

    def _publish(self, rows: Sequence[PendingRow]) -> PassResult:
        """Send in waves of one row per key; a key stops at its first row that is left pending."""
        queues: dict[str, deque[PendingRow]] = {}
        for row in rows:
            queues.setdefault(row.partition_key, deque()).append(row)
        result = PassResult()
        while queues:
            wave = [queue[0] for queue in queues.values()]
            for row, error in zip(wave, self._send_wave(wave), strict=True):
                queue = queues[row.partition_key]
                if error is None:
                    result.sent.append(row.id)
                elif isinstance(error, NEVER_DELIVERABLE):
                    log.error(
                        "outbox row %s (%s, %s) can never be published and is parked as failed: %s",
                        row.id,
                        row.event_id,
                        row.type_name,
                        describe_error(error),
                    )
                    result.parked.append((row.id, f"undeliverable: {describe_error(error)}"))
                else:
                    result.retry.append((row.id, describe_error(error)))
                    queue.clear()  # this key's later rows wait for this one
                if queue:
                    queue.popleft()
                if not queue:
                    del queues[row.partition_key]
        return result

    def _send_wave(self, wave: Sequence[PendingRow]) -> list[Exception | None]:
        """Send every row of the wave, then wait for each ack: one result per row, None when acked."""
        return send_all([partial(self._send_row, row) for row in wave], timeout_s=self._ack_timeout_s)

    def _send_row(self, row: PendingRow) -> Any:
        message = encode(event_of(row), source=self._source, event_id=row.event_id, traceparent=row.traceparent)
        return self._sender.send(self._topic(row.topic), key=message.key, value=message.value, headers=message.headers)

    def _record(self, result: PassResult) -> None:
        """Mark acked rows sent, park the undeliverable, count the attempts of the rest: one transaction."""
        table = table_of(OutboxMessage)
        now = utc_now()
        with self._sessions.begin() as session:
            if result.sent:
                session.execute(
                    update(table)
                    .where(table.c.id.in_(result.sent), table.c.status == "pending")
                    .values(status="sent", sent_at=now)
                )
            for status, rows in (("failed", result.parked), ("pending", result.retry)):
                for row_id, reason in rows:
                    session.execute(
                        update(table)
                        .where(table.c.id == row_id, table.c.status == "pending")
                        .values(status=status, attempts=table.c.attempts + 1, last_error=reason)
                    )

    def refresh_stats(self) -> None:
        """Update the gauges: rows pending, age of the oldest pending row, rows parked as failed."""
        pending_query = select(func.count(), func.min(OutboxMessage.created_at)).where(
            OutboxMessage.status == "pending"
        )
        failed_query = select(func.count()).select_from(OutboxMessage).where(OutboxMessage.status == "failed")
        with self._sessions() as session:
            pending, oldest = session.execute(pending_query).one()
            failed = session.scalar(failed_query)
        self._stats_refreshed = time.monotonic()
        self.pending = int(pending)
        self.failed = int(failed or 0)
        self.lag_s = (utc_now() - oldest).total_seconds() if oldest is not None else 0.0

    def _prune_if_due(self) -> None:
        if time.monotonic() - self._last_prune < PRUNE_EVERY_S:
            return
        self._last_prune = time.monotonic()
        cutoff = utc_now() - self._retention
        statement = delete(OutboxMessage).where(OutboxMessage.status == "sent", OutboxMessage.sent_at < cutoff)
        with self._sessions.begin() as session:
            result = session.execute(statement)
        log.info("pruned %s sent outbox rows older than %s", getattr(result, "rowcount", "?"), cutoff)
