"""DistributedDataParallel over two local CPU processes (gloo): trains, exports, fails cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.trainer.adapters.distributed import plan_from_json, plan_to_json
from services.trainer.adapters.onnx_model import predict
from services.trainer.domain import EpochReport, TrainingFailed, TrainingPlan, accuracy
from services.trainer.service import JobLimits, load_split, run_training
from shared.events import Compression, Hyperparameters, TrainingRequested

pytestmark = pytest.mark.slow

LIMITS = JobLimits(budget_s=300.0, max_world_size=2)


def test_plan_survives_its_json_trip_to_the_ranks() -> None:
    plan = TrainingPlan(
        arch="cnn",
        num_features=64,
        num_classes=10,
        image_shape=(8, 8),
        hyperparameters=Hyperparameters(hidden_sizes=[32]),
        compression=Compression(prune=0.3),
        world_size=2,
    )
    assert plan_from_json(plan_to_json(plan)) == plan


def test_two_ranks_train_and_prune_alike_and_the_parent_exports_a_served_quality_model(tmp_path: Path) -> None:
    compression = Compression(prune=0.5)
    request = TrainingRequested(model_name="digits", dataset="sklearn:digits", world_size=2, compression=compression)
    reports: list[EpochReport] = []
    trained = run_training(request, workdir=tmp_path, progress=reports.append, limits=LIMITS)
    parts = load_split(request)
    # Same quality bar as the single-process MLP (≥ 0.95 on the held-out test split).
    assert accuracy(predict(trained.path, parts.test.features), parts.test.labels) >= 0.95
    assert [report.epoch for report in reports] == list(range(1, int(trained.metrics["epochs_run"]) + 1))
    assert trained.signature.inputs[0].shape == [-1, 64]
    # Rank 0's pruned weights were loaded into a network of their shape, exported and verified.
    assert trained.metrics["parameters"] < trained.metrics["unpruned_parameters"] == 50826
    assert trained.metrics["parameter_ratio"] == pytest.approx(0.5, abs=0.05)


def test_a_diverging_rank_group_fails_with_the_reason(tmp_path: Path) -> None:
    hyper = Hyperparameters(learning_rate=10.0, weight_decay=1.0, epochs=50, batch_size=4)
    request = TrainingRequested(model_name="iris", dataset="sklearn:iris", world_size=2, hyperparameters=hyper)
    with pytest.raises(TrainingFailed, match="lower the learning rate"):
        run_training(request, workdir=tmp_path, limits=LIMITS)
