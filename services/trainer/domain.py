"""The trainer's own types and rules: plans, early stopping, budgets, failures, metrics.

Pure logic: no torch, no ONNX Runtime, no I/O. The adapters do the work; this module decides.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from shared.events import Compression, Hyperparameters, Task, TrainingRequested
from shared.text import Vocabulary

INPUT_NAME = "input"
OUTPUT_NAME = "probabilities"
"""The served graph ends in a softmax: clients get class probabilities, no post-processing."""
REGRESSION_OUTPUT_NAME = "prediction"
"""A regressor's served graph ends by undoing the target's standardization: clients get the value itself."""
REGRESSION_LOSSES = ("mse", "huber")
"""A regressor's loss (option ``loss``), on the standardized target; Huber's delta is one standard deviation."""
OPSET = 17
MAX_HIDDEN_SIZE = 8192
MAX_HIDDEN_LAYERS = 8
DISTILL_TEMPERATURE = 4.0
DISTILL_ALPHA = 0.5  # weight of the teacher's soft targets; the rest goes to the hard labels
VERIFY_ATOL = 1e-4  # probabilities: float32 torch vs ORT differ by ~1e-7; a wrong graph by far more
QUANTIZED_MIN_AGREEMENT = 0.95  # share of validation rows where int8 and fp32 pick the same class
FORMAT_FP32 = "onnx"
FORMAT_INT8 = "onnx-int8"
BUILT_IN_ARCHS = ("mlp", "cnn")
"""Ferry's own networks; any other arch names a recipe (services/trainer/recipe.py)."""


class TrainingFailed(Exception):
    """A training request that cannot succeed; ``str()`` is the reason shown to the person."""


class InvalidRequest(TrainingFailed):
    """The request itself is wrong: unknown dataset, impossible hyper-parameters, ..."""


class LossDiverged(TrainingFailed):
    """The loss became NaN or infinite."""

    def __init__(self, epoch: int, value: float) -> None:
        kind = "NaN" if math.isnan(value) else "infinite"
        super().__init__(f"loss became {kind} at epoch {epoch}; lower the learning rate")
        self.epoch = epoch


class BudgetExceeded(TrainingFailed):
    """Training ran past its time budget."""

    def __init__(self, budget_s: float, epoch: int) -> None:
        super().__init__(
            f"training exceeded its {budget_s:g} s budget at epoch {epoch}; use fewer epochs or a smaller model"
        )


class ExportCheckFailed(TrainingFailed):
    """The exported ONNX model does not compute what the trained model computes."""


class TeacherUnavailable(TrainingFailed):
    """Distillation was asked for, but the teacher model cannot be used."""


class CompressionTooLossy(TrainingFailed):
    """The compressed model lost more validation accuracy than the request allows."""

    def __init__(self, accuracy: float, reference: float, reference_name: str, limit: float) -> None:
        super().__init__(
            f"the compressed model's validation accuracy {accuracy:.4f} is {reference - accuracy:.4f} below "
            f"{reference_name}'s {reference:.4f} (at most {limit:g} allowed); compress less or allow more"
        )


@dataclass(frozen=True)
class EpochReport:
    """What the progress callback receives after each epoch."""

    epoch: int
    epochs: int
    train_loss: float
    val_loss: float
    val_accuracy: float | None


ProgressCallback = Callable[[EpochReport], None]


@dataclass(frozen=True)
class Teacher:
    """A teacher for distillation: its registry version and its ONNX file on local disk."""

    model_name: str
    version: int
    path: Path


class DatasetShape(Protocol):
    """What a plan needs of a dataset: an in-memory ``Dataset`` or a streamed ``ParquetDataset``."""

    @property
    def is_regression(self) -> bool: ...

    @property
    def num_features(self) -> int: ...

    @property
    def num_classes(self) -> int: ...

    @property
    def image_shape(self) -> tuple[int, int] | None: ...

    @property
    def is_text(self) -> bool: ...


@dataclass(frozen=True)
class StreamingOptions:
    """How a dataset larger than memory (``parquet:``) is streamed; every bound is in rows."""

    loader_workers: int = 1
    """DataLoader worker processes reading and hashing record batches while the network trains."""
    shuffle_rows: int = 65_536
    """Rows shuffled together: the buffer a batch is drawn from (memory is bounded by it)."""
    validation_rows: int = 100_000
    """Validation rows each epoch's validation loss is streamed over: the first ones, in file order."""
    statistics_rows: int = 1_000_000
    """Training rows the input standardization (and a regressor's target scale) is computed from, streamed."""
    measure_rows: int = 20_000
    """Validation rows held in memory to verify the export and measure the version (the first ones)."""


@dataclass(frozen=True)
class TrainingPlan:
    """Everything the adapters need to train one model, already validated."""

    arch: str
    num_features: int
    num_classes: int
    image_shape: tuple[int, int] | None
    hyperparameters: Hyperparameters
    compression: Compression = field(default_factory=Compression)
    world_size: int = 1
    budget_s: float = 1800.0
    dataset: str = ""
    task: Task = "classification"
    loss: str = "cross_entropy"
    """cross_entropy for a classifier; mse or huber for a regressor (``num_classes`` is then 1: one output)."""
    vocabulary_size: int = 0
    """A text model's: token ids run below it, and ``num_features`` is the fixed length of a text's ids; 0 otherwise."""

    @property
    def is_regression(self) -> bool:
        return self.task == "regression"

    @property
    def is_text(self) -> bool:
        return self.vocabulary_size > 0

    @property
    def finetune_epochs(self) -> int:
        """Epochs of training allowed after pruning: the same cap again (early stopping ends it)."""
        return 0 if self.compression.prune is None else self.hyperparameters.epochs

    @property
    def total_epochs(self) -> int:
        return self.hyperparameters.epochs + self.finetune_epochs


def plan_training(
    request: TrainingRequested,
    dataset: DatasetShape,
    *,
    budget_s: float,
    max_world_size: int,
    vocabulary: Vocabulary | None = None,
) -> TrainingPlan:
    """Check the request against the dataset and the trainer's limits; raise InvalidRequest. A text dataset
    needs the ``vocabulary`` of its training rows."""
    if dataset.is_text:
        if vocabulary is None:
            raise ValueError("a text dataset is planned with the vocabulary of its training rows")
        return _plan_text(request, dataset, vocabulary, budget_s=budget_s)
    if dataset.is_regression:
        return _plan_regression(request, dataset, budget_s=budget_s)
    if request.arch in BUILT_IN_ARCHS:
        _check_built_in(request, dataset)
    elif request.compression.prune is not None:
        # A recipe's network is any graph; the structured cut knows only the chains of mlp and cnn.
        raise InvalidRequest(f"--prune cuts Ferry's own mlp and cnn; recipe {request.arch!r} cannot be pruned")
    if request.world_size > max_world_size:
        raise InvalidRequest(f"world_size {request.world_size} exceeds this trainer's limit of {max_world_size}")
    return TrainingPlan(
        arch=request.arch,
        num_features=dataset.num_features,
        num_classes=dataset.num_classes,
        image_shape=dataset.image_shape,
        hyperparameters=request.hyperparameters,
        compression=request.compression,
        world_size=request.world_size,
        budget_s=budget_s,
        dataset=request.dataset,
    )


def _plan_regression(request: TrainingRequested, dataset: DatasetShape, *, budget_s: float) -> TrainingPlan:
    """A regressor: Ferry's mlp, one process, no compression (each compression check measures accuracy)."""
    if request.arch != "mlp":
        raise InvalidRequest(f"{request.dataset!r} is a regression dataset; only arch 'mlp' trains a regressor")
    compression = request.compression
    if compression.quantize or compression.prune is not None or compression.distill_from is not None:
        raise InvalidRequest(
            "--quantize, --prune and --distill-from apply to classifiers (their checks measure accuracy); "
            "train the regressor without them"
        )
    if request.world_size > 1:
        raise InvalidRequest("a regressor trains in one process; use world_size 1")
    options = dict(request.hyperparameters.options)
    loss = options.pop("loss", "mse")
    if options or loss not in REGRESSION_LOSSES:
        raise InvalidRequest(f"a regressor takes one option, loss: {' or '.join(REGRESSION_LOSSES)}")
    _check_built_in(request, dataset, allow_options=True)
    return TrainingPlan(
        arch="mlp",
        num_features=dataset.num_features,
        num_classes=1,
        image_shape=None,
        hyperparameters=request.hyperparameters,
        budget_s=budget_s,
        dataset=request.dataset,
        task="regression",
        loss=str(loss),
    )


def _plan_text(
    request: TrainingRequested, dataset: DatasetShape, vocabulary: Vocabulary, *, budget_s: float
) -> TrainingPlan:
    """A text classifier: a recipe reading token ids (gru, transformer), one process, no compression."""
    if request.arch in BUILT_IN_ARCHS:
        raise InvalidRequest(
            f"{request.dataset!r} is a text dataset; arch {request.arch!r} reads numbers: "
            "use a recipe that reads token ids, such as gru or transformer"
        )
    compression = request.compression
    if compression.quantize or compression.prune is not None or compression.distill_from is not None:
        raise InvalidRequest("--quantize, --prune and --distill-from do not apply to text models yet")
    if request.world_size > 1:
        raise InvalidRequest("a text model trains in one process; use world_size 1")
    return TrainingPlan(
        arch=request.arch,
        num_features=vocabulary.max_length,
        num_classes=dataset.num_classes,
        image_shape=None,
        hyperparameters=request.hyperparameters,
        budget_s=budget_s,
        dataset=request.dataset,
        vocabulary_size=vocabulary.size,
    )


def _check_built_in(request: TrainingRequested, dataset: DatasetShape, *, allow_options: bool = False) -> None:
    hyper = request.hyperparameters
    if hyper.options and not allow_options:
        raise InvalidRequest(f"options are a recipe's hyper-parameters; {request.arch} takes hidden_sizes instead")
    if request.arch == "cnn" and dataset.image_shape is None:
        raise InvalidRequest(
            f"arch 'cnn' needs image-shaped data (like sklearn:digits); {request.dataset!r} is tabular, use 'mlp'"
        )
    if request.arch == "mlp" and not hyper.hidden_sizes:
        raise InvalidRequest("hidden_sizes is empty; an mlp needs at least one hidden layer, e.g. [256, 128]")
    if len(hyper.hidden_sizes) > MAX_HIDDEN_LAYERS:
        raise InvalidRequest(f"hidden_sizes has {len(hyper.hidden_sizes)} layers; at most {MAX_HIDDEN_LAYERS}")
    bad_sizes = [size for size in hyper.hidden_sizes if not 1 <= size <= MAX_HIDDEN_SIZE]
    if bad_sizes:
        raise InvalidRequest(f"hidden_sizes {bad_sizes} must each be between 1 and {MAX_HIDDEN_SIZE}")


class EarlyStopping:
    """Tracks the best validation loss; says when patience has run out."""

    def __init__(self, patience: int, min_delta: float = 1e-6) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best_loss = math.inf
        self.best_epoch = 0
        self._epochs_without_gain = 0

    def update(self, epoch: int, val_loss: float) -> bool:
        """Record an epoch's validation loss; True when it is the best so far."""
        if val_loss < self.best_loss - self.min_delta:
            self.best_loss, self.best_epoch = val_loss, epoch
            self._epochs_without_gain = 0
            return True
        self._epochs_without_gain += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self._epochs_without_gain >= self.patience


class Budget:
    """A wall-clock budget for training; the clock is injectable so tests need not wait."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self._clock = clock
        self._start = clock()

    def exceeded(self) -> bool:
        return self._clock() - self._start > self.seconds

    def check(self, epoch: int) -> None:
        """Raise BudgetExceeded when the time is spent."""
        if self.exceeded():
            raise BudgetExceeded(self.seconds, epoch)


def check_finite(epoch: int, *losses: float) -> None:
    """Raise LossDiverged when any loss is NaN or infinite."""
    for value in losses:
        if not math.isfinite(value):
            raise LossDiverged(epoch, value)


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose most probable class is the label."""
    return float(np.mean(np.argmax(probabilities, axis=1) == labels))


def log_loss(probabilities: np.ndarray, labels: np.ndarray, eps: float = 1e-7) -> float:
    """Mean cross-entropy of predicted probabilities against the labels."""
    chosen = probabilities[np.arange(len(labels)), labels]
    return float(-np.mean(np.log(np.clip(chosen, eps, 1.0))))


def regression_metrics(predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and R² (1 - residual / total sum of squares; 0 when the targets do not vary)."""
    errors = predictions.astype(np.float64) - targets.astype(np.float64)
    total = float(np.sum((targets - targets.mean()) ** 2))
    residual = float(np.sum(errors**2))
    return {
        "rmse": float(np.sqrt(np.mean(errors**2))),
        "mae": float(np.mean(np.abs(errors))),
        "r2": 1.0 - residual / total if total > 0 else 0.0,
    }


def soft_targets(teacher_output: np.ndarray, temperature: float) -> np.ndarray:
    """Teacher outputs (probabilities, or logits) softened by a temperature, as probabilities."""
    rows_sum_to_one = np.allclose(teacher_output.sum(axis=1), 1.0, atol=1e-3) and (teacher_output >= 0).all()
    # log p is a valid logit vector (softmax ignores constant shifts), so both kinds work.
    logits = np.log(np.clip(teacher_output, 1e-12, 1.0)) if rows_sum_to_one else teacher_output
    scaled = logits / temperature
    scaled = scaled - scaled.max(axis=1, keepdims=True)
    exp = np.exp(scaled)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def artifact_format(compression: Compression) -> str:
    """The ArtifactRef.format of what ships (static and dynamic int8 are both plain ONNX to a runtime)."""
    return FORMAT_INT8 if compression.quantize is not None else FORMAT_FP32
