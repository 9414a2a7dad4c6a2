"""Triton's classification extension on a real gateway serving real ONNX models: ``tritonclient``'s
``class_count`` in binary and JSON, the class names in the model metadata, a model without names, and
bad counts refused with a 400."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from gateway_helpers import Served, served_gateway, store_version

from services.gateway.domain import Deployment
from services.gateway.sample_models import classifier_bytes, reference_probabilities
from shared.artifacts import ArtifactStore

pytestmark = pytest.mark.integration

SPECIES = ["setosa", "versicolor", "virginica"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("classification")
    store = ArtifactStore(str(tmp / "artifacts"))
    named = store_version(store, 1)
    named = dataclasses.replace(named, signature=named.signature.labelled(SPECIES))
    deployments = [Deployment("iris", 1, champion=named), Deployment("unnamed", 1, champion=store_version(store, 2))]
    with served_gateway(tmp, deployments, store=store) as running:
        yield running


def client_of(served: Served) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(served.url.removeprefix("http://"))


def features(batch: int = 4) -> np.ndarray:
    return np.random.default_rng(batch).normal(size=(batch, 8)).astype(np.float32)


def classify(served: Served, model: str, rows: np.ndarray, count: int, *, binary: bool) -> np.ndarray:
    tensor = triton.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows, binary_data=binary)
    wanted = [triton.InferRequestedOutput("probabilities", binary_data=binary, class_count=count)]
    result = client_of(served).infer(model, [tensor], outputs=wanted)
    [output] = result.get_response()["outputs"]
    assert output["datatype"] == "BYTES"
    assert ("binary_data_size" in output.get("parameters", {})) is binary
    answer = result.as_numpy("probabilities")
    assert answer is not None
    return answer


def parsed(entry: object) -> tuple[float, int, str | None]:
    text = entry.decode() if isinstance(entry, bytes) else str(entry)
    score, index, *label = text.split(":")
    assert len(score.split(".")[1]) == 6  # C's %f, as Triton writes a float score
    return float(score), int(index), label[0] if label else None


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_class_count_answers_the_top_classes_with_their_labels(served: Served, binary: bool) -> None:
    rows = features()
    answer = classify(served, "iris", rows, 2, binary=binary)
    assert answer.shape == (4, 2)
    expected = reference_probabilities(classifier_bytes(8, 3, seed=1), rows)
    for row, entries in zip(expected, answer, strict=True):
        best = np.argsort(-row, kind="stable")[:2]
        got = [parsed(entry) for entry in entries]
        assert [(index, label) for _, index, label in got] == [(int(i), SPECIES[i]) for i in best]
        assert [score for score, _, _ in got] == pytest.approx([float(row[i]) for i in best], abs=2e-6)


def test_a_count_past_the_classes_gives_every_class_best_first(served: Served) -> None:
    answer = classify(served, "iris", features(2), 10, binary=True)
    assert answer.shape == (2, 3)
    for entries in answer:
        got = [parsed(entry) for entry in entries]
        assert sorted(label for _, _, label in got) == SPECIES  # type: ignore[type-var]
        assert [score for score, _, _ in got] == sorted((score for score, _, _ in got), reverse=True)


def test_a_model_without_class_names_answers_score_and_index(served: Served) -> None:
    answer = classify(served, "unnamed", features(3), 1, binary=False)
    assert answer.shape == (3, 1)
    assert all(parsed(entry)[2] is None for entry in answer.ravel())


def test_the_metadata_names_the_classes_of_the_scores_output(served: Served) -> None:
    client = client_of(served)
    assert "classification" in client.get_server_metadata()["extensions"]
    [output] = client.get_model_metadata("iris")["outputs"]
    assert output == {
        "name": "probabilities",
        "datatype": "FP32",
        "shape": [-1, 3],
        "parameters": {"labels": SPECIES},
    }
    assert "parameters" not in client.get_model_metadata("unnamed")["outputs"][0]


@pytest.mark.parametrize("count", [0, -2, 1.5, "2", True, None])
def test_a_count_that_is_not_a_positive_integer_is_a_400_that_says_so(served: Served, count: object) -> None:
    rows = features(1)
    body = {
        "inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32", "data": rows.ravel().tolist()}],
        "outputs": [{"name": "probabilities", "parameters": {"classification": count}}],
    }
    answer = httpx.post(served.url + "/v2/models/iris/infer", json=body, timeout=30)
    if count is None:  # no classification asked: the scores themselves
        assert answer.status_code == 200 and answer.json()["outputs"][0]["datatype"] == "FP32"
        return
    assert answer.status_code == 400
    assert "parameters.classification must be an integer from 1" in answer.json()["error"]
