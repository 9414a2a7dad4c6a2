"""The one place that builds the gateway's parts: store, sessions, fleet, request path, registry client,
consumer loop, access log, and its runtime (``process``). Tests pass a deployment source of their own,
or no consumer loop."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from typing import Any

from services.gateway.adapters.access_log import AccessLog, RotatingFile
from services.gateway.adapters.deployment_log import KafkaDeployments, ReplayFirst
from services.gateway.adapters.inference_log import InferenceLog, KafkaLogSink, LogSink
from services.gateway.adapters.metrics import GatewayMetrics
from services.gateway.adapters.onnx_runtime import OnnxLoader
from services.gateway.adapters.registry import DeploymentSource, RegistryDeployments
from services.gateway.budget import MemoryBudget
from services.gateway.domain import Admission, RateLimiter
from services.gateway.entrypoints.api import GatewayApp, create_app
from services.gateway.entrypoints.consumer import build_consumer_loop
from services.gateway.fleet import Fleet
from services.gateway.handlers import Deployer
from services.gateway.loading import VersionFactory
from services.gateway.residency import FindVersion, Residency
from services.gateway.service import Gateway, Inference
from services.gateway.settings import GatewaySettings
from shared.artifacts import ArtifactStore
from shared.events import DeploymentChanged, Event
from shared.kafka import ConsumerLoop, KafkaPublisher, Publisher, make_consumer, make_producer
from shared.onnx import gpu_present
from shared.registry_client import RegistryClient, RetryBudget
from shared.runtime import Runtime

__all__ = ["SERVER_OPTIONS", "Gateway", "bootstrap", "build_app", "process"]

log = logging.getLogger("services.gateway")

# uvicorn's fastest parts, and room for bursts of connections.
SERVER_OPTIONS: dict[str, Any] = {"http": "httptools", "loop": "uvloop", "backlog": 4096}


def bootstrap(
    settings: GatewaySettings | None = None,
    *,
    source: DeploymentSource | None = None,
    store: ArtifactStore | None = None,
    follow_kafka: bool = True,
    runtime: Runtime | None = None,
    find_version: FindVersion | None = None,
    log_sink: LogSink | None = None,
    feedback_publisher: Publisher | None = None,
) -> Gateway:
    """Build the gateway; tests pass a deployment source, a store, ``follow_kafka=False``, where pinned
    versions no deployment serves are looked up (default: the registry, when the source is too), or where
    inference logs and feedback go (default: Kafka, when the gateway follows it)."""
    settings = settings or GatewaySettings()
    runtime = runtime or Runtime("gateway", shutdown_timeout_s=settings.shutdown_timeout_s)
    fleet = Fleet(drain_timeout_s=settings.drain_timeout_s)
    admission = Admission(settings.max_inflight, shadow_share=settings.shadow_share, canary_share=settings.canary_share)
    holder: list[Gateway] = []
    metrics = GatewayMetrics(
        inflight=lambda: admission.inflight, queue_depths=lambda: holder[0].queue_depths() if holder else iter(())
    )
    inference = Inference(
        fleet,
        admission,
        RateLimiter(settings.rate_limit_rps, settings.burst),
        metrics,
        max_deadline_s=settings.deadline_ms / 1000,
    )
    store = store or ArtifactStore.from_settings(settings.ferry)
    loader = OnnxLoader(settings.device, settings.ort_threads)
    versions = VersionFactory(settings, metrics, loader, inference.statistics)
    deployer = Deployer(
        fleet,
        store,
        versions,
        keep_previous=settings.keep_previous,
        on_outcome=lambda model, outcome: metrics.count("deployments", (model, outcome)),
    )
    if source is None:
        source = _startup_source(settings, runtime, follow_kafka=follow_kafka)
        find_version = find_version or _pinned_lookup(settings, runtime)
    inference.residency = _residency(settings, fleet, deployer, versions, metrics, find_version)
    gateway = Gateway(
        settings,
        fleet,
        inference,
        deployer,
        metrics,
        source,
        runtime,
        loop_factory=_loop_factory(settings, deployer, runtime) if follow_kafka else None,
        access_log=_access_log(settings, runtime),
        residency=inference.residency,
    )
    gateway.feedback_tokens = settings.feedback_tokens()
    if feedback_publisher is None and follow_kafka:
        feedback_publisher = _feedback_publisher(settings, runtime)
    gateway.feedback_publisher = feedback_publisher
    if log_sink is not None or follow_kafka:
        inference.inference_log = _inference_log(settings, runtime, log_sink)
    holder.append(gateway)
    return gateway


def _inference_log(settings: GatewaySettings, runtime: Runtime, sink: LogSink | None) -> InferenceLog | None:
    """The sampled log of answered requests and its draining thread; None when nothing is sampled."""
    sink = sink or kafka_log_sink(settings)
    inference_log = InferenceLog(
        sink,
        sample=settings.log_sample,
        sample_by_model=settings.log_sample_by_model,
        max_queue=settings.log_queue_size,
        gateway=settings.consumer_group().removeprefix(f"{settings.consumer_group_prefix}-"),
    )
    if not inference_log.enabled:
        return None
    runtime.worker("inference-log", lambda: inference_log.run(runtime.stop_event))
    runtime.on_close(sink.close)
    return inference_log


def kafka_log_sink(settings: GatewaySettings) -> KafkaLogSink:
    """The inference log's Kafka sink, its producer batching as the settings say (built on first use)."""
    client_id = f"{settings.consumer_group()}-log"
    return KafkaLogSink(
        settings.ferry,
        make_producer=lambda: make_producer(
            settings.ferry,
            client_id=client_id,
            linger_ms=settings.log_linger_ms,
            batch_size=settings.log_batch_bytes,
            max_block_ms=200,  # no metadata yet (a leader away): drop after this, never wait long
        ),
        source="ferry/gateway",
        max_in_flight=settings.log_max_in_flight,
    )


class _LazyPublisher:
    """A publisher whose producer is built on first use: a broker away at start never delays the gateway's."""

    def __init__(self, make: Callable[[], KafkaPublisher]) -> None:
        self._make = make
        self._publisher: KafkaPublisher | None = None

    def _get(self) -> KafkaPublisher:
        self._publisher = self._publisher or self._make()
        return self._publisher

    def publish(self, event: Event, *, event_id: str | None = None) -> None:
        self._get().publish(event, event_id=event_id)

    def publish_batch(self, items: Any) -> list[Exception | None]:
        return self._get().publish_batch(items)

    def close(self) -> None:
        if self._publisher is not None:
            self._publisher.close()


def _feedback_publisher(settings: GatewaySettings, runtime: Runtime) -> Publisher:
    client_id = f"{settings.consumer_group()}-feedback"
    publisher = _LazyPublisher(
        lambda: KafkaPublisher(
            settings.ferry, source="ferry/gateway", producer=make_producer(settings.ferry, client_id=client_id)
        )
    )
    runtime.on_close(publisher.close)
    return publisher


def _startup_source(settings: GatewaySettings, runtime: Runtime, *, follow_kafka: bool) -> DeploymentSource:
    """What the gateway serves at start: deployment.changed replayed, the registry as the fallback (see
    adapters/deployment_log.py for the order); the registry alone when the gateway follows no Kafka."""
    stopping = runtime.stop_event.is_set
    # The registry may not be up yet: each read waits for it up to startup_timeout_s, unless the gateway
    # is stopping; the quick one (Kafka answered) waits registry_fallback_s.
    patient = _registry(
        settings, runtime, RetryBudget(attempts=None, total_s=settings.startup_timeout_s, give_up=stopping)
    )
    if not follow_kafka:
        return patient
    quick = _registry(
        settings, runtime, RetryBudget(attempts=None, total_s=settings.registry_fallback_s, give_up=stopping)
    )
    topic = KafkaDeployments(settings.ferry, timeout_s=settings.replay_timeout_s, give_up=stopping)
    return ReplayFirst(replay=topic.replay, registry=patient, quick_registry=quick)


def _residency(
    settings: GatewaySettings,
    fleet: Fleet,
    deployer: Deployer,
    versions: VersionFactory,
    metrics: GatewayMetrics,
    find_version: FindVersion | None,
) -> Residency:
    mib = 1024 * 1024
    budget = MemoryBudget(
        {"cpu": int(settings.memory_budget_mb * mib), "cuda": int(settings.gpu_memory_budget_mb * mib)}
    )
    residency = Residency(
        fleet,
        deployer.open,
        versions.cold,
        budget,
        device="cuda" if settings.device == "cuda" or settings.device == "auto" and gpu_present() else "cpu",
        session_overhead_bytes=settings.session_overhead_kb * 1024,
        protect_window_s=settings.protect_window_s,
        retry_after_s=settings.load_retry_s,
        load_concurrency=settings.load_concurrency,
        find_version=find_version,
        on_load=metrics.loaded,
        on_evict=lambda model, version, reason: metrics.count("evictions", (model, reason)),
    )
    metrics.memory = residency.memory
    return residency


def _pinned_lookup(settings: GatewaySettings, runtime: Runtime) -> FindVersion:
    """The registry, asked about a pinned version no deployment serves: a short budget (a request waits)."""
    stopping = runtime.stop_event.is_set
    registry = _registry(settings, runtime, RetryBudget(attempts=2, total_s=2.0, give_up=stopping))
    return registry.version_spec


def _registry(settings: GatewaySettings, runtime: Runtime, budget: RetryBudget) -> RegistryDeployments:
    client = RegistryClient.connect(settings.registry_url, timeout_s=settings.registry_timeout_s, budget=budget)
    deployments = RegistryDeployments(client)
    runtime.on_close(deployments.close)
    return deployments


def _loop_factory(settings: GatewaySettings, deployer: Deployer, runtime: Runtime) -> Callable[[], ConsumerLoop]:
    """The consumer loop of this process's own group, built once the deployments are loaded at start."""

    def build() -> ConsumerLoop:
        group = settings.consumer_group()
        consumer = make_consumer(settings.ferry, group, [DeploymentChanged.topic], auto_offset_reset="earliest")
        producer = make_producer(settings.ferry, client_id=f"{group}-dlq")
        runtime.on_close(lambda: producer.close(timeout=10))
        return build_consumer_loop(consumer, producer, group=group, deployer=deployer, stop=runtime.stop_event)

    return build


def _access_log(settings: GatewaySettings, runtime: Runtime) -> AccessLog | None:
    """One line per request, in a file of its own (rotated), not in the service's log: at thousands of
    requests a second they would bury every other line there."""
    if not settings.access_log:
        return None
    path = settings.resolved_access_log_file
    file = RotatingFile(path, max_bytes=settings.access_log_max_bytes, backups=settings.access_log_backups)
    runtime.on_close(file.close)
    return AccessLog(file)


def build_app(settings: GatewaySettings) -> tuple[Gateway, GatewayApp]:
    """The gateway and its ASGI app, for one serving process."""
    gateway = bootstrap(settings)
    app = create_app(gateway)
    # What start-up allocated lives as long as the process: keep it out of every garbage collection,
    # whose full passes would otherwise walk it again and again under load (tail latency).
    gc.freeze()
    return gateway, app


def process(settings: GatewaySettings) -> Runtime:
    """The gateway process for the runtime (one serving process; see __main__ for several)."""
    gateway, app = build_app(settings)
    gateway.runtime.serve(app, settings.host, settings.port, **SERVER_OPTIONS)
    return gateway.runtime
