"""``python -m services.registry``: migrate, then run the consumer loop, the outbox relay and the API.

SIGTERM or SIGINT stops the HTTP server, then the consumer loop and the relay (which makes one last
pass so that what was committed goes out), then closes the producers and the database pool.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

import uvicorn
from kafka import KafkaProducer

from services.registry.bootstrap import Registry, bootstrap, describe
from services.registry.entrypoints.api import create_app
from services.registry.entrypoints.consumer import build_consumer_loop
from services.registry.settings import RegistrySettings
from shared.telemetry import setup_telemetry

log = logging.getLogger("services.registry")


def _guarded(target: Callable[[], None], server: uvicorn.Server, stop: threading.Event) -> Callable[[], None]:
    """Run a worker; if it dies while the service should be running, bring the whole process down."""

    def run() -> None:
        try:
            target()
        except BaseException:
            log.exception("%s crashed; stopping the registry", threading.current_thread().name)
            server.should_exit = True
            raise
        if not stop.is_set():
            log.error("%s ended unexpectedly; stopping the registry", threading.current_thread().name)
            server.should_exit = True

    return run


def main() -> int:
    """Run the registry until SIGTERM; returns the exit status."""
    settings = RegistrySettings()
    telemetry = setup_telemetry("registry", log_level=settings.ferry.log_level)
    log.info("registry starting: %s", describe(settings))
    registry = bootstrap(settings)
    loop, dlq_producer = build_consumer_loop(registry)
    app = create_app(settings, registry.api_deps())
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None, access_log=False,
                            lifespan="off", timeout_graceful_shutdown=int(settings.shutdown_timeout_s))  # fmt: skip
    server = uvicorn.Server(config)

    def request_stop(signum: int, frame: FrameType | None) -> None:
        server.should_exit = True
        registry.stop.set()

    # uvicorn swaps in its own handlers while serving and re-raises the signal after: ours then runs.
    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    workers = [
        threading.Thread(target=_guarded(loop.run, server, registry.stop), name="consumer-loop", daemon=True),
        threading.Thread(target=_guarded(registry.relay.run, server, registry.stop), name="outbox-relay", daemon=True),
    ]
    for worker in workers:
        worker.start()
    log.info("registry serving on http://%s:%s (OpenAPI at /docs)", settings.host, settings.port)
    try:
        server.run()
    finally:
        _shutdown(registry, workers, dlq_producer, settings.shutdown_timeout_s)
        telemetry.shutdown()
    return 0


def _shutdown(
    registry: Registry, workers: list[threading.Thread], dlq_producer: KafkaProducer, timeout_s: float
) -> None:
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


if __name__ == "__main__":
    sys.exit(main())
