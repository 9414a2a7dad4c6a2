"""Triton's classification extension as the gateway formats it, without a server: the top k classes of each
row as ``"score:index[:label]"``, ties, a k past the number of classes, bad k, and the BYTES encodings."""

from __future__ import annotations

import json

import numpy as np
import orjson
import pytest
from tritonclient.utils import deserialize_bytes_tensor

from services.gateway.classification import MAX_CLASSES_SHOWN, top_classes
from services.gateway.domain import InvalidInput
from services.gateway.entrypoints.oip import RequestedOutput, decode_infer, encode_infer, select_outputs

IRIS = ["setosa", "versicolor", "virginica"]
SCORES = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]], dtype=np.float32)


def test_top_k_per_row_in_descending_score_with_labels() -> None:
    top = top_classes(SCORES, 2, IRIS, "probabilities")
    assert top.shape == (2, 2)
    assert top.tolist() == [
        ["0.700000:1:versicolor", "0.200000:2:virginica"],
        ["0.500000:0:setosa", "0.250000:1:versicolor"],  # 0.25 twice: the lower index first
    ]


def test_ties_rank_by_the_lowest_index_whatever_the_order() -> None:
    scores = np.array([[0.2, 0.4, 0.4, 0.0, 0.4]], dtype=np.float32)
    assert [entry.split(":")[1] for entry in top_classes(scores, 5, None, "p")[0]] == ["1", "2", "4", "0", "3"]


def test_k_past_the_number_of_classes_gives_them_all_as_triton_does() -> None:
    top = top_classes(SCORES, 10, IRIS, "probabilities")
    assert top.shape == (2, 3)
    assert top[0].tolist() == ["0.700000:1:versicolor", "0.200000:2:virginica", "0.100000:0:setosa"]


def test_without_labels_the_entry_is_score_and_index() -> None:
    assert top_classes(SCORES, 1, None, "p").tolist() == [["0.700000:1"], ["0.500000:0"]]


def test_integer_outputs_and_rank_one_outputs() -> None:
    counts = np.array([3, 9, 1], dtype=np.int64)
    assert top_classes(counts, 2, IRIS, "votes").tolist() == ["9:1:versicolor", "3:0:setosa"]


@pytest.mark.parametrize(
    "scores",
    [np.zeros((1, 2, 3), dtype=np.float32), np.array([[True, False]]), np.float32(1.0).reshape(())],
)
def test_outputs_that_are_not_rows_of_numbers_cannot_be_classified(scores: np.ndarray) -> None:
    with pytest.raises(InvalidInput, match="cannot be classified"):
        top_classes(scores, 1, None, "p")


def _body(parameters: object) -> bytes:
    request = {
        "inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}],
        "outputs": [{"name": "probabilities", "parameters": {"classification": parameters}}],
    }
    return json.dumps(request).encode()


def test_the_request_parameter_is_read_per_output() -> None:
    assert decode_infer(_body(2), None).outputs == [RequestedOutput("probabilities", None, 2)]


@pytest.mark.parametrize("count", [0, -1, 1.5, "2", True, [1], MAX_CLASSES_SHOWN + 1])
def test_a_classification_that_is_not_a_positive_integer_is_refused(count: object) -> None:
    with pytest.raises(InvalidInput, match="parameters.classification must be an integer from 1"):
        decode_infer(_body(count), None)


def test_labels_name_only_the_first_output() -> None:
    names, arrays = ["probabilities", "logits"], [SCORES, SCORES * 10]
    requested = [RequestedOutput("logits", False, 1), RequestedOutput("probabilities", False, 1)]
    chosen = select_outputs(names, arrays, requested, False, IRIS)
    assert [(name, array.tolist()) for name, array, _ in chosen] == [
        ("logits", [["7.000000:1"], ["5.000000:0"]]),
        ("probabilities", [["0.700000:1:versicolor"], ["0.500000:0:setosa"]]),
    ]


def test_a_classified_output_is_bytes_in_json() -> None:
    chosen = select_outputs(["probabilities"], [SCORES], [RequestedOutput("probabilities", False, 2)], False, IRIS)
    body, header_length = encode_infer("iris", 4, "req", chosen)
    assert header_length is None
    [output] = orjson.loads(body)["outputs"]
    assert output == {
        "name": "probabilities",
        "datatype": "BYTES",
        "shape": [2, 2],
        "data": ["0.700000:1:versicolor", "0.200000:2:virginica", "0.500000:0:setosa", "0.250000:1:versicolor"],
    }


def test_a_classified_output_is_length_prefixed_bytes_in_binary_beside_a_float_output() -> None:
    requested = [RequestedOutput("probabilities", True, 1), RequestedOutput("probabilities", True, None)]
    chosen = select_outputs(["probabilities"], [SCORES], requested, True, ["sé", "b", "c"])
    body, header_length = encode_infer("iris", 4, None, chosen)
    assert header_length is not None
    header = orjson.loads(body[:header_length])
    classified, raw = header["outputs"]
    assert classified["datatype"] == "BYTES" and classified["shape"] == [2, 1]
    size = classified["parameters"]["binary_data_size"]
    blob = body[header_length : header_length + size]
    assert deserialize_bytes_tensor(blob).tolist() == [b"0.700000:1:b", "0.500000:0:sé".encode()]
    floats = np.frombuffer(body[header_length + size :], dtype="<f4").reshape(2, 3)
    assert raw["datatype"] == "FP32" and raw["parameters"]["binary_data_size"] == floats.nbytes
    np.testing.assert_array_equal(floats, SCORES)
