"""The trainer on a regression dataset: the plan and its refusals, the losses, the metrics, and a short run
whose exported file gives the value itself."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from services.trainer.adapters.torch_training import _loss
from services.trainer.domain import InvalidRequest, plan_training, regression_metrics
from services.trainer.service import run_training
from shared.datasets import load_dataset, split
from shared.events import Compression, Hyperparameters, TrainingRequested
from shared.onnx import open_session, predict

DIABETES = load_dataset("sklearn:diabetes")


def _plan(**fields: object):  # type: ignore[no-untyped-def]
    request = TrainingRequested(model_name="d", dataset="sklearn:diabetes", **fields)  # type: ignore[arg-type]
    return plan_training(request, DIABETES, budget_s=60, max_world_size=4)


def test_a_regression_plan_has_one_output_and_mse_by_default() -> None:
    plan = _plan()
    assert plan.is_regression and plan.num_classes == 1 and plan.loss == "mse"
    assert _plan(hyperparameters=Hyperparameters(options={"loss": "huber"})).loss == "huber"


@pytest.mark.parametrize(
    ("fields", "fragment"),
    [
        ({"arch": "cnn"}, "only arch 'mlp' trains a regressor"),
        ({"arch": "gru"}, "only arch 'mlp' trains a regressor"),
        ({"compression": Compression(quantize="int8")}, "apply to classifiers"),
        ({"compression": Compression(prune=0.5)}, "apply to classifiers"),
        ({"compression": Compression(distill_from="teacher")}, "apply to classifiers"),
        ({"world_size": 2}, "one process"),
        ({"hyperparameters": Hyperparameters(options={"loss": "cross_entropy"})}, "loss: mse or huber"),
        ({"hyperparameters": Hyperparameters(options={"width": 3})}, "loss: mse or huber"),
        ({"hyperparameters": Hyperparameters(hidden_sizes=[])}, "hidden_sizes is empty"),
    ],
)
def test_what_does_not_apply_to_a_regressor_is_refused_with_a_reason(fields: dict[str, object], fragment: str) -> None:
    with pytest.raises(InvalidRequest, match=fragment):
        _plan(**fields)


def test_the_losses_on_a_standardized_target() -> None:
    predicted, target = torch.tensor([[0.0], [3.0]]), torch.tensor([[0.0], [0.0]])
    assert _loss(predicted, target, None, "mse").item() == pytest.approx(4.5)  # (0 + 9) / 2
    # Huber (delta 1): quadratic below one standard deviation, linear above: (0 + (3 - 0.5)) / 2
    assert _loss(predicted, target, None, "huber").item() == pytest.approx(1.25)


def test_regression_metrics_on_a_known_answer() -> None:
    targets = np.array([1.0, 2.0, 3.0, 4.0])
    predictions = np.array([2.0, 2.0, 3.0, 2.0])  # errors 1, 0, 0, -2
    metrics = regression_metrics(predictions, targets)
    assert metrics["rmse"] == pytest.approx(np.sqrt(5 / 4))
    assert metrics["mae"] == pytest.approx(3 / 4)
    assert metrics["r2"] == pytest.approx(1 - 5 / 5)  # residual 5, total 5
    assert regression_metrics(targets, targets) == {"rmse": 0.0, "mae": 0.0, "r2": 1.0}


def test_a_short_run_exports_a_regressor_that_predicts_in_the_target_units(tmp_path: Path) -> None:
    hyper = Hyperparameters(epochs=8, hidden_sizes=[16], learning_rate=1e-2, seed=2)
    request = TrainingRequested(model_name="d", dataset="sklearn:diabetes", hyperparameters=hyper)
    trained = run_training(request, workdir=tmp_path)
    assert trained.format == "onnx" and trained.signature.task == "regression"
    assert {"val_rmse", "val_mae", "val_r2", "val_loss", "latency_b1_p99_ms", "size_bytes"} <= set(trained.metrics)
    validation = split(DIABETES).validation
    values = predict(open_session(trained.path.read_bytes()), validation.features)
    assert values.shape == (len(validation), 1)
    # In the target's units (diabetes progression, 25..346), not standardized: its mean is near the targets'.
    assert abs(float(values.mean()) - float(validation.labels.mean())) < 40
    assert trained.metrics["val_rmse"] < float(validation.labels.std())  # better than predicting the mean
    assert trained.input_reference is not None and trained.input_reference.row_size == 10  # diabetes's features


def test_ferry_train_sends_the_task_and_the_loss_option() -> None:
    import argparse

    from services.trainer.cli import add_train_parser, build_request

    parser = argparse.ArgumentParser(prog="ferry")
    add_train_parser(parser.add_subparsers(dest="command"))
    argv = ["train", "--model", "p", "--dataset", "csv:prices.csv", "--task", "regression", "--option", "loss=huber"]
    request = build_request(parser.parse_args(argv))
    assert request.task == "regression" and request.hyperparameters.options == {"loss": "huber"}
    plain = build_request(parser.parse_args(["train", "--model", "d", "--dataset", "sklearn:diabetes"]))
    assert plain.task is None  # the dataset's own
    with pytest.raises(SystemExit):
        parser.parse_args([*argv[:5], "--task", "ranking"])
