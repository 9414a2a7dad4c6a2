"""The one place that builds the evaluator's real adapters (or takes fakes from a test), and what the
process runtime runs (``process``): the consumer loop (group ``evaluator``: ``model.registered`` and
``alert``), the bake thread and the small HTTP face."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from opentelemetry import metrics
from opentelemetry.metrics import Observation

from services.evaluator.adapters.artifact_store import ModelLoader
from services.evaluator.adapters.registry import RegistryRecords
from services.evaluator.entrypoints.api import create_app
from services.evaluator.entrypoints.bakes import BakeRunner
from services.evaluator.entrypoints.consumer import TOPICS, build_consumer_loop
from services.evaluator.handlers import EvaluatorDeps, RegistryReader, Rollout
from services.evaluator.retraining import Retraining
from services.evaluator.settings import EvaluatorSettings
from shared.artifacts import ArtifactStore
from shared.kafka import ConsumerLoop, KafkaPublisher, make_consumer, make_producer
from shared.leader import AdvisoryLeader, database_mutex
from shared.registry_client import RegistryClient
from shared.runtime import Runtime
from shared.topics import ensure_topics
from shared.window_reader import read_window, recent_retrains

SOURCE = "ferry/evaluator"
log = logging.getLogger("services.evaluator")
DECISIONS = ("promote_canary", "promote", "reject", "rollback", "retrain")


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
    retraining: Retraining | None = None,
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
        retraining=retraining,
        production_split_policy=settings.production_split_policy,
    )


def kafka_retraining(settings: EvaluatorSettings, mutex: Callable[[str], Any] | None = None) -> Retraining:
    """Retraining over Kafka (the window and the cooldown are read back from the topics) and ``mutex`` (the
    process passes a PostgreSQL advisory lock per model, so two replicas never both pass the cooldown)."""
    ferry = settings.ferry
    return Retraining(
        read_window=lambda name, labels: read_window(
            ferry, name, labels, since_s=settings.retrain_window_s, max_rows=settings.retrain_max_rows
        ),
        recent_retrains=lambda name: recent_retrains(ferry, name, since_s=settings.retrain_cooldown_s),
        datasets_root=ferry.resolved_datasets_root,
        cooldown_s=settings.retrain_cooldown_s,
        min_rows=settings.retrain_min_rows,
        mutex=mutex,
    )


def bootstrap(
    settings: EvaluatorSettings | None = None,
    *,
    registry: RegistryReader | None = None,
    consumer: KafkaConsumer | None = None,
    producer: KafkaProducer | None = None,
    stop: threading.Event | None = None,
    leads: Callable[[], bool] = lambda: True,
    retraining: Retraining | None = None,
) -> EvaluatorService:
    """Build the evaluator from settings; tests may pass a registry reader, consumer, producer, stop event or
    leadership (``leads``: whether this replica completes bakes; the process passes its advisory lock's), or
    retraining (default: over Kafka, without a cross-replica lock)."""
    settings = settings or EvaluatorSettings()
    stop = stop or threading.Event()
    producer = producer or make_producer(settings.ferry, client_id="ferry-evaluator")
    publisher = KafkaPublisher(settings.ferry, source=SOURCE, producer=producer)
    closers: list[Callable[[], Any]] = [publisher.close]
    if registry is None:
        records = RegistryRecords(RegistryClient.connect(settings.registry_url, timeout_s=settings.registry_timeout_s))
        closers.append(records.close)
        registry = records
    retraining = retraining or kafka_retraining(settings)
    deps = build_deps(settings, publisher=publisher, registry=registry, retraining=retraining)
    # An evaluation takes about a second: ten per poll keeps far inside Kafka's poll deadline.
    consumer = consumer or make_consumer(settings.ferry, settings.consumer_group, TOPICS, max_poll_records=10)
    loop = build_consumer_loop(settings, deps, consumer=consumer, dlq_producer=producer, stop=stop)
    runner = BakeRunner(deps, stop=stop, resync_interval_s=settings.resync_interval_s, leads=leads)
    return EvaluatorService(settings, deps, loop, runner, stop, closers)


def process(settings: EvaluatorSettings) -> Runtime:
    """The evaluator process for the runtime (HTTP only when ``settings.port`` is not 0)."""
    ensure_topics(settings.ferry)
    # One replica completes bakes: the holder of the evaluator's advisory lock (shared/leader.py).
    leader = AdvisoryLeader.for_database(settings.ferry.resolved_database_url, "evaluator.bakes")
    # One replica at a time decides a model's retrain: a per-model advisory lock around the cooldown check.
    mutex = database_mutex(settings.ferry.resolved_database_url)
    retraining = kafka_retraining(settings, lambda name: mutex(f"evaluator.retrain:{name}"))
    service = bootstrap(settings, leads=leader.leads, retraining=retraining)
    service.closers.insert(0, leader.close)
    runner = service.bakes
    metrics.get_meter("ferry.evaluator").create_observable_gauge(
        "ferry.evaluator.bake.leader",
        [lambda _: [Observation(1 if runner.leading else 0)]],
        unit="1",
        description="1 while this replica is the one that completes bakes",
    )
    runtime = Runtime("evaluator", stop=service.stop_event, shutdown_timeout_s=settings.shutdown_timeout_s)
    runtime.worker("consumer-loop", service.loop.run)
    runtime.worker("bakes", service.bakes.run)
    runtime.probe("bakes", service.bakes.resynced.is_set)
    runtime.probe("consumer", service.loop.joined.is_set)
    runtime.on_close(service.close)
    log.info(
        "evaluator consuming %s and %s (group %s); registry %s",
        settings.ferry.topic("model.registered"),
        settings.ferry.topic("alert"),
        settings.consumer_group,
        settings.registry_url,
    )
    if settings.port:
        app = create_app(service.deps.bakes, runtime, clock=service.deps.clock)
        runtime.serve(app, settings.host, settings.port)
    return runtime
