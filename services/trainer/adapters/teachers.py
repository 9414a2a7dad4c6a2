"""Where distillation teachers come from: the registry's deployment (REST) and the artifact store.

``RegistryTeachers`` asks ``GET {registry}/api/v1/models/{name}/deployment`` for the champion,
reads its artifact from the shared store (digest verified) and writes it into the run's folder.
``StaticTeachers`` is the fake for tests: a dict of ready teachers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote

import httpx

from services.trainer.domain import Teacher, TeacherUnavailable
from shared.artifacts import ArtifactError, ArtifactStore
from shared.errors import TransientError


class TeacherSource(Protocol):
    def fetch(self, model_name: str, workdir: Path) -> Teacher:
        """The champion of ``model_name`` as a local ONNX file; raises TeacherUnavailable."""
        ...


class StaticTeachers:
    """A fake source: teachers known in advance, by model name."""

    def __init__(self, teachers: dict[str, Teacher] | None = None) -> None:
        self.teachers = dict(teachers or {})

    def fetch(self, model_name: str, workdir: Path) -> Teacher:
        if model_name not in self.teachers:
            raise TeacherUnavailable(f"model {model_name!r} has no champion to distill from")
        return self.teachers[model_name]


class RegistryTeachers:
    """The real source: the registry's REST API for the champion, the store for its bytes."""

    def __init__(
        self, base_url: str, store: ArtifactStore, *, timeout_s: float = 10.0, client: httpx.Client | None = None
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._store = store
        self._client = client or httpx.Client(timeout=timeout_s)

    def fetch(self, model_name: str, workdir: Path) -> Teacher:
        deployment = self._get(f"/api/v1/models/{quote(model_name, safe='')}/deployment", model_name)
        champion = deployment.get("champion")
        if champion is None:
            raise TeacherUnavailable(f"model {model_name!r} has no champion to distill from")
        if isinstance(champion, int):  # a bare version number: ask for the version itself
            champion = self._get(f"/api/v1/models/{quote(model_name, safe='')}/versions/{champion}", model_name)
        version, sha256 = _champion_artifact(model_name, champion)
        try:
            data = self._store.fetch(sha256)  # the store's own copy, by digest: never the URI it was sent
        except ArtifactError as error:
            raise TeacherUnavailable(f"champion v{version} of {model_name!r} cannot be read: {error}") from error
        path = workdir / f"teacher-{sha256[:16]}.onnx"
        path.write_bytes(data)
        return Teacher(model_name=model_name, version=version, path=path)

    def _get(self, path: str, model_name: str) -> dict[str, Any]:
        try:
            response = self._client.get(self._base_url + path)
        except httpx.TransportError as error:
            raise TransientError(f"registry at {self._base_url} unreachable: {error}") from error
        if response.status_code == 404:
            raise TeacherUnavailable(f"model {model_name!r} is not in the registry; it cannot be a teacher")
        if response.status_code >= 500:
            raise TransientError(f"registry answered {response.status_code} for {path}")
        if response.status_code != 200:
            raise TeacherUnavailable(f"registry answered {response.status_code} for {path}: {response.text[:200]}")
        body = response.json()
        if not isinstance(body, dict):
            raise TeacherUnavailable(f"registry answered {path} with an unexpected body")
        return body

    def close(self) -> None:
        self._client.close()


def _champion_artifact(model_name: str, champion: dict[str, Any]) -> tuple[int, str]:
    """(version, sha256) from a DeployedVersion-shaped JSON object."""
    artifact = champion.get("artifact") or {}
    version, sha256 = champion.get("version"), artifact.get("sha256")
    if not isinstance(version, int) or not isinstance(sha256, str):
        raise TeacherUnavailable(f"the registry's champion of {model_name!r} names no artifact")
    return version, sha256
