"""The trainer's pure rules: plans, early stopping, budgets, divergence, metrics, soft targets."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.trainer.domain import (
    Budget,
    BudgetExceeded,
    EarlyStopping,
    InvalidRequest,
    LossDiverged,
    accuracy,
    artifact_format,
    check_finite,
    log_loss,
    plan_training,
    soft_targets,
)
from shared.datasets import load_dataset
from shared.events import Compression, Hyperparameters, TrainingRequested


def _request(**fields: object) -> TrainingRequested:
    return TrainingRequested(model_name="m", dataset="sklearn:iris", **fields)  # type: ignore[arg-type]


def test_early_stopping_waits_for_patience_and_remembers_the_best() -> None:
    stopping = EarlyStopping(patience=2)
    assert stopping.update(1, 1.0) and stopping.update(2, 0.5)
    assert not stopping.update(3, 0.6) and not stopping.should_stop
    assert not stopping.update(4, 0.5) and stopping.should_stop  # equal is no gain
    assert (stopping.best_epoch, stopping.best_loss) == (2, 0.5)


def test_early_stopping_resets_after_a_gain() -> None:
    stopping = EarlyStopping(patience=2)
    for epoch, loss in enumerate([1.0, 1.1, 0.9, 1.0], start=1):
        stopping.update(epoch, loss)
    assert not stopping.should_stop and stopping.best_epoch == 3


def test_budget_raises_once_spent() -> None:
    now = [100.0]
    budget = Budget(30.0, clock=lambda: now[0])
    budget.check(1)
    now[0] = 131.0
    with pytest.raises(BudgetExceeded, match="30 s budget at epoch 4"):
        budget.check(4)


@pytest.mark.parametrize(("value", "word"), [(math.nan, "NaN"), (math.inf, "infinite")])
def test_divergence_names_the_epoch_and_the_cure(value: float, word: str) -> None:
    check_finite(1, 0.3, 0.4)
    with pytest.raises(LossDiverged, match=f"loss became {word} at epoch 3; lower the learning rate"):
        check_finite(3, 0.3, value)


def test_plan_rejects_a_cnn_on_tabular_data() -> None:
    with pytest.raises(InvalidRequest, match="image-shaped"):
        plan_training(_request(arch="cnn"), load_dataset("sklearn:iris"), budget_s=60, max_world_size=2)


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"hyperparameters": Hyperparameters(hidden_sizes=[])}, "hidden_sizes is empty"),
        ({"hyperparameters": Hyperparameters(hidden_sizes=[0, 10])}, r"\[0\] must each be between"),
        ({"hyperparameters": Hyperparameters(hidden_sizes=[4] * 9)}, "at most 8"),
        ({"world_size": 4}, "exceeds this trainer's limit of 2"),
    ],
)
def test_plan_rejects_impossible_settings(fields: dict[str, object], fragment: str) -> None:
    with pytest.raises(InvalidRequest, match=fragment):
        plan_training(_request(**fields), load_dataset("sklearn:iris"), budget_s=60, max_world_size=2)


def test_plan_carries_the_data_shape_and_fine_tuning_for_pruning() -> None:
    request = _request(compression=Compression(prune=0.5), hyperparameters=Hyperparameters(epochs=40, patience=3))
    plan = plan_training(request, load_dataset("sklearn:iris"), budget_s=60, max_world_size=2)
    assert (plan.num_features, plan.num_classes, plan.image_shape) == (4, 3, None)
    assert plan.finetune_epochs == 40 and plan.total_epochs == 80  # the same cap again; early stopping ends it
    unpruned = plan_training(_request(), load_dataset("sklearn:iris"), budget_s=60, max_world_size=2)
    assert unpruned.finetune_epochs == 0


def test_accuracy_and_log_loss() -> None:
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
    labels = np.array([0, 1, 1])
    assert accuracy(probabilities, labels) == pytest.approx(2 / 3)
    assert log_loss(probabilities, labels) == pytest.approx(-(math.log(0.9) + math.log(0.8) + math.log(0.4)) / 3)


def test_soft_targets_treat_probabilities_and_logits_alike() -> None:
    logits = np.array([[2.0, 0.5, -1.0], [0.0, 3.0, 1.0]], dtype=np.float32)
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    from_logits, from_probabilities = soft_targets(logits, 4.0), soft_targets(probabilities, 4.0)
    np.testing.assert_allclose(from_logits, from_probabilities, atol=1e-5)
    np.testing.assert_allclose(from_logits.sum(axis=1), 1.0, atol=1e-6)
    # A temperature flattens the distribution but keeps the ranking.
    assert from_logits[0].max() < probabilities[0].max()
    assert (from_logits.argmax(axis=1) == logits.argmax(axis=1)).all()
    np.testing.assert_allclose(soft_targets(probabilities, 1.0), probabilities, atol=1e-5)


def test_artifact_format_follows_quantization() -> None:
    assert artifact_format(Compression()) == "onnx"
    for kind in ("int8", "int8-static", "int8-dynamic"):
        assert artifact_format(Compression(quantize=kind)) == "onnx-int8"
