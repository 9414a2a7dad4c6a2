"""ONNX: export from torch, run the trainer's own files with ONNX Runtime (``shared.onnx``), verify them
against torch, count an exported graph's parameters."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from services.trainer.adapters.torch_models import Classifier, Regressor, served_model
from services.trainer.domain import (
    INPUT_NAME,
    OPSET,
    OUTPUT_NAME,
    REGRESSION_OUTPUT_NAME,
    VERIFY_ATOL,
    ExportCheckFailed,
)
from shared import onnx as shared_onnx
from shared.events import Signature


def export_onnx(classifier: Classifier, path: Path) -> Path:
    """Write the classifier + softmax (a regressor + its target's scale) as one ONNX file (opset 17) with a
    dynamic batch axis."""
    exported = served_model(classifier).cpu().eval()
    output_name = REGRESSION_OUTPUT_NAME if isinstance(classifier, Regressor) else OUTPUT_NAME
    num_features = int(classifier.standardize.mean.shape[0])
    example = torch.zeros(2, num_features)
    with warnings.catch_warnings():
        # dynamo=False is deliberate: the TorchScript exporter writes one self-contained file,
        # the dynamo one a side file of weights. Its deprecation notice is not news to us.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        # Shape checks inside torch's GRU and attention trace as constants, and the GRU exporter warns about
        # other batch sizes than the traced one: verify_export runs the file at batch 1 and at many rows.
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message="Exporting a model to ONNX with a batch_size other than 1")
        torch.onnx.export(
            exported,
            (example,),
            str(path),
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[output_name],
            dynamic_axes={INPUT_NAME: {0: "batch"}, output_name: {0: "batch"}},
            do_constant_folding=True,
        )
    onnx.checker.check_model(str(path))
    return path


def open_file(path: Path) -> ort.InferenceSession:
    """A session on a file of this job's work folder (never a path from outside), GPU when there is one."""
    return shared_onnx.open_session(path.read_bytes(), device="auto", threads=0)


def predict(path: Path, features: np.ndarray) -> np.ndarray:
    """The model's output for every row, batched."""
    return shared_onnx.predict(open_file(path), features)


@torch.no_grad()
def torch_probabilities(classifier: Classifier, features: np.ndarray) -> np.ndarray:
    """The reference: the trained network's probabilities (a regressor's values) in torch (CPU, fp32)."""
    model = served_model(classifier).cpu().eval()
    return model(torch.as_tensor(np.array(features, dtype=np.float32))).numpy()


def verify_export(classifier: Classifier, path: Path, features: np.ndarray, inputs: np.ndarray | None = None) -> float:
    """Run the ONNX file and torch on the same rows; raise ExportCheckFailed when they differ.

    ``inputs`` are the rows as the file takes them when torch takes them otherwise: a text model's texts,
    whose token ids (from ``shared.text``) are ``features``; so the file's own tokeniser is checked too.
    The first row also runs alone: the graph was traced at batch 2, and batch 1 proves its batch axis is
    dynamic (what a recipe's reshapes could break), the way the gateway most often runs it.
    """
    expected = torch_probabilities(classifier, features)
    served = features if inputs is None else inputs
    session = open_file(path)
    try:
        alone = shared_onnx.predict(session, served[:1])
        actual = shared_onnx.predict(session, served)
    except Exception as error:  # noqa: BLE001 - ONNX Runtime refusing to run the file is the export's failure
        raise ExportCheckFailed(f"the exported model fails in ONNX Runtime: {type(error).__name__}: {error}") from error
    if alone.shape != expected[:1].shape:
        raise ExportCheckFailed(
            f"exported model outputs shape {alone.shape} for one row, torch {expected[:1].shape}: "
            "its batch axis is not dynamic"
        )
    if actual.shape != expected.shape:
        raise ExportCheckFailed(f"exported model outputs shape {actual.shape}, torch {expected.shape}")
    actual = np.concatenate([alone, actual[1:]])
    max_difference = float(np.max(np.abs(actual - expected)))
    # A regressor's values are in the target's units: float32 rounding grows with its scale, a wrong graph more.
    tolerance = VERIFY_ATOL * (float(classifier.target_std) if isinstance(classifier, Regressor) else 1.0)
    if not np.isfinite(actual).all() or max_difference > tolerance:
        raise ExportCheckFailed(f"exported model differs from torch by {max_difference:.2e} (tolerance {tolerance:g})")
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
    """The OIP v2 signature of a file, as ONNX Runtime loads it (dynamic axes as -1)."""
    return shared_onnx.signature_of(open_file(path))
