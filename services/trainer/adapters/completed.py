"""The record of completed training requests, so a redelivered request re-publishes, not retrains.

One JSON file per request (the ModelTrained it produced) under ``<artifact root>/trainer/completed``:
the artifact root is shared by every trainer process, so whichever one gets the redelivery sees it.
On an ``s3://`` root the records are objects there too (a PUT is atomic: no temporary name is needed).
"""

from __future__ import annotations

import hashlib
import uuid

import fsspec

from shared.events import ModelTrained
from shared.s3 import SCHEME, S3Objects, S3Options


class CompletedRequests:
    """Completed request ids and their ModelTrained, stored as JSON beside the artifacts."""

    def __init__(self, root: str, *, s3: S3Options | None = None) -> None:
        self._objects: S3Objects | None = None
        if root.startswith(SCHEME):
            self._objects = S3Objects(root, s3 or S3Options())
            base = self._objects.base
        else:
            self._fs, base = fsspec.core.url_to_fs(root.rstrip("/"))
        self._folder = f"{base}/trainer/completed"

    def _path(self, request_id: str) -> str:
        # Hashed: request ids are free text, file names are not.
        return f"{self._folder}/{hashlib.sha256(request_id.encode()).hexdigest()}.json"

    def get(self, request_id: str) -> ModelTrained | None:
        """The ModelTrained published for this request, or None when it never completed."""
        path = self._path(request_id)
        if self._objects is not None:
            try:
                with self._objects.open(path) as source:
                    return ModelTrained.model_validate_json(source.read())
            except FileNotFoundError:
                return None
        if not self._fs.exists(path):
            return None
        with self._fs.open(path, "rb") as source:
            return ModelTrained.model_validate_json(source.read())

    def put(self, event: ModelTrained) -> None:
        """Record a completed request (atomically: a temporary name, then a rename)."""
        path = self._path(event.request_id)
        if self._objects is not None:
            self._objects.write(path, event.model_dump_json().encode())
            return
        self._fs.makedirs(self._folder, exist_ok=True)
        temporary = f"{path}.tmp-{uuid.uuid4().hex}"
        with self._fs.open(temporary, "wb") as out:
            out.write(event.model_dump_json().encode())
        self._fs.mv(temporary, path)
