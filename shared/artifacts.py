"""The artifact store: content-addressed by sha256 under one root (a folder or any fsspec URI).

Writes are atomic (a temporary name, then a rename); reads verify the digest.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import fsspec

CHUNK = 1 << 20


class ArtifactError(Exception):
    """An artifact is missing or does not match its digest."""


class ArtifactNotFound(ArtifactError):
    def __init__(self, sha256: str) -> None:
        super().__init__(f"artifact {sha256} is not in the store")
        self.sha256 = sha256


class DigestMismatch(ArtifactError):
    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"artifact digest mismatch: expected {expected}, found {actual}")
        self.expected = expected
        self.actual = actual


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ArtifactStore:
    """Stores blobs under ``<root>/sha256/<ab>/<digest><suffix>``."""

    def __init__(self, root: str) -> None:
        self.root = root.rstrip("/")
        self._fs, self._base = fsspec.core.url_to_fs(self.root)

    def _path(self, sha256: str, suffix: str) -> str:
        return f"{self._base}/sha256/{sha256[:2]}/{sha256}{suffix}"

    def uri(self, sha256: str, suffix: str = ".onnx") -> str:
        """The URI a version records; readable with ``open_uri``."""
        protocol = self._fs.protocol if isinstance(self._fs.protocol, str) else self._fs.protocol[0]
        path = self._path(sha256, suffix)
        return path if protocol == "file" else f"{protocol}://{path}"

    def put_bytes(self, data: bytes, suffix: str = ".onnx") -> tuple[str, str, int]:
        """Store bytes; returns (uri, sha256, size). Storing the same content twice is a no-op."""
        digest = sha256_of(data)
        target = self._path(digest, suffix)
        if not self._fs.exists(target):
            self._fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            temporary = f"{target}.tmp-{uuid.uuid4().hex}"
            with self._fs.open(temporary, "wb") as out:
                out.write(data)
            self._fs.mv(temporary, target)  # a rename: readers never see half a file
        return self.uri(digest, suffix), digest, len(data)

    def put_file(self, path: Path, suffix: str = ".onnx") -> tuple[str, str, int]:
        return self.put_bytes(Path(path).read_bytes(), suffix)

    def read_bytes(self, uri: str, sha256: str) -> bytes:
        """Read an artifact whole and verify its digest."""
        try:
            with fsspec.open(uri, "rb") as source:
                data = source.read()
        except FileNotFoundError as error:
            raise ArtifactNotFound(sha256) from error
        actual = sha256_of(data)
        if actual != sha256:
            raise DigestMismatch(sha256, actual)
        return data

    def stream(self, uri: str, sha256: str) -> Iterator[bytes]:
        """Yield the artifact in chunks; raises DigestMismatch at the end if it was altered."""
        digest = hashlib.sha256()
        try:
            source = fsspec.open(uri, "rb").open()
        except FileNotFoundError as error:
            raise ArtifactNotFound(sha256) from error
        with source:
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                yield chunk
        if digest.hexdigest() != sha256:
            raise DigestMismatch(sha256, digest.hexdigest())

    def exists(self, uri: str) -> bool:
        fs, path = fsspec.core.url_to_fs(uri)
        return bool(fs.exists(path))
