"""Where distillation teachers come from: the registry's deployment (REST) and the artifact store.

``RegistryTeachers`` asks the registry (the one client) for the champion and its version, reads its
artifact from the shared store (size and digest verified) and writes it into the run's folder.
``StaticTeachers`` is the fake for tests: a dict of ready teachers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from services.trainer.domain import Teacher, TeacherUnavailable
from shared.artifacts import ArtifactError, ArtifactStore
from shared.registry_client import RegistryClient
from shared.registry_errors import InvalidModelName, RegistryBadAnswer, RegistryNotFound, RegistryRefused
from shared.registry_models import VersionOut


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
    """The real source: the registry (through the one client) names the champion, the store holds its bytes."""

    def __init__(self, client: RegistryClient, store: ArtifactStore) -> None:
        self._client = client
        self._store = store

    def fetch(self, model_name: str, workdir: Path) -> Teacher:
        champion = self._champion(model_name)
        artifact = champion.artifact
        try:  # the store's own copy, by digest and size: never the URI the registry recorded
            data = self._store.fetch(artifact.sha256, size_bytes=artifact.size_bytes)
        except ArtifactError as error:
            raise TeacherUnavailable(
                f"champion v{champion.version} of {model_name!r} cannot be read: {error}"
            ) from error
        path = workdir / f"teacher-{artifact.sha256[:16]}.onnx"
        path.write_bytes(data)
        return Teacher(model_name=model_name, version=champion.version, path=path)

    def _champion(self, model_name: str) -> VersionOut:
        """The champion's version; TeacherUnavailable when there is none. RegistryUnavailable passes (transient)."""
        try:
            champion = self._client.deployment(model_name).champion
            if champion is None:
                raise TeacherUnavailable(f"model {model_name!r} has no champion to distill from")
            return self._client.version(model_name, champion)
        except InvalidModelName as error:
            raise TeacherUnavailable(f"{error}: it cannot be a teacher") from error
        except RegistryNotFound as error:
            raise TeacherUnavailable(f"model {model_name!r} is not in the registry; it cannot be a teacher") from error
        except (RegistryRefused, RegistryBadAnswer) as error:
            raise TeacherUnavailable(f"the registry cannot name the champion of {model_name!r}: {error}") from error

    def close(self) -> None:
        self._client.close()
