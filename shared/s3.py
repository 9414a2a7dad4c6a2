"""Objects in an S3-compatible store (AWS S3, SeaweedFS, MinIO, Ceph), through boto3: the store's S3 backend.

Only :class:`shared.artifacts.ArtifactStore` uses it. Credentials are boto3's own business (the environment's
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, a profile, an instance role): they never pass through a
URI, a setting or a log line here. A PUT is atomic, and so is a multipart upload (the object appears when
the upload completes; s3transfer aborts a failed one), so no temporary object is ever written. A store
that cannot be reached, or answers with a server error, raises :class:`S3Unavailable`, a TransientError:
the consumer loop retries it with back-off.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from shared.errors import TransientError
from shared.settings import FerrySettings

SCHEME = "s3://"
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_MISSING = {"404", "NoSuchKey", "NotFound"}


class S3Unavailable(TransientError):
    """The object store cannot be reached or failed to answer (a server error, refused credentials): retry."""


class S3UriError(ValueError):
    """An ``s3://`` store root that is not ``s3://bucket[/prefix]``."""


@dataclass(frozen=True)
class S3Options:
    """How to reach the store; None leaves the choice to boto3 (its environment variables and config files).

    A key pair is given here only by code that holds one (the local stack's own SeaweedFS, its tests); the
    services leave it None and boto3 reads its usual sources. It is never shown (``repr=False``).
    """

    endpoint_url: str | None = None
    region: str | None = None
    multipart_threshold_bytes: int = 64 << 20
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)


def s3_options(settings: FerrySettings) -> S3Options:
    """Endpoint (FERRY_S3_ENDPOINT_URL, else AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL), region, threshold."""
    endpoint = settings.s3_endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return S3Options(
        endpoint_url=endpoint or None,
        region=settings.s3_region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION"),
        multipart_threshold_bytes=settings.s3_multipart_threshold_bytes,
    )


def split_root(root: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` → ``("bucket", "a/b")``; S3UriError for anything else (the URI is never echoed)."""
    if not root.startswith(SCHEME):
        raise S3UriError("an S3 store root starts with s3://")
    bucket, _, prefix = root.removeprefix(SCHEME).strip("/").partition("/")
    if not _BUCKET.match(bucket):
        raise S3UriError("an S3 store root is s3://bucket/prefix with a valid bucket name (no credentials in it)")
    if prefix and any(part in ("", ".", "..") for part in prefix.split("/")):
        raise S3UriError("an S3 store prefix has no empty, '.' or '..' segments")
    return bucket, prefix


@contextmanager
def classified(what: str) -> Iterator[None]:
    """Missing objects become FileNotFoundError; every other client or connection failure S3Unavailable."""
    try:
        yield
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code in _MISSING:
            raise FileNotFoundError(what) from error
        raise S3Unavailable(f"the S3 store refused {what}: {code or 'error'}") from error
    except BotoCoreError as error:  # connection refused, timeouts, a stream cut short
        raise S3Unavailable(f"the S3 store is unreachable ({what}): {type(error).__name__}") from error


class S3Objects:
    """One bucket (and prefix) of an S3-compatible store, addressed by keys under the prefix."""

    def __init__(self, root: str, options: S3Options, client: Any = None) -> None:
        self.bucket, self.prefix = split_root(root)
        self.options = options
        self._client = client or s3_client(options)
        chunk = options.multipart_threshold_bytes
        self._transfer = TransferConfig(multipart_threshold=chunk, multipart_chunksize=chunk, max_concurrency=4)

    @property
    def base(self) -> str:
        """``bucket/prefix``: what the store's keys and URIs are built on."""
        return f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket

    def _key(self, path: str) -> str:
        """The object key of a store path ``bucket/prefix/...``."""
        return path.removeprefix(self.bucket + "/")

    def exists(self, path: str) -> bool:
        try:
            with classified(f"a lookup of {path}"):
                self._client.head_object(Bucket=self.bucket, Key=self._key(path))
        except FileNotFoundError:
            return False
        return True

    def write(self, path: str, data: bytes) -> None:
        """Upload whole (multipart above the threshold); the object appears complete or not at all."""
        with classified(f"an upload of {path}"):
            self._client.upload_fileobj(io.BytesIO(data), self.bucket, self._key(path), Config=self._transfer)

    @contextmanager
    def open(self, path: str) -> Iterator[Any]:
        """A readable stream of the object (``read(n)``); FileNotFoundError when it is not there."""
        with classified(f"a read of {path}"):
            body = self._client.get_object(Bucket=self.bucket, Key=self._key(path))["Body"]
            try:
                yield _ClassifiedReads(body, path)
            finally:
                body.close()


class _ClassifiedReads:
    """A response body whose failures mid-stream are S3Unavailable too."""

    def __init__(self, body: Any, path: str) -> None:
        self._body = body
        self._path = path

    def read(self, size: int = -1) -> bytes:
        with classified(f"a read of {self._path}"):
            data: bytes = self._body.read() if size < 0 else self._body.read(size)
            return data


def s3_client(options: S3Options) -> Any:
    """A boto3 S3 client: path-style addressing on a configured endpoint, few retries (the loop retries)."""
    config = Config(
        connect_timeout=5,
        read_timeout=60,
        retries={"max_attempts": 3, "mode": "standard"},
        s3={"addressing_style": "path" if options.endpoint_url else "auto"},
    )
    session = boto3.session.Session(
        aws_access_key_id=options.access_key_id, aws_secret_access_key=options.secret_access_key
    )
    return session.client("s3", endpoint_url=options.endpoint_url, region_name=options.region, config=config)
