"""The evaluator's Kafka edge: its handlers bound to their dependencies, run by the shared consumer loop."""

from __future__ import annotations

import threading

from kafka import KafkaConsumer, KafkaProducer

from services.evaluator.handlers import HANDLERS, EvaluatorDeps
from services.evaluator.settings import EvaluatorSettings
from shared.events import AlertChanged, ModelRegistered
from shared.kafka import ConsumerLoop, bind_handlers

TOPICS = (ModelRegistered.topic, AlertChanged.topic)


def build_consumer_loop(
    settings: EvaluatorSettings,
    deps: EvaluatorDeps,
    *,
    consumer: KafkaConsumer,
    dlq_producer: KafkaProducer,
    stop: threading.Event,
) -> ConsumerLoop:
    """The loop of group ``evaluator`` over model.registered and alert."""
    return ConsumerLoop(
        consumer=consumer,
        dlq_producer=dlq_producer,
        group=settings.consumer_group,
        handlers=bind_handlers(HANDLERS, deps=deps),
        stop=stop,
    )
