"""The trainer's Kafka edge: ``training.requested`` (group ``trainer``) through the shared consumer loop.

Scale out by starting more trainers: the consumer group splits the partitions (and so the requests)
between them.
"""

from __future__ import annotations

import threading

from kafka import KafkaConsumer, KafkaProducer

from services.trainer.handlers import HANDLERS, TrainerDeps
from services.trainer.settings import TrainerSettings
from shared.delivery import SqliteDeliveryLog
from shared.kafka import ConsumerLoop, bind_handlers


def build_consumer_loop(
    settings: TrainerSettings,
    deps: TrainerDeps,
    *,
    consumer: KafkaConsumer,
    dlq_producer: KafkaProducer,
    stop: threading.Event | None = None,
) -> ConsumerLoop:
    """The loop of group ``trainer``, with the handlers' dependencies bound."""
    return ConsumerLoop(
        consumer=consumer,
        dlq_producer=dlq_producer,
        group=settings.consumer_group,
        handlers=bind_handlers(HANDLERS, deps=deps),
        stop=stop,
        # A request that kills the trainer every time (out of memory, a native crash) is dead-lettered
        # after FERRY_DELIVERY_ATTEMPTS deaths instead of being trained forever; counted per host.
        delivery_log=SqliteDeliveryLog(settings.ferry.state_dir("trainer") / "delivery.sqlite"),
        max_attempts=settings.ferry.delivery_attempts,
    )
