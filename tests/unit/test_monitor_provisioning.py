"""The generated Grafana files hold together: every query names the provisioned datasource, every alert
rule's condition exists and its query is the rule's PromQL, the dashboard's panels are laid out."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from services.monitor.adapters.rules_file import read_rules
from services.monitor.provisioning.grafana import DATASOURCE_UID, evaluation_interval
from services.monitor.provisioning.promql import condition, metric_names, value_expression

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = read_rules(DEPLOY / "alerts" / "rules.yaml")


def load(relative: str) -> dict:
    text = (DEPLOY / relative).read_text()
    return json.loads(text) if relative.endswith(".json") else yaml.safe_load(text)


def test_the_datasource_and_the_dashboard_provider() -> None:
    [source] = load("grafana/provisioning/datasources/ferry.yaml")["datasources"]
    assert (source["uid"], source["type"], source["url"]) == (DATASOURCE_UID, "prometheus", "http://127.0.0.1:9090")
    [provider] = load("grafana/provisioning/dashboards/ferry.yaml")["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].endswith("deploy/grafana/dashboards")


def test_grafana_alert_rules_are_the_rules_files() -> None:
    [group] = load("grafana/provisioning/alerting/ferry-rules.yaml")["groups"]
    interval = int(group["interval"].rstrip("s"))
    by_title = {rule["title"]: rule for rule in group["rules"]}
    assert set(by_title) == {rule.name for rule in RULES.rules}
    assert len({rule["uid"] for rule in group["rules"]}) == len(RULES.rules)
    for rule in RULES.rules:
        provisioned = by_title[rule.name]
        refs = {step["refId"]: step for step in provisioned["data"]}
        assert provisioned["condition"] in refs
        assert refs["A"]["datasourceUid"] == DATASOURCE_UID
        assert refs["A"]["model"]["expr"] == value_expression(rule)
        [threshold] = refs["C"]["model"]["conditions"]
        assert threshold["evaluator"] == {"type": "gt" if rule.op == ">" else "lt", "params": [rule.threshold]}
        assert provisioned["labels"] == {"severity": rule.severity, "action": rule.action}
        assert rule.for_s % interval == 0  # Grafana's pending period is a whole number of evaluations
    assert evaluation_interval(RULES) == group["interval"]


def test_the_contact_point_is_the_monitors_grafana_webhook() -> None:
    document = load("grafana/provisioning/alerting/ferry-contact-points.yaml")
    [point] = document["contactPoints"]
    [receiver] = point["receivers"]
    assert receiver["type"] == "webhook"
    assert receiver["settings"]["url"] == "http://127.0.0.1:8082/api/v1/grafana-webhook"
    [policy] = document["policies"]
    assert policy["receiver"] == point["name"]


def test_the_dashboard_covers_what_the_issue_asks_and_is_laid_out() -> None:
    board = load("grafana/dashboards/ferry.json")
    panels = board["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    cells = [(p["gridPos"]["x"], p["gridPos"]["y"]) for p in panels]
    assert len(set(cells)) == len(cells)
    titles = " ".join(panel["title"].lower() for panel in panels)
    for topic in ("requests", "latency", "error", "batch", "canary", "drift", "consumer lag", "training runs"):
        assert topic in titles
    for panel in panels:
        assert panel["datasource"]["uid"] == DATASOURCE_UID and panel["targets"]
    names = {name for p in panels for t in p["targets"] for name in metric_names(t["expr"])}
    assert {"ferry_gateway_batch_size_bucket", "ferry_kafka_consumer_lag", "ferry_training_runs_total"} <= names


def test_the_prometheus_rule_file_alerts_on_each_rules_condition() -> None:
    [group] = load("prometheus/ferry.rules.yml")["groups"]
    by_name = {rule["alert"]: rule for rule in group["rules"]}
    for rule in RULES.rules:
        assert by_name[rule.name]["expr"] == condition(rule)
        assert by_name[rule.name]["labels"]["action"] == rule.action
    config = load("prometheus/prometheus.yml")
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    assert jobs["gateway"] == ["127.0.0.1:8080"] and jobs["monitor"] == ["127.0.0.1:8082"]
    receiver = load("prometheus/alertmanager.yml")["receivers"][0]["webhook_configs"][0]
    assert receiver["url"] == "http://127.0.0.1:8082/api/v1/alertmanager-webhook" and receiver["send_resolved"]


def test_alertmanager_and_grafana_send_the_webhook_credential_without_holding_the_secret() -> None:
    receiver = load("prometheus/alertmanager.yml")["receivers"][0]["webhook_configs"][0]
    # Alertmanager reads the token from a file (relative to alertmanager.yml: the one `make up` writes).
    assert receiver["http_config"] == {
        "authorization": {"type": "Bearer", "credentials_file": "../../.ferry/secrets/alertmanager-webhook-token"}
    }
    [contact] = load("grafana/provisioning/alerting/ferry-contact-points.yaml")["contactPoints"][0]["receivers"]
    # Grafana fills the token in from its environment when it reads the provisioning.
    assert contact["settings"]["authorization_scheme"] == "Bearer"
    assert contact["settings"]["authorization_credentials"] == "${FERRY_GRAFANA_WEBHOOK_TOKEN}"
