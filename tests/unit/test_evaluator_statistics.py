"""Paired bootstrap and McNemar: the numbers against scipy/sklearn, and what they claim in the edge cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binomtest
from sklearn.metrics import f1_score

from services.evaluator.domain.statistics import (
    accuracy_statistic,
    bootstrap_one,
    f1_macro_statistic,
    mcnemar,
    paired_bootstrap,
)

RNG = np.random.default_rng(11)
LABELS = RNG.integers(0, 5, 400)


def corrupt(labels: np.ndarray, share: float, seed: int) -> np.ndarray:
    """Predictions that are wrong on about ``share`` of the rows."""
    rng = np.random.default_rng(seed)
    wrong = rng.random(len(labels)) < share
    return np.where(wrong, (labels + 1 + rng.integers(0, 4, len(labels))) % 5, labels)


def test_vectorised_statistics_equal_sklearn_on_each_resample() -> None:
    predictions = corrupt(LABELS, 0.3, seed=1)
    rows = np.random.default_rng(2).integers(0, len(LABELS), size=(5, len(LABELS)))
    f1 = f1_macro_statistic(LABELS, predictions, 5, rows)
    accuracy = accuracy_statistic(LABELS, predictions, 5, rows)
    for index, drawn in enumerate(rows):
        expected = f1_score(LABELS[drawn], predictions[drawn], labels=range(5), average="macro", zero_division=0)
        assert f1[index] == pytest.approx(expected)
        assert accuracy[index] == pytest.approx(np.mean(LABELS[drawn] == predictions[drawn]))


def test_mcnemar_is_the_exact_binomial_test_on_discordant_rows() -> None:
    candidate, champion = corrupt(LABELS, 0.1, seed=3), corrupt(LABELS, 0.2, seed=4)
    found = mcnemar(LABELS, candidate, champion)
    b = int(np.sum((candidate == LABELS) & (champion != LABELS)))
    c = int(np.sum((candidate != LABELS) & (champion == LABELS)))
    assert (found.candidate_only, found.champion_only) == (b, c)
    assert found.p_value == pytest.approx(binomtest(b, b + c, 0.5).pvalue)
    assert mcnemar(LABELS, candidate, candidate).p_value == 1.0


def test_identical_models_are_non_inferior_and_not_an_improvement() -> None:
    predictions = corrupt(LABELS, 0.1, seed=5)
    found = paired_bootstrap(
        "accuracy", LABELS, predictions, predictions, 5, samples=500, seed=0, confidence=0.95, margin=0.02
    )
    assert found.difference.estimate == found.difference.low == found.difference.high == 0.0
    assert found.p_non_inferiority == 0.0  # never worse by the margin
    assert found.p_superiority == 1.0  # never better either


def test_a_clearly_better_model_has_an_interval_above_zero() -> None:
    better, worse = corrupt(LABELS, 0.05, seed=6), corrupt(LABELS, 0.30, seed=7)
    found = paired_bootstrap("f1_macro", LABELS, better, worse, 5, samples=1000, seed=0, confidence=0.95, margin=0.02)
    assert found.difference.low > 0
    assert found.p_superiority < 0.01
    assert found.candidate.low <= found.candidate.estimate <= found.candidate.high
    assert found.champion.estimate == pytest.approx(f1_score(LABELS, worse, average="macro"))


def test_better_by_a_hair_has_an_interval_across_zero() -> None:
    champion = corrupt(LABELS, 0.10, seed=8)
    candidate = champion.copy()
    fixed = np.flatnonzero(champion != LABELS)[:2]  # the candidate gets two more rows right
    candidate[fixed] = LABELS[fixed]
    found = paired_bootstrap(
        "accuracy", LABELS, candidate, champion, 5, samples=2000, seed=0, confidence=0.95, margin=0.02
    )
    assert found.difference.estimate == pytest.approx(2 / len(LABELS))
    assert found.difference.low <= 0 < found.difference.high
    assert found.mcnemar.p_value == pytest.approx(0.5)


def test_the_interval_is_reproducible_and_narrows_with_confidence() -> None:
    predictions = corrupt(LABELS, 0.2, seed=9)
    wide = bootstrap_one("accuracy", LABELS, predictions, 5, samples=800, seed=1, confidence=0.99)
    narrow = bootstrap_one("accuracy", LABELS, predictions, 5, samples=800, seed=1, confidence=0.80)
    assert wide == bootstrap_one("accuracy", LABELS, predictions, 5, samples=800, seed=1, confidence=0.99)
    assert wide.low < narrow.low <= narrow.estimate <= narrow.high < wide.high
