"""ONNX: export from torch, run with ONNX Runtime, verify against torch, read the signature."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from services.trainer.adapters.torch_models import Classifier, ProbabilityModel
from services.trainer.domain import INPUT_NAME, OPSET, OUTPUT_NAME, VERIFY_ATOL, ExportCheckFailed
from shared.events import Signature, TensorSpec

_OIP_DATATYPES: dict[int, str] = {
    onnx.TensorProto.FLOAT: "FP32",
    onnx.TensorProto.DOUBLE: "FP64",
    onnx.TensorProto.FLOAT16: "FP16",
    onnx.TensorProto.INT64: "INT64",
    onnx.TensorProto.INT32: "INT32",
    onnx.TensorProto.INT8: "INT8",
    onnx.TensorProto.UINT8: "UINT8",
    onnx.TensorProto.BOOL: "BOOL",
}
_BATCH = 4096  # rows per session.run when scoring a whole part


def export_onnx(classifier: Classifier, path: Path) -> Path:
    """Write the classifier + softmax as one ONNX file (opset 17) with a dynamic batch axis."""
    exported = ProbabilityModel(classifier).cpu().eval()
    num_features = int(classifier.standardize.mean.shape[0])
    example = torch.zeros(2, num_features)
    with warnings.catch_warnings():
        # dynamo=False is deliberate: the TorchScript exporter writes one self-contained file,
        # the dynamo one a side file of weights. Its deprecation notice is not news to us.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        torch.onnx.export(
            exported,
            (example,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            do_constant_folding=True,
        )
    onnx.checker.check_model(str(path))
    return path


def providers() -> list[str | tuple[str, dict[str, str]]]:
    """CUDA when a GPU is really there (onnxruntime-gpu lists it regardless), then the CPU."""
    chosen: list[str | tuple[str, dict[str, str]]] = []
    if torch.cuda.is_available() and "CUDAExecutionProvider" in ort.get_available_providers():
        # TF32 would trade ~1e-3 relative precision for speed and break the torch comparison.
        chosen.append(("CUDAExecutionProvider", {"use_tf32": "0"}))
    chosen.append("CPUExecutionProvider")
    return chosen


def open_session(path: Path) -> ort.InferenceSession:
    """An ONNX Runtime session on the best provider available."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: the CPU-fallback notices are expected
    return ort.InferenceSession(str(path), sess_options=options, providers=providers())


def predict(path_or_session: Path | ort.InferenceSession, features: np.ndarray) -> np.ndarray:
    """The model's output for every row, batched."""
    session = open_session(path_or_session) if isinstance(path_or_session, Path) else path_or_session
    input_name = session.get_inputs()[0].name
    rows = np.ascontiguousarray(features, dtype=np.float32)
    outputs = [
        session.run(None, {input_name: rows[start : start + _BATCH]})[0] for start in range(0, len(rows), _BATCH)
    ]
    return np.concatenate(outputs, axis=0)


@torch.no_grad()
def torch_probabilities(classifier: Classifier, features: np.ndarray) -> np.ndarray:
    """The reference: the trained network's probabilities in torch (CPU, fp32)."""
    model = ProbabilityModel(classifier).cpu().eval()
    return model(torch.as_tensor(np.array(features, dtype=np.float32))).numpy()


def verify_export(classifier: Classifier, path: Path, features: np.ndarray) -> float:
    """Run the ONNX file and torch on the same rows; raise ExportCheckFailed when they differ."""
    expected = torch_probabilities(classifier, features)
    actual = predict(path, features)
    if actual.shape != expected.shape:
        raise ExportCheckFailed(f"exported model outputs shape {actual.shape}, torch {expected.shape}")
    max_difference = float(np.max(np.abs(actual - expected)))
    if not np.isfinite(actual).all() or max_difference > VERIFY_ATOL:
        raise ExportCheckFailed(
            f"exported model differs from torch by {max_difference:.2e} (tolerance {VERIFY_ATOL:g})"
        )
    return max_difference


def onnx_parameters(path: Path) -> int:
    """Weights and biases stored in an fp32 graph (its input-standardization constants excluded),
    for a model that has no torch network here, such as a teacher."""
    graph = onnx.load(str(path), load_external_data=False).graph
    return sum(
        int(np.prod(tensor.dims))
        for tensor in graph.initializer
        if tensor.data_type == onnx.TensorProto.FLOAT and tensor.dims and "standardize" not in tensor.name
    )


def signature_of(path: Path) -> Signature:
    """The OIP v2 signature, read from the ONNX graph itself (dynamic axes as -1)."""
    graph = onnx.load(str(path), load_external_data=False).graph
    initializers = {initializer.name for initializer in graph.initializer}
    inputs = [_spec(value) for value in graph.input if value.name not in initializers]
    return Signature(inputs=inputs, outputs=[_spec(value) for value in graph.output])


def _spec(value: onnx.ValueInfoProto) -> TensorSpec:
    tensor_type = value.type.tensor_type
    shape = [dim.dim_value if dim.HasField("dim_value") else -1 for dim in tensor_type.shape.dim]
    datatype = _OIP_DATATYPES.get(tensor_type.elem_type, onnx.TensorProto.DataType.Name(tensor_type.elem_type))
    return TensorSpec(name=value.name, datatype=datatype, shape=shape)
