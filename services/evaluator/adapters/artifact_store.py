"""Models come from the artifact store's one verified read path, by digest, never from a URI."""

from __future__ import annotations

import onnxruntime as ort

from shared.artifacts import ArtifactError, ArtifactStore
from shared.events import ArtifactRef
from shared.onnx import ModelUnloadable, open_session


class ArtifactUnusable(Exception):
    """The artifact is missing, fails its digest or size check, or is not a model ONNX Runtime can run."""


class ModelLoader:
    """Fetches an artifact by sha256 (size and digest verified) and opens it with ONNX Runtime.

    Sessions run on the CPU with one intra-op thread: the latency harness times exactly these sessions
    on the calling thread's CPU clock (``shared.onnx``), and scoring a held-out split needs no more.
    """

    def __init__(self, store: ArtifactStore) -> None:
        self.store = store

    def load(self, artifact: ArtifactRef) -> ort.InferenceSession:
        try:
            data = self.store.fetch(artifact.sha256, size_bytes=artifact.size_bytes)
        except (ArtifactError, OSError) as error:
            raise ArtifactUnusable(
                f"artifact {artifact.sha256[:12]} failed the store's verified read: {error}"
            ) from error
        try:
            return open_session(data, device="cpu", threads=1)
        except ModelUnloadable as error:
            raise ArtifactUnusable(f"artifact {artifact.sha256[:12]}: {error}") from error
