"""The gateway's Kafka edge: ``deployment.changed`` through the shared consumer loop.

Every gateway process must see every change, so each reads in a consumer group of its own
(``<prefix>-<host>-<pid>``) rather than sharing one, which would split the partitions between them.
A fresh group starts at the earliest offset: replayed revisions are skipped (a deployment applies only
when its revision is higher than the one served), and nothing published between the registry's answer
at start and the group's join can be missed, which a start at the latest offset could not promise.
"""

from __future__ import annotations

import threading

from kafka import KafkaConsumer, KafkaProducer

from services.gateway.handlers import HANDLERS, Deployer
from shared.kafka import ConsumerLoop, bind_handlers


def build_consumer_loop(
    consumer: KafkaConsumer, dlq_producer: KafkaProducer, *, group: str, deployer: Deployer, stop: threading.Event
) -> ConsumerLoop:
    """The consumer loop of this process's own group, with the deployer bound to the handler."""
    return ConsumerLoop(
        consumer=consumer,
        dlq_producer=dlq_producer,
        group=group,
        handlers=bind_handlers(HANDLERS, deployer=deployer),
        stop=stop,
    )
