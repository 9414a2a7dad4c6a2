"""Checks of an ONNX artifact trained outside Ferry, before anything of it is stored.

What is accepted, exactly:
- at most ``max_bytes`` bytes, parsed as an ONNX model (protobuf; nothing else is ever deserialised);
- its default-domain (``ai.onnx``) opset within what this ONNX Runtime loads (``supported_opset``);
- ONNX Runtime (CPU) opens it;
- exactly one graph input, FP32, of rank 2: ``[batch, n_features]`` with a dynamic batch axis (the evaluator
  scores and the gateway serves rows in batches of any size) and ``n_features`` the dataset's number of
  features;
- for a classification dataset, an output FP32 ``[batch, n_classes]``, batch dynamic, ``n_classes`` the
  dataset's classes; for a regression dataset, an output FP32 ``[batch, 1]`` or ``[batch]``: the predicted
  value. When the first output is something else (scikit-learn's classifiers put the predicted ``label``
  first) and exactly one other output fits, the graph keeps that output alone: Ferry's evaluator and gateway
  read the first output. An output that fits the other task is refused with a reason that says so;
- a classifier, on the first rows of the dataset's training part (never its test part): every output row is a
  probability distribution, no value below 0, each row summing to 1 within ``SUM_TOLERANCE``. Logits are
  refused: end the network with a softmax;
- a regressor, on the dataset's validation part (at most ``VALUE_ROWS`` rows; never the test part): one finite
  value per row. The deciles of these values are its drift bins, as the trainer cuts a regressor's.

The stored graph names its input ``input`` and its output ``probabilities`` (a regressor's ``prediction``, of
shape ``[batch, 1]``), as the trainer's do: the evaluator compares a candidate's signature with the champion's,
names and shapes included, and a client of the gateway sends the names the champion has. When the upload
differs in names, outputs or shape, the artifact stored is the rewritten one, with a digest of its own
(``rewritten``).

A refusal is an ``UploadRejected`` that names the problem and quotes nothing of the file.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnxruntime as ort
from google.protobuf.message import DecodeError

from services.registry.adapters.onnx_graph import MIN_OPSET, as_column, keep_output, rename, supported_opset
from services.registry.adapters.repository import UnitOfWork
from shared.artifacts import ArtifactStore
from shared.datasets import Dataset, split, split_id
from shared.events import ArtifactRef, Hyperparameters, ModelTrained, Signature, TensorSpec, new_id
from shared.input_reference import reference_for
from shared.onnx import ModelUnloadable, open_session, signature_of
from shared.registry_models import UploadOut
from shared.regression import as_values, quantile_edges

INPUT_NAME = "input"  # the trainer's names (services/trainer/domain.py), which a test holds these to
OUTPUT_NAME = "probabilities"
REGRESSION_OUTPUT_NAME = "prediction"
SUM_TOLERANCE = 1e-3
CHECK_ROWS = 32
VALUE_ROWS = 10_000  # a regressor's drift bins: enough rows for deciles, few enough to answer the upload quickly
VALUE_SHAPES = ([-1, 1], [-1])
FLOATS = ("FP32", "FP64", "FP16")


class UploadRejected(ValueError):
    """An uploaded artifact that Ferry will not store; ``status`` is the HTTP status that says so."""

    def __init__(self, reason: str, *, status: int = 422) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


@dataclass(frozen=True)
class CheckedArtifact:
    """Bytes that passed every check (the upload, or its rewrite keeping the one output) and their signature, as
    announced: a classifier's labelled with the dataset's class names, a regressor's with its drift bins."""

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
        # The same per-feature reference as a trained version's, from the same training part: input drift.
        input_reference=reference_for(checked.signature, split(dataset).train.features),
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


def check_upload(data: bytes, dataset: Dataset, *, max_bytes: int) -> CheckedArtifact:
    """The artifact to store for ``data`` as a model of ``dataset``; UploadRejected naming the problem."""
    if len(data) > max_bytes:
        raise UploadRejected(f"the artifact is {len(data)} bytes; at most {max_bytes} are accepted", status=413)
    model = _parsed(data)
    _check_opset(model)
    signature = _signature(_session(data))
    _check_input(signature.inputs, dataset)
    output = signature.outputs[_chosen_output(signature.outputs, dataset)]
    flat = output.shape == [-1]  # a regressor's [batch]: stored as the trainer's [batch, 1]
    stored_name = REGRESSION_OUTPUT_NAME if dataset.is_regression else OUTPUT_NAME
    renames = {signature.inputs[0].name: INPUT_NAME, output.name: stored_name}
    rewritten = signature.outputs != [output] or flat or any(old != new for old, new in renames.items())
    if rewritten:
        keep_output(model, output.name)
        if flat:
            as_column(model, output.name)
        rename(model, renames)
        data = model.SerializeToString()
        signature = _signature(_session(data))
    return CheckedArtifact(data=data, signature=_announced(_session(data), signature, dataset), rewritten=rewritten)


def _announced(session: ort.InferenceSession, signature: Signature, dataset: Dataset) -> Signature:
    """The signature once the outputs were checked on the dataset's rows, with the task's own facts."""
    if dataset.is_regression:
        return signature.regressor(_checked_values(session, signature, dataset))
    _check_probabilities(session, signature, dataset)
    return signature.labelled(dataset.class_names)


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


def _fits(spec: TensorSpec, dataset: Dataset) -> bool:
    """An output of this dataset's task: class scores [batch, n_classes], or one value per row."""
    shapes = VALUE_SHAPES if dataset.is_regression else ([-1, dataset.num_classes],)
    return spec.datatype == "FP32" and spec.shape in shapes


def _chosen_output(outputs: list[TensorSpec], dataset: Dataset) -> int:
    """Index of the output to keep: the first when it fits, else the only one that does."""
    fitting = [index for index, spec in enumerate(outputs) if _fits(spec, dataset)]
    if fitting and fitting[0] == 0:
        return 0
    if len(fitting) == 1:
        return fitting[0]
    shown = ", ".join(_shown(spec) for spec in outputs) or "none"
    many = " (several fit: keep one)" if fitting else ""
    raise UploadRejected(
        f"wrong signature: outputs are {shown}{many}; expected {_wanted(dataset)}{_misfit(outputs, dataset)}"
    )


def _wanted(dataset: Dataset) -> str:
    if dataset.is_regression:
        return (
            "one FP32 output [batch, 1] or [batch] with a dynamic batch axis: the predicted value of "
            f"{dataset.name}'s target"
        )
    return (
        f"one FP32 output [batch, {dataset.num_classes}] with a dynamic batch axis "
        f"of {dataset.name}'s {dataset.num_classes} class probabilities"
    )


def _misfit(outputs: list[TensorSpec], dataset: Dataset) -> str:
    """Why none fits, when the model is plainly of the other task: a classifier for a regression dataset, or a
    regressor for a classification dataset."""
    if dataset.is_regression and any(_is_class_output(spec) for spec in outputs):
        return f". This is a classifier (it gives class scores or labels), but {dataset.name} is a regression dataset"
    if not dataset.is_regression and any(spec.shape in VALUE_SHAPES and spec.datatype in FLOATS for spec in outputs):
        return f". This is a regressor (one value per row), but {dataset.name} is a classification dataset"
    return ""


def _is_class_output(spec: TensorSpec) -> bool:
    """Scores per class ([batch, k], k > 1), or a label per row that is not a float (skl2onnx's ``label``)."""
    scores = len(spec.shape) == 2 and spec.shape[1] > 1
    return scores or (spec.shape == [-1] and spec.datatype not in FLOATS)


def _run(session: ort.InferenceSession, signature: Signature, rows: np.ndarray, dataset: Dataset) -> np.ndarray:
    feed = {signature.inputs[0].name: np.ascontiguousarray(rows, dtype=np.float32)}
    try:
        found = session.run([signature.outputs[0].name], feed)[0]
    except Exception as error:  # noqa: BLE001 - ORT raises its own types; its message may quote the graph
        raise UploadRejected(f"the model fails on {dataset.name}'s rows ({type(error).__name__})") from error
    return np.asarray(found, dtype=np.float64)


def _checked_values(session: ort.InferenceSession, signature: Signature, dataset: Dataset) -> list[float]:
    """The inner edges of the regressor's drift bins, once it gave one finite value per validation row."""
    rows = split(dataset).validation.features[:VALUE_ROWS]
    found = _run(session, signature, rows, dataset)
    values = as_values(found)
    if values is None or len(values) != len(rows):
        raise UploadRejected(
            f"wrong signature: {len(rows)} rows gave outputs of shape {list(found.shape)}; expected [{len(rows)}, 1]"
        )
    if not np.all(np.isfinite(values)):
        raise UploadRejected(
            "the output is not a predicted value: on the dataset's validation rows some are not finite"
        )
    return quantile_edges(values)


def _check_probabilities(session: ort.InferenceSession, signature: Signature, dataset: Dataset) -> None:
    rows = split(dataset).train.features[:CHECK_ROWS]
    scores = _run(session, signature, rows, dataset)
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
