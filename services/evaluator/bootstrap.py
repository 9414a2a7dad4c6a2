"""The one place that builds the evaluator's real adapters (or takes fakes from a test)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from opentelemetry import metrics

from services.evaluator.adapters.artifact_store import ModelLoader
from services.evaluator.adapters.registry_client import RegistryClient
from services.evaluator.entrypoints.bakes import BakeRunner
from services.evaluator.entrypoints.consumer import build_consumer_loop
from services.evaluator.handlers import EvaluatorDeps, RegistryReader, Rollout
from services.evaluator.settings import EvaluatorSettings
from shared.artifacts import ArtifactStore
from shared.kafka import ConsumerLoop, KafkaPublisher, make_producer

SOURCE = "ferry/evaluator"
DECISIONS = ("promote_canary", "promote", "reject", "rollback")


@dataclass
class EvaluatorService:
    """A wired evaluator: its consumer loop, its bake runner, and what must be closed after them."""

    settings: EvaluatorSettings
    deps: EvaluatorDeps
    loop: ConsumerLoop
    bakes: BakeRunner
    stop_event: threading.Event
    closers: list[Callable[[], Any]]

    def stop(self) -> None:
        self.stop_event.set()

    def close(self) -> None:
        for close in reversed(self.closers):
            close()


def decision_recorder() -> Callable[[str], None]:
    """Counts decisions (``ferry_evaluator_evaluations_total{decision}``) and skips (``..._skipped_total{reason}``)."""
    meter = metrics.get_meter("ferry.evaluator")
    decisions = meter.create_counter("ferry.evaluator.evaluations", unit="1", description="decisions published")
    skipped = meter.create_counter("ferry.evaluator.skipped", unit="1", description="events that needed no decision")

    def record(label: str) -> None:
        if label in DECISIONS:
            decisions.add(1, {"decision": label})
        else:
            skipped.add(1, {"reason": label})

    return record


def build_deps(
    settings: EvaluatorSettings,
    *,
    publisher: Any,
    registry: RegistryReader,
    store: ArtifactStore | None = None,
) -> EvaluatorDeps:
    """The handlers' dependencies from the settings."""
    store = store or ArtifactStore.from_settings(settings.ferry)
    return EvaluatorDeps(
        registry=registry,
        loader=ModelLoader(store),
        publish=publisher.publish,
        policy=settings.policy(),
        rollout=Rollout(
            bake_s=settings.bake_s, rollback_window_s=settings.rollback_window_s, give_up_s=max(600.0, settings.bake_s)
        ),
        latency_runs=settings.latency_runs,
        record_decision=decision_recorder(),
    )


def bootstrap(
    settings: EvaluatorSettings | None = None,
    *,
    registry: RegistryReader | None = None,
    consumer: KafkaConsumer | None = None,
    producer: KafkaProducer | None = None,
    stop: threading.Event | None = None,
) -> EvaluatorService:
    """Build the evaluator from settings; tests may pass a registry reader, consumer, producer or stop event."""
    settings = settings or EvaluatorSettings()
    stop = stop or threading.Event()
    producer = producer or make_producer(settings.ferry, client_id="ferry-evaluator")
    publisher = KafkaPublisher(settings.ferry, source=SOURCE, producer=producer)
    closers: list[Callable[[], Any]] = [publisher.close]
    if registry is None:
        client = RegistryClient(settings.registry_url, timeout_s=settings.registry_timeout_s)
        closers.append(client.close)
        registry = client
    deps = build_deps(settings, publisher=publisher, registry=registry)
    loop = build_consumer_loop(settings, deps, consumer=consumer, dlq_producer=producer, stop=stop)
    runner = BakeRunner(deps, stop=stop, resync_interval_s=settings.resync_interval_s)
    return EvaluatorService(settings, deps, loop, runner, stop, closers)
