"""The monitor's Kafka loop: ``deployment.changed`` and ``inference.logged`` (group ``monitor``), through the
shared ConsumerLoop."""

from __future__ import annotations

import threading

from kafka import KafkaConsumer, KafkaProducer

from services.monitor.domain.input_window import InputWindows
from services.monitor.handlers import HANDLERS, DeployedVersions
from services.monitor.settings import MonitorSettings
from shared.kafka import ConsumerLoop, bind_handlers


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
