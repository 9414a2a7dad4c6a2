"""The one place that wires the registry: engine, sessions, outbox relay, artifact store, API tokens
(``bootstrap``), and what the process runtime runs: consumer loop, relay, API (``process``)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from opentelemetry import metrics
from opentelemetry.metrics import Observation
from pydantic_core import from_json
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker
from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_exponential_jitter

from services.registry.adapters import schema
from services.registry.adapters.outbox import OutboxRelay, Sender
from services.registry.adapters.repository import SqlUnitOfWork
from services.registry.entrypoints.api import ApiDeps, create_app
from services.registry.entrypoints.consumer import TOPICS, build_consumer_loop
from services.registry.settings import RegistrySettings
from shared.artifacts import ArtifactStore
from shared.kafka import ConsumerLoop, RetryPolicy, kafka_answers, make_consumer, make_producer
from shared.runtime import Runtime

log = logging.getLogger("services.registry")

SOURCE = "ferry.registry"


@dataclass
class Registry:
    """The registry's wired parts; ``stop`` ends the relay and the consumer loop."""

    settings: RegistrySettings
    engine: Engine
    session_factory: sessionmaker[Session]
    read_session_factory: sessionmaker[Session]
    sender: Sender
    relay: OutboxRelay
    artifacts: ArtifactStore
    tokens: dict[str, str]
    stop: threading.Event = field(default_factory=threading.Event)

    def uow(self) -> SqlUnitOfWork:
        """A fresh unit of work; its commit wakes the relay."""
        return SqlUnitOfWork(self.session_factory, after_commit=self.relay.wake)

    def api_deps(self) -> ApiDeps:
        """What create_app needs, with readiness probes of the database and the broker."""
        return ApiDeps(
            read_sessions=self.read_session_factory,
            uow_factory=self.uow,
            artifacts=self.artifacts,
            readiness={"database": self.database_answers, "broker": self.broker_answers},
            tokens=self.tokens,
        )

    def database_answers(self) -> bool:
        with self.engine.connect() as connection:
            return connection.scalar(text("SELECT 1")) == 1

    def broker_answers(self) -> bool:
        return kafka_answers(self.settings.ferry)

    def final_relay_pass(self) -> None:
        """What was committed before the stop goes out now, not at the next start."""
        try:
            self.relay.relay_once()
        except Exception as error:  # noqa: BLE001 - it stays in the outbox and goes out after the restart
            log.warning("final outbox pass failed; rows stay pending until the next start: %s", error)

    def close(self) -> None:
        """Give up the relay's lock, release the outbox producer and the database pool."""
        self.relay.close()
        closer = getattr(self.sender, "close", None)
        if callable(closer):
            closer(timeout=10)
        self.engine.dispose()


def make_engine(settings: RegistrySettings) -> Engine:
    """The SQLAlchemy engine: psycopg 3, strict JSON out (no NaN into jsonb), pydantic-core's parser in.

    No pre-ping: a connection that died surfaces as OperationalError, which the consumer retries and
    the API answers with 503, and SQLAlchemy then discards the pool's stale connections.
    """
    return create_engine(
        settings.ferry.resolved_database_url,
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        pool_recycle=1800,
        pool_use_lifo=True,
        pool_timeout=10,
        json_serializer=lambda value: json.dumps(value, allow_nan=False),
        json_deserializer=from_json,
    )


def wait_for_database(engine: Engine, timeout_s: float = 60.0) -> None:
    """Return once the database answers; raise its last error after ``timeout_s``."""

    def answer() -> None:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))

    retrying = Retrying(
        retry=retry_if_exception_type((OperationalError, InterfaceError)),
        wait=wait_exponential_jitter(multiplier=0.2, max=2.0, jitter=0.2),
        stop=stop_after_delay(timeout_s),
        before_sleep=lambda state: log.warning(
            "database not reachable yet, retrying: %s", state.outcome and state.outcome.exception()
        ),
        reraise=True,
    )
    retrying(answer)


def bootstrap(
    settings: RegistrySettings,
    *,
    engine: Engine | None = None,
    sender: Sender | None = None,
    artifacts: ArtifactStore | None = None,
    migrate: bool | None = None,
) -> Registry:
    """Build the registry; tests pass their own engine, sender or store. Migrates unless told not to.

    Raises InvalidApiTokens (before touching anything) when a configured token is empty or a placeholder.
    """
    tokens = settings.api_tokens()
    engine = engine or make_engine(settings)
    if settings.migrate_on_start if migrate is None else migrate:
        wait_for_database(engine)
        schema.upgrade(engine)
    session_factory = sessionmaker(engine, expire_on_commit=False)
    # Reads run without BEGIN/ROLLBACK round trips: each query sees the latest committed state.
    read_session_factory = sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"))
    sender = sender or make_outbox_producer(settings)
    stop = threading.Event()
    relay = OutboxRelay(
        engine,
        sender,
        topic=settings.ferry.topic,
        source=SOURCE,
        batch_size=settings.relay_batch_size,
        idle_s=settings.relay_idle_s,
        retention=timedelta(hours=settings.outbox_retention_hours),
        stop=stop,
    )
    _register_outbox_gauges(relay)
    store = artifacts or ArtifactStore.from_settings(settings.ferry)
    return Registry(settings, engine, session_factory, read_session_factory, sender, relay, store, tokens, stop)


def consumer_loop(
    registry: Registry,
    *,
    consumer: KafkaConsumer | None = None,
    dlq_producer: KafkaProducer | None = None,
    retry: RetryPolicy | None = None,
) -> tuple[ConsumerLoop, KafkaProducer]:
    """The consumer loop of group ``registry``, and its DLQ producer for the caller to close; tests may
    pass their own consumer, producer or retry policy."""
    settings = registry.settings
    session_timeout_ms = settings.consumer_session_timeout_ms or settings.ferry.kafka_session_timeout_ms
    consumer = consumer or make_consumer(
        settings.ferry,
        settings.consumer_group,
        TOPICS,
        session_timeout_ms=session_timeout_ms,
        heartbeat_interval_ms=max(300, session_timeout_ms // 3),
    )
    dlq_producer = dlq_producer or make_producer(settings.ferry, client_id="ferry-registry-dlq")
    return build_consumer_loop(registry, consumer=consumer, dlq_producer=dlq_producer, retry=retry), dlq_producer


def make_outbox_producer(settings: RegistrySettings) -> Sender:
    """The relay's producer: acks=all, no linger (the relay waits for each wave's acks), and not idempotent.

    kafka-python 3.0 turns any non-retriable batch error of an idempotent producer (a record too large for
    its topic, say) into a fatal state in which every later send fails, so one undeliverable row would stop
    the outbox. The relay needs no idempotence: it keeps each model's order itself (one row of a key in
    flight), and a record a retry sends twice carries the same event id, which consumers dedupe on.
    """
    return make_producer(settings.ferry, linger_ms=0, enable_idempotence=False, client_id="ferry-registry-outbox")


def _register_outbox_gauges(relay: OutboxRelay) -> None:
    meter = metrics.get_meter("ferry.registry")

    def gauge(name: str, unit: str, description: str, read: Callable[[], float]) -> None:
        meter.create_observable_gauge(name, [lambda _: [Observation(read())]], unit=unit, description=description)

    gauge("ferry.registry.outbox.pending", "1", "outbox rows not yet published", lambda: relay.pending)
    gauge("ferry.registry.outbox.lag", "s", "age of the oldest unpublished outbox row", lambda: relay.lag_s)
    gauge("ferry.registry.outbox.failed", "1", "outbox rows parked as undeliverable", lambda: relay.failed)


def describe(settings: RegistrySettings, tokens: dict[str, str]) -> dict[str, Any]:
    """The settings worth logging at start-up (the users that may write, never their tokens)."""
    return {
        "port": settings.port,
        "host": settings.host,
        "kafka": settings.ferry.kafka_bootstrap,
        "topic_prefix": settings.ferry.topic_prefix,
        "writers": sorted(set(tokens.values())),
        "artifact_root": settings.ferry.resolved_artifact_root,
    }


def process(settings: RegistrySettings) -> Runtime:
    """The registry process for the runtime: migrate, then the consumer loop, the outbox relay and the API.

    At a stop, the relay makes one last pass (what was committed goes out now, not at the next start),
    then the producers and the database pool are closed. Raises InvalidApiTokens on a placeholder token.
    """
    registry = bootstrap(settings)
    log.info("registry starting: %s", describe(settings, registry.tokens))
    loop, dlq_producer = consumer_loop(registry)
    runtime = Runtime("registry", stop=registry.stop, shutdown_timeout_s=settings.shutdown_timeout_s)
    runtime.worker("consumer-loop", loop.run)
    runtime.worker("outbox-relay", registry.relay.run)
    runtime.on_close(registry.final_relay_pass)
    runtime.on_close(lambda: dlq_producer.close(timeout=10))
    runtime.on_close(registry.close)
    runtime.serve(create_app(settings, registry.api_deps(), runtime), settings.host, settings.port)
    return runtime
