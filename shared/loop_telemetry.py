"""The consumer loop's metrics: counts by outcome, dead letters, and the consumer lag per partition.

Exposed on ``/metrics`` as ``ferry_events_consumed_total{topic,group,outcome}``,
``ferry_events_dead_lettered_total{topic,group}`` and ``ferry_kafka_consumer_lag{group,topic,partition}``.
Counts are gathered per poll batch and added once per batch: an OpenTelemetry ``add`` per message
would cost a noticeable share of the loop's time.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from kafka.structs import TopicPartition
from opentelemetry import metrics

METER = "ferry.kafka"


class LoopTelemetry:
    """One loop's counters and lag; ``flush`` adds the batch's counts."""

    def __init__(self, group: str) -> None:
        self.group = group
        meter = metrics.get_meter(METER)
        self._consumed = meter.create_counter("ferry.events.consumed", unit="1", description="events by outcome")
        self._dead_lettered = meter.create_counter(
            "ferry.events.dead_lettered", unit="1", description="events sent to the dead-letter topic"
        )
        # A synchronous gauge: each loop sets its own series, so no process-wide registry of loops is
        # needed (an observable gauge keeps only the first callback registered under its name).
        self._lag = meter.create_gauge(
            "ferry.kafka.consumer.lag",
            unit="{message}",
            description="messages between a partition's end and the consumer's position",
        )
        self._outcomes: Counter[tuple[str, str]] = Counter()
        self._dead: Counter[str] = Counter()
        self.totals: Counter[tuple[str, str]] = Counter()
        """Every outcome since the loop started, by (topic, outcome); for tests and benchmarks."""
        self.lag: dict[TopicPartition, int] = {}

    def count(self, topic: str, outcome: str, n: int = 1) -> None:
        """Count an outcome: handled, dead_lettered, retry_later, unreadable, left_to_owner."""
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
        self._lag.set(self.lag[partition], self._labels(partition))

    def forget(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions this loop no longer owns: their series drop to 0 here (the new owner reports them)."""
        for partition in partitions:
            if self.lag.pop(partition, None) is not None:
                self._lag.set(0, self._labels(partition))

    def _labels(self, partition: TopicPartition) -> dict[str, str]:
        return {"group": self.group, "topic": partition.topic, "partition": str(partition.partition)}
