"""The registry's REST API, read at start: every model's current deployment and its versions' artifacts."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import httpx
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_delay, wait_exponential_jitter
from tenacity.stop import stop_base

from services.gateway.domain import Deployment, VersionSpec
from shared.events import Signature

log = logging.getLogger(__name__)


class DeploymentSource(Protocol):
    def deployments(self) -> list[Deployment]:
        """Every model's current deployment."""
        ...


class RegistryClient:
    """Reads deployments through ``/api/v1`` (models, deployment, versions)."""

    def __init__(self, base_url: str, *, timeout_s: float = 10.0, client: httpx.Client | None = None) -> None:
        self._client = client or httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s)

    def deployments(self) -> list[Deployment]:
        found = []
        for model in self._models():
            if model.get("champion") is None and model.get("challenger") is None:
                continue
            deployment = self._get(f"/api/v1/models/{model['name']}/deployment")
            found.append(self._deployment(deployment))
        return found

    def _models(self) -> Iterator[dict[str, Any]]:
        cursor: str | None = None
        while True:
            params = {"limit": 200, **({"cursor": cursor} if cursor else {})}
            page = self._get("/api/v1/models", params=params)
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def _deployment(self, body: dict[str, Any]) -> Deployment:
        name = body["model_name"]
        return Deployment(
            model_name=name,
            revision=int(body["revision"]),
            champion=self._version(name, body.get("champion")),
            challenger=self._version(name, body.get("challenger")),
            canary_weight=float(body["canary_weight"]),
            shadow=bool(body["shadow"]),
        )

    def _version(self, name: str, number: int | None) -> VersionSpec | None:
        if number is None:
            return None
        body = self._get(f"/api/v1/models/{name}/versions/{number}")
        artifact = body["artifact"]
        return VersionSpec(
            version=int(body["version"]),
            sha256=artifact["sha256"],
            size_bytes=int(artifact["size_bytes"]),
            signature=Signature.model_validate(body["signature"]),
        )

    def _get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        response = self._client.get(path, params=params)
        response.raise_for_status()
        return response.json()

    def close(self) -> None:
        self._client.close()


def load_with_retries(
    source: DeploymentSource,
    *,
    timeout_s: float,
    stop: Callable[[], bool] = lambda: False,
    sleep: Callable[[float], None] = time.sleep,
) -> list[Deployment]:
    """The deployments, retrying while the registry is not reachable yet; the last error after ``timeout_s``."""
    retrying = Retrying(
        retry=retry_if_exception_type((httpx.HTTPError, KeyError, ValueError)),
        wait=wait_exponential_jitter(multiplier=0.5, max=5.0, jitter=0.2),
        stop=stop_after_delay(timeout_s) | _StopWhen(stop),
        sleep=sleep,
        before_sleep=lambda state: log.warning(
            "registry not answering yet (%s); retrying", state.outcome and state.outcome.exception()
        ),
        reraise=True,
    )
    return retrying(source.deployments)


class _StopWhen(stop_base):
    """Stop retrying as soon as ``check`` says so (the gateway is shutting down)."""

    def __init__(self, check: Callable[[], bool]) -> None:
        self._check = check

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self._check()
