"""Issue 7 §1 through the real broker: an event cannot make the registry register, or serve, a file outside
the artifact store. Each refused event is in the DLQ with its reason; nothing of it reaches the database."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from support import wait_for
from test_registry_support import TopicReader, committed, publish, running, trained_event

from services.registry.bootstrap import Registry
from services.registry.entrypoints.api import create_app
from shared.events import ArtifactRef, ModelTrained

pytestmark = pytest.mark.integration
pytest_plugins = ["test_registry_support"]


def pointing_at(uri: str, content: bytes, model: str = "digits") -> ModelTrained:
    """A valid model.trained whose artifact is ``uri``, with that content's real digest and size."""
    event = trained_event(model)
    artifact = ArtifactRef(uri=uri, sha256=hashlib.sha256(content).hexdigest(), size_bytes=len(content), format="onnx")
    return event.model_copy(update={"artifact": artifact})


def reasons(reader: TopicReader, count: int) -> list[str]:
    reader.read(count)
    return [dict(record.headers)["ferry_dlq_reason"].decode() for record in reader.records]


def test_the_etc_passwd_reproduction_is_dead_lettered_and_nothing_is_served(
    registry: Registry, topic_reader: Callable[[str], TopicReader]
) -> None:
    passwd = Path("/etc/passwd").read_bytes()
    dead = topic_reader("model.trained.dlq")
    publish(registry.settings.ferry, pointing_at("/etc/passwd", passwd))
    with running(registry), TestClient(create_app(registry.settings, registry.api_deps())) as client:
        wait_for(lambda: committed(registry.settings, "model.trained") == 1, what="the event handled")
        [reason] = reasons(dead, 1)
        response = client.get("/api/v1/models/digits/versions/1/artifact")
    assert response.status_code == 404 and "error" in response.json()
    assert passwd not in response.content and b"root:" not in response.content
    assert "'/etc/passwd' is not the artifact store's key" in reason and "root:" not in reason
    assert dict(dead.records[0].headers)["ferry_dlq_error_type"] == b"PermanentError"


def test_traversal_foreign_schemes_links_tampering_and_missing_files_are_refused_a_good_one_registered(
    registry: Registry, topic_reader: Callable[[str], TopicReader]
) -> None:
    store = registry.artifacts
    passwd = Path("/etc/passwd").read_bytes()
    good_uri, good_sha, _ = store.put_bytes(b"a real model" * 50)
    key_dir = os.path.dirname(good_uri)
    tampered_uri, _, _ = store.put_bytes(b"to be tampered" * 50)
    Path(tampered_uri).write_bytes(b"was tampered!!" * 50)
    link = store.uri(hashlib.sha256(passwd).hexdigest())
    os.makedirs(os.path.dirname(link), exist_ok=True)
    os.symlink("/etc/passwd", link)
    missing = b"never stored" * 10
    events = {
        "is not the artifact store's key": pointing_at(f"{key_dir}/../../../../../../../etc/passwd", passwd),
        "is not the artifact store's key ": pointing_at("file:///etc/passwd", passwd),
        " is not the artifact store's key": pointing_at(f"http://127.0.0.1:9/{good_sha}.onnx", b"a real model" * 50),
        "resolves outside the store": pointing_at(link, passwd),
        "digest mismatch": pointing_at(tampered_uri, b"to be tampered" * 50),
        "is not in the store": pointing_at(store.uri(hashlib.sha256(missing).hexdigest()), missing),
    }
    dead = topic_reader("model.trained.dlq")
    good = pointing_at(good_uri, b"a real model" * 50)
    publish(registry.settings.ferry, *events.values(), good)
    with running(registry), TestClient(create_app(registry.settings, registry.api_deps())) as client:
        wait_for(lambda: client.get("/api/v1/models/digits").status_code == 200, what="the good event registered")
        found = reasons(dead, len(events))
        served = client.get("/api/v1/models/digits/versions/1/artifact")
        versions = client.get("/api/v1/models/digits/versions").json()["items"]
    assert [item["artifact"]["sha256"] for item in versions] == [good.artifact.sha256]  # version 1, the good one
    assert served.status_code == 200 and served.content == b"a real model" * 50
    assert len(found) == len(events)
    for expected, reason in zip(events, found, strict=True):
        assert expected.strip() in reason, (expected, reason)
        assert "root:" not in reason
