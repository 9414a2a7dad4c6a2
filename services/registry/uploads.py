"""Checks of an ONNX artifact trained outside Ferry, before anything of it is stored.

What is accepted, exactly:
- at most ``max_bytes`` bytes, parsed as an ONNX model (protobuf; nothing else is ever deserialised);
- its default-domain (``ai.onnx``) opset within what this ONNX Runtime loads (``supported_opset``);
- ONNX Runtime (CPU) opens it;
- exactly one graph input, FP32, of rank 2: ``[batch, n_features]`` with a dynamic batch axis (the evaluator
  scores and the gateway serves rows in batches of any size) and ``n_features`` the dataset's number of
  features;
- an output FP32 of rank 2 ``[batch, n_classes]``, batch dynamic, ``n_classes`` the dataset's classes. When
  the first output is something else (scikit-learn's converters put the predicted ``label`` first) and
  exactly one other output fits, the graph keeps that output alone: Ferry's evaluator and gateway read the
  first output;
- on the first rows of the dataset's training part (never its test part), every output row is a probability
  distribution: no value below 0, each row summing to 1 within ``SUM_TOLERANCE``. Logits are refused:
  end the network with a softmax.

The stored graph names its input ``input`` and its output ``probabilities``, as the trainer's do: the
evaluator compares a candidate's signature with the champion's, names included, and a client of the
gateway sends the names the champion has. When the upload differs in names or outputs, the artifact stored
is the rewritten one, with a digest of its own (``rewritten``).

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

INPUT_NAME = "input"  # the trainer's names (services/trainer/domain.py), which a test holds these to
OUTPUT_NAME = "probabilities"
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
        signature=checked.signature.labelled(dataset.class_names),
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
    if dataset.is_regression:
        # Its drift bins come from predictions on validation rows, which only Ferry's trainer makes today.
        raise UploadRejected(
            f"{dataset.name} is a regression dataset; uploads are classifiers only (train a regressor with ferry train)"
        )
    model = _parsed(data)
    _check_opset(model)
    signature = _signature(_session(data))
    _check_input(signature.inputs, dataset)
    chosen = _scores_output(signature.outputs, dataset)
    renames = {signature.inputs[0].name: INPUT_NAME, signature.outputs[chosen].name: OUTPUT_NAME}
    rewritten = chosen != 0 or len(signature.outputs) != 1 or any(old != new for old, new in renames.items())
    if rewritten:
        _keep_output(model, signature.outputs[chosen].name)
        _rename(model, renames)
        data = model.SerializeToString()
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
    wanted = (
        f"one FP32 input [batch, {dataset.num_features}] with a dynamic batch axis "
        f"({dataset.name}'s {dataset.num_features} features)"
    )
    if len(inputs) != 1:
        raise UploadRejected(f"wrong signature: the model has {len(inputs)} inputs; expected {wanted}")
    given = inputs[0]
    if given.datatype != "FP32" or given.shape != [-1, dataset.num_features]:
        raise UploadRejected(f"wrong signature: the input is {_shown(given)}; expected {wanted}")


def _fits(spec: TensorSpec, num_classes: int) -> bool:
    return spec.datatype == "FP32" and spec.shape == [-1, num_classes]


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
        "with a dynamic batch axis "
        f"of {dataset.name}'s {dataset.num_classes} class probabilities"
    )


def _keep_output(model: onnx.ModelProto, name: str) -> None:
    """Make ``name`` the only graph output (the nodes that fed the others stay, unused; ORT prunes them)."""
    kept = [output for output in model.graph.output if output.name == name]
    del model.graph.output[:]
    model.graph.output.extend(kept)


def _rename(model: onnx.ModelProto, renames: dict[str, str]) -> None:
    """Rename tensors everywhere in the graph and its subgraphs, all at once; a tensor that already has one
    of the new names gets a fresh name first, so that no two tensors ever share one."""
    taken = set(_names(model.graph))
    mapping = dict(renames)
    for wanted in renames.values():
        if wanted in taken and wanted not in renames:
            mapping[wanted] = _fresh(wanted, taken | set(renames.values()))
    _rename_graph(model.graph, mapping)


def _fresh(name: str, taken: set[str]) -> str:
    suffix = 1
    while f"{name}_{suffix}" in taken:
        suffix += 1
    return f"{name}_{suffix}"


def _subgraphs(graph: onnx.GraphProto) -> list[onnx.GraphProto]:
    found = []
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.HasField("g"):
                found.append(attribute.g)
            found.extend(attribute.graphs)
    return found


def _names(graph: onnx.GraphProto) -> list[str]:
    names = [value.name for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer)]
    names += [name for node in graph.node for name in (*node.input, *node.output)]
    return names + [name for subgraph in _subgraphs(graph) for name in _names(subgraph)]


def _rename_graph(graph: onnx.GraphProto, mapping: dict[str, str]) -> None:
    for value in (*graph.input, *graph.output, *graph.value_info, *graph.initializer):
        value.name = mapping.get(value.name, value.name)
    for node in graph.node:
        node.input[:] = [mapping.get(name, name) for name in node.input]
        node.output[:] = [mapping.get(name, name) for name in node.output]
    for subgraph in _subgraphs(graph):
        _rename_graph(subgraph, mapping)


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
