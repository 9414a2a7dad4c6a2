"""The consumer loop's metrics: counts by outcome, dead letters, and the consumer lag per partition.

Exposed on ``/metrics`` as ``ferry_events_consumed_total{topic,group,outcome}``,
``ferry_events_dead_lettered_total{topic,group}`` and ``ferry_kafka_consumer_lag{group,topic,partition}``.
Counts are gathered per poll batch and added once per batch: an OpenTelemetry ``add`` per message
would cost a noticeable share of the loop's time.
"""

from __future__ import annotations

import threading
import weakref
from collections import Counter
from collections.abc import Iterable

from kafka.structs import TopicPartition
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

METER = "ferry.kafka"

# OpenTelemetry keeps the first callback registered under an instrument's name and ignores later ones,
# so one process-wide gauge reports the lag of every loop alive in the process.
_lag_sources: weakref.WeakSet[LoopTelemetry] = weakref.WeakSet()
_gauge_lock = threading.Lock()
_gauge_registered = False


def _observe_lag(_: CallbackOptions) -> Iterable[Observation]:
    for source in list(_lag_sources):
        group = source.group
        for partition, lag in dict(source.lag).items():
            yield Observation(lag, {"group": group, "topic": partition.topic, "partition": str(partition.partition)})


def _register_lag_gauge() -> None:
    global _gauge_registered
    with _gauge_lock:
        if not _gauge_registered:
            metrics.get_meter(METER).create_observable_gauge(
                "ferry.kafka.consumer.lag",
                [_observe_lag],
                unit="{message}",
                description="messages between a partition's end and the consumer's position",
            )
            _gauge_registered = True


class LoopTelemetry:
    """One loop's counters and lag; ``flush`` adds the batch's counts."""

    def __init__(self, group: str) -> None:
        self.group = group
        meter = metrics.get_meter(METER)
        self._consumed = meter.create_counter("ferry.events.consumed", unit="1", description="events by outcome")
        self._dead_lettered = meter.create_counter(
            "ferry.events.dead_lettered", unit="1", description="events sent to the dead-letter topic"
        )
        self._outcomes: Counter[tuple[str, str]] = Counter()
        self._dead: Counter[str] = Counter()
        self.totals: Counter[tuple[str, str]] = Counter()
        """Every outcome since the loop started, by (topic, outcome); for tests and benchmarks."""
        self.lag: dict[TopicPartition, int] = {}
        _lag_sources.add(self)
        _register_lag_gauge()

    def count(self, topic: str, outcome: str, n: int = 1) -> None:
        """Count an outcome: handled, dead_lettered, retry_later, unreadable."""
        self._outcomes[(topic, outcome)] += n

    def dead_lettered(self, topic: str, outcome: str = "dead_lettered") -> None:
        self._dead[topic] += 1
        self._outcomes[(topic, outcome)] += 1

    def flush(self) -> None:
        self.totals.update(self._outcomes)
        for (topic, outcome), n in self._outcomes.items():
            self._consumed.add(n, {"topic": topic, "group": self.group, "outcome": outcome})
        for topic, n in self._dead.items():
            self._dead_lettered.add(n, {"topic": topic, "group": self.group})
        self._outcomes.clear()
        self._dead.clear()

    def set_lag(self, partition: TopicPartition, lag: int) -> None:
        self.lag[partition] = max(0, lag)

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        for partition in partitions:
            self.lag.pop(partition, None)
