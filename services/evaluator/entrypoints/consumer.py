"""The evaluator's Kafka edge: its handlers bound to their dependencies, run by the shared consumer loop."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from kafka import KafkaConsumer, KafkaProducer

from services.evaluator.handlers import HANDLERS, EvaluatorDeps
from services.evaluator.settings import EvaluatorSettings
from shared.envelope import EventMeta
from shared.events import AlertChanged, Event, ModelRegistered
from shared.kafka import ConsumerLoop, Handler, make_consumer

TOPICS = (ModelRegistered.topic, AlertChanged.topic)


def bind_handlers(deps: EvaluatorDeps) -> dict[type[Event], list[Handler]]:
    """HANDLERS with their dependencies bound by closure."""

    def bind(handler: Callable[..., Any]) -> Handler:
        def run(event: Event, meta: EventMeta) -> None:
            handler(event, meta, deps=deps)

        return run

    return {event_type: [bind(handler) for handler in handlers] for event_type, handlers in HANDLERS.items()}


def build_consumer_loop(
    settings: EvaluatorSettings,
    deps: EvaluatorDeps,
    *,
    consumer: KafkaConsumer | None = None,
    dlq_producer: KafkaProducer,
    stop: threading.Event,
) -> ConsumerLoop:
    """The loop of group ``evaluator`` over model.registered and alert."""
    # An evaluation takes about a second: ten per poll keeps far inside Kafka's poll deadline.
    consumer = consumer or make_consumer(settings.ferry, settings.consumer_group, TOPICS, max_poll_records=10)
    return ConsumerLoop(
        consumer=consumer,
        dlq_producer=dlq_producer,
        group=settings.consumer_group,
        handlers=bind_handlers(deps),
        stop=stop,
    )
