"""The gateway's gRPC face (OIP v2's GRPCInferenceService) on a real gateway serving real ONNX models, through
``tritonclient.grpc`` unchanged: health, metadata, inference with raw tensors, canary and pinned routing, the
refusals as status codes, and the same metrics and access log as HTTP."""

from __future__ import annotations

import asyncio
import json
import signal
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton
from gateway_helpers import ListSource, Served, served_gateway, store_version, total
from support import ServiceProcess, free_port, wait_for
from test_gateway_service import env, processes  # noqa: F401 - fixtures: the real broker and database
from tritonclient.utils import InferenceServerException

from services.gateway.bootstrap import bootstrap
from services.gateway.domain import Deployment
from services.gateway.entrypoints.grpc_api import start_grpc
from services.gateway.proto import grpc_predict_v2_pb2 as pb
from services.gateway.proto import grpc_predict_v2_pb2_grpc as pb_grpc
from services.gateway.sample_models import classifier_signature
from services.gateway.settings import GatewaySettings
from shared.artifacts import ArtifactStore
from shared.settings import FerrySettings

pytestmark = pytest.mark.integration

ADMIN = "grpc-admin"
LABELS = ["setosa", "versicolor", "virginica"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, int]]:
    tmp = tmp_path_factory.mktemp("grpc")
    store = ArtifactStore(str(tmp / "artifacts"))
    labelled = replace(store_version(store, 1), signature=classifier_signature(8, 3, LABELS))
    deployments = [
        Deployment("iris", 2, champion=labelled, challenger=store_version(store, 2), canary_weight=0.3),
        Deployment("slow", 1, champion=store_version(store, 5)),
    ]
    grpc_port = free_port()
    with served_gateway(tmp, deployments, store=store, admin_token=ADMIN, grpc_port=grpc_port) as running:
        yield running, grpc_port


def client_of(served: tuple[Served, int]) -> triton.InferenceServerClient:
    return triton.InferenceServerClient(f"127.0.0.1:{served[1]}")


def features(batch: int, seed: int = 0, width: int = 8) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(batch, width)).astype(np.float32)


def infer(client: triton.InferenceServerClient, model: str, rows: np.ndarray, **options: object) -> triton.InferResult:
    tensor = triton.InferInput("input", list(rows.shape), "FP32")
    tensor.set_data_from_numpy(rows)
    return client.infer(model, [tensor], **options)  # type: ignore[arg-type]


def refusal(call: object) -> InferenceServerException:
    with pytest.raises(InferenceServerException) as raised:
        call()  # type: ignore[operator]
    return raised.value


def test_health_and_metadata_as_triton_reads_them(served: tuple[Served, int]) -> None:
    client = client_of(served)
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("iris") and client.is_model_ready("iris", "2")
    assert not client.is_model_ready("iris", "7") and not client.is_model_ready("nobody")
    assert client.get_server_metadata(as_json=True)["name"] == "ferry-gateway"
    metadata = client.get_model_metadata("iris", as_json=True)
    assert metadata["versions"] == ["1", "2"] and metadata["platform"] == "onnxruntime_onnx"
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": ["-1", "8"]}]
    assert metadata["outputs"][0]["name"] == "probabilities"
    missing = refusal(lambda: client.get_model_metadata("nobody"))
    assert missing.status() == "StatusCode.NOT_FOUND" and "nobody" in (missing.message() or "")


def test_binary_inference_matches_the_http_answer(served: tuple[Served, int]) -> None:
    rows = features(5, seed=3)
    result = infer(client_of(served), "iris", rows, model_version="1", request_id="grpc-1")
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (5, 3) and np.allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    response = result.get_response(as_json=True)
    assert response["model_version"] == "1" and response["id"] == "grpc-1"
    body = {"inputs": [{"name": "input", "shape": [5, 8], "datatype": "FP32", "data": rows.ravel().tolist()}]}
    over_http = httpx.post(f"{served[0].url}/v2/models/iris/versions/1/infer", json=body, timeout=30).json()
    assert np.allclose(np.array(over_http["outputs"][0]["data"]).reshape(5, 3), probabilities, atol=1e-6)


def test_typed_contents_come_back_typed(served: tuple[Served, int]) -> None:
    rows = features(2, seed=4)
    request = pb.ModelInferRequest(model_name="iris", model_version="1")
    tensor = request.inputs.add(name="input", datatype="FP32", shape=[2, 8])
    tensor.contents.fp32_contents.extend(rows.ravel().tolist())
    with grpc.insecure_channel(f"127.0.0.1:{served[1]}") as channel:
        response = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    assert not response.raw_output_contents
    assert list(response.outputs[0].shape) == [2, 3] and len(response.outputs[0].contents.fp32_contents) == 6
    raw = infer(client_of(served), "iris", rows, model_version="1").as_numpy("probabilities")
    assert np.allclose(np.array(response.outputs[0].contents.fp32_contents).reshape(2, 3), raw, atol=1e-6)


def test_classification_gives_the_top_labels_as_bytes(served: tuple[Served, int]) -> None:
    rows = features(4, seed=5)
    wanted = [triton.InferRequestedOutput("probabilities", class_count=2)]
    result = infer(client_of(served), "iris", rows, model_version="1", outputs=wanted)
    classes = result.as_numpy("probabilities")
    assert classes.shape == (4, 2)
    probabilities = infer(client_of(served), "iris", rows, model_version="1").as_numpy("probabilities")
    for row, top in zip(probabilities, classes, strict=True):
        score, index, label = top[0].decode().split(":")
        assert int(index) == int(row.argmax()) and label == LABELS[int(index)]


def test_canary_split_and_sticky_route_keys(served: tuple[Served, int]) -> None:
    client = client_of(served)
    rows = features(1, seed=6)
    versions = Counter(
        infer(client, "iris", rows, request_id=f"split-{i}").get_response().model_version for i in range(300)
    )
    assert set(versions) == {"1", "2"} and 0.2 < versions["2"] / 300 < 0.4  # canary_weight 0.3, a stable hash
    sticky = {
        infer(client, "iris", rows, request_id=f"s{i}", headers={"x-ferry-route-key": "user-7"})
        .get_response()
        .model_version
        for i in range(20)
    }
    assert len(sticky) == 1


def test_a_pinned_version_answers_whatever_the_route_key(served: tuple[Served, int]) -> None:
    client = client_of(served)
    answered = {
        infer(client, "iris", features(1), model_version="2", request_id=f"pin-{i}").get_response().model_version
        for i in range(20)
    }
    assert answered == {"2"}
    absent = refusal(lambda: infer(client, "iris", features(1), model_version="9"))
    assert absent.status() == "StatusCode.NOT_FOUND"


def test_bad_input_and_unknown_model_are_status_codes_with_messages(served: tuple[Served, int]) -> None:
    client = client_of(served)
    wrong = refusal(lambda: infer(client, "iris", features(2, width=5)))
    assert wrong.status() == "StatusCode.INVALID_ARGUMENT" and "input" in (wrong.message() or "")
    unknown = refusal(lambda: infer(client, "nobody", features(1)))
    assert unknown.status() == "StatusCode.NOT_FOUND" and "nobody" in (unknown.message() or "")
    output = [triton.InferRequestedOutput("no-such-output")]
    missing_output = refusal(lambda: infer(client, "iris", features(1), outputs=output))
    assert missing_output.status() == "StatusCode.INVALID_ARGUMENT"


def test_deadlines_are_deadline_exceeded(served: tuple[Served, int]) -> None:
    http = served[0].client(headers={"Authorization": f"Bearer {ADMIN}"})
    assert http.put("/admin/faults/slow/5", json={"delay_ms": 5000}).status_code == 200
    try:
        client = client_of(served)
        # Triton's timeout parameter (microseconds): the gateway's own deadline ends the run
        server_side = refusal(lambda: infer(client, "slow", features(1), timeout=100_000, request_id="late-1"))
        assert server_side.status() == "StatusCode.DEADLINE_EXCEEDED"
        # the client's gRPC deadline
        client_side = refusal(lambda: infer(client, "slow", features(1), client_timeout=0.2))
        assert client_side.status() == "StatusCode.DEADLINE_EXCEEDED"
    finally:
        http.delete("/admin/faults/slow/5")
    lines = wait_for(lambda: _access_lines(served[0], "late-1"), what="the access log line of late-1")
    assert lines[0]["status"] == 504 and lines[0]["protocol"] == "grpc"


def test_grpc_requests_are_counted_and_logged_like_http(served: tuple[Served, int]) -> None:
    before = total(served[0].url, "ferry_gateway_requests_total", model="iris", version="1", route="pinned")
    infer(client_of(served), "iris", features(1), model_version="1", request_id="counted-1")
    after = total(served[0].url, "ferry_gateway_requests_total", model="iris", version="1", route="pinned")
    assert after == before + 1
    lines = wait_for(lambda: _access_lines(served[0], "counted-1"), what="the access log line of counted-1")
    assert lines[0]["model"] == "iris" and lines[0]["version"] == 1 and lines[0]["route"] == "pinned"
    assert lines[0]["status"] == 200 and lines[0]["protocol"] == "grpc"


def test_rate_limited_is_resource_exhausted(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    grpc_port = free_port()
    deployment = Deployment("m", 1, champion=store_version(store, 1))
    with served_gateway(
        tmp_path, [deployment], store=store, grpc_port=grpc_port, rate_limit_rps=0.01, rate_limit_burst=2
    ):
        client = triton.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        for _ in range(2):
            infer(client, "m", features(1), headers={"x-api-key": "client-a"})
        limited = refusal(lambda: infer(client, "m", features(1), headers={"x-api-key": "client-a"}))
        assert limited.status() == "StatusCode.RESOURCE_EXHAUSTED" and "rate" in (limited.message() or "").lower()
        infer(client, "m", features(1), headers={"x-api-key": "client-b"})  # limits are per client


def _access_lines(served: Served, request_id: str) -> list[dict[str, object]]:
    path = served.gateway.settings.resolved_access_log_file
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [line for line in lines if line.get("request_id") == request_id]


@pytest.mark.parametrize("workers", [1, 2])
def test_one_process_owns_its_grpc_port_and_workers_share_it(tmp_path: Path, workers: int) -> None:
    """One gateway process binds its gRPC port exclusively (a second fails to start); the processes of one
    gateway (FERRY_GATEWAY_WORKERS) share it with SO_REUSEPORT, as uvicorn's workers share the HTTP port."""
    settings = GatewaySettings(ferry=FerrySettings(home=tmp_path), grpc_port=free_port(), workers=workers)

    async def start_twice() -> bool:
        gateways = [bootstrap(settings, source=ListSource(), store=ArtifactStore(str(tmp_path)), follow_kafka=False)]
        gateways.append(
            bootstrap(settings, source=ListSource(), store=ArtifactStore(str(tmp_path)), follow_kafka=False)
        )
        first = await start_grpc(gateways[0])
        assert first is not None
        try:
            second = await start_grpc(gateways[1])
        except RuntimeError:
            return False
        finally:
            await first.stop(None)
        assert second is not None
        await second.stop(None)
        return True

    assert asyncio.run(start_twice()) is (workers > 1)


def test_load_shedding_is_resource_exhausted(tmp_path: Path) -> None:
    store = ArtifactStore(str(tmp_path / "artifacts"))
    grpc_port = free_port()
    deployment = Deployment("m", 1, champion=store_version(store, 1))
    with served_gateway(
        tmp_path, [deployment], store=store, grpc_port=grpc_port, admin_token=ADMIN, max_inflight=1
    ) as s:
        fault = s.client().put(
            "/admin/faults/m/1", json={"delay_ms": 3000}, headers={"Authorization": f"Bearer {ADMIN}"}
        )
        fault.raise_for_status()
        client = triton.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        answers: list[object] = []
        tensor = triton.InferInput("input", [1, 8], "FP32")
        tensor.set_data_from_numpy(features(1))
        client.async_infer("m", [tensor], lambda result, error: answers.append(error or result))
        admission = s.gateway.inference.admission
        wait_for(lambda: admission.inflight >= 1, what="one request in flight", poll_s=0.01)
        shed = refusal(lambda: infer(client, "m", features(1)))
        assert shed.status() == "StatusCode.RESOURCE_EXHAUSTED" and "work in flight" in (shed.message() or "")
        wait_for(lambda: answers, what="the slow request's answer")
        assert isinstance(answers[0], triton.InferResult)


@pytest.mark.slow
def test_a_gateway_process_serves_grpc_from_its_workers_and_stops_on_sigterm(
    env: dict[str, str],  # noqa: F811
    processes: list[ServiceProcess],  # noqa: F811
    tmp_path: Path,
) -> None:
    """``python -m services.gateway`` with two workers on the real broker (the registry away: the deployments
    come from Kafka): gRPC answers on every connection, and SIGTERM stops the process cleanly, gRPC with it."""
    grpc_port = free_port()
    env = {
        **env,
        "FERRY_GATEWAY_GRPC_PORT": str(grpc_port),
        "FERRY_GATEWAY_WORKERS": "2",
        "FERRY_REGISTRY_URL": f"http://127.0.0.1:{free_port()}",
    }
    gateway = ServiceProcess("gateway", env, tmp_path / "gateway.log").start(timeout_s=120)
    processes.append(gateway)
    # one connection each (a local subchannel pool), which the kernel spreads over the two workers
    options = [("grpc.use_local_subchannel_pool", 1)]
    clients = [triton.InferenceServerClient(f"127.0.0.1:{grpc_port}", channel_args=options) for _ in range(8)]
    wait_for(
        lambda: all(_answers(client) for client in clients), what="gRPC ready on 8 connections", detail=gateway.tail
    )
    assert gateway.output().count("gateway serving gRPC on") == 2  # each worker bound the port
    assert gateway.stop(signal.SIGTERM) == 0, gateway.tail()
    assert not _answers(triton.InferenceServerClient(f"127.0.0.1:{grpc_port}"))


def _answers(client: triton.InferenceServerClient) -> bool:
    try:
        return bool(client.is_server_ready(client_timeout=5))
    except InferenceServerException:
        return False
