"""``GET /api/v1/requests/{id}`` on the monitor: the trace as JSON, 404 when not logged, 422 for a bad id or
window, 503 when the topics cannot be read."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.testclient import TestClient
from monitor_fakes import Clock, FakeReferences, FakeScraper, exposition, make_monitor

from services.monitor.entrypoints.api import ApiDeps, create_app
from shared.events import FeedbackItem, InferenceLogged
from shared.kafka import ListPublisher
from shared.request_trace import GivenFeedback, RequestTrace

AT = datetime(2026, 12, 5, 4, 0, tzinfo=UTC)
TRACE = RequestTrace(
    InferenceLogged(
        model_name="digits", request_id="r-1", version=3, route="canary", revision=9, inputs=[], outputs=[], at=AT
    ),
    [GivenFeedback(FeedbackItem(request_id="r-1", label=2), "labeller", AT)],
)


def client(find: object) -> TestClient:
    monitor, _ = make_monitor(
        FakeScraper({"gateway": exposition(0, 0, {})}), Clock(), FakeReferences(), ListPublisher()
    )
    return TestClient(create_app(ApiDeps(monitor, ListPublisher().publish_batch, find_request=find)))  # type: ignore[arg-type]


def test_a_logged_request_answers_its_version_route_revision_and_feedback() -> None:
    asked: list[tuple[str, float]] = []

    def find(request_id: str, since_s: float) -> RequestTrace | None:
        asked.append((request_id, since_s))
        return TRACE if request_id == "r-1" else None

    api = client(find)
    body = api.get("/api/v1/requests/r-1", params={"since_s": 7200}).json()
    assert (body["model"], body["version"], body["route"], body["revision"]) == ("digits", 3, "canary", 9)
    assert body["feedback"] == [{"label": 2, "value": None, "actor": "labeller", "at": AT.isoformat()}]
    assert asked == [("r-1", 7200)]
    missing = api.get("/api/v1/requests/r-2")
    assert missing.status_code == 404 and "not logged" in missing.json()["error"]
    assert api.get("/api/v1/requests/has%20space").status_code == 422
    assert api.get("/api/v1/requests/r-1", params={"since_s": -1}).status_code == 422


def test_a_broker_that_does_not_answer_is_a_503() -> None:
    def find(request_id: str, since_s: float) -> RequestTrace | None:
        raise TimeoutError("the topic was not read in time")

    answer = client(find).get("/api/v1/requests/r-1")
    assert answer.status_code == 503 and "TimeoutError" in answer.json()["error"]
