"""The deployments the gateway serves at start, read through the one registry client.

Every model with a champion or a challenger, with the digest, size and signature of each version it
serves. Retrying a registry that is not up yet is the client's budget (built in bootstrap).
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from services.gateway.domain import Deployment, VersionSpec
from shared.registry_client import RegistryClient
from shared.registry_errors import RegistryNotFound


class DeploymentSource(Protocol):
    def deployments(self) -> list[Deployment]:
        """Every model's current deployment."""
        ...


class RegistryDeployments:
    """The real source: ``/models`` (every page), then each deployed model's deployment and versions."""

    def __init__(self, client: RegistryClient) -> None:
        self._client = client

    def deployments(self, skip: Collection[str] = ()) -> list[Deployment]:
        """Every deployed model's deployment, but those named in ``skip`` (known already)."""
        found = []
        for model in self._client.models():
            if model.champion is None and model.challenger is None or model.name in skip:
                continue
            deployment = self._client.deployment(model.name)
            found.append(
                Deployment(
                    model_name=model.name,
                    revision=deployment.revision,
                    champion=self._version(model.name, deployment.champion),
                    challenger=self._version(model.name, deployment.challenger),
                    canary_weight=deployment.canary_weight,
                    shadow=deployment.shadow,
                )
            )
        return found

    def _version(self, name: str, number: int | None) -> VersionSpec | None:
        if number is None:
            return None
        version = self._client.version(name, number)
        return VersionSpec(
            version=version.version,
            sha256=version.artifact.sha256,
            size_bytes=version.artifact.size_bytes,
            signature=version.signature,
        )

    def version_spec(self, name: str, number: int) -> VersionSpec | None:
        """A version no deployment serves, for a pinned request: None when the registry does not know it or
        has archived it (a rolled-back or rejected version is still servable when pinned)."""
        try:
            version = self._client.version(name, number)
        except RegistryNotFound:
            return None
        if version.status == "archived":
            return None
        return VersionSpec(version.version, version.artifact.sha256, version.artifact.size_bytes, version.signature)

    def close(self) -> None:
        self._client.close()
