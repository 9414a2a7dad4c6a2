"""The training loop over a streamed part: the trainer's network, loss, early stopping and budget, fed by a
DataLoader over :class:`~services.trainer.streaming.PartStream`, in one process or on each DDP rank.

As in ``torch_training.fit``, a ``Coordinator`` hides the difference: each rank streams its own share of the
row groups, DDP's ``join`` lets a rank with fewer batches finish its epoch while the others go on (shares
are rarely equal), rank 0 validates, and every decision (stop, fail) is taken on rank 0's numbers, shared.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader

from services.trainer.adapters.torch_models import Classifier, build_classifier
from services.trainer.adapters.torch_training import (
    Coordinator,
    FitResult,
    SingleProcess,
    _loss,
    _snapshot,
    choose_device,
)
from services.trainer.domain import (
    Budget,
    BudgetExceeded,
    EarlyStopping,
    EpochReport,
    InvalidRequest,
    ProgressCallback,
    StreamingOptions,
    TrainingPlan,
    check_finite,
)
from services.trainer.streaming import Batch, InputStatistics, PartStream, StreamRefusal
from shared.parquet_datasets import ParquetDataset

VALIDATION_BATCH_ROWS = 4096
_BUDGET_CHECK_BATCHES = 50  # a long epoch of one process looks at the clock every this many batches


@dataclass(frozen=True)
class StreamedFit:
    """The fit, and the training rows the last epoch read on every rank (the bench checks them)."""

    result: FitResult
    train_rows: int
    statistics_rows: int


def fit_streaming(
    plan: TrainingPlan,
    dataset: ParquetDataset,
    options: StreamingOptions,
    statistics: InputStatistics,
    *,
    progress: ProgressCallback | None = None,
    clock: Callable[[], float] = time.monotonic,
    coordinator: Coordinator | None = None,
    device: torch.device | None = None,
) -> StreamedFit:
    """Train per the plan on batches streamed from the train part; returns the best weights."""
    coordinator = coordinator or SingleProcess()
    device = device or choose_device(coordinator.rank)
    target = statistics.target if plan.is_regression else (0.0, 1.0)
    hyper = plan.hyperparameters
    classifier = build_classifier(plan, statistics.mean, statistics.std, hyper.seed, target).to(device)
    trained = coordinator.wrap(classifier)
    optimizer = torch.optim.AdamW(trained.parameters(), lr=hyper.learning_rate, weight_decay=hyper.weight_decay)
    train = PartStream(
        dataset,
        "train",
        batch_rows=hyper.batch_size,
        shuffle_rows=options.shuffle_rows,
        seed=hyper.seed,
        rank=coordinator.rank,
        world_size=coordinator.world_size,
        target=target if plan.is_regression else None,
    )
    # fork, whatever the platform's default: a worker inherits the open dataset (its opener and footers), which
    # nothing serializes, and a DDP rank (itself spawned) would otherwise spawn its workers too.
    context = "fork" if options.loader_workers else None
    loader = DataLoader(train, batch_size=None, num_workers=options.loader_workers, multiprocessing_context=context)
    stopping, budget = EarlyStopping(hyper.patience), Budget(plan.budget_s, clock)
    best_state, epochs_run, rows = _snapshot(classifier), 0, 0
    for epoch in range(1, hyper.epochs + 1):
        train.set_epoch(epoch)
        # Mid-epoch budget checks only alone: a rank that stopped on its own clock would leave the others waiting.
        alone = budget if coordinator.world_size == 1 else None
        loss_sum, my_rows = _train_epoch(trained, optimizer, loader, plan.loss, device, alone, epoch)
        total_loss, total_rows = coordinator.sum([loss_sum, float(my_rows)])
        rows = int(total_rows)
        if rows == 0:
            raise InvalidRequest(f"{dataset.name!r} has no rows in its train part")
        mine = (
            _validate(classifier, dataset, plan, target, options.validation_rows, device)
            if not coordinator.rank
            else (0.0, 0.0)
        )
        val_loss, val_accuracy, over = coordinator.from_leader([*mine, float(budget.exceeded())])
        accuracy = None if plan.is_regression else val_accuracy
        report = EpochReport(epoch, plan.total_epochs, total_loss / rows, val_loss, accuracy)
        epochs_run += 1
        check_finite(epoch, report.train_loss, report.val_loss)
        if stopping.update(epoch, report.val_loss):
            best_state = _snapshot(classifier)
        if progress is not None and coordinator.rank == 0:
            progress(report)
        if over:
            raise BudgetExceeded(plan.budget_s, epoch)
        if stopping.should_stop:
            break
    classifier.load_state_dict(best_state)
    at_cap = epochs_run == hyper.epochs and stopping.best_epoch == hyper.epochs
    result = FitResult(classifier.cpu().eval(), stopping.best_epoch, epochs_run, stopping.best_loss, at_cap)
    return StreamedFit(result, rows, statistics.rows)


def _train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader[Batch | StreamRefusal],
    loss_name: str,
    device: torch.device,
    budget: Budget | None,
    epoch: int,
) -> tuple[float, int]:
    """One pass over this rank's share of the streamed train part; the summed loss and the rows read."""
    model.train()
    total = torch.zeros((), device=device)
    rows = 0
    joined: AbstractContextManager[object] = (
        model.join() if isinstance(model, DistributedDataParallel) else nullcontext()
    )
    with joined:
        for batch, item in enumerate(loader, start=1):
            if isinstance(item, StreamRefusal):
                item.raise_it()
            features, labels = item[0].to(device), item[1].to(device)
            loss = _loss(model(features), labels, None, loss_name)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.detach() * len(labels)
            rows += len(labels)
            if budget is not None and batch % _BUDGET_CHECK_BATCHES == 0 and budget.exceeded():
                raise BudgetExceeded(budget.seconds, epoch)
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
    """Loss and accuracy (NaN for a regressor) over the first ``max_rows`` validation rows, batch by batch."""
    classifier.eval()
    regression_target = target if plan.is_regression else None
    stream = PartStream(dataset, "validation", batch_rows=VALIDATION_BATCH_ROWS, target=regression_target)
    loss_sum, correct, rows = 0.0, 0.0, 0
    for item in stream:
        if isinstance(item, StreamRefusal):
            item.raise_it()
        features, labels = item[0][: max_rows - rows].to(device), item[1][: max_rows - rows].to(device)
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
