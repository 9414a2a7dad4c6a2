"""``python -m services.monitor``: scrape, evaluate and alert; serve the API; follow deployments.

Three threads beside the HTTP server: the scrape-and-evaluate cycle, the delivery of alerts (Kafka
and webhooks), and the consumer loop of ``deployment.changed``. SIGTERM stops the server, then the
threads; the dispatcher makes one last delivery attempt; a thread that dies stops the process.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn

from services.monitor.adapters.rules_file import RulesFileError
from services.monitor.bootstrap import bootstrap
from services.monitor.entrypoints.api import create_app
from services.monitor.entrypoints.consumer import build_consumer_loop
from services.monitor.settings import MonitorSettings
from shared.credentials import InvalidTokens
from shared.kafka import make_producer
from shared.telemetry import setup_telemetry

log = logging.getLogger("services.monitor")


def _guarded(
    target: Callable[[], None], server: uvicorn.Server, stop: threading.Event, failures: list[str]
) -> Callable[[], None]:
    """Run a worker; if it dies while the service should be running, bring the whole process down."""

    def run() -> None:
        name = threading.current_thread().name
        try:
            target()
        except BaseException:
            log.exception("%s crashed; stopping the monitor", name)
            failures.append(name)
            server.should_exit = True
            raise
        if not stop.is_set():
            log.error("%s ended unexpectedly; stopping the monitor", name)
            failures.append(name)
            server.should_exit = True

    return run


def _server(settings: MonitorSettings, app: Any) -> uvicorn.Server:
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        lifespan="off",
        timeout_graceful_shutdown=int(settings.shutdown_timeout_s),
    )
    return uvicorn.Server(config)


def main() -> int:
    settings = MonitorSettings()
    telemetry = setup_telemetry("monitor", log_level=settings.ferry.log_level)
    try:
        service = bootstrap(settings)
    except (RulesFileError, InvalidTokens) as error:
        log.error("refusing to start: %s", error)
        return 2
    monitor, stop = service.monitor, service.stop
    log.info(
        "monitor starting: %d rules, targets %s, webhooks %d",
        len(monitor.rules.rules),
        [f"{t.job}={t.url}" for t in monitor.targets],
        len(settings.resolved_webhook_urls),
    )
    dlq_producer = make_producer(settings.ferry)
    loop = build_consumer_loop(settings, service.deployed, producer=dlq_producer, stop=stop)
    server = _server(settings, create_app(service.api_deps()))

    def request_stop(signum: int, frame: FrameType | None) -> None:
        server.should_exit = True
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    failures: list[str] = []
    workers = [
        threading.Thread(target=_guarded(target, server, stop, failures), name=name, daemon=True)
        for name, target in (
            ("scrape-evaluate", lambda: monitor.run(stop, settings.scrape_interval_s)),
            ("delivery", lambda: service.dispatcher.run(stop)),
            ("consumer-loop", loop.run),
        )
    ]
    for worker in workers:
        worker.start()
    log.info("monitor serving on http://%s:%s", settings.host, settings.port)
    try:
        server.run()
    finally:
        stop.set()
        for worker in workers:
            worker.join(settings.shutdown_timeout_s)
        dlq_producer.close(timeout=10)
        service.close()
        telemetry.shutdown()
        log.info("monitor stopped")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
