"""The one place that builds the registry's real adapters: engine, sessions, publisher, relay, store."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Observation
from pydantic_core import from_json
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from services.registry.adapters import schema
from services.registry.adapters.outbox import OutboxRelay
from services.registry.adapters.repository import SqlUnitOfWork
from services.registry.entrypoints.api import ApiDeps
from services.registry.settings import RegistrySettings
from shared.artifacts import ArtifactStore
from shared.kafka import KafkaPublisher, Publisher, make_producer
from shared.stack import kafka_answers

log = logging.getLogger(__name__)

SOURCE = "ferry.registry"


@dataclass
class Registry:
    """The registry's wired parts; ``stop`` ends the relay and the consumer loop."""

    settings: RegistrySettings
    engine: Engine
    session_factory: sessionmaker[Session]
    read_session_factory: sessionmaker[Session]
    publisher: Publisher
    relay: OutboxRelay
    artifacts: ArtifactStore
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
        )

    def database_answers(self) -> bool:
        with self.engine.connect() as connection:
            return connection.scalar(text("SELECT 1")) == 1

    def broker_answers(self) -> bool:
        return kafka_answers(self.settings.ferry.kafka_bootstrap)

    def close(self) -> None:
        """Release the publisher's producer and the database pool."""
        closer = getattr(self.publisher, "close", None)
        if callable(closer):
            closer()
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
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with engine.connect() as connection:
                connection.execute(text("SELECT 1"))
            return
        except (OperationalError, InterfaceError) as error:
            if time.monotonic() > deadline:
                raise
            log.warning("database not reachable yet, retrying: %s", error.orig)
            time.sleep(1.0)


def bootstrap(
    settings: RegistrySettings,
    *,
    engine: Engine | None = None,
    publisher: Publisher | None = None,
    artifacts: ArtifactStore | None = None,
    migrate: bool | None = None,
) -> Registry:
    """Build the registry; tests pass their own engine, publisher or store. Migrates unless told not to."""
    engine = engine or make_engine(settings)
    if settings.migrate_on_start if migrate is None else migrate:
        wait_for_database(engine)
        schema.upgrade(engine)
    session_factory = sessionmaker(engine, expire_on_commit=False)
    # Reads run without BEGIN/ROLLBACK round trips: each query sees the latest committed state.
    read_session_factory = sessionmaker(engine.execution_options(isolation_level="AUTOCOMMIT"))
    if publisher is None:
        # linger_ms=0: the relay waits for each ack, so batching delay would only add latency.
        producer = make_producer(settings.ferry, linger_ms=0, client_id="ferry-registry-outbox")
        publisher = KafkaPublisher(settings.ferry, source=SOURCE, producer=producer)
    stop = threading.Event()
    relay = OutboxRelay(
        session_factory, publisher, batch_size=settings.relay_batch_size, idle_s=settings.relay_idle_s,
        retention=timedelta(hours=settings.outbox_retention_hours), stop=stop,
    )  # fmt: skip
    _register_outbox_gauges(relay)
    store = artifacts or ArtifactStore(settings.ferry.resolved_artifact_root)
    return Registry(settings, engine, session_factory, read_session_factory, publisher, relay, store, stop)


def _register_outbox_gauges(relay: OutboxRelay) -> None:
    meter = metrics.get_meter("ferry.registry")

    def pending(_: CallbackOptions) -> list[Observation]:
        return [Observation(relay.pending)]

    def lag(_: CallbackOptions) -> list[Observation]:
        return [Observation(relay.lag_s)]

    meter.create_observable_gauge("ferry.registry.outbox.pending", [pending], unit="1",
                                  description="outbox rows not yet published")  # fmt: skip
    meter.create_observable_gauge("ferry.registry.outbox.lag", [lag], unit="s",
                                  description="age of the oldest unpublished outbox row")  # fmt: skip


def describe(settings: RegistrySettings) -> dict[str, Any]:
    """The settings worth logging at start-up (never the token)."""
    return {
        "port": settings.port, "host": settings.host, "kafka": settings.ferry.kafka_bootstrap,
        "topic_prefix": settings.ferry.topic_prefix, "writes_enabled": settings.token is not None,
        "artifact_root": settings.ferry.resolved_artifact_root,
    }  # fmt: skip
