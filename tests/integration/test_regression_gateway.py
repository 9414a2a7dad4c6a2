"""A regressor on a real gateway: its [batch, 1] and [batch] outputs through OIP (tritonclient, binary and
JSON), classification refused with a 400, and its predictions counted by drift bin for the monitor."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from evaluator_onnx import fitted_diabetes
from gateway_helpers import Served, served_gateway, total

from services.gateway.domain import Deployment, VersionSpec
from shared.artifacts import ArtifactStore
from shared.datasets import load_dataset, split
from shared.onnx import open_session, predict, signature_of
from shared.regression import bin_of, quantile_edges

pytestmark = pytest.mark.integration

DIABETES = split(load_dataset("sklearn:diabetes"))
ROWS = DIABETES.test.features[:6]


def _version(store: ArtifactStore, number: int, data: bytes) -> VersionSpec:
    _, sha256, size = store.put_bytes(data)
    edges = quantile_edges(predict(open_session(data), DIABETES.validation.features))
    return VersionSpec(number, sha256, size, signature_of(open_session(data)).regressor(edges))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("regression")
    store = ArtifactStore(str(tmp / "artifacts"))
    deployments = [
        Deployment("column", 1, champion=_version(store, 1, fitted_diabetes())),
        Deployment("flat", 1, champion=_version(store, 1, fitted_diabetes(flat=True))),
    ]
    with served_gateway(tmp, deployments, store=store) as running:
        yield running


@pytest.mark.parametrize(("model", "shape"), [("column", (6, 1)), ("flat", (6,))])
@pytest.mark.parametrize("binary", [True, False])
def test_a_regressors_values_come_back_through_oip(
    served: Served, model: str, shape: tuple[int, ...], binary: bool
) -> None:
    tensor = triton.InferInput("input", list(ROWS.shape), "FP32")
    tensor.set_data_from_numpy(ROWS, binary_data=binary)
    wanted = [triton.InferRequestedOutput("prediction", binary_data=binary)]
    client = triton.InferenceServerClient(served.url.removeprefix("http://"))
    answer = client.infer(model, [tensor], outputs=wanted).as_numpy("prediction")
    assert answer is not None and answer.shape == shape and answer.dtype == np.float32
    expected = predict(open_session(fitted_diabetes(flat=model == "flat")), ROWS)
    assert answer == pytest.approx(expected, rel=1e-5)


def test_classification_of_a_regressor_is_a_400_with_a_reason(served: Served) -> None:
    body = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": list(ROWS.shape), "data": ROWS.ravel().tolist()}],
        "outputs": [{"name": "prediction", "parameters": {"classification": 2}}],
    }
    response = httpx.post(f"{served.url}/v2/models/column/infer", json=body, timeout=10)
    assert response.status_code == 400
    assert "the model is a regressor" in response.json()["error"]


def test_predictions_are_counted_in_the_regressors_drift_bins(served: Served) -> None:
    edges = quantile_edges(predict(open_session(fitted_diabetes(flat=True)), DIABETES.validation.features))
    bins = bin_of(predict(open_session(fitted_diabetes(flat=True)), ROWS), edges)

    def counted() -> dict[int, float]:
        return {
            index: total(
                served.url, "ferry_gateway_predictions_total", model="flat", version="1", **{"class": str(index)}
            )
            for index in range(len(edges) + 1)
        }

    before = counted()
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": list(ROWS.shape), "data": ROWS.ravel().tolist()}]}
    assert httpx.post(f"{served.url}/v2/models/flat/infer", json=body, timeout=10).status_code == 200
    after = counted()
    assert {index: after[index] - before[index] for index in after} == {
        index: float(np.sum(bins == index)) for index in range(len(edges) + 1)
    }
