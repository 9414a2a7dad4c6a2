"""A regressor's predicted value, cut into bins: the same cut for the trainer (which chooses the edges), the
evaluator (which measures the held-out distribution over them) and the gateway (which counts live predictions
in them), so the monitor's drift compares like with like."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DRIFT_BINS = 10
"""Bins of a regressor's predicted value: deciles of its predictions on rows it was not trained on."""


def quantile_edges(values: np.ndarray, bins: int = DRIFT_BINS) -> list[float]:
    """The inner edges that cut ``values`` into ``bins`` groups of about equal size; repeated edges merged."""
    finite = np.asarray(values, dtype=np.float64).ravel()
    finite = finite[np.isfinite(finite)]
    if finite.size == 0 or bins < 2:
        return []
    inner = np.quantile(finite, np.linspace(0, 1, bins + 1)[1:-1])
    return [float(edge) for edge in np.unique(inner)]


def bin_of(values: np.ndarray, edges: Sequence[float]) -> np.ndarray:
    """The bin index of each value: bin i holds edges[i-1] < v <= edges[i] (bin 0 is v <= edges[0])."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), np.asarray(values, dtype=np.float64), side="left")


def as_values(outputs: np.ndarray) -> np.ndarray | None:
    """A regressor's output ([n, 1] or [n]) as one value per row; None when it has another shape."""
    if outputs.ndim == 1:
        return outputs
    if outputs.ndim == 2 and outputs.shape[1] == 1:
        return outputs[:, 0]
    return None


def bin_shares(values: np.ndarray, edges: Sequence[float]) -> dict[str, float]:
    """{bin index as a string: share of values in it}, every bin present: the drift reference of a regressor."""
    counts = np.bincount(bin_of(values, edges), minlength=len(edges) + 1)
    return {str(index): float(count) / max(len(values), 1) for index, count in enumerate(counts)}
