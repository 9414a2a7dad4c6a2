"""One training job on a ``parquet:`` dataset larger than memory: describe, stream, train, export, verify, measure.

The same plan, network, loss, early stopping, budget, progress events, export and verification as
:func:`services.trainer.service.run_training`, whose hook sends ``parquet:`` requests here; only the data
arrives differently: mini-batches streamed from the train part through a DataLoader, each epoch's
validation loss streamed over the first ``validation_rows`` validation rows, and the export verified and
measured on the first ``measure_rows`` of them, held in memory. No test row is ever read.

One process (world size 1) and no compression: pruning, distillation and quantization each need their
data in memory (a teacher's outputs row by row, a calibration set, repeated passes), so they are refused.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
from torch.utils.data import DataLoader

from services.trainer.adapters.onnx_model import signature_of
from services.trainer.adapters.torch_models import Classifier, build_classifier, check_network
from services.trainer.adapters.torch_training import FitResult, _loss, _snapshot, choose_device
from services.trainer.domain import (
    BUILT_IN_ARCHS,
    FORMAT_FP32,
    Budget,
    BudgetExceeded,
    EarlyStopping,
    EpochReport,
    InvalidRequest,
    ProgressCallback,
    StreamingOptions,
    Teacher,
    TrainingPlan,
    check_finite,
    plan_training,
)
from services.trainer.measure import FP32, measure_regression, measure_run
from services.trainer.service import JobLimits, TrainedModel, _export_verified, _Stopwatch
from services.trainer.streaming import Batch, PartStream, StreamRefusal, held_out_sample, train_statistics
from shared.dataset_files import DatasetError
from shared.events import TrainingRequested
from shared.parquet_datasets import ParquetDataset, open_parquet
from shared.parquet_sources import parse_name
from shared.regression import quantile_edges

_T = TypeVar("_T")
_VALIDATION_BATCH_ROWS = 4096
_BUDGET_CHECK_BATCHES = 50  # a long epoch looks at the clock every this many batches, not only at its end


@dataclass(frozen=True)
class StreamedFit:
    """The fit, and the training rows the last epoch read (the bench checks them against the train part)."""

    result: FitResult
    train_rows: int
    statistics_rows: int


def run_streaming_training(
    request: TrainingRequested,
    *,
    workdir: Path,
    progress: ProgressCallback | None = None,
    teacher: Teacher | None = None,
    limits: JobLimits = JobLimits(),
) -> TrainedModel:
    """Train on a ``parquet:`` dataset read in batches; raises TrainingFailed with the reason."""
    stopwatch = _Stopwatch()
    options = limits.streaming
    with stopwatch.phase("load"):
        dataset = _open(request)
        plan = plan_training(request, dataset, budget_s=limits.budget_s, max_world_size=limits.max_world_size)
        _check_streamable(request, plan, teacher)
        if plan.arch not in BUILT_IN_ARCHS:
            check_network(plan)
        sample = _dataset_step(dataset, lambda: held_out_sample(dataset, options.measure_rows))
    with stopwatch.phase("train"):
        fitted = _dataset_step(dataset, lambda: fit_streaming(plan, dataset, options, progress, limits.budget_clock))
    with stopwatch.phase("verify"):
        files = _export_verified(fitted.result, workdir, sample.features)
    with stopwatch.phase("measure"):
        if plan.is_regression:
            measured, values = measure_regression(files[FP32], result=fitted.result, validation=sample)
            signature = signature_of(files[FP32]).regressor(quantile_edges(values))
        else:
            measured = measure_run(files, result=fitted.result, validation=sample, compression=plan.compression)
            signature = signature_of(measured.shipped).labelled(dataset.class_names)
    metrics = measured.metrics | {
        "train_rows": float(fitted.train_rows),
        "statistics_rows": float(fitted.statistics_rows),
        "measured_validation_rows": float(len(sample)),
    }
    return TrainedModel(measured.shipped, FORMAT_FP32, signature, dataset.split_id, metrics, stopwatch.timings)


def _open(request: TrainingRequested) -> ParquetDataset:
    """The dataset described; a label column in the request must be the one its name chooses."""
    try:
        named = parse_name(request.dataset).label_column
        if request.label_column is not None and request.label_column != named:
            raise DatasetError(
                request.dataset,
                f"a parquet: dataset names its label column in its name: add ?label={request.label_column}",
            )
        return open_parquet(request.dataset, task=request.task)
    except DatasetError as error:
        raise InvalidRequest(str(error)) from error


def _dataset_step(dataset: ParquetDataset, step: Callable[[], _T]) -> _T:
    """A DatasetError met while streaming (a missing key, a bad value deep in the file) ends the request."""
    try:
        return step()
    except DatasetError as error:
        raise InvalidRequest(str(error)) from error


def _check_streamable(request: TrainingRequested, plan: TrainingPlan, teacher: Teacher | None) -> None:
    compression = request.compression
    if compression.quantize or compression.prune is not None or compression.distill_from is not None or teacher:
        raise InvalidRequest(
            f"{request.dataset!r} is streamed (parquet:); --quantize, --prune and --distill-from need the data "
            "in memory: train without them"
        )
    if plan.world_size > 1:
        raise InvalidRequest(f"{request.dataset!r} is streamed (parquet:) in one process; use world_size 1")


def fit_streaming(
    plan: TrainingPlan,
    dataset: ParquetDataset,
    options: StreamingOptions,
    progress: ProgressCallback | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> StreamedFit:
    """Train per the plan on batches streamed from the train part; returns the best weights."""
    statistics = train_statistics(dataset, options.statistics_rows)
    target = statistics.target if plan.is_regression else (0.0, 1.0)
    hyper = plan.hyperparameters
    device = choose_device()
    classifier = build_classifier(plan, statistics.mean, statistics.std, hyper.seed, target).to(device)
    optimizer = torch.optim.AdamW(classifier.parameters(), lr=hyper.learning_rate, weight_decay=hyper.weight_decay)
    train = PartStream(
        dataset,
        "train",
        batch_rows=hyper.batch_size,
        shuffle_rows=options.shuffle_rows,
        seed=hyper.seed,
        target=target if plan.is_regression else None,
    )
    loader = DataLoader(train, batch_size=None, num_workers=options.loader_workers)
    stopping, budget = EarlyStopping(hyper.patience), Budget(plan.budget_s, clock)
    best_state, epochs_run, rows = _snapshot(classifier), 0, 0
    for epoch in range(1, hyper.epochs + 1):
        train.set_epoch(epoch)
        loss_sum, rows = _train_epoch(classifier, optimizer, loader, plan.loss, device, budget, epoch, plan.budget_s)
        if rows == 0:
            raise InvalidRequest(f"{dataset.name!r} has no rows in its train part")
        val_loss, val_accuracy = _validate(classifier, dataset, plan, target, options.validation_rows, device)
        report = EpochReport(
            epoch, plan.total_epochs, loss_sum / rows, val_loss, None if plan.is_regression else val_accuracy
        )
        epochs_run += 1
        check_finite(epoch, report.train_loss, report.val_loss)
        if stopping.update(epoch, report.val_loss):
            best_state = _snapshot(classifier)
        if progress is not None:
            progress(report)
        if budget.exceeded():
            raise BudgetExceeded(plan.budget_s, epoch)
        if stopping.should_stop:
            break
    classifier.load_state_dict(best_state)
    at_cap = epochs_run == hyper.epochs and stopping.best_epoch == hyper.epochs
    result = FitResult(classifier.cpu().eval(), stopping.best_epoch, epochs_run, stopping.best_loss, at_cap)
    return StreamedFit(result, rows, statistics.rows)


def _train_epoch(
    classifier: Classifier,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader[Batch | StreamRefusal],
    loss_name: str,
    device: torch.device,
    budget: Budget,
    epoch: int,
    budget_s: float,
) -> tuple[float, int]:
    """One pass over the streamed train part; the summed loss and the rows read."""
    classifier.train()
    total = torch.zeros((), device=device)
    rows = 0
    for batch, item in enumerate(loader, start=1):
        if isinstance(item, StreamRefusal):
            item.raise_it()
        features, labels = item
        features, labels = features.to(device), labels.to(device)
        loss = _loss(classifier(features), labels, None, loss_name)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(labels)
        rows += len(labels)
        if batch % _BUDGET_CHECK_BATCHES == 0 and budget.exceeded():
            raise BudgetExceeded(budget_s, epoch)
    return float(total), rows


@torch.no_grad()
def _validate(
    classifier: Classifier,
    dataset: ParquetDataset,
    plan: TrainingPlan,
    target: tuple[float, float],
    max_rows: int,
    device: torch.device,
) -> tuple[float, float]:
    """Loss and accuracy over the first ``max_rows`` validation rows, streamed batch by batch."""
    classifier.eval()
    stream = PartStream(
        dataset, "validation", batch_rows=_VALIDATION_BATCH_ROWS, target=target if plan.is_regression else None
    )
    loss_sum, correct, rows = 0.0, 0.0, 0
    for item in stream:
        if isinstance(item, StreamRefusal):
            item.raise_it()
        features, labels = item
        features, labels = features[: max_rows - rows].to(device), labels[: max_rows - rows].to(device)
        logits = classifier(features)
        loss_sum += float(_loss(logits, labels, None, plan.loss)) * len(labels)
        if not plan.is_regression:
            correct += float((logits.argmax(dim=1) == labels).sum())
        rows += len(labels)
        if rows >= max_rows:
            break
    if rows == 0:
        raise InvalidRequest(f"{dataset.name!r} has no rows in its validation part")
    return loss_sum / rows, correct / rows if not plan.is_regression else float("nan")
