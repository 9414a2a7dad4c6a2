"""BYTES inputs (a text model's strings) decoded from JSON, the binary tensor extension and gRPC, raw and typed,
as tritonclient sends them; malformed ones refused with the reason, never quoting the element."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.grpc import _utils as grpc_utils

from services.gateway.domain import InvalidInput
from services.gateway.entrypoints.grpc_tensors import decode_request
from services.gateway.entrypoints.oip import decode_infer
from services.gateway.proto import grpc_predict_v2_pb2 as pb

TEXTS = ["Hello big world", "", "émoji 😀 and 日本語", 'a,b "quoted"\n']


def as_strings(array: np.ndarray) -> list[str]:
    assert array.dtype == np.dtype(object) and all(type(value) is str for value in array.ravel())
    return array.ravel().tolist()


def json_body(data: object, shape: list[int]) -> bytes:
    return json.dumps({"inputs": [{"name": "text", "datatype": "BYTES", "shape": shape, "data": data}]}).encode()


def binary_body(blob: bytes, shape: list[int]) -> tuple[bytes, int]:
    header = json.dumps(
        {
            "inputs": [
                {"name": "text", "datatype": "BYTES", "shape": shape, "parameters": {"binary_data_size": len(blob)}}
            ]
        }
    ).encode()
    return header + blob, len(header)


def test_json_strings_become_an_object_array_of_str() -> None:
    [tensor] = decode_infer(json_body(TEXTS, [4]), None).tensors
    assert (tensor.datatype, tensor.shape) == ("BYTES", (4,)) and as_strings(tensor.data) == TEXTS
    [nested] = decode_infer(json_body([TEXTS[:2], TEXTS[2:]], [2, 2]), None).tensors
    assert nested.data.shape == (2, 2) and as_strings(nested.data) == TEXTS


def test_what_tritonclient_http_sends_in_binary_decodes() -> None:
    tensor = triton_http.InferInput("text", [4], "BYTES")
    tensor.set_data_from_numpy(np.array(TEXTS, dtype=object), binary_data=True)
    body, header_length = triton_http.InferenceServerClient.generate_request_body([tensor])
    assert header_length is not None  # the binary extension: length-prefixed elements after the header
    [decoded] = decode_infer(body, header_length).tensors
    assert as_strings(decoded.data) == TEXTS


def test_what_tritonclient_grpc_sends_decodes_raw_and_typed() -> None:
    tensor = triton_grpc.InferInput("text", [4], "BYTES")
    tensor.set_data_from_numpy(np.array(TEXTS, dtype=object))
    sent = grpc_utils._get_inference_request("topics", [tensor], "", "r", None, 0, False, False, 0, None, None)
    raw = decode_request(pb.ModelInferRequest.FromString(sent.SerializeToString()))
    assert raw.raw and as_strings(raw.tensors[0].data) == TEXTS
    typed = pb.ModelInferRequest(model_name="topics")
    typed.inputs.add(name="text", datatype="BYTES", shape=[4]).contents.bytes_contents.extend(
        text.encode() for text in TEXTS
    )
    assert as_strings(decode_request(typed).tensors[0].data) == TEXTS


def test_an_element_that_is_not_utf8_is_refused_by_position() -> None:
    blob = b"".join(len(element).to_bytes(4, "little") + element for element in (b"fine", b"\xff\xfe secret"))
    body, header_length = binary_body(blob, [2])
    with pytest.raises(InvalidInput, match="element 1 is not UTF-8 text") as refused:
        decode_infer(body, header_length)
    assert "secret" not in str(refused.value)
    typed = pb.ModelInferRequest(model_name="topics")
    typed.inputs.add(name="text", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"\xc3")
    with pytest.raises(InvalidInput, match="element 0 is not UTF-8 text"):
        decode_request(typed)


@pytest.mark.parametrize(
    ("data", "shape", "message"),
    [
        (["a", 3], [2], "element 1 is a int, not a string"),
        (["a", None], [2], "element 1 is a NoneType"),
        (["a", "b"], [3], "2 values for shape"),
        ([["a"], ["b"]], [2], "nested deeper than its shape"),
        ("a b", [1], "'data' must be a list"),
    ],
)
def test_json_data_of_the_wrong_kind_or_count_is_refused(data: object, shape: list[int], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        decode_infer(json_body(data, shape), None)


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"\x05\x00\x00\x00abc", "element 0's length 5 runs past"),
        (b"\x01\x00\x00\x00a\x01\x00", "ends before element 1 of 2"),
        (b"\x01\x00\x00\x00a\x01\x00\x00\x00b!", "1 bytes follow the last of 2"),
    ],
)
def test_a_malformed_length_prefixed_blob_is_refused(blob: bytes, message: str) -> None:
    body, header_length = binary_body(blob, [2] if b"b" in blob or len(blob) == 7 else [1])
    with pytest.raises(InvalidInput, match=message):
        decode_infer(body, header_length)
