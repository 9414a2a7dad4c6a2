"""Models come from the artifact store's one verified read path, by digest, never from a URI."""

from __future__ import annotations

from services.evaluator.adapters.onnx_runtime import ModelUnloadable, OnnxModel
from shared.artifacts import ArtifactError, ArtifactStore
from shared.events import ArtifactRef


class ArtifactUnusable(Exception):
    """The artifact is missing, fails its digest or size check, or is not a model ONNX Runtime can run."""


class ModelLoader:
    """Fetches an artifact by sha256 (size and digest verified) and opens it with ONNX Runtime."""

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    def load(self, artifact: ArtifactRef) -> OnnxModel:
        try:
            data = self.store.fetch(artifact.sha256, size_bytes=artifact.size_bytes)
        except (ArtifactError, OSError) as error:
            raise ArtifactUnusable(
                f"artifact {artifact.sha256[:12]} failed the store's verified read: {error}"
            ) from error
        try:
            return OnnxModel(data)
        except ModelUnloadable as error:
            raise ArtifactUnusable(f"artifact {artifact.sha256[:12]}: {error}") from error
