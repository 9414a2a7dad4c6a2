"""``python -m services.gateway``: serve OIP v2 on ``FERRY_GATEWAY_PORT``, following every deployment.

With ``FERRY_GATEWAY_WORKERS`` above 1, uvicorn runs that many processes on the one port; each builds
its own gateway (its own consumer group, its own sessions) and serves the same answer for a route key.
SIGTERM stops the server, the consumer loop and the sessions; the exit status is non-zero when the
consumer loop died.
"""

from __future__ import annotations

import gc
import logging
import signal
import sys
from typing import Any

import uvicorn

from services.gateway.bootstrap import Gateway, bootstrap
from services.gateway.entrypoints.api import GatewayApp, create_app
from services.gateway.settings import GatewaySettings
from shared.telemetry import setup_telemetry

log = logging.getLogger("services.gateway")
_built: list[Gateway] = []


def app_factory() -> GatewayApp:
    """One worker's app (uvicorn calls this in each worker process)."""
    settings = GatewaySettings()
    setup_telemetry("gateway", log_level=settings.ferry.log_level)
    gateway = bootstrap(settings)
    _built.append(gateway)
    app = create_app(gateway)
    # What start-up allocated lives as long as the process: keep it out of every garbage collection,
    # whose full passes would otherwise walk it again and again under load (tail latency).
    gc.freeze()
    return app


def main() -> int:
    settings = GatewaySettings()
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "log_config": None,
        "access_log": False,
        "lifespan": "on",
        "http": "httptools",
        "loop": "uvloop",
        "backlog": 4096,
        "timeout_graceful_shutdown": int(settings.shutdown_timeout_s),
    }
    # uvicorn handles SIGTERM while serving and raises it again once it has stopped: by then this no-op
    # is the handler, so the process returns its own exit status instead of dying of the signal.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda signum, frame: None)
    if settings.workers > 1:
        setup_telemetry("gateway", log_level=settings.ferry.log_level)
        log.info("gateway starting %d workers on http://%s:%s", settings.workers, settings.host, settings.port)
        uvicorn.run("services.gateway.__main__:app_factory", factory=True, workers=settings.workers, **options)
        return 0
    app = app_factory()
    log.info("gateway serving on http://%s:%s (OpenAPI at /docs)", settings.host, settings.port)
    uvicorn.Server(uvicorn.Config(app, **options)).run()
    return 1 if _built and _built[0].failed else 0


if __name__ == "__main__":
    sys.exit(main())
