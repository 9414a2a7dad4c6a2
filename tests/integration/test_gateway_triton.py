"""Triton's HTTP extensions on a real gateway, through ``tritonclient.http``: model configuration,
inference statistics, the model repository index, and unload/load behind the admin token."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest
import tritonclient.http as triton
from gateway_helpers import Served, served_gateway, store_version
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.utils import InferenceServerException

from services.gateway.domain import Deployment
from services.gateway.settings import BatchSettings
from shared.artifacts import ArtifactStore

pytestmark = pytest.mark.integration

ADMIN = "triton-admin"
AUTHORIZED = {"Authorization": f"Bearer {ADMIN}"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("triton")
    store = ArtifactStore(str(tmp / "artifacts"))
    v1, v2 = store_version(store, 1), store_version(store, 2)
    deployments = [
        Deployment("iris", 2, champion=v1, challenger=v2, canary_weight=0.0),
        Deployment("wine", 1, champion=store_version(store, 3)),
    ]
    batching = BatchSettings(max_batch_size=16, max_delay_ms=2)
    with served_gateway(tmp, deployments, store=store, admin_token=ADMIN, batching=batching) as running:
        yield running


def client_of(served: Served) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(served.url.removeprefix("http://"))


def infer(client: triton.InferenceServerClient, model: str, batch: int, version: str = "") -> dict:
    features = np.random.default_rng(batch).normal(size=(batch, 8)).astype(np.float32)
    tensor = triton.InferInput("input", [batch, 8], "FP32")
    tensor.set_data_from_numpy(features)
    return client.infer(model, [tensor], model_version=version).get_response()


def test_model_config_as_triton_describes_it(served: Served) -> None:
    client = client_of(served)
    config = client.get_model_config("iris")
    assert config["name"] == "iris" and config["platform"] == "onnxruntime_onnx"
    assert config["max_batch_size"] == 16
    assert config["input"] == [{"name": "input", "data_type": "TYPE_FP32", "dims": [8]}]
    assert config["output"] == [{"name": "probabilities", "data_type": "TYPE_FP32", "dims": [3]}]
    assert config["dynamic_batching"] == {"max_queue_delay_microseconds": 2000}
    assert config["version_policy"] == {"specific": {"versions": ["1"]}}
    assert client.get_model_config("iris", "2")["version_policy"] == {"specific": {"versions": ["2"]}}
    for model, version in (("nope", ""), ("iris", "9"), ("iris", "x")):
        with pytest.raises(InferenceServerException) as refused:
            client.get_model_config(model, version)
        assert refused.value.status() == "404"


def test_statistics_count_what_was_sent(served: Served) -> None:
    client = client_of(served)
    before = client.get_inference_statistics("iris", "2")["model_stats"][0]
    for batch in (1, 2, 3):
        assert infer(client, "iris", batch, version="2")["model_version"] == "2"
    stats = client.get_inference_statistics("iris", "2")["model_stats"]
    assert [(entry["name"], entry["version"]) for entry in stats] == [("iris", "2")]
    entry = stats[0]
    assert entry["inference_count"] - before["inference_count"] == 6  # rows: 1 + 2 + 3
    success = entry["inference_stats"]["success"]
    assert success["count"] - before["inference_stats"]["success"]["count"] == 3
    assert success["ns"] > before["inference_stats"]["success"]["ns"]
    assert entry["inference_stats"]["fail"]["count"] == before["inference_stats"]["fail"]["count"]
    runs = entry["execution_count"] - before["execution_count"]
    assert 1 <= runs <= 3  # concurrent requests may share a run; these were sent one after another
    assert entry["inference_stats"]["queue"]["count"] - before["inference_stats"]["queue"]["count"] == 3
    assert entry["inference_stats"]["compute_infer"]["ns"] > 0
    everything = client.get_inference_statistics()["model_stats"]
    assert {(entry["name"], entry["version"]) for entry in everything} >= {("iris", "1"), ("iris", "2"), ("wine", "3")}
    assert [entry["version"] for entry in client.get_inference_statistics("iris")["model_stats"]] == ["1", "2"]


def test_failed_runs_are_counted_as_failures(served: Served) -> None:
    client = client_of(served)
    before = client.get_inference_statistics("wine")["model_stats"][0]["inference_stats"]["fail"]["count"]
    fault = httpx.put(served.url + "/admin/faults/wine/3", json={"error_rate": 1.0}, headers=AUTHORIZED)
    assert fault.status_code == 200
    try:
        with pytest.raises(InferenceServerException):
            infer(client, "wine", 1)
    finally:
        httpx.delete(served.url + "/admin/faults/wine/3", headers=AUTHORIZED)
    after = client.get_inference_statistics("wine")["model_stats"][0]["inference_stats"]["fail"]["count"]
    assert after == before + 1


def test_repository_index_lists_every_version(served: Served) -> None:
    index = client_of(served).get_model_repository_index()
    ready = {(entry["name"], entry["version"]) for entry in index if entry["state"] == "READY"}
    assert ready >= {("iris", "1"), ("iris", "2"), ("wine", "3")}


def test_unload_and_load_need_the_admin_token(served: Served) -> None:
    client = client_of(served)
    for headers in (None, {"Authorization": "Bearer wrong"}):
        for call in (client.unload_model, client.load_model):
            with pytest.raises(InferenceServerException) as refused:
                call("wine", headers=headers)
            assert refused.value.status() == ("401" if headers is None else "403")
    assert infer(client, "wine", 1)["model_version"] == "3"  # nothing changed


def test_unload_stops_serving_until_load(served: Served) -> None:
    client = client_of(served)
    client.unload_model("wine", headers=AUTHORIZED)
    try:
        response = httpx.post(
            served.url + "/v2/models/wine/infer",
            json={"inputs": [{"name": "input", "shape": [1, 8], "datatype": "FP32", "data": [0.0] * 8}]},
        )
        assert response.status_code == 404 and "unloaded" in response.json()["error"]
        assert not client.is_model_ready("wine")
        entries = [entry for entry in client.get_model_repository_index() if entry["name"] == "wine"]
        assert entries == [{"name": "wine", "version": "3", "state": "UNAVAILABLE", "reason": entries[0]["reason"]}]
        assert "unloaded" in entries[0]["reason"]
        client.unload_model("wine", headers=AUTHORIZED)  # twice: still unloaded, no error
    finally:
        client.load_model("wine", headers=AUTHORIZED)
    assert client.is_model_ready("wine")
    assert infer(client, "wine", 2)["model_version"] == "3"
    assert {"name": "wine", "version": "3", "state": "READY", "reason": ""} in client.get_model_repository_index()
    client.load_model("wine", headers=AUTHORIZED)  # served already: nothing to do


def test_deployments_while_unloaded_are_kept_for_the_load(served: Served) -> None:
    client = client_of(served)
    client.unload_model("wine", headers=AUTHORIZED)
    newer = Deployment("wine", 5, champion=store_version(served.store, 4))
    try:
        assert served.apply(newer) == "held"
        assert not client.is_model_ready("wine")
    finally:
        client.load_model("wine", headers=AUTHORIZED)
    assert infer(client, "wine", 1)["model_version"] == "4"


def test_repository_refusals_are_4xx(served: Served) -> None:
    client = client_of(served)
    for call in (client.unload_model, client.load_model):
        with pytest.raises(InferenceServerException) as unknown:
            call("nope", headers=AUTHORIZED)
        assert unknown.value.status() == "404"
    with pytest.raises(InferenceServerException) as override:
        client.load_model("wine", headers=AUTHORIZED, config='{"max_batch_size": 1}')
    assert override.value.status() == "400"


_paths = st.sampled_from(
    [
        "/v2/models/stats",
        "/v2/models/{name}/stats",
        "/v2/models/{name}/config",
        "/v2/models/{name}/versions/{version}/config",
        "/v2/models/{name}/versions/{version}/stats",
    ]
)


@given(
    path=_paths,
    name=st.sampled_from(["iris", "nope", "%20", "a.b", "stats"]),
    version=st.sampled_from(["1", "0", "-1", "abc", "99999999999"]),
    body=st.one_of(st.binary(max_size=64), st.just(b'{"parameters": {"config": "{}"}}'), st.just(b"[]")),
    token=st.sampled_from([None, ADMIN, "wrong"]),
)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzzed_extension_requests_never_get_a_5xx(
    served: Served, path: str, name: str, version: str, body: bytes, token: str | None
) -> None:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    got = httpx.get(served.url + path.format(name=name, version=version), timeout=30)
    assert got.status_code < 500, got.text
    posted = httpx.post(f"{served.url}/v2/repository/models/{name}/load", content=body, headers=headers, timeout=30)
    assert posted.status_code < 500, posted.text
    assert httpx.post(served.url + "/v2/repository/index", content=body, timeout=30).status_code == 200
