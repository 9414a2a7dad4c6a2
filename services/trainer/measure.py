"""What a run's files are judged on, measured: validation accuracy (ONNX Runtime), parameters,
bytes and latency (the shared harness: CPU time, p50 and p99) of every file a run made and of its
teacher; which int8 kind ships; and the ratios of the shipped model to the uncompressed one, so
"compressed and non-inferior" has numbers.

The uncompressed model is the teacher when distilling (the student replaces it), else the same
network before pruning and quantization.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from services.trainer.adapters.onnx_model import onnx_parameters, predict
from services.trainer.adapters.pruning import count_parameters
from services.trainer.adapters.torch_training import FitResult
from services.trainer.compression import (
    INT8_KINDS,
    ModelFacts,
    check_accuracy,
    choose_int8,
    compression_ratios,
)
from services.trainer.domain import Teacher, accuracy, log_loss, regression_metrics
from shared.datasets import Part
from shared.events import Compression
from shared.onnx import Latency, LatencyPlan, measure_latency, open_session

FP32 = "fp32"
UNPRUNED = "unpruned"
TEACHER = "teacher"
_DESCRIBED = {TEACHER: "the teacher", UNPRUNED: "the unpruned model", FP32: "the fp32 model"}
TIMING = LatencyPlan(runs=300, rounds=5, budget_s=2.0)
"""The trainer's timing: up to five files, a few seconds at most, before the evaluator's longer look."""


@dataclass(frozen=True)
class Measured:
    """The file that ships and the metrics of the version."""

    shipped: Path
    metrics: dict[str, float]


def measure_run(
    files: dict[str, Path],
    *,
    result: FitResult,
    validation: Part,
    compression: Compression,
    teacher: Teacher | None = None,
) -> Measured:
    """Measure every file, pick the int8 kind by latency, check the accuracy given up, report."""
    paths = {**files, **({TEACHER: teacher.path} if teacher is not None else {})}
    latency = time_files(paths, validation.inputs)
    facts = {name: _facts(name, path, result, validation, latency[name]) for name, path in paths.items()}
    int8_kinds = {kind: latency[kind] for kind in INT8_KINDS if kind in files}
    shipped = choose_int8(latency[FP32], int8_kinds) if int8_kinds else FP32
    probabilities = predict(paths[shipped], validation.inputs)
    metrics = {
        **facts[shipped].metrics(""),
        "val_loss": log_loss(probabilities, validation.labels),
        "best_epoch": float(result.best_epoch),
        "epochs_run": float(result.epochs_run),
        "stopped_at_epoch_cap": float(result.stopped_at_epoch_cap),
    }
    if int8_kinds:
        metrics |= _int8_metrics(shipped, facts)
    if result.pruning is not None:
        metrics |= facts[UNPRUNED].metrics("unpruned_")
        metrics["pruned_fraction"] = result.pruning.removed_fraction
        metrics["units_kept"] = sum(result.pruning.widths_after) / sum(result.pruning.widths_before)
    if teacher is not None:
        metrics |= facts[TEACHER].metrics("teacher_")
        metrics["teacher_version"] = float(teacher.version)
    reference = TEACHER if teacher is not None else UNPRUNED if result.pruning is not None else FP32
    if shipped != FP32 or reference != FP32:
        metrics |= facts[reference].metrics("uncompressed_") | compression_ratios(facts[shipped], facts[reference])
        check_accuracy(facts[shipped], facts[reference], _DESCRIBED[reference], compression.max_accuracy_drop)
    return Measured(paths[shipped], metrics)


def measure_regression(path: Path, *, result: FitResult, validation: Part) -> tuple[Measured, np.ndarray]:
    """A regressor's file: validation RMSE, MAE and R² (ONNX Runtime), parameters, bytes, latency; and its
    validation predictions (the rows its drift bins are cut from)."""
    values = predict(path, validation.inputs)[:, 0]
    latency = time_files({FP32: path}, validation.inputs)[FP32]
    metrics = {
        **{f"val_{name}": value for name, value in regression_metrics(values, validation.labels).items()},
        "val_loss": result.best_val_loss,
        "parameters": float(count_parameters(result.classifier)),
        "size_bytes": float(path.stat().st_size),
        **latency.metrics(""),
        "best_epoch": float(result.best_epoch),
        "epochs_run": float(result.epochs_run),
        "stopped_at_epoch_cap": float(result.stopped_at_epoch_cap),
    }
    return Measured(path, metrics), values


def time_files(paths: Mapping[str, Path], rows: np.ndarray, plan: LatencyPlan = TIMING) -> dict[str, Latency]:
    """Every file timed by the shared harness, interleaved, on CPU sessions with one intra-op thread."""
    sessions = {name: open_session(path.read_bytes(), device="cpu", threads=1) for name, path in paths.items()}
    return dict(zip(sessions, measure_latency(list(sessions.values()), rows, plan), strict=True))


def _facts(name: str, path: Path, result: FitResult, validation: Part, latency: Latency) -> ModelFacts:
    if name == TEACHER:
        parameters = onnx_parameters(path)
    elif name == UNPRUNED and result.unpruned is not None:
        parameters = count_parameters(result.unpruned)
    else:
        parameters = count_parameters(result.classifier)
    return ModelFacts(
        val_accuracy=accuracy(predict(path, validation.inputs), validation.labels),
        parameters=parameters,
        size_bytes=path.stat().st_size,
        latency=latency,
    )


def _int8_metrics(shipped: str, facts: dict[str, ModelFacts]) -> dict[str, float]:
    """fp32's facts, every int8 kind's latency, which kind ships and whether it is really faster."""
    metrics = facts[FP32].metrics("fp32_")
    for kind in INT8_KINDS:
        if kind in facts:
            metrics |= facts[kind].latency.metrics(kind.replace("-", "_") + "_")
    metrics["int8_static"] = float(shipped == "int8-static")
    # Smaller is certain; "faster" only when measured so (p50) at batch 1 and at batch 64.
    chosen, fp32 = facts[shipped].latency, facts[FP32].latency
    metrics["int8_faster"] = float(chosen.faster_than(fp32))
    metrics["int8_faster_b1"] = float(chosen.b1.p50_ms < fp32.b1.p50_ms)
    metrics["int8_faster_b64"] = float(chosen.b64.p50_ms < fp32.b64.p50_ms)
    return metrics
