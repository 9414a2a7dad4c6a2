"""``python -m services.gateway``: serve OIP v2 on ``FERRY_GATEWAY_PORT``, following every deployment.

One process by default, run by the process runtime (shared/runtime.py) as ``bootstrap.process`` wires it.
With ``FERRY_GATEWAY_WORKERS`` above 1, uvicorn runs that many processes on the one port and calls
:func:`app_factory` in each: each builds its own gateway (its own consumer group, its own sessions, its
own runtime) and serves the same answer for a route key; a worker whose runtime fails stops its process.
"""

from __future__ import annotations

import sys

from services.gateway.bootstrap import SERVER_OPTIONS, build_app, process
from services.gateway.entrypoints.api import GatewayApp
from services.gateway.settings import GatewaySettings
from shared.runtime import run, run_processes, stop_this_process
from shared.service_args import parse_service_args
from shared.telemetry import setup_telemetry


def app_factory() -> GatewayApp:
    """One worker process's app (uvicorn calls this in each)."""
    settings = GatewaySettings()
    telemetry = setup_telemetry("gateway", log_level=settings.ferry.log_level)
    gateway, app = build_app(settings)
    gateway.runtime.on_failure = stop_this_process
    gateway.runtime.on_close(telemetry.shutdown)
    return app


def main() -> int:
    parse_service_args("gateway", __doc__, GatewaySettings, sys.argv[1:])
    settings = GatewaySettings()
    if settings.workers > 1:
        return run_processes(
            "gateway",
            "services.gateway.__main__:app_factory",
            workers=settings.workers,
            host=settings.host,
            port=settings.port,
            log_level=settings.ferry.log_level,
            timeout_graceful_shutdown=int(settings.shutdown_timeout_s),
            **SERVER_OPTIONS,
        )
    return run("gateway", lambda: process(settings), log_level=settings.ferry.log_level)


if __name__ == "__main__":
    sys.exit(main())
