"""What a starting gateway serves, rebuilt from ``deployment.changed`` first and the registry second.

The topic is compacted and keyed by model name, and each event carries the model's whole deployment
(versions with their digests, sizes and signatures, canary weight, shadow, revision), so reading it from
the beginning to the end offsets seen at start and keeping the highest revision per model gives what the
registry would answer, with no registry. The artifacts are then fetched by digest from the store.

The order, and why:

1. **Replay the topic** (assigned partitions, no group, nothing committed), bounded by ``timeout_s``.
   Kafka is what the gateway follows anyway; a gateway that restarts while the registry is away (a pod
   on every scale-out) must still serve.
2. **The broker answered**: ask the registry once, with a short budget, only for the models the topic
   said nothing of (their events predate compaction and were deleted by retention). A registry that does
   not answer is logged and passed over: readiness never waits on an absent registry when Kafka answered.
3. **The broker did not answer** (or the replay did not reach the end in time): the registry, with the
   full start-up budget, as before; what the replay did read is kept where its revision is higher.

Either way the group that follows the topic afterwards reads from the earliest offset and skips what is
served already (revisions), so a change published during the start is not missed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol

from kafka import KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from services.gateway.domain import Deployment, latest_per_model
from services.gateway.handlers import deployment_of
from shared.envelope import DecodeError, decode
from shared.errors import TransientError
from shared.events import DeploymentChanged
from shared.kafka import read_up_to
from shared.registry_errors import RegistryError
from shared.settings import FerrySettings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Replay:
    """The highest revision per model read from the topic; ``complete`` when it reached the end offsets."""

    deployments: dict[str, Deployment]
    complete: bool


class KafkaDeployments:
    """Reads ``deployment.changed`` from the beginning to the end offsets seen at start."""

    def __init__(
        self, settings: FerrySettings, *, timeout_s: float, give_up: Callable[[], bool] = lambda: False
    ) -> None:
        self._settings, self._timeout_s, self._give_up = settings, timeout_s, give_up

    def replay(self) -> Replay:
        """Never raises for a broker that is away: that is an incomplete, empty replay."""
        deadline = time.monotonic() + self._timeout_s
        found: list[Deployment] = []
        try:
            consumer = KafkaConsumer(
                **self._settings.kafka_client_options(),
                group_id=None,
                enable_auto_commit=False,
                client_id="gateway-replay",
                request_timeout_ms=max(1000, int(self._timeout_s * 1000)),
                bootstrap_timeout_ms=max(1000, int(self._timeout_s * 1000)),
            )
        except (KafkaError, OSError, ValueError) as error:
            log.warning("deployment.changed not replayed: the broker did not answer (%s)", error)
            return Replay({}, complete=False)
        try:
            complete = self._read(consumer, deadline, found)
        except (KafkaError, OSError) as error:
            log.warning("deployment.changed replay stopped: %s", error)
            complete = False
        finally:
            consumer.close(autocommit=False)
        return Replay(latest_per_model(found), complete=complete)

    def _read(self, consumer: KafkaConsumer, deadline: float, found: list[Deployment]) -> bool:
        topic = self._settings.topic(DeploymentChanged.topic)
        numbers = consumer.partitions_for_topic(topic)
        while not numbers:
            if topic not in consumer.topics():
                return True  # no such topic: nothing was ever deployed through this broker
            if time.monotonic() > deadline or self._give_up():
                return False
            time.sleep(0.2)  # its metadata is not there yet (a broker that just came up)
            numbers = consumer.partitions_for_topic(topic)
        partitions = [TopicPartition(topic, number) for number in sorted(numbers)]
        consumer.assign(partitions)
        ends = {tp: int(offset) for tp, offset in consumer.end_offsets(partitions).items()}
        consumer.seek_to_beginning(*partitions)
        records, complete = read_up_to(consumer, ends, deadline=deadline, give_up=self._give_up)
        found += [deployment for record in records for deployment in record_deployment(record)]
        return complete


def record_deployment(record: object) -> list[Deployment]:
    """The record's deployment, or none: an unreadable one is the following group's to dead-letter."""
    try:
        event, _ = decode(
            getattr(record, "headers", None), getattr(record, "key", None), getattr(record, "value", None)
        )
    except DecodeError as error:
        log.warning("replay skips an unreadable deployment.changed record: %s", error)
        return []
    return [deployment_of(event)] if isinstance(event, DeploymentChanged) else []


class RegistryFallback(Protocol):
    def deployments(self, skip: Collection[str] = ()) -> list[Deployment]:
        """Every deployed model's deployment but those named in ``skip``."""
        ...


@dataclass
class ReplayFirst:
    """The gateway's start-up source: the topic first, the registry as the fallback (see the module)."""

    replay: Callable[[], Replay]
    registry: RegistryFallback
    """The registry with the full start-up budget (the broker did not answer)."""
    quick_registry: RegistryFallback
    """The same registry with a short budget (the broker answered)."""

    def deployments(self) -> list[Deployment]:
        replay = self.replay()
        log.info(
            "replayed deployment.changed: %d models%s", len(replay.deployments), "" if replay.complete else " (partial)"
        )
        if replay.complete:
            try:
                extra = self.quick_registry.deployments(skip=set(replay.deployments))
            except (RegistryError, TransientError) as error:
                log.warning("registry fallback skipped, serving what the topic gave: %s", error)
                extra = []
        else:
            extra = self.registry.deployments()
        return list(latest_per_model([*replay.deployments.values(), *extra]).values())
