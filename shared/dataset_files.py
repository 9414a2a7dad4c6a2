"""A ``csv:`` dataset's file: confined to the datasets root, read as text rows, cells as numbers.

A ``csv:`` name comes from an event, so it is never opened as given: it is a path relative to the
datasets root, and an absolute path, a ``..``, a URL or a symlink that leads out of the root is refused.
No reason quotes the file's content: cells, column names and labels are referred to by position and count.
"""

from __future__ import annotations

import csv
import math
import os
import stat
from pathlib import Path, PurePosixPath
from typing import TextIO

import numpy as np


class DatasetError(Exception):
    """A dataset that cannot be loaded or split; the message tells a person what to fix."""

    def __init__(self, dataset: str, reason: str) -> None:
        super().__init__(f"dataset {dataset!r}: {reason}")
        self.dataset = dataset
        self.reason = reason


_RELATIVE_ONLY = "name a file relative to the datasets root (FERRY_DATASETS_ROOT), e.g. csv:flowers.csv"


def dataset_path(name: str, location: str, root: Path) -> Path:
    """The file that ``location`` names inside ``root``; a DatasetError for anything that leaves it."""
    if not location.strip() or "\x00" in location:
        raise DatasetError(name, f"csv: needs a file name: {_RELATIVE_ONLY}")
    if "://" in location:
        raise DatasetError(name, f"URLs are refused: {_RELATIVE_ONLY}")
    relative = PurePosixPath(location)
    if relative.is_absolute():
        raise DatasetError(name, f"absolute paths are refused: {_RELATIVE_ONLY}")
    if ".." in relative.parts:
        raise DatasetError(name, f"'..' is refused: {_RELATIVE_ONLY}")
    base = root.resolve()
    if not base.is_dir():
        raise DatasetError(
            name,
            f"the datasets root {str(root)!r} (FERRY_DATASETS_ROOT) does not exist; "
            "ferry datasets add FILE creates it and copies a csv file there",
        )
    target = (base / relative).resolve()
    if not target.is_relative_to(base):
        raise DatasetError(name, "the path leads out of the datasets root (a symlink); it is refused")
    if not target.is_file():
        raise DatasetError(
            name,
            f"no file {location!r} under the datasets root {str(root)!r} (FERRY_DATASETS_ROOT); "
            f"copy it there with: ferry datasets add FILE --name {relative}",
        )
    return target


def open_inside(name: str, path: Path, root: Path) -> TextIO:
    """Open ``path`` for reading, refusing a symlink or a swap that leads out of ``root`` since it was resolved."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise DatasetError(name, f"cannot open the file: {error.strerror or type(error).__name__}") from None
    try:
        opened = Path(os.readlink(f"/proc/self/fd/{descriptor}")) if Path("/proc/self/fd").is_dir() else path
        if not stat.S_ISREG(os.fstat(descriptor).st_mode) or not opened.is_relative_to(root.resolve()):
            raise DatasetError(name, "the path leads out of the datasets root or to no regular file; it is refused")
        return os.fdopen(descriptor, newline="", encoding="utf-8")
    except BaseException:
        os.close(descriptor)
        raise


def read_rows(name: str, path: Path, root: Path) -> tuple[list[str], list[list[str]]]:
    reader = None
    try:
        with open_inside(name, path, root) as handle:
            reader = csv.reader(handle)
            rows = [row for row in reader if any(cell.strip() for cell in row)]
    except UnicodeDecodeError:
        raise DatasetError(name, "the file is not UTF-8 text") from None
    except csv.Error:
        line = f" near line {reader.line_num}" if reader is not None else ""
        raise DatasetError(name, f"the file is not valid csv{line}") from None
    except OSError as error:
        raise DatasetError(name, f"the file cannot be read: {error.strerror or type(error).__name__}") from None
    if not rows:
        raise DatasetError(name, "the csv file is empty; it needs a header row and data rows")
    header = [cell.strip() for cell in rows[0]]
    return header, rows[1:]


def number(name: str, cell: str, row_number: int, column: int) -> float:
    """The cell as a number; the reason names the column by its position, never quoting the cell."""
    try:
        value = float(cell)
    except ValueError:
        raise DatasetError(name, f"column {column} is not numeric on line {row_number}") from None
    if not math.isfinite(value):
        raise DatasetError(name, f"column {column} has a missing or infinite value on line {row_number}")
    return value


def class_ids(raw_labels: list[str]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Class ids in sorted order: numerically when every label is a number, else as text."""
    distinct = set(raw_labels)
    try:
        ordered = sorted(distinct, key=float)
    except ValueError:
        ordered = sorted(distinct)
    index = {label: class_id for class_id, label in enumerate(ordered)}
    return np.array([index[label] for label in raw_labels], dtype=np.int64), tuple(ordered)
