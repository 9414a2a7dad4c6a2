"""The console's Kafka edge: ``training.requested`` and ``training.status`` through the shared consumer loop,
in a group of this process's own (every console replica sees every run)."""

from __future__ import annotations

import threading
from collections.abc import Collection

from kafka import KafkaConsumer, KafkaProducer

from services.console.adapters.runs import LiveRuns
from services.console.handlers import HANDLERS
from shared.kafka import ConsumerLoop, bind_handlers


def build_consumer_loop(
    consumer: KafkaConsumer,
    dlq_producer: KafkaProducer,
    *,
    group: str,
    runs: LiveRuns,
    stop: threading.Event,
    observed_topics: Collection[str] = (),
) -> ConsumerLoop:
    """The consumer loop of this process's own group, with the live board bound to the handlers.

    ``observed_topics``: the topics whose owning group dead-letters what cannot succeed (the trainer's
    ``training.requested``); the console only watches them. ``training.status`` has no other consumer,
    so the console dead-letters there."""
    return ConsumerLoop(
        consumer=consumer,
        dlq_producer=dlq_producer,
        group=group,
        handlers=bind_handlers(HANDLERS, runs=runs),
        stop=stop,
        observed_topics=observed_topics,
    )
