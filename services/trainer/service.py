"""One training job from request to verified artifact: load, split, train (distilling from a
teacher, pruning and fine-tuning when asked), export, verify, quantize, and measure exactly the
file that ships beside the uncompressed model.

A text dataset takes the same road on token ids (``adapters/text_model.py``): its vocabulary comes from
the training texts, and the file that ships takes strings.

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

from services.trainer.adapters.onnx_model import export_onnx, predict, signature_of, verify_export
from services.trainer.adapters.quantization import calibration_sample, quantize
from services.trainer.adapters.text_model import export_text_model, text_training_data, text_vocabulary
from services.trainer.adapters.torch_models import check_network
from services.trainer.adapters.torch_training import FitResult, TrainingData, fit
from services.trainer.compression import INT8_KINDS
from services.trainer.domain import (
    BUILT_IN_ARCHS,
    DISTILL_TEMPERATURE,
    FORMAT_FP32,
    QUANTIZED_MIN_AGREEMENT,
    ExportCheckFailed,
    InvalidRequest,
    ProgressCallback,
    StreamingOptions,
    Teacher,
    TeacherUnavailable,
    TrainingPlan,
    artifact_format,
    plan_training,
    soft_targets,
)
from services.trainer.measure import FP32, UNPRUNED, measure_regression, measure_run
from shared.datasets import DatasetError, Split, load_dataset, split
from shared.events import InputReference, Signature, TrainingRequested
from shared.input_reference import reference_for
from shared.parquet_sources import is_parquet
from shared.regression import quantile_edges


@dataclass(frozen=True)
class TrainedModel:
    """The outcome of a job: the file that ships and what is known about it."""

    path: Path
    format: str
    signature: Signature
    split_id: str
    metrics: dict[str, float]
    timings: dict[str, float] = field(default_factory=dict)
    input_reference: InputReference | None = None
    """The training split's per-feature bins (input drift's reference); None for a text model."""


Fitter = Callable[[TrainingPlan, TrainingData, Path, ProgressCallback | None, Callable[[], float]], FitResult]
"""How a planned run is fitted: ``_fit`` here (one process, or DDP over local ones), or a PyTorchJob's rank."""


@dataclass(frozen=True)
class JobLimits:
    """The trainer's limits for one job (from its settings)."""

    budget_s: float = 1800.0
    max_world_size: int = 8
    budget_clock: Callable[[], float] = time.monotonic  # time.process_time: CPU seconds instead
    streaming: StreamingOptions = StreamingOptions()


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
        return split(load_dataset(request.dataset, label_column=request.label_column, task=request.task))
    except DatasetError as error:
        raise InvalidRequest(str(error)) from error


def run_training(
    request: TrainingRequested,
    *,
    workdir: Path,
    progress: ProgressCallback | None = None,
    teacher: Teacher | None = None,
    limits: JobLimits = JobLimits(),
    fitter: Fitter | None = None,
) -> TrainedModel:
    """Train, export, verify, compress and measure; raises TrainingFailed with the reason."""
    if is_parquet(request.dataset):
        # Imported here: only datasets larger than memory need the streaming machinery (pyarrow, a DataLoader).
        from services.trainer.streaming_service import run_streaming_training

        return run_streaming_training(request, workdir=workdir, progress=progress, teacher=teacher, limits=limits)
    stopwatch = _Stopwatch()
    with stopwatch.phase("load"):
        parts = load_split(request)
        vocabulary = text_vocabulary(parts) if parts.dataset.is_text else None
        plan = plan_training(
            request,
            parts.dataset,
            budget_s=limits.budget_s,
            max_world_size=limits.max_world_size,
            vocabulary=vocabulary,
        )
        if plan.arch not in BUILT_IN_ARCHS:
            check_network(plan)
        data = training_data(parts, teacher, plan) if vocabulary is None else text_training_data(parts, vocabulary)
    with stopwatch.phase("train"):
        result = (fitter or _fit)(plan, data, workdir, progress, limits.budget_clock)
    with stopwatch.phase("verify"):
        if vocabulary is None:
            files = _export_verified(result, workdir, parts.validation.features)
        else:
            files = {FP32: export_text_model(result.classifier, vocabulary, workdir, parts.validation)}
    if plan.is_regression:
        with stopwatch.phase("measure"):
            measured, values = measure_regression(files[FP32], result=result, validation=parts.validation)
            signature = signature_of(measured.shipped).regressor(quantile_edges(values))
        shipped, reference = measured.shipped, reference_for(signature, parts.train.features)
        return TrainedModel(
            shipped, FORMAT_FP32, signature, parts.split_id, measured.metrics, stopwatch.timings, reference
        )
    if plan.compression.quantize is not None:
        with stopwatch.phase("quantize"):
            files |= _quantized(plan.compression.quantize, files[FP32], workdir, parts)
    with stopwatch.phase("measure"):
        measured = measure_run(
            files, result=result, validation=parts.validation, compression=plan.compression, teacher=teacher
        )
        signature = signature_of(measured.shipped).labelled(parts.dataset.class_names)
    shipped_format = artifact_format(plan.compression)
    reference = None if vocabulary is not None else reference_for(signature, parts.train.features)
    return TrainedModel(
        measured.shipped, shipped_format, signature, parts.split_id, measured.metrics, stopwatch.timings, reference
    )


def _fit(
    plan: TrainingPlan, data: TrainingData, workdir: Path, progress: ProgressCallback | None, clock: Callable[[], float]
) -> FitResult:
    if plan.world_size > 1:
        # Imported here: only distributed runs need the process-group machinery.
        from services.trainer.adapters.distributed import fit_distributed

        return fit_distributed(plan, data, workdir=workdir, progress=progress)
    return fit(plan, data, progress=progress, clock=clock)


def _export_verified(result: FitResult, workdir: Path, features: np.ndarray) -> dict[str, Path]:
    """The fp32 file (and the unpruned one), each checked against its own torch network."""
    files = {FP32: export_onnx(result.classifier, workdir / "model.onnx")}
    verify_export(result.classifier, files[FP32], features)
    if result.unpruned is not None:
        files[UNPRUNED] = export_onnx(result.unpruned, workdir / "model.unpruned.onnx")
        verify_export(result.unpruned, files[UNPRUNED], features)
    return files


def training_data(parts: Split, teacher: Teacher | None, plan: TrainingPlan) -> TrainingData:
    """Train and validation rows only: the test part never reaches the trainer.

    With a teacher, row i of the soft targets is the teacher's output on raw training row i: the
    very row (and the same raw features) the student is given; each graph standardizes its own way.
    """
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


def _quantized(requested: str, fp32_path: Path, workdir: Path, parts: Split) -> dict[str, Path]:
    """The int8 files to choose from (both kinds for "int8"), each close enough to fp32."""
    kinds = list(INT8_KINDS) if requested == "int8" else [requested]
    calibration = calibration_sample(parts.train.features)  # training rows: never validation or test
    fp32 = predict(fp32_path, parts.validation.features)
    files, refused = {}, []
    for kind in kinds:
        path = quantize(kind, fp32_path, workdir / f"model.{kind}.onnx", calibration)
        agreement = _agreement(fp32, predict(path, parts.validation.features))
        if agreement >= QUANTIZED_MIN_AGREEMENT:
            files[kind] = path
        else:
            refused.append(f"{kind} agrees with fp32 on {agreement:.1%} of validation rows")
    if not files:
        raise ExportCheckFailed(
            f"{'; '.join(refused)} (at least {QUANTIZED_MIN_AGREEMENT:.0%} needed); train without --quantize"
        )
    return files


def _agreement(fp32: np.ndarray, int8: np.ndarray) -> float:
    if not np.isfinite(int8).all():
        return 0.0
    return float(np.mean(fp32.argmax(axis=1) == int8.argmax(axis=1)))
