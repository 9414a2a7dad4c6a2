"""The dead letters as the console reads and replays them: ``shared.dead_letters`` over the real broker."""

from __future__ import annotations

from collections.abc import Sequence

from kafka.errors import KafkaError

from services.console.domain import SourceDown
from shared.dead_letters import DeadLetter, DeadLetterError, Operator, read, replay, select
from shared.events import TOPICS
from shared.kafka import make_producer
from shared.settings import FerrySettings

SOURCE = "Kafka"


class DeadLetterSource:
    """Reads each topic's ``.dlq`` to its end; replays through a producer made for the replay."""

    def __init__(self, settings: FerrySettings, *, timeout_s: float) -> None:
        self.settings = settings
        self.timeout_s = timeout_s

    def topics(self) -> list[str]:
        """Every design topic's full name (each may have dead letters)."""
        return [self.settings.topic(name) for name in TOPICS]

    def read(self, topic: str) -> list[DeadLetter]:
        try:
            return read(self.settings, topic, timeout_s=self.timeout_s)
        except (DeadLetterError, KafkaError, OSError) as error:
            raise SourceDown(SOURCE, f"reading {topic}.dlq: {error}") from None

    def replay(self, topic: str, letters: Sequence[DeadLetter], operator: Operator) -> list[DeadLetter]:
        """Send ``letters`` back to ``topic``; DeadLetterError when a copy cannot be replayed."""
        try:
            producer = make_producer(self.settings)
        except (KafkaError, OSError) as error:
            raise SourceDown(SOURCE, str(error)) from None
        try:
            return replay(producer, topic, letters, operator)
        except KafkaError as error:
            raise SourceDown(SOURCE, f"replaying to {topic}: {error}") from None
        finally:
            producer.close(timeout=10)


__all__ = ["DeadLetterSource", "select"]
