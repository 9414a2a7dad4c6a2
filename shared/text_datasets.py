"""Text ``csv:`` datasets: which csv files hold text, and their rows as texts and labels.

A csv file is a text dataset when, besides its label column, it has exactly one column and that column is
named ``text``: one text per row (``shared.text`` tokenises it). The name decides, not the cells, so a
tabular file with a stray word in it is still refused as before ("column 1 is not numeric"), and texts that
happen to look like numbers are still texts. Like every dataset reason, no message here quotes a cell.
"""

from __future__ import annotations

import hashlib

import numpy as np

from shared.dataset_files import DatasetError

TEXT_COLUMN = "text"


def is_text_table(header: list[str], label_index: int) -> bool:
    """True when the one column beside the label is named ``text``."""
    return len(header) == 2 and header[1 - label_index] == TEXT_COLUMN


def text_rows(name: str, header: list[str], rows: list[list[str]], label_index: int) -> tuple[np.ndarray, list[str]]:
    """Each row's text (an object array of str) and its raw label; DatasetError for a ragged row."""
    texts: list[str] = []
    raw_labels: list[str] = []
    for row_number, row in enumerate(rows, start=2):  # line 1 is the header
        if len(row) != len(header):
            raise DatasetError(name, f"line {row_number} has {len(row)} cells, the header has {len(header)}")
        texts.append(row[1 - label_index])
        raw_labels.append(row[label_index].strip())
    array = np.empty(len(texts), dtype=object)
    array[:] = texts
    return array, raw_labels


def text_fingerprint(texts: np.ndarray, labels: np.ndarray, class_names: tuple[str, ...]) -> str:
    """sha256 of the texts (each length-prefixed, UTF-8), the labels and the class names."""
    digest = hashlib.sha256(f"text|{len(texts)}|".encode())
    for text in texts:
        encoded = str(text).encode()
        digest.update(len(encoded).to_bytes(8, "little") + encoded)
    digest.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
    digest.update("\x1f".join(class_names).encode())
    return digest.hexdigest()
