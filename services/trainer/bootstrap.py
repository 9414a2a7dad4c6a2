"""The one place that builds the trainer's real adapters (or takes fakes from a test), and what the process
runtime runs (``process``): the consumer loop and the small HTTP face."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from opentelemetry import metrics

from services.trainer.adapters.completed import CompletedRequests
from services.trainer.adapters.kube import JobApi, KubeJobs
from services.trainer.adapters.pytorchjob import JobSpec
from services.trainer.adapters.scratch import clean_stale_runs
from services.trainer.adapters.teachers import RegistryTeachers, TeacherSource
from services.trainer.cluster import ClusterTraining
from services.trainer.entrypoints.api import create_app
from services.trainer.entrypoints.consumer import build_consumer_loop
from services.trainer.handlers import Publish, TrainerDeps
from services.trainer.service import JobLimits
from services.trainer.settings import TrainerSettings
from shared.artifacts import ArtifactStore
from shared.events import TrainingRequested
from shared.kafka import ConsumerLoop, KafkaPublisher, make_consumer, make_producer
from shared.registry_client import RegistryClient
from shared.runtime import Runtime
from shared.s3 import s3_options
from shared.topics import ensure_topics

SOURCE = "ferry/trainer"
log = logging.getLogger("services.trainer")


@dataclass
class TrainerService:
    """A wired trainer: its consumer loop and what must be closed after it."""

    settings: TrainerSettings
    deps: TrainerDeps
    loop: ConsumerLoop
    closers: list[Callable[[], Any]]

    def stop(self) -> None:
        self.loop.stop_event.set()

    def close(self) -> None:
        for close in reversed(self.closers):
            close()


def outcome_recorder() -> Callable[[str, float], None]:
    """Counts runs by outcome and times them (``ferry_training_runs_total``, ``..._seconds``)."""
    meter = metrics.get_meter("ferry.trainer")
    runs = meter.create_counter("ferry.training.runs", unit="1", description="training requests by outcome")
    seconds = meter.create_histogram("ferry.training.time", unit="s", description="time per training request")

    def record(outcome: str, elapsed_s: float) -> None:
        runs.add(1, {"outcome": outcome})
        seconds.record(elapsed_s, {"outcome": outcome})

    return record


def build_deps(
    settings: TrainerSettings,
    *,
    publisher: KafkaPublisher,
    teachers: TeacherSource | None = None,
    store: ArtifactStore | None = None,
    jobs: JobApi | None = None,
) -> TrainerDeps:
    """The handlers' dependencies: the store, the publisher, the teachers, the completed record, and the
    cluster's PyTorchJobs when ``settings.cluster`` names one (tests may pass a fake ``jobs``)."""
    store = store or ArtifactStore.from_settings(settings.ferry)
    completed = CompletedRequests(settings.ferry.resolved_artifact_root, s3=s3_options(settings.ferry))
    cluster = None
    if settings.cluster_enabled:
        jobs = jobs or KubeJobs.connect(settings.cluster, settings.job_namespace)
        cluster = cluster_training(settings, jobs, publish=publisher.publish, store=store, completed=completed)
    return TrainerDeps(
        store=store,
        publish=publisher.publish,
        teachers=teachers
        or RegistryTeachers(
            RegistryClient.connect(settings.registry_url, timeout_s=settings.registry_timeout_s), store
        ),
        completed=completed,
        work_root=settings.resolved_work_dir,
        limits=JobLimits(
            budget_s=settings.budget_s, max_world_size=settings.max_world_size, streaming=settings.streaming
        ),
        record_outcome=outcome_recorder(),
        cluster=cluster,
    )


def cluster_training(
    settings: TrainerSettings, jobs: JobApi, *, publish: Publish, store: ArtifactStore, completed: CompletedRequests
) -> ClusterTraining:
    """The PyTorchJob path, from the trainer's ``FERRY_TRAINER_JOB_*`` settings."""
    spec = JobSpec(
        image=settings.job_image,
        namespace=settings.job_namespace,
        service_account=settings.job_service_account,
        config_maps=tuple(settings.job_config_maps),
        secrets=tuple(settings.job_secrets),
        cpu=settings.job_cpu,
        memory=settings.job_memory,
        gpus=settings.job_gpus,
        backoff_limit=settings.job_backoff_limit,
        budget_s=settings.budget_s,
    )
    return ClusterTraining(
        jobs,
        spec,
        publish=publish,
        store=store,
        completed=completed,
        max_world_size=settings.job_max_world_size,
        watch_timeout_s=settings.job_watch_timeout_s,
    )


def bootstrap(
    settings: TrainerSettings | None = None,
    *,
    teachers: TeacherSource | None = None,
    consumer: KafkaConsumer | None = None,
    producer: KafkaProducer | None = None,
    stop: threading.Event | None = None,
) -> TrainerService:
    """Build the trainer from settings; tests may pass a teacher source, consumer or producer."""
    settings = settings or TrainerSettings()
    clean_stale_runs(settings.resolved_work_dir)  # what a trainer killed mid-run left behind
    import torch  # here, not at the top: importing torch is slow and `ferry --help` needs none of it

    torch.set_num_threads(settings.torch_threads)
    producer = producer or make_producer(settings.ferry)
    publisher = KafkaPublisher(settings.ferry, source=SOURCE, producer=producer)
    deps = build_deps(settings, publisher=publisher, teachers=teachers)
    # One request per poll, and a poll deadline longer than a training run: a long run must not
    # look like a dead consumer and trigger a rebalance that hands its request to another trainer.
    consumer = consumer or make_consumer(
        settings.ferry,
        settings.consumer_group,
        [TrainingRequested.topic],
        max_poll_records=1,
        max_poll_interval_ms=settings.max_poll_interval_ms,
    )
    loop = build_consumer_loop(settings, deps, consumer=consumer, dlq_producer=producer, stop=stop)
    closers: list[Callable[[], Any]] = [publisher.close]
    if isinstance(deps.teachers, RegistryTeachers):
        closers.append(deps.teachers.close)
    return TrainerService(settings=settings, deps=deps, loop=loop, closers=closers)


def process(settings: TrainerSettings) -> Runtime:
    """The trainer process for the runtime (HTTP only when ``settings.metrics_port`` is not 0)."""
    ensure_topics(settings.ferry)
    service = bootstrap(settings)
    runtime = Runtime("trainer", stop=service.loop.stop_event, shutdown_timeout_s=settings.shutdown_timeout_s)
    runtime.worker("consumer-loop", service.loop.run)
    runtime.probe("consumer", service.loop.joined.is_set)
    cluster = service.deps.cluster
    if cluster is not None:
        # Lists the jobs any trainer started, then watches them: a restart carries on where it stopped.
        runtime.worker("pytorchjob-watch", lambda: cluster.run(service.loop.stop_event))
    runtime.on_close(service.close)
    log.info("trainer consuming %s", settings.ferry.topic("training.requested"))
    if settings.metrics_port:
        runtime.serve(create_app(runtime), settings.host, settings.metrics_port)
    return runtime
