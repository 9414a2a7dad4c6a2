"""The monitor's Kafka loops, through the shared ConsumerLoop: ``deployment.changed`` and ``inference.logged``
for input drift (a group per process), and production data, ``inference.logged`` and ``inference.feedback``
for online accuracy, in one group all replicas share."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence

from kafka import KafkaConsumer, KafkaProducer

from services.monitor.domain.input_window import InputWindows
from services.monitor.domain.online_accuracy import OnlineAccuracy
from services.monitor.handlers import HANDLERS, ONLINE_ACCURACY_HANDLERS, DeployedVersions
from services.monitor.settings import MonitorSettings
from shared.events import Event
from shared.kafka import ConsumerLoop, Handler, bind_handlers


def build_consumer_loop(
    settings: MonitorSettings,
    deployed: DeployedVersions,
    input_windows: InputWindows,
    *,
    consumer: KafkaConsumer,
    producer: KafkaProducer,
    stop: threading.Event,
) -> ConsumerLoop:
    return ConsumerLoop(
        consumer=consumer,
        dlq_producer=producer,
        group=settings.consumer_group,
        handlers=bind_handlers(HANDLERS, deployed=deployed, input_windows=input_windows),
        stop=stop,
    )


def online_accuracy_handlers(online: OnlineAccuracy, clock: Callable[[], float]) -> dict[type[Event], list[Handler]]:
    """The online accuracy's handlers, bound to it."""
    return bind_handlers(ONLINE_ACCURACY_HANDLERS, online=online, clock=clock)


def merge_handlers(*tables: Mapping[type[Event], Sequence[Handler]]) -> dict[type[Event], list[Handler]]:
    """Several bound tables as one: every handler of an event type runs, table by table."""
    merged: dict[type[Event], list[Handler]] = {}
    for table in tables:
        for event_type, handlers in table.items():
            merged.setdefault(event_type, []).extend(handlers)
    return merged


def build_production_loop(
    settings: MonitorSettings,
    handlers: Mapping[type[Event], Sequence[Handler]],
    *,
    consumer: KafkaConsumer,
    producer: KafkaProducer,
    stop: threading.Event,
) -> ConsumerLoop:
    """The loop of the shared production group (``settings.production_group``)."""
    return ConsumerLoop(
        consumer=consumer, dlq_producer=producer, group=settings.production_group, handlers=handlers, stop=stop
    )
