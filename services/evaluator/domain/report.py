"""The evaluation report: both models' metrics, the paired tests, the policy and the decision, as plain
JSON-safe data (no NaN, no infinity). The registry stores it whole and serves it over REST.

``task`` says what was judged. A classifier's sections carry per-class metrics and a confusion matrix and
its comparisons a McNemar test; a regressor's carry rmse, mae, r2 (with intervals) and its drift bins, and
its comparisons the paired bootstrap of per-row errors (``lower_is_better``, ``relative_margin``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from services.evaluator.domain.compatibility import SplitCheck
from services.evaluator.domain.metrics import finite_floats, json_safe
from services.evaluator.domain.policy import (
    ModelFacts,
    Policy,
    Verdict,
    improvement_note,
    is_better,
    is_improvement,
)
from services.evaluator.domain.records import VersionRecord
from services.evaluator.domain.slices import SliceResult, slice_section
from services.evaluator.domain.statistics import Interval, PairedComparison

REPORT_SCHEMA = "ferry.evaluation.v1"


@dataclass(frozen=True, eq=False)
class Scored:
    """One model scored on the held-out split: its outputs (class probabilities, or a regressor's values, one
    per row), quality, latency and where it came from."""

    record: VersionRecord
    probabilities: np.ndarray
    quality: Mapping[str, Any]
    latency: Mapping[str, float]

    @property
    def task(self) -> str:
        return self.record.signature.task or "classification"

    @property
    def predictions(self) -> np.ndarray:
        """The predicted class of each row; a regressor's predicted value."""
        if self.probabilities.ndim == 1:
            return self.probabilities
        return np.asarray(self.probabilities.argmax(axis=1))

    @property
    def metrics(self) -> Mapping[str, float]:
        return self.quality["metrics"]

    def facts(self) -> ModelFacts:
        return ModelFacts(
            version=self.record.version,
            metrics=self.metrics,
            latency=self.latency,
            size_bytes=self.record.artifact.size_bytes,
            compressed=self.record.compressed,
            task=self.task,
        )

    def flat_metrics(self) -> dict[str, float]:
        """Everything numeric in one flat mapping (ModelDecided.metrics and the registry's columns)."""
        return finite_floats({**self.metrics, **self.latency, "size_bytes": float(self.record.artifact.size_bytes)})


def interval_dict(interval: Interval) -> dict[str, float]:
    return {"estimate": interval.estimate, "low": interval.low, "high": interval.high}


def model_section(scored: Scored, intervals: Mapping[str, Interval]) -> dict[str, Any]:
    record = scored.record
    return {
        "version": record.version,
        "artifact": {
            "sha256": record.artifact.sha256,
            "size_bytes": record.artifact.size_bytes,
            "format": record.artifact.format,
        },
        "trained_on_split": record.split_id,
        "compressed": record.compressed,
        "metrics": dict(scored.metrics),
        "intervals": {metric: interval_dict(interval) for metric, interval in intervals.items()},
        "latency_ms": dict(scored.latency),
        "size_bytes": record.artifact.size_bytes,
        # per_class, confusion_matrix and prediction_distribution; a regressor's bin_edges and distribution
        **{key: value for key, value in scored.quality.items() if key != "metrics"},
    }


def comparison_section(comparison: PairedComparison, policy: Policy) -> dict[str, Any]:
    improvement = is_improvement(comparison, policy)
    better = is_better(comparison)
    section = {
        "metric": comparison.metric,
        "candidate": interval_dict(comparison.candidate),
        "champion": interval_dict(comparison.champion),
        "difference": interval_dict(comparison.difference),
        "confidence": policy.confidence,
        "bootstrap_samples": policy.bootstrap_samples,
        "margin": comparison.margin,
        "p_non_inferiority": comparison.p_non_inferiority,
        "p_superiority": comparison.p_superiority,
        "non_inferior": comparison.p_non_inferiority < policy.alpha,
        "improvement": improvement,
        "better_by_noise": better and not improvement,
        "summary": improvement_note(comparison, policy),
    }
    if comparison.mcnemar is not None:
        section["mcnemar"] = asdict(comparison.mcnemar)
    else:  # a regressor's: the difference is of resampled per-row errors, candidate minus champion
        section["test"] = "paired bootstrap of per-row errors"
        section["lower_is_better"] = comparison.lower_is_better
        section["relative_margin"] = policy.regression_margin
    return section


@dataclass(frozen=True)
class ReportContext:
    """Where the scores come from: the dataset, its split and the test rows."""

    model_name: str
    dataset: str
    split_id: str
    test_rows: int
    class_names: Sequence[str]
    task: str = "classification"


def evaluation_report(
    context: ReportContext,
    candidate: dict[str, Any] | None,
    champion: dict[str, Any] | None,
    comparisons: Mapping[str, PairedComparison],
    verdict: Verdict,
    policy: Policy,
    split: SplitCheck,
    timings_s: Mapping[str, float],
    slices: Sequence[SliceResult] = (),
) -> dict[str, Any]:
    """The whole report, JSON-safe; ``slices`` are the guarded slices (empty without a champion)."""
    report = {
        "schema": REPORT_SCHEMA,
        "kind": "evaluation",
        "task": context.task,
        "model_name": context.model_name,
        "dataset": context.dataset,
        "split": {
            "split_id": context.split_id,
            "part": "test",
            "rows": context.test_rows,
            "rescored": split.rescored,
            "note": split.note,
        },
        "classes": list(context.class_names),
        "candidate": candidate,
        "champion": champion,
        "comparison": {metric: comparison_section(found, policy) for metric, found in comparisons.items()},
        "slices": [slice_section(found, policy.confidence) for found in slices],
        "primary_metric": policy.primary_for(context.task),
        "decision": verdict.as_dict(),
        "policy": policy.as_dict(),
        "timings_s": dict(timings_s),
    }
    return json_safe(report)
