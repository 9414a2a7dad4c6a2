"""One training job on a ``parquet:`` dataset larger than memory: describe, stream, train, export, verify, measure.

The same plan, network, loss, early stopping, budget, progress events, export and verification as
:func:`services.trainer.service.run_training`, whose hook sends ``parquet:`` requests here; only the data
arrives differently: mini-batches streamed from the train part through a DataLoader, each epoch's
validation loss streamed over the first ``validation_rows`` validation rows, and the export verified and
measured on the first ``measure_rows`` of them, held in memory. No test row is ever read.

With ``world_size`` > 1 each DDP rank streams its own share of the row groups. No compression: pruning,
distillation and quantization each need their data in memory (a teacher's outputs row by row, a
calibration set, repeated passes), so they are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from services.trainer.adapters.onnx_model import signature_of
from services.trainer.adapters.torch_models import check_network
from services.trainer.domain import (
    BUILT_IN_ARCHS,
    FORMAT_FP32,
    InvalidRequest,
    ProgressCallback,
    StreamingOptions,
    Teacher,
    TrainingPlan,
    plan_training,
)
from services.trainer.measure import FP32, measure_regression, measure_run
from services.trainer.service import JobLimits, TrainedModel, _export_verified, _Stopwatch
from services.trainer.streaming import held_out_sample, train_statistics
from services.trainer.streaming_fit import StreamedFit, fit_streaming
from shared.dataset_files import DatasetError
from shared.events import TrainingRequested
from shared.parquet_datasets import ParquetDataset, open_parquet
from shared.parquet_sources import parse_name
from shared.regression import quantile_edges

_T = TypeVar("_T")


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
        sample = _dataset_step(lambda: held_out_sample(dataset, options.measure_rows))
    with stopwatch.phase("train"):
        fitted = _dataset_step(lambda: _fit(plan, dataset, options, workdir, progress, limits.budget_clock))
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


def _dataset_step(step: Callable[[], _T]) -> _T:
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


def _fit(
    plan: TrainingPlan,
    dataset: ParquetDataset,
    options: StreamingOptions,
    workdir: Path,
    progress: ProgressCallback | None,
    clock: Callable[[], float],
) -> StreamedFit:
    """The statistics once, then one process, or ``plan.world_size`` ranks each streaming its share."""
    statistics = train_statistics(dataset, options.statistics_rows)
    if plan.world_size == 1:
        return fit_streaming(plan, dataset, options, statistics, progress=progress, clock=clock)
    # Imported here: only distributed runs need the process-group machinery.
    from services.trainer.adapters.distributed_streaming import fit_streaming_distributed

    return fit_streaming_distributed(
        plan, dataset.name, dataset.task, options, statistics, workdir=workdir, progress=progress
    )
