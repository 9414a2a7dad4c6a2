"""The console's app: its pages, the actions the pages' script calls, the replay API and the training stream.

Actions carry the operator's bearer token, which the console forwards to the registry unchanged; the
registry's refusal (401, 403, 409, ...) comes back with its own message. The replay API checks the token
against the registry's tokens file itself, since the registry has no replay of its own to forward to.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.console.adapters.runs import LiveRuns
from services.console.domain import NotFound, SourceDown
from services.console.entrypoints import web
from services.console.entrypoints.pages import page_router
from services.console.service import Console
from shared.credentials import TokenCheck
from shared.dead_letters import DeadLetterError, Operator, UnknownTopic, topic_of
from shared.http_auth import bearer_user
from shared.registry_errors import RegistryRefused
from shared.registry_models import DeploymentAction
from shared.runtime import Runtime
from shared.settings import FerrySettings

STREAM_WAIT_S = 2.0
STREAM_COALESCE_S = 0.25
STREAM_RUNS = 200


@dataclass
class ConsoleDeps:
    """What the app needs: the console over its sources, the live runs, who may replay, the topics."""

    console: Console
    runs: LiveRuns
    ferry: FerrySettings
    replay_tokens: Mapping[str, str] = field(default_factory=dict)
    """Token → user (the registry's tokens file); replays are refused while it is empty."""


class ReplayRequest(BaseModel):
    """Which dead letters of the topic to put back: one (``id``) or all since a time (``since``)."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(default=None, min_length=1, max_length=300, description="ce_id, or PARTITION:OFFSET")
    since: datetime | None = Field(default=None, description="every one dead-lettered at this time or later")
    dry_run: bool = Field(default=False, description="say what would be replayed, send nothing")

    @model_validator(mode="after")
    def _one_selector(self) -> ReplayRequest:
        if (self.id is None) == (self.since is None):
            raise ValueError("give exactly one of id and since")
        return self


def create_app(deps: ConsoleDeps, runtime: Runtime | None = None) -> FastAPI:
    """The console's ASGI app; ``runtime`` (the process's; a bare one for a test) runs its consumer loop."""
    runtime = runtime or Runtime("console")
    app = FastAPI(title="Ferry console", version="1.0.0", docs_url="/docs", lifespan=runtime.lifespan)
    runtime.add_routes(app)
    web.install(app)
    _install_error_handlers(app)
    app.include_router(page_router(deps.console, deps.runs, deps.ferry, web.templates()))
    _add_deployment_routes(app, deps.console)
    _add_replay_route(app, deps)
    _add_run_routes(app, deps.runs, runtime.stop_event.is_set)

    @app.get("/models", include_in_schema=False)
    def models_alias() -> Response:
        return RedirectResponse("/", status_code=308)

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return RedirectResponse("/static/favicon.svg", status_code=308)

    return app


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        return JSONResponse({"error": str(error.detail)}, status_code=error.status_code, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> Response:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return _error(422, f"{where}: {first.get('msg', 'invalid request')}")


def _bearer(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    return credentials.credentials if credentials is not None else None


BEARER = HTTPBearer(auto_error=False, description="the operator's token (a token of the registry's tokens file)")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(BEARER)]


def _add_deployment_routes(app: FastAPI, console: Console) -> None:
    @app.post("/api/models/{name}/deployment/preview", summary="What a deployment change would do, in words")
    def preview(name: str, action: Annotated[DeploymentAction, Body()]) -> Response:
        try:
            return JSONResponse({"consequence": console.preview(name, action)})
        except NotFound as error:
            return _error(404, str(error))
        except SourceDown as error:
            return _error(503, error.notice)

    @app.post("/api/models/{name}/deployment", summary="Change the deployment (forwarded to the registry)")
    def change(name: str, action: Annotated[DeploymentAction, Body()], credentials: Credentials) -> Response:
        try:
            changed = console.change(name, action, _bearer(credentials))
        except RegistryRefused as error:
            return _error(error.status, error.message)
        except NotFound as error:
            return _error(404, str(error))
        except SourceDown as error:
            return _error(503, error.notice)
        return JSONResponse(changed.model_dump(mode="json"))


def _add_replay_route(app: FastAPI, deps: ConsoleDeps) -> None:
    check = TokenCheck(deps.replay_tokens)

    def operator(credentials: Credentials) -> Operator:
        user = bearer_user(check, credentials, disabled="replays are disabled: set FERRY_REGISTRY_TOKENS_FILE")
        return Operator(user, credential="bearer")

    @app.post("/api/v1/dead-letters/{topic}/replay", summary="Put dead letters back on their topic (same event id)")
    def replay(topic: str, request: ReplayRequest, by: Operator = Depends(operator)) -> Response:  # noqa: B008
        # (a default, not Annotated: the dependency is this closure, which a string annotation cannot name)
        try:
            full = topic_of(deps.ferry, topic)
            since = request.since.replace(tzinfo=request.since.tzinfo or UTC) if request.since else None
            chosen = deps.console.replay(full, ident=request.id, since=since, dry_run=request.dry_run, operator=by)
        except UnknownTopic as error:
            return _error(404, str(error))
        except DeadLetterError as error:
            return _error(409, str(error))
        except SourceDown as error:
            return _error(503, error.notice)
        if not chosen:
            return _error(404, f"no dead letter of {full} matches")
        body = {"topic": full, "dry_run": request.dry_run, "by": by.user, "letters": [x.summary(200) for x in chosen]}
        return JSONResponse(body)


def _add_run_routes(app: FastAPI, runs: LiveRuns, stopping: Callable[[], bool]) -> None:
    @app.get("/api/runs", summary="Every training run the console has seen, newest first")
    def all_runs() -> dict[str, Any]:
        return runs.snapshot(STREAM_RUNS)

    @app.get("/api/runs/stream", summary="Server-sent events: the runs again at each change")
    async def stream(request: Request, once: bool = False) -> StreamingResponse:
        return StreamingResponse(
            _events(request, runs, stopping, once=once),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )


async def _events(request: Request, runs: LiveRuns, stopping: Callable[[], bool], *, once: bool) -> AsyncIterator[str]:
    """The board now, then again after each change (changes within a quarter second go as one)."""
    yield "retry: 3000\n\n"
    while True:
        snapshot = runs.snapshot(STREAM_RUNS)
        seen = snapshot["revision"]
        yield f"event: runs\ndata: {json.dumps(snapshot)}\n\n"
        if once:
            return
        while True:
            if stopping() or await request.is_disconnected():
                return
            if await asyncio.to_thread(runs.wait, seen, STREAM_WAIT_S) > seen:
                break
            yield ": still here\n\n"
        await asyncio.sleep(STREAM_COALESCE_S)
