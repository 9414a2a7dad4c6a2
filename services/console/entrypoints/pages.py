"""The console's pages: server-rendered HTML, one route each. A source that is away is a notice on the
page (status 200); only a model or version that does not exist is a 404 page."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates

from services.console.adapters.runs import LiveRuns
from services.console.domain import NotFound, SourceDown
from services.console.service import Console
from shared.dead_letters import UnknownTopic, topic_of
from shared.settings import FerrySettings

Render = Callable[..., Response]


def page_router(console: Console, runs: LiveRuns, ferry: FerrySettings, templates: Jinja2Templates) -> APIRouter:
    """Every HTML page of the console."""
    router = APIRouter(include_in_schema=False)

    def render(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
        return templates.TemplateResponse(request, name, {"notices": [], **context}, status_code=status)

    def guarded(request: Request, active: str, build: Callable[[], tuple[str, dict[str, Any]]]) -> Response:
        try:
            name, context = build()
        except NotFound as error:
            return render(request, "missing.html", {"section": active, "message": str(error)}, 404)
        except SourceDown as error:
            return render(request, "down.html", {"section": active, "notices": [error.notice]})
        return render(request, name, {"section": active, **context})

    @router.get("/", response_class=HTMLResponse)
    def models(request: Request) -> Response:
        return guarded(request, "models", lambda: ("models.html", console.models_page()))

    @router.get("/models/{name}", response_class=HTMLResponse)
    def model(request: Request, name: str) -> Response:
        return guarded(request, "models", lambda: ("model.html", console.model_page(name)))

    @router.get("/models/{name}/versions/{version}/evaluation", response_class=HTMLResponse)
    def evaluation(request: Request, name: str, version: int, index: Annotated[int, Query(ge=0)] = 0) -> Response:
        return guarded(request, "models", lambda: ("evaluation.html", console.evaluation_page(name, version, index)))

    @router.get("/models/{name}/compare", response_class=HTMLResponse)
    def compare(
        request: Request,
        name: str,
        v: Annotated[list[int], Query()] = [],  # noqa: B006
        fresh: bool = False,
    ) -> Response:
        return guarded(request, "models", lambda: ("compare.html", console.compare_page(name, v, fresh=fresh)))

    @router.get("/training", response_class=HTMLResponse)
    def training(request: Request) -> Response:
        snapshot = runs.snapshot()
        failed = [run.summary() for run in runs.failed()]
        return render(request, "training.html", {"section": "training", "runs": snapshot["runs"], "failed": failed})

    @router.get("/alerts", response_class=HTMLResponse)
    def alerts(request: Request) -> Response:
        return guarded(request, "alerts", lambda: ("alerts.html", console.alerts_page()))

    @router.get("/dead-letters", response_class=HTMLResponse)
    def dead_letters(request: Request, topic: str | None = None) -> Response:
        def build() -> tuple[str, dict[str, Any]]:
            try:
                chosen = topic_of(ferry, topic) if topic else None
            except UnknownTopic as error:
                raise NotFound(str(error)) from None
            return "dead_letters.html", {"chosen": chosen, **console.dead_letters_page(chosen)}

        return guarded(request, "dead-letters", build)

    return router
