"""The monitor's HTTP face: alerts, rules, targets, input drift, the webhooks in, ``/healthz`` and ``/metrics``.

No ``from __future__ import annotations`` here: FastAPI must resolve the webhooks' annotations, which
name the credential dependency built inside ``create_app``.
"""

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from services.monitor.domain.episodes import RecentIds
from services.monitor.domain.lifecycle import Alert, timestamp
from services.monitor.entrypoints.drift_api import drift_router
from services.monitor.entrypoints.incoming import IncomingWebhook, to_event
from services.monitor.entrypoints.requests_api import FindRequest, add_request_routes
from services.monitor.entrypoints.webhook_auth import webhook_sender
from services.monitor.input_drift import InputDriftTracker
from services.monitor.provisioning.promql import condition
from services.monitor.service import Monitor
from services.monitor.settings import DEFAULT_WEBHOOK_MAX_BYTES
from shared.events import Event
from shared.runtime import Runtime

log = logging.getLogger(__name__)

PublishBatch = Callable[[Sequence[tuple[Event, str | None]]], list[Exception | None]]


@dataclass
class ApiDeps:
    monitor: Monitor
    publish_batch: PublishBatch
    webhook_tokens: Mapping[str, str] = field(default_factory=dict)
    """Token → user (settings.webhook_tokens()); the incoming webhooks are refused while it is empty."""
    webhook_max_bytes: int = DEFAULT_WEBHOOK_MAX_BYTES
    incoming_ids: RecentIds = field(default_factory=RecentIds)
    """The incoming alert episodes already published: a re-sent copy is acknowledged, not published again."""
    engine: str = "builtin"
    input_drift: InputDriftTracker | None = None
    find_request: FindRequest | None = None
    """Searches the logged requests (``GET /api/v1/requests/{id}``); None: the route is not there."""


class AlertOut(BaseModel):
    rule: str
    state: Literal["pending", "firing", "resolved"]
    labels: dict[str, str]
    value: float | None
    threshold: float
    severity: str
    action: str
    summary: str
    active_at: datetime
    fired_at: datetime | None
    resolved_at: datetime | None

    @classmethod
    def of(cls, alert: Alert) -> "AlertOut":
        return cls(
            rule=alert.rule,
            state=alert.state,
            labels=alert.label_map,
            value=alert.value if math.isfinite(alert.value) else None,
            threshold=alert.threshold,
            severity=alert.severity,
            action=alert.action,
            summary=alert.summary,
            active_at=timestamp(alert.active_at),
            fired_at=_time(alert.fired_at),
            resolved_at=_time(alert.resolved_at),
        )


def _time(seconds: float | None) -> datetime | None:
    return timestamp(seconds) if seconds is not None else None


class ErrorOut(BaseModel):
    error: str


WEBHOOK_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorOut, "description": "no credential, or a wrong one"},
    403: {"model": ErrorOut, "description": "incoming webhooks disabled (no tokens file)"},
    413: {"description": "the body is larger than FERRY_MONITOR_WEBHOOK_MAX_BYTES"},
    422: {"model": ErrorOut, "description": "the payload is invalid; the message names the field"},
    503: {"model": ErrorOut, "description": "the broker did not take the alerts; retry"},
}


class AlertsOut(BaseModel):
    engine: Literal["builtin", "external"]
    """builtin: these alerts are the ones published; external: the monitor's own view, not published."""
    active: list[AlertOut]
    recent: list[AlertOut]


def create_app(deps: ApiDeps, runtime: Runtime | None = None) -> FastAPI:
    """The monitor's API; ``runtime`` (the process's; a bare one for a test) runs the workers in the app's
    lifespan and answers /healthz, /readyz and /metrics."""
    runtime = runtime or Runtime("monitor")
    app = FastAPI(
        title="Ferry monitor",
        version="1.0.0",
        description='Alert rules over every service\'s metrics. Errors are JSON: {"error": "..."}.',
        lifespan=runtime.lifespan,
    )
    _install_error_handlers(app)
    runtime.add_routes(app)
    if deps.find_request is not None:
        add_request_routes(app, deps.find_request)
    monitor = deps.monitor

    @app.get("/api/v1/alerts", summary="Active alerts (pending and firing) and recently resolved ones")
    def alerts() -> AlertsOut:
        return AlertsOut(
            engine="external" if deps.engine == "external" else "builtin",
            active=[AlertOut.of(a) for a in monitor.active_alerts()],
            recent=[AlertOut.of(a) for a in monitor.recent_alerts()],
        )

    @app.get("/api/v1/rules", summary="The rules, their PromQL and their last evaluation")
    def rules() -> dict[str, Any]:
        active = monitor.active_alerts()
        return {"rules": [_rule_out(health, active) for health in monitor.rule_health()]}

    @app.get("/api/v1/targets", summary="The scrape targets and how their last scrape went")
    def targets() -> dict[str, Any]:
        return {"targets": [_target_out(health) for health in monitor.target_health()]}

    if deps.input_drift is not None:
        app.include_router(drift_router(deps.input_drift))

    sender = webhook_sender(deps.webhook_tokens)

    @app.post(
        "/api/v1/grafana-webhook",
        summary="Grafana's webhook contact point: each alert becomes an alert event",
        responses=WEBHOOK_RESPONSES,
        max_body_size=deps.webhook_max_bytes,
    )
    def grafana_webhook(payload: IncomingWebhook, user: Annotated[str, Depends(sender)]) -> JSONResponse:
        return _republish(payload, "grafana", user, deps)

    @app.post(
        "/api/v1/alertmanager-webhook",
        summary="Alertmanager's webhook receiver: the same, from Prometheus",
        responses=WEBHOOK_RESPONSES,
        max_body_size=deps.webhook_max_bytes,
    )
    def alertmanager_webhook(payload: IncomingWebhook, user: Annotated[str, Depends(sender)]) -> JSONResponse:
        return _republish(payload, "alertmanager", user, deps)

    return app


def _republish(payload: IncomingWebhook, origin: str, sender: str, deps: ApiDeps) -> JSONResponse:
    # Every field was validated on the way in, so what fails from here on is the broker's, not the sender's.
    items = [to_event(alert, origin=origin) for alert in payload.alerts]
    claimed = deps.incoming_ids.claim(event_id for _, event_id in items)
    fresh = [item for item, new in zip(items, claimed, strict=True) if new]
    results = deps.publish_batch(fresh) if fresh else []
    failed = [(item, error) for item, error in zip(fresh, results, strict=True) if error is not None]
    if failed:
        # 503 makes Grafana and Alertmanager retry: the failed ids are released so the retry goes out.
        deps.incoming_ids.release(event_id for (_, event_id), _ in failed)
        log.warning(
            "%d of %d %s alerts from %s not published: %s", len(failed), len(items), origin, sender, failed[0][1]
        )
        return JSONResponse(status_code=503, content={"error": f"the broker did not take the alerts: {failed[0][1]}"})
    duplicates = len(items) - len(fresh)
    log.info("%d %s alerts from %s published, %d already were", len(fresh), origin, sender, duplicates)
    return JSONResponse(content={"published": len(fresh), "duplicates": duplicates})


def _rule_out(health: Any, active: list[Alert]) -> dict[str, Any]:
    rule = health.rule
    return {
        **rule.model_dump(mode="json", by_alias=True),
        "promql": condition(rule),
        "last_evaluation": _time(health.last_evaluation),
        "error": health.error,
        "groups": health.groups,
        "active": sum(1 for alert in active if alert.rule == rule.name),
    }


def _target_out(health: Any) -> dict[str, Any]:
    return {
        "job": health.job,
        "instance": health.instance,
        "url": health.url,
        "up": health.up,
        "last_scrape": _time(health.last_scrape),
        "last_error": health.last_error,
        "duration_s": health.duration_s,
        "samples": health.samples,
    }


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> Response:
        return JSONResponse(status_code=error.status_code, content={"error": str(error.detail)}, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in problem.get('loc', ()))}: {problem.get('msg')}"
            for problem in error.errors()
        )
        return JSONResponse(status_code=422, content={"error": f"invalid request: {problems}"[:2000]})
