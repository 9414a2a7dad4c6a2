"""Triton's classification extension, free of I/O: an output asked for with ``parameters.classification: k``
comes back as its top ``k`` classes per row, each the string ``"<score>:<index>[:<label>]"``.

As Triton does: the score is written as C's ``%f`` for a float (``0.950000``) and as an integer for an
integer output; the label is left out when the model names no classes; and ``k`` larger than the number of
classes gives them all (Triton clamps the count too). Unlike Triton, whose sort is unstable, equal scores
are ranked by their index, lowest first, so that the same answer always reads the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from services.gateway.domain import InvalidInput

MAX_CLASSES_SHOWN = 1_000_000  # beyond any model's class count: k only needs to be an integer at least 1


def classification_count(value: Any, output: str) -> int | None:
    """The ``classification`` parameter of a requested output: None when absent, else an integer >= 1."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_CLASSES_SHOWN:
        raise InvalidInput(
            f"output {output!r}: parameters.classification must be an integer from 1 to {MAX_CLASSES_SHOWN} "
            "(the number of top classes to return)"
        )
    return value


def top_classes(scores: np.ndarray, count: int, labels: Sequence[str] | None, output: str) -> np.ndarray:
    """The top ``count`` classes of each row of ``scores`` ([batch, classes]; a rank-1 output is one row),
    as an array of strings [batch, min(count, classes)] (rank 1: [min(count, classes)])."""
    if scores.ndim not in (1, 2) or scores.dtype.kind not in "iuf":
        raise InvalidInput(
            f"output {output!r} cannot be classified: it is {scores.dtype.name} of rank {scores.ndim}; "
            "classification needs numbers of rank 1 or 2 ([batch, classes])"
        )
    rows = scores.reshape(1, -1) if scores.ndim == 1 else scores
    classes = rows.shape[1]
    shown = min(count, classes)
    # A stable ascending sort of each row reversed, read backwards: descending scores, ties by lowest index.
    order = (classes - 1) - np.argsort(rows[:, ::-1], axis=1, kind="stable")[:, ::-1][:, :shown]
    float_scores = rows.dtype.kind == "f"
    formatted = np.empty((rows.shape[0], shown), dtype=object)
    for row_index, (row, indices) in enumerate(zip(rows, order, strict=True)):
        for rank, index in enumerate(indices.tolist()):
            formatted[row_index, rank] = _entry(row[index], index, labels, float_scores)
    return formatted.reshape(-1) if scores.ndim == 1 else formatted


def _entry(score: Any, index: int, labels: Sequence[str] | None, float_scores: bool) -> str:
    text = f"{float(score):f}:{index}" if float_scores else f"{int(score)}:{index}"
    return f"{text}:{labels[index]}" if labels is not None and index < len(labels) else text
