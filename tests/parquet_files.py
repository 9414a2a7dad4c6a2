"""Small Parquet datasets for the tests: an ``id`` key, a ``label``, numeric features (``row`` repeats the id,
so a test can tell which rows a reader gave it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

SECRET_CELL = "cell-text-that-must-never-appear-in-a-reason"


def dataset_table(
    rows: int, *, start: int = 0, seed: int = 0, classes: int = 3, regression: bool = False, text_labels: bool = False
) -> pa.Table:
    """A learnable table: the label is decided by the first two features (a regressor's target is linear in them)."""
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(rows, 3)).astype(np.float32)
    ids = np.arange(start, start + rows, dtype=np.int64)
    if regression:
        label: pa.Array = pa.array(3.0 * features[:, 0] - 2.0 * features[:, 1] + 0.1 * rng.normal(size=rows))
    else:
        classes_of = (features[:, 0] > 0).astype(np.int64) + (features[:, 1] > 0.5).astype(np.int64)
        classes_of = classes_of % classes
        label = pa.array([f"class-{c}" for c in classes_of]) if text_labels else pa.array(classes_of)
    return pa.table(
        {
            "id": ids,
            "label": label,
            "row": ids.astype(np.float64),
            **{f"x{i}": features[:, i] for i in range(features.shape[1])},
        }
    )


def write_files(folder: Path, tables: list[pa.Table], *, row_group_rows: int = 500) -> list[Path]:
    """One file per table, ``part-N.parquet``, in small row groups (so readers have units to share)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, table in enumerate(tables):
        path = folder / f"part-{index}.parquet"
        pq.write_table(table, path, row_group_size=row_group_rows)
        paths.append(path)
    return paths


def write_dataset(
    folder: Path, rows: int = 3000, files: int = 3, *, regression: bool = False, text_labels: bool = False
) -> list[Path]:
    """``rows`` rows over ``files`` files, ids 0..rows-1."""
    per_file = rows // files
    tables = [
        dataset_table(per_file, start=i * per_file, seed=i, regression=regression, text_labels=text_labels)
        for i in range(files)
    ]
    return write_files(folder, tables)
