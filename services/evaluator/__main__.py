"""``python -m services.evaluator``: the evaluator process.

Runs the consumer loop (group ``evaluator``: ``model.registered`` and ``alert``) and the bake thread,
and serves /healthz, /readyz, /metrics and /api/v1/bakes. SIGTERM or SIGINT stops it cleanly; it exits
non-zero when a worker dies.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType

import uvicorn

from services.evaluator.bootstrap import bootstrap
from services.evaluator.entrypoints.api import create_app
from services.evaluator.settings import EvaluatorSettings
from shared.telemetry import setup_telemetry
from shared.topics import ensure_topics

log = logging.getLogger("services.evaluator")


def main() -> int:
    """Run the evaluator until SIGTERM; returns the exit status."""
    settings = EvaluatorSettings()
    telemetry = setup_telemetry("evaluator", log_level=settings.ferry.log_level)
    ensure_topics(settings.ferry)
    service = bootstrap(settings)
    failed = threading.Event()
    server: uvicorn.Server | None = None

    def guarded(target: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                target()
            except BaseException:
                log.exception("%s crashed; stopping the evaluator", threading.current_thread().name)
                failed.set()
            if not service.stop_event.is_set():
                log.error("%s ended unexpectedly; stopping the evaluator", threading.current_thread().name)
                failed.set()
            service.stop()
            if server is not None:
                server.should_exit = True

        return run

    workers = [
        threading.Thread(target=guarded(service.loop.run), name="consumer-loop", daemon=True),
        threading.Thread(target=guarded(service.bakes.run), name="bakes", daemon=True),
    ]

    def request_stop(signum: int, frame: FrameType | None) -> None:
        service.stop()
        if server is not None:
            server.should_exit = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    for worker in workers:
        worker.start()
    log.info(
        "evaluator consuming %s and %s (group %s); registry %s",
        settings.ferry.topic("model.registered"),
        settings.ferry.topic("alert"),
        settings.consumer_group,
        settings.registry_url,
    )
    try:
        if settings.port:
            app = create_app(
                service.deps.bakes,
                alive=lambda: all(worker.is_alive() for worker in workers),
                ready=service.bakes.resynced.is_set,
                clock=service.deps.clock,
            )
            config = uvicorn.Config(
                app, host=settings.host, port=settings.port, log_config=None, access_log=False, lifespan="off"
            )
            server = uvicorn.Server(config)
            server.run()  # uvicorn re-raises SIGTERM/SIGINT after serving: request_stop then runs
            service.stop()
        else:
            service.stop_event.wait()
    finally:
        service.stop()
        for worker in workers:
            worker.join(30)
        service.close()
        telemetry.shutdown()
    return 1 if failed.is_set() else 0


if __name__ == "__main__":
    sys.exit(main())
