"""The evaluator's Kafka edge: its handlers bound to their dependencies, run by the shared consumer loop."""

from __future__ import annotations

import threading

from kafka import KafkaConsumer, KafkaProducer

from services.evaluator.handlers import HANDLERS, EvaluatorDeps
from services.evaluator.settings import EvaluatorSettings
from shared.events import AlertChanged, ModelRegistered
from shared.kafka import ConsumerLoop, bind_handlers, make_consumer

TOPICS = (ModelRegistered.topic, AlertChanged.topic)


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
        handlers=bind_handlers(HANDLERS, deps=deps),
        stop=stop,
    )
