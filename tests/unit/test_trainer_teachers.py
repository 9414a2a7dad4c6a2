"""Where distillation teachers come from: the registry's deployment through the registry client, the store's bytes."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from services.trainer.adapters.completed import CompletedRequests
from services.trainer.adapters.teachers import RegistryTeachers, StaticTeachers
from services.trainer.domain import Teacher, TeacherUnavailable
from shared.artifacts import ArtifactStore
from shared.errors import TransientError
from shared.events import ArtifactRef, Hyperparameters, ModelTrained, Signature, TensorSpec
from shared.registry_client import RegistryClient

ONNX_BYTES = b"pretend this is an onnx model"
NOW = "2026-01-01T00:00:00Z"


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


def _teachers(store: ArtifactStore, answer: Callable[[httpx.Request], httpx.Response]) -> RegistryTeachers:
    transport = httpx.MockTransport(answer)
    client = RegistryClient.connect("http://registry.test/", transport=transport, sleep=lambda seconds: None)
    return RegistryTeachers(client, store)


def _version(store: ArtifactStore, version: int = 4, data: bytes = ONNX_BYTES) -> dict[str, object]:
    uri, sha256, size = store.put_bytes(data)
    return {
        "model_name": "digits",
        "version": version,
        "status": "champion",
        "artifact": {"uri": uri, "sha256": sha256, "size_bytes": size, "format": "onnx"},
        "signature": {"inputs": [], "outputs": []},
        "metrics": {},
        "dataset": "sklearn:digits",
        "split_id": "s",
        "arch": "mlp",
        "hyperparameters": {},
        "compression": {},
        "timings": {},
        "training_request_id": None,
        "parent_model": None,
        "parent_version": None,
        "source_event_id": None,
        "tags": {},
        "created_at": NOW,
        "updated_at": NOW,
    }


def _deployment(champion: int | None) -> dict[str, object]:
    return {
        "model_name": "digits",
        "champion": champion,
        "challenger": None,
        "canary_weight": 0.0,
        "shadow": False,
        "revision": 2,
        "updated_at": NOW,
    }


def _registry(deployment: dict[str, object], version: dict[str, object]) -> Callable[[httpx.Request], httpx.Response]:
    def answer(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=deployment if request.url.path.endswith("/deployment") else version)

    return answer


def test_the_champion_is_fetched_from_the_store_and_written_locally(store: ArtifactStore, tmp_path: Path) -> None:
    asked: list[str] = []
    answer = _registry(_deployment(4), _version(store, 4))

    def recording(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        return answer(request)

    teacher = _teachers(store, recording).fetch("digits", tmp_path)
    assert asked == ["/api/v1/models/digits/deployment", "/api/v1/models/digits/versions/4"]
    assert (teacher.model_name, teacher.version) == ("digits", 4)
    assert teacher.path.read_bytes() == ONNX_BYTES


@pytest.mark.parametrize(
    ("response", "fragment"),
    [
        (httpx.Response(200, json=_deployment(None)), "has no champion"),
        (httpx.Response(404, json={"error": "no such model"}), "not in the registry"),
        (httpx.Response(200, json={"champion": 1}), "cannot name the champion"),
        (httpx.Response(400, json={"error": "bad"}), "refused \\(400\\): bad"),
    ],
)
def test_unusable_answers_are_teacher_unavailable(
    store: ArtifactStore, tmp_path: Path, response: httpx.Response, fragment: str
) -> None:
    with pytest.raises(TeacherUnavailable, match=fragment):
        _teachers(store, lambda request: response).fetch("m", tmp_path)


def test_a_name_no_model_can_have_is_unavailable_without_asking(store: ArtifactStore, tmp_path: Path) -> None:
    with pytest.raises(TeacherUnavailable, match="not a model name"):
        _teachers(store, lambda request: pytest.fail("asked the registry")).fetch("digits cnn", tmp_path)


@pytest.mark.parametrize("change", ["digest", "size"])
def test_an_artifact_that_does_not_match_the_version_is_refused(
    store: ArtifactStore, tmp_path: Path, change: str
) -> None:
    version = _version(store)
    artifact = version["artifact"]
    assert isinstance(artifact, dict)
    if change == "digest":
        artifact["sha256"] = "0" * 64
    else:
        artifact["size_bytes"] = len(ONNX_BYTES) + 1
    with pytest.raises(TeacherUnavailable, match="cannot be read"):
        _teachers(store, _registry(_deployment(4), version)).fetch("m", tmp_path)


def test_a_registry_that_is_away_is_transient(store: ArtifactStore, tmp_path: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(TransientError, match="ConnectError"):
        _teachers(store, refuse).fetch("m", tmp_path)
    with pytest.raises(TransientError, match="503"):
        _teachers(store, lambda request: httpx.Response(503)).fetch("m", tmp_path)


def test_static_teachers_know_only_theirs(tmp_path: Path) -> None:
    known = Teacher("a", 1, tmp_path / "a.onnx")
    assert StaticTeachers({"a": known}).fetch("a", tmp_path) is known
    with pytest.raises(TeacherUnavailable):
        StaticTeachers({"a": known}).fetch("b", tmp_path)


def test_completed_requests_round_trip(tmp_path: Path) -> None:
    completed = CompletedRequests(str(tmp_path))
    event = ModelTrained(
        model_name="m",
        request_id="req/with odd:chars",
        artifact=ArtifactRef(uri="/x.onnx", sha256="a" * 64, size_bytes=3, format="onnx"),
        signature=Signature(inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, 4])], outputs=[]),
        dataset="sklearn:iris",
        split_id="v1-x",
        arch="mlp",
        hyperparameters=Hyperparameters(),
    )
    assert completed.get(event.request_id) is None
    completed.put(event)
    assert CompletedRequests(str(tmp_path)).get(event.request_id) == event
    assert completed.get("another") is None
