"""The trainer's small HTTP face: the runtime's /healthz, /readyz and /metrics, and nothing else."""

from __future__ import annotations

from fastapi import FastAPI

from shared.runtime import Runtime


def create_app(runtime: Runtime | None = None) -> FastAPI:
    """404 on every other path (no OpenAPI pages: the trainer's API is Kafka)."""
    runtime = runtime or Runtime("trainer")
    app = FastAPI(title="Ferry trainer", docs_url=None, redoc_url=None, openapi_url=None, lifespan=runtime.lifespan)
    runtime.add_routes(app)
    return app
