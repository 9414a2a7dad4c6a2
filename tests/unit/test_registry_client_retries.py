"""The registry client's one policy, over a mock transport: what is retried, how long it waits, what is raised.

Sleeps are recorded, never slept; the real registry is the integration test's (test_registry_client.py there).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

from shared.artifacts import DigestMismatch, SizeMismatch
from shared.events import ArtifactRef
from shared.registry_client import RegistryClient, RetryBudget
from shared.registry_errors import (
    InvalidModelName,
    RegistryBadAnswer,
    RegistryConflict,
    RegistryNotFound,
    RegistryRefused,
    RegistryUnauthorized,
    RegistryUnavailable,
    retry_after_s,
)

NOW = "2026-01-01T00:00:00Z"
MODEL = {
    "name": "digits",
    "description": "",
    "tags": {},
    "latest_version": 2,
    "champion": 1,
    "challenger": None,
    "created_at": NOW,
    "updated_at": NOW,
}
CHANGE = {
    "model_name": "digits",
    "champion": 1,
    "challenger": None,
    "canary_weight": 0.0,
    "shadow": False,
    "revision": 1,
    "updated_at": NOW,
    "changed": True,
}
Answer = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """A registry answering from a script, one answer per request, and the sleeps the client asked for."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []
        self.sleeps: list[float] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer

    def client(self, budget: RetryBudget | None = None, token: str | None = None) -> RegistryClient:
        return RegistryClient.connect(
            "http://registry.test",
            transport=httpx.MockTransport(self),
            budget=budget or RetryBudget(attempts=4, total_s=60.0),
            token=token,
            sleep=self.sleeps.append,
        )


def ok(body: Any) -> httpx.Response:
    return httpx.Response(200, json=body)


def error(status: int, message: str = "no", **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"error": message}, headers=headers)


def test_a_503_is_retried_and_the_answer_that_follows_is_returned() -> None:
    registry = Recorder(error(503, "the registry's database is unavailable; retry later"), ok(MODEL))
    model = registry.client().model("digits")
    assert (model.name, model.champion, model.latest_version) == ("digits", 1, 2)
    assert len(registry.requests) == 2 and len(registry.sleeps) == 1
    assert registry.requests[0].url.path == "/api/v1/models/digits"


def test_a_429_is_retried_no_sooner_than_its_retry_after() -> None:
    registry = Recorder(error(429, "slow down", **{"Retry-After": "7"}), ok(MODEL))
    assert registry.client().model("digits").name == "digits"
    assert len(registry.requests) == 2 and registry.sleeps[0] >= 7.0


def test_a_retry_after_beyond_the_budget_ends_the_retries_at_once() -> None:
    registry = Recorder(error(429, "come back in an hour", **{"Retry-After": "3600"}))
    with pytest.raises(RegistryUnavailable, match="429") as raised:
        registry.client(RetryBudget(attempts=5, total_s=30.0)).model("digits")
    assert raised.value.retry_after_s == 3600.0
    assert len(registry.requests) == 1 and registry.sleeps == []


def test_retry_after_reads_seconds_and_http_dates() -> None:
    later = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    assert retry_after_s("5") == 5.0 and retry_after_s(None) is None and retry_after_s("soon") is None
    assert 100 < (retry_after_s(later) or 0) <= 120


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, RegistryRefused), (404, RegistryNotFound), (401, RegistryUnauthorized), (409, RegistryConflict)],
)
def test_a_refusal_is_raised_at_once_typed_with_the_registrys_message(status: int, kind: type) -> None:
    registry = Recorder(error(status, "model 'digits' is not registered"), ok(MODEL))
    with pytest.raises(kind) as raised:
        registry.client().model("digits")
    assert raised.value.status == status and raised.value.message == "model 'digits' is not registered"
    assert len(registry.requests) == 1 and registry.sleeps == []


def test_a_spent_budget_raises_the_transient_error() -> None:
    registry = Recorder(error(503, "database away"))
    with pytest.raises(RegistryUnavailable, match="database away") as raised:
        registry.client(RetryBudget(attempts=3, total_s=60.0)).deployment("digits")
    assert raised.value.status == 503 and len(registry.requests) == 3 and len(registry.sleeps) == 2


def test_a_registry_that_cannot_be_reached_is_retried_then_unavailable() -> None:
    registry = Recorder(httpx.ConnectError("connection refused"))
    with pytest.raises(RegistryUnavailable, match="did not answer GET /models/digits: ConnectError"):
        registry.client(RetryBudget(attempts=2)).model("digits")
    assert len(registry.requests) == 2


def test_giving_up_stops_the_retries() -> None:
    registry = Recorder(error(503))
    with pytest.raises(RegistryUnavailable):
        registry.client(RetryBudget(attempts=None, total_s=600.0, give_up=lambda: True)).model("digits")
    assert len(registry.requests) == 1


def test_a_write_is_sent_again_only_when_the_registry_surely_did_not_apply_it() -> None:
    failed = Recorder(error(500, "internal error"), ok(CHANGE))
    with pytest.raises(RegistryUnavailable):
        failed.client(token="t").rollback("digits", reason="hurts")
    assert len(failed.requests) == 1  # a 500 may have rolled back already: never twice
    busy = Recorder(error(503), ok(CHANGE))
    assert busy.client(token="t").rollback("digits", reason="hurts").changed
    assert len(busy.requests) == 2
    refused = Recorder(httpx.ConnectError("refused"), ok(CHANGE))
    assert refused.client(token="t").rollback("digits", reason="hurts").revision == 1
    assert len(refused.requests) == 2
    timed_out = Recorder(httpx.ReadTimeout("no answer"), ok(CHANGE))
    with pytest.raises(RegistryUnavailable):
        timed_out.client(token="t").rollback("digits", reason="hurts")
    assert len(timed_out.requests) == 1


def test_a_write_carries_the_token_and_the_action_and_nothing_else() -> None:
    registry = Recorder(ok(CHANGE))
    registry.client(token="s3cret").promote("digits", 2, reason="v2 wins", canary_weight=0.1)
    [request] = registry.requests
    assert request.method == "POST" and request.url.path == "/api/v1/models/digits/deployment"
    assert request.headers["authorization"] == "Bearer s3cret"
    sent = json.loads(request.content)
    assert sent == {"action": "promote", "version": 2, "canary_weight": 0.1, "force": False, "reason": "v2 wins"}
    with pytest.raises(ValueError, match="reason"):
        registry.client(token="s3cret").rollback("digits", reason="")  # refused before it is sent
    assert len(registry.requests) == 1


def test_the_pager_follows_next_cursor_to_the_last_page() -> None:
    pages = {None: (["a", "b"], "c1"), "c1": (["c"], "c2"), "c2": ([], None)}

    def answer(request: httpx.Request) -> httpx.Response:
        names, cursor = pages[request.url.params.get("cursor")]
        return ok({"items": [{**MODEL, "name": name} for name in names], "next_cursor": cursor})

    client = RegistryClient.connect("http://registry.test", transport=httpx.MockTransport(answer))
    assert [model.name for model in client.models(page_size=2)] == ["a", "b", "c"]


def test_an_answer_that_is_not_the_documented_body_is_a_bad_answer() -> None:
    with pytest.raises(RegistryBadAnswer, match="/models/digits"):
        Recorder(ok({"hello": "world"})).client().model("digits")
    with pytest.raises(RegistryBadAnswer):
        Recorder(httpx.Response(200, text="<html>")).client().deployment("digits")


def test_a_name_that_no_model_can_have_never_reaches_a_url() -> None:
    registry = Recorder(ok(MODEL))
    for name in ("../etc", "digits cnn", "", "a/b"):
        with pytest.raises(InvalidModelName):
            registry.client().model(name)
    assert registry.requests == []


def _artifact(data: bytes, sha256: str | None = None, size: int | None = None) -> dict[str, Any]:
    return {
        "uri": "/ignored",
        "sha256": sha256 or hashlib.sha256(data).hexdigest(),
        "size_bytes": len(data) if size is None else size,
        "format": "onnx",
    }


def test_an_artifact_is_returned_only_when_its_size_and_digest_match() -> None:
    data = b"onnx bytes" * 100

    def served(body: bytes) -> Recorder:
        return Recorder(httpx.Response(200, content=body))

    good = ArtifactRef.model_validate(_artifact(data))
    assert served(data).client().artifact("digits", 1, expected=good) == data
    with pytest.raises(SizeMismatch):
        served(data + b"more").client().artifact("digits", 1, expected=good)
    with pytest.raises(SizeMismatch):
        served(data[:-1]).client().artifact("digits", 1, expected=good)
    with pytest.raises(DigestMismatch):
        served(data[:-1] + b"X").client().artifact("digits", 1, expected=good)
