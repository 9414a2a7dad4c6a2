"""What can go wrong between the registry client and the registry, as types: the one error policy.

A registry that cannot be reached, times out, or answers 5xx or 429 is :class:`RegistryUnavailable`, a
TransientError (a consumer loop retries the event; the client retries within its budget first). Any other
4xx is a :class:`RegistryRefused`, a PermanentError carrying the status and the registry's own message.
"""

from __future__ import annotations

import re
import time
from email.utils import parsedate_to_datetime

import httpx

from shared.errors import PermanentError, TransientError
from shared.events import MODEL_NAME_PATTERN

UNSENT_STATUSES = (429, 503)
"""Answers that say the registry did nothing: 429 (rate limited) and 503 (its database away, say)."""


class RegistryError(Exception):
    """Anything the registry client raises about the registry."""


class RegistryUnavailable(RegistryError, TransientError):
    """The registry cannot be reached, timed out, or answered 5xx or 429: it may pass."""

    def __init__(
        self, message: str, *, status: int | None = None, retry_after_s: float | None = None, unsent: bool = False
    ) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after_s = retry_after_s
        self.unsent = unsent
        """True when the registry surely did not act on the request (safe to send a write again)."""


class RegistryRefused(RegistryError, PermanentError):
    """The registry answered 4xx: asking again the same way will not help. ``message`` is the registry's."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"the registry refused ({status}): {message}")
        self.status = status
        self.message = message


class RegistryNotFound(RegistryRefused):
    """404: no such model or version (or artifact in the store)."""


class RegistryUnauthorized(RegistryRefused):
    """401 or 403: no bearer token, a wrong one, or writes disabled on the registry."""


class RegistryConflict(RegistryRefused):
    """409: the decision cannot apply (a rejected version without force, nothing to roll back, ...)."""


class RegistryBadAnswer(RegistryError, PermanentError):
    """A 2xx answer that is not the body the route documents (another service at that URL, say)."""


class InvalidModelName(ValueError):
    """A name that cannot be a model's (MODEL_NAME_PATTERN): it is never put in a URL."""


REFUSALS: dict[int, type[RegistryRefused]] = {
    404: RegistryNotFound,
    401: RegistryUnauthorized,
    403: RegistryUnauthorized,
    409: RegistryConflict,
}


def retry_after_s(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - time.time())


def model_path(name: str) -> str:
    """``/models/{name}``; InvalidModelName for a name no model can have."""
    if not isinstance(name, str) or not re.fullmatch(MODEL_NAME_PATTERN, name):
        raise InvalidModelName(f"{name!r} is not a model name")
    return f"/models/{name}"


def unreachable(base_url: httpx.URL, method: str, path: str, error: httpx.HTTPError) -> RegistryUnavailable:
    unsent = isinstance(error, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
    kind = type(error).__name__
    return RegistryUnavailable(
        f"the registry at {base_url} did not answer {method} {path}: {kind}: {error}", unsent=unsent
    )


def raise_for(response: httpx.Response, method: str, path: str) -> None:
    status = response.status_code
    if status < 300:
        return
    message = message_of(response)
    if status >= 500 or status == 429:
        raise RegistryUnavailable(
            f"the registry answered {status} to {method} {path}: {message}",
            status=status,
            retry_after_s=retry_after_s(response.headers.get("retry-after")),
            unsent=status in UNSENT_STATUSES,
        )
    raise REFUSALS.get(status, RegistryRefused)(status, message)


def message_of(response: httpx.Response) -> str:
    """The registry's ``{"error": ...}``, else the start of whatever it sent."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return str(body["error"])
    return response.text[:300] or response.reason_phrase
