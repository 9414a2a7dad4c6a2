"""Slices of the held-out rows on which a candidate must not be significantly worse than the champion, as
TensorFlow Model Analysis guards them: each class's recall (a classifier), and the named feature ranges.

Each slice is the paired bootstrap of the overall comparison, run on that slice's rows alone (the same
resampling, the same seed): a class's recall is the accuracy on the rows whose true label is that class; a
range slice is judged on accuracy (a classifier) or RMSE (a regressor). A slice is *worse* when the whole
interval of the difference lies beyond the slice margin; one with fewer rows than the minimum is reported,
not judged. Pure: arrays in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from services.evaluator.domain.statistics import (
    REGRESSION_STATISTICS,
    PairedComparison,
    paired_bootstrap,
    paired_bootstrap_errors,
)

if TYPE_CHECKING:  # the policy holds the slice specs, so it imports this module at run time
    from services.evaluator.domain.policy import Policy
    from shared.datasets import Split

SliceKind = Literal["class", "range"]


@dataclass(frozen=True)
class SliceSpec:
    """A named range of one input feature: the rows whose feature ``feature`` (of the flattened row) lies in
    [low, high); a missing bound is open. ``model`` limits it to one model's evaluations."""

    name: str
    feature: int
    low: float | None = None
    high: float | None = None
    model: str | None = None

    def applies_to(self, model_name: str) -> bool:
        """Whether this slice guards ``model_name``'s candidates."""
        return self.model is None or self.model == model_name

    def as_dict(self) -> dict[str, Any]:
        """As FERRY_EVALUATOR_SLICES and a training request spell it."""
        return {"name": self.name, "feature": self.feature, "min": self.low, "max": self.high, "model": self.model}

    def describe(self) -> str:
        """'feature 2 in [4.5, +inf)'."""
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "+inf" if self.high is None else f"{self.high:g}"
        return f"feature {self.feature} in [{low}, {high})"

    def mask(self, features: np.ndarray) -> np.ndarray | None:
        """The rows in the slice; None when the rows have no such feature (a text dataset, a narrower input)."""
        if features.dtype.kind not in "fiub" or features.ndim == 0:
            return None
        flat = features.reshape(len(features), -1)
        if self.feature >= flat.shape[1]:
            return None
        column = flat[:, self.feature].astype(np.float64)
        inside = np.ones(len(column), dtype=bool)
        if self.low is not None:
            inside &= column >= self.low
        if self.high is not None:
            inside &= column < self.high
        return inside


@dataclass(frozen=True)
class SliceResult:
    """One slice: its rows, the paired comparison on them (None when it was not compared) and the verdict."""

    name: str
    kind: SliceKind
    metric: str
    rows: int
    comparison: PairedComparison | None
    judged: bool
    note: str
    label: str
    """How a reason names it: "class 'virginica'" or "slice 'petal-long' (feature 2 in [4.5, +inf))"."""

    @property
    def margin(self) -> float:
        """How much worse than the champion the slice may be (an RMSE margin is absolute here)."""
        return self.comparison.margin if self.comparison is not None else 0.0

    @property
    def worse(self) -> bool:
        """Significantly worse beyond the margin: the whole interval of the difference lies beyond -margin."""
        if not self.judged or self.comparison is None:
            return False
        difference, margin = self.comparison.difference, self.comparison.margin
        if self.comparison.lower_is_better:
            return difference.low > margin
        return difference.high < -margin


def guarded_slices(
    test: Split,
    candidate: np.ndarray,
    champion: np.ndarray,
    model_name: str,
    policy: Policy,
    requested: Sequence[SliceSpec] = (),
) -> list[SliceResult]:
    """Every slice of the held-out rows guarded for this model: each class's recall (a classifier), the ranges
    its training request named, and the policy's (a request's slice wins over the policy's of the same name),
    from both models' predictions (classes, or a regressor's values)."""
    rows, dataset = test.test, test.dataset
    named = {spec.name for spec in requested}
    configured = [spec for spec in policy.slices if spec.applies_to(model_name) and spec.name not in named]
    specs = [*requested, *configured]
    regression = dataset.is_regression
    found = [] if regression else class_slices(rows.labels, candidate, champion, dataset.class_names, policy)
    ranges = range_slices(specs, rows.inputs, rows.labels, candidate, champion, regression=regression, policy=policy)
    return found + ranges


def class_slices(
    labels: np.ndarray,
    candidate: np.ndarray,
    champion: np.ndarray,
    class_names: Sequence[str],
    policy: Policy,
) -> list[SliceResult]:
    """Each class's recall: the rows whose true label is the class, candidate versus champion."""
    found = []
    for index, name in enumerate(class_names):
        rows = labels == index
        label = f"class {name!r}"
        found.append(_classifier_slice(name, "class", "recall", label, rows, labels, candidate, champion, policy))
    return found


def range_slices(
    specs: Sequence[SliceSpec],
    features: np.ndarray,
    targets: np.ndarray,
    candidate: np.ndarray,
    champion: np.ndarray,
    *,
    regression: bool,
    policy: Policy,
) -> list[SliceResult]:
    """Each named range: accuracy on its rows (a classifier), or RMSE (a regressor)."""
    found = []
    for spec in specs:
        label = f"slice {spec.name!r} ({spec.describe()})"
        rows = spec.mask(features)
        metric = "rmse" if regression else "accuracy"
        if rows is None:
            note = f"not applicable: the inputs have no numeric feature {spec.feature}"
            found.append(SliceResult(spec.name, "range", metric, 0, None, False, note, label))
        elif regression:
            found.append(_regressor_slice(spec.name, label, rows, targets, candidate, champion, policy))
        else:
            found.append(
                _classifier_slice(spec.name, "range", metric, label, rows, targets, candidate, champion, policy)
            )
    return found


def _classifier_slice(
    name: str,
    kind: SliceKind,
    metric: str,
    label: str,
    rows: np.ndarray,
    labels: np.ndarray,
    candidate: np.ndarray,
    champion: np.ndarray,
    policy: Policy,
) -> SliceResult:
    count = int(rows.sum())
    if count == 0:
        return SliceResult(name, kind, metric, 0, None, False, "no rows: not compared", label)
    # On one class's rows, accuracy is that class's recall; the bootstrap only needs the class count.
    num_classes = int(max(labels.max(), candidate.max(), champion.max())) + 1
    comparison = paired_bootstrap(
        "accuracy",
        labels[rows],
        candidate[rows],
        champion[rows],
        num_classes,
        samples=policy.bootstrap_samples,
        seed=policy.bootstrap_seed,
        confidence=policy.confidence,
        margin=policy.slice_margin,
    )
    return _result(name, kind, metric, label, count, comparison, policy)


def _regressor_slice(
    name: str,
    label: str,
    rows: np.ndarray,
    targets: np.ndarray,
    candidate: np.ndarray,
    champion: np.ndarray,
    policy: Policy,
) -> SliceResult:
    count = int(rows.sum())
    if count == 0:
        return SliceResult(name, "range", "rmse", 0, None, False, "no rows: not compared", label)
    every_row = np.arange(count)[None, :]
    champion_rmse = float(REGRESSION_STATISTICS["rmse"](champion[rows] - targets[rows], targets[rows], every_row)[0])
    comparison = paired_bootstrap_errors(
        "rmse",
        targets[rows],
        candidate[rows],
        champion[rows],
        samples=policy.bootstrap_samples,
        seed=policy.bootstrap_seed,
        confidence=policy.confidence,
        margin=policy.slice_regression_margin * champion_rmse,
    )
    return _result(name, "range", "rmse", label, count, comparison, policy)


def _result(
    name: str, kind: SliceKind, metric: str, label: str, rows: int, comparison: PairedComparison, policy: Policy
) -> SliceResult:
    judged = rows >= policy.slice_min_rows
    note = "" if judged else f"{rows} rows, fewer than the {policy.slice_min_rows} a judgement needs: reported only"
    return SliceResult(name, kind, metric, rows, comparison, judged, note, label)


def describe_slice(result: SliceResult, confidence: float) -> str:
    """ "class 'virginica' recall 0.4200 vs champion 0.9500 (difference -0.5300, 95% CI -0.6600..-0.4000, 50 rows)"."""
    found = result.comparison
    if found is None:
        return f"{result.label}: {result.note}"
    difference = found.difference
    return (
        f"{result.label} {result.metric} {found.candidate.estimate:.4f} vs champion {found.champion.estimate:.4f} "
        f"(difference {difference.estimate:+.4f}, {confidence:.0%} CI {difference.low:+.4f}..{difference.high:+.4f}, "
        f"{result.rows} rows)"
    )


def slice_section(result: SliceResult, confidence: float) -> dict[str, Any]:
    """One slice as the report carries it (JSON-safe once the report passes through ``json_safe``)."""
    section: dict[str, Any] = {
        "name": result.name,
        "kind": result.kind,
        "metric": result.metric,
        "rows": result.rows,
        "judged": result.judged,
        "worse": result.worse,
        "note": result.note,
        "summary": describe_slice(result, confidence),
    }
    found = result.comparison
    if found is not None:
        section |= {
            name: {"estimate": value.estimate, "low": value.low, "high": value.high}
            for name, value in (("candidate", found.candidate), ("champion", found.champion))
        }
        section["difference"] = {
            "estimate": found.difference.estimate,
            "low": found.difference.low,
            "high": found.difference.high,
        }
        section["margin"] = found.margin
        section["lower_is_better"] = found.lower_is_better
    return section
