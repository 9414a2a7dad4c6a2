"""``torchrun ... -m services.trainer.entrypoints.job``: one rank of a trainer's PyTorchJob.

The request comes from ``FERRY_TRAINER_JOB_REQUEST`` (the event's JSON, validated again here; the trainer
wrote it into the job), the rendezvous from what torchrun sets (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``,
``MASTER_PORT``). Every rank loads the same split and fits in one process group; rank 0 then exports,
verifies, measures and puts the artifact in the object store, and records it (``CompletedRequests``) under
the request id, where the watching trainer reads it and verifies the bytes by digest before announcing.
A request that cannot succeed is recorded with its reason and exits 1 (the job fails at once).
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from services.trainer.adapters.completed import CompletedRequests
from services.trainer.adapters.distributed import ProcessGroupCoordinator
from services.trainer.adapters.pytorchjob import JOB_EXIT_FAILED, REQUEST_ENV
from services.trainer.adapters.scratch import run_folder
from services.trainer.adapters.torch_training import FitResult, TrainingData, fit
from services.trainer.domain import ProgressCallback, TrainingFailed, TrainingPlan, plan_training
from services.trainer.handlers import stored_model
from services.trainer.service import JobLimits, load_split, run_training, training_data
from services.trainer.settings import TrainerSettings
from shared.artifacts import ArtifactStore
from shared.events import TrainingRequested
from shared.s3 import s3_options

log = logging.getLogger("services.trainer.job")
_GROUP_TIMEOUT = timedelta(seconds=600)  # pods start at different times; a vanished one must not hang the rest


def main() -> int:
    """Run this rank; 0 when the artifact is recorded (rank 0) or the fit is done (the others)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    request = TrainingRequested.model_validate_json(os.environ[REQUEST_ENV])
    settings = TrainerSettings()
    torch.set_num_threads(settings.torch_threads)
    rank, world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    completed = CompletedRequests(settings.ferry.resolved_artifact_root, s3=s3_options(settings.ferry))
    limits = JobLimits(budget_s=settings.budget_s, max_world_size=world_size)
    try:
        if world_size != request.world_size:
            raise TrainingFailed(f"the job has {world_size} ranks; the request asked for {request.world_size}")
        if rank == 0:
            _leader(request, settings, completed, limits)
        else:
            _follower(request, limits)
    except TrainingFailed as failure:
        log.info("request %s failed on rank %d: %s", request.request_id, rank, failure)
        if rank == 0:
            completed.put_failure(request.request_id, str(failure))
        return JOB_EXIT_FAILED
    return 0


def _leader(
    request: TrainingRequested, settings: TrainerSettings, completed: CompletedRequests, limits: JobLimits
) -> None:
    """Rank 0: the whole run of a local trainer, with the fit spread over the job's ranks."""
    store = ArtifactStore.from_settings(settings.ferry)
    with run_folder(settings.resolved_work_dir) as workdir:
        trained = run_training(request, workdir=workdir, limits=limits, fitter=fit_in_group)
        model_trained = stored_model(request, trained, None, store)
    completed.put(model_trained)
    log.info("request %s: artifact %s recorded", request.request_id, model_trained.artifact.sha256)


def _follower(request: TrainingRequested, limits: JobLimits) -> None:
    """Any other rank: the same split and plan, and its share of the fit's collectives."""
    parts = load_split(request)
    plan = plan_training(request, parts.dataset, budget_s=limits.budget_s, max_world_size=limits.max_world_size)
    fit_in_group(plan, training_data(parts, None, plan), Path("."), None, limits.budget_clock)


def fit_in_group(
    plan: TrainingPlan,
    data: TrainingData,
    workdir: Path,
    progress: ProgressCallback | None,
    clock: Callable[[], float],
) -> FitResult:
    """Fit over the job's process group (joined here, left before rank 0 exports alone); the result is on CPU."""
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_nccl = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}") if use_nccl else torch.device("cpu")
    dist.init_process_group("nccl" if use_nccl else "gloo", init_method="env://", timeout=_GROUP_TIMEOUT)
    try:
        coordinator = ProcessGroupCoordinator(rank, plan.world_size, device)
        result = fit(plan, data, progress=progress, device=device, coordinator=coordinator, clock=clock)
        dist.barrier()  # every rank is done with its collectives before any leaves the group
        return result
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
