"""Where a ``parquet:`` dataset's files are: its name parsed, its files found and opened, never as given.

``parquet:NAME`` is a file or a folder of ``*.parquet`` files relative to the datasets root
(``FERRY_DATASETS_ROOT``), confined there as ``csv:`` files are; ``parquet:s3://bucket/prefix`` is an
object (or every ``*.parquet`` object under a prefix) of the object store, read through pyarrow's S3
filesystem with the configured endpoint (``FERRY_S3_ENDPOINT_URL``) and boto3's credentials, and only
under the configured ``FERRY_DATASETS_S3_ROOT``: a URL that names another bucket or host is refused.

The name may end in options that choose the columns: ``?key=COLUMN&label=COLUMN&features=A,B,C``. They
are part of the name, so the trainer and the evaluator, which only see the name, cut the same split.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from shared.dataset_files import DatasetError, dataset_path
from shared.settings import FerrySettings

PREFIX = "parquet:"
DEFAULT_KEY_COLUMN = "id"
DEFAULT_LABEL_COLUMN = "label"
SUFFIX = ".parquet"
MAX_FILES = 10_000
_COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,127}$")
_OPTIONS = ("key", "label", "features")
_FOOTER_TAIL = 8  # a Parquet file ends in the footer's length (4 bytes, little-endian) and "PAR1"


@dataclass(frozen=True)
class ParquetName:
    """A ``parquet:`` name taken apart: where the files are, and which columns play which part."""

    location: str
    key_column: str = DEFAULT_KEY_COLUMN
    label_column: str = DEFAULT_LABEL_COLUMN
    feature_columns: tuple[str, ...] | None = None

    @property
    def is_s3(self) -> bool:
        return self.location.startswith("s3://")


@dataclass(frozen=True)
class ParquetFileEntry:
    """One file of a dataset: its name for people (relative), its size and the raw bytes of its footer."""

    relative: str
    size_bytes: int
    footer: bytes


Opener = Callable[[str], Any]
"""Opens a file of the dataset by its relative name: a seekable binary stream pyarrow can read."""


def is_parquet(name: str) -> bool:
    """True for a ``parquet:`` dataset name."""
    return name.startswith(PREFIX)


def parse_name(name: str) -> ParquetName:
    """``parquet:LOCATION[?key=C&label=C&features=A,B]``; a DatasetError for anything else."""
    body = name[len(PREFIX) :]
    location, _, query = body.partition("?")
    if not location.strip() or "\x00" in body:
        raise DatasetError(name, "parquet: needs a file or folder under the datasets root, or s3://bucket/prefix")
    options: dict[str, str] = {}
    for pair in query.split("&") if query else []:
        option, equals, value = pair.partition("=")
        if option not in _OPTIONS or not equals or option in options:
            raise DatasetError(
                name, f"options are key=COLUMN, label=COLUMN and features=A,B (each once); got {pair[:40]!r}"
            )
        options[option] = value
    columns = [options[o] for o in ("key", "label") if o in options]
    features = tuple(options["features"].split(",")) if "features" in options else None
    for column in [*columns, *(features or ())]:
        if not _COLUMN.match(column):
            raise DatasetError(name, "a column option names a column: letters, digits, '_', '.', '-'")
    parsed = ParquetName(
        location=location,
        key_column=options.get("key", DEFAULT_KEY_COLUMN),
        label_column=options.get("label", DEFAULT_LABEL_COLUMN),
        feature_columns=features,
    )
    if parsed.key_column == parsed.label_column:
        raise DatasetError(name, "the key column and the label column must differ")
    return parsed


def local_files(name: str, location: str, root: Path) -> tuple[list[ParquetFileEntry], Opener]:
    """The ``*.parquet`` files a location names under the datasets root (a file, or a folder searched deeply)."""
    if "://" in location:
        raise DatasetError(name, "only s3:// URLs (under FERRY_DATASETS_S3_ROOT) or paths under the datasets root")
    base = root.resolve()
    target = _confined(name, location, root)
    paths = [target] if target.is_file() else sorted(p for p in target.rglob(f"*{SUFFIX}") if _visible(p, target))
    if not paths:
        raise DatasetError(name, f"no {SUFFIX} files in {location!r} under the datasets root")
    if len(paths) > MAX_FILES:
        raise DatasetError(name, f"has more than {MAX_FILES} files; merge them into fewer, larger ones")

    def opener(relative: str) -> BinaryIO:
        return _open_inside(name, base / relative, base)

    entries = []
    for path in paths:
        resolved = path.resolve()
        if not resolved.is_relative_to(base) or not resolved.is_file():
            raise DatasetError(name, "a file of it leads out of the datasets root (a symlink); it is refused")
        entries.append(_entry(name, str(resolved.relative_to(base)), opener))
    return entries, opener


def _confined(name: str, location: str, root: Path) -> Path:
    """The file or folder ``location`` names inside ``root`` (the checks of csv: files, folders allowed too)."""
    relative = PurePosixPath(location)
    if relative.is_absolute() or ".." in relative.parts:
        raise DatasetError(name, "absolute paths and '..' are refused: name a path relative to the datasets root")
    base = root.resolve()
    candidate = (base / relative).resolve()
    if candidate.is_dir() and candidate.is_relative_to(base):
        return candidate
    return dataset_path(name, location, root)  # a file: the one confinement every file dataset goes through


def _visible(path: Path, folder: Path) -> bool:
    """Not a hidden or bookkeeping file (``.crc``, ``_SUCCESS``, ``_common_metadata``) of a writer."""
    return not any(part.startswith((".", "_")) for part in path.relative_to(folder).parts)


def _open_inside(name: str, path: Path, root: Path) -> BinaryIO:
    """Open for reading, refusing a symlink or a swap that leads out of ``root`` since it was listed."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as error:
        raise DatasetError(name, f"cannot open a file of it: {error.strerror or type(error).__name__}") from None
    try:
        opened = Path(os.readlink(f"/proc/self/fd/{descriptor}")) if Path("/proc/self/fd").is_dir() else path
        if not stat.S_ISREG(os.fstat(descriptor).st_mode) or not opened.is_relative_to(root):
            raise DatasetError(name, "a file of it leads out of the datasets root or is no regular file; refused")
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise


def s3_files(name: str, location: str, settings: FerrySettings) -> tuple[list[ParquetFileEntry], Opener]:
    """The objects an ``s3://bucket/prefix`` names, only under FERRY_DATASETS_S3_ROOT, on the configured endpoint."""
    from pyarrow import fs as pafs

    from shared.s3 import S3UriError, split_root

    allowed = settings.datasets_s3_root
    if not allowed:
        raise DatasetError(name, "s3:// datasets are off: FERRY_DATASETS_S3_ROOT names the bucket they may come from")
    try:
        bucket, prefix = split_root(location)
        allowed_bucket, allowed_prefix = split_root(allowed)
    except S3UriError as error:
        raise DatasetError(name, str(error)) from None
    inside = bucket == allowed_bucket and (not allowed_prefix or f"{prefix}/".startswith(f"{allowed_prefix}/"))
    if not inside:
        raise DatasetError(name, "the URL is outside FERRY_DATASETS_S3_ROOT, the only place s3 datasets are read from")
    filesystem = s3_filesystem(settings)
    base = f"{bucket}/{prefix}" if prefix else bucket
    try:
        found = filesystem.get_file_info(base)
        if found.type == pafs.FileType.File:
            keys = [base]
        else:
            listed = filesystem.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
            keys = sorted(i.path for i in listed if i.type == pafs.FileType.File and i.path.endswith(SUFFIX))
            keys = [key for key in keys if not any(p.startswith((".", "_")) for p in key[len(base) :].split("/"))]
    except OSError as error:
        raise read_failure(name, "the listing", error) from None
    if not keys:
        raise DatasetError(name, f"no {SUFFIX} objects under that prefix")
    if len(keys) > MAX_FILES:
        raise DatasetError(name, f"has more than {MAX_FILES} objects; merge them into fewer, larger ones")

    def opener(relative: str) -> Any:
        return filesystem.open_input_file(f"{bucket}/{relative}")

    entries = [_entry(name, key[len(bucket) + 1 :], opener) for key in keys]
    return entries, opener


def s3_filesystem(settings: FerrySettings) -> Any:
    """pyarrow's S3 filesystem on the configured endpoint, with boto3's credentials (environment, profile, role)."""
    import boto3
    from pyarrow import fs as pafs

    from shared.s3 import s3_options

    options = s3_options(settings)
    credentials = boto3.session.Session().get_credentials()
    frozen = credentials.get_frozen_credentials() if credentials is not None else None
    endpoint = options.endpoint_url
    scheme = "http" if endpoint and endpoint.startswith("http://") else "https"
    return pafs.S3FileSystem(
        access_key=frozen.access_key if frozen else None,
        secret_key=frozen.secret_key if frozen else None,
        session_token=frozen.token if frozen else None,
        anonymous=frozen is None,
        region=options.region or "us-east-1",
        endpoint_override=endpoint.split("://", 1)[1] if endpoint else None,
        scheme=scheme,
        connect_timeout=5,
        request_timeout=60,
    )


def _entry(name: str, relative: str, opener: Opener) -> ParquetFileEntry:
    """A file's size and footer, read from its tail; a DatasetError when it is no Parquet file."""
    try:
        with opener(relative) as stream:
            size = stream.seek(0, os.SEEK_END)
            if size < 2 * _FOOTER_TAIL:
                raise DatasetError(name, f"file {relative!r} is too short to be Parquet")
            stream.seek(size - _FOOTER_TAIL)
            tail = stream.read(_FOOTER_TAIL)
            length = int.from_bytes(tail[:4], "little")
            if tail[4:] != b"PAR1" or length > size - _FOOTER_TAIL:
                raise DatasetError(name, f"file {relative!r} is not a Parquet file")
            stream.seek(size - _FOOTER_TAIL - length)
            return ParquetFileEntry(relative, size, stream.read(length))
    except OSError as error:
        raise read_failure(name, f"file {relative!r}", error) from None


def read_failure(name: str, what: str, error: OSError | Exception) -> Exception:
    """The object store failing to answer (pyarrow's "AWS Error", not a missing object) is S3Unavailable, which
    the consumer loop retries; anything else (a local file, a corrupt one, a missing object) a DatasetError."""
    from shared.s3 import S3Unavailable

    message = str(error)
    if isinstance(error, OSError) and "AWS Error" in message and "NO_SUCH" not in message:
        return S3Unavailable(f"the object store failed to answer reading {what} of {name!r}")
    return DatasetError(name, f"{what} cannot be read: {type(error).__name__}")
