"""Names of a dataset that joins an original with a production window: ``ORIGINAL+window:production/FILE.csv``.

The window file lives under the datasets root, in ``production/``, named after the model and the alert that
asked for it (``production/<model>-<alert id>.csv``), so the name is the same on every replica and every
redelivery. No I/O here: ``shared/datasets.py`` reads the mark, ``shared/production_window.py`` the files.
"""

from __future__ import annotations

import re

WINDOW_MARK = "+window:"
WINDOW_FOLDER = "production"
_WINDOW_FILE = re.compile(r"^production/[A-Za-z0-9][A-Za-z0-9_.-]{0,250}\.csv$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


class WindowNameError(ValueError):
    """A dataset name whose window part is not a production window file."""


def window_file(model_name: str, alert_id: str) -> str:
    """The window file of the alert ``alert_id`` about ``model_name``, relative to the datasets root."""
    stem = _UNSAFE.sub("_", f"{model_name}-{alert_id}")[:240]
    return f"{WINDOW_FOLDER}/{stem}.csv"


def with_window(dataset: str, window: str) -> str:
    """The name of ``dataset``'s original joined with ``window`` (an earlier window is replaced, not stacked)."""
    if not _WINDOW_FILE.match(window):
        raise WindowNameError(f"{window!r} is not a file under {WINDOW_FOLDER}/ ending in .csv")
    return f"{original_of(dataset)}{WINDOW_MARK}{window}"


def has_window(dataset: str) -> bool:
    """True for a dataset name that joins an original with a production window."""
    return WINDOW_MARK in dataset


def original_of(dataset: str) -> str:
    """The original dataset of a joined name; any other name is its own original."""
    return dataset.partition(WINDOW_MARK)[0]


def parts_of(dataset: str) -> tuple[str, str]:
    """(original, window file) of a joined name; WindowNameError when the window part is not a window file."""
    original, mark, window = dataset.partition(WINDOW_MARK)
    if not mark or not original or not _WINDOW_FILE.match(window):
        raise WindowNameError(f"a joined dataset is ORIGINAL{WINDOW_MARK}{WINDOW_FOLDER}/FILE.csv")
    return original, window
