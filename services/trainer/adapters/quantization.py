"""int8 quantization of an exported ONNX model, two ways (ONNX Runtime's quantization tool).

- static: QDQ format, activations calibrated (MinMax) on training rows; convolutions, dense
  layers, ReLU and max-pooling run in int8 (ORT fuses the QDQ pairs into QLinear kernels);
- dynamic: only the dense layers' weights are int8, activations are quantized at run time. It
  leaves convolutions alone: dynamic Conv becomes ConvInteger, 8-9x slower than fp32 on CPU.

Which one ships is decided by measurement (see ``services.trainer.compression.choose_int8``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from services.trainer.compression import INT8_DYNAMIC, INT8_STATIC
from services.trainer.domain import INPUT_NAME

STATIC_OPS = ["Conv", "MatMul", "Gemm", "Relu", "MaxPool"]
DYNAMIC_OPS = ["MatMul", "Gemm"]
CALIBRATION_ROWS = 512
_CALIBRATION_BATCH = 64


def quantize(kind: str, source: Path, target: Path, calibration_rows: np.ndarray) -> Path:
    """Write ``source`` quantized the ``kind`` way (int8-static or int8-dynamic) to ``target``."""
    # Imported here: the quantization tool pulls in a lot, and only compressed runs need it.
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_dynamic, quantize_static

    root = logging.getLogger()  # the tool warns through the root logger
    root.addFilter(_drop_preprocessing_hint)
    try:
        if kind == INT8_STATIC:
            quantize_static(
                str(source),
                str(target),
                _CalibrationRows(calibration_rows),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=False,  # per-tensor measured faster here, at the same accuracy
                op_types_to_quantize=STATIC_OPS,
            )
        elif kind == INT8_DYNAMIC:
            quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8, op_types_to_quantize=DYNAMIC_OPS)
        else:
            raise ValueError(f"unknown int8 kind {kind!r}")
    finally:
        root.removeFilter(_drop_preprocessing_hint)
    return target


def calibration_sample(rows: np.ndarray, limit: int = CALIBRATION_ROWS) -> np.ndarray:
    """At most ``limit`` rows spread evenly over the training rows (deterministic)."""
    step = max(1, -(-len(rows) // limit))
    return np.ascontiguousarray(rows[::step][:limit], dtype=np.float32)


class _CalibrationRows:
    """The tool's CalibrationDataReader (it checks for ``get_next``) over an array: batches, then None."""

    def __init__(self, rows: np.ndarray) -> None:
        self._batches: Iterator[np.ndarray] = iter(
            [rows[start : start + _CALIBRATION_BATCH] for start in range(0, len(rows), _CALIBRATION_BATCH)]
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: batch}


def _drop_preprocessing_hint(record: logging.LogRecord) -> bool:
    """The tool's "consider pre-processing" hints are noise for these small static graphs."""
    return "pre-processing" not in record.getMessage()
