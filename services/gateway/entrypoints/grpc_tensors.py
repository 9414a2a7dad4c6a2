"""The gRPC inference messages and the request path's tensors: ``ModelInferRequest`` in, ``ModelInferResponse``
out, with the rules of the REST body (``oip.py``: the same checks, the same error messages).

An input's elements come either raw (``raw_input_contents``, one entry per input, laid out as the binary
tensor extension lays them out) or typed (``contents``, in the field of its datatype); the answer comes
back the way the request came: raw for raw, typed for typed. FP16 has no typed field, so an answer with
an FP16 output is raw whatever the request. BYTES outputs (classification) are raw as each element's
4-byte little-endian length then its bytes, or typed in ``bytes_contents``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from services.gateway.classification import classification_count
from services.gateway.domain import InvalidInput
from services.gateway.entrypoints.oip import (
    MAX_INPUTS,
    RequestedOutput,
    check_tensor,
    output_datatype,
    raw_bytes,
    strings_of,
    tensor_from_bytes,
    tensor_from_values,
    timeout_s_of,
)
from services.gateway.proto import grpc_predict_v2_pb2 as pb
from services.gateway.service import Tensor

TYPED_FIELDS = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


@dataclass(frozen=True)
class GrpcInferRequest:
    """A decoded ``ModelInferRequest``."""

    tensors: list[Tensor]
    outputs: list[RequestedOutput]
    raw: bool
    timeout_s: float | None


def parameter_value(parameter: pb.InferParameter) -> Any:
    """The value an ``InferParameter`` holds (None when it holds nothing)."""
    choice = parameter.WhichOneof("parameter_choice")
    return None if choice is None else getattr(parameter, choice)


def decode_request(request: pb.ModelInferRequest) -> GrpcInferRequest:
    """The tensors, requested outputs and options of a request; InvalidInput with the reason if malformed."""
    inputs, raw = request.inputs, request.raw_input_contents
    if not inputs:
        raise InvalidInput("'inputs' must be a non-empty list of tensors")
    if len(inputs) > MAX_INPUTS:
        raise InvalidInput(f"at most {MAX_INPUTS} input tensors")
    if raw and len(raw) != len(inputs):
        raise InvalidInput(f"raw_input_contents has {len(raw)} entries for {len(inputs)} inputs (one per input)")
    tensors = [_input(tensor, position, raw[position] if raw else None) for position, tensor in enumerate(inputs)]
    timeout = request.parameters.get("timeout")
    return GrpcInferRequest(
        tensors=tensors,
        outputs=_requested_outputs(request),
        raw=bool(raw),
        timeout_s=timeout_s_of(parameter_value(timeout)) if timeout is not None else None,
    )


def _input(tensor: pb.ModelInferRequest.InferInputTensor, position: int, raw: bytes | None) -> Tensor:
    name, datatype, shape = tensor.name, tensor.datatype, list(tensor.shape)
    if not name:
        raise InvalidInput(f"inputs[{position}].name must be a non-empty string")
    check_tensor(name, datatype, shape)
    if raw is not None:
        if tensor.HasField("contents"):
            raise InvalidInput(f"input {name!r} has both contents and raw_input_contents; send one")
        return tensor_from_bytes(name, datatype, shape, raw)
    field = TYPED_FIELDS.get(datatype)
    if field is None:
        raise InvalidInput(f"input {name!r}: {datatype} has no typed contents; send it in raw_input_contents")
    return tensor_from_values(name, datatype, shape, list(getattr(tensor.contents, field)))


def _requested_outputs(request: pb.ModelInferRequest) -> list[RequestedOutput]:
    if len(request.outputs) > MAX_INPUTS:
        raise InvalidInput(f"at most {MAX_INPUTS} requested outputs")
    requested = []
    for position, output in enumerate(request.outputs):
        if not output.name:
            raise InvalidInput(f"outputs[{position}].name must be a non-empty string")
        classification = output.parameters.get("classification")
        count = None if classification is None else parameter_value(classification)
        requested.append(RequestedOutput(output.name, None, classification_count(count, output.name)))
    return requested


def encode_response(
    model_name: str, version: int, request_id: str, outputs: list[tuple[str, np.ndarray, bool]], *, raw: bool
) -> pb.ModelInferResponse:
    """The answer: each output's name, datatype and shape, and its elements raw or typed (see the module)."""
    response = pb.ModelInferResponse(model_name=model_name, model_version=str(version), id=request_id)
    datatypes = [output_datatype(array) for _, array, _ in outputs]
    raw = raw or "FP16" in datatypes
    for (name, array, _), datatype in zip(outputs, datatypes, strict=True):
        tensor = response.outputs.add(name=name, datatype=datatype, shape=array.shape)
        if raw:
            response.raw_output_contents.append(raw_bytes(array, datatype))
        elif datatype == "BYTES":
            tensor.contents.bytes_contents.extend(value.encode() for value in strings_of(array))
        else:
            getattr(tensor.contents, TYPED_FIELDS[datatype]).extend(array.ravel().tolist())
    return response
