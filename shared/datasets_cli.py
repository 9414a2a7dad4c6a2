"""``ferry datasets [--json]`` and ``ferry datasets add FILE [--name NAME] [--force]``: what the datasets
root holds, and a local csv file copied there to train on as ``csv:NAME``.

The datasets root (``FERRY_DATASETS_ROOT``, default ``<home>/datasets``) is the only folder ``csv:`` datasets
are read from. ``add`` loads the file the way the trainer will (``shared.datasets``) before it is in place,
so a file the trainer would refuse is refused here, with the same reason; the copy lands under a temporary
name and is renamed, so a reader never sees half a file. A different file of the same name is replaced
only with ``--force``; the same content is already there and changes nothing.

Exit codes (``shared.ops_common.Exit``): 0 done, 1 a refusal (a different file of that name), 2 bad usage
(a name that is not a ``.csv`` inside the root, a file the trainer would refuse), 3 no such FILE.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import re
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from shared.datasets import DEFAULT_LABEL_COLUMN, Dataset, DatasetError, load_dataset
from shared.events import Task
from shared.ops_common import CommandError, Exit, Table, add_json_flag, emit, run_verb
from shared.settings import FerrySettings

Command = Callable[[argparse.Namespace, FerrySettings], int]
SUFFIXES = (".csv",)  # what a csv: dataset reads; Parquet would need a loader of its own first
CHEAP_BYTES = 64 << 20  # rows and columns are counted for files up to this size; larger ones show '-'
_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def register(subparsers: Any) -> dict[str, Command]:
    """Add ``ferry datasets`` (the listing) and ``ferry datasets add``; returns the commands by key."""
    datasets = subparsers.add_parser("datasets", help="list the datasets root's files; add one to train on")
    add_json_flag(datasets)
    actions = datasets.add_subparsers(dest="action")
    add = actions.add_parser("add", help="copy a local csv file into the datasets root, to use as csv:NAME")
    add.add_argument("file", help="a local csv file with a header row and a label column")
    add.add_argument("--name", help="its name under the root, e.g. flowers.csv or team/flowers.csv (default: FILE's)")
    add.add_argument("--force", action="store_true", help="replace a different file of the same name")
    add.add_argument(
        "--label-column", default=DEFAULT_LABEL_COLUMN, help="the column of class labels, checked before the copy"
    )
    add.add_argument(
        "--task",
        choices=["classification", "regression"],
        default="classification",
        help="regression: the label column is a number to predict (train with ferry train --task regression)",
    )
    return {"datasets": run_list, "datasets.add": run_add}


def run_list(args: argparse.Namespace, settings: FerrySettings) -> int:
    """``ferry datasets``: the files under the root, with size, and rows and columns where cheap."""

    def body() -> int:
        root = settings.resolved_datasets_root
        table = datasets_table(root)
        if table.rows or args.json:
            emit(table, as_json=args.json)
        else:
            print(f"no datasets in {root}; ferry datasets add FILE copies a csv file there")
        return Exit.OK

    return run_verb(body)


def run_add(args: argparse.Namespace, settings: FerrySettings) -> int:
    """``ferry datasets add FILE``: checked, copied, and the ``csv:NAME`` to train with printed."""

    def body() -> int:
        added = add_dataset(
            Path(args.file),
            settings.resolved_datasets_root,
            name=args.name,
            force=args.force,
            label_column=args.label_column,
            task=args.task,
        )
        print(added.summary())
        return Exit.OK

    return run_verb(body)


@dataclass(frozen=True)
class Added:
    """What ``add`` did: the dataset's name, where it lies, what it holds, and whether it was there already."""

    name: str
    path: Path
    rows: int
    features: int
    classes: int
    unchanged: bool
    task: Task = "classification"
    text: bool = False

    def summary(self) -> str:
        done = "already there" if self.unchanged else "copied"
        target = "a numeric target" if self.task == "regression" else f"{self.classes} classes"
        shape = f"{self.rows} rows, {'one text' if self.text else f'{self.features} features'}, {target}"
        flag = " --task regression" if self.task == "regression" else " --arch gru" if self.text else ""
        return (
            f"{done}: {self.path} ({shape})\n"
            f"train on it with: ferry train --model MODEL --dataset csv:{self.name}{flag}"
        )


def dataset_name(file: Path, name: str | None) -> str:
    """The name under the root: ``name`` or FILE's, relative, of plain parts, ending in .csv; else USAGE."""
    chosen = name if name is not None else file.name
    parts = PurePosixPath(chosen).parts
    if not parts or not all(_PART.fullmatch(part) for part in parts) or ".." in parts:
        raise CommandError(
            Exit.USAGE,
            f"the name {chosen[:200]!r} is refused: use letters, digits, '_', '.', '-' and '/' between folders, "
            "relative to the datasets root (e.g. flowers.csv or team/flowers.csv)",
        )
    if not chosen.lower().endswith(SUFFIXES):
        raise CommandError(Exit.USAGE, f"the name {chosen!r} does not end in .csv: csv: datasets are csv files")
    return "/".join(parts)


def add_dataset(
    file: Path, root: Path, *, name: str | None, force: bool, label_column: str, task: Task = "classification"
) -> Added:
    """Copy ``file`` under ``root`` as ``name`` once it loads as a dataset; a CommandError says why not."""
    chosen = dataset_name(file, name)
    if not file.is_file():
        raise CommandError(Exit.NOT_FOUND, f"no file {str(file)!r}: give the path of a local csv file")
    target = root / chosen
    if target.is_symlink() or target.exists() and not target.is_file():
        raise CommandError(Exit.FAILED, f"{str(target)!r} exists and is not a plain file; remove it or pick --name")
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
    try:
        shutil.copyfile(file, staged)
        dataset = _checked(f"csv:{chosen}", staged, root, label_column, task)
        unchanged = target.is_file() and _sha256(target) == _sha256(staged)
        if target.is_file() and not unchanged and not force:
            raise CommandError(
                Exit.FAILED,
                f"{str(target)!r} holds a different file; --force replaces it, or --name picks another name",
            )
        if not unchanged:
            os.replace(staged, target)
    finally:
        staged.unlink(missing_ok=True)
    rows, features, classes = len(dataset.labels), dataset.num_features, dataset.num_classes
    return Added(chosen, target, rows, features, classes, unchanged, task, dataset.is_text)


def _checked(name: str, staged: Path, root: Path, label_column: str, task: Task) -> Dataset:
    """The staged copy, loaded as the trainer loads a csv: dataset (the reason never quotes the file)."""
    try:
        return load_dataset(f"csv:{staged.relative_to(root)}", label_column=label_column, root=root, task=task)
    except DatasetError as error:
        raise CommandError(Exit.USAGE, f"{name} would be refused by the trainer: {error.reason}") from None


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def datasets_table(root: Path) -> Table:
    """Every plain file under ``root`` (hidden and partial copies left out): its name, the dataset name of a
    csv file, its size, and its data rows and header columns when it is a csv file of at most CHEAP_BYTES."""
    records = [_describe(path, root) for path in _files(root)]
    rows = [(r["file"], r["dataset"], r["size_bytes"], r["rows"], r["columns"]) for r in records]
    return Table(f"datasets in {root}", ("file", "dataset", "bytes", "rows", "columns"), rows, records)


def _files(root: Path) -> list[Path]:
    if not root.is_dir():
        return []
    base = root.resolve()
    found = []
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or not path.is_file():
            continue
        if path.resolve().is_relative_to(base):  # a symlink out of the root is never read, so not listed
            found.append(path)
    return found


def _describe(path: Path, root: Path) -> dict[str, Any]:
    relative = path.relative_to(root).as_posix()
    size = path.stat().st_size
    if relative.lower().endswith(".parquet"):  # streamed, any size: its footer alone says its shape
        rows, columns = _parquet_shape(path)
        return {
            "file": relative,
            "dataset": f"parquet:{relative}",
            "size_bytes": size,
            "rows": rows,
            "columns": columns,
        }
    usable = relative.lower().endswith(SUFFIXES)
    rows, columns = _shape(path) if usable and size <= CHEAP_BYTES else (None, None)
    dataset = f"csv:{relative}" if usable else None
    return {"file": relative, "dataset": dataset, "size_bytes": size, "rows": rows, "columns": columns}


def _parquet_shape(path: Path) -> tuple[int | None, int | None]:
    """Rows and columns from a Parquet file's footer; None when it is no readable Parquet."""
    import pyarrow.parquet as pq  # here: only a root holding Parquet files needs pyarrow

    try:
        metadata = pq.read_metadata(path)
    except (OSError, ValueError):
        return None, None
    return metadata.num_rows, metadata.num_columns


def _shape(path: Path) -> tuple[int | None, int | None]:
    """Data rows (the header left out, blank lines skipped) and the header's columns; None when unreadable."""
    try:
        with path.open(newline="", encoding="utf-8") as handle:
            reader = csv.reader(handle)
            header = next(reader, None)
            rows = sum(1 for row in reader if any(cell.strip() for cell in row))
    except (OSError, UnicodeDecodeError, csv.Error):
        return None, None
    return (rows, len(header)) if header is not None else (0, 0)
