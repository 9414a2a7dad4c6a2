"""Named datasets and the one deterministic split every service uses.

``load_dataset("sklearn:digits")`` or ``load_dataset("csv:flowers.csv")`` gives a :class:`Dataset`;
``split(dataset)`` cuts it into train / validation / test the same way on every machine, so the
evaluator's test rows are exactly the rows no trainer has read. Only sklearn's bundled data is
used: nothing is downloaded.

A dataset has a task: classification (labels are class ids, the split is stratified by class) or
regression (labels are numbers, the split is stratified by quantile groups of the target).
``sklearn:diabetes`` is regression; a ``csv:`` file is classification unless the request says regression.
A ``csv:`` file whose one column beside the label is named ``text`` is a text dataset (``shared/text_datasets.py``):
its rows are texts (``Dataset.texts``, ``Part.texts``), and a text model takes them as they are.

A ``csv:`` name comes from an event, so it is never opened as given: it is a path relative to the
datasets root (``FERRY_DATASETS_ROOT``, default ``<home>/datasets``), confined there by
``shared.dataset_files``. No reason a load fails with quotes the file's content (reasons travel on
``training.status``, where anyone can read them): cells, column names and class labels are referred to
by position and count only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# DatasetError and dataset_path live with the file reading; importers find them here as before.
from shared.dataset_files import DatasetError, class_ids, dataset_path, number, read_rows
from shared.events import MAX_LABEL_CHARS, Task
from shared.production_names import WINDOW_MARK
from shared.text_datasets import is_text_table, text_fingerprint, text_rows

SPLIT_SEED = 20240601
"""The seed of the one split: changing it changes every split_id, so it never changes."""

TRAIN_FRACTION, VALIDATION_FRACTION, TEST_FRACTION = 0.70, 0.15, 0.15
MIN_ROWS = 20
MIN_ROWS_PER_CLASS = 3  # one row for each part of the split
DEFAULT_LABEL_COLUMN = "label"
REGRESSION_GROUPS = 5  # quantile groups of the target a regression split is stratified by
_SPLIT_VERSION = "v1"  # bump when the algorithm changes, so old split ids are never reused


@dataclass(frozen=True, eq=False)
class Dataset:
    """Features (float32, n×d), labels (int64 class ids, or float64 targets for regression), class names
    (none for regression), a content fingerprint and the task."""

    name: str
    features: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    image_shape: tuple[int, int] | None
    fingerprint: str
    task: Task = "classification"
    texts: np.ndarray | None = None
    """A text dataset's one text per row (an object array of str); its ``features`` then has no columns."""
    components: tuple[Dataset, ...] = ()
    """A dataset made of others (an original plus a production window, ``shared/production_window.py``):
    each is split on its own by the one rule and the parts joined, so each one's held-out rows stay held out."""

    @property
    def is_regression(self) -> bool:
        return self.task == "regression"

    @property
    def is_text(self) -> bool:
        return self.texts is not None

    @property
    def num_features(self) -> int:
        return int(self.features.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


@dataclass(frozen=True, eq=False)
class Part:
    """One part of a split: rows of features (or of a text dataset's texts) and their labels."""

    features: np.ndarray
    labels: np.ndarray
    texts: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def inputs(self) -> np.ndarray:
        """What a served model takes for these rows: the texts of a text dataset, else the features."""
        return self.features if self.texts is None else self.texts


@dataclass(frozen=True, eq=False)
class Split:
    """Train / validation / test parts of one dataset; ``split_id`` names exactly this cut."""

    split_id: str
    dataset: Dataset
    train: Part
    validation: Part
    test: Part


def fingerprint(
    features: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...], task: Task = "classification"
) -> str:
    """sha256 of the content (shapes, little-endian values, class names, the task when regression), not of the
    file name; a classification dataset's fingerprint is what it was before tasks existed."""
    digest = hashlib.sha256()
    digest.update(f"{features.shape}|{labels.shape}|".encode())
    digest.update(np.ascontiguousarray(features, dtype="<f4").tobytes())
    if task == "regression":
        digest.update(np.ascontiguousarray(labels, dtype="<f8").tobytes())
        digest.update(b"|regression")
    else:
        digest.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
    digest.update("\x1f".join(class_names).encode())
    return digest.hexdigest()


def _make(
    name: str,
    features: np.ndarray,
    labels: np.ndarray,
    classes: tuple[str, ...],
    image_shape: tuple[int, int] | None = None,
    task: Task = "classification",
) -> Dataset:
    features = np.ascontiguousarray(features, dtype=np.float32)
    if task == "regression":
        labels = np.ascontiguousarray(labels, dtype=np.float64)
        _check_targets(name, features, labels)
    else:
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        _check_shape(name, features, labels, classes)
    features.flags.writeable = False  # shared by every split part: nobody edits it in place
    labels.flags.writeable = False
    digest = fingerprint(features, labels, classes, task)
    return Dataset(name, features, labels, classes, image_shape, digest, task)


def _check_rows(name: str, features: np.ndarray, rows: int) -> None:
    if features.ndim != 2 or features.shape[1] == 0:
        raise DatasetError(name, "has no feature columns")
    if not np.isfinite(features).all():
        raise DatasetError(name, "has missing or infinite feature values")
    if rows < MIN_ROWS:
        raise DatasetError(name, f"has {rows} rows; at least {MIN_ROWS} are needed to train and evaluate")


def _check_targets(name: str, features: np.ndarray, targets: np.ndarray) -> None:
    _check_rows(name, features, len(targets))
    if not np.isfinite(targets).all():
        raise DatasetError(name, "has missing or infinite target values")
    if float(np.ptp(targets)) == 0.0:
        raise DatasetError(name, "has the same target on every row; a regressor needs targets that vary")


def _check_shape(name: str, features: np.ndarray, labels: np.ndarray, classes: tuple[str, ...]) -> None:
    _check_rows(name, features, len(labels))
    _check_classes(name, labels, classes)


def _check_classes(name: str, labels: np.ndarray, classes: tuple[str, ...]) -> None:
    if len(classes) < 2:
        raise DatasetError(name, f"has {len(classes)} class; a classifier needs at least 2")
    long_names = sum(len(class_name) > MAX_LABEL_CHARS for class_name in classes)
    if long_names:  # class names travel in the model's signature, which bounds them
        raise DatasetError(name, f"{long_names} of its class labels are longer than {MAX_LABEL_CHARS} characters")
    counts = np.bincount(labels, minlength=len(classes))
    rare = [index for index, count in enumerate(counts) if count < MIN_ROWS_PER_CLASS]
    if rare:
        raise DatasetError(
            name,
            f"{len(rare)} of its {len(classes)} classes have fewer than {MIN_ROWS_PER_CLASS} rows; "
            "each split part needs one of each (a number to predict, not a class? use --task regression)",
        )


def _sklearn(loader_name: str, image_shape: tuple[int, int] | None = None) -> Callable[[str], Dataset]:
    def load(name: str) -> Dataset:
        # Imported here: sklearn is heavy, and only the bundled loaders are needed (no download).
        from sklearn import datasets as sk_datasets

        bunch = getattr(sk_datasets, loader_name)()
        classes = tuple(str(target) for target in bunch.target_names)
        return _make(name, bunch.data, bunch.target, classes, image_shape)

    return load


def _sklearn_regression(loader_name: str) -> Callable[[str], Dataset]:
    def load(name: str) -> Dataset:
        from sklearn import datasets as sk_datasets

        bunch = getattr(sk_datasets, loader_name)()
        return _make(name, bunch.data, bunch.target, (), task="regression")

    return load


_SKLEARN: dict[str, Callable[[str], Dataset]] = {
    "sklearn:digits": _sklearn("load_digits", (8, 8)),
    "sklearn:breast_cancer": _sklearn("load_breast_cancer"),
    "sklearn:wine": _sklearn("load_wine"),
    "sklearn:iris": _sklearn("load_iris"),
    "sklearn:diabetes": _sklearn_regression("load_diabetes"),
}


def known_datasets() -> list[str]:
    """Names that load_dataset understands (besides csv:PATH), and parquet:PATH, which is streamed instead."""
    return [*_SKLEARN, "csv:PATH", "parquet:PATH"]


def load_dataset(
    name: str, *, label_column: str | None = None, root: Path | None = None, task: Task | None = None
) -> Dataset:
    """Load a named dataset: ``sklearn:digits|breast_cancer|wine|iris|diabetes`` or ``csv:PATH``.

    ``PATH`` is relative to ``root``, by default the settings' datasets root (``FERRY_DATASETS_ROOT``).
    ``task`` None means the dataset's own (a csv file: classification); a bundled dataset refuses another.
    """
    if name in _SKLEARN:
        if label_column is not None:
            raise DatasetError(name, "label_column applies only to csv datasets")
        dataset = _SKLEARN[name](name)
        if task is not None and task != dataset.task:
            raise DatasetError(name, f"is a {dataset.task} dataset; it cannot be used for {task}")
        return dataset
    if name.startswith("csv:"):
        if root is None:
            from shared.settings import FerrySettings

            root = FerrySettings().resolved_datasets_root
        path = dataset_path(name, name[len("csv:") :], root)
        return _load_csv(name, path, root, label_column or DEFAULT_LABEL_COLUMN, task or "classification")
    if WINDOW_MARK in name:
        from shared.production_window import load_with_window

        return load_with_window(name, root=root, task=task, label_column=label_column)
    if name.startswith("parquet:"):
        # Larger than memory by design: shared.parquet_datasets streams it, and split() has no part in it.
        raise DatasetError(name, "a parquet: dataset is streamed, never loaded whole (shared.parquet_datasets)")
    raise DatasetError(name, f"unknown dataset; known: {', '.join(known_datasets())}")


def _load_csv(name: str, path: Path, root: Path, label_column: str, task: Task) -> Dataset:
    header, rows = read_rows(name, path, root)
    if label_column not in header:
        raise DatasetError(name, f"has no label column {label_column!r} among its {len(header)} header columns")
    label_index = header.index(label_column)
    if is_text_table(header, label_index):
        return _load_text(name, header, rows, label_index, task)
    feature_indices = [index for index in range(len(header)) if index != label_index]
    features = np.empty((len(rows), len(feature_indices)), dtype=np.float64)
    raw_labels: list[str] = []
    for row_number, row in enumerate(rows, start=2):  # line 1 is the header
        if len(row) != len(header):
            raise DatasetError(name, f"line {row_number} has {len(row)} cells, the header has {len(header)}")
        raw_labels.append(row[label_index].strip())
        for column, index in enumerate(feature_indices):
            features[row_number - 2, column] = number(name, row[index], row_number, index + 1)
    if task == "regression":
        targets = [number(name, cell, row_number, label_index + 1) for row_number, cell in enumerate(raw_labels, 2)]
        return _make(name, features, np.array(targets, dtype=np.float64), (), task="regression")
    labels, classes = class_ids(raw_labels)
    return _make(name, features, labels, classes)


def _load_text(name: str, header: list[str], rows: list[list[str]], label_index: int, task: Task) -> Dataset:
    """A text dataset (``shared/text_datasets.py``): one text per row, no feature columns, classes only."""
    if task == "regression":
        raise DatasetError(name, "is a text dataset; text trains classifiers only, not regressors")
    texts, raw_labels = text_rows(name, header, rows, label_index)
    labels, classes = class_ids(raw_labels)
    if len(labels) < MIN_ROWS:
        raise DatasetError(name, f"has {len(labels)} rows; at least {MIN_ROWS} are needed to train and evaluate")
    _check_classes(name, labels, classes)
    for array in (texts, labels):
        array.flags.writeable = False
    features = np.zeros((len(labels), 0), dtype=np.float32)
    digest = text_fingerprint(texts, labels, classes)
    return Dataset(name, features, labels, classes, None, digest, texts=texts)


def _strata(dataset: Dataset) -> np.ndarray:
    """The stratum of each row: its class, or for regression the quantile group of its target (ties by row order)."""
    if not dataset.is_regression:
        return np.asarray(dataset.labels)
    ranks = np.empty(len(dataset.labels), dtype=np.int64)
    ranks[np.argsort(dataset.labels, kind="stable")] = np.arange(len(dataset.labels))
    return ranks * REGRESSION_GROUPS // len(dataset.labels)


def split(dataset: Dataset, *, seed: int = SPLIT_SEED) -> Split:
    """The deterministic, stratified 70/15/15 split; every service that cuts a dataset calls this."""
    if dataset.components:
        return _joined_split(dataset, [split(part, seed=seed) for part in dataset.components], seed)
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "validation": [], "test": []}
    strata = _strata(dataset)
    for stratum in range(REGRESSION_GROUPS if dataset.is_regression else dataset.num_classes):
        rows = np.flatnonzero(strata == stratum)
        rows = rows[rng.permutation(len(rows))]
        n_test = max(1, round(len(rows) * TEST_FRACTION))
        n_validation = max(1, round(len(rows) * VALIDATION_FRACTION))
        parts["test"].append(rows[:n_test])
        parts["validation"].append(rows[n_test : n_test + n_validation])
        parts["train"].append(rows[n_test + n_validation :])
    chosen = {part: np.sort(np.concatenate(indices)) for part, indices in parts.items()}
    return Split(
        split_id=split_id(dataset, seed=seed),
        dataset=dataset,
        train=_part(dataset, chosen["train"]),
        validation=_part(dataset, chosen["validation"]),
        test=_part(dataset, chosen["test"]),
    )


def _joined_split(dataset: Dataset, cuts: list[Split], seed: int) -> Split:
    """The parts of each component's own split, joined in order: train with train, test with test."""

    def joined(parts: list[Part]) -> Part:
        features = np.concatenate([part.features for part in parts])
        labels = np.concatenate([part.labels for part in parts])
        for array in (features, labels):
            array.flags.writeable = False
        return Part(features, labels)

    return Split(
        split_id=split_id(dataset, seed=seed),
        dataset=dataset,
        train=joined([cut.train for cut in cuts]),
        validation=joined([cut.validation for cut in cuts]),
        test=joined([cut.test for cut in cuts]),
    )


def _part(dataset: Dataset, rows: np.ndarray) -> Part:
    features = dataset.features[rows]
    labels = dataset.labels[rows]
    texts = None if dataset.texts is None else dataset.texts[rows]
    for array in (features, labels, texts):
        if array is not None:
            array.flags.writeable = False  # a part is read, never edited in place
    return Part(features, labels, texts)


def split_id(dataset: Dataset, *, seed: int = SPLIT_SEED) -> str:
    """Identifier of a split: the dataset fingerprint plus the split parameters, hashed."""
    parameters = f"{_SPLIT_VERSION}|{seed}|{TRAIN_FRACTION}/{VALIDATION_FRACTION}/{TEST_FRACTION}|stratified"
    if dataset.is_regression:
        parameters += f"-by-target-{REGRESSION_GROUPS}-quantiles"
    if dataset.components:
        parameters += "|joined:" + ",".join(str(len(part.labels)) for part in dataset.components)
    digest = hashlib.sha256(f"{dataset.fingerprint}|{parameters}".encode()).hexdigest()
    return f"{_SPLIT_VERSION}-{digest[:24]}"
