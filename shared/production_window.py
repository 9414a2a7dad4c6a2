"""A production window as a dataset: labelled rows from production, written as csv under the datasets root, and
joined with the original dataset they are the recent traffic of.

``write_window`` materialises rows at the deterministic name of ``shared/production_names.py`` (written beside
and renamed, so no reader meets half a file). ``load_with_window`` loads ``ORIGINAL+window:FILE``: the original
as ``load_dataset`` would, the window file confined to the datasets root like any ``csv:`` file, its labels
mapped onto the original's classes. The joined dataset keeps both as its components, so ``split`` cuts each by
the one rule: the original's held-out rows stay held out (a window row equal to one of them is left out), and
so does a held-out part of the window.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from shared.dataset_files import DatasetError, dataset_path, number, read_rows
from shared.datasets import Dataset, fingerprint, load_dataset, split
from shared.events import Task
from shared.production_names import WindowNameError, parts_of

LABEL_COLUMN = "label"


@dataclass(frozen=True)
class LabelledRow:
    """One production answer with its ground truth: the input row the model was asked, and the true class name."""

    features: tuple[float, ...]
    label: str


def window_csv(rows: Sequence[LabelledRow]) -> str:
    """The csv text of a window: columns f0..fN-1 and ``label``, one line per row, in the order given."""
    width = len(rows[0].features) if rows else 0
    if any(len(row.features) != width for row in rows):
        raise ValueError("every row of a window has the same number of features")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*(f"f{index}" for index in range(width)), LABEL_COLUMN])
    for row in rows:
        writer.writerow([*(repr(float(value)) for value in row.features), row.label])
    return buffer.getvalue()


def write_window(root: Path, relative: str, rows: Sequence[LabelledRow]) -> Path:
    """Write the window at ``relative`` (a name from ``window_file``) under ``root``; the path written."""
    parts_of(f"x+window:{relative}")  # refuses anything but a production window file name
    base = root.resolve()
    target = base / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".{target.name}.{os.getpid()}.part")
    staged.write_text(window_csv(rows), encoding="utf-8")
    os.replace(staged, target)
    return target


def load_with_window(
    name: str, *, root: Path | None = None, task: Task | None = None, label_column: str | None = None
) -> Dataset:
    """The dataset ``ORIGINAL+window:FILE``: the original's rows then the window's, each kept as a component."""
    try:
        original_name, window = parts_of(name)
    except WindowNameError as error:
        raise DatasetError(name, str(error)) from None
    if task == "regression":
        raise DatasetError(name, "a production window joins a classification dataset only")
    if root is None:
        from shared.settings import FerrySettings

        root = FerrySettings().resolved_datasets_root
    original = load_dataset(original_name, label_column=label_column, root=root, task=task)
    if original.is_regression or original.is_text:
        raise DatasetError(name, "a production window joins a classification dataset of numeric features only")
    recent = _without_held_out(name, _load_window(name, window, root, original), original)
    features = np.concatenate([original.features, recent.features])
    labels = np.concatenate([original.labels, recent.labels])
    for array in (features, labels):
        array.flags.writeable = False
    digest = fingerprint(features, labels, original.class_names)
    return Dataset(
        name, features, labels, original.class_names, original.image_shape, digest, components=(original, recent)
    )


def _without_held_out(name: str, window: Dataset, original: Dataset) -> Dataset:
    """The window less any row equal to one of the original's held-out rows: production traffic may replay
    them, and no trainer may read them (the judgement on the original split would flatter the new version)."""
    held_out = {row.tobytes() for row in split(original).test.features}
    kept = np.array([row.tobytes() not in held_out for row in window.features], dtype=bool)
    if kept.all():
        return window
    if not kept.any():
        raise DatasetError(name, "every row of the window is a row of the original's held-out split")
    features, labels = window.features[kept], window.labels[kept]
    for array in (features, labels):
        array.flags.writeable = False
    digest = fingerprint(features, labels, window.class_names)
    return Dataset(window.name, features, labels, window.class_names, window.image_shape, digest)


def _load_window(name: str, window: str, root: Path, original: Dataset) -> Dataset:
    """The window file's rows, their labels as the original's class ids; a reason never quotes a cell."""
    path = dataset_path(name, window, root)
    header, rows = read_rows(name, path, root)
    width = original.num_features
    if len(header) != width + 1 or header[-1] != LABEL_COLUMN:
        raise DatasetError(name, f"the window needs {width} feature columns and then a {LABEL_COLUMN!r} column")
    if not rows:
        raise DatasetError(name, "the window has no rows")
    classes = {class_name: index for index, class_name in enumerate(original.class_names)}
    features = np.empty((len(rows), width), dtype=np.float32)
    labels = np.empty(len(rows), dtype=np.int64)
    for row_number, row in enumerate(rows, start=2):
        if len(row) != width + 1:
            raise DatasetError(name, f"window line {row_number} has {len(row)} cells, the header has {width + 1}")
        found = classes.get(row[-1].strip())
        if found is None:
            raise DatasetError(name, f"window line {row_number} has a label that is not one of the original's classes")
        labels[row_number - 2] = found
        features[row_number - 2] = [number(name, cell, row_number, column + 1) for column, cell in enumerate(row[:-1])]
    for array in (features, labels):
        array.flags.writeable = False
    digest = fingerprint(features, labels, original.class_names)
    return Dataset(f"csv:{window}", features, labels, original.class_names, original.image_shape, digest)
