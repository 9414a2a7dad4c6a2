"""How a regressor is judged on the held-out rows: its intervals, and its paired comparison with the champion
on the per-row errors (the policy's margin is a share of the champion's metric). Pure: arrays in."""

from __future__ import annotations

import numpy as np

from services.evaluator.domain.policy import Policy
from services.evaluator.domain.statistics import (
    REGRESSION_STATISTICS,
    Interval,
    PairedComparison,
    bootstrap_errors_one,
    paired_bootstrap_errors,
)

COMPARED_METRICS = ("rmse", "mae")
"""What a regressor is compared with its champion on (the policy's primary metric is one of them)."""
INTERVAL_METRICS = ("rmse", "mae", "r2")


def regression_intervals(
    targets: np.ndarray, values: np.ndarray, policy: Policy, metrics: tuple[str, ...] = INTERVAL_METRICS
) -> dict[str, Interval]:
    """The bootstrap interval of each metric of one regressor."""
    return {
        metric: bootstrap_errors_one(
            metric,
            targets,
            values,
            samples=policy.bootstrap_samples,
            seed=policy.bootstrap_seed,
            confidence=policy.confidence,
        )
        for metric in metrics
    }


def compare_regressors(
    targets: np.ndarray, candidate: np.ndarray, champion: np.ndarray, policy: Policy
) -> dict[str, PairedComparison]:
    """Paired bootstrap of rmse and mae on the same resampled rows; margin: ``regression_margin`` × the champion's."""
    comparisons = {}
    for metric in COMPARED_METRICS:
        every_row = np.arange(len(targets))[None, :]
        champion_value = float(REGRESSION_STATISTICS[metric](champion - targets, targets, every_row)[0])
        comparisons[metric] = paired_bootstrap_errors(
            metric,
            targets,
            candidate,
            champion,
            samples=policy.bootstrap_samples,
            seed=policy.bootstrap_seed,
            confidence=policy.confidence,
            margin=policy.regression_margin * champion_value,
        )
    return comparisons
