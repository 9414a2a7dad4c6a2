"""``ferry register`` / POST /models/{name}/versions on the real database and broker: an artifact trained
elsewhere is refused without a token or when it is not a usable model, and otherwise stored, announced as
model.trained (lineage external) and registered by the registry's own consumer."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from external_models import sklearn_digits, torch_network
from fastapi.testclient import TestClient
from test_registry_support import API_TOKEN, TopicReader, running

from services.registry.bootstrap import Registry
from services.registry.entrypoints.api import create_app
from shared import register_cli
from shared.datasets import load_dataset, split
from shared.events import ModelRegistered, ModelTrained
from shared.input_reference import build_input_reference
from shared.registry_client import RegistryClient, RetryBudget
from shared.settings import FerrySettings

pytestmark = pytest.mark.integration
pytest_plugins = ["test_registry_support"]
BUDGET = RetryBudget(attempts=2, total_s=10.0)
ONNX = {"Content-Type": "application/octet-stream"}


@pytest.fixture
def http(registry: Registry) -> Iterator[TestClient]:
    with TestClient(create_app(registry.settings, registry.api_deps())) as test_client:
        yield test_client


def client(http: TestClient, token: str | None = API_TOKEN) -> RegistryClient:
    return RegistryClient(http, token=token, budget=BUDGET, sleep=lambda seconds: None)


def cli_client(http: TestClient, token: str | None = API_TOKEN) -> RegistryClient:
    """A client of its own for the verb, which closes it when done."""
    return client(TestClient(http.app), token)


def stored_files(registry: Registry) -> list[Path]:
    return [path for path in Path(str(registry.settings.ferry.artifact_root)).rglob("*") if path.is_file()]


def test_an_upload_needs_a_token_and_a_usable_model_and_stores_nothing_otherwise(
    http: TestClient, registry: Registry
) -> None:
    path = "/api/v1/models/ext/versions?dataset=sklearn:digits"
    refused = http.post(path, content=torch_network(), headers=ONNX)
    assert refused.status_code == 401 and refused.json()["error"] == "a bearer token is required"
    bearer = {**ONNX, "Authorization": f"Bearer {API_TOKEN}"}
    cases = {
        "not an ONNX model": b"confidential-bytes " * 40,
        "input is FP32 [-1, 30]": torch_network(30, 2),
        "not class probabilities": torch_network(softmax=False),
    }
    for named, body in cases.items():
        answer = http.post(path, content=body, headers=bearer)
        assert answer.status_code == 422 and named in answer.json()["error"], answer.text
        assert "confidential" not in answer.text
    unknown = http.post("/api/v1/models/ext/versions?dataset=sklearn:nothing", content=torch_network(), headers=bearer)
    assert unknown.status_code == 422 and "unknown dataset" in unknown.json()["error"]
    for metrics in ("[1]", '{"accuracy": NaN}', '{"accuracy": "high"}'):
        query = {"dataset": "sklearn:digits", "metrics": metrics}
        answer = http.post("/api/v1/models/ext/versions", params=query, content=torch_network(), headers=bearer)
        assert answer.status_code == 422 and "metrics" in answer.json()["error"], answer.text
    form = http.post(path, content=torch_network(), headers={**bearer, "Content-Type": "text/plain"})
    assert form.status_code == 415
    assert stored_files(registry) == []
    assert http.get("/api/v1/models/ext").status_code == 404


def test_a_too_large_upload_is_413(registry: Registry) -> None:
    small = registry.settings.model_copy(update={"upload_max_bytes": 1000})
    with TestClient(create_app(small, registry.api_deps())) as http:
        answer = http.post(
            "/api/v1/models/ext/versions?dataset=sklearn:digits",
            content=torch_network(),
            headers={**ONNX, "Authorization": f"Bearer {API_TOKEN}"},
        )
    assert answer.status_code == 413 and "at most 1000" in answer.json()["error"]
    assert stored_files(registry) == []


def test_a_scikit_learn_upload_is_announced_as_external_and_registered(
    http: TestClient, registry: Registry, topic_reader: Callable[[str], TopicReader]
) -> None:
    trained, registered = topic_reader("model.trained"), topic_reader("model.registered")
    with running(registry):
        uploaded = client(http).register_artifact(
            "digits-sk", sklearn_digits(), dataset="sklearn:digits", metrics={"accuracy": 0.97}
        )
        assert uploaded.rewritten and [spec.shape for spec in uploaded.signature.outputs] == [[-1, 10]]
        [announced] = [item.event for item in trained.read(1)]
        assert isinstance(announced, ModelTrained)
        assert (announced.lineage, announced.arch, announced.request_id) == (
            "external",
            "external",
            uploaded.request_id,
        )
        [announcement] = [item.event for item in registered.read(1, timeout_s=60)]
        assert isinstance(announcement, ModelRegistered) and announcement.version == 1
        assert announcement.artifact == uploaded.artifact
    version = client(http).version("digits-sk", 1)
    assert version.tags["lineage"] == "external" and version.training_request_id == uploaded.request_id
    assert version.metrics["accuracy"] == 0.97
    digit_names = [str(digit) for digit in range(10)]  # the dataset's class names name the scores
    assert uploaded.signature.labels == announcement.signature.labels == version.signature.labels == digit_names
    assert client(http).artifact("digits-sk", 1, expected=uploaded.artifact)  # the store's copy, verified
    # Input drift's reference, from the dataset's training part as for a trained version.
    train = split(load_dataset("sklearn:digits")).train.features
    assert announced.input_reference == version.input_reference == build_input_reference(train, "input")


def test_ferry_register_uploads_a_torch_model_waits_for_its_version_and_tags_it(
    http: TestClient, registry: Registry, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_file = tmp_path / "net.onnx"
    model_file.write_bytes(torch_network())
    parser = argparse.ArgumentParser()
    commands = register_cli.register(
        parser.add_subparsers(), connect=lambda settings, write: client(TestClient(http.app))
    )
    args = parser.parse_args(
        ["register", "net", str(model_file), "--dataset", "sklearn:digits", "--tags", "team=vision", "source=torch"]
    )
    with running(registry):
        code = commands["register"](args, FerrySettings())
    output = capsys.readouterr()
    assert code == 0, output.err
    assert "net version 1 registered" in output.out
    version = client(http).version("net", 1)
    assert version.tags["team"] == "vision" and version.tags["lineage"] == "external"


def test_ferry_register_without_a_token_fails_clearly(
    http: TestClient, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model_file = tmp_path / "net.onnx"
    model_file.write_bytes(torch_network())
    parser = argparse.ArgumentParser()
    commands = register_cli.register(
        parser.add_subparsers(), connect=lambda settings, write: client(TestClient(http.app), None)
    )
    args = parser.parse_args(["register", "net", str(model_file), "--dataset", "sklearn:digits"])
    assert commands["register"](args, FerrySettings()) == 1
    assert "bearer token is required" in capsys.readouterr().err
