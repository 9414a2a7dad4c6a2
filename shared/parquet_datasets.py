"""``parquet:`` datasets larger than memory: described from their footers, split per row, read in batches.

Nothing here holds a whole table. :func:`open_parquet` reads each file's footer (schema, row groups) and
one pass over the label column (the classes, sorted, capped at :data:`MAX_CLASSES`); :func:`read_part`
then yields record batches of one part of the split, feature matrix and labels, one row group at a time.

The split is per row, by a hash of a key column (``id`` by default): blake2b (8-byte digest, keyed with
:data:`SPLIT_SALT`) of the key's canonical bytes (an integer as 8 bytes little-endian, text as UTF-8) read
as a little-endian unsigned 64-bit number ``h``; ``h / 2**64`` below TEST_FRACTION is test, below
TEST_FRACTION + VALIDATION_FRACTION validation, else train. So every machine puts a row in the same part
without seeing any other row, and a reader of the train part skips the held-out rows before decoding them
into features. The same fractions as ``shared.datasets``; the split id starts with :data:`SPLIT_VERSION`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from shared.dataset_files import DatasetError
from shared.datasets import MIN_ROWS, TEST_FRACTION, TRAIN_FRACTION, VALIDATION_FRACTION, Dataset, Part, Split
from shared.events import MAX_LABEL_CHARS, Task
from shared.parquet_sources import Opener, ParquetFileEntry, local_files, parse_name, read_failure, s3_files
from shared.settings import FerrySettings

PartName = Literal["train", "validation", "test"]
SPLIT_VERSION = "h1"
"""The tag of the hash split's ids: bump it (and the salt) when the rule changes, so no id is reused."""
SPLIT_SALT = b"ferry-parquet-split-h1"
MAX_CLASSES = 1000
BATCH_ROWS = 65_536
MAX_TEST_ROWS = 200_000
"""The evaluator judges a parquet: dataset on at most this many test rows: the first ones in file order."""
_TEST_BELOW = int(TEST_FRACTION * 2**64)
_VALIDATION_BELOW = int((TEST_FRACTION + VALIDATION_FRACTION) * 2**64)
_PART_CODES: dict[str, int] = {"train": 0, "validation": 1, "test": 2}


@dataclass(frozen=True, eq=False)
class ParquetDataset:
    """A ``parquet:`` dataset as the trainer and the evaluator see it: columns, classes, files; no rows."""

    name: str
    files: tuple[ParquetFileEntry, ...]
    row_groups: tuple[tuple[int, int], ...]
    """Every (file index, row group index): the units of work that readers divide among themselves."""
    key_column: str
    label_column: str
    feature_columns: tuple[str, ...]
    task: Task
    class_values: tuple[Any, ...]
    num_rows: int
    fingerprint: str
    opener: Opener = field(repr=False)
    metadata: tuple[pq.FileMetaData, ...] = field(repr=False)
    image_shape: tuple[int, int] | None = None

    @property
    def is_regression(self) -> bool:
        return self.task == "regression"

    @property
    def num_features(self) -> int:
        return len(self.feature_columns)

    @property
    def is_text(self) -> bool:
        """Parquet datasets are numeric features only (a text column is refused)."""
        return False

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(str(value) for value in self.class_values)

    @property
    def num_classes(self) -> int:
        return len(self.class_values)

    @property
    def split_id(self) -> str:
        """The dataset's fingerprint and the split's rule, hashed; the version tag first."""
        rule = (
            f"{SPLIT_VERSION}|{SPLIT_SALT.decode()}|{TRAIN_FRACTION}/{VALIDATION_FRACTION}/{TEST_FRACTION}|"
            f"key={self.key_column}|label={self.label_column}|features={','.join(self.feature_columns)}|{self.task}"
        )
        return f"{SPLIT_VERSION}-{hashlib.sha256(f'{self.fingerprint}|{rule}'.encode()).hexdigest()[:24]}"


def open_parquet(
    name: str, *, task: Task | None = None, root: Path | None = None, settings: FerrySettings | None = None
) -> ParquetDataset:
    """Describe a ``parquet:`` dataset from its footers and one pass over its label column."""
    settings = settings or FerrySettings()
    parsed = parse_name(name)
    if parsed.is_s3:
        files, opener = s3_files(name, parsed.location, settings)
    else:
        files, opener = local_files(name, parsed.location, root or settings.resolved_datasets_root)
    metadata = tuple(_metadata(name, entry) for entry in files)
    schema = metadata[0].schema.to_arrow_schema()
    for entry, found in zip(files[1:], metadata[1:], strict=True):
        if found.schema.to_arrow_schema() != schema:
            raise DatasetError(name, f"file {entry.relative!r} has another schema than the first file")
    features = _columns(name, schema, parsed.key_column, parsed.label_column, parsed.feature_columns)
    num_rows = sum(found.num_rows for found in metadata)
    if num_rows < MIN_ROWS:
        raise DatasetError(name, f"has {num_rows} rows; at least {MIN_ROWS} are needed to train and evaluate")
    dataset = ParquetDataset(
        name=name,
        files=tuple(files),
        row_groups=tuple((f, g) for f, found in enumerate(metadata) for g in range(found.num_row_groups)),
        key_column=parsed.key_column,
        label_column=parsed.label_column,
        feature_columns=features,
        task=task or "classification",
        class_values=(),
        num_rows=num_rows,
        fingerprint=_fingerprint(files),
        opener=opener,
        metadata=metadata,
    )
    return _with_classes(dataset, schema.field(parsed.label_column).type)


def _metadata(name: str, entry: ParquetFileEntry) -> pq.FileMetaData:
    """The footer already read, parsed (no second request): it wrapped as a Parquet file's tail is all pyarrow needs."""
    tail = b"PAR1" + entry.footer + len(entry.footer).to_bytes(4, "little") + b"PAR1"
    try:
        return pq.ParquetFile(pa.BufferReader(tail)).metadata
    except (OSError, pa.ArrowException):
        raise DatasetError(name, f"file {entry.relative!r} is not readable Parquet") from None


def _columns(name: str, schema: pa.Schema, key: str, label: str, named: tuple[str, ...] | None) -> tuple[str, ...]:
    """The feature columns (named, or every column but the key and the label); each must be numeric."""
    for role, column in (("key", key), ("label", label)):
        if schema.get_field_index(column) < 0:
            hint = "name another with ?key=COLUMN" if role == "key" else "name another with ?label=COLUMN"
            raise DatasetError(name, f"has no {role} column {column!r} among its {len(schema)} columns; {hint}")
    key_type = schema.field(key).type
    if not (pa.types.is_integer(key_type) or pa.types.is_string(key_type) or pa.types.is_large_string(key_type)):
        raise DatasetError(name, f"key column {key!r} must hold integers or text")
    features = named if named is not None else tuple(c for c in schema.names if c not in (key, label))
    for column in features:
        index = schema.get_field_index(column)
        if index < 0:
            raise DatasetError(name, f"has no feature column {column!r}")
        if column in (key, label):
            raise DatasetError(name, f"column {column!r} cannot be a feature: it is the key or the label")
        kind = schema.field(column).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)):
            raise DatasetError(name, f"column {index + 1} is not numeric; name the features with ?features=A,B")
    if not features:
        raise DatasetError(name, "has no feature columns")
    return features


def _fingerprint(files: Sequence[ParquetFileEntry]) -> str:
    """sha256 of each file's relative name, size and footer (schema, row groups, column statistics).

    Not of every byte: naming a 5 GB dataset must not cost a pass over it. A rewrite changes the footer.
    """
    digest = hashlib.sha256()
    for entry in files:
        digest.update(f"{entry.relative}|{entry.size_bytes}|{len(entry.footer)}|".encode())
        digest.update(entry.footer)
    return digest.hexdigest()


def _with_classes(dataset: ParquetDataset, label_type: pa.DataType) -> ParquetDataset:
    """Check the label column in one pass over it alone; a classifier's classes are its sorted distinct values."""
    name = dataset.name
    numeric = pa.types.is_integer(label_type) or pa.types.is_floating(label_type)
    if dataset.is_regression and not numeric:
        raise DatasetError(name, f"label column {dataset.label_column!r} is not numeric; a regressor needs numbers")
    distinct: set[Any] = set()
    for batch in _batches(dataset, range(len(dataset.row_groups)), [dataset.label_column]):
        labels = batch.column(0)
        if labels.null_count:
            raise DatasetError(name, f"label column {dataset.label_column!r} has missing values")
        if dataset.is_regression:
            if not np.isfinite(labels.to_numpy(zero_copy_only=False)).all():
                raise DatasetError(name, "has missing or infinite target values")
            continue
        distinct.update(pc.unique(labels).to_pylist())
        if len(distinct) > MAX_CLASSES:
            raise DatasetError(
                name, f"has more than {MAX_CLASSES} distinct labels (a number to predict? use --task regression)"
            )
    if dataset.is_regression:
        return dataset
    values = tuple(sorted(distinct))
    if len(values) < 2:
        raise DatasetError(name, f"has {len(values)} class; a classifier needs at least 2")
    if any(len(str(value)) > MAX_LABEL_CHARS for value in values):
        raise DatasetError(name, f"some class labels are longer than {MAX_LABEL_CHARS} characters")
    return replace(dataset, class_values=values)


def parts_of(keys: pa.Array) -> np.ndarray:
    """The part of each row (0 train, 1 validation, 2 test) from its key alone: the same on every machine."""
    blake2b, salt = hashlib.blake2b, SPLIT_SALT  # bound once: this runs for every row of every pass
    digests = b"".join([blake2b(key, digest_size=8, key=salt).digest() for key in _key_bytes(keys)])
    hashed = np.frombuffer(digests, dtype="<u8")
    parts = np.zeros(len(hashed), dtype=np.int8)
    parts[hashed < np.uint64(_VALIDATION_BELOW)] = 1
    parts[hashed < np.uint64(_TEST_BELOW)] = 2
    return parts


def _key_bytes(keys: pa.Array) -> list[bytes]:
    """The canonical bytes of each key: an integer as 8 bytes little-endian (two's complement), text as UTF-8."""
    if pa.types.is_integer(keys.type):
        raw = keys.to_numpy(zero_copy_only=False).astype("<i8").tobytes()
        return [raw[start : start + 8] for start in range(0, len(raw), 8)]
    return [value.encode() for value in keys.to_pylist()]


def read_part(
    dataset: ParquetDataset, part: PartName, units: Sequence[int], *, batch_rows: int = BATCH_ROWS
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(features float32 n×d, labels) of the rows of ``part`` in the given row groups, batch by batch.

    Labels are class ids (int64) for a classifier, float64 targets for a regressor. A DatasetError names the
    file and row group of a missing key or a missing or infinite feature, never a cell's value.
    """
    columns = [dataset.key_column, dataset.label_column, *dataset.feature_columns]
    classes = pa.array(list(dataset.class_values)) if not dataset.is_regression else None
    wanted = _PART_CODES[part]
    for batch, where in _batches(dataset, units, columns, batch_rows, located=True):
        keys = batch.column(0)
        if keys.null_count:
            raise DatasetError(dataset.name, f"key column {dataset.key_column!r} has missing values ({where})")
        chosen = np.flatnonzero(parts_of(keys) == wanted)
        if len(chosen) == 0:
            continue
        rows = batch.take(pa.array(chosen))
        features = np.column_stack(
            [rows.column(i).to_numpy(zero_copy_only=False).astype(np.float32) for i in range(2, rows.num_columns)]
        )
        if not np.isfinite(features).all():
            raise DatasetError(dataset.name, f"has missing or infinite feature values ({where})")
        yield features, _labels(rows.column(1), classes)


def _labels(column: pa.Array, classes: pa.Array | None) -> np.ndarray:
    if classes is None:
        return column.to_numpy(zero_copy_only=False).astype(np.float64)
    return pc.index_in(column, value_set=classes.cast(column.type)).to_numpy(zero_copy_only=False).astype(np.int64)


def _batches(
    dataset: ParquetDataset,
    units: Sequence[int] | range,
    columns: list[str],
    batch_rows: int = BATCH_ROWS,
    *,
    located: bool = False,
) -> Iterator[Any]:
    """Record batches of the given row groups (each opened on its own, so any reader can take any unit)."""
    for unit in units:
        file_index, group = dataset.row_groups[unit]
        entry = dataset.files[file_index]
        where = f"file {entry.relative!r}, row group {group}"
        try:
            with dataset.opener(entry.relative) as stream:
                reader = pq.ParquetFile(stream, metadata=dataset.metadata[file_index])
                for batch in reader.iter_batches(batch_size=batch_rows, row_groups=[group], columns=columns):
                    yield (batch, where) if located else batch
        except (OSError, pa.ArrowException) as error:
            raise read_failure(dataset.name, where, error) from None


def held_out_split(
    name: str,
    *,
    task: Task | None = None,
    max_test_rows: int = MAX_TEST_ROWS,
    root: Path | None = None,
    settings: FerrySettings | None = None,
) -> Split:
    """The evaluator's view: the first ``max_test_rows`` test rows (file order) in memory; no train or
    validation rows, which the evaluator never needs. Its ``dataset`` holds those test rows only."""
    dataset = open_parquet(name, task=task, root=root, settings=settings)
    features, labels, taken = [], [], 0
    for batch_features, batch_labels in read_part(dataset, "test", range(len(dataset.row_groups))):
        keep = min(len(batch_labels), max_test_rows - taken)
        features.append(batch_features[:keep])
        labels.append(batch_labels[:keep])
        taken += keep
        if taken >= max_test_rows:
            break
    label_type = np.float64 if dataset.is_regression else np.int64
    test = Part(
        np.concatenate(features) if features else np.empty((0, dataset.num_features), np.float32),
        np.concatenate(labels) if labels else np.empty(0, label_type),
    )
    if len(test) == 0:
        raise DatasetError(name, "has no rows in its test part")
    empty = Part(np.empty((0, dataset.num_features), np.float32), np.empty(0, label_type))
    rows = Dataset(name, test.features, test.labels, dataset.class_names, None, dataset.fingerprint, dataset.task)
    return Split(split_id=dataset.split_id, dataset=rows, train=empty, validation=empty, test=test)
