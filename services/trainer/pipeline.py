"""One training job from request to verified artifact: load, split, train, export, verify,
compress, and measure exactly the file that ships.

No Kafka and no store here: the handler gives a work folder and a progress callback, and gets
back the final ONNX file with its signature, metrics and timings.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from services.trainer.adapters.compression import count_parameters, quantize_int8
from services.trainer.adapters.onnx_model import export_onnx, predict, signature_of, verify_export
from services.trainer.adapters.torch_training import FitResult, TrainingData, fit
from services.trainer.domain import (
    DISTILL_TEMPERATURE,
    QUANTIZED_MIN_AGREEMENT,
    ExportCheckFailed,
    InvalidRequest,
    ProgressCallback,
    Teacher,
    TeacherUnavailable,
    TrainingPlan,
    accuracy,
    artifact_format,
    log_loss,
    plan_training,
    soft_targets,
)
from shared.datasets import DatasetError, Part, Split, load_dataset, split
from shared.events import Signature, TrainingRequested


@dataclass(frozen=True)
class TrainedModel:
    """The outcome of a job: the file that ships and what is known about it."""

    path: Path
    format: str
    signature: Signature
    split_id: str
    metrics: dict[str, float]
    timings: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class JobLimits:
    """The trainer's limits for one job (from its settings)."""

    budget_s: float = 1800.0
    max_world_size: int = 8
    budget_clock: Callable[[], float] = time.monotonic  # time.process_time: CPU seconds instead


class _Stopwatch:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - start, 4)


def load_split(request: TrainingRequested) -> Split:
    """The request's dataset, split the one shared way; a dataset problem is an InvalidRequest."""
    try:
        return split(load_dataset(request.dataset, label_column=request.label_column))
    except DatasetError as error:
        raise InvalidRequest(str(error)) from error


def run_training(
    request: TrainingRequested,
    *,
    workdir: Path,
    progress: ProgressCallback | None = None,
    teacher: Teacher | None = None,
    limits: JobLimits = JobLimits(),
) -> TrainedModel:
    """Train, export, verify and (optionally) quantize; raises TrainingFailed with the reason."""
    stopwatch = _Stopwatch()
    with stopwatch.phase("load"):
        parts = load_split(request)
        plan = plan_training(request, parts.dataset, budget_s=limits.budget_s, max_world_size=limits.max_world_size)
        data = _training_data(parts, teacher, plan)
    with stopwatch.phase("train"):
        result, fp32_path = _train_and_export(plan, data, workdir, progress, limits.budget_clock)
    with stopwatch.phase("verify"):
        verify_export(result.classifier, fp32_path, parts.validation.features)
    shipped = fp32_path
    if plan.compression.quantize == "int8":
        with stopwatch.phase("quantize"):
            shipped = quantize_int8(fp32_path, workdir / "model.int8.onnx")
            _check_quantized(fp32_path, shipped, parts.validation)
    with stopwatch.phase("measure"):
        metrics = _metrics(shipped, fp32_path, parts.validation, result)
        if data.soft_targets is not None and teacher is not None:
            teacher_output = predict(teacher.path, parts.validation.features)
            metrics["teacher_val_accuracy"] = accuracy(teacher_output, parts.validation.labels)
        signature = signature_of(shipped)
    shipped_format = artifact_format(plan.compression)
    return TrainedModel(shipped, shipped_format, signature, parts.split_id, metrics, stopwatch.timings)


def _train_and_export(
    plan: TrainingPlan, data: TrainingData, workdir: Path, progress: ProgressCallback | None, clock: Callable[[], float]
) -> tuple[FitResult, Path]:
    if plan.world_size > 1:
        # Imported here: only distributed runs need the process-group machinery.
        from services.trainer.adapters.distributed import fit_distributed

        return fit_distributed(plan, data, workdir=workdir, progress=progress)
    result = fit(plan, data, progress=progress, clock=clock)
    return result, export_onnx(result.classifier, workdir / "model.onnx")


def _training_data(parts: Split, teacher: Teacher | None, plan: TrainingPlan) -> TrainingData:
    """Train and validation rows only: the test part never reaches the trainer."""
    soft = None
    if plan.compression.distill_from is not None:
        if teacher is None:
            raise TeacherUnavailable(f"distillation from {plan.compression.distill_from!r} needs its champion model")
        soft = _teacher_targets(teacher, parts.train.features, plan)
    return TrainingData(
        train_features=parts.train.features,
        train_labels=parts.train.labels,
        val_features=parts.validation.features,
        val_labels=parts.validation.labels,
        soft_targets=soft,
    )


def _teacher_targets(teacher: Teacher, features: np.ndarray, plan: TrainingPlan) -> np.ndarray:
    """The teacher's softened outputs on the training rows, run through ONNX Runtime."""
    try:
        outputs = predict(teacher.path, features)
    except Exception as error:  # noqa: BLE001 - any ORT failure means this teacher cannot teach
        raise TeacherUnavailable(
            f"teacher {teacher.model_name!r} v{teacher.version} cannot score this dataset "
            f"({plan.num_features} features): {error}"
        ) from error
    if outputs.ndim != 2 or outputs.shape[1] != plan.num_classes:
        raise TeacherUnavailable(
            f"teacher {teacher.model_name!r} v{teacher.version} predicts {outputs.shape[-1]} classes; "
            f"this dataset has {plan.num_classes}"
        )
    return soft_targets(outputs, DISTILL_TEMPERATURE)


def _check_quantized(fp32_path: Path, int8_path: Path, validation: Part) -> None:
    """Fail the run when int8 disagrees with fp32 on too many validation rows."""
    fp32 = predict(fp32_path, validation.features)
    int8 = predict(int8_path, validation.features)
    agreement = float(np.mean(fp32.argmax(axis=1) == int8.argmax(axis=1)))
    if not np.isfinite(int8).all() or agreement < QUANTIZED_MIN_AGREEMENT:
        raise ExportCheckFailed(
            f"int8 model agrees with fp32 on {agreement:.1%} of validation rows "
            f"(at least {QUANTIZED_MIN_AGREEMENT:.0%} needed); train without --quantize"
        )


def _metrics(shipped: Path, fp32_path: Path, validation: Part, result: FitResult) -> dict[str, float]:
    """Validation metrics of exactly the file that ships (ORT), plus how training went."""
    probabilities = predict(shipped, validation.features)
    metrics = {
        "val_accuracy": accuracy(probabilities, validation.labels),
        "val_loss": log_loss(probabilities, validation.labels),
        "size_bytes": float(shipped.stat().st_size),
        "parameters": float(count_parameters(result.classifier)),
        "best_epoch": float(result.best_epoch),
        "epochs_run": float(result.epochs_run),
    }
    if shipped != fp32_path:
        fp32 = predict(fp32_path, validation.features)
        metrics["fp32_val_accuracy"] = accuracy(fp32, validation.labels)
        metrics["fp32_size_bytes"] = float(fp32_path.stat().st_size)
    if result.sparsity is not None:
        metrics["sparsity"] = result.sparsity
    return metrics
