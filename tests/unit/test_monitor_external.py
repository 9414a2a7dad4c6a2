"""The external engine: the monitor's own alerts stay home, and each Alertmanager episode goes out once."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from monitor_fakes import Clock, FakeReferences, FakeScraper

from services.monitor.bootstrap import MonitorService, bootstrap
from services.monitor.domain.episodes import RecentIds
from services.monitor.entrypoints.api import create_app
from services.monitor.settings import MonitorSettings
from shared.events import AlertChanged, Event
from shared.kafka import ListPublisher

TOKEN = "Hm3uV6sQ1dRf8jXa5nWk"
AS_ALERTMANAGER = {"Authorization": f"Bearer {TOKEN}"}
FIRING = {
    "version": "4",
    "status": "firing",
    "receiver": "ferry-monitor",
    "alerts": [
        {
            "status": "firing",
            "labels": {"alertname": "GatewayErrorRatio", "model": "digits", "version": "4", "action": "rollback"},
            "annotations": {"value": "0.5", "threshold": "0.05"},
            "startsAt": "2026-01-02T03:04:05Z",
            "fingerprint": "a1b2c3d4e5f60718",
        }
    ],
}


class FlakyPublisher(ListPublisher):
    """Refuses the first ``failures`` batches, as a broker that is away for a while."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def publish_batch(self, items: Sequence[tuple[Event, str | None]]) -> list[Exception | None]:
        if self.failures > 0:
            self.failures -= 1
            return [ConnectionError("broker away") for _ in items]
        return super().publish_batch(items)


def service_for(tmp_path: Path, engine: str, publisher: ListPublisher, clock: Clock) -> MonitorService:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alertmanager {TOKEN}\n")
    settings = MonitorSettings(
        engine=engine,  # type: ignore[arg-type]
        targets="registry=http://127.0.0.1:9/metrics",
        webhook_tokens_file=tokens,
        webhook_dedup_ids=100,
    )
    scraper = FakeScraper({"registry": None})  # down: TargetDown pends, then fires
    return bootstrap(settings, publisher=publisher, scraper=scraper, references=FakeReferences(), clock=clock)


@pytest.mark.parametrize(("engine", "published"), [("builtin", ["TargetDown"]), ("external", [])])
def test_only_the_builtin_engine_publishes_the_monitors_own_alerts(
    tmp_path: Path, engine: str, published: list[str]
) -> None:
    clock, publisher = Clock(), ListPublisher()
    service = service_for(tmp_path, engine, publisher, clock)
    service.monitor.tick()
    clock.now += 600
    service.monitor.tick()
    service.dispatcher.deliver_due()
    # Both evaluate (the API shows it); only the builtin engine's alert goes out.
    assert [(a.rule, a.state) for a in service.monitor.active_alerts()] == [("TargetDown", "firing")]
    assert [event.rule for event in publisher.of_type(AlertChanged)] == published
    client = TestClient(_app(service))
    assert client.get("/api/v1/alerts").json()["engine"] == engine


def _app(service: MonitorService) -> FastAPI:
    return create_app(service.api_deps())


def test_an_episode_resent_by_alertmanager_is_published_once(tmp_path: Path) -> None:
    publisher = ListPublisher()
    client = TestClient(_app(service_for(tmp_path, "external", publisher, Clock())))
    post = lambda body: client.post("/api/v1/alertmanager-webhook", json=body, headers=AS_ALERTMANAGER)  # noqa: E731
    assert post(FIRING).json() == {"published": 1, "duplicates": 0}
    assert post(FIRING).json() == {"published": 0, "duplicates": 1}  # repeat_interval, or the HA peer's copy
    grown = copy.deepcopy(FIRING)  # the group changed: a second alert joins, the first is sent again
    grown["alerts"].append({**FIRING["alerts"][0], "fingerprint": "ffff", "labels": {"alertname": "X"}})
    assert post(grown).json() == {"published": 1, "duplicates": 1}
    resolved = copy.deepcopy(FIRING)
    resolved["alerts"][0]["status"] = "resolved"
    assert post(resolved).json() == {"published": 1, "duplicates": 0}  # the end of the episode is news
    again = copy.deepcopy(FIRING)
    again["alerts"][0]["startsAt"] = "2026-01-02T04:00:00Z"
    assert post(again).json() == {"published": 1, "duplicates": 0}  # a new episode of the same alert
    events = publisher.of_type(AlertChanged)
    assert [(e.rule, e.state) for e in events] == [
        ("GatewayErrorRatio", "fired"),
        ("X", "fired"),
        ("GatewayErrorRatio", "resolved"),
        ("GatewayErrorRatio", "fired"),
    ]
    assert len(set(publisher.event_ids)) == 4


def test_a_webhook_refused_by_the_broker_is_published_when_retried(tmp_path: Path) -> None:
    publisher = FlakyPublisher(failures=1)
    client = TestClient(_app(service_for(tmp_path, "external", publisher, Clock())))
    first = client.post("/api/v1/alertmanager-webhook", json=FIRING, headers=AS_ALERTMANAGER)
    assert first.status_code == 503 and publisher.events == []
    retry = client.post("/api/v1/alertmanager-webhook", json=FIRING, headers=AS_ALERTMANAGER)
    assert retry.json() == {"published": 1, "duplicates": 0} and len(publisher.events) == 1


def test_recent_ids_claim_once_release_and_forget_the_oldest() -> None:
    ids = RecentIds(limit=2)
    assert ids.claim(["a", "a", "b"]) == [True, False, True]
    ids.release(["a"])
    assert ids.claim(["a", "b"]) == [True, False]
    assert ids.claim(["c"]) == [True] and len(ids) == 2
    assert ids.claim(["b"]) == [True]  # the oldest, b, was forgotten past the limit
