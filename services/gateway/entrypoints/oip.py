"""The Open Inference Protocol v2 inference body: JSON tensors and the binary tensor extension.

A request is a JSON header, optionally followed by raw tensor bytes: then the header's length comes in
``Inference-Header-Content-Length`` and each binary input says its size in
``parameters.binary_data_size``, the blobs following one another in input order (little-endian,
row-major). Outputs come back binary when the request asks (``parameters.binary_data_output`` for all,
or ``parameters.binary_data`` per output), which is what ``tritonclient.http`` does by default. An output
asked for with ``parameters.classification: k`` (Triton's classification extension) comes back as a BYTES
tensor of its top k classes per row (``services/gateway/classification.py``), JSON or binary alike.
A text model's BYTES inputs are decoded in ``bytes_tensors.py``.
Everything malformed raises InvalidInput with the reason, never anything that would become a 5xx.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
import orjson
from pydantic_core import from_json

from services.gateway.classification import classification_count, top_classes
from services.gateway.domain import InvalidInput
from services.gateway.entrypoints.bytes_tensors import strings_from_raw, strings_from_values
from services.gateway.service import Tensor

HEADER_LENGTH = "inference-header-content-length"
_DTYPES: dict[str, np.dtype[Any]] = {
    name: np.dtype(code).newbyteorder("<")
    for name, code in {
        "BOOL": "?",
        "UINT8": "u1",
        "UINT16": "u2",
        "UINT32": "u4",
        "UINT64": "u8",
        "INT8": "i1",
        "INT16": "i2",
        "INT32": "i4",
        "INT64": "i8",
        "FP16": "f2",
        "FP32": "f4",
        "FP64": "f8",
    }.items()
}
_JSON_KINDS = {"BOOL": "b", "FP16": "biuf", "FP32": "biuf", "FP64": "biuf"}  # other datatypes: integers only
_NATIVE = {name: dtype.newbyteorder("=") for name, dtype in _DTYPES.items()}
_NUMPY_TO_OIP = {dtype: name for name, dtype in _NATIVE.items()}
_OBJECT = np.dtype(object)
MAX_INPUTS = 64
MAX_RANK = 16


@dataclass(frozen=True)
class RequestedOutput:
    name: str
    binary: bool | None
    classification: int | None = None  # Triton's classification extension: the top k classes as strings


@dataclass(slots=True)  # not frozen: built once per request
class InferBody:
    """A decoded inference request."""

    request_id: str | None
    tensors: list[Tensor]
    outputs: list[RequestedOutput]
    binary_output: bool
    timeout_s: float | None


def decode_infer(body: bytes, header_length: int | None) -> InferBody:
    """Parse a request body (with its ``Inference-Header-Content-Length``, if any)."""
    if header_length is not None and not 0 < header_length <= len(body):
        raise InvalidInput(
            f"Inference-Header-Content-Length {header_length} does not fit the body of {len(body)} bytes"
        )
    header_bytes = body if header_length is None else body[:header_length]
    try:
        header = from_json(header_bytes, allow_inf_nan=False)
    except ValueError as error:
        raise InvalidInput(f"the request is not valid JSON: {error}"[:300]) from error
    if not isinstance(header, dict):
        raise InvalidInput("the request must be a JSON object")
    request_id = header.get("id")
    if request_id is not None and (not isinstance(request_id, str) or len(request_id) > 256):
        raise InvalidInput("'id' must be a string of at most 256 characters")
    parameters = _object(header.get("parameters"), "parameters")
    binary = memoryview(body)[header_length:] if header_length is not None else memoryview(b"")
    tensors = _tensors(header.get("inputs"), binary)
    return InferBody(
        request_id=request_id,
        tensors=tensors,
        outputs=_requested_outputs(header.get("outputs")),
        binary_output=parameters.get("binary_data_output") is True,
        timeout_s=timeout_s_of(parameters.get("timeout")),
    )


def _object(value: Any, what: str, position: int | None = None) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInput(f"'{what.format(position)}' must be a JSON object")
    return value


def timeout_s_of(value: Any) -> float | None:
    """Triton's ``parameters.timeout``, in microseconds."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidInput("parameters.timeout must be a positive number of microseconds")
    return value / 1e6


def _tensors(inputs: Any, binary: memoryview) -> list[Tensor]:
    if not isinstance(inputs, list) or not inputs:
        raise InvalidInput("'inputs' must be a non-empty list of tensors")
    if len(inputs) > MAX_INPUTS:
        raise InvalidInput(f"at most {MAX_INPUTS} input tensors")
    tensors: list[Tensor] = []
    offset = 0
    for position, raw in enumerate(inputs):
        tensor, used = _tensor(raw, position, binary[offset:])
        tensors.append(tensor)
        offset += used
    if offset != len(binary):
        raise InvalidInput(
            f"the binary part has {len(binary)} bytes but the inputs' binary_data_size add up to {offset}"
        )
    return tensors


def _tensor(raw: Any, position: int, binary: memoryview) -> tuple[Tensor, int]:
    """One input tensor, and how many bytes of the binary part it used."""
    if not isinstance(raw, dict):
        raise InvalidInput(f"inputs[{position}] must be a JSON object")
    name, datatype, shape = raw.get("name"), raw.get("datatype"), raw.get("shape")
    if not isinstance(name, str) or not name:
        raise InvalidInput(f"inputs[{position}].name must be a non-empty string")
    count = check_tensor(name, datatype, shape)
    datatype, shape = cast("str", datatype), cast("list[int]", shape)  # as check_tensor found them
    size = _object(raw.get("parameters"), "inputs[{}].parameters", position).get("binary_data_size")
    if size is not None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise InvalidInput(f"input {name!r}: binary_data_size must be a non-negative integer")
        if size > len(binary):
            raise InvalidInput(f"input {name!r}: binary_data_size {size} runs past the end of the body")
        return tensor_from_bytes(name, datatype, shape, binary[:size]), size
    if "data" not in raw:
        raise InvalidInput(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
    return Tensor(name, datatype, tuple(shape), _json_data(raw["data"], name, datatype, shape, count)), 0


def check_tensor(name: str, datatype: Any, shape: Any) -> int:
    """Check an input's datatype and shape (a list); its element count. HTTP and gRPC alike."""
    if not isinstance(datatype, str) or datatype not in _DTYPES and datatype != "BYTES":
        raise InvalidInput(f"input {name!r}: datatype must be one of {sorted([*_DTYPES, 'BYTES'])}")
    if not isinstance(shape, list) or len(shape) > MAX_RANK or not all(map(_is_dimension, shape)):
        raise InvalidInput(f"input {name!r}: shape must be a list of at most {MAX_RANK} non-negative integers")
    return math.prod(shape)


def _is_dimension(value: Any) -> bool:
    return type(value) is int and 0 <= value < 2**31  # type(): a bool is an int, never a dimension


def tensor_from_bytes(name: str, datatype: str, shape: list[int], data: memoryview | bytes) -> Tensor:
    """An input from its raw bytes (little-endian, row-major), after :func:`check_tensor`."""
    if datatype == "BYTES":
        return Tensor(name, datatype, tuple(shape), strings_from_raw(name, shape, data))
    dtype = _DTYPES[datatype]
    count = math.prod(shape)
    if len(data) != count * dtype.itemsize:
        raise InvalidInput(f"input {name!r}: {len(data)} bytes of data for shape {shape} of {datatype}")
    return Tensor(name, datatype, tuple(shape), np.frombuffer(data, dtype=dtype).reshape(shape))


def tensor_from_values(name: str, datatype: str, shape: list[int], values: Any) -> Tensor:
    """An input from a list of its elements (JSON ``data``, gRPC ``contents``), after :func:`check_tensor`."""
    return Tensor(name, datatype, tuple(shape), _json_data(values, name, datatype, shape, math.prod(shape)))


def _json_data(values: Any, name: str, datatype: str, shape: list[int], count: int) -> np.ndarray:
    if datatype == "BYTES":
        return strings_from_values(name, shape, values)
    if not isinstance(values, list):
        raise InvalidInput(f"input {name!r}: 'data' must be a list")
    try:
        array = np.asarray(values)
    except (ValueError, TypeError, RecursionError) as error:
        raise InvalidInput(f"input {name!r}: 'data' is not a regular array of numbers") from error
    if array.size != count:
        raise InvalidInput(f"input {name!r}: {array.size} values for shape {shape} ({count} expected)")
    if count and array.dtype.kind not in _JSON_KINDS.get(datatype, "biu"):
        raise InvalidInput(f"input {name!r}: 'data' holds values that are not {datatype}")
    try:
        return array.astype(_NATIVE[datatype], copy=False).reshape(shape)
    except (ValueError, OverflowError) as error:
        raise InvalidInput(f"input {name!r}: values do not fit {datatype}") from error


def _requested_outputs(outputs: Any) -> list[RequestedOutput]:
    if outputs is None:
        return []
    if not isinstance(outputs, list) or len(outputs) > MAX_INPUTS:
        raise InvalidInput("'outputs' must be a list of at most 64 objects")
    requested = []
    for position, raw in enumerate(outputs):
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise InvalidInput(f"outputs[{position}] must be an object with a string 'name'")
        parameters = _object(raw.get("parameters"), "outputs[{}].parameters", position)
        binary = parameters.get("binary_data")
        count = classification_count(parameters.get("classification"), raw["name"])
        requested.append(RequestedOutput(raw["name"], binary if isinstance(binary, bool) else None, count))
    return requested


def select_outputs(
    names: list[str],
    arrays: list[np.ndarray],
    requested: list[RequestedOutput],
    binary_output: bool,
    labels: Sequence[str] | None = None,
    regressor: bool = False,
) -> list[tuple[str, np.ndarray, bool]]:
    """The outputs to send (all, or those asked for, in the order asked) and whether each goes binary; an
    output asked for with ``classification`` becomes its top classes, named by ``labels`` (the classes of
    the first output, the class scores); a regressor's outputs cannot be classified (InvalidInput, a 400)."""
    if not requested:
        return [(name, array, binary_output) for name, array in zip(names, arrays, strict=False)]
    by_name = dict(zip(names, arrays, strict=False))
    chosen = []
    for output in requested:
        if output.name not in by_name:
            raise InvalidInput(f"unknown output tensor {output.name!r}; the model gives {names}")
        array = by_name[output.name]
        if output.classification is not None:
            if regressor:
                raise InvalidInput(
                    f"output {output.name!r}: the model is a regressor (it predicts a value, not class scores); "
                    "parameters.classification does not apply"
                )
            named = labels if output.name == names[0] else None
            array = top_classes(array, output.classification, named, output.name)
        chosen.append((output.name, array, binary_output if output.binary is None else output.binary))
    return chosen


def encode_infer(
    model_name: str, version: int, request_id: str | None, outputs: list[tuple[str, np.ndarray, bool]]
) -> tuple[bytes, int | None]:
    """The response body, and the JSON header's length when binary outputs follow it."""
    described: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, array, binary in outputs:
        datatype = output_datatype(array)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if datatype == "BYTES" and not binary:
            entry["data"] = strings_of(array)
        elif binary:
            blob = raw_bytes(array, datatype)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = np.ascontiguousarray(array).ravel()  # orjson writes numpy arrays itself, 10x faster
        described.append(entry)
    response: dict[str, Any] = {"model_name": model_name, "model_version": str(version)}
    if request_id is not None:
        response["id"] = request_id
    response["outputs"] = described
    try:
        header = orjson.dumps(response, option=orjson.OPT_SERIALIZE_NUMPY)
    except orjson.JSONEncodeError:  # a datatype orjson's numpy support lacks: plain lists
        for entry in described:
            if isinstance(entry.get("data"), np.ndarray):
                entry["data"] = entry["data"].tolist()
        header = orjson.dumps(response)
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)


def output_datatype(array: np.ndarray) -> str:
    """The OIP datatype of an output; an array of Python strings (classification) is BYTES."""
    found = _NUMPY_TO_OIP.get(array.dtype)  # native byte order: ONNX Runtime's outputs, without a conversion
    if found is not None:
        return found
    if array.dtype == _OBJECT:
        return "BYTES"
    return _NUMPY_TO_OIP.get(array.dtype.newbyteorder("="), "FP32")


def strings_of(array: np.ndarray) -> list[str]:
    """A BYTES output's elements, row-major."""
    return [str(value) for value in array.ravel().tolist()]


def raw_bytes(array: np.ndarray, datatype: str) -> bytes:
    """An output's raw bytes: little-endian and row-major; a BYTES tensor as each element's 4-byte
    little-endian length, then its bytes (the binary extension's layout, and gRPC's raw contents')."""
    if datatype == "BYTES":
        encoded = [value.encode() for value in strings_of(array)]
        return b"".join(len(value).to_bytes(4, "little") + value for value in encoded)
    return np.ascontiguousarray(array, dtype=_DTYPES[datatype]).tobytes()
