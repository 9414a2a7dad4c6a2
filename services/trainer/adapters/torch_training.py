"""Training in PyTorch: seeded, early-stopped on validation loss, keeping the best weights; with a
teacher's soft targets (distillation) and with structured pruning followed by fine-tuning.

One code path serves a single process and each rank of DistributedDataParallel: the
``Coordinator`` hides the difference (identity for one process, collectives for many), and every
decision (stop, fail) is taken on rank 0's numbers and shared, so the ranks never disagree.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn
from torch.nn import functional
from torch.utils.data import DistributedSampler

from services.trainer.adapters.pruning import PruneOutcome, prune_units
from services.trainer.adapters.torch_models import (
    Classifier,
    build_classifier,
    standardization,
    target_standardization,
)
from services.trainer.domain import (
    DISTILL_ALPHA,
    DISTILL_TEMPERATURE,
    Budget,
    BudgetExceeded,
    EarlyStopping,
    EpochReport,
    ProgressCallback,
    TrainingPlan,
    check_finite,
)

_ARRAYS = ("train_features", "train_labels", "val_features", "val_labels")


@dataclass(frozen=True, eq=False)
class TrainingData:
    """What training may read: train and validation rows, and the teacher's soft targets."""

    train_features: np.ndarray
    train_labels: np.ndarray
    val_features: np.ndarray
    val_labels: np.ndarray
    soft_targets: np.ndarray | None = None

    def save(self, path: Path) -> None:
        """Write as .npz (plain arrays, no pickle) for the ranks of a distributed run."""
        arrays = {name: getattr(self, name) for name in _ARRAYS}
        if self.soft_targets is not None:
            arrays["soft_targets"] = self.soft_targets
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: Path) -> TrainingData:
        with np.load(path, allow_pickle=False) as stored:
            return cls(
                train_features=stored["train_features"],
                train_labels=stored["train_labels"],
                val_features=stored["val_features"],
                val_labels=stored["val_labels"],
                soft_targets=stored["soft_targets"] if "soft_targets" in stored.files else None,
            )


@dataclass(frozen=True)
class FitResult:
    """The trained classifier (on CPU, eval mode) and how training went.

    With pruning, ``unpruned`` is the full-width network at its best epoch, before the cut, and
    ``pruning`` says how much the cut removed. ``stopped_at_epoch_cap``: training ran every epoch
    it was allowed and was still improving at the last one (more epochs would likely help).
    """

    classifier: Classifier
    best_epoch: int
    epochs_run: int
    best_val_loss: float
    stopped_at_epoch_cap: bool = False
    unpruned: Classifier | None = None
    pruning: PruneOutcome | None = None


class Coordinator(Protocol):
    """What differs between one process and one rank of many."""

    rank: int
    world_size: int

    def wrap(self, model: nn.Module) -> nn.Module: ...

    def sum(self, values: list[float]) -> list[float]: ...

    def from_leader(self, values: list[float]) -> list[float]: ...


class SingleProcess:
    """The coordinator of a plain, one-process run."""

    rank = 0
    world_size = 1

    def wrap(self, model: nn.Module) -> nn.Module:
        return model

    def sum(self, values: list[float]) -> list[float]:
        return values

    def from_leader(self, values: list[float]) -> list[float]:
        return values


def choose_device(rank: int = 0) -> torch.device:
    """CUDA when there is a GPU (one per rank), else the CPU."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{rank % torch.cuda.device_count()}")
    return torch.device("cpu")


@dataclass
class _Run:
    plan: TrainingPlan
    tensors: dict[str, torch.Tensor]
    coordinator: Coordinator
    progress: ProgressCallback | None
    budget: Budget


def fit(
    plan: TrainingPlan,
    data: TrainingData,
    *,
    progress: ProgressCallback | None = None,
    device: torch.device | None = None,
    coordinator: Coordinator | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> FitResult:
    """Train per the plan (then prune structurally and fine-tune when asked); returns the best weights.

    ``clock`` measures the budget: wall time by default, ``time.process_time`` for CPU time.
    """
    coordinator = coordinator or SingleProcess()
    device = device or choose_device(coordinator.rank)
    mean, std = standardization(data.train_features)
    if plan.is_text:  # token ids are names, not measurements: the recipe's embedding reads them as they are
        mean, std = np.zeros_like(mean), np.ones_like(std)
    target = target_standardization(data.train_labels) if plan.is_regression else (0.0, 1.0)
    classifier = build_classifier(plan, mean, std, plan.hyperparameters.seed, target).to(device)
    tensors = _to_device(data, device, target if plan.is_regression else None)
    run = _Run(plan, tensors, coordinator, progress, Budget(plan.budget_s, clock))
    epochs = plan.hyperparameters.epochs
    stopping, epochs_run = _train_phase(classifier, run, first_epoch=1, epochs=epochs)
    at_cap = epochs_run == epochs and stopping.best_epoch == epochs
    unpruned, pruning = None, None
    if plan.compression.prune is not None:
        # Every rank cuts the same units: DDP keeps the weights identical and the rule is deterministic.
        unpruned = copy.deepcopy(classifier).cpu().eval()
        pruning = prune_units(classifier, plan.compression.prune)
        stopping, extra = _train_phase(classifier, run, first_epoch=epochs_run + 1, epochs=plan.finetune_epochs)
        epochs_run += extra
    classifier = classifier.cpu().eval()
    return FitResult(classifier, stopping.best_epoch, epochs_run, stopping.best_loss, at_cap, unpruned, pruning)


def _to_device(
    data: TrainingData, device: torch.device, target: tuple[float, float] | None = None
) -> dict[str, torch.Tensor]:
    """The arrays as tensors; a regressor's targets standardized by ``target`` (mean, std), as a column."""
    tensors = {
        "train_x": torch.as_tensor(np.array(data.train_features, dtype=np.float32)),
        "train_y": torch.as_tensor(np.array(data.train_labels, dtype=np.int64)),
        "val_x": torch.as_tensor(np.array(data.val_features, dtype=np.float32)),
        "val_y": torch.as_tensor(np.array(data.val_labels, dtype=np.int64)),
    }
    if target is not None:
        mean, std = target
        for name, values in (("train_y", data.train_labels), ("val_y", data.val_labels)):
            tensors[name] = torch.as_tensor(((np.asarray(values, dtype=np.float64) - mean) / std)[:, None]).float()
    if data.soft_targets is not None:
        tensors["soft"] = torch.as_tensor(np.array(data.soft_targets, dtype=np.float32))
    return {name: tensor.to(device) for name, tensor in tensors.items()}


def _train_phase(classifier: Classifier, run: _Run, *, first_epoch: int, epochs: int) -> tuple[EarlyStopping, int]:
    """Epochs until patience runs out; leaves the best weights in ``classifier``."""
    hyper = run.plan.hyperparameters
    trained = run.coordinator.wrap(classifier)
    optimizer = torch.optim.AdamW(trained.parameters(), lr=hyper.learning_rate, weight_decay=hyper.weight_decay)
    sampler: DistributedSampler[int] = DistributedSampler(
        range(len(run.tensors["train_y"])),  # type: ignore[arg-type]  # any sized sequence will do
        num_replicas=run.coordinator.world_size,
        rank=run.coordinator.rank,
        shuffle=True,
        seed=hyper.seed,
    )
    stopping = EarlyStopping(hyper.patience)
    best_state = _snapshot(classifier)
    epochs_run = 0
    for epoch in range(first_epoch, first_epoch + epochs):
        sampler.set_epoch(epoch)
        loss_sum, rows = _train_epoch(trained, optimizer, run.tensors, list(sampler), hyper.batch_size, run.plan.loss)
        report, over_budget = _agree(classifier, run, epoch, loss_sum, rows)
        epochs_run += 1
        check_finite(epoch, report.train_loss, report.val_loss)
        if stopping.update(epoch, report.val_loss):
            best_state = _snapshot(classifier)
        if run.progress is not None and run.coordinator.rank == 0:
            run.progress(report)
        if over_budget:
            raise BudgetExceeded(run.plan.budget_s, epoch)
        if stopping.should_stop:
            break
    classifier.load_state_dict(best_state)
    return stopping, epochs_run


def _agree(classifier: Classifier, run: _Run, epoch: int, loss_sum: float, rows: int) -> tuple[EpochReport, bool]:
    """The epoch's numbers as rank 0 sees them, shared so every rank decides the same."""
    total_loss, total_rows = run.coordinator.sum([loss_sum, float(rows)])
    val_loss, val_accuracy = _evaluate(classifier, run.tensors, run.plan.loss)
    shared = run.coordinator.from_leader([val_loss, val_accuracy, float(run.budget.exceeded())])
    report = EpochReport(
        epoch=epoch,
        epochs=run.plan.total_epochs,
        train_loss=total_loss / max(total_rows, 1.0),
        val_loss=shared[0],
        val_accuracy=None if run.plan.is_regression else shared[1],
    )
    return report, bool(shared[2])


def _train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    tensors: dict[str, torch.Tensor],
    order: list[int],
    batch: int,
    loss_name: str = "cross_entropy",
) -> tuple[float, int]:
    """One pass over this rank's rows; returns the summed loss and the row count."""
    model.train()
    index = torch.as_tensor(order, device=tensors["train_x"].device)
    total = torch.zeros((), device=index.device)
    for start in range(0, len(index), batch):
        rows = index[start : start + batch]
        logits = model(tensors["train_x"][rows])
        soft = tensors["soft"][rows] if "soft" in tensors else None
        loss = _loss(logits, tensors["train_y"][rows], soft, loss_name)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(rows)  # summed on the device: no sync per batch
    return float(total), len(index)


def _loss(
    logits: torch.Tensor, labels: torch.Tensor, soft: torch.Tensor | None, loss_name: str = "cross_entropy"
) -> torch.Tensor:
    """Cross-entropy; with a teacher, mixed with the KL divergence to its softened outputs. A regressor's
    mse or huber on its standardized target (Huber's delta 1: one standard deviation of the target)."""
    if loss_name == "mse":
        return functional.mse_loss(logits, labels)
    if loss_name == "huber":
        return functional.huber_loss(logits, labels, delta=1.0)
    hard = functional.cross_entropy(logits, labels)
    if soft is None:
        return hard
    student = functional.log_softmax(logits / DISTILL_TEMPERATURE, dim=1)
    # T² keeps the soft term's gradients on the scale of the hard term's (Hinton et al., 2015).
    distill = functional.kl_div(student, soft, reduction="batchmean") * DISTILL_TEMPERATURE**2
    return DISTILL_ALPHA * distill + (1 - DISTILL_ALPHA) * hard


@torch.no_grad()
def _evaluate(classifier: Classifier, tensors: dict[str, torch.Tensor], loss_name: str) -> tuple[float, float]:
    """Validation loss and accuracy (NaN for a regressor, which has none)."""
    classifier.eval()
    logits = classifier(tensors["val_x"])
    if loss_name != "cross_entropy":
        return _loss(logits, tensors["val_y"], None, loss_name).item(), float("nan")
    loss = functional.cross_entropy(logits, tensors["val_y"]).item()
    accuracy = (logits.argmax(dim=1) == tensors["val_y"]).float().mean().item()
    return loss, accuracy


def _snapshot(classifier: Classifier) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in classifier.state_dict().items()}
