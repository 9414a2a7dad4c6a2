"""Input drift: logged input rows of a version, per feature, against the training split's reference bins.

Per feature: the PSI of the window's bin shares against the training shares (``drift.psi``, empty bins
floored at epsilon), and a two-sample chi-square test of the two bin-count rows (the live window's and
the training split's), whose p-value says how surprising the difference is for the window's size.

A feature *drifts* when both say so: PSI at least ``FEATURE_PSI_DRIFT`` (the usual "significant shift")
and p-value below ``FEATURE_P_DRIFT``. PSI alone over-reads a small window; a p-value alone flags any
tiny shift once the window is large. The version's *score* is the share of its reference features that
drift (0 to 1), as Evidently's share of drifted columns: one noisy pixel cannot raise it much, a shift of
the whole input raises it towards 1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2_contingency

from services.monitor.domain.drift import psi, shares
from shared.events import FeatureReference, InputReference, LoggedTensor
from shared.regression import bin_of

FEATURE_PSI_DRIFT = 0.2
FEATURE_P_DRIFT = 0.01
EPSILON = 1e-4


@dataclass(frozen=True)
class FeatureDrift:
    """One feature's drift over the window."""

    feature: str
    psi: float
    p_value: float
    live_counts: tuple[int, ...]
    reference_counts: tuple[int, ...]

    @property
    def drifted(self) -> bool:
        return self.psi >= FEATURE_PSI_DRIFT and self.p_value < FEATURE_P_DRIFT


@dataclass(frozen=True)
class InputDrift:
    """A version's input drift: the rows it rests on, each reference feature's drift and the score."""

    model: str
    version: str
    rows: int
    features: tuple[FeatureDrift, ...]

    @property
    def score(self) -> float:
        """The share of reference features that drift."""
        if not self.features:
            return 0.0
        return sum(feature.drifted for feature in self.features) / len(self.features)


def rows_of(inputs: Sequence[LoggedTensor], reference: InputReference) -> np.ndarray | None:
    """The complete numeric rows of the reference's input in a logged record (rows × row_size); None when the
    record has no such input. A truncated tensor gives its whole rows only."""
    tensor = next((t for t in inputs if t.name == reference.input), None)
    if tensor is None and len(inputs) == 1:
        tensor = inputs[0]  # a client may name the one input otherwise: the gateway answered it
    if tensor is None or tensor.datatype == "BYTES":
        return None
    whole = len(tensor.data) // reference.row_size * reference.row_size
    try:
        values = np.asarray(tensor.data[:whole], dtype=np.float64)
    except (TypeError, ValueError):
        return None  # strings in a numeric tensor: nothing to measure
    if whole == 0 or not np.isfinite(values).all():
        return None
    return values.reshape(-1, reference.row_size)


def feature_drift(column: np.ndarray, reference: FeatureReference, *, epsilon: float = EPSILON) -> FeatureDrift:
    """PSI and the chi-square test of one feature's live values against its reference bins."""
    live = np.bincount(bin_of(column, reference.edges), minlength=len(reference.counts))
    expected = np.asarray(reference.counts, dtype=np.int64)
    index = psi(_as_shares(live), _as_shares(expected), epsilon=epsilon)
    return FeatureDrift(
        str(reference.index),
        index,
        two_sample_p_value(live, expected),
        tuple(int(c) for c in live),
        tuple(int(c) for c in expected),
    )


def _as_shares(counts: np.ndarray) -> dict[str, float]:
    return shares({str(i): float(count) for i, count in enumerate(counts)})


def two_sample_p_value(live: np.ndarray, reference: np.ndarray) -> float:
    """The chi-square test of homogeneity of two bin-count rows; 1.0 when fewer than two bins hold rows."""
    table = np.vstack([live, reference])
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or table.sum(axis=1).min() == 0:
        return 1.0
    result = chi2_contingency(table, correction=False)
    p_value = float(result.pvalue)
    return p_value if math.isfinite(p_value) else 1.0


def input_drift(model: str, version: str, rows: np.ndarray, reference: InputReference) -> InputDrift:
    """Every reference feature's drift over ``rows`` (the window, rows × row_size)."""
    features = tuple(feature_drift(rows[:, feature.index], feature) for feature in reference.features)
    return InputDrift(model, version, len(rows), features)
