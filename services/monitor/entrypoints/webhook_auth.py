"""Who may send alerts in: the incoming webhooks take a bearer token, or basic auth whose password is the
user's token, as Alertmanager's ``http_config`` and Grafana's webhook contact point send them.

No ``from __future__ import annotations``: FastAPI must resolve the annotations that name the schemes.
"""

from collections.abc import Callable, Mapping
from typing import Annotated

from fastapi import Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBasic, HTTPBasicCredentials, HTTPBearer

from services.monitor.settings import WEBHOOK_TOKENS_FILE_ENV
from shared.credentials import TokenCheck

REALM = "ferry-monitor"
CHALLENGE = {"WWW-Authenticate": f'Bearer realm="{REALM}", Basic realm="{REALM}"'}


def webhook_sender(tokens: Mapping[str, str]) -> Callable[..., str]:
    """The dependency that lets a webhook in only with a credential of ``tokens``; it yields the sender.

    FastAPI solves it before it validates the body, so a forged webhook learns nothing of the payload's
    rules, and nothing is published for it.
    """
    check = TokenCheck(tokens)
    described = f"a token of {WEBHOOK_TOKENS_FILE_ENV}"
    bearer = HTTPBearer(auto_error=False, description=described)
    basic = HTTPBasic(auto_error=False, realm=REALM, description=f"a user of {WEBHOOK_TOKENS_FILE_ENV}, its token")

    def require_sender(
        token: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
        user_password: Annotated[HTTPBasicCredentials | None, Depends(basic)],
    ) -> str:
        if not check:
            raise HTTPException(403, f"incoming webhooks are disabled: set {WEBHOOK_TOKENS_FILE_ENV}")
        if token is not None:
            sender = check.bearer(token.credentials)
        elif user_password is not None:
            sender = check.basic(user_password.username, user_password.password)
        else:
            raise HTTPException(401, "a credential is required: a bearer token or basic auth", headers=CHALLENGE)
        if sender is None:
            raise HTTPException(401, "invalid credential", headers=CHALLENGE)
        return sender

    return require_sender
