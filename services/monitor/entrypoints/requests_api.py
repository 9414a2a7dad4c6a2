"""``GET /api/v1/requests/{id}``: which model, version and route answered a logged request, when, under which
deployment revision, and its feedback (``shared/request_trace.py`` searches the topics by time).

No ``from __future__ import annotations``: FastAPI must resolve the annotations.
"""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import FastAPI, HTTPException, Path, Query

from shared.events import REQUEST_ID_PATTERN
from shared.request_trace import RequestTrace

FindRequest = Callable[[str, float], RequestTrace | None]
"""(request id, seconds back) -> its trace, or None when it is not logged in that window."""


def add_request_routes(app: FastAPI, find: FindRequest) -> None:
    """Declare the request route on ``app``."""

    @app.get("/api/v1/requests/{request_id}", summary="Which version answered a logged request, and its feedback")
    def request_trace(
        request_id: Annotated[str, Path(pattern=REQUEST_ID_PATTERN)],
        since_s: Annotated[float, Query(gt=0, le=30 * 86400, description="how far back its answer may be")] = 3600,
    ) -> dict[str, Any]:
        try:
            found = find(request_id, since_s)
        except Exception as error:  # noqa: BLE001 - the broker away or slow: say so, never a 500
            raise HTTPException(503, f"the logged requests cannot be read now: {type(error).__name__}") from error
        if found is None:
            raise HTTPException(
                404, f"request {request_id} is not logged in the last {since_s:g} s (only sampled requests are)"
            )
        return found.as_dict()
