"""The outbox relay: publishes committed outbox rows in order and marks them sent.

Rows are written in the same transaction as the change they announce, so a crash between the commit
and the publish only delays the event: the next relay (after a restart) publishes it. Delivery is
at-least-once: a crash after the broker's ack but before ``sent_at`` is committed republishes the
row under the same event id, which consumers dedupe on. One relay is active across all registry
processes (a PostgreSQL advisory lock), so rows leave in id order; a model's rows get ids in commit
order because every writer of a model holds its row lock.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import timedelta

from pydantic import ValidationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from services.registry.adapters.orm import OutboxMessage
from shared.events import EVENT_TYPES, Event, utc_now
from shared.kafka import Publisher

log = logging.getLogger(__name__)

RELAY_LOCK_KEY = 0x46455252590002
PRUNE_EVERY_S = 600.0


class UndeliverableRow(Exception):
    """An outbox row whose payload no longer validates as its event type."""


class PublishFailed(Exception):
    """The broker did not take a row; the rows before it were marked sent, the pass is retried later."""


def event_of(row: OutboxMessage) -> Event:
    """Rebuild the typed event an outbox row carries."""
    event_class = EVENT_TYPES.get(row.type_name)
    if event_class is None:
        raise UndeliverableRow(f"unknown event type {row.type_name!r}")
    try:
        return event_class.model_validate(row.payload)
    except ValidationError as error:
        raise UndeliverableRow(f"payload is not a valid {row.type_name}: {error}") from error


class OutboxRelay:
    """Drains the outbox into Kafka; ``run`` loops until ``stop_event`` is set, ``relay_once`` is one pass."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        publisher: Publisher,
        *,
        batch_size: int = 200,
        idle_s: float = 0.2,
        retention: timedelta = timedelta(hours=24),
        stop: threading.Event | None = None,
    ) -> None:
        self._session_factory = session_factory
        self._publisher = publisher
        self._batch_size = batch_size
        self._idle_s = idle_s
        self._retention = retention
        self.stop_event = stop or threading.Event()
        self._wake = threading.Event()
        self._last_prune = time.monotonic()
        self.pending = 0
        self.lag_s = 0.0
        self.published = 0

    def wake(self) -> None:
        """Tell the relay that rows were committed (called after a unit of work commits)."""
        self._wake.set()

    def run(self) -> None:
        """Relay until stopped; on failure back off (up to 5 s) and try again, never give up."""
        backoff = 0.0
        while not self.stop_event.is_set():
            self._wake.clear()
            try:
                sent = self.relay_once()
                self._refresh_stats()
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
        """Publish up to one batch of pending rows in id order; returns how many were published."""
        with self._session_factory() as session, session.begin():
            if not session.scalar(select(func.pg_try_advisory_xact_lock(RELAY_LOCK_KEY))):
                return 0  # another registry process is relaying
            query = (
                select(OutboxMessage)
                .where(OutboxMessage.sent_at.is_(None))
                .order_by(OutboxMessage.id)
                .limit(self._batch_size)
            )
            sent, failure = self._publish_rows(list(session.scalars(query)))
        self.published += sent
        if failure is not None:
            raise PublishFailed(failure)
        return sent

    def _publish_rows(self, rows: list[OutboxMessage]) -> tuple[int, str | None]:
        """Publish rows as one batch and mark them sent in order, up to the first failure."""
        deliverable: list[tuple[OutboxMessage, Event]] = []
        for row in rows:
            try:
                deliverable.append((row, event_of(row)))
            except UndeliverableRow as error:
                log.error("outbox row %s (%s) cannot be published and is skipped: %s", row.id, row.event_id, error)
                row.last_error = f"undeliverable: {error}"[:4000]
                row.sent_at = utc_now()
        results = self._publisher.publish_batch([(event, row.event_id) for row, event in deliverable])
        sent = 0
        for (row, _), failure in zip(deliverable, results, strict=True):
            if failure is not None:
                # This row and the ones after it stay pending; any of them that did reach the broker is
                # published again on the next pass under the same event id, which consumers dedupe on.
                row.attempts += 1
                row.last_error = f"{type(failure).__name__}: {failure}"[:4000]
                return sent, row.last_error
            row.sent_at = utc_now()
            sent += 1
        return sent, None

    def _refresh_stats(self) -> None:
        with self._session_factory() as session:
            pending, oldest = session.execute(
                select(func.count(), func.min(OutboxMessage.created_at)).where(OutboxMessage.sent_at.is_(None))
            ).one()
        self.pending = int(pending)
        self.lag_s = (utc_now() - oldest).total_seconds() if oldest is not None else 0.0

    def _prune_if_due(self) -> None:
        if time.monotonic() - self._last_prune < PRUNE_EVERY_S:
            return
        self._last_prune = time.monotonic()
        cutoff = utc_now() - self._retention
        with self._session_factory() as session, session.begin():
            result = session.execute(delete(OutboxMessage).where(OutboxMessage.sent_at < cutoff))
        log.info("pruned %s sent outbox rows older than %s", getattr(result, "rowcount", "?"), cutoff)
