"""The artifact store: content-addressed by sha256 under one root (a folder, ``s3://bucket/prefix``, any fsspec URI).

Writes are atomic: a temporary name, then a rename, in a folder; one PUT (or one multipart upload) in an
S3-compatible object store (:mod:`shared.s3`), where nothing temporary is written. There is one read
path, :meth:`ArtifactStore.fetch`: it reads the store's own copy of a digest, never a URI that came with
an event or a request, refuses a file that resolves outside the store (a symbolic link out of it), and
checks size and digest before a single byte is handed on. Every service reads artifacts through it.
"""

from __future__ import annotations

import hashlib
import os
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import fsspec

from shared.s3 import SCHEME, S3Objects, S3Options, s3_options
from shared.settings import FerrySettings

CHUNK = 1 << 20
SUFFIX = ".onnx"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ArtifactError(Exception):
    """An artifact is missing, outside the store, or does not match its digest."""


class ArtifactNotFound(ArtifactError):
    def __init__(self, sha256: str) -> None:
        super().__init__(f"artifact {sha256} is not in the store")
        self.sha256 = sha256


class DigestMismatch(ArtifactError):
    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"artifact digest mismatch: expected {expected}, found {actual}")
        self.expected = expected
        self.actual = actual


class SizeMismatch(ArtifactError):
    def __init__(self, sha256: str, expected: int, actual: int) -> None:
        super().__init__(f"artifact {sha256} has {actual} bytes, not the {expected} stated")
        self.expected = expected
        self.actual = actual


class OutsideStore(ArtifactError):
    """A URI or a stored file that does not resolve to the store's own key for the digest."""


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def check_digest(sha256: str) -> str:
    """A digest as the store keys it (64 lowercase hex characters); ArtifactError otherwise."""
    if not isinstance(sha256, str) or not _SHA256.match(sha256):
        raise ArtifactError("an artifact digest must be 64 lowercase hexadecimal characters")
    return sha256


class ArtifactStore:
    """Stores blobs under ``<root>/sha256/<ab>/<digest>.onnx``."""

    def __init__(self, root: str, *, s3: S3Options | None = None) -> None:
        self.root = root.rstrip("/")
        self._objects: S3Objects | None = None
        if root.startswith(SCHEME):
            self._objects = S3Objects(root, s3 or S3Options())
            self._base = self._objects.base
            protocol = "s3"
        else:
            self._fs, self._base = fsspec.core.url_to_fs(self.root)
            protocol = self._fs.protocol if isinstance(self._fs.protocol, str) else self._fs.protocol[0]
        self._local = protocol in ("file", "local")
        self._protocol = protocol

    @classmethod
    def from_settings(cls, settings: FerrySettings) -> ArtifactStore:
        """The store the settings name; for ``s3://`` with their endpoint, region and multipart threshold."""
        return cls(settings.resolved_artifact_root, s3=s3_options(settings))

    def _path(self, sha256: str) -> str:
        check_digest(sha256)
        return f"{self._base}/sha256/{sha256[:2]}/{sha256}{SUFFIX}"

    def uri(self, sha256: str) -> str:
        """The URI a version records for this digest: the store's own key, nothing else."""
        path = self._path(sha256)
        return path if self._local else f"{self._protocol}://{path}"

    def put_bytes(self, data: bytes) -> tuple[str, str, int]:
        """Store bytes; returns (uri, sha256, size). Storing the same content twice is a no-op."""
        digest = sha256_of(data)
        target = self._path(digest)
        if self._objects is not None:
            if not self._objects.exists(target):
                self._objects.write(target, data)  # one PUT or one multipart upload: whole or absent
        elif not self._fs.exists(target):
            self._fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            temporary = f"{target}.tmp-{uuid.uuid4().hex}"
            with self._fs.open(temporary, "wb") as out:
                out.write(data)
            self._fs.mv(temporary, target)  # a rename: readers never see half a file
        return self.uri(digest), digest, len(data)

    def put_file(self, path: Path) -> tuple[str, str, int]:
        return self.put_bytes(Path(path).read_bytes())

    def is_own_uri(self, uri: str, sha256: str) -> bool:
        """True when ``uri`` names exactly the store's key for ``sha256`` (no other file, no ``..``)."""
        try:
            expected = self.uri(sha256)
        except ArtifactError:
            return False
        if uri == expected:
            return True
        if self._local:
            text = uri.removeprefix("file://")
            return os.path.isabs(text) and os.path.normpath(text) == text and text == expected
        return False

    def _checked_local_path(self, sha256: str) -> str:
        """The key's path once symbolic links are resolved; OutsideStore when it leaves the root."""
        path = self._path(sha256)
        real_root = os.path.realpath(self._base)
        real = os.path.realpath(path)
        if os.path.commonpath([real_root, real]) != real_root:
            raise OutsideStore(f"artifact {sha256} resolves outside the store")
        return real

    @contextmanager
    def _open(self, sha256: str) -> Iterator[Any]:
        """The store's copy of ``sha256``, open for reading; ArtifactNotFound when there is none."""
        path = self._checked_local_path(sha256) if self._local else self._path(sha256)
        try:
            with self._objects.open(path) if self._objects is not None else self._fs.open(path, "rb") as source:
                yield source
        except (FileNotFoundError, IsADirectoryError) as error:
            raise ArtifactNotFound(sha256) from error

    def fetch(self, sha256: str, *, size_bytes: int | None = None) -> bytes:
        """The one verified read path: the store's copy of ``sha256``, checked whole before it is returned.

        Raises ArtifactNotFound, OutsideStore, SizeMismatch or DigestMismatch; never opens a caller's URI.
        """
        with self._open(sha256) as source:
            data: bytes = source.read()
        if size_bytes is not None and len(data) != size_bytes:
            raise SizeMismatch(sha256, size_bytes, len(data))
        actual = sha256_of(data)
        if actual != sha256:
            raise DigestMismatch(sha256, actual)
        return data

    def verify(self, sha256: str, *, size_bytes: int | None = None) -> None:
        """Check that the store holds ``sha256`` intact (for registration); raises as :meth:`fetch` does."""
        digest = hashlib.sha256()
        total = 0
        with self._open(sha256) as source:
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                total += len(chunk)
        if size_bytes is not None and total != size_bytes:
            raise SizeMismatch(sha256, size_bytes, total)
        if digest.hexdigest() != sha256:
            raise DigestMismatch(sha256, digest.hexdigest())

    def stream_verified(self, sha256: str, *, size_bytes: int | None = None) -> Iterator[bytes]:
        """Verify the whole artifact first, then yield it in chunks: a mismatch is raised before any byte."""
        data = self.fetch(sha256, size_bytes=size_bytes)
        return (data[start : start + CHUNK] for start in range(0, len(data), CHUNK))

    def has(self, sha256: str) -> bool:
        """True when the store holds a file under the key of ``sha256`` (not verified)."""
        try:
            path = self._checked_local_path(sha256) if self._local else self._path(sha256)
        except ArtifactError:
            return False
        if self._objects is not None:
            return self._objects.exists(path)
        return bool(self._fs.exists(path))
