"""The one bearer-token check of Ferry's HTTP writes (the registry's REST writes, the console's replays, the
gateway's feedback): 403 while no token is configured (the write is off, ``disabled`` says how to turn it on),
401 without a token, 403 for a token that is not one of them; else the token's user."""

from __future__ import annotations

from fastapi import HTTPException
from fastapi.security import HTTPAuthorizationCredentials

from shared.credentials import TokenCheck


def bearer_user(check: TokenCheck, credentials: HTTPAuthorizationCredentials | None, *, disabled: str) -> str:
    """The user of the bearer token offered, or the HTTPException that refuses the request."""
    if not check:
        raise HTTPException(403, disabled)
    if credentials is None:
        raise HTTPException(401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"})
    user = check.bearer(credentials.credentials)
    if user is None:
        raise HTTPException(403, "invalid token")
    return user
