"""The API's edges without a database: auth, validation, errors, probes, cursors and settings."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy.orm import sessionmaker

from services.registry.adapters.memory import MemoryDatabase
from services.registry.entrypoints.api import ApiDeps, create_app
from services.registry.entrypoints.schemas import (
    InvalidCursor,
    decode_cursor,
    decode_name_cursor,
    encode_cursor,
    encode_name_cursor,
)
from services.registry.settings import RegistrySettings
from shared.artifacts import ArtifactStore

PROMOTE = {"action": "promote", "version": 1, "reason": "manual"}


def make_client(tmp_path: Path, token: str | None, checks: dict[str, Callable[[], bool]] | None = None) -> TestClient:
    deps = ApiDeps(
        read_sessions=sessionmaker(),  # never reached by these requests
        uow_factory=MemoryDatabase().uow,
        artifacts=ArtifactStore(str(tmp_path)),
        readiness=checks or {},
    )
    settings = RegistrySettings(api_token=SecretStr(token) if token else None)
    return TestClient(create_app(settings, deps))


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with make_client(tmp_path, "s3cret") as test_client:
        yield test_client


def test_writes_without_a_token_are_401_and_with_a_wrong_one_403(client: TestClient) -> None:
    missing = client.post("/api/v1/models/digits/deployment", json=PROMOTE)
    assert missing.status_code == 401 and missing.json() == {"error": "a bearer token is required"}
    basic = client.post("/api/v1/models/digits/deployment", json=PROMOTE, headers={"Authorization": "Basic eDp5"})
    assert basic.status_code == 401
    wrong = client.post("/api/v1/models/digits/deployment", json=PROMOTE, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 403 and wrong.json() == {"error": "invalid token"}
    latin1 = {"Authorization": "Bearer \xe9".encode("latin-1")}
    assert client.post("/api/v1/models/digits/deployment", json=PROMOTE, headers=latin1).status_code == 403


def test_writes_are_refused_until_a_token_is_configured(tmp_path: Path) -> None:
    with make_client(tmp_path, None) as closed:
        refused = closed.post("/api/v1/models/digits/deployment", json=PROMOTE, headers={"Authorization": "Bearer x"})
    assert refused.status_code == 403 and "set FERRY_API_TOKEN" in refused.json()["error"]


def test_invalid_bodies_are_422_with_error_and_detail(client: TestClient) -> None:
    headers = {"Authorization": "Bearer s3cret"}
    bodies = [
        {"action": "promote", "reason": "no version"},
        {"action": "promote", "version": 1, "canary_weight": 1.5, "reason": "too much"},
        {"action": "set_canary_weight", "canary_weight": 0.2, "reason": ""},
        {"action": "rollback", "reason": "nul \x00 inside"},
        {"action": "explode", "reason": "unknown action"},
        {"action": "rollback", "reason": "ok", "extra": 1},
    ]
    for body in bodies:
        response = client.post("/api/v1/models/digits/deployment", json=body, headers=headers)
        assert response.status_code == 422, body
        assert response.json()["error"].startswith("invalid request") and response.json()["detail"], body
    bad_user = client.post("/api/v1/models/digits/deployment", json=PROMOTE,
                           headers={**headers, "X-Ferry-User": "not a name!"})  # fmt: skip
    assert bad_user.status_code == 422


def test_unknown_routes_and_methods_answer_json(client: TestClient) -> None:
    assert client.get("/nowhere").json() == {"error": "Not Found"}
    assert client.delete("/api/v1/models/digits/deployment").status_code == 405


def test_probes(tmp_path: Path) -> None:
    def broken() -> bool:
        raise ConnectionError("down")

    with make_client(tmp_path, None, {"database": lambda: True, "broker": broken}) as degraded:
        assert degraded.get("/healthz").json() == {"status": "ok"}
        not_ready = degraded.get("/readyz")
        assert not_ready.status_code == 503 and not_ready.json()["checks"] == {"database": True, "broker": False}
    with make_client(tmp_path, None, {"database": lambda: True}) as healthy:
        assert healthy.get("/readyz").status_code == 200
        assert healthy.get("/metrics").status_code == 200


def test_the_openapi_document_describes_every_route_and_the_bearer_scheme(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/api/v1/models", "/api/v1/models/{name}/versions/{version}/lineage", "/healthz"} <= set(spec["paths"])
    assert spec["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    post = spec["paths"]["/api/v1/models/{name}/deployment"]["post"]
    assert {"401", "403", "404", "409", "422"} <= set(post["responses"])
    assert client.get("/docs").status_code == 200


def test_cursors_round_trip_and_refuse_forgeries() -> None:
    assert decode_cursor(encode_cursor(42)) == 42
    assert decode_name_cursor(encode_name_cursor("digits.v2")) == "digits.v2"
    for forged in ("", "!!", "cDEyMzQ1Njc4OTAxMjM0", encode_name_cursor("x"), "bjxzY3JpcHQ+"):
        with pytest.raises(InvalidCursor):
            decode_cursor(forged)
    with pytest.raises(InvalidCursor):
        decode_name_cursor(encode_cursor(3))


def test_the_token_comes_from_ferry_api_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_API_TOKEN", "from-env")
    monkeypatch.setenv("FERRY_REGISTRY_PORT", "9999")
    settings = RegistrySettings()
    assert settings.token == "from-env" and settings.port == 9999
    monkeypatch.setenv("FERRY_API_TOKEN", "")
    assert RegistrySettings().token is None
