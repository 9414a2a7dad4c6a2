"""``POST /v2/models/{name}/feedback``: ground truth by request id, passed on to ``inference.feedback``.

It takes a bearer token of ``FERRY_GATEWAY_FEEDBACK_TOKENS_FILE`` (by default the registry's API tokens file,
``FERRY_REGISTRY_TOKENS_FILE``): feedback moves the online accuracy that alerts read, so it is a write. The
token's user is the event's ``actor``. The answer is 202 with the number of items accepted, once the broker
has them.

No ``from __future__ import annotations``: FastAPI must resolve the annotations that name the schemes.
"""

import asyncio
import logging
import re
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

from services.gateway.service import Gateway
from shared.credentials import TokenCheck
from shared.events import MAX_FEEDBACK_ITEMS, MODEL_NAME_PATTERN, FeedbackItem, InferenceFeedback
from shared.http_auth import bearer_user

log = logging.getLogger(__name__)
SETTING = "FERRY_GATEWAY_FEEDBACK_TOKENS_FILE"


class FeedbackIn(BaseModel):
    """One or more ground truths: each a request id with a class (index or label) or a regressor's value."""

    model_config = ConfigDict(extra="forbid")
    feedback: list[FeedbackItem] = Field(min_length=1, max_length=MAX_FEEDBACK_ITEMS)


def feedback_sender(tokens: dict[str, str]) -> Callable[..., str]:
    """The dependency that lets feedback in only with a token of ``tokens``; it yields the token's user."""
    check = TokenCheck(tokens)
    bearer = HTTPBearer(auto_error=False, description=f"a token of {SETTING}")

    def require_sender(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> str:
        return bearer_user(
            check, credentials, disabled=f"feedback is off: set {SETTING} (or FERRY_REGISTRY_TOKENS_FILE)"
        )

    return require_sender


def add_feedback_route(api: FastAPI, gateway: Gateway) -> None:
    """Declare the feedback route on ``api``."""
    sender = feedback_sender(gateway.feedback_tokens)

    @api.post(
        "/v2/models/{name}/feedback",
        tags=["feedback"],
        status_code=202,
        summary="Ground truth of answered requests, by request id (published to inference.feedback)",
    )
    async def post_feedback(name: str, body: FeedbackIn, user: Annotated[str, Depends(sender)]) -> Any:
        if not re.match(MODEL_NAME_PATTERN, name) or gateway.fleet.get(name) is None:
            raise HTTPException(404, f"model {name[:128]!r} is not served here")
        publisher = gateway.feedback_publisher
        if publisher is None:
            raise HTTPException(503, "feedback is not passed on by this gateway (it follows no Kafka)")
        event = InferenceFeedback(model_name=name, items=body.feedback, actor=user)
        try:
            await asyncio.to_thread(publisher.publish, event)
        except Exception as error:  # noqa: BLE001 - the broker is away: the client may retry
            log.warning("feedback for %s not published: %s", name, type(error).__name__)
            raise HTTPException(503, f"feedback could not be published: {type(error).__name__}") from error
        return JSONResponse(status_code=202, content={"accepted": len(body.feedback)})
