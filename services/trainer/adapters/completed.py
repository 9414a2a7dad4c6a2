"""The record of completed training requests, so a redelivered request re-publishes, not retrains.

One JSON file per request (the ModelTrained it produced) under ``<artifact root>/trainer/completed``:
the artifact root is shared by every trainer process, so whichever one gets the redelivery sees it.
On an ``s3://`` root the records are objects there too (a PUT is atomic: no temporary name is needed).

A PyTorchJob's pods write here too (the record of their artifact, or why the request failed under
``trainer/failed``): the trainer that watches the job reads them by the request id.
"""

from __future__ import annotations

import hashlib
import json
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
        self._failed_folder = f"{base}/trainer/failed"

    def _path(self, request_id: str, folder: str | None = None) -> str:
        # Hashed: request ids are free text, file names are not.
        return f"{folder or self._folder}/{hashlib.sha256(request_id.encode()).hexdigest()}.json"

    def get(self, request_id: str) -> ModelTrained | None:
        """The ModelTrained published for this request, or None when it never completed."""
        data = self._read(self._path(request_id))
        return None if data is None else ModelTrained.model_validate_json(data)

    def put(self, event: ModelTrained) -> None:
        """Record a completed request (atomically: a temporary name, then a rename)."""
        self._write(self._folder, self._path(event.request_id), event.model_dump_json().encode())

    def failure(self, request_id: str) -> str | None:
        """Why a job's pods said this request failed, or None when they said nothing."""
        data = self._read(self._path(request_id, self._failed_folder))
        return None if data is None else str(json.loads(data)["reason"])

    def put_failure(self, request_id: str, reason: str) -> None:
        """Record why a request failed (a job's rank 0, for the trainer that watches the job)."""
        record = json.dumps({"request_id": request_id, "reason": reason[:2000]}).encode()
        self._write(self._failed_folder, self._path(request_id, self._failed_folder), record)

    def _read(self, path: str) -> bytes | None:
        if self._objects is not None:
            try:
                with self._objects.open(path) as source:
                    return bytes(source.read())
            except FileNotFoundError:
                return None
        if not self._fs.exists(path):
            return None
        with self._fs.open(path, "rb") as source:
            return bytes(source.read())

    def _write(self, folder: str, path: str, data: bytes) -> None:
        if self._objects is not None:
            self._objects.write(path, data)
            return
        self._fs.makedirs(folder, exist_ok=True)
        temporary = f"{path}.tmp-{uuid.uuid4().hex}"
        with self._fs.open(temporary, "wb") as out:
            out.write(data)
        self._fs.mv(temporary, path)
