"""Alertmanager-compatible webhooks out: the JSON that Alertmanager's ``webhook_config`` receivers get."""

from __future__ import annotations

import hashlib
import json

import httpx

from services.monitor.domain.lifecycle import Alert, Transition, timestamp

ZERO_TIME = "0001-01-01T00:00:00Z"


def _iso(seconds: float | None) -> str:
    if seconds is None:
        return ZERO_TIME
    return timestamp(seconds).isoformat().replace("+00:00", "Z")


def alert_labels(alert: Alert) -> dict[str, str]:
    """The labels an Alertmanager receiver sees: alertname, the group's labels, severity and action."""
    return {"alertname": alert.rule, **alert.label_map, "severity": alert.severity, "action": alert.action}


def fingerprint(labels: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(labels, sort_keys=True).encode()).hexdigest()[:16]


def alertmanager_payload(transition: Transition, *, external_url: str) -> dict:
    """Alertmanager's webhook payload (version 4) for one alert that fired or resolved."""
    alert = transition.alert
    labels = alert_labels(alert)
    status = "firing" if transition.state == "fired" else "resolved"
    annotations = {"summary": alert.summary, "value": f"{alert.value:.6g}", "threshold": f"{alert.threshold:g}"}
    return {
        "version": "4",
        "groupKey": f'{{}}:{{alertname="{alert.rule}"}}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "ferry-monitor",
        "groupLabels": {"alertname": alert.rule},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": external_url,
        "alerts": [
            {
                "status": status,
                "labels": labels,
                "annotations": annotations,
                "startsAt": _iso(alert.active_at),
                "endsAt": _iso(alert.resolved_at),
                "generatorURL": f"{external_url}/api/v1/alerts",
                "fingerprint": fingerprint(labels),
            }
        ],
    }


class WebhookSink:
    """POSTs each transition to one URL; any answer but 2xx is a failure to retry."""

    def __init__(self, url: str, *, external_url: str, timeout_s: float = 5.0, client: httpx.Client | None = None):
        self.url = url
        self.name = f"webhook:{url}"
        self._external_url = external_url
        self._client = client or httpx.Client(timeout=timeout_s)

    def deliver(self, transition: Transition) -> None:
        response = self._client.post(self.url, json=alertmanager_payload(transition, external_url=self._external_url))
        if not response.is_success:
            raise ConnectionError(f"{self.url} answered HTTP {response.status_code}")

    def close(self) -> None:
        self._client.close()
