"""The gRPC inference messages ↔ the request path's tensors: raw and typed contents of every datatype the REST
body takes, BYTES outputs, what tritonclient.grpc sends, the refusals, and the status-code mapping."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import tritonclient.grpc as triton
from tritonclient.grpc import _utils as triton_utils
from tritonclient.utils import deserialize_bytes_tensor

from services.gateway.domain import (
    DeadlineExceeded,
    InvalidInput,
    ModelNotFound,
    Overloaded,
    RateLimited,
    RunFailed,
    VersionNotFound,
)
from services.gateway.entrypoints.grpc_api import _peer_host, grpc_code
from services.gateway.entrypoints.grpc_tensors import TYPED_FIELDS, decode_request, encode_response
from services.gateway.entrypoints.oip import _DTYPES
from services.gateway.proto import grpc_predict_v2_pb2 as pb

NUMERIC = sorted(_DTYPES)


def sample(datatype: str) -> np.ndarray:
    """A [2, 3] array of ``datatype`` whose values reach past the smaller types' signed range."""
    if datatype == "BOOL":
        return np.array([[True, False, True], [False, False, True]])
    values = np.array([[0, 1, 2], [3, 100, 120]])
    dtype = _DTYPES[datatype].newbyteorder("=")
    if dtype.kind == "u":
        values = values + 7
    return (values / 4 if dtype.kind == "f" else values).astype(dtype)


def request_with(datatype: str, array: np.ndarray, *, raw: bool) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="m")
    tensor = request.inputs.add(name="x", datatype=datatype, shape=array.shape)
    if raw:
        request.raw_input_contents.append(array.astype(_DTYPES[datatype]).tobytes())
    else:
        getattr(tensor.contents, TYPED_FIELDS[datatype]).extend(array.ravel().tolist())
    return request


@pytest.mark.parametrize("datatype", NUMERIC)
def test_raw_contents_of_every_datatype(datatype: str) -> None:
    array = sample(datatype)
    decoded = decode_request(request_with(datatype, array, raw=True))
    assert decoded.raw and len(decoded.tensors) == 1
    tensor = decoded.tensors[0]
    assert (tensor.name, tensor.datatype, tensor.shape) == ("x", datatype, (2, 3))
    assert np.array_equal(tensor.data, array) and tensor.data.dtype == _DTYPES[datatype]


@pytest.mark.parametrize("datatype", [name for name in NUMERIC if name != "FP16"])
def test_typed_contents_of_every_datatype_with_a_field(datatype: str) -> None:
    array = sample(datatype)
    decoded = decode_request(request_with(datatype, array, raw=False))
    assert not decoded.raw
    assert np.array_equal(decoded.tensors[0].data, array)
    assert decoded.tensors[0].data.dtype == _DTYPES[datatype].newbyteorder("=")


def test_fp16_has_no_typed_field_and_says_to_send_it_raw() -> None:
    request = pb.ModelInferRequest(model_name="m")
    request.inputs.add(name="x", datatype="FP16", shape=[1]).contents.fp32_contents.append(1.0)
    with pytest.raises(InvalidInput, match="raw_input_contents"):
        decode_request(request)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r.raw_input_contents.append(b"\0" * 4), "2 entries for 1 inputs"),
        (lambda r: r.inputs[0].contents.fp32_contents.append(1.0), "both contents and raw_input_contents"),
        (lambda r: r.inputs[0].ClearField("name"), "name must be a non-empty string"),
        (lambda r: r.inputs[0].__setattr__("datatype", "FP99"), "datatype must be one of"),
        (lambda r: r.inputs[0].__setattr__("datatype", "STRING"), "datatype must be one of"),
        (lambda r: r.inputs[0].shape.append(-1), "non-negative integers"),
        (lambda r: r.raw_input_contents.__setitem__(0, b"\0" * 5), "5 bytes of data for shape"),
        (lambda r: r.parameters["timeout"].__setattr__("int64_param", -5), "timeout must be a positive"),
        (lambda r: r.outputs.add(name="y").parameters["classification"].__setattr__("int64_param", 0), "1 to"),
        (lambda r: r.outputs.add(name="y").parameters["classification"].__setattr__("string_param", "2"), "1 to"),
    ],
)
def test_malformed_requests_are_invalid_input_with_the_reason(change: object, message: str) -> None:
    request = request_with("FP32", np.zeros((1, 2), np.float32), raw=True)
    change(request)  # type: ignore[operator]
    with pytest.raises(InvalidInput, match=message):
        decode_request(request)


def test_typed_contents_of_the_wrong_count_or_kind_are_refused() -> None:
    short = request_with("INT32", np.zeros((2, 3), np.int32), raw=False)
    del short.inputs[0].contents.int_contents[-1]
    with pytest.raises(InvalidInput, match="5 values for shape"):
        decode_request(short)
    floats_as_ints = pb.ModelInferRequest(model_name="m")
    floats_as_ints.inputs.add(name="x", datatype="INT32", shape=[1]).contents.fp32_contents.append(1.5)
    with pytest.raises(InvalidInput, match="0 values"):  # INT32 reads int_contents: the floats are elsewhere
        decode_request(floats_as_ints)


def test_no_inputs_is_refused() -> None:
    with pytest.raises(InvalidInput, match="non-empty list"):
        decode_request(pb.ModelInferRequest(model_name="m"))


def test_what_tritonclient_grpc_sends_decodes() -> None:
    rows = np.arange(12, dtype=np.float32).reshape(3, 4)
    tensor = triton.InferInput("input", [3, 4], "FP32")
    tensor.set_data_from_numpy(rows)
    outputs = [triton.InferRequestedOutput("probabilities", class_count=2)]
    sent = triton_utils._get_inference_request(
        "iris", [tensor], "2", "req-1", outputs, 0, False, False, 0, 250_000, None
    )
    request = pb.ModelInferRequest.FromString(sent.SerializeToString())  # tritonclient's own message, on the wire
    decoded = decode_request(request)
    assert decoded.raw and np.array_equal(decoded.tensors[0].data, rows)
    assert decoded.outputs[0].name == "probabilities" and decoded.outputs[0].classification == 2
    assert decoded.timeout_s == pytest.approx(0.25)
    assert (request.model_name, request.model_version, request.id) == ("iris", "2", "req-1")


@pytest.mark.parametrize("datatype", NUMERIC)
def test_outputs_go_back_raw_or_typed_as_the_request_came(datatype: str) -> None:
    array = sample(datatype)
    raw = encode_response("m", 3, "r", [("y", array, False)], raw=True)
    assert (raw.model_name, raw.model_version, raw.id) == ("m", "3", "r")
    assert raw.outputs[0].datatype == datatype and list(raw.outputs[0].shape) == [2, 3]
    as_bytes = np.frombuffer(raw.raw_output_contents[0], dtype=_DTYPES[datatype]).reshape(2, 3)
    assert np.array_equal(as_bytes, array)
    typed = encode_response("m", 3, "r", [("y", array, False)], raw=False)
    if datatype == "FP16":  # no typed field: the answer is raw whatever the request
        assert typed.raw_output_contents and not typed.outputs[0].HasField("contents")
        return
    assert not typed.raw_output_contents
    values = getattr(typed.outputs[0].contents, TYPED_FIELDS[datatype])
    assert np.array_equal(np.array(list(values)).reshape(2, 3), array)


def test_bytes_outputs_raw_as_triton_reads_them_and_typed() -> None:
    classes = np.array([["0.9:2:virginica", "0.1:0:setosa"]], dtype=object)
    raw = encode_response("m", 1, "r", [("probabilities", classes, False)], raw=True)
    assert raw.outputs[0].datatype == "BYTES"
    read = deserialize_bytes_tensor(raw.raw_output_contents[0])  # tritonclient's own reader
    assert [value.decode() for value in read] == ["0.9:2:virginica", "0.1:0:setosa"]
    typed = encode_response("m", 1, "r", [("probabilities", classes, False)], raw=False)
    assert list(typed.outputs[0].contents.bytes_contents) == [b"0.9:2:virginica", b"0.1:0:setosa"]


def test_a_mixed_answer_with_fp16_is_raw_for_every_output() -> None:
    outputs = [("a", np.ones((1, 2), np.float32), False), ("b", np.ones((1, 2), np.float16), False)]
    response = encode_response("m", 1, "r", outputs, raw=False)
    assert len(response.raw_output_contents) == 2 and not response.outputs[0].HasField("contents")


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InvalidInput("bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (ModelNotFound("m"), grpc.StatusCode.NOT_FOUND),
        (VersionNotFound("m", "3"), grpc.StatusCode.NOT_FOUND),
        (RateLimited(1.0), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (Overloaded("champion"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (DeadlineExceeded(1.0), grpc.StatusCode.DEADLINE_EXCEEDED),
        (RunFailed("boom"), grpc.StatusCode.INTERNAL),
    ],
)
def test_refusals_map_to_status_codes_as_triton_maps_them(error: Exception, code: grpc.StatusCode) -> None:
    assert grpc_code(error) == code  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("peer", "host"),
    [("ipv4:127.0.0.1:5000", "127.0.0.1"), ("ipv6:[::1]:5000", "::1"), ("unix:/tmp/socket", "/tmp/socket")],
)
def test_the_client_of_a_request_without_an_api_key_is_its_address(peer: str, host: str) -> None:
    assert _peer_host(peer) == host
