"""A model's input reference: per numeric feature of the training split, the quantile bins of
``shared.regression`` and the training rows in each. The trainer builds it, the registry keeps it with
the version, and the monitor measures logged inputs against it (input drift).

A wide input (image pixels) keeps the ``MAX_REFERENCE_FEATURES`` features of highest training variance,
so the reference stays small and its choice deterministic: a constant pixel cannot drift in a way its
bins would show apart from all others, and ties go to the lower index. A text model (BYTES input) has
no numeric feature and gets no reference.
"""

from __future__ import annotations

import numpy as np

from shared.events import MAX_REFERENCE_FEATURES, FeatureReference, InputReference, Signature
from shared.regression import DRIFT_BINS, bin_of, quantile_edges

NUMERIC_DATATYPES = frozenset({"FP16", "FP32", "FP64", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16"})


def chosen_features(features: np.ndarray, max_features: int = MAX_REFERENCE_FEATURES) -> list[int]:
    """The column indices a reference keeps, ascending: all of them, or the ``max_features`` most varied."""
    columns = features.shape[1]
    if columns <= max_features:
        return list(range(columns))
    variance = np.var(features, axis=0)
    # A stable sort on the negated variance: equal variances keep index order, so the choice is deterministic.
    ranked = np.argsort(-variance, kind="stable")[:max_features]
    return sorted(int(index) for index in ranked)


def feature_reference(index: int, column: np.ndarray, bins: int = DRIFT_BINS) -> FeatureReference:
    """One feature's quantile edges and the rows per bin."""
    edges = quantile_edges(column, bins)
    counts = np.bincount(bin_of(column, edges), minlength=len(edges) + 1)
    return FeatureReference(index=index, edges=edges, counts=[int(count) for count in counts])


def build_input_reference(
    features: np.ndarray, input_name: str, *, max_features: int = MAX_REFERENCE_FEATURES, bins: int = DRIFT_BINS
) -> InputReference:
    """The reference of training rows ``features`` (rows × values per row) for the input ``input_name``."""
    rows = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    chosen = chosen_features(rows, max_features)
    return InputReference(
        input=input_name,
        row_size=rows.shape[1],
        rows=rows.shape[0],
        selection="all" if len(chosen) == rows.shape[1] else "variance",
        features=[feature_reference(index, rows[:, index], bins) for index in chosen],
    )


def reference_for(signature: Signature, features: np.ndarray) -> InputReference | None:
    """The reference of a model with one numeric input whose rows are ``features``; None otherwise (a text
    model, several inputs, or rows that are not the input's shape)."""
    if len(signature.inputs) != 1 or len(features) == 0:
        return None
    spec = signature.inputs[0]
    per_row = int(np.prod(features.shape[1:])) if features.ndim > 1 else 1
    fixed = [axis for axis in spec.shape[1:]]
    if spec.datatype not in NUMERIC_DATATYPES or any(axis < 0 for axis in fixed) or int(np.prod(fixed)) != per_row:
        return None
    return build_input_reference(features, spec.name)
