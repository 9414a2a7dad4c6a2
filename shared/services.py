"""Ferry's service processes as the supervisor, ``ferry status`` and the monitor see them.

Each service runs as ``python -m services.<name>``, stops cleanly on SIGTERM, and answers HTTP on its
port (its API, and in every service ``/healthz``, ``/readyz`` and ``/metrics``). The port comes from the
service's own environment variable, so one variable moves a service and everything that talks to it.
``shared`` names services here by string only: it never imports their code.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class ServiceSpec:
    """One service process: how to start it and where it answers."""

    name: str
    port_env: str
    default_port: int
    health_path: str
    """Answers 200 while the process is healthy (liveness, not readiness)."""
    metrics_path: str = "/metrics"

    @property
    def module(self) -> str:
        return f"services.{self.name}"

    @property
    def port(self) -> int:
        return int(os.environ.get(self.port_env, self.default_port))

    def url(self, path: str = "", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def installed(self) -> bool:
        """True when ``python -m services.<name>`` exists in this installation."""
        try:
            return importlib.util.find_spec(f"{self.module}.__main__") is not None
        except ModuleNotFoundError:
            return False


# In start order: the registry first (the others read it at start), the gateway before the monitor, the
# console (which only reads the others) last.
SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec("registry", "FERRY_REGISTRY_PORT", 8081, "/healthz"),
    ServiceSpec("trainer", "FERRY_TRAINER_METRICS_PORT", 8083, "/healthz"),
    ServiceSpec("evaluator", "FERRY_EVALUATOR_PORT", 8084, "/healthz"),
    ServiceSpec("gateway", "FERRY_GATEWAY_PORT", 8080, "/v2/health/live"),
    ServiceSpec("monitor", "FERRY_MONITOR_PORT", 8082, "/healthz"),
    ServiceSpec("console", "FERRY_CONSOLE_PORT", 8085, "/healthz"),
)


def installed_services() -> list[ServiceSpec]:
    """The services of :data:`SERVICES` that this installation can run."""
    return [spec for spec in SERVICES if spec.installed()]


def service(name: str) -> ServiceSpec:
    for spec in SERVICES:
        if spec.name == name:
            return spec
    raise KeyError(f"no service named {name!r}")
