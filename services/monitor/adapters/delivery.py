"""Delivers alert transitions to their sinks (Kafka, webhooks) in order, retrying with back-off.

Each sink has its own queue: a webhook that is away never holds up the Kafka events. The queues are
bounded; what overflows is logged and counted, never dropped in silence.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from services.monitor.domain.lifecycle import Transition, alert_event
from shared.kafka import Publisher

log = logging.getLogger(__name__)


class Sink(Protocol):
    name: str

    def deliver(self, transition: Transition) -> None:
        """Deliver or raise."""
        ...


class KafkaSink:
    """Publishes each transition as an ``alert`` event with an id derived from it (redelivery is idempotent)."""

    name = "kafka"

    def __init__(self, publisher: Publisher) -> None:
        self._publisher = publisher

    def deliver(self, transition: Transition) -> None:
        self._publisher.publish(alert_event(transition), event_id=transition.event_id)


@dataclass
class _Queue:
    sink: Sink
    items: deque[Transition] = field(default_factory=deque)
    retry_at: float = 0.0
    backoff_s: float = 0.0


Outcome = Callable[[str, str], None]
"""(sink name, outcome) -> None: outcome is delivered, failed or overflowed."""


class Dispatcher:
    """A thread's worth of delivery: ``submit`` from the engine, ``run`` in its own thread."""

    def __init__(
        self,
        sinks: list[Sink],
        *,
        max_pending: int = 10_000,
        first_backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        on_outcome: Outcome | None = None,
    ) -> None:
        self._queues = [_Queue(sink) for sink in sinks]
        self._max_pending = max_pending
        self._first_backoff_s = first_backoff_s
        self._max_backoff_s = max_backoff_s
        self._on_outcome = on_outcome or (lambda sink, outcome: None)
        self._wake = threading.Condition()

    def submit(self, transitions: list[Transition]) -> None:
        if not transitions:
            return
        with self._wake:
            for queue in self._queues:
                for transition in transitions:
                    if len(queue.items) >= self._max_pending:
                        dropped = queue.items.popleft()
                        log.error(
                            "%s: %d undelivered alerts; dropping the oldest (%s)",
                            queue.sink.name,
                            self._max_pending,
                            dropped.alert.rule,
                        )
                        self._on_outcome(queue.sink.name, "overflowed")
                    queue.items.append(transition)
            self._wake.notify()

    def pending(self) -> dict[str, int]:
        with self._wake:
            return {queue.sink.name: len(queue.items) for queue in self._queues}

    def run(self, stop: threading.Event) -> None:
        """Deliver until ``stop``; then one last attempt for what is queued."""
        while not stop.is_set():
            wait_s = self.deliver_due()
            with self._wake:
                if not any(queue.items and queue.retry_at <= time.monotonic() for queue in self._queues):
                    self._wake.wait(timeout=min(wait_s, 0.5))
        self.deliver_due()

    def deliver_due(self) -> float:
        """Deliver what each sink can take now; returns how long until the next retry is due."""
        next_due = 1.0
        for queue in self._queues:
            now = time.monotonic()
            if queue.retry_at > now:
                next_due = min(next_due, queue.retry_at - now)
                continue
            while True:
                with self._wake:
                    if not queue.items:
                        break
                    head = queue.items[0]
                try:
                    queue.sink.deliver(head)
                except Exception as error:  # noqa: BLE001 - any sink failure is retried, never fatal
                    queue.backoff_s = min(max(queue.backoff_s * 2, self._first_backoff_s), self._max_backoff_s)
                    queue.retry_at = time.monotonic() + queue.backoff_s
                    log.warning("%s: delivery failed, retrying in %.1fs: %s", queue.sink.name, queue.backoff_s, error)
                    self._on_outcome(queue.sink.name, "failed")
                    next_due = min(next_due, queue.backoff_s)
                    break
                with self._wake:
                    if queue.items and queue.items[0] is head:
                        queue.items.popleft()
                queue.backoff_s = 0.0
                self._on_outcome(queue.sink.name, "delivered")
        return next_due
