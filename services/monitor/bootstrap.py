"""The one place that builds the monitor's real adapters (or takes fakes from a test), and what the process
runtime runs (``process``): the scrape-and-evaluate cycle, the delivery of alerts, the consumer loop of
``deployment.changed``, the loop of production data (inference logs and feedback: online accuracy) and the
API."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from kafka.coordinator.assignors.range import RangePartitionAssignor
from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation

from services.monitor.adapters.delivery import Dispatcher, KafkaSink, Sink
from services.monitor.adapters.online_facts import FactSource, OnlineView, RegistryFacts, register_online_gauges
from services.monitor.adapters.registry import RegistryInputReferences, RegistryReferences
from services.monitor.adapters.rules_file import read_rules
from services.monitor.adapters.scraper import HttpScraper
from services.monitor.adapters.webhooks import WebhookSink
from services.monitor.domain.episodes import RecentIds
from services.monitor.domain.input_window import InputWindows
from services.monitor.domain.lifecycle import AlertBook
from services.monitor.domain.online_accuracy import OnlineAccuracy
from services.monitor.domain.series import SeriesStore
from services.monitor.entrypoints.api import ApiDeps, create_app
from services.monitor.entrypoints.consumer import build_consumer_loop, build_production_loop, online_accuracy_handlers
from services.monitor.handlers import DeployedVersions
from services.monitor.input_drift import InputDriftTracker, InputReferenceSource, register_input_drift_gauges
from services.monitor.service import Monitor, ReferenceSource, Scraper
from services.monitor.settings import MonitorSettings
from shared.events import DeploymentChanged, InferenceFeedback, InferenceLogged
from shared.kafka import KafkaPublisher, Publisher, make_consumer, make_producer
from shared.leader import AdvisoryLeader
from shared.registry_client import RegistryClient, RetryBudget
from shared.request_trace import find_request
from shared.runtime import Runtime

SOURCE = "ferry/monitor"
log = logging.getLogger("services.monitor")


@dataclass
class MonitorService:
    """A wired monitor: the engine, its dispatcher, what the API needs and what must be closed."""

    settings: MonitorSettings
    monitor: Monitor
    dispatcher: Dispatcher
    publisher: Publisher
    deployed: DeployedVersions
    input_drift: InputDriftTracker
    online_view: OnlineView
    webhook_tokens: dict[str, str] = field(default_factory=dict)
    incoming_ids: RecentIds = field(default_factory=RecentIds)
    stop: threading.Event = field(default_factory=threading.Event)
    closers: list[Callable[[], Any]] = field(default_factory=list)

    def api_deps(self) -> ApiDeps:
        return ApiDeps(
            monitor=self.monitor,
            publish_batch=self.publisher.publish_batch,
            webhook_tokens=self.webhook_tokens,
            webhook_max_bytes=self.settings.webhook_max_bytes,
            incoming_ids=self.incoming_ids,
            engine=self.settings.engine,
            input_drift=self.input_drift,
            find_request=lambda request_id, since_s: find_request(self.settings.ferry, request_id, since_s=since_s),
        )

    def close(self) -> None:
        for close in reversed(self.closers):
            close()


def bootstrap(
    settings: MonitorSettings | None = None,
    *,
    publisher: Publisher | None = None,
    scraper: Scraper | None = None,
    references: ReferenceSource | None = None,
    input_references: InputReferenceSource | None = None,
    clock: Callable[[], float] = time.time,
    leads: Callable[[], bool] = lambda: True,
    facts: FactSource | None = None,
) -> MonitorService:
    """Build the monitor from settings; tests may pass a publisher, scraper, reference source, clock,
    leadership (``leads``: whether this replica's transitions go out; the process passes the lock's) or the
    source of the versions' class names and accuracy bounds (``facts``).

    Raises RulesFileError or InvalidTokens (before building anything) when the rules or the webhook
    tokens cannot be used.
    """
    settings = settings or MonitorSettings()
    rules = read_rules(settings.rules_file)
    webhook_tokens = settings.webhook_tokens()
    closers: list[Callable[[], Any]] = []
    publisher = publisher or _closing(
        KafkaPublisher(settings.ferry, source=SOURCE, producer=make_producer(settings.ferry, linger_ms=0)), closers
    )
    scraper = scraper or _closing(HttpScraper(timeout_s=settings.scrape_timeout_s), closers)
    if references is None or input_references is None:
        client = _closing(_registry_client(settings), closers)
        ttl_s, missing_ttl_s = settings.reference_ttl_s, settings.missing_reference_ttl_s
        references = references or RegistryReferences(client, ttl_s=ttl_s, missing_ttl_s=missing_ttl_s)
        input_references = input_references or RegistryInputReferences(client, ttl_s=ttl_s, missing_ttl_s=missing_ttl_s)
    dispatcher = _dispatcher(settings, publisher, closers)
    if not settings.publishes_own_alerts:
        # External engine: Prometheus evaluates and Alertmanager delivers. The monitor still evaluates, for its
        # API and its gauges (Prometheus's drift rule reads the references it refreshes), but never publishes.
        leads = _never
    deployed = DeployedVersions()
    input_drift = InputDriftTracker(InputWindows(max_rows=settings.input_window_rows), input_references)
    retention_s = rules.longest_window_s() + 3 * settings.scrape_interval_s + 60
    monitor = Monitor(
        rules,
        settings.resolved_targets,
        scraper=scraper,
        references=references,
        dispatcher=dispatcher,
        clock=clock,
        deployed_versions=deployed.versions,
        scrape_interval_s=settings.scrape_interval_s,
        book=AlertBook(recent_limit=settings.recent_alerts),
        store=SeriesStore(retention_s=retention_s, max_series=settings.max_series),
        leads=leads,
        input_drift=input_drift,
    )
    register_gauges(monitor)
    register_input_drift_gauges(input_drift)
    online_view = OnlineView(
        OnlineAccuracy(
            window_s=settings.feedback_window_s,
            max_pending=settings.feedback_max_pending,
            max_outcomes=settings.online_max_outcomes,
        ),
        facts or _closing(RegistryFacts(_registry_client(settings), ttl_s=settings.reference_ttl_s), closers),
    )
    register_online_gauges(online_view)
    incoming = RecentIds(settings.webhook_dedup_ids)
    return MonitorService(
        settings,
        monitor,
        dispatcher,
        publisher,
        deployed,
        input_drift,
        online_view,
        webhook_tokens,
        incoming,
        closers=closers,
    )


def _registry_client(settings: MonitorSettings) -> RegistryClient:
    # A registry that is away only delays what it answers (drift, online accuracy): one more try, then the next round.
    return RegistryClient.connect(
        settings.registry_url,
        timeout_s=settings.registry_timeout_s,
        budget=RetryBudget(attempts=2, total_s=settings.registry_timeout_s),
    )


def _never() -> bool:
    return False


def process(settings: MonitorSettings) -> Runtime:
    """The monitor process for the runtime; raises RulesFileError when the rules cannot be used.

    At a stop the dispatcher makes one last delivery attempt for what is queued, then everything closes.
    """
    if settings.publishes_own_alerts:
        # One replica publishes alerts: the holder of the monitor's advisory lock (shared/leader.py).
        leader = AdvisoryLeader.for_database(settings.ferry.resolved_database_url, "monitor.alerts")
        service = bootstrap(settings, leads=leader.leads)
        service.closers.insert(0, leader.close)  # closed last: the lock is given up once nothing is left to send
    else:
        # Every replica bridges what Alertmanager sends it; the derived ids make copies harmless.
        service = bootstrap(settings)
        if settings.resolved_webhook_urls:
            log.warning("FERRY_MONITOR_WEBHOOK_URLS is ignored by the external engine: Alertmanager delivers")
    monitor, stop = service.monitor, service.stop
    log.info(
        "monitor starting (%s engine): %d rules, targets %s, webhooks %d",
        settings.engine,
        len(monitor.rules.rules),
        [f"{t.job}={t.url}" for t in monitor.targets],
        len(settings.resolved_webhook_urls),
    )
    # A group per process: every replica must see every deployment (a shared group would split them).
    group = f"{settings.consumer_group}-{socket.gethostname()}-{os.getpid()}"
    consumer = make_consumer(settings.ferry, group, [DeploymentChanged.topic, InferenceLogged.topic])
    dlq_producer = make_producer(settings.ferry)
    loop = build_consumer_loop(
        settings,
        service.deployed,
        service.input_drift.windows,
        consumer=consumer,
        producer=dlq_producer,
        stop=stop,
        now_s=time.time(),
    )
    runtime = Runtime("monitor", stop=stop, shutdown_timeout_s=settings.shutdown_timeout_s)
    runtime.worker("scrape-evaluate", lambda: monitor.run(stop, settings.scrape_interval_s))
    if settings.publishes_own_alerts:
        runtime.worker("delivery", lambda: service.dispatcher.run(stop))
    runtime.worker("consumer-loop", loop.run)
    runtime.probe("consumer", loop.joined.is_set)
    runtime.on_close(lambda: dlq_producer.close(timeout=10))
    _production(settings, service, runtime, dlq_producer)
    runtime.on_close(service.close)
    runtime.serve(create_app(service.api_deps(), runtime), settings.host, settings.port)
    return runtime


def _production(settings: MonitorSettings, service: MonitorService, runtime: Runtime, producer: Any) -> None:
    """Inference logs and feedback, in one group all replicas share. The range assignor gives partition p of
    both topics (each keyed by model name, with as many partitions) to the same replica: the one that sees a
    model's logs sees its feedback. Add a handler table beside the online accuracy's to read them too."""
    consumer = make_consumer(
        settings.ferry,
        settings.production_group,
        [InferenceLogged.topic, InferenceFeedback.topic],
        partition_assignment_strategy=(RangePartitionAssignor,),
    )
    handlers = online_accuracy_handlers(service.online_view.online, time.monotonic)
    loop = build_production_loop(settings, handlers, consumer=consumer, producer=producer, stop=service.stop)
    runtime.worker("production-loop", loop.run)
    runtime.probe("production-consumer", loop.joined.is_set)
    runtime.worker("online-accuracy", lambda: service.online_view.run(service.stop, settings.scrape_interval_s))


def _dispatcher(settings: MonitorSettings, publisher: Publisher, closers: list[Callable[[], Any]]) -> Dispatcher:
    """Kafka, then each webhook: a sink apiece, with deliveries counted by sink and outcome."""
    sinks: list[Sink] = [KafkaSink(publisher)]
    for url in settings.resolved_webhook_urls:
        sinks.append(_closing(WebhookSink(url, external_url=settings.resolved_external_url), closers))
    deliveries = metrics.get_meter("ferry.monitor").create_counter(
        "ferry.monitor.deliveries", unit="1", description="alert deliveries by sink and outcome"
    )
    return Dispatcher(
        sinks,
        max_pending=settings.max_pending_deliveries,
        on_outcome=lambda sink, outcome: deliveries.add(1, {"sink": sink, "outcome": outcome}),
    )


T = TypeVar("T")


def _closing(adapter: T, closers: list[Callable[[], Any]]) -> T:
    """Remember the adapter's ``close`` for the service's shutdown; returns the adapter."""
    closers.append(adapter.close)  # type: ignore[attr-defined]
    return adapter


def register_gauges(monitor: Monitor) -> None:
    """The monitor's own gauges: drift per version, the drift references (Prometheus's drift rule reads
    them), the alerts by rule and state, the size of the window and each target's health."""
    meter = metrics.get_meter("ferry.monitor")

    def psi(_: CallbackOptions) -> list[Observation]:
        return [Observation(v, {"model": m, "version": ver}) for (m, ver), v in monitor.drift_values().items()]

    def reference(_: CallbackOptions) -> list[Observation]:
        return [
            Observation(share, {"model": m, "version": ver, "class": cls})
            for (m, ver), shares in monitor.references().items()
            for cls, share in shares.items()
        ]

    def alerts(_: CallbackOptions) -> list[Observation]:
        counts: dict[tuple[str, str], int] = {}
        for alert in monitor.active_alerts():
            counts[(alert.rule, alert.state)] = counts.get((alert.rule, alert.state), 0) + 1
        return [Observation(n, {"rule": rule, "state": state}) for (rule, state), n in counts.items()]

    def series(_: CallbackOptions) -> list[Observation]:
        return [Observation(len(monitor.store))]

    def leader(_: CallbackOptions) -> list[Observation]:
        return [Observation(1 if monitor.leading else 0)]

    meter.create_observable_gauge(
        "ferry.monitor.drift.psi",
        [psi],
        unit="1",
        description="population stability index of each version's predictions",
    )
    meter.create_observable_gauge(
        "ferry.monitor.drift.reference",
        [reference],
        unit="1",
        description="reference share of each class, from the evaluation report",
    )
    meter.create_observable_gauge("ferry.monitor.alerts", [alerts], unit="1", description="active alerts")
    meter.create_observable_gauge("ferry.monitor.series", [series], unit="1", description="series in the window")
    meter.create_observable_gauge(
        "ferry.monitor.leader", [leader], unit="1", description="1 while this replica's alerts are the ones sent"
    )
