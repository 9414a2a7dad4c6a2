"""The gateway's Kafka edge: ``deployment.changed`` through the shared consumer loop.

Every gateway process must see every change, so each reads in a consumer group of its own
(``<prefix>-<host>-<pid>``) rather than sharing one, which would split the partitions between them.
A fresh group starts at the earliest offset: replayed revisions are skipped (a deployment applies only
when its revision is higher than the one served), and nothing published between the registry's answer
at start and the group's join can be missed, which a start at the latest offset could not promise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from services.gateway.handlers import bind_handlers
from shared.events import DeploymentChanged
from shared.kafka import ConsumerLoop, make_consumer, make_producer

if TYPE_CHECKING:
    from services.gateway.bootstrap import Gateway


def build_consumer_loop(gateway: Gateway) -> ConsumerLoop:
    """The consumer loop of this process's own group, with the deployer bound to the handler."""
    settings = gateway.settings
    group = settings.consumer_group()
    consumer = make_consumer(settings.ferry, group, [DeploymentChanged.topic], auto_offset_reset="earliest")
    producer = make_producer(settings.ferry, client_id=f"{group}-dlq")
    return ConsumerLoop(
        consumer=consumer,
        dlq_producer=producer,
        group=group,
        handlers=bind_handlers(gateway.deployer),
        stop=gateway.stop_event,
    )
