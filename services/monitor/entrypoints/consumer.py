"""The monitor's Kafka loops, through the shared ConsumerLoop: ``deployment.changed`` and ``inference.logged``
for input drift (a group per process), and production data, ``inference.logged`` and ``inference.feedback``
for online accuracy, in one group all replicas share."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence

from kafka import KafkaConsumer, KafkaProducer
from kafka.errors import KafkaError
from kafka.structs import TopicPartition

from services.monitor.domain.input_window import InputWindows
from services.monitor.domain.online_accuracy import OnlineAccuracy
from services.monitor.handlers import HANDLERS, ONLINE_ACCURACY_HANDLERS, DeployedVersions
from services.monitor.settings import MonitorSettings
from shared.events import Event, InferenceLogged
from shared.kafka import ConsumerLoop, Handler, bind_handlers, offsets_since

log = logging.getLogger(__name__)


def build_consumer_loop(
    settings: MonitorSettings,
    deployed: DeployedVersions,
    input_windows: InputWindows,
    *,
    consumer: KafkaConsumer,
    producer: KafkaProducer,
    stop: threading.Event,
    now_s: float,
) -> ConsumerLoop:
    """The process's own group: every deployment change from the start, the inference log from
    ``input_lookback_s`` before ``now_s`` (a restart refills the windows without reading the whole log)."""
    return ConsumerLoop(
        consumer=consumer,
        dlq_producer=producer,
        group=settings.consumer_group,
        handlers=bind_handlers(HANDLERS, deployed=deployed, input_windows=input_windows),
        stop=stop,
        start_offsets=input_log_starts(settings, consumer, now_s),
    )


def input_log_starts(settings: MonitorSettings, consumer: KafkaConsumer, now_s: float) -> dict[TopicPartition, int]:
    """Where reading ``inference.logged`` begins, per partition; empty (its start) when Kafka does not answer."""
    since_ms = int((now_s - settings.input_lookback_s) * 1000)
    try:
        return offsets_since(consumer, settings.ferry.topic(InferenceLogged.topic), since_ms)
    except KafkaError as error:
        log.warning("offsets of the inference log not found (%s): reading it from its start", error)
        return {}


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
