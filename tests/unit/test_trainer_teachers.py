"""Where distillation teachers come from: the registry's deployment over REST, the store's bytes."""

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

ONNX_BYTES = b"pretend this is an onnx model"


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


def _teachers(store: ArtifactStore, answer: Callable[[httpx.Request], httpx.Response]) -> RegistryTeachers:
    client = httpx.Client(transport=httpx.MockTransport(answer))
    return RegistryTeachers("http://registry.test/", store, client=client)


def _deployment(store: ArtifactStore, version: int = 4) -> dict[str, object]:
    uri, sha256, size = store.put_bytes(ONNX_BYTES)
    artifact = {"uri": uri, "sha256": sha256, "size_bytes": size, "format": "onnx"}
    return {"revision": 2, "champion": {"version": version, "artifact": artifact}, "challenger": None}


def test_the_champion_is_fetched_and_written_locally(store: ArtifactStore, tmp_path: Path) -> None:
    asked: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.raw_path.decode())
        return httpx.Response(200, json=_deployment(store))

    teacher = _teachers(store, answer).fetch("digits cnn", tmp_path)
    assert asked == ["/api/v1/models/digits%20cnn/deployment"]
    assert (teacher.model_name, teacher.version) == ("digits cnn", 4)
    assert teacher.path.read_bytes() == ONNX_BYTES


def test_a_bare_champion_number_is_looked_up(store: ArtifactStore, tmp_path: Path) -> None:
    version_body = _deployment(store, version=7)["champion"]

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/deployment"):
            return httpx.Response(200, json={"champion": 7})
        assert request.url.path == "/api/v1/models/m/versions/7"
        return httpx.Response(200, json=version_body)

    assert _teachers(store, answer).fetch("m", tmp_path).version == 7


@pytest.mark.parametrize(
    ("response", "fragment"),
    [
        (httpx.Response(200, json={"champion": None}), "has no champion"),
        (httpx.Response(404, json={"error": "no such model"}), "not in the registry"),
        (httpx.Response(200, json={"champion": {"version": 1}}), "names no artifact"),
        (httpx.Response(400, text="bad"), "answered 400"),
    ],
)
def test_unusable_answers_are_teacher_unavailable(
    store: ArtifactStore, tmp_path: Path, response: httpx.Response, fragment: str
) -> None:
    with pytest.raises(TeacherUnavailable, match=fragment):
        _teachers(store, lambda request: response).fetch("m", tmp_path)


def test_a_tampered_artifact_is_refused(store: ArtifactStore, tmp_path: Path) -> None:
    body = _deployment(store)
    body["champion"]["artifact"]["sha256"] = "0" * 64  # type: ignore[index]
    with pytest.raises(TeacherUnavailable, match="cannot be read"):
        _teachers(store, lambda request: httpx.Response(200, json=body)).fetch("m", tmp_path)


def test_a_registry_that_is_away_is_transient(store: ArtifactStore, tmp_path: Path) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(TransientError, match="unreachable"):
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
