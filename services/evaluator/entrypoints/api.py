"""The evaluator's small HTTP face: /healthz, /readyz, /metrics and the pending bakes."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response

from services.evaluator.domain.rollout import BakeBook
from shared.telemetry import metrics_payload


def create_app(
    bakes: BakeBook, *, alive: Callable[[], bool], ready: Callable[[], bool], clock: Callable[[], float]
) -> FastAPI:
    """``alive``: the worker threads run; ``ready``: the bakes were rebuilt from the registry."""
    app = FastAPI(title="Ferry evaluator", version="1.0.0", docs_url="/docs")

    @app.get("/healthz", summary="Liveness: the consumer loop and the bake thread run")
    def healthz() -> Response:
        if alive():
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "failing", "error": "a worker thread has stopped"}, status_code=503)

    @app.get("/readyz", summary="Readiness: the pending bakes have been rebuilt from the registry")
    def readyz() -> Response:
        if ready():
            return JSONResponse({"status": "ready"})
        return JSONResponse({"status": "unavailable", "error": "bakes not rebuilt from the registry yet"}, 503)

    @app.get("/api/v1/bakes", summary="Canaries waiting for their bake to end")
    def pending_bakes() -> list[dict[str, Any]]:
        now = clock()
        return [
            {
                "model_name": bake.model_name,
                "version": bake.version,
                "due_at": datetime.fromtimestamp(bake.due_at, UTC).isoformat(),
                "due_in_s": round(bake.due_at - now, 3),
            }
            for bake in bakes.pending()
        ]

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    def metrics_endpoint() -> Response:
        payload, content_type = metrics_payload()
        return Response(content=payload, media_type=content_type)

    return app
