"""The REST API on the real database: reads, pagination, artifacts, errors, auth and writes."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from test_registry_support import API_TOKEN, TopicReader, trained_event

from services.registry.adapters import views
from services.registry.adapters.orm import OutboxMessage
from services.registry.bootstrap import Registry
from services.registry.entrypoints.api import create_app
from services.registry.entrypoints.schemas import version_fields
from services.registry.handlers import handle_model_decided, handle_model_trained
from shared.envelope import EventMeta
from shared.events import DeploymentChanged, ModelDecided, ModelTrained, new_id, utc_now
from shared.registry_models import VersionOut

pytestmark = pytest.mark.integration
pytest_plugins = ["test_registry_support"]
AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
ALICE, BOB = secrets.token_urlsafe(20), secrets.token_urlsafe(20)


def meta(event: ModelTrained | ModelDecided) -> EventMeta:
    return EventMeta(event_id=new_id(), source="tests", time=utc_now(), traceparent=None, type_name=event.type_name)


@pytest.fixture
def stored(registry: Registry) -> list[ModelTrained]:
    """Three versions of ``digits`` whose artifacts exist in the store."""
    events = [trained_event(store=registry.artifacts, content=f"model-{n}".encode() * 100) for n in range(3)]
    for event in events:
        handle_model_trained(event, meta(event), uow=registry.uow(), artifacts=registry.artifacts)
    return events


@pytest.fixture
def client(registry: Registry) -> Iterator[TestClient]:
    """The API with three writers: admin (FERRY_API_TOKEN), alice and bob (a tokens file)."""
    deps = registry.api_deps()
    deps.tokens = {**deps.tokens, ALICE: "alice", BOB: "bob"}
    with TestClient(create_app(registry.settings, deps)) as test_client:
        yield test_client


def test_models_and_versions_newest_first_with_cursor_pages(client: TestClient, stored: list[ModelTrained]) -> None:
    models = client.get("/api/v1/models").json()
    assert [model["name"] for model in models["items"]] == ["digits"] and models["next_cursor"] is None
    assert client.get("/api/v1/models/digits").json()["latest_version"] == 3
    first = client.get("/api/v1/models/digits/versions", params={"limit": 2}).json()
    assert [item["version"] for item in first["items"]] == [3, 2]
    second = client.get("/api/v1/models/digits/versions", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    assert [item["version"] for item in second["items"]] == [1] and second["next_cursor"] is None
    one = client.get("/api/v1/models/digits/versions/2").json()
    assert one["artifact"]["sha256"] == stored[1].artifact.sha256 and one["status"] == "registered"
    assert one["training_request_id"] == stored[1].request_id and one["signature"]["inputs"][0]["shape"] == [-1, 64]
    none = client.get("/api/v1/models/digits/versions", params={"status": "champion"}).json()
    assert none == {"items": [], "next_cursor": None}


def test_client_mistakes_are_json_4xx(client: TestClient, stored: list[ModelTrained]) -> None:
    cases = {
        "/api/v1/models/nope": 404,
        "/api/v1/models/digits/versions/99": 404,
        "/api/v1/nowhere": 404,
        "/api/v1/models/digits/versions?limit=0": 422,
        "/api/v1/models/digits/versions?limit=201": 422,
        "/api/v1/models/digits/versions?status=bogus": 422,
        "/api/v1/models/digits/versions?cursor=!!": 422,
        "/api/v1/models/digits/versions/0": 422,
        f"/api/v1/models/digits/versions/{2**40}": 422,
        "/api/v1/models/bad%20name": 422,
        "/api/v1/models?cursor=x": 422,
    }
    for path, status in cases.items():
        response = client.get(path)
        assert response.status_code == status, path
        assert isinstance(response.json()["error"], str), path
        if status == 422:
            assert "detail" in response.json(), path
    missing = client.get("/api/v1/models/digits/versions/7")
    assert missing.json()["error"] == "model 'digits' has no version 7"


def test_artifacts_stream_with_their_digest(client: TestClient, stored: list[ModelTrained], tmp_path: Path) -> None:
    response = client.get("/api/v1/models/digits/versions/1/artifact")
    assert response.status_code == 200 and response.content == b"model-0" * 100
    sha256 = stored[0].artifact.sha256
    assert response.headers["etag"] == f'"{sha256}"' and response.headers["x-ferry-sha256"] == sha256
    assert response.headers["content-length"] == "700"
    again = client.get("/api/v1/models/digits/versions/1/artifact", headers={"If-None-Match": f'"{sha256}"'})
    assert again.status_code == 304 and again.content == b""
    Path(stored[2].artifact.uri).unlink()
    missing = client.get("/api/v1/models/digits/versions/3/artifact")
    assert missing.status_code == 404 and "missing from the store" in missing.json()["error"]


def test_an_artifact_tampered_after_registration_is_a_5xx_before_any_byte(
    client: TestClient, stored: list[ModelTrained], caplog: pytest.LogCaptureFixture
) -> None:
    Path(stored[1].artifact.uri).write_bytes(b"model-X" * 100)  # same size, other bytes
    with caplog.at_level(logging.ERROR):
        tampered = client.get("/api/v1/models/digits/versions/2/artifact")
    assert tampered.status_code == 500
    assert tampered.json() == {"error": "the artifact of digits v2 failed its integrity check"}
    assert b"model-X" not in tampered.content  # not a byte of the bad copy went out
    assert any("integrity failure" in record.message and record.levelname == "ERROR" for record in caplog.records)
    Path(stored[1].artifact.uri).write_bytes(b"model-1" * 99)  # truncated
    assert client.get("/api/v1/models/digits/versions/2/artifact").status_code == 500
    assert client.get("/api/v1/models/digits/versions/1/artifact").status_code == 200  # the others still serve


def test_writes_need_the_token(client: TestClient, registry: Registry, stored: list[ModelTrained]) -> None:
    body = {"action": "promote", "version": 1, "reason": "manual"}
    missing = client.post("/api/v1/models/digits/deployment", json=body)
    assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
    wrong = client.post("/api/v1/models/digits/deployment", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and wrong.json()["error"] == "invalid token"
    unconfigured = registry.api_deps()
    unconfigured.tokens = {}
    with TestClient(create_app(registry.settings, unconfigured)) as closed:
        refused = closed.post("/api/v1/models/digits/deployment", json=body, headers=AUTH)
    assert refused.status_code == 403 and "FERRY_REGISTRY_TOKENS_FILE" in refused.json()["error"]
    assert client.get("/api/v1/models/digits/deployment").json()["revision"] == 0


def test_promote_canary_and_rollback_through_the_api(
    client: TestClient,
    registry: Registry,
    stored: list[ModelTrained],
    topic_reader: Callable[[str], TopicReader],
) -> None:
    def post(body: dict[str, object], token: str = API_TOKEN, **headers: str) -> Any:
        return client.post(
            "/api/v1/models/digits/deployment", json=body, headers={"Authorization": f"Bearer {token}", **headers}
        )

    assert post({"action": "rollback", "reason": "nothing to roll back"}).status_code == 409
    assert post({"action": "promote", "version": 1, "reason": "first"}, ALICE).json()["champion"] == 1
    canary = post({"action": "promote", "version": 2, "canary_weight": 0.1, "reason": "try v2"}, ALICE).json()
    assert (canary["challenger"], canary["canary_weight"], canary["changed"]) == (2, 0.1, True)
    assert post({"action": "set_canary_weight", "canary_weight": 0.4, "reason": "more"}).json()["revision"] == 3
    assert post({"action": "promote", "version": 2, "stage": "champion", "reason": "v2 wins"}).json()["champion"] == 2
    rolled = post({"action": "rollback", "reason": "v2 hurts"}, BOB, **{"X-Ferry-User": "mallory"}).json()
    assert (rolled["champion"], rolled["challenger"], rolled["revision"]) == (1, None, 5)
    history = client.get("/api/v1/models/digits/deployment/history").json()["items"]
    assert [(entry["revision"], entry["action"], entry["actor"]) for entry in history] == [
        (5, "rollback", "user:bob"),
        (4, "promote", "user:admin"),
        (3, "set_canary_weight", "user:admin"),
        (2, "promote", "user:alice"),
        (1, "promote", "user:alice"),
    ]  # X-Ferry-User counts for nothing
    assert client.get("/api/v1/models/digits/versions/2").json()["status"] == "rolled_back"
    assert registry.relay.relay_once() == 3 + 5  # three model.registered, five deployment.changed
    changes = topic_reader("deployment.changed").read(5)
    assert [item.event.revision for item in changes] == [1, 2, 3, 4, 5]  # type: ignore[attr-defined]
    assert isinstance(changes[-1].event, DeploymentChanged) and changes[-1].event.actor == "user:bob"
    with registry.session_factory() as session:
        assert all(row.sent_at for row in session.scalars(select(OutboxMessage)))


def test_a_rejected_version_is_promoted_over_http_only_with_force(
    client: TestClient, registry: Registry, stored: list[ModelTrained]
) -> None:
    rejection = ModelDecided(model_name="digits", version=2, decision="reject", reason="worse than nothing")
    handle_model_decided(rejection, meta(rejection), uow=registry.uow())
    body = {"action": "promote", "version": 2, "stage": "champion", "reason": "the evaluator's test set was stale"}
    refused = client.post("/api/v1/models/digits/deployment", json=body, headers={"Authorization": f"Bearer {ALICE}"})
    assert refused.status_code == 409 and "was rejected; promoting it needs force" in refused.json()["error"]
    no_reason = {"action": "promote", "version": 2, "force": True}
    assert client.post("/api/v1/models/digits/deployment", json=no_reason, headers=AUTH).status_code == 422
    forced = client.post(
        "/api/v1/models/digits/deployment", json={**body, "force": True}, headers={"Authorization": f"Bearer {ALICE}"}
    )
    assert forced.status_code == 200 and forced.json()["champion"] == 2
    [entry] = client.get("/api/v1/models/digits/deployment/history").json()["items"]
    assert (entry["forced"], entry["actor"], entry["reason"]) == (True, "user:alice", body["reason"])
    assert client.get("/api/v1/models/digits/versions/2").json()["status"] == "champion"


def test_a_trace_crosses_http_into_the_deployment_changed_event(
    client: TestClient, registry: Registry, stored: list[ModelTrained], topic_reader: Callable[[str], TopicReader]
) -> None:
    trace_id = secrets.token_hex(16)
    headers = {**AUTH, "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
    body = {"action": "promote", "version": 1, "reason": "traced"}
    assert client.post("/api/v1/models/digits/deployment", json=body, headers=headers).status_code == 200
    registry.relay.relay_once()
    [change] = topic_reader("deployment.changed").read(1)
    assert change.meta.traceparent is not None and change.meta.traceparent.split("-")[1] == trace_id


def test_evaluations_and_lineage(client: TestClient, registry: Registry, stored: list[ModelTrained]) -> None:
    report = {
        "candidate": {"accuracy": 0.98, "prediction_distribution": {"0": 0.25, "1": 0.75}},
        "baseline": None,
        "test": {"name": "mcnemar", "p_value": 0.01},
        "policy": {"min_gain": 0.0},
    }
    decision = ModelDecided(
        model_name="digits",
        version=1,
        decision="promote",
        stage="champion",
        reason="better",
        metrics={"accuracy": 0.98},
        baseline_metrics={},
        report=report,
    )
    handle_model_decided(decision, meta(decision), uow=registry.uow())
    evaluations = client.get("/api/v1/models/digits/versions/1/evaluations").json()
    assert [(row["decision"], row["metrics"]) for row in evaluations] == [("promote", {"accuracy": 0.98})]
    assert evaluations[0]["report"] == report  # the evaluator's whole report, as it sent it
    lineage = client.get("/api/v1/models/digits/versions/1/lineage").json()
    assert lineage["training"]["request_id"] == stored[0].request_id
    assert lineage["artifact"]["sha256"] == stored[0].artifact.sha256
    assert lineage["evaluations"][0]["reason"] == "better"
    assert [(entry["revision"], entry["to_champion"]) for entry in lineage["deployments"]] == [(1, 1)]
    assert client.get("/api/v1/models/digits/versions/2/lineage").json()["deployments"] == []


def test_health_readiness_and_metrics(client: TestClient, registry: Registry) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"database": True, "broker": True}
    deps = registry.api_deps()
    deps.readiness = {"database": lambda: True, "broker": lambda: False}
    with TestClient(create_app(registry.settings, deps)) as degraded:
        not_ready = degraded.get("/readyz")
    assert not_ready.status_code == 503 and "broker" in not_ready.json()["error"]
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and metrics.headers["content-type"].startswith("text/plain")


def test_the_documents_postgresql_builds_match_the_orm_mapping(registry: Registry, stored: list[ModelTrained]) -> None:
    with registry.read_session_factory() as session:
        from_orm = [
            VersionOut.model_validate(version_fields("digits", views.get_version(session, "digits", number)))
            for number in (3, 2, 1)
        ]
        page = views.version_documents(session, "digits", status=None, before=None, limit=10)
        one = views.version_document(session, "digits", 2)
    assert [VersionOut.model_validate_json(document) for _, document in page] == from_orm
    assert VersionOut.model_validate_json(one) == from_orm[1]
    assert [number for number, _ in page] == [3, 2, 1]
