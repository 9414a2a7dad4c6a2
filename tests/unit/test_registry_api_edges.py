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
from services.registry.settings import InvalidApiTokens, RegistrySettings
from shared.artifacts import ArtifactStore

PROMOTE = {"action": "promote", "version": 1, "reason": "manual"}
TOKEN = "kq3V9xT2mZr8LpW4cY7n"


def make_client(tmp_path: Path, token: str | None, checks: dict[str, Callable[[], bool]] | None = None) -> TestClient:
    settings = RegistrySettings(api_token=SecretStr(token) if token else None)
    deps = ApiDeps(
        read_sessions=sessionmaker(),  # never reached by these requests
        uow_factory=MemoryDatabase().uow,
        artifacts=ArtifactStore(str(tmp_path)),
        readiness=checks or {},
        tokens=settings.api_tokens(),
    )
    return TestClient(create_app(settings, deps))


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    with make_client(tmp_path, TOKEN) as test_client:
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
    assert refused.status_code == 403 and "set FERRY_REGISTRY_TOKENS_FILE or FERRY_API_TOKEN" in refused.json()["error"]


def test_invalid_bodies_are_422_with_error_and_detail(client: TestClient) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
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


def test_ferry_api_token_is_one_token_for_user_admin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_API_TOKEN", TOKEN)
    monkeypatch.setenv("FERRY_REGISTRY_PORT", "9999")
    settings = RegistrySettings()
    assert settings.api_tokens() == {TOKEN: "admin"} and settings.port == 9999
    monkeypatch.delenv("FERRY_API_TOKEN")
    assert RegistrySettings().api_tokens() == {}  # no token at all: the registry runs, writes are refused


def write_tokens(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "api-tokens"
    path.write_text(text)
    return path


def test_a_tokens_file_names_each_tokens_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    alice, operator = "Alice-4f9c2b7e1d8a6035", "op_Zx81kQm3Vt5Rw7Yp2Ls"
    path = write_tokens(tmp_path, f"# who may write\n\noperator {operator}\n  alice {alice}  \n")
    monkeypatch.setenv("FERRY_REGISTRY_TOKENS_FILE", str(path))
    monkeypatch.setenv("FERRY_API_TOKEN", TOKEN)
    assert RegistrySettings().api_tokens() == {operator: "operator", alice: "alice", TOKEN: "admin"}
    monkeypatch.setenv("FERRY_API_TOKEN", operator)  # as `make up` sets both: the file's user stays
    assert RegistrySettings().api_tokens() == {operator: "operator", alice: "alice"}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "names no token"),
        ("# only a comment\n", "names no token"),
        ("operator\n", "expected '<user> <token>'"),
        ("operator one two\n", "expected '<user> <token>'"),
        ("oper ator!x kq3V9xT2mZr8LpW4cY7n\n", "expected '<user> <token>'"),
        ("bad!user kq3V9xT2mZr8LpW4cY7n\n", "a user name is"),
        ("operator sh0rt\n", "shorter than 16 characters"),
        ("operator ferry-demo-token\n", "well-known placeholder"),
        ("operator changemechangeme\n", "well-known placeholder"),
        ("operator secret-token-1234567\n", "well-known placeholder"),
        ("operator aaaaaaaaaaaaaaaaaaaa\n", "fewer than 6 distinct"),
        (f"alice {TOKEN}\nbob {TOKEN}\n", "same token as user 'alice'"),
    ],
)
def test_unusable_tokens_files_are_refused_without_quoting_a_token(tmp_path: Path, text: str, problem: str) -> None:
    settings = RegistrySettings(tokens_file=write_tokens(tmp_path, text))
    with pytest.raises(InvalidApiTokens, match=problem) as caught:
        settings.api_tokens()
    for token in ("kq3V9xT2mZr8LpW4cY7n", "sh0rt", "ferry-demo-token", "changemechangeme", "secret-token-1234567"):
        assert token not in str(caught.value)


@pytest.mark.parametrize(
    ("token", "problem"),
    [
        ("", "is empty"),
        ("changeme", "shorter"),
        ("ferry-demo-token", "placeholder"),
        ("SECRET_TOKEN_0000", "placeholder"),
    ],
)
def test_an_empty_or_placeholder_ferry_api_token_is_refused(token: str, problem: str) -> None:
    with pytest.raises(InvalidApiTokens, match=f"^FERRY_API_TOKEN .*{problem}"):
        RegistrySettings(api_token=SecretStr(token)).api_tokens()


def test_a_missing_tokens_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidApiTokens, match="cannot be read"):
        RegistrySettings(tokens_file=tmp_path / "nowhere").api_tokens()
