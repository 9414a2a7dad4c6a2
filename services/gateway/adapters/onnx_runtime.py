"""ONNX Runtime for serving: a version's session from verified bytes (``shared.onnx``: the project's
options, CUDA first when a GPU is there, the provider really in use), checked against the registered
signature, warmed up.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnxruntime as ort

from shared.events import Signature, TensorSpec
from shared.onnx import Device, ModelUnloadable, open_session, provider_in_use, signature_of

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


class LoadFailed(Exception):
    """The artifact could not become a serving session (not ONNX, wrong signature, fails its warm-up)."""


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

    @classmethod
    def cold(cls, signature: Signature) -> OnnxModel:
        """A version known but not loaded yet: its names are the registered signature's (a load checks them)."""
        return cls(
            session=None,
            provider="",
            input_names=[spec.name for spec in signature.inputs],
            output_names=[spec.name for spec in signature.outputs],
        )

    def adopt(self, loaded: OnnxModel) -> None:
        """Take the session of ``loaded`` (a fresh load of the same version): what a reload does."""
        self.session, self.provider = loaded.session, loaded.provider

    def close(self) -> None:
        """Drop the session: ONNX Runtime frees its memory (GPU arena included) with the last reference."""
        self.session = None


@dataclass(frozen=True)
class OnnxLoader:
    """Verified bytes → a warmed-up model, with the device and intra-op threads of the gateway's settings.

    The gateway's bootstrap builds one; sessions come from ``shared.onnx``, which picks the providers
    and reports the one really in use.
    """

    device: Device = "auto"
    threads: int = 1

    def load(self, data: bytes, signature: Signature, *, warmup_batches: tuple[int, ...] = (1,)) -> OnnxModel:
        """A warmed-up model; LoadFailed when any step refuses it."""
        try:
            session = open_session(data, device=self.device, threads=self.threads)
        except ModelUnloadable as error:
            raise LoadFailed(str(error)) from error
        check_signature(session, signature)
        model = OnnxModel(
            session=session,
            provider=provider_in_use(session),
            input_names=[value.name for value in session.get_inputs()],
            output_names=[value.name for value in session.get_outputs()],
        )
        warm_up(model, signature, warmup_batches)
        return model


def check_signature(session: ort.InferenceSession, signature: Signature) -> None:
    """The graph must take and give exactly what the registry recorded: names, datatypes and shapes (the
    class labels are the dataset's, not the graph's)."""
    loaded = signature_of(session)
    if (loaded.inputs, loaded.outputs) != (signature.inputs, signature.outputs):
        raise LoadFailed(f"the graph's signature {_described(loaded)} is not the registered {_described(signature)}")


def _described(signature: Signature) -> str:
    def tensors(specs: list[TensorSpec]) -> list[tuple[str, str, list[int]]]:
        return [(spec.name, spec.datatype, list(spec.shape)) for spec in specs]

    return f"{tensors(signature.inputs)} -> {tensors(signature.outputs)}"


def warm_up(model: OnnxModel, signature: Signature, batches: tuple[int, ...]) -> None:
    """Run zeros through the model at each batch size; outputs must have the signature's shape and be finite."""
    for batch in batches:
        feeds = {spec.name: _zeros(spec, batch) for spec in signature.inputs}
        try:
            outputs = model.run(feeds)
        except Exception as error:  # noqa: BLE001 - any failure here means the version is not served
            raise LoadFailed(f"warm-up run failed: {type(error).__name__}: {error}"[:500]) from error
        for spec, output in zip(signature.outputs, outputs, strict=False):
            if output.ndim != len(spec.shape) or (spec.shape and spec.shape[0] == -1 and output.shape[0] != batch):
                raise LoadFailed(f"warm-up output {spec.name!r} has shape {list(output.shape)}, not {spec.shape}")
            if output.dtype.kind == "f" and not np.isfinite(output).all():
                raise LoadFailed(f"warm-up output {spec.name!r} is not finite")


def _zeros(spec: TensorSpec, batch: int) -> np.ndarray:
    """A warm-up input: zeros, or empty strings for a text model's BYTES input."""
    shape = [batch if axis == 0 and dim == -1 else max(dim, 1) for axis, dim in enumerate(spec.shape)]
    if spec.datatype == "BYTES":
        return np.full(shape, "", dtype=object)
    return np.zeros(shape, dtype=OIP_TO_NUMPY.get(spec.datatype, np.float32))
