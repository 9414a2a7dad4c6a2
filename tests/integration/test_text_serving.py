"""A text csv trains a classifier that answers text over the Open Inference Protocol: the real trainer process
trains the example gru on topics.csv from a Kafka request, and a real gateway serves the artifact it made to
JSON, to tritonclient.http (binary) and to tritonclient.grpc, with the class labels; malformed text is a 400
or INVALID_ARGUMENT with the reason."""

from __future__ import annotations

import signal
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from gateway_helpers import Served, served_gateway
from support import free_port
from test_trainer_recipes_service import _trainer, _until_settled
from text_support import CLEAR_TEXTS, LABELS, QUICK, SMALL, TOPICS_DATASET, datasets_root
from tritonclient.utils import InferenceServerException

from services.gateway.domain import Deployment, VersionSpec
from shared.artifacts import ArtifactStore
from shared.events import ModelTrained, TrainingRequested, TrainingStatus
from shared.kafka import KafkaPublisher
from shared.local.stack import Stack
from shared.topics import ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@dataclass(frozen=True)
class Trained:
    event: ModelTrained
    refusal: TrainingStatus
    store: ArtifactStore


@pytest.fixture(scope="module")
def trained(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Trained:
    """The trainer process trains a text gru from a Kafka request, and refuses an mlp on the same text csv."""
    tmp = tmp_path_factory.mktemp("text-serving")
    base = stack.settings
    settings = base.model_copy(
        update={"topic_prefix": f"t{uuid.uuid4().hex[:10]}.", "artifact_root": str(tmp / "artifacts")}
    )
    ensure_topics(settings)
    root = datasets_root(tmp / "datasets")
    trainer = _trainer(settings, tmp, FERRY_DATASETS_ROOT=str(root))
    hyperparameters = QUICK.model_copy(update={"options": SMALL["gru"]})
    gru = TrainingRequested(model_name="topics", dataset=TOPICS_DATASET, arch="gru", hyperparameters=hyperparameters)
    mlp = TrainingRequested(model_name="topics-mlp", dataset=TOPICS_DATASET, arch="mlp")
    publisher = KafkaPublisher(settings, source="test")
    try:
        for request in (gru, mlp):
            publisher.publish(request)
        events = _until_settled(settings, [gru, mlp])
    finally:
        publisher.close()
        trainer.send_signal(signal.SIGTERM)
        trainer.close(grace_s=30)
    [event] = [found for found in events if isinstance(found, ModelTrained)]
    statuses = [found for found in events if isinstance(found, TrainingStatus)]
    [*_, refusal] = [status for status in statuses if status.request_id == mlp.request_id]
    return Trained(event, refusal, ArtifactStore(settings.resolved_artifact_root))


@pytest.fixture(scope="module")
def served(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, int]]:
    event = trained.event
    spec = VersionSpec(1, event.artifact.sha256, event.artifact.size_bytes, event.signature)
    grpc_port = free_port()
    folder = tmp_path_factory.mktemp("text-gateway")
    deployments = [Deployment("topics", 1, champion=spec)]
    with served_gateway(folder, deployments, store=trained.store, grpc_port=grpc_port) as running:
        yield running, grpc_port


def test_the_trainer_made_a_text_model_and_refused_an_mlp_on_text(trained: Trained) -> None:
    signature = trained.event.signature
    assert [(spec.name, spec.datatype, spec.shape) for spec in signature.inputs] == [("text", "BYTES", [-1])]
    assert signature.labels == LABELS and trained.event.arch == "gru" and "verify" in trained.event.timings
    assert trained.refusal.state == "failed"
    assert "is a text dataset; arch 'mlp' reads numbers" in (trained.refusal.reason or "")


def test_json_text_in_probabilities_out(served: tuple[Served, int]) -> None:
    body = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [3], "data": list(CLEAR_TEXTS.values())}]}
    answer = httpx.post(served[0].url + "/v2/models/topics/infer", json=body, timeout=30)
    assert answer.status_code == 200, answer.text
    [output] = answer.json()["outputs"]
    scores = np.array(output["data"]).reshape(output["shape"])
    assert output["shape"] == [3, 3] and [LABELS[index] for index in scores.argmax(axis=1)] == list(CLEAR_TEXTS)


def test_tritonclient_http_binary_text_gets_the_labels(served: tuple[Served, int]) -> None:
    client = triton_http.InferenceServerClient(served[0].url.removeprefix("http://"))
    tensor = triton_http.InferInput("text", [3], "BYTES")
    tensor.set_data_from_numpy(np.array(list(CLEAR_TEXTS.values()), dtype=object), binary_data=True)
    wanted = [triton_http.InferRequestedOutput("probabilities", binary_data=True, class_count=1)]
    answer = client.infer("topics", [tensor], outputs=wanted).as_numpy("probabilities")
    assert answer is not None and answer.shape == (3, 1)
    assert [entry.decode().split(":")[2] for entry in answer.ravel()] == list(CLEAR_TEXTS)


def test_tritonclient_grpc_text_gets_the_labels(served: tuple[Served, int]) -> None:
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{served[1]}")
    tensor = triton_grpc.InferInput("text", [3], "BYTES")
    tensor.set_data_from_numpy(np.array(list(CLEAR_TEXTS.values()), dtype=object))
    wanted = [triton_grpc.InferRequestedOutput("probabilities", class_count=1)]
    answer = client.infer("topics", [tensor], outputs=wanted).as_numpy("probabilities")
    assert answer is not None
    assert [entry.decode().split(":")[2] for entry in answer.ravel()] == list(CLEAR_TEXTS)
    scores = client.infer("topics", [tensor]).as_numpy("probabilities")
    assert scores is not None and scores.shape == (3, 3) and np.allclose(scores.sum(axis=1), 1.0, atol=1e-5)


def test_malformed_text_is_refused_with_the_reason(served: tuple[Served, int]) -> None:
    url = served[0].url + "/v2/models/topics/infer"
    blob = (3).to_bytes(4, "little") + b"\xff\xfe\xfd"
    header = b'{"inputs":[{"name":"text","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":%d}}]}' % len(
        blob
    )
    answer = httpx.post(url, content=header + blob, headers={"Inference-Header-Content-Length": str(len(header))})
    assert answer.status_code == 400 and "element 0 is not UTF-8 text" in answer.json()["error"]
    numbers = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [2], "data": ["fine", 7]}]}
    answer = httpx.post(url, json=numbers, timeout=30)
    assert answer.status_code == 400 and "element 1 is a int, not a string" in answer.json()["error"]
    floats = {"inputs": [{"name": "text", "datatype": "FP32", "shape": [1], "data": [1.0]}]}
    answer = httpx.post(url, json=floats, timeout=30)
    assert answer.status_code == 400 and "has datatype FP32; the model takes BYTES" in answer.json()["error"]
    client = triton_grpc.InferenceServerClient(f"127.0.0.1:{served[1]}")
    tensor = triton_grpc.InferInput("text", [1, 1], "BYTES")
    tensor.set_data_from_numpy(np.array([["two axes"]], dtype=object))
    with pytest.raises(InferenceServerException) as refused:
        client.infer("topics", [tensor])
    assert refused.value.status() == "StatusCode.INVALID_ARGUMENT" and "the model takes [-1]" in str(refused.value)
