"""The monitor's HTTP API with fakes, the webhooks in, its settings, and the generated files."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from monitor_fakes import Clock, FakeReferences, FakeScraper, exposition, make_monitor

from services.monitor.adapters.registry import reference_of
from services.monitor.adapters.rules_file import read_rules
from services.monitor.bootstrap import bootstrap
from services.monitor.entrypoints.api import ApiDeps, create_app
from services.monitor.entrypoints.incoming import MAX_LABEL_NAME, MAX_LABEL_VALUE, MAX_LABELS, IncomingAlert, to_event
from services.monitor.provisioning.export import ExportOptions, generated_files, stale_files
from services.monitor.settings import MonitorSettings, default_targets, parse_targets
from shared.credentials import InvalidTokens
from shared.envelope import encode
from shared.events import AlertChanged, Event
from shared.kafka import ListPublisher
from shared.ops_tools import show_alerts
from shared.services import installed_services

ROOT = Path(__file__).resolve().parents[2]
GRAFANA_TOKEN = "q8Zr2vLx7KpN4wTe9bYc"
ALERTMANAGER_TOKEN = "Hm3uV6sQ1dRf8jXa5nWk"
WEBHOOK_TOKENS = {GRAFANA_TOKEN: "grafana", ALERTMANAGER_TOKEN: "alertmanager"}
AS_GRAFANA = {"Authorization": f"Bearer {GRAFANA_TOKEN}"}
AS_ALERTMANAGER = {"Authorization": f"Bearer {ALERTMANAGER_TOKEN}"}

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


class EncodingPublisher(ListPublisher):
    """Encodes each event as the Kafka publisher does, so what the broker's edge refuses fails here too."""

    def publish(self, event: Event, *, event_id: str | None = None) -> None:
        encode(event, source="test", event_id=event_id)
        super().publish(event, event_id=event_id)


def client_for(
    publisher: ListPublisher | None = None, *, tokens: dict[str, str] = WEBHOOK_TOKENS, max_bytes: int = 1 << 20
) -> tuple[TestClient, object, ListPublisher]:
    scraper = FakeScraper({"gateway": exposition(0, 0, {}), "registry": None})
    published = publisher or EncodingPublisher()
    monitor, _ = make_monitor(scraper, Clock(), FakeReferences(), ListPublisher())
    monitor.tick()
    deps = ApiDeps(monitor, published.publish_batch, webhook_tokens=tokens, webhook_max_bytes=max_bytes)
    return TestClient(create_app(deps)), monitor, published


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


def test_ferry_alerts_shows_the_monitors_alerts(capsys: pytest.CaptureFixture[str]) -> None:
    client, _, _ = client_for()
    assert show_alerts("http://monitor", as_json=False, http=client) == 0
    table = capsys.readouterr().out
    assert "pending" in table and "TargetDown" in table and "job=registry" in table
    assert show_alerts("http://monitor", as_json=True, http=client) == 0
    assert [alert["rule"] for alert in json.loads(capsys.readouterr().out)] == ["TargetDown"]
    assert show_alerts("http://127.0.0.1:9", as_json=False) == 4  # nothing there
    assert "the monitor at http://127.0.0.1:9 is unreachable" in capsys.readouterr().err


def test_a_grafana_alert_is_republished_as_an_alert_event() -> None:
    client, _, published = client_for()
    answer = client.post("/api/v1/grafana-webhook", json=GRAFANA_PAYLOAD, headers=AS_GRAFANA)
    assert answer.status_code == 200 and answer.json() == {"published": 1, "duplicates": 0}
    [event] = published.of_type(AlertChanged)
    assert (event.rule, event.state, event.model_name, event.version) == ("GatewayErrorRatio", "fired", "digits", 4)
    assert (event.action, event.severity, event.value, event.threshold) == ("rollback", "critical", 0.3, 0.05)
    assert event.labels == {"model": "digits", "version": "4"} and event.since.year == 2026
    again = client.post("/api/v1/grafana-webhook", json=GRAFANA_PAYLOAD, headers=AS_GRAFANA)  # retried
    assert again.json() == {"published": 0, "duplicates": 1} and len(published.events) == 1


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
    assert client.post("/api/v1/alertmanager-webhook", json=payload, headers=AS_ALERTMANAGER).status_code == 200
    [event] = published.of_type(AlertChanged)
    assert (event.state, event.model_name, event.version, event.action) == ("resolved", "ferry", None, "notify")
    assert event.labels == {"job": "gateway"}


@pytest.mark.parametrize(
    "body", [{}, {"alerts": "many"}, {"alerts": [{"status": "burning"}]}, {"alerts": [{"labels": []}]}]
)
def test_a_malformed_webhook_gets_422_with_an_error(body: dict) -> None:
    client, _, published = client_for()
    answer = client.post("/api/v1/grafana-webhook", json=body, headers=AS_GRAFANA)
    assert answer.status_code == 422 and answer.json()["error"].startswith("invalid request")
    assert published.events == []


def test_a_broker_that_refuses_gets_503_so_grafana_retries() -> None:
    client, _, _ = client_for(FailingPublisher())
    answer = client.post("/api/v1/grafana-webhook", json=GRAFANA_PAYLOAD, headers=AS_GRAFANA)
    assert answer.status_code == 503 and "broker away" in answer.json()["error"]


def test_unknown_routes_answer_json_errors() -> None:
    client, _, _ = client_for()
    answer = client.get("/api/v1/nope")
    assert answer.status_code == 404 and "error" in answer.json()


# --- credentials ----------------------------------------------------------------------------------

ROLLBACK = {
    "alerts": [{"status": "firing", "labels": {"alertname": "X", "model": "m", "version": "2", "action": "rollback"}}]
}


def basic(user: str, password: str) -> httpx.BasicAuth:
    return httpx.BasicAuth(user, password)


@pytest.mark.parametrize("path", ["/api/v1/grafana-webhook", "/api/v1/alertmanager-webhook"])
@pytest.mark.parametrize(
    ("headers", "auth"),
    [
        ({}, None),
        ({"Authorization": "Bearer q8Zr2vLx7KpN4wTe9bYd"}, None),  # one character off
        ({"Authorization": f"Bearer {GRAFANA_TOKEN}x"}, None),
        ({"Authorization": "Bearer"}, None),
        ({"Authorization": f"Token {GRAFANA_TOKEN}"}, None),
        ({}, basic("grafana", "wrong-password-9f3k2")),
        ({}, basic("alertmanager", GRAFANA_TOKEN)),  # a real token, but another user's
        ({}, basic("", GRAFANA_TOKEN)),
        ({"Authorization": "Basic !!!not-base64"}, None),
        ({"Authorization": "Basic Z3JhZmFuYQ=="}, None),  # "grafana", no colon
    ],
)
def test_a_forged_webhook_gets_401_with_a_challenge_and_publishes_nothing(
    path: str, headers: dict[str, str], auth: httpx.BasicAuth | None
) -> None:
    client, _, published = client_for()
    answer = client.post(path, json=ROLLBACK, headers=headers, auth=auth)
    assert answer.status_code == 401 and "error" in answer.json()
    assert answer.headers["www-authenticate"].startswith(("Bearer", "Basic"))
    assert published.events == []


def test_the_credential_is_checked_before_the_payload() -> None:
    client, _, published = client_for()
    answer = client.post("/api/v1/alertmanager-webhook", json={"alerts": "not a list"})
    assert answer.status_code == 401 and published.events == []


def test_a_bearer_token_or_basic_auth_with_the_users_token_lets_the_alert_in() -> None:
    client, _, published = client_for()
    assert client.post("/api/v1/alertmanager-webhook", json=ROLLBACK, headers=AS_ALERTMANAGER).status_code == 200
    answer = client.post("/api/v1/grafana-webhook", json=ROLLBACK, auth=basic("grafana", GRAFANA_TOKEN))
    assert answer.status_code == 200 and answer.json() == {"published": 1, "duplicates": 0}
    assert [(event.action, event.model_name, event.version) for event in published.events] == [("rollback", "m", 2)] * 2


def test_without_a_tokens_file_the_webhooks_are_refused() -> None:
    client, _, published = client_for(tokens={})
    answer = client.post("/api/v1/alertmanager-webhook", json=ROLLBACK, headers=AS_ALERTMANAGER)
    assert answer.status_code == 403 and "FERRY_MONITOR_WEBHOOK_TOKENS_FILE" in answer.json()["error"]
    assert published.events == []


def test_the_openapi_document_names_both_schemes() -> None:
    client, _, _ = client_for()
    schemes = client.get("/openapi.json").json()["components"]["securitySchemes"]
    assert {scheme["scheme"] for scheme in schemes.values()} == {"bearer", "basic"}


# --- bad input ------------------------------------------------------------------------------------


def alert_with(**changes: Any) -> dict[str, Any]:
    payload = copy.deepcopy(ROLLBACK)
    payload["alerts"][0].update(changes)
    return payload


@pytest.mark.parametrize(
    ("body", "named"),
    [
        (alert_with(labels={"alertname": "X", "model": "m\x00"}), "alerts.0.labels.model"),
        (alert_with(labels={"alertname": "X\x00"}), "alerts.0.labels.alertname"),
        (alert_with(labels={"bad\x00name": "x"}), "alerts.0.labels"),
        (alert_with(labels={"job": "two\nlines"}), "alerts.0.labels.job"),
        (alert_with(annotations={"summary": "nul \x00 here"}), "alerts.0.annotations.summary"),
        (alert_with(labels={"job": "x" * (MAX_LABEL_VALUE + 1)}), "alerts.0.labels.job"),
        (alert_with(labels={f"l{n}": "x" for n in range(MAX_LABELS + 1)}), "alerts.0.labels"),
        (alert_with(labels={"job": 3}), "alerts.0.labels.job"),
        (alert_with(startsAt="yesterday"), "alerts.0.startsAt"),
        (alert_with(values={"A": "high"}), "alerts.0.values.A"),
        ({"receiver": "x"}, "body.alerts"),
        ({"alerts": {"status": "firing"}}, "body.alerts"),
        ([], "body"),
    ],
)
def test_bad_input_gets_422_naming_the_field_never_503(body: Any, named: str) -> None:
    client, _, published = client_for()
    answer = client.post("/api/v1/alertmanager-webhook", json=body, headers=AS_ALERTMANAGER)
    assert answer.status_code == 422 and named in answer.json()["error"], answer.text
    assert published.events == []


def test_a_body_that_is_not_json_gets_422() -> None:
    client, _, published = client_for()
    answer = client.post(
        "/api/v1/alertmanager-webhook",
        content=b"{nope",
        headers={**AS_ALERTMANAGER, "Content-Type": "application/json"},
    )
    assert answer.status_code == 422 and published.events == []


def test_an_oversize_body_gets_413_whether_its_length_is_declared_or_streamed() -> None:
    client, _, published = client_for(max_bytes=4096)
    big = alert_with(annotations={"summary": "x" * 5000})
    assert client.post("/api/v1/alertmanager-webhook", json=big, headers=AS_ALERTMANAGER).status_code == 413

    def chunks() -> Iterator[bytes]:
        yield b'{"alerts": [], "receiver": "'
        yield b"x" * 5000
        yield b'"}'

    headers = {**AS_ALERTMANAGER, "Content-Type": "application/json"}
    assert client.post("/api/v1/alertmanager-webhook", content=chunks(), headers=headers).status_code == 413
    assert published.events == []


def test_odd_but_valid_labels_are_published_not_refused() -> None:
    client, _, published = client_for()
    body = alert_with(labels={"alertname": "X", "model": "no such/model", "version": "²", "severity": "loud"})
    assert client.post("/api/v1/alertmanager-webhook", json=body, headers=AS_ALERTMANAGER).status_code == 200
    [event] = published.events
    assert (event.model_name, event.version, event.severity) == ("ferry", None, "warning")


def test_the_largest_alert_the_webhook_admits_fits_one_kafka_message() -> None:
    widest = "\U0001f600" * MAX_LABEL_VALUE  # escaped JSON spells each as 12 bytes
    labels = {f"{n:0{MAX_LABEL_NAME}d}"[-MAX_LABEL_NAME:]: widest for n in range(MAX_LABELS)}
    event, event_id = to_event(IncomingAlert(status="firing", labels=labels), origin="grafana")
    assert len(encode(event, source="ferry/monitor", event_id=event_id).value) < 1_000_000


def test_an_incoming_alerts_action_label_says_rollback_retrain_or_else_notify() -> None:
    def action(label: str) -> str:
        labels = {"alertname": "InputDrift", "model": "digits", "version": "2", "action": label}
        return to_event(IncomingAlert(status="firing", labels=labels), origin="alertmanager")[0].action

    assert [action(label) for label in ("rollback", "retrain", "notify", "delete-everything")] == [
        "rollback",
        "retrain",
        "notify",
        "notify",
    ]


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
    for bad in ("gateway", "gateway=ftp://x", "a=http://x:1,b=http://x:1"):  # one job may have several URLs
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


# --- webhook tokens -------------------------------------------------------------------------------


def test_the_webhook_tokens_come_from_the_file(tmp_path: Path) -> None:
    path = tmp_path / "webhook-tokens"
    path.write_text(f"# senders\ngrafana {GRAFANA_TOKEN}\nalertmanager {ALERTMANAGER_TOKEN}\n")
    assert MonitorSettings(webhook_tokens_file=path).webhook_tokens() == WEBHOOK_TOKENS
    assert MonitorSettings().webhook_tokens() == {}


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "names no token"),
        ("alertmanager \n", "expected '<user> <token>'"),
        ("alertmanager changeme\n", "shorter than 16"),
        ("alertmanager ferry-demo-token-0001\n", "placeholder"),
        ("alertmanager secret-token-1234567\n", "placeholder"),
    ],
)
def test_an_empty_or_placeholder_webhook_token_stops_the_bootstrap(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "webhook-tokens"
    path.write_text(text)
    settings = MonitorSettings(webhook_tokens_file=path)
    with pytest.raises(InvalidTokens, match=problem) as caught:
        bootstrap(settings, publisher=ListPublisher(), scraper=FakeScraper(), references=FakeReferences())
    assert "FERRY_MONITOR_WEBHOOK_TOKENS_FILE" in str(caught.value) or str(path) in str(caught.value)
    for token in text.split()[1:]:
        assert token not in str(caught.value)


def test_the_monitor_process_refuses_to_start_with_a_placeholder_token(tmp_path: Path) -> None:
    path = tmp_path / "webhook-tokens"
    path.write_text("alertmanager changemechangeme\n")
    env = {"FERRY_MONITOR_WEBHOOK_TOKENS_FILE": str(path), "FERRY_HOME": str(tmp_path), "PATH": "/usr/bin:/bin"}
    env |= {key: value for key, value in os.environ.items() if key == "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-m", "services.monitor"], cwd=ROOT, env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 2, done.stderr.decode()[-2000:]
    assert b"placeholder" in done.stdout + done.stderr and b"changemechangeme" not in done.stdout + done.stderr
