"""Paired statistics on the same test examples: bootstrap intervals and the exact McNemar test; for a
regressor, the paired bootstrap of its per-row errors against the champion's.

Both models are resampled with the *same* indices, so the interval of their difference reflects
only how they disagree, not the luck of the draw of examples. Vectorised: a few thousand resamples
of a few hundred rows take milliseconds.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest

MAX_CELLS_PER_BLOCK = 4_000_000  # resamples × rows per block: bounds memory on large test sets
LOWER_IS_BETTER = frozenset({"rmse", "mae"})
"""Metrics where the candidate is better when it is lower: its gain over the champion is minus the difference."""

Statistic = Callable[[np.ndarray, np.ndarray, int, np.ndarray], np.ndarray]
"""(labels, predictions, num_classes, resample indices B×n) → the metric of each resample (B,)."""


@dataclass(frozen=True)
class Interval:
    """A point estimate and its percentile-bootstrap interval."""

    estimate: float
    low: float
    high: float


@dataclass(frozen=True)
class McNemar:
    """Exact McNemar test: ``candidate_only`` rows only the candidate gets right, ``champion_only`` the reverse."""

    candidate_only: int
    champion_only: int
    p_value: float


@dataclass(frozen=True)
class PairedComparison:
    """Candidate versus champion on one metric, with intervals and tests."""

    metric: str
    candidate: Interval
    champion: Interval
    difference: Interval
    margin: float
    p_non_inferiority: float
    """Share of resampled differences at or below -margin: the one-sided bootstrap p-value of H0 'inferior'."""
    p_superiority: float
    """Share of resampled differences at or below 0: the one-sided bootstrap p-value of H0 'not better'."""
    mcnemar: McNemar | None
    """Classification only: a regressor's rows are not right or wrong."""
    lower_is_better: bool = False
    """RMSE and MAE: the candidate is better when the difference is below 0 (the p-values mirror that)."""


def accuracy_statistic(labels: np.ndarray, predictions: np.ndarray, num_classes: int, rows: np.ndarray) -> np.ndarray:
    correct = (labels == predictions).astype(np.float64)
    return np.asarray(correct[rows].mean(axis=1))


def f1_macro_statistic(labels: np.ndarray, predictions: np.ndarray, num_classes: int, rows: np.ndarray) -> np.ndarray:
    """Macro F1 over all ``num_classes`` per resample (a class with no true and no predicted row counts 0, as in
    sklearn with explicit labels)."""
    resamples = rows.shape[0]
    cells = num_classes * num_classes
    codes = (labels * num_classes + predictions)[rows] + (np.arange(resamples) * cells)[:, None]
    confusion = np.bincount(codes.ravel(), minlength=resamples * cells).reshape(resamples, num_classes, num_classes)
    true_positive = np.diagonal(confusion, axis1=1, axis2=2).astype(np.float64)
    denominator = confusion.sum(axis=1) + confusion.sum(axis=2)  # (tp+fp) + (tp+fn)
    f1 = np.divide(2 * true_positive, denominator, out=np.zeros_like(true_positive), where=denominator > 0)
    return np.asarray(f1.mean(axis=1))


STATISTICS: dict[str, Statistic] = {"accuracy": accuracy_statistic, "f1_macro": f1_macro_statistic}


def _resample_blocks(rows: int, samples: int, seed: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    block = max(1, MAX_CELLS_PER_BLOCK // max(rows, 1))
    for start in range(0, samples, block):
        yield rng.integers(0, rows, size=(min(block, samples - start), rows))


def _interval(estimate: float, resampled: np.ndarray, confidence: float) -> Interval:
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(resampled, [tail, 100 - tail])
    return Interval(estimate=float(estimate), low=float(low), high=float(high))


def mcnemar(labels: np.ndarray, candidate: np.ndarray, champion: np.ndarray) -> McNemar:
    """Exact (binomial) two-sided McNemar test on the discordant pairs; p = 1 when there are none."""
    candidate_right = candidate == labels
    champion_right = champion == labels
    candidate_only = int(np.sum(candidate_right & ~champion_right))
    champion_only = int(np.sum(~candidate_right & champion_right))
    discordant = candidate_only + champion_only
    p_value = 1.0 if discordant == 0 else float(binomtest(candidate_only, discordant, 0.5).pvalue)
    return McNemar(candidate_only=candidate_only, champion_only=champion_only, p_value=min(1.0, p_value))


RowScore = Callable[[np.ndarray], np.ndarray]
"""Resample indices B×n → one model's metric on each resample (B,); all rows as one resample: its estimate."""


def _bootstrap(scores: Sequence[RowScore], rows: int, *, samples: int, seed: int) -> list[tuple[float, np.ndarray]]:
    """Each model's estimate on all rows and its metric on each resample: every model on the same draws."""
    everything = np.arange(rows)[None, :]
    drawn: list[list[np.ndarray]] = [[] for _ in scores]
    for resample in _resample_blocks(rows, samples, seed):
        for found, score in zip(drawn, scores, strict=True):
            found.append(score(resample))
    return [(float(score(everything)[0]), np.concatenate(found)) for score, found in zip(scores, drawn, strict=True)]


def _bootstrap_interval(score: RowScore, rows: int, *, samples: int, seed: int, confidence: float) -> Interval:
    """One model's estimate and its percentile-bootstrap interval."""
    [(estimate, values)] = _bootstrap([score], rows, samples=samples, seed=seed)
    return _interval(estimate, values, confidence)


def _paired(
    metric: str,
    candidate: RowScore,
    champion: RowScore,
    rows: int,
    *,
    samples: int,
    seed: int,
    confidence: float,
    margin: float,
    mcnemar: McNemar | None = None,
) -> PairedComparison:
    """Both models on the same resampled rows; the difference is candidate - champion, and for a metric where
    lower is better the candidate is inferior when it is worse by ``margin`` or more."""
    (point_candidate, values_candidate), (point_champion, values_champion) = _bootstrap(
        [candidate, champion], rows, samples=samples, seed=seed
    )
    differences = values_candidate - values_champion
    lower = metric in LOWER_IS_BETTER
    gains = -differences if lower else differences  # positive: the candidate is better
    tolerance = 1e-12  # a resampled gain of exactly -margin (or 0) counts against the candidate
    return PairedComparison(
        metric=metric,
        candidate=_interval(point_candidate, values_candidate, confidence),
        champion=_interval(point_champion, values_champion, confidence),
        difference=_interval(point_candidate - point_champion, differences, confidence),
        margin=margin,
        p_non_inferiority=float(np.mean(gains <= -margin + tolerance)),
        p_superiority=float(np.mean(gains <= tolerance)),
        mcnemar=mcnemar,
        lower_is_better=lower,
    )


def bootstrap_one(
    metric: str,
    labels: np.ndarray,
    predictions: np.ndarray,
    num_classes: int,
    *,
    samples: int,
    seed: int,
    confidence: float,
) -> Interval:
    """The bootstrap interval of one model's metric."""
    score = functools.partial(STATISTICS[metric], labels, predictions, num_classes)
    return _bootstrap_interval(score, len(labels), samples=samples, seed=seed, confidence=confidence)


def paired_bootstrap(
    metric: str,
    labels: np.ndarray,
    candidate: np.ndarray,
    champion: np.ndarray,
    num_classes: int,
    *,
    samples: int,
    seed: int,
    confidence: float,
    margin: float,
) -> PairedComparison:
    """Resample the test rows once per draw and score both models on the same draw."""
    statistic = STATISTICS[metric]
    return _paired(
        metric,
        functools.partial(statistic, labels, candidate, num_classes),
        functools.partial(statistic, labels, champion, num_classes),
        len(labels),
        samples=samples,
        seed=seed,
        confidence=confidence,
        margin=margin,
        mcnemar=mcnemar(labels, candidate, champion),
    )


RegressionStatistic = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]
"""(per-row errors, targets, resample indices B×n) → the metric of each resample (B,)."""


def rmse_statistic(errors: np.ndarray, targets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return np.asarray(np.sqrt(np.mean(errors[rows] ** 2, axis=1)))


def mae_statistic(errors: np.ndarray, targets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return np.asarray(np.mean(np.abs(errors[rows]), axis=1))


def r2_statistic(errors: np.ndarray, targets: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """1 - SSE / SST per resample (0 where the resampled targets do not vary)."""
    drawn = targets[rows]
    total = np.sum((drawn - drawn.mean(axis=1, keepdims=True)) ** 2, axis=1)
    residual = np.sum(errors[rows] ** 2, axis=1)
    return np.asarray(1 - np.divide(residual, total, out=np.ones_like(total), where=total > 0))


REGRESSION_STATISTICS: dict[str, RegressionStatistic] = {
    "rmse": rmse_statistic,
    "mae": mae_statistic,
    "r2": r2_statistic,
}


def bootstrap_errors_one(
    metric: str, targets: np.ndarray, values: np.ndarray, *, samples: int, seed: int, confidence: float
) -> Interval:
    """The bootstrap interval of one regressor's rmse, mae or r2."""
    score = functools.partial(REGRESSION_STATISTICS[metric], values - targets, targets)
    return _bootstrap_interval(score, len(targets), samples=samples, seed=seed, confidence=confidence)


def paired_bootstrap_errors(
    metric: str,
    targets: np.ndarray,
    candidate: np.ndarray,
    champion: np.ndarray,
    *,
    samples: int,
    seed: int,
    confidence: float,
    margin: float,
) -> PairedComparison:
    """Both regressors' per-row errors resampled on the same rows; the difference is candidate - champion.

    For rmse and mae (lower is better) the candidate is inferior when it is worse by ``margin`` or more.
    """
    statistic = REGRESSION_STATISTICS[metric]
    return _paired(
        metric,
        functools.partial(statistic, candidate - targets, targets),
        functools.partial(statistic, champion - targets, targets),
        len(targets),
        samples=samples,
        seed=seed,
        confidence=confidence,
        margin=margin,
    )
