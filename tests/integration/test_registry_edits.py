"""Descriptions, tags, archiving, the audit, the name filter, aliases and HEAD: over HTTP and through the
one client, on the real database."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from test_registry_support import API_TOKEN, trained_event

from services.registry.bootstrap import Registry
from services.registry.entrypoints.api import create_app
from services.registry.handlers import handle_model_trained
from shared.artifacts import sha256_of
from shared.envelope import EventMeta
from shared.events import ModelTrained, new_id, utc_now
from shared.registry_client import RegistryClient, RetryBudget
from shared.registry_errors import RegistryConflict, RegistryNotFound, RegistryUnauthorized
from shared.registry_models import MAX_TAG_KEY, MAX_TAGS

pytestmark = pytest.mark.integration
pytest_plugins = ["test_registry_support"]
ALICE = secrets.token_urlsafe(20)
AUTH = {"Authorization": f"Bearer {ALICE}"}
ADMIN = {"Authorization": f"Bearer {API_TOKEN}"}


def register(registry: Registry, model: str, content: bytes) -> ModelTrained:
    event = trained_event(model, store=registry.artifacts, content=content)
    meta = EventMeta(event_id=new_id(), source="tests", time=utc_now(), traceparent=None, type_name=event.type_name)
    handle_model_trained(event, meta, uow=registry.uow(), artifacts=registry.artifacts)
    return event


@pytest.fixture
def stored(registry: Registry) -> list[ModelTrained]:
    """Three versions of ``digits``, their artifacts in the store."""
    return [register(registry, "digits", f"model-{n}".encode() * 100) for n in range(3)]


@pytest.fixture
def http(registry: Registry) -> Iterator[TestClient]:
    """The registry's app with two writers: admin (FERRY_API_TOKEN) and alice."""
    deps = registry.api_deps()
    deps.tokens = {**deps.tokens, ALICE: "alice"}
    with TestClient(create_app(registry.settings, deps)) as test_client:
        yield test_client


def promote(http: TestClient, version: int, **extra: Any) -> None:
    body = {"action": "promote", "version": version, "reason": "test", **extra}
    assert http.post("/api/v1/models/digits/deployment", json=body, headers=ADMIN).status_code == 200


def test_edits_need_a_token_and_change_nothing_without_one(http: TestClient, stored: list[ModelTrained]) -> None:
    edit = {"description": "digits, 8x8", "tags": {"team": "vision"}}
    for path in ("/api/v1/models/digits", "/api/v1/models/digits/versions/1"):
        assert http.patch(path, json=edit).status_code == 401
        assert http.patch(path, json=edit, headers={"Authorization": "Bearer nope"}).status_code == 403
    assert http.post("/api/v1/models/digits/versions/1/archive").status_code == 401
    model = http.get("/api/v1/models/digits").json()
    assert model["description"] == "" and model["tags"] == {}
    version = http.get("/api/v1/models/digits/versions/1").json()
    assert version["description"] == "" and "team" not in version["tags"] and version["status"] == "registered"
    assert http.get("/api/v1/models/digits/audit").json() == {"items": [], "next_cursor": None}


def test_edits_merge_tags_and_are_audited_with_the_actor(http: TestClient, stored: list[ModelTrained]) -> None:
    first = http.patch(
        "/api/v1/models/digits",
        json={"description": "digits, 8x8", "tags": {"team": "vision", "tier": "1"}},
        headers=AUTH,
    )
    assert first.status_code == 200 and first.json()["description"] == "digits, 8x8"
    merged = http.patch("/api/v1/models/digits", json={"tags": {"tier": None, "owner": "alice"}}, headers=AUTH).json()
    assert merged["tags"] == {"team": "vision", "owner": "alice"} and merged["description"] == "digits, 8x8"
    version = http.patch(
        "/api/v1/models/digits/versions/2", json={"description": "wider", "tags": {"note": "try"}}, headers=AUTH
    ).json()
    assert version["description"] == "wider" and version["tags"] == {"arch": "mlp", "note": "try"}
    assert http.get("/api/v1/models/digits/versions/2").json()["description"] == "wider"
    unchanged = http.patch("/api/v1/models/digits", json={"tags": {"team": "vision"}}, headers=AUTH)
    assert unchanged.status_code == 200  # and nothing to audit
    audit = http.get("/api/v1/models/digits/audit", params={"limit": 2}).json()
    newest, middle = audit["items"]
    assert newest["version"] == 2 and newest["action"] == "edit" and newest["actor"] == "user:alice"
    assert newest["changes"] == {"description": {"from": "", "to": "wider"}, "tags.note": {"from": None, "to": "try"}}
    assert middle["version"] is None and middle["changes"] == {
        "tags.tier": {"from": "1", "to": None},
        "tags.owner": {"from": None, "to": "alice"},
    }
    last = http.get("/api/v1/models/digits/audit", params={"limit": 2, "cursor": audit["next_cursor"]}).json()
    assert [entry["changes"]["description"]["to"] for entry in last["items"]] == ["digits, 8x8"]
    assert last["next_cursor"] is None
    # the deployment history is the deployment's alone: an edit is no revision
    assert http.get("/api/v1/models/digits/deployment/history").json()["items"] == []


def test_invalid_edits_are_422_naming_the_field(http: TestClient, stored: list[ModelTrained]) -> None:
    cases = {
        "tags": {"tags": {"k" * (MAX_TAG_KEY + 1): "v"}},
        "description": {"description": "x" * 10_001},
        "bogus": {"bogus": 1},
        "status": {"status": "champion"},
    }
    for field, body in cases.items():
        path = "/api/v1/models/digits/versions/1"
        response = http.patch(path, json=body, headers=AUTH)
        assert response.status_code == 422, field
        assert field in response.json()["error"] and response.json()["detail"], field
    number = http.patch("/api/v1/models/digits", json={"tags": {"n": 1}}, headers=AUTH)
    assert number.status_code == 422 and "tags" in number.json()["error"]
    many = {f"k{n}": "v" for n in range(MAX_TAGS)}
    assert http.patch("/api/v1/models/digits", json={"tags": many}, headers=AUTH).status_code == 200
    over = http.patch("/api/v1/models/digits", json={"tags": {"one-more": "v"}}, headers=AUTH)
    assert over.status_code == 422 and over.json()["detail"][0]["loc"] == ["body", "tags"]
    assert len(http.get("/api/v1/models/digits").json()["tags"]) == MAX_TAGS


def test_a_deployed_version_is_never_archived(http: TestClient, stored: list[ModelTrained]) -> None:
    promote(http, 1)
    promote(http, 2)  # 1 is archived by the promotion, 2 is champion
    promote(http, 3, canary_weight=0.1)
    for version, role in ((2, "champion"), (3, "challenger")):
        refused = http.post(f"/api/v1/models/digits/versions/{version}/archive", headers=AUTH)
        assert refused.status_code == 409 and f"is the {role}" in refused.json()["error"]
        patched = http.patch(f"/api/v1/models/digits/versions/{version}", json={"status": "archived"}, headers=AUTH)
        assert patched.status_code == 409
        assert http.get(f"/api/v1/models/digits/versions/{version}").json()["status"] == role
    http.post(
        "/api/v1/models/digits/deployment", json={"action": "rollback", "version": 3, "reason": "t"}, headers=ADMIN
    )
    archived = http.post("/api/v1/models/digits/versions/3/archive", json={"reason": "worse"}, headers=AUTH)
    assert archived.status_code == 200 and archived.json()["status"] == "archived"
    assert http.post("/api/v1/models/digits/versions/3/archive", headers=AUTH).status_code == 200  # already
    audit = http.get("/api/v1/models/digits/audit").json()["items"]
    assert len(audit) == 1 and audit[0]["action"] == "archive" and audit[0]["reason"] == "worse"
    assert audit[0]["changes"] == {"status": {"from": "rolled_back", "to": "archived"}}
    assert http.delete("/api/v1/models/digits/versions/3", headers=AUTH).status_code == 405  # never deleted


def test_models_filtered_by_name_prefix_page_by_cursor(registry: Registry, http: TestClient) -> None:
    for name in ("digits", "digits_x", "digitsAx", "digits_y", "wine"):
        register(registry, name, name.encode() * 10)
    first = http.get("/api/v1/models", params={"name": "digits_", "limit": 1}).json()
    assert [model["name"] for model in first["items"]] == ["digits_x"]  # "_" is no wildcard
    second = http.get("/api/v1/models", params={"name": "digits_", "limit": 1, "cursor": first["next_cursor"]}).json()
    assert [model["name"] for model in second["items"]] == ["digits_y"] and second["next_cursor"] is None
    every = http.get("/api/v1/models", params={"name": "digits"}).json()["items"]
    assert [model["name"] for model in every] == ["digits", "digitsAx", "digits_x", "digits_y"]
    assert http.get("/api/v1/models", params={"name": "zzz"}).json() == {"items": [], "next_cursor": None}
    for bad in ("a\x00", "a b", "x" * 129):
        refused = http.get("/api/v1/models", params={"name": bad})
        assert refused.status_code == 422 and "name" in refused.json()["error"], bad


def test_versions_and_artifacts_by_alias(http: TestClient, stored: list[ModelTrained]) -> None:
    missing = http.get("/api/v1/models/digits/aliases/champion")
    assert missing.status_code == 404 and "champion" in missing.json()["error"]
    assert "latest" in http.get("/api/v1/models/digits/aliases/latest").json()["error"]
    assert http.get("/api/v1/models/nope/aliases/champion").status_code == 404
    promote(http, 2)
    promote(http, 3, canary_weight=0.2)
    assert http.get("/api/v1/models/digits/aliases/champion").json()["version"] == 2
    assert http.get("/api/v1/models/digits/aliases/challenger").json()["version"] == 3
    artifact = http.get("/api/v1/models/digits/aliases/champion/artifact")
    assert artifact.status_code == 200 and artifact.content == b"model-1" * 100
    assert artifact.headers["x-ferry-sha256"] == stored[1].artifact.sha256 == sha256_of(artifact.content)
    assert artifact.headers["x-ferry-version"] == "2"
    Path(stored[2].artifact.uri).write_bytes(b"model-X" * 100)  # verified like the version's route
    assert http.get("/api/v1/models/digits/aliases/challenger/artifact").status_code == 500


def test_head_on_artifact_routes_sends_the_headers_only(http: TestClient, stored: list[ModelTrained]) -> None:
    promote(http, 1)
    for path in ("/api/v1/models/digits/versions/1/artifact", "/api/v1/models/digits/aliases/champion/artifact"):
        head = http.head(path)
        assert head.status_code == 200 and head.content == b"", path
        assert head.headers["content-length"] == "700" and head.headers["content-type"] == "application/octet-stream"
        assert head.headers["x-ferry-sha256"] == stored[0].artifact.sha256
    assert http.head("/api/v1/models/digits/versions/9/artifact").status_code == 404
    assert http.head("/api/v1/models/digits/aliases/challenger/artifact").status_code == 404
    Path(stored[1].artifact.uri).unlink()
    assert http.head("/api/v1/models/digits/versions/2/artifact").status_code == 404


def test_the_client_edits_archives_and_reads_by_alias(http: TestClient, stored: list[ModelTrained]) -> None:
    budget = RetryBudget(attempts=2, total_s=10.0)
    reader = RegistryClient(http, budget=budget, sleep=lambda seconds: None)
    writer = RegistryClient(http, token=ALICE, budget=budget, sleep=lambda seconds: None)
    with pytest.raises(RegistryUnauthorized):
        reader.edit_model("digits", description="nope")
    model = writer.edit_model("digits", description="8x8", tags={"team": "vision"})
    assert model.description == "8x8" and model.tags == {"team": "vision"}
    assert writer.edit_model("digits", tags={"team": None}).tags == {}
    version = writer.edit_version("digits", 1, description="first", tags={"note": "baseline"})
    assert version.description == "first" and version.tags["note"] == "baseline"
    with pytest.raises(ValidationError):  # the client checks the body before it is sent
        writer.edit_version("digits", 1, tags={"": "empty key"})
    promote(http, 2)
    with pytest.raises(RegistryConflict, match="champion"):
        writer.archive_version("digits", 2, reason="no")
    assert writer.archive_version("digits", 1, reason="old").status == "archived"
    assert writer.edit_version("digits", 3, archive=True).status == "archived"
    assert [entry.actor for entry in reader.audit("digits", page_size=1)] == ["user:alice"] * 5
    assert reader.alias("digits", "champion").version == 2
    with pytest.raises(RegistryNotFound, match="challenger"):
        reader.alias("digits", "challenger")
    found, content = reader.artifact_by_alias("digits", "champion")
    assert found.version == 2 and content == b"model-1" * 100
    head = reader.artifact_head("digits", 2)
    assert head.sha256 == stored[1].artifact.sha256 and head.size_bytes == 700
    assert [model.name for model in reader.models(name_prefix="dig")] == ["digits"]
    assert list(reader.models(name_prefix="wine")) == []
