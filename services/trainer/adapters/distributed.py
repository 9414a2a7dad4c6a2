"""DistributedDataParallel over local processes: gloo on CPU, nccl when each rank has a GPU.

The parent spawns ``world_size`` ranks and hands them the plan as JSON and the data as .npz (no
pickled objects cross). Rank 0 reports progress through a queue and saves weights-only checkpoints
(the trained network, and the full-width one when it was pruned); the parent loads them with
``torch.load(..., weights_only=True)`` into networks shaped like them, and exports.
"""

from __future__ import annotations

import gc
import json
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as torch_mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from services.trainer.adapters.pruning import PruneOutcome, resize_like
from services.trainer.adapters.torch_models import Classifier, build_classifier
from services.trainer.adapters.torch_training import FitResult, TrainingData, fit
from services.trainer.domain import EpochReport, ProgressCallback, TrainingFailed, TrainingPlan
from shared.events import Compression, Hyperparameters

_GROUP_TIMEOUT = timedelta(seconds=300)  # a rank that vanished must not hang the others forever
CHECKPOINT_NAME = "checkpoint.pt"
UNPRUNED_CHECKPOINT_NAME = "checkpoint.unpruned.pt"


class ProcessGroupCoordinator:
    """The coordinator of one DDP rank: collectives over the default process group."""

    def __init__(self, rank: int, world_size: int, device: torch.device) -> None:
        self.rank = rank
        self.world_size = world_size
        self._device = device

    def wrap(self, model: nn.Module) -> nn.Module:
        device_ids = [self._device.index] if self._device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids)

    def sum(self, values: list[float]) -> list[float]:
        tensor = torch.tensor(values, dtype=torch.float64, device=self._device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()

    def from_leader(self, values: list[float]) -> list[float]:
        tensor = torch.tensor(values, dtype=torch.float64, device=self._device)
        dist.broadcast(tensor, src=0)
        return tensor.tolist()


def plan_to_json(plan: TrainingPlan) -> str:
    fields = asdict(plan)
    fields["hyperparameters"] = plan.hyperparameters.model_dump(mode="json")
    fields["compression"] = plan.compression.model_dump(mode="json")
    return json.dumps(fields)


def plan_from_json(text: str) -> TrainingPlan:
    fields = json.loads(text)
    fields["hyperparameters"] = Hyperparameters.model_validate(fields["hyperparameters"])
    fields["compression"] = Compression.model_validate(fields["compression"])
    fields["image_shape"] = tuple(fields["image_shape"]) if fields["image_shape"] else None
    return TrainingPlan(**fields)


def fit_distributed(
    plan: TrainingPlan, data: TrainingData, *, workdir: Path, progress: ProgressCallback | None = None
) -> FitResult:
    """Train on ``plan.world_size`` local ranks; returns rank 0's result."""
    data_path = workdir / "training-data.npz"
    data.save(data_path)
    messages = run_ranks(_rank_main, (plan_to_json(plan), str(data_path), str(workdir)), plan.world_size, progress)
    return _result(plan, workdir, messages)


def run_ranks(
    target: Callable[..., None], args: tuple[Any, ...], world_size: int, progress: ProgressCallback | None
) -> list[dict[str, Any]]:
    """Spawn ``target(rank, *args, port, queue)`` on ``world_size`` ranks; the JSON messages they sent.

    Progress messages go to ``progress`` as they arrive.
    """
    queue = torch_mp.get_context("spawn").SimpleQueue()
    context = torch_mp.start_processes(
        target, args=(*args, _free_port(), queue), nprocs=world_size, join=False, start_method="spawn"
    )
    messages: list[dict[str, Any]] = []
    try:
        while not context.join(timeout=0.2):
            messages += _drain(queue, progress)
        messages += _drain(queue, progress)
    except torch_mp.ProcessExitedException:
        # A rank that dies in teardown after rank 0 reported the failure does not hide the reason.
        messages += _drain(queue, progress)
        if not any(message["kind"] == "failed" for message in messages):
            raise
    finally:
        for process in context.processes:
            if process.is_alive():  # only when the parent itself failed (say, its callback)
                process.terminate()
    return messages


def _drain(queue: Any, progress: ProgressCallback | None) -> list[dict[str, Any]]:
    received = []
    while not queue.empty():
        message = json.loads(queue.get())
        if message["kind"] == "progress" and progress is not None:
            progress(EpochReport(**message["report"]))
        received.append(message)
    return received


def _result(plan: TrainingPlan, workdir: Path, messages: list[dict[str, Any]]) -> FitResult:
    for message in messages:
        if message["kind"] == "failed":
            raise TrainingFailed(message["reason"])
    done = next((message for message in messages if message["kind"] == "done"), None)
    if done is None:
        raise RuntimeError("distributed training ended without a result from rank 0")
    pruned = done["pruning"] is not None
    return FitResult(
        classifier=load_checkpoint(plan, workdir / CHECKPOINT_NAME),
        best_epoch=done["best_epoch"],
        epochs_run=done["epochs_run"],
        best_val_loss=done["best_val_loss"],
        stopped_at_epoch_cap=done["stopped_at_epoch_cap"],
        unpruned=load_checkpoint(plan, workdir / UNPRUNED_CHECKPOINT_NAME) if pruned else None,
        pruning=PruneOutcome(**done["pruning"]) if pruned else None,
    )


def load_checkpoint(plan: TrainingPlan, path: Path) -> Classifier:
    """Rebuild the network in the checkpoint's shapes (pruned or not) and load rank 0's weights."""
    placeholder = np.zeros(plan.num_features, dtype=np.float32)
    classifier = build_classifier(plan, placeholder, placeholder + 1, plan.hyperparameters.seed)
    state = torch.load(path, weights_only=True, map_location="cpu")  # tensors only: no pickle
    resize_like(classifier, state)
    classifier.load_state_dict(state)
    return classifier.eval()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _rank_main(rank: int, plan_json: str, data_path: str, workdir: str, port: int, queue: Any) -> None:
    """One rank: join the group, train, and on rank 0 save the weights and report."""
    plan = plan_from_json(plan_json)
    with process_group(rank, plan.world_size, port) as device:
        _train_rank(rank, plan, TrainingData.load(Path(data_path)), Path(workdir), queue, device)


@contextmanager
def process_group(rank: int, world_size: int, port: int) -> Iterator[torch.device]:
    """Join the local group (nccl with a GPU per rank, else gloo) for the block; the rank's device."""
    use_nccl = torch.cuda.is_available() and torch.cuda.device_count() >= world_size
    device = torch.device(f"cuda:{rank}") if use_nccl else torch.device("cpu")
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))  # no oversubscription
    dist.init_process_group(
        "nccl" if use_nccl else "gloo",
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world_size,
        timeout=_GROUP_TIMEOUT,
    )
    try:
        yield device
        # Every rank is done with its collectives (and rank 0 has reported) before any tears the group down.
        gc.collect()  # DDP's reducer, if a failure's traceback kept it, goes while its group still stands
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _train_rank(
    rank: int, plan: TrainingPlan, data: TrainingData, workdir: Path, queue: Any, device: torch.device
) -> None:
    def report(epoch_report: EpochReport) -> None:
        queue.put(json.dumps({"kind": "progress", "report": asdict(epoch_report)}))

    coordinator = ProcessGroupCoordinator(rank, plan.world_size, device)
    try:
        result = fit(plan, data, progress=report, device=device, coordinator=coordinator)
    except TrainingFailed as failure:
        # Every rank fails on the same shared numbers; rank 0 tells the parent why.
        if rank == 0:
            queue.put(json.dumps({"kind": "failed", "reason": str(failure)}))
        return
    if rank != 0:
        return
    torch.save(result.classifier.state_dict(), workdir / CHECKPOINT_NAME)
    if result.unpruned is not None:
        torch.save(result.unpruned.state_dict(), workdir / UNPRUNED_CHECKPOINT_NAME)
    summary = {
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "best_val_loss": result.best_val_loss,
        "stopped_at_epoch_cap": result.stopped_at_epoch_cap,
        "pruning": asdict(result.pruning) if result.pruning is not None else None,
    }
    queue.put(json.dumps({"kind": "done", **summary}))
