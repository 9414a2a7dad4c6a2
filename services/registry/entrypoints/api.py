"""The registry's HTTP face: create_app(settings, deps) builds the FastAPI app. Routes live in routes.py."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.orm import Session, sessionmaker
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.registry.adapters.repository import UnitOfWork
from services.registry.domain import (
    AliasNotFound,
    DecisionNotApplicable,
    InvalidEdit,
    ModelNotFound,
    RegistryError,
    VersionInUse,
    VersionNotFound,
)
from services.registry.entrypoints.routes import models_router
from services.registry.entrypoints.schemas import InvalidCursor
from services.registry.settings import RegistrySettings
from shared.artifacts import ArtifactStore
from shared.errors import PermanentError, TransientError
from shared.runtime import Runtime

log = logging.getLogger(__name__)

DESCRIPTION = """Ferry's system of record: models, versions, evaluations, deployments and their history.

Reads are open. Writes (`POST /api/v1/models/{name}/deployment`, the PATCH of a model or a version,
`POST …/versions/{v}/archive`, and the upload `POST /api/v1/models/{name}/versions`) need
`Authorization: Bearer <token>`, a token of FERRY_REGISTRY_TOKENS_FILE (or FERRY_API_TOKEN, user `admin`);
the token's user is the actor in the history.
Errors are JSON: `{"error": "..."}`."""


@dataclass
class ApiDeps:
    """What the API needs from the outside, built by bootstrap (or by a test)."""

    read_sessions: sessionmaker[Session]
    uow_factory: Callable[[], UnitOfWork]
    artifacts: ArtifactStore
    readiness: Mapping[str, Callable[[], bool]] = field(default_factory=dict)
    tokens: Mapping[str, str] = field(default_factory=dict)
    """Bearer token → user (settings.api_tokens()); writes are refused while it is empty."""


def create_app(settings: RegistrySettings, deps: ApiDeps, runtime: Runtime | None = None) -> FastAPI:
    """The FastAPI application: /api/v1 routes, /healthz, /readyz, /metrics, OpenAPI at /docs.

    ``runtime`` (the process's, from bootstrap; a bare one for a test) runs the workers in the app's
    lifespan and answers the operations routes, with ``deps.readiness`` as its probes.

    OpenTelemetry's FastAPI instrumentation joins each request to its caller's trace (``traceparent``) and
    records ``http.server.duration`` by route template (``http_server_duration_milliseconds`` on /metrics).
    """
    runtime = runtime or Runtime("registry")
    for name, probe in deps.readiness.items():
        runtime.probe(name, probe)
    app = FastAPI(title="Ferry registry", version="1.0.0", description=DESCRIPTION, lifespan=runtime.lifespan)
    _install_error_handlers(app)
    app.include_router(models_router(settings, deps), prefix="/api/v1")
    runtime.add_routes(app)
    FastAPIInstrumentor.instrument_app(app, excluded_urls="/metrics,/healthz,/readyz")
    return app


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": message, **extra})


DOMAIN_STATUS: dict[type[RegistryError], int] = {
    ModelNotFound: 404,
    VersionNotFound: 404,
    AliasNotFound: 404,
    DecisionNotApplicable: 409,
    VersionInUse: 409,
}


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        return JSONResponse(
            status_code=error.status_code, content={"error": str(error.detail)}, headers=getattr(error, "headers", None)
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> Response:
        problems = jsonable_encoder(error.errors(), custom_encoder={bytes: lambda raw: raw.decode(errors="replace")})
        summary = "; ".join(f"{'.'.join(str(part) for part in p.get('loc', ()))}: {p.get('msg')}" for p in problems)
        return _error(422, f"invalid request: {summary}"[:2000], detail=problems)

    @app.exception_handler(RegistryError)
    async def domain_error(request: Request, error: RegistryError) -> Response:
        if isinstance(error, InvalidEdit):
            return _error(422, str(error), detail=[{"loc": ["body", error.field], "msg": str(error)}])
        return _error(DOMAIN_STATUS.get(type(error), 409), str(error))

    @app.exception_handler(InvalidCursor)
    async def invalid_cursor(request: Request, error: InvalidCursor) -> Response:
        return _error(422, str(error), detail=[{"loc": ["query", "cursor"], "msg": str(error)}])

    @app.exception_handler(PermanentError)
    async def contradiction(request: Request, error: PermanentError) -> Response:
        return _error(409, str(error))

    async def unavailable(request: Request, error: Exception) -> Response:
        log.warning("database unavailable while serving %s: %s", request.url.path, error)
        return _error(503, "the registry's database is unavailable; retry later")

    for kind in (OperationalError, InterfaceError, PoolTimeout, TransientError):
        app.add_exception_handler(kind, unavailable)
