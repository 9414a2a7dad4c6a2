"""The registry's Kafka edge: its handlers bound to real dependencies and run by the shared consumer loop."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

from kafka import KafkaConsumer, KafkaProducer
from opentelemetry import metrics
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from services.registry.adapters.repository import UnitOfWork, retry_conflicts
from services.registry.domain import RegistryError
from services.registry.handlers import HANDLERS, handle_model_decided, handle_model_trained
from services.registry.service import Registration
from services.registry.settings import RegistrySettings
from shared.artifacts import ArtifactStore
from shared.delivery import SqliteDeliveryLog
from shared.envelope import EventMeta
from shared.errors import PermanentError
from shared.events import Event
from shared.kafka import DEFAULT_TRANSIENT, ConsumerLoop, Handler, RetryPolicy

TOPICS = ("model.trained", "model.decided")
# The database being away is a transient fault: retried, re-polled, never dead-lettered.
TRANSIENT: tuple[type[BaseException], ...] = (*DEFAULT_TRANSIENT, OperationalError, InterfaceError, PoolTimeout)


class Registry(Protocol):
    """What the consumer needs of the wired registry (bootstrap's ``Registry``, or a test's)."""

    settings: RegistrySettings
    artifacts: ArtifactStore
    stop: threading.Event

    def uow(self) -> UnitOfWork: ...


def bind_handlers(registry: Registry) -> dict[type[Event], list[Handler]]:
    """HANDLERS with their dependencies bound: each call gets a fresh unit of work."""
    meter = metrics.get_meter("ferry.registry")
    counter = meter.create_counter(
        "ferry.registry.events.applied", unit="1", description="consumed events by outcome (applied, duplicate)"
    )
    duration = meter.create_histogram(
        "ferry.registry.handler.duration", unit="ms", description="time a handler took (database work included)"
    )
    extra: dict[Callable[..., Any], dict[str, Any]] = {
        handle_model_trained: {"artifacts": registry.artifacts},
        handle_model_decided: {"default_canary_weight": registry.settings.default_canary_weight},
    }

    def bind(handler: Callable[..., Any]) -> Handler:
        def run(event: Event, meta: EventMeta) -> None:
            started = time.perf_counter()
            try:
                result = retry_conflicts(lambda: handler(event, meta, uow=registry.uow(), **extra.get(handler, {})))
            except RegistryError as error:  # the event contradicts the registry: it can never apply
                raise PermanentError(str(error)) from error
            finally:
                duration.record((time.perf_counter() - started) * 1000, {"type": meta.type_name})
            duplicate = result is None or (isinstance(result, Registration) and not result.created)
            counter.add(1, {"type": meta.type_name, "outcome": "duplicate" if duplicate else "applied"})

        return run

    return {event_type: [bind(handler) for handler in handlers] for event_type, handlers in HANDLERS.items()}


def build_consumer_loop(
    registry: Registry,
    *,
    consumer: KafkaConsumer,
    dlq_producer: KafkaProducer,
    retry: RetryPolicy | None = None,
) -> ConsumerLoop:
    """The consumer loop of group ``registry`` over the consumer and DLQ producer bootstrap built."""
    settings = registry.settings
    return ConsumerLoop(
        consumer=consumer,
        dlq_producer=dlq_producer,
        group=settings.consumer_group,
        handlers=bind_handlers(registry),
        retry=retry or RetryPolicy(),
        transient=TRANSIENT,
        stop=registry.stop,
        # Delivery attempts survive a crash here (per host): a message that kills the registry every
        # time is dead-lettered after FERRY_DELIVERY_ATTEMPTS deaths instead of crash-looping it.
        delivery_log=SqliteDeliveryLog(settings.ferry.state_dir("registry") / "delivery.sqlite"),
        max_attempts=settings.ferry.delivery_attempts,
    )
