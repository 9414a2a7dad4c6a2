"""The registry as the console reads it (``shared.registry_client``), and the writes it forwards with the
operator's own token: the console holds no write credential."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from itertools import islice

import httpx

from services.console.domain import NotFound, SourceDown
from shared.registry_client import RegistryClient, RetryBudget
from shared.registry_errors import InvalidModelName, RegistryBadAnswer, RegistryNotFound, RegistryUnavailable
from shared.registry_models import (
    DeploymentAction,
    DeploymentChangeOut,
    DeploymentOut,
    EvaluationOut,
    HistoryEntryOut,
    ModelOut,
    VersionOut,
)

SOURCE = "registry"


@contextmanager
def answers() -> Iterator[None]:
    """The registry's failures as the console's: away → SourceDown, no such thing → NotFound."""
    try:
        yield
    except (RegistryNotFound, InvalidModelName) as error:
        raise NotFound(str(getattr(error, "message", error))) from None
    except (RegistryUnavailable, RegistryBadAnswer) as error:
        raise SourceDown(SOURCE, str(error)) from None


class RegistrySource:
    """Reads through one keep-alive client; each write through a client carrying the caller's token."""

    def __init__(self, http: httpx.Client, *, budget: RetryBudget | None = None) -> None:
        self._http = http
        # A page waits for its answer: one quick retry, then the notice.
        self._budget = budget or RetryBudget(attempts=2, total_s=5.0)
        self._client = RegistryClient(http, budget=self._budget)

    @classmethod
    def connect(cls, base_url: str, *, timeout_s: float) -> RegistrySource:
        return cls(httpx.Client(base_url=base_url.rstrip("/"), timeout=timeout_s))

    def close(self) -> None:
        self._http.close()

    def models(self) -> list[ModelOut]:
        with answers():
            return list(self._client.models())

    def model(self, name: str) -> ModelOut:
        with answers():
            return self._client.model(name)

    def versions(self, name: str) -> list[VersionOut]:
        with answers():
            return list(self._client.versions(name))

    def version(self, name: str, version: int) -> VersionOut:
        with answers():
            return self._client.version(name, version)

    def evaluations(self, name: str, version: int, *, limit: int = 20) -> list[EvaluationOut]:
        with answers():
            return self._client.evaluations(name, version, limit=limit)

    def deployment(self, name: str) -> DeploymentOut:
        with answers():
            return self._client.deployment(name)

    def history(self, name: str, *, limit: int = 100) -> list[HistoryEntryOut]:
        with answers():
            return list(islice(self._client.history(name, page_size=min(limit, 200)), limit))

    def change(self, name: str, action: DeploymentAction, token: str | None) -> DeploymentChangeOut:
        """Forward a deployment change with ``token`` as it came; the registry's refusals propagate, typed."""
        writer = RegistryClient(self._http, token=token, budget=RetryBudget(attempts=2, total_s=10.0))
        with answers():
            return writer.change_deployment(name, action)
