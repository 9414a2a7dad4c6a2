"""What one model scores on the held-out split: quality metrics from scikit-learn, calibration and the
predicted-class distribution; for a regressor RMSE, MAE, R² and the distribution of its predicted value over
its drift bins (latency is the shared harness's, ``shared.onnx``). Pure: arrays in, plain numbers out."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    log_loss,
    precision_recall_fscore_support,
    roc_auc_score,
)

from shared.regression import as_values, bin_shares, quantile_edges

ECE_BINS = 15
PROBABILITY_SUM_TOLERANCE = 1e-3


class OutputsNotProbabilities(ValueError):
    """A model whose outputs are not one probability distribution per row."""


def check_probabilities(probabilities: np.ndarray, num_classes: int) -> np.ndarray:
    """The outputs as float64 probabilities (rows renormalised); OutputsNotProbabilities otherwise."""
    if probabilities.ndim != 2 or probabilities.shape[1] != num_classes:
        raise OutputsNotProbabilities(f"outputs have shape {list(probabilities.shape)}; expected [n, {num_classes}]")
    values = probabilities.astype(np.float64)
    if not np.isfinite(values).all():
        raise OutputsNotProbabilities("outputs contain NaN or infinite values")
    sums = values.sum(axis=1)
    if values.min() < -1e-6 or np.abs(sums - 1).max() > PROBABILITY_SUM_TOLERANCE:
        raise OutputsNotProbabilities(
            f"outputs are not probabilities: row sums range {sums.min():.4f}..{sums.max():.4f}, min {values.min():.4f}"
        )
    values = np.clip(values, 0.0, None)
    return values / values.sum(axis=1, keepdims=True)


class OutputsNotValues(OutputsNotProbabilities):
    """A regressor whose outputs are not one finite value per row."""


def check_values(outputs: np.ndarray, rows: int) -> np.ndarray:
    """A regressor's outputs ([n, 1] or [n]) as float64 values, one per row; OutputsNotValues otherwise."""
    values = as_values(outputs)
    if values is None or len(values) != rows:
        raise OutputsNotValues(f"outputs have shape {list(outputs.shape)}; expected [{rows}, 1] or [{rows}]")
    if not np.isfinite(values).all():
        raise OutputsNotValues("outputs contain NaN or infinite values")
    return values.astype(np.float64)


def regression_quality(values: np.ndarray, targets: np.ndarray, bin_edges: Sequence[float] | None) -> dict[str, Any]:
    """RMSE, MAE, R² and the mean error (bias), and the predicted values' shares over the drift bins.

    The bins are the model's own (its signature's, which the gateway counts live predictions in); a model
    without them gets the deciles of these predictions, for the report only.
    """
    errors = values - targets
    total = float(np.sum((targets - targets.mean()) ** 2))
    edges = list(bin_edges) if bin_edges is not None else quantile_edges(values)
    return {
        "metrics": {
            "rmse": float(np.sqrt(np.mean(errors**2))),
            "mae": float(np.mean(np.abs(errors))),
            "r2": 1.0 - float(np.sum(errors**2)) / total if total > 0 else 0.0,
            "mean_error": float(np.mean(errors)),
        },
        "prediction_distribution": bin_shares(values, edges),
        "bin_edges": edges,
    }


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE of the top-label confidence over ``bins`` equal-width bins: sum of |accuracy - confidence| × share."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == labels
    # Bin i holds confidences in (i/bins, (i+1)/bins]; a confidence of exactly 0 joins the first bin.
    index = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)
    total = 0.0
    for bin_index in range(bins):
        members = index == bin_index
        if members.any():
            gap = abs(float(correct[members].mean()) - float(confidence[members].mean()))
            total += gap * float(members.mean())
    return total


def prediction_distribution(predictions: np.ndarray, num_classes: int) -> dict[str, float]:
    """{class index as a string: fraction of rows predicted as it}: the monitor's drift reference."""
    counts = np.bincount(predictions, minlength=num_classes)[:num_classes]
    return {str(index): float(count) / len(predictions) for index, count in enumerate(counts)}


def quality(probabilities: np.ndarray, labels: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro precision/recall/F1, log loss, ECE (ROC AUC when binary), per class, confusion."""
    classes = list(range(len(class_names)))
    predictions = probabilities.argmax(axis=1)
    macro = precision_recall_fscore_support(labels, predictions, labels=classes, average="macro", zero_division=0)
    per_class = precision_recall_fscore_support(labels, predictions, labels=classes, average=None, zero_division=0)
    metrics = {
        "accuracy": float(accuracy_score(labels, predictions)),
        "precision_macro": float(macro[0]),
        "recall_macro": float(macro[1]),
        "f1_macro": float(macro[2]),
        "log_loss": float(log_loss(labels, probabilities, labels=classes)),
        "ece": expected_calibration_error(probabilities, labels),
    }
    if len(classes) == 2:
        metrics["roc_auc"] = float(roc_auc_score(labels, probabilities[:, 1]))
    return {
        "metrics": metrics,
        "per_class": {
            str(index): {
                "name": class_names[index],
                "precision": float(per_class[0][index]),
                "recall": float(per_class[1][index]),
                "f1": float(per_class[2][index]),
                "support": int(per_class[3][index]),
            }
            for index in classes
        },
        "confusion_matrix": confusion_matrix(labels, predictions, labels=classes).tolist(),
        "prediction_distribution": prediction_distribution(predictions, len(classes)),
    }


def json_safe(value: Any) -> Any:
    """The same structure with NaN and infinities replaced by None: JSON (and jsonb) has neither."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(key): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    if isinstance(value, np.generic):
        return json_safe(value.item())
    return value


def finite_floats(values: Mapping[str, Any]) -> dict[str, float]:
    """The finite numbers of a flat mapping, as floats (ModelDecided.metrics)."""
    return {
        name: float(value)
        for name, value in values.items()
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    }
