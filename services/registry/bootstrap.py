"""The one place that wires the registry: engine, sessions, outbox relay, artifact store, API tokens
(``bootstrap``), and the process around them: consumer loop, API server, threads, signals (``run``)."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from types import FrameType
from typing import Any

import uvicorn
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
from services.registry.entrypoints.consumer import build_consumer_loop
from services.registry.settings import InvalidApiTokens, RegistrySettings
from shared.artifacts import ArtifactStore
from shared.kafka import kafka_answers, make_producer
from shared.telemetry import setup_telemetry

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
        return kafka_answers(self.settings.ferry.kafka_bootstrap)

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


def run(settings: RegistrySettings) -> int:
    """The registry process: migrate, then the consumer loop, the outbox relay and the API until SIGTERM.

    SIGTERM or SIGINT stops the HTTP server, then the consumer loop and the relay (which makes one last
    pass, so that what was committed goes out), then closes the producers and the database pool. Exits
    2 on unusable settings (a placeholder token), 1 when a worker thread died, 0 after a clean stop.
    """
    telemetry = setup_telemetry("registry", log_level=settings.ferry.log_level)
    try:
        registry = bootstrap(settings)
    except InvalidApiTokens as error:
        log.error("refusing to start: %s", error)
        print(f"ferry registry: refusing to start: {error}", file=sys.stderr)
        telemetry.shutdown()
        return 2
    log.info("registry starting: %s", describe(settings, registry.tokens))
    loop, dlq_producer = build_consumer_loop(registry)
    app = create_app(settings, registry.api_deps())
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s),
    )
    server = uvicorn.Server(config)
    crashed = threading.Event()

    def request_stop(signum: int, frame: FrameType | None) -> None:
        server.should_exit = True
        registry.stop.set()

    # uvicorn swaps in its own handlers while serving and re-raises the signal after: ours then runs.
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    workers = [
        threading.Thread(target=_guarded(loop.run, server, registry.stop, crashed), name="consumer-loop", daemon=True),
        threading.Thread(
            target=_guarded(registry.relay.run, server, registry.stop, crashed), name="outbox-relay", daemon=True
        ),
    ]
    for worker in workers:
        worker.start()
    log.info("registry serving on http://%s:%s (OpenAPI at /docs)", settings.host, settings.port)
    try:
        server.run()
    finally:
        _shutdown(registry, workers, dlq_producer, settings.shutdown_timeout_s)
        telemetry.shutdown()
    return 1 if crashed.is_set() else 0


def _guarded(
    target: Callable[[], None], server: uvicorn.Server, stop: threading.Event, crashed: threading.Event
) -> Callable[[], None]:
    """Run a worker; if it dies while the service should be running, bring the whole process down (non-zero)."""

    def run_worker() -> None:
        try:
            target()
        except BaseException:
            log.exception("%s crashed; stopping the registry", threading.current_thread().name)
            crashed.set()
            server.should_exit = True
            raise
        if not stop.is_set():
            log.error("%s ended unexpectedly; stopping the registry", threading.current_thread().name)
            crashed.set()
            server.should_exit = True

    return run_worker


def _shutdown(registry: Registry, workers: list[threading.Thread], dlq_producer: Any, timeout_s: float) -> None:
    registry.stop.set()
    for worker in workers:
        worker.join(timeout_s)
    try:
        registry.relay.relay_once()  # what was committed before the stop goes out now, not at the next start
    except Exception as error:  # noqa: BLE001 - it stays in the outbox and goes out after the restart
        log.warning("final outbox pass failed; rows stay pending until the next start: %s", error)
    dlq_producer.close(timeout=10)
    registry.close()
    log.info("registry stopped")
