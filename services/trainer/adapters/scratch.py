"""Scratch folders for training runs, and the clean-up of those a killed trainer left behind.

Each run works in ``<work root>/run-*`` and holds an exclusive ``flock`` on ``run-*.lock`` beside it
for as long as it runs. A folder whose lock nobody holds belongs to a run that is over: its trainer
finished (and removed it) or died (and could not). A trainer removes such folders when it starts.
Several trainers may share one work root: a live run's lock is held, so its folder is never taken.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "run-"


def _lock_of(folder: Path) -> Path:
    return folder.with_name(folder.name + ".lock")


@contextmanager
def run_folder(work_root: Path) -> Iterator[Path]:
    """A fresh scratch folder for one run, locked while the run lasts and removed after it."""
    work_root.mkdir(parents=True, exist_ok=True)
    descriptor, lock_path = tempfile.mkstemp(dir=work_root, prefix=PREFIX, suffix=".lock")
    fcntl.flock(descriptor, fcntl.LOCK_EX)  # taken before the folder exists: a cleaner never sees it unlocked
    folder = Path(lock_path[: -len(".lock")])
    try:
        folder.mkdir()
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        Path(lock_path).unlink(missing_ok=True)
        os.close(descriptor)


def clean_stale_runs(work_root: Path) -> list[Path]:
    """Remove the scratch folders of runs that are over (their lock is free); returns what was removed."""
    if not work_root.is_dir():
        return []
    removed: list[Path] = []
    for folder in sorted(work_root.glob(f"{PREFIX}*")):
        if not folder.is_dir():
            continue
        lock = _lock_of(folder)
        try:
            descriptor = os.open(lock, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            log.warning("cannot check scratch folder %s: %s", folder, error)
            continue
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(descriptor)
            continue  # a live run holds it
        try:
            shutil.rmtree(folder, ignore_errors=True)
            lock.unlink(missing_ok=True)
            removed.append(folder)
        finally:
            os.close(descriptor)
    for lock in sorted(work_root.glob(f"{PREFIX}*.lock")):
        if not lock.with_name(lock.name[: -len(".lock")]).exists() and _free(lock):
            lock.unlink(missing_ok=True)  # a run that died between taking its lock and making its folder
    if removed:
        log.warning(
            "removed %d stale run folder(s) left by a trainer that died: %s",
            len(removed),
            ", ".join(folder.name for folder in removed),
        )
    return removed


def _free(lock: Path) -> bool:
    try:
        descriptor = os.open(lock, os.O_RDWR)
    except OSError:
        return False
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(descriptor)
