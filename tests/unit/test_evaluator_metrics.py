"""The evaluator's metrics against scikit-learn and a plain re-computation, on fixed random predictions."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)

from services.evaluator.domain.metrics import (
    OutputsNotProbabilities,
    check_probabilities,
    expected_calibration_error,
    json_safe,
    quality,
)


def random_outputs(rows: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, rows)
    logits = rng.normal(size=(rows, classes)) + 2.5 * np.eye(classes)[labels] * rng.random((rows, 1))
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return probabilities.astype(np.float32), labels


def naive_ece(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> float:
    total = 0.0
    for low in range(bins):
        members = [row for row in range(len(labels)) if low / bins < probabilities[row].max() <= (low + 1) / bins]
        if members:
            accuracy = sum(probabilities[row].argmax() == labels[row] for row in members) / len(members)
            confidence = sum(probabilities[row].max() for row in members) / len(members)
            total += abs(accuracy - confidence) * len(members) / len(labels)
    return total


def test_quality_matches_scikit_learn_and_a_plain_ece() -> None:
    probabilities, labels = random_outputs(300, 4, seed=3)
    checked = check_probabilities(probabilities, 4)
    report = quality(checked, labels, ("a", "b", "c", "d"))
    predictions = checked.argmax(axis=1)
    metrics = report["metrics"]
    assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, predictions))
    assert metrics["precision_macro"] == pytest.approx(precision_score(labels, predictions, average="macro"))
    assert metrics["recall_macro"] == pytest.approx(recall_score(labels, predictions, average="macro"))
    assert metrics["f1_macro"] == pytest.approx(f1_score(labels, predictions, average="macro"))
    as_float64 = probabilities.astype(np.float64)
    renormalised = as_float64 / as_float64.sum(axis=1, keepdims=True)
    assert metrics["log_loss"] == pytest.approx(log_loss(labels, renormalised))
    assert metrics["ece"] == pytest.approx(naive_ece(checked, labels))
    assert "roc_auc" not in metrics  # only for binary datasets
    assert report["confusion_matrix"] == confusion_matrix(labels, predictions).tolist()
    per_class = f1_score(labels, predictions, average=None)
    assert [report["per_class"][str(k)]["f1"] for k in range(4)] == pytest.approx(list(per_class))
    assert report["per_class"]["2"]["name"] == "c"
    assert sum(entry["support"] for entry in report["per_class"].values()) == 300


def test_binary_outputs_get_a_roc_auc_and_the_distribution_sums_to_one() -> None:
    probabilities, labels = random_outputs(200, 2, seed=5)
    report = quality(check_probabilities(probabilities, 2), labels, ("no", "yes"))
    assert report["metrics"]["roc_auc"] == pytest.approx(roc_auc_score(labels, probabilities[:, 1]))
    distribution = report["prediction_distribution"]
    assert set(distribution) == {"0", "1"}
    assert sum(distribution.values()) == pytest.approx(1.0)
    assert distribution["1"] == pytest.approx(float(np.mean(probabilities.argmax(axis=1) == 1)))


def test_a_class_never_predicted_still_has_its_share_of_zero() -> None:
    labels = np.array([0, 1, 2, 2])
    probabilities = np.array([[0.9, 0.1, 0.0], [0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [0.2, 0.1, 0.7]])
    report = quality(probabilities, labels, ("a", "b", "c"))
    assert report["prediction_distribution"] == {"0": 0.5, "1": 0.0, "2": 0.5}
    assert report["per_class"]["1"]["f1"] == 0.0


@pytest.mark.parametrize(
    ("outputs", "problem"),
    [
        (np.full((3, 4), 0.5, dtype=np.float32), "not probabilities"),
        (np.array([[np.nan, 1.0, 0.0, 0.0]]), "NaN"),
        (np.ones((3, 3)) / 3, "expected [n, 4]"),
        (np.array([[1.5, -0.5, 0.0, 0.0]]), "not probabilities"),
    ],
)
def test_outputs_that_are_not_probabilities_are_refused_with_the_reason(outputs: np.ndarray, problem: str) -> None:
    with pytest.raises(OutputsNotProbabilities, match=problem.replace("[", r"\[").replace("]", r"\]")):
        check_probabilities(outputs, 4)


def test_ece_of_a_perfectly_calibrated_confident_model_is_zero() -> None:
    labels = np.array([0, 1, 1, 0])
    probabilities = np.eye(2)[labels]
    assert expected_calibration_error(probabilities, labels) == 0.0


def test_json_safe_replaces_nan_and_infinity_everywhere() -> None:
    value = {"a": math.nan, "b": [1.0, math.inf, {"c": -math.inf}], "d": np.float64(0.5), "e": (np.int64(3),)}
    safe = json_safe(value)
    assert safe == {"a": None, "b": [1.0, None, {"c": None}], "d": 0.5, "e": [3]}
    json.dumps(safe, allow_nan=False)
