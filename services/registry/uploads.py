"""Checks of an ONNX artifact trained outside Ferry, before anything of it is stored.

What is accepted, exactly:
- at most ``max_bytes`` bytes, parsed as an ONNX model (protobuf; nothing else is ever deserialised);
- its default-domain (``ai.onnx``) opset within what this ONNX Runtime loads (``supported_opset``);
- ONNX Runtime (CPU) opens it;
- exactly one graph input, FP32, of rank 2: ``[batch, n_features]`` where batch is dynamic or any size and
  ``n_features`` is the dataset's number of features (a dynamic feature axis is refused: it says nothing);
- an output FP32 of rank 2 ``[batch, n_classes]``. When the first output is something else (scikit-learn's
  converters put the predicted ``label`` first) and exactly one other output fits, the graph keeps that
  output alone: Ferry's evaluator and gateway read the first output. The artifact stored is then the
  rewritten one, with a digest of its own;
- on the first rows of the dataset's training part (never its test part), every output row is a probability
  distribution: no value below 0, each row summing to 1 within ``SUM_TOLERANCE``. Logits are refused:
  end the network with a softmax.

A refusal is an ``UploadRejected`` that names the problem and quotes nothing of the file.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper

from services.registry.adapters.repository import UnitOfWork
from shared.artifacts import ArtifactStore
from shared.datasets import Dataset, split, split_id
from shared.events import ArtifactRef, Hyperparameters, ModelTrained, Signature, TensorSpec, new_id
from shared.onnx import ModelUnloadable, open_session, signature_of
from shared.registry_models import UploadOut

SUM_TOLERANCE = 1e-3
CHECK_ROWS = 32
MIN_OPSET = 7  # the oldest opset ONNX Runtime loads


class UploadRejected(ValueError):
    """An uploaded artifact that Ferry will not store; ``status`` is the HTTP status that says so."""

    def __init__(self, reason: str, *, status: int = 422) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class CheckedArtifact:
    """Bytes that passed every check (the upload, or its rewrite keeping the scores output) and their signature."""

    data: bytes
    signature: Signature
    rewritten: bool


def register_upload(
    name: str,
    data: bytes,
    dataset: Dataset,
    *,
    metrics: dict[str, float],
    max_bytes: int,
    artifacts: ArtifactStore,
    uow: UnitOfWork,
) -> UploadOut:
    """Check an external artifact, store it by digest, and announce it as ``model.trained`` (lineage external).

    Nothing is stored before every check passed. The announcement goes through the outbox, so the registry's
    consumer registers the version exactly as it registers a trained one, and the evaluator judges it.
    """
    checked = check_upload(data, dataset, max_bytes=max_bytes)
    uri, sha256, size = artifacts.put_bytes(checked.data)
    event = ModelTrained(
        model_name=name,
        request_id=new_id(),
        artifact=ArtifactRef(uri=uri, sha256=sha256, size_bytes=size, format="onnx"),
        signature=checked.signature,
        metrics=metrics,
        dataset=dataset.name,
        split_id=split_id(dataset),
        arch="external",
        hyperparameters=Hyperparameters(),  # required by the event; an external model reports none of its own
        lineage="external",
    )
    event_id = new_id()
    with uow:
        uow.repo.add_outbox(event, event_id)
        uow.commit()
    return UploadOut(
        model_name=name,
        request_id=event.request_id,
        event_id=event_id,
        artifact=event.artifact,
        signature=event.signature,
        dataset=event.dataset,
        split_id=event.split_id,
        rewritten=checked.rewritten,
    )


@functools.cache
def supported_opset() -> int:
    """The newest ai.onnx opset this ONNX Runtime loads, found once by opening a one-node graph."""
    for opset in range(onnx.defs.onnx_opset_version(), MIN_OPSET, -1):
        try:
            ort.InferenceSession(_identity_model(opset), providers=["CPUExecutionProvider"])
        except Exception:  # noqa: BLE001, S112 - too new for this runtime: try the one before
            continue
        return opset
    return MIN_OPSET


def _identity_model(opset: int) -> bytes:
    tensor = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])
    output = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "probe", [tensor], [output])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model.SerializeToString()


def check_upload(data: bytes, dataset: Dataset, *, max_bytes: int) -> CheckedArtifact:
    """The artifact to store for ``data`` as a model of ``dataset``; UploadRejected naming the problem."""
    if len(data) > max_bytes:
        raise UploadRejected(f"the artifact is {len(data)} bytes; at most {max_bytes} are accepted", status=413)
    model = _parsed(data)
    _check_opset(model)
    signature = _signature(_session(data))
    _check_input(signature.inputs, dataset)
    chosen = _scores_output(signature.outputs, dataset)
    rewritten = chosen != 0
    if rewritten:
        data = _keep_output(model, signature.outputs[chosen].name)
        signature = _signature(_session(data))
    _check_probabilities(_session(data), signature, dataset)
    return CheckedArtifact(data=data, signature=signature, rewritten=rewritten)


def _parsed(data: bytes) -> onnx.ModelProto:
    if not data:
        raise UploadRejected("the artifact is empty (0 bytes)")
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as error:
        raise UploadRejected("the artifact is not an ONNX model (it does not parse as an ONNX protobuf)") from error
    if not model.HasField("graph") or not model.graph.node:
        raise UploadRejected("the artifact is not an ONNX model (it holds no graph)")
    return model


def _check_opset(model: onnx.ModelProto) -> None:
    opsets = [entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")]
    if not opsets:
        raise UploadRejected("the model imports no ai.onnx opset")
    newest = supported_opset()
    for opset in opsets:
        if not MIN_OPSET <= opset <= newest:
            raise UploadRejected(
                f"unsupported opset {opset}: this ONNX Runtime ({ort.__version__}) loads ai.onnx opsets "
                f"{MIN_OPSET} to {newest}; convert with a target opset in that range"
            )


def _session(data: bytes) -> ort.InferenceSession:
    try:
        return open_session(data, device="cpu")
    except ModelUnloadable as error:
        raise UploadRejected(str(error)) from error


def _signature(session: ort.InferenceSession) -> Signature:
    try:
        return signature_of(session)
    except ValueError as error:  # a shape or type the signature schema cannot hold
        raise UploadRejected("the model's inputs or outputs cannot be described as tensors") from error


def _shown(spec: TensorSpec) -> str:
    return f"{spec.datatype} {spec.shape}"


def _check_input(inputs: list[TensorSpec], dataset: Dataset) -> None:
    wanted = f"one FP32 input [batch, {dataset.num_features}] ({dataset.name}'s {dataset.num_features} features)"
    if len(inputs) != 1:
        raise UploadRejected(f"wrong signature: the model has {len(inputs)} inputs; expected {wanted}")
    given = inputs[0]
    if given.datatype != "FP32" or len(given.shape) != 2 or given.shape[1] != dataset.num_features:
        raise UploadRejected(f"wrong signature: the input is {_shown(given)}; expected {wanted}")


def _fits(spec: TensorSpec, num_classes: int) -> bool:
    return spec.datatype == "FP32" and len(spec.shape) == 2 and spec.shape[1] == num_classes


def _scores_output(outputs: list[TensorSpec], dataset: Dataset) -> int:
    """Index of the per-class scores output: the first when it fits, else the only one that does."""
    fitting = [index for index, spec in enumerate(outputs) if _fits(spec, dataset.num_classes)]
    if fitting and fitting[0] == 0:
        return 0
    if len(fitting) == 1:
        return fitting[0]
    shown = ", ".join(_shown(spec) for spec in outputs) or "none"
    many = " (several fit: keep one)" if fitting else ""
    raise UploadRejected(
        f"wrong signature: outputs are {shown}{many}; expected one FP32 output [batch, {dataset.num_classes}] "
        f"of {dataset.name}'s {dataset.num_classes} class probabilities"
    )


def _keep_output(model: onnx.ModelProto, name: str) -> bytes:
    """The model with ``name`` as its only graph output (the nodes that fed the others stay, unused)."""
    kept = [output for output in model.graph.output if output.name == name]
    del model.graph.output[:]
    model.graph.output.extend(kept)
    return model.SerializeToString()


def _check_probabilities(session: ort.InferenceSession, signature: Signature, dataset: Dataset) -> None:
    rows = split(dataset).train.features[:CHECK_ROWS]
    feed = {signature.inputs[0].name: np.ascontiguousarray(rows, dtype=np.float32)}
    try:
        scores = session.run([signature.outputs[0].name], feed)[0]
    except Exception as error:  # noqa: BLE001 - ORT raises its own types; its message may quote the graph
        raise UploadRejected(f"the model fails on {dataset.name}'s rows ({type(error).__name__})") from error
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (len(rows), dataset.num_classes):
        raise UploadRejected(
            f"wrong signature: {len(rows)} rows gave outputs of shape {list(scores.shape)}; "
            f"expected [{len(rows)}, {dataset.num_classes}]"
        )
    sums = scores.sum(axis=1)
    if not np.all(np.isfinite(scores)) or scores.min() < 0 or np.abs(sums - 1).max() > SUM_TOLERANCE:
        raise UploadRejected(
            "the output is not class probabilities: on the dataset's training rows some values are negative, "
            "not finite, or rows do not sum to 1 (end the network with a softmax)"
        )
