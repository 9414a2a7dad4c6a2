"""The evaluator's small HTTP face: the pending bakes, beside the runtime's /healthz, /readyz and /metrics."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from fastapi import FastAPI

from services.evaluator.domain.rollout import BakeBook
from shared.runtime import Runtime


def create_app(bakes: BakeBook, runtime: Runtime | None = None, *, clock: Callable[[], float]) -> FastAPI:
    """``runtime`` (the process's; a bare one for a test) runs the consumer loop and the bake thread in the
    app's lifespan and answers /healthz, /readyz (its probes: the bakes rebuilt, the consumer joined) and
    /metrics."""
    runtime = runtime or Runtime("evaluator")
    app = FastAPI(title="Ferry evaluator", version="1.0.0", docs_url="/docs", lifespan=runtime.lifespan)
    runtime.add_routes(app)

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

    return app
