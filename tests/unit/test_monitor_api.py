"""The monitor's HTTP API with fakes, the webhooks in, its settings, and the generated files."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from monitor_fakes import Clock, FakeReferences, FakeScraper, exposition, make_monitor

from services.monitor.adapters.registry import reference_of
from services.monitor.adapters.rules_file import read_rules
from services.monitor.entrypoints.api import ApiDeps, create_app
from services.monitor.provisioning.export import ExportOptions, generated_files, stale_files
from services.monitor.settings import MonitorSettings, default_targets, parse_targets
from shared.events import AlertChanged, Event
from shared.kafka import ListPublisher
from shared.services import installed_services

ROOT = Path(__file__).resolve().parents[2]

GRAFANA_PAYLOAD = {
    "receiver": "ferry-monitor",
    "status": "firing",
    "orgId": 1,
    "groupKey": "{}:{}",
    "version": "1",
    "title": "[FIRING:1] GatewayErrorRatio",
    "state": "alerting",
    "message": "…",
    "truncatedAlerts": 0,
    "groupLabels": {"alertname": "GatewayErrorRatio"},
    "commonLabels": {},
    "commonAnnotations": {},
    "externalURL": "http://grafana:3000/",
    "alerts": [
        {
            "status": "firing",
            "labels": {
                "alertname": "GatewayErrorRatio",
                "grafana_folder": "Ferry",
                "model": "digits",
                "version": "4",
                "severity": "critical",
                "action": "rollback",
            },
            "annotations": {"summary": "errors", "threshold": "0.05"},
            "startsAt": "2026-01-02T03:04:05Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "values": {"A": 0.31, "B": 0.3, "C": 1},
            "valueString": "[ var='B' value=0.3 ]",
            "generatorURL": "http://grafana/alerting/grafana/x/view",
            "fingerprint": "3f1c2a",
            "silenceURL": "",
            "dashboardURL": "",
            "panelURL": "",
        }
    ],
}


class FailingPublisher(ListPublisher):
    def publish_batch(self, items: Sequence[tuple[Event, str | None]]) -> list[Exception | None]:
        return [ConnectionError("broker away") for _ in items]


def client_for(publisher: ListPublisher | None = None) -> tuple[TestClient, object, ListPublisher]:
    scraper = FakeScraper({"gateway": exposition(0, 0, {}), "registry": None})
    published = publisher or ListPublisher()
    monitor, _ = make_monitor(scraper, Clock(), FakeReferences(), ListPublisher())
    monitor.tick()
    return TestClient(create_app(ApiDeps(monitor, published.publish_batch))), monitor, published


def test_alerts_rules_targets_and_health() -> None:
    client, _, _ = client_for()
    assert client.get("/healthz").json() == {"status": "ok"}
    [pending] = client.get("/api/v1/alerts").json()["active"]
    assert (pending["rule"], pending["state"], pending["labels"]["job"]) == ("TargetDown", "pending", "registry")
    rules = {rule["name"]: rule for rule in client.get("/api/v1/rules").json()["rules"]}
    assert rules["TargetDown"]["promql"].endswith("< 1") and rules["TargetDown"]["active"] == 1
    assert rules["TargetDown"]["for"] == "10s" and rules["GatewayErrorRatio"]["action"] == "rollback"
    targets = {t["job"]: t for t in client.get("/api/v1/targets").json()["targets"]}
    assert targets["gateway"]["up"] is True and targets["registry"]["up"] is False
    assert targets["registry"]["last_error"] == "ConnectError: refused"
    metrics = client.get("/metrics")
    assert metrics.status_code == 200 and "# TYPE" in metrics.text


def test_a_grafana_alert_is_republished_as_an_alert_event() -> None:
    client, _, published = client_for()
    answer = client.post("/api/v1/grafana-webhook", json=GRAFANA_PAYLOAD)
    assert answer.status_code == 200 and answer.json() == {"published": 1}
    [event] = published.of_type(AlertChanged)
    assert (event.rule, event.state, event.model_name, event.version) == ("GatewayErrorRatio", "fired", "digits", 4)
    assert (event.action, event.severity, event.value, event.threshold) == ("rollback", "critical", 0.3, 0.05)
    assert event.labels == {"model": "digits", "version": "4"} and event.since.year == 2026
    client.post("/api/v1/grafana-webhook", json=GRAFANA_PAYLOAD)  # Grafana retried: the same event id
    assert published.event_ids[0] == published.event_ids[1]


def test_an_alertmanager_resolution_is_republished_with_its_value_annotation() -> None:
    client, _, published = client_for()
    payload = {
        "version": "4",
        "status": "resolved",
        "receiver": "ferry-monitor",
        "alerts": [
            {
                "status": "resolved",
                "labels": {"alertname": "TargetDown", "job": "gateway", "severity": "critical"},
                "annotations": {"value": "0", "threshold": "1"},
                "startsAt": "2026-01-02T03:04:05Z",
            }
        ],
    }
    assert client.post("/api/v1/alertmanager-webhook", json=payload).status_code == 200
    [event] = published.of_type(AlertChanged)
    assert (event.state, event.model_name, event.version, event.action) == ("resolved", "ferry", None, "notify")
    assert event.labels == {"job": "gateway"}


@pytest.mark.parametrize(
    "body", [{}, {"alerts": "many"}, {"alerts": [{"status": "burning"}]}, {"alerts": [{"labels": []}]}]
)
def test_a_malformed_webhook_gets_422_with_an_error(body: dict) -> None:
    client, _, published = client_for()
    answer = client.post("/api/v1/grafana-webhook", json=body)
    assert answer.status_code == 422 and answer.json()["error"].startswith("invalid request")
    assert published.events == []


def test_a_broker_that_refuses_gets_503_so_grafana_retries() -> None:
    client, _, _ = client_for(FailingPublisher())
    answer = client.post("/api/v1/grafana-webhook", json=GRAFANA_PAYLOAD)
    assert answer.status_code == 503 and "broker away" in answer.json()["error"]


def test_unknown_routes_answer_json_errors() -> None:
    client, _, _ = client_for()
    answer = client.get("/api/v1/nope")
    assert answer.status_code == 404 and "error" in answer.json()


# --- settings -------------------------------------------------------------------------------------


def test_targets_default_to_the_installed_services_and_follow_their_port_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("FERRY_REGISTRY_PORT", "18081")
    jobs = {target.job: target.url for target in default_targets()}
    assert set(jobs) == {spec.name for spec in installed_services()} >= {"registry", "trainer", "monitor"}
    assert jobs["registry"] == "http://127.0.0.1:18081/metrics"
    assert MonitorSettings().resolved_targets == default_targets()


def test_targets_from_settings() -> None:
    targets = parse_targets("gateway=http://127.0.0.1:1, fake=http://127.0.0.1:2/custom")
    assert [(t.job, t.url, t.instance) for t in targets] == [
        ("gateway", "http://127.0.0.1:1/metrics", "127.0.0.1:1"),
        ("fake", "http://127.0.0.1:2/custom", "127.0.0.1:2"),
    ]
    for bad in ("gateway", "gateway=ftp://x", "a=http://x:1,a=http://x:2"):
        with pytest.raises(ValueError):
            parse_targets(bad)


def test_the_reference_is_the_newest_evaluations_prediction_distribution() -> None:
    evaluations = [
        {"report": {"candidate": {"accuracy": 0.9}}},  # newest, but without a distribution
        {"report": {"candidate": {"prediction_distribution": {"0": 3, "1": 1, "2": "x", "3": -1}}}},
        {"report": {"candidate": {"prediction_distribution": {"0": 1.0}}}},
    ]
    assert reference_of(evaluation["report"] for evaluation in evaluations) == {"0": 0.75, "1": 0.25}
    assert reference_of([]) is None and reference_of([{"candidate": "x"}]) is None


# --- generated files ------------------------------------------------------------------------------


def test_the_committed_grafana_and_prometheus_files_are_what_the_rules_generate() -> None:
    """Regenerating changes nothing: run `ferry monitor export-grafana` after editing the rules."""
    files = generated_files(read_rules(ROOT / "deploy" / "alerts" / "rules.yaml"), ExportOptions())
    assert stale_files(files, ROOT / "deploy") == []
    assert any(name.startswith("grafana/") for name in files) and any(name.startswith("prometheus/") for name in files)
