"""Grafana provisioning from the rules: the Prometheus datasource, the dashboard provider, and
Grafana-managed alert rules (their PromQL is the rules' value expressions) whose contact point is
the monitor's ``/api/v1/grafana-webhook``."""

from __future__ import annotations

import math
from typing import Any

from services.monitor.domain.rules import BaseRule, RuleSet
from services.monitor.provisioning.prometheus import alert_labels
from services.monitor.provisioning.promql import number, value_expression

DATASOURCE_UID = "ferry-prometheus"
FOLDER = "Ferry"
CONTACT_POINT = "ferry-monitor"


def datasource(prometheus_url: str, *, scrape_interval: str = "5s") -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "datasources": [
            {
                "name": "Prometheus",
                "uid": DATASOURCE_UID,
                "type": "prometheus",
                "access": "proxy",
                "url": prometheus_url,
                "isDefault": True,
                "editable": False,
                "jsonData": {"timeInterval": scrape_interval, "httpMethod": "POST"},
            }
        ],
    }


def dashboard_provider(path: str) -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "providers": [
            {
                "name": "ferry",
                "orgId": 1,
                "folder": FOLDER,
                "type": "file",
                "disableDeletion": False,
                "allowUiUpdates": False,
                "options": {"path": path, "foldersFromFilesStructure": False},
            }
        ],
    }


def _query(rule: BaseRule) -> dict[str, Any]:
    lookback = int(max(rule.window_s, 60) * 2)
    return {
        "refId": "A",
        "relativeTimeRange": {"from": lookback, "to": 0},
        "datasourceUid": DATASOURCE_UID,
        "model": {
            "refId": "A",
            "expr": value_expression(rule),
            "instant": True,
            "range": False,
            "intervalMs": 1000,
            "maxDataPoints": 43200,
        },
    }


def _expression(ref: str, model: dict[str, Any]) -> dict[str, Any]:
    return {"refId": ref, "datasourceUid": "__expr__", "model": {"refId": ref, **model}}


def alert_rule(rule: BaseRule) -> dict[str, Any]:
    """One Grafana-managed rule: A queries the value, B keeps each series' last value, C is the threshold."""
    evaluator = {"type": "gt" if rule.op == ">" else "lt", "params": [rule.threshold]}
    entry: dict[str, Any] = {
        "uid": f"ferry-{rule.name.lower()}"[:40],
        "title": rule.name,
        "condition": "C",
        "data": [
            _query(rule),
            _expression("B", {"type": "reduce", "expression": "A", "reducer": "last", "settings": {"mode": "dropNN"}}),
            _expression("C", {"type": "threshold", "expression": "B", "conditions": [{"evaluator": evaluator}]}),
        ],
        "noDataState": "OK",
        "execErrState": "Error",
        "for": rule.for_,
        "labels": alert_labels(rule),
        "annotations": {"summary": rule.summary, "threshold": number(rule.threshold)},
        "isPaused": False,
    }
    return entry


def alert_rules(rules: RuleSet, *, interval: str = "1m") -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "groups": [
            {
                "orgId": 1,
                "name": "ferry",
                "folder": FOLDER,
                "interval": interval,
                "rules": [alert_rule(rule) for rule in rules.rules],
            }
        ],
    }


def contact_points(monitor_url: str, *, token_variable: str) -> dict[str, Any]:
    """The monitor as a webhook contact point, and the policy that routes every Ferry alert to it.

    The contact point sends ``Authorization: Bearer <token>``; Grafana fills the token in from the
    environment variable ``token_variable`` when it reads the provisioning, so no secret is in the file.
    """
    return {
        "apiVersion": 1,
        "contactPoints": [
            {
                "orgId": 1,
                "name": CONTACT_POINT,
                "receivers": [
                    {
                        "uid": "ferry-monitor-webhook",
                        "type": "webhook",
                        "settings": {
                            "url": f"{monitor_url.rstrip('/')}/api/v1/grafana-webhook",
                            "httpMethod": "POST",
                            "authorization_scheme": "Bearer",
                            "authorization_credentials": f"${{{token_variable}}}",
                        },
                        "disableResolveMessage": False,
                    }
                ],
            }
        ],
        "policies": [
            {
                "orgId": 1,
                "receiver": CONTACT_POINT,
                "group_by": ["grafana_folder", "alertname", "model", "version"],
                "group_wait": "10s",
                "group_interval": "1m",
                "repeat_interval": "4h",
            }
        ],
    }


def evaluation_interval(rules: RuleSet) -> str:
    """Grafana evaluates a group at one interval, and each rule's pending period is a multiple of it:
    the greatest common divisor of the non-zero ``for`` durations, 10 s at least, 1 m at most."""
    periods = [int(rule.for_s) for rule in rules.rules if rule.for_s > 0]
    seconds = math.gcd(*periods) if periods else 60
    return f"{max(10, min(60, seconds))}s"
