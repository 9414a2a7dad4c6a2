"""ONNX Runtime sessions: built from verified bytes, checked against the registered signature, warmed up.

CUDAExecutionProvider comes first when a GPU is there (``onnxruntime-gpu`` lists CUDA whether or not a
GPU exists, so the device nodes are looked for too); the session then says which provider it really
got, and that is what is logged and reported.
"""

from __future__ import annotations

import glob
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort

from shared.events import Signature

log = logging.getLogger(__name__)

OIP_TO_NUMPY: dict[str, Any] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
_ORT_TO_OIP = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
}
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


class LoadFailed(Exception):
    """The artifact could not become a serving session (not ONNX, wrong signature, fails its warm-up)."""


def gpu_present() -> bool:
    """True when an NVIDIA device node exists: the cheap test that a CUDA session can really start."""
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def choose_providers(device: str) -> list[Any]:
    """``auto``: CUDA first when a GPU is there, then the CPU; ``cuda`` insists on trying it; ``cpu`` never."""
    wanted_cuda = device == "cuda" or (device == "auto" and gpu_present())
    chosen: list[Any] = []
    if wanted_cuda and CUDA in ort.get_available_providers():
        _preload_cuda_libraries()
        # TF32 trades ~1e-3 relative precision for speed; the evaluator measured the model in full FP32.
        chosen.append((CUDA, {"use_tf32": "0"}))
    chosen.append(CPU)
    return chosen


_preloaded: list[bool] = []


def _preload_cuda_libraries() -> None:
    """Load CUDA and cuDNN from the NVIDIA wheels in this environment, once (ORT finds them no other way
    unless torch was imported first); a failure here shows up as a CPU provider, which is logged."""
    if _preloaded or not hasattr(ort, "preload_dlls"):
        return
    _preloaded.append(True)
    try:
        ort.preload_dlls()
    except Exception as error:  # noqa: BLE001 - best effort; the session reports what it really got
        log.warning("could not preload the CUDA libraries: %s", error)


@dataclass
class OnnxModel:
    """One loaded version: its session, the provider really in use, its input and output names."""

    session: ort.InferenceSession | None
    provider: str
    input_names: list[str]
    output_names: list[str]
    _run_options: ort.RunOptions = field(default_factory=ort.RunOptions)

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        session = self.session
        if session is None:
            raise RuntimeError("the session was released")
        outputs: list[np.ndarray] = session.run(self.output_names, feeds, self._run_options)
        return outputs

    def close(self) -> None:
        """Drop the session: ONNX Runtime frees its memory (GPU arena included) with the last reference."""
        self.session = None


def load_model(
    data: bytes, signature: Signature, *, device: str = "auto", threads: int = 1, warmup_batches: tuple[int, ...] = (1,)
) -> OnnxModel:
    """A warmed-up model from verified bytes; LoadFailed when any step refuses it."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: CUDA's CPU-fallback notices are expected on CPU machines
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    try:
        session = ort.InferenceSession(data, sess_options=options, providers=choose_providers(device))
    except Exception as error:  # noqa: BLE001 - ORT raises its own types for every kind of bad model
        raise LoadFailed(f"ONNX Runtime refused the artifact: {type(error).__name__}") from error
    check_signature(session, signature)
    model = OnnxModel(
        session=session,
        provider=session.get_providers()[0],
        input_names=[value.name for value in session.get_inputs()],
        output_names=[value.name for value in session.get_outputs()],
    )
    warm_up(model, signature, warmup_batches)
    return model


def _described(values: list[Any]) -> list[tuple[str, str, list[int]]]:
    described = []
    for value in values:
        shape = [dim if isinstance(dim, int) and dim >= 0 else -1 for dim in (value.shape or [])]
        described.append((value.name, _ORT_TO_OIP.get(value.type, value.type), shape))
    return described


def check_signature(session: ort.InferenceSession, signature: Signature) -> None:
    """The graph must take and give exactly what the registry recorded: names, datatypes and shapes."""
    expected_inputs = [(spec.name, spec.datatype, list(spec.shape)) for spec in signature.inputs]
    expected_outputs = [(spec.name, spec.datatype, list(spec.shape)) for spec in signature.outputs]
    actual_inputs, actual_outputs = _described(session.get_inputs()), _described(session.get_outputs())
    if actual_inputs != expected_inputs or actual_outputs != expected_outputs:
        raise LoadFailed(
            f"the graph's signature {actual_inputs} -> {actual_outputs} is not the registered "
            f"{expected_inputs} -> {expected_outputs}"
        )


def warm_up(model: OnnxModel, signature: Signature, batches: tuple[int, ...]) -> None:
    """Run zeros through the model at each batch size; outputs must have the signature's shape and be finite."""
    for batch in batches:
        feeds = {
            spec.name: np.zeros(
                [batch if axis == 0 and dim == -1 else max(dim, 1) for axis, dim in enumerate(spec.shape)],
                dtype=OIP_TO_NUMPY.get(spec.datatype, np.float32),
            )
            for spec in signature.inputs
        }
        try:
            outputs = model.run(feeds)
        except Exception as error:  # noqa: BLE001 - any failure here means the version is not served
            raise LoadFailed(f"warm-up run failed: {type(error).__name__}: {error}"[:500]) from error
        for spec, output in zip(signature.outputs, outputs, strict=False):
            if output.ndim != len(spec.shape) or (spec.shape and spec.shape[0] == -1 and output.shape[0] != batch):
                raise LoadFailed(f"warm-up output {spec.name!r} has shape {list(output.shape)}, not {spec.shape}")
            if output.dtype.kind == "f" and not np.isfinite(output).all():
                raise LoadFailed(f"warm-up output {spec.name!r} is not finite")
