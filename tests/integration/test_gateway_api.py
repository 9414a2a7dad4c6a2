"""The gateway's HTTP face with real ONNX models: OIP v2 through tritonclient (JSON and binary), bad input
as 4xx (fuzzed: never a 5xx), the metric names the monitor relies on, and the admin API's guard."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from gateway_helpers import Served, served_gateway, store_version, total
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.gateway.domain import Deployment
from services.gateway.sample_models import classifier_bytes, reference_probabilities
from shared.artifacts import ArtifactStore

pytestmark = pytest.mark.integration

ADMIN = "admin-secret"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("gateway")
    store = ArtifactStore(str(tmp / "artifacts"))
    v1, v2 = store_version(store, 1), store_version(store, 2)
    deployment = Deployment("iris", 2, champion=v1, challenger=v2, canary_weight=0.0)
    with served_gateway(tmp, [deployment], store=store, admin_token=ADMIN, max_body_bytes=64 * 1024) as running:
        yield running


def rows(count: int = 3) -> np.ndarray:
    return np.random.default_rng(7).normal(size=(count, 8)).astype(np.float32)


@pytest.mark.parametrize("binary", [True, False])
def test_tritonclient_round_trip(served: Served, binary: bool) -> None:
    client = triton.InferenceServerClient(served.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("iris")
    metadata = client.get_model_metadata("iris")
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 8]}]
    features = rows()
    tensor = triton.InferInput("input", list(features.shape), "FP32")
    tensor.set_data_from_numpy(features, binary_data=binary)
    outputs = [triton.InferRequestedOutput("probabilities", binary_data=binary)]
    result = client.infer("iris", [tensor], outputs=outputs, request_id="req-7")
    response = result.get_response()
    assert response["model_name"] == "iris" and response["model_version"] == "1" and response["id"] == "req-7"
    assert ("binary_data_size" in response["outputs"][0].get("parameters", {})) is binary
    expected = reference_probabilities(classifier_bytes(8, 3, seed=1), features)
    np.testing.assert_allclose(result.as_numpy("probabilities"), expected, rtol=1e-5)
    pinned = client.infer("iris", [tensor], model_version="2")  # binary outputs by default
    assert pinned.get_response()["model_version"] == "2"
    np.testing.assert_allclose(
        pinned.as_numpy("probabilities"), reference_probabilities(classifier_bytes(8, 3, seed=2), features), rtol=1e-5
    )


def test_server_and_model_metadata(served: Served) -> None:
    with served.client() as client:
        assert "binary_tensor_data" in client.get("/v2").json()["extensions"]
        assert client.get("/v2/health/live").json() == {"live": True}
        assert client.get("/v2/health/ready").json() == {"ready": True}
        assert client.get("/v2/models/iris/versions/2/ready").status_code == 200
        assert client.get("/v2/models/iris").json()["versions"] == ["1", "2"]
        assert client.get("/v2/models/nope").status_code == 404
        assert client.get("/v2/models/iris/versions/9/ready").status_code == 404
        assert "/v2/models/{name}/infer" in client.get("/openapi.json").json()["paths"]


def _post(served: Served, body: bytes | str, path: str = "/v2/models/iris/infer", **headers: str) -> httpx.Response:
    content = body.encode() if isinstance(body, str) else body
    return httpx.post(served.url + path, content=content, headers=headers, timeout=30)


GOOD = {"name": "input", "shape": [1, 8], "datatype": "FP32", "data": [0.5] * 8}


@pytest.mark.parametrize(
    ("body", "status", "reason"),
    [
        ({"inputs": [{**GOOD, "name": "pixels"}]}, 400, "unknown input tensor"),
        ({"inputs": [{**GOOD, "shape": [1, 7], "data": [0.5] * 7}]}, 400, "shape"),
        ({"inputs": [{**GOOD, "datatype": "INT64", "data": [1] * 8}]}, 400, "datatype INT64"),
        ({"inputs": [{**GOOD, "data": [0.5] * 7}]}, 400, "7 values"),
        ({"inputs": [{**GOOD, "data": ["a"] * 8}]}, 400, "not FP32"),
        ({"inputs": []}, 400, "non-empty"),
        ({"inputs": [GOOD], "outputs": [{"name": "logits"}]}, 400, "unknown output"),
        ([1, 2], 400, "JSON object"),
    ],
)
def test_bad_requests_are_4xx_with_a_reason(served: Served, body: object, status: int, reason: str) -> None:
    response = _post(served, json.dumps(body))
    assert response.status_code == status
    assert reason in response.json()["error"]


def test_malformed_bodies_and_framing(served: Served) -> None:
    assert _post(served, "{not json").status_code == 400
    header = json.dumps(
        {"inputs": [{**{k: v for k, v in GOOD.items() if k != "data"}, "parameters": {"binary_data_size": 32}}]}
    ).encode()
    blob = np.ones(8, np.float32).tobytes()
    ok = _post(served, header + blob, **{"Inference-Header-Content-Length": str(len(header))})
    assert ok.status_code == 200 and ok.json()["model_version"] == "1"
    short = _post(served, header + blob[:-4], **{"Inference-Header-Content-Length": str(len(header))})
    assert short.status_code == 400 and "binary_data_size" in short.json()["error"]
    assert _post(served, header + blob, **{"Inference-Header-Content-Length": "99999"}).status_code == 400
    assert _post(served, header + blob, **{"Inference-Header-Content-Length": "x"}).status_code == 400
    assert _post(served, header + blob).status_code == 400  # binary data without the header length
    assert _post(served, b"x" * (65 * 1024)).status_code == 413
    assert _post(served, json.dumps({"inputs": [GOOD]}), "/v2/models/nope/infer").status_code == 404
    assert _post(served, json.dumps({"inputs": [GOOD]}), "/v2/models/iris/versions/7/infer").status_code == 404
    assert _post(served, json.dumps({"inputs": [GOOD]}), "/v2/models/iris/versions/x/infer").status_code == 404


def test_a_response_says_its_version_and_echoes_the_id(served: Served) -> None:
    response = _post(served, json.dumps({"id": "abc", "inputs": [GOOD]}))
    body = response.json()
    assert (body["id"], body["model_name"], body["model_version"]) == ("abc", "iris", "1")
    assert response.headers["x-ferry-model-version"] == "1" and response.headers["x-ferry-route"] == "champion"


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
_tensors = st.fixed_dictionaries(
    {"name": st.sampled_from(["input", "x", ""]), "datatype": st.sampled_from(["FP32", "INT8", "BYTES", "fp32"])},
    optional={
        "shape": st.lists(st.integers(-2, 10), max_size=3),
        "data": _json_values,
        "parameters": st.dictionaries(st.sampled_from(["binary_data_size"]), st.integers(-2, 64)),
    },
)
_bodies = st.one_of(
    st.binary(max_size=200),
    _json_values.map(json.dumps),
    st.fixed_dictionaries(
        {"inputs": st.lists(_tensors, max_size=2)},
        optional={"id": _json_values, "outputs": _json_values, "parameters": _json_values},
    ).map(json.dumps),
)


_header_text = st.from_regex(r"[!-~]{0,4}", fullmatch=True)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    body=_bodies,
    header_length=st.one_of(st.none(), st.integers(-5, 300).map(str), _header_text),
    version=st.sampled_from(["", "/versions/1", "/versions/0", "/versions/-1", "/versions/abc"]),
)
def test_fuzzed_requests_never_get_a_5xx(
    served: Served, body: bytes | str, header_length: str | None, version: str
) -> None:
    headers = {} if header_length is None else {"Inference-Header-Content-Length": header_length}
    try:
        response = _post(served, body, f"/v2/models/iris{version}/infer", **headers)
    except (httpx.LocalProtocolError, UnicodeEncodeError):
        return  # the client itself refused to send such a header
    assert response.status_code < 500, response.text
    if response.status_code >= 400:
        assert "error" in response.json()


def test_metrics_carry_the_names_the_monitor_reads(served: Served) -> None:
    _post(served, json.dumps({"inputs": [GOOD]}))
    text = httpx.get(served.url + "/metrics").text
    for name in (
        "ferry_gateway_requests_total",
        "ferry_gateway_request_duration_seconds_bucket",
        "ferry_gateway_batch_size_bucket",
        "ferry_gateway_queue_depth",
        "ferry_gateway_inflight",
        "ferry_gateway_predictions_total",
    ):
        assert f"\n{name}{{" in text, name
    assert 'le="0.00025"' in text  # sub-millisecond buckets
    assert total(served.url, "ferry_gateway_requests_total", model="iris", route="champion", outcome="ok") >= 1
    assert total(served.url, "ferry_gateway_predictions_total", model="iris", version="1") >= 1


def test_admin_api_needs_the_bearer_token(served: Served) -> None:
    path = served.url + "/admin/faults/iris/1"
    assert httpx.put(path, json={"error_rate": 1}).status_code == 401
    assert httpx.put(path, json={"error_rate": 1}, headers={"Authorization": "Bearer wrong"}).status_code == 403
    good = {"Authorization": f"Bearer {ADMIN}"}
    assert httpx.put(path, json={"error_rate": 2}, headers=good).status_code == 422
    assert httpx.get(served.url + "/admin/faults", headers=good).json() == []


def test_admin_api_is_off_without_a_token(tmp_path: Path) -> None:
    with served_gateway(tmp_path) as running:
        response = httpx.put(running.url + "/admin/faults/iris/1", json={}, headers={"Authorization": "Bearer x"})
        assert response.status_code == 403 and "off" in response.json()["error"]
