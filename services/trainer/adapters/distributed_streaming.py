"""DistributedDataParallel over a streamed ``parquet:`` dataset: each local rank opens the dataset by its name
and streams its own share of the row groups; no data crosses between processes.

The parent hands the ranks the plan, the streaming options and the input statistics as JSON (computed once,
so every rank standardizes alike); rank 0 reports progress and saves a weights-only checkpoint, which the
parent loads (``torch.load(..., weights_only=True)``) into a network shaped like it.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from services.trainer.adapters.distributed import (
    CHECKPOINT_NAME,
    ProcessGroupCoordinator,
    load_checkpoint,
    plan_from_json,
    plan_to_json,
    process_group,
    run_ranks,
)
from services.trainer.adapters.torch_training import FitResult
from services.trainer.domain import EpochReport, ProgressCallback, StreamingOptions, TrainingFailed, TrainingPlan
from services.trainer.streaming import InputStatistics
from services.trainer.streaming_fit import StreamedFit, fit_streaming
from shared.dataset_files import DatasetError
from shared.events import Task
from shared.parquet_datasets import open_parquet


def fit_streaming_distributed(
    plan: TrainingPlan,
    name: str,
    task: Task,
    options: StreamingOptions,
    statistics: InputStatistics,
    *,
    workdir: Path,
    progress: ProgressCallback | None = None,
) -> StreamedFit:
    """Train on ``plan.world_size`` local ranks, each streaming its share; returns rank 0's result."""
    shared = {
        "dataset": name,
        "task": task,
        "options": asdict(options),
        "statistics": {
            "mean": statistics.mean.tolist(),
            "std": statistics.std.tolist(),
            "target": list(statistics.target),
            "rows": statistics.rows,
        },
    }
    messages = run_ranks(_rank_main, (plan_to_json(plan), json.dumps(shared), str(workdir)), plan.world_size, progress)
    failures = [message["reason"] for message in messages if message["kind"] == "failed"]
    if failures:
        raise TrainingFailed(failures[0])
    done = next((message for message in messages if message["kind"] == "done"), None)
    if done is None:
        raise RuntimeError("distributed training ended without a result from rank 0")
    result = FitResult(
        classifier=load_checkpoint(plan, workdir / CHECKPOINT_NAME),
        best_epoch=done["best_epoch"],
        epochs_run=done["epochs_run"],
        best_val_loss=done["best_val_loss"],
        stopped_at_epoch_cap=done["stopped_at_epoch_cap"],
    )
    return StreamedFit(result, done["train_rows"], statistics.rows)


def _rank_main(rank: int, plan_json: str, shared_json: str, workdir: str, port: int, queue: Any) -> None:
    """One rank: join the group, open the dataset, train on its share; rank 0 saves the weights and reports."""
    plan = plan_from_json(plan_json)
    shared = json.loads(shared_json)
    found = shared["statistics"]
    statistics = InputStatistics(
        np.asarray(found["mean"], dtype=np.float32),
        np.asarray(found["std"], dtype=np.float32),
        (float(found["target"][0]), float(found["target"][1])),
        int(found["rows"]),
    )

    def report(epoch_report: EpochReport) -> None:
        queue.put(json.dumps({"kind": "progress", "report": asdict(epoch_report)}))

    with process_group(rank, plan.world_size, port) as device:
        coordinator = ProcessGroupCoordinator(rank, plan.world_size, device)
        try:
            dataset = open_parquet(shared["dataset"], task=shared["task"])
            options = StreamingOptions(**shared["options"])
            fitted = fit_streaming(
                plan, dataset, options, statistics, progress=report, coordinator=coordinator, device=device
            )
        except (TrainingFailed, DatasetError) as failure:
            # A decision taken on shared numbers fails every rank alike; a bad row is met by one rank alone,
            # so any rank may tell the parent why (the others time out of their collectives).
            queue.put(json.dumps({"kind": "failed", "reason": str(failure)}))
            return
        if rank == 0:
            torch.save(fitted.result.classifier.state_dict(), Path(workdir) / CHECKPOINT_NAME)
            summary = {
                "best_epoch": fitted.result.best_epoch,
                "epochs_run": fitted.result.epochs_run,
                "best_val_loss": fitted.result.best_val_loss,
                "stopped_at_epoch_cap": fitted.result.stopped_at_epoch_cap,
                "train_rows": fitted.train_rows,
            }
            queue.put(json.dumps({"kind": "done", **summary}))
