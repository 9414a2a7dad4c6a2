"""Alerts raised elsewhere, in: Grafana's webhook contact point and Alertmanager's webhook receiver.

Both send Alertmanager's JSON (Grafana adds ``values``); each alert becomes an ``alert`` event, so
an alert raised in Grafana or Prometheus reaches the evaluator the same way the monitor's own do.
"""

from __future__ import annotations

import math
import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from services.monitor.domain.lifecycle import PLATFORM
from shared.events import MODEL_NAME_PATTERN, AlertChanged, utc_now

# Labels that describe the alert rather than the thing alerted on: kept out of the event's labels.
_META_LABELS = {"alertname", "severity", "action", "grafana_folder"}
_SEVERITIES = {"info", "warning", "critical"}
_ACTIONS: dict[str, Literal["notify", "rollback", "retrain"]] = {"rollback": "rollback", "retrain": "retrain"}
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_VERSION = re.compile(r"[0-9]{1,10}")
# Bounds that keep the largest alert event well under Kafka's 1 MB message (escaped JSON may take 12
# bytes a character): a label is a name, not a document.
MAX_LABELS = 64
MAX_LABEL_NAME = 128
MAX_LABEL_VALUE = 1024
MAX_ANNOTATIONS = 64
MAX_ANNOTATION = 16_384


def _no_control_character(text: str) -> str:
    if _CONTROL.search(text):
        raise ValueError("holds a control character (NUL, newline, tab, ...), which no label may")
    return text


def _no_nul(text: str) -> str:
    if "\x00" in text:
        raise ValueError("holds a NUL character, which no Ferry event may")
    return text


LabelName = Annotated[
    str, StringConstraints(min_length=1, max_length=MAX_LABEL_NAME), AfterValidator(_no_control_character)
]
LabelValue = Annotated[str, StringConstraints(max_length=MAX_LABEL_VALUE), AfterValidator(_no_control_character)]
AnnotationText = Annotated[str, StringConstraints(max_length=MAX_ANNOTATION), AfterValidator(_no_nul)]


class IncomingAlert(BaseModel):
    model_config = ConfigDict(extra="allow")

    status: Literal["firing", "resolved"]
    labels: dict[LabelName, LabelValue] = Field(default_factory=dict, max_length=MAX_LABELS)
    annotations: dict[LabelName, AnnotationText] = Field(default_factory=dict, max_length=MAX_ANNOTATIONS)
    startsAt: datetime | None = None  # noqa: N815 - Alertmanager's field name
    fingerprint: str | None = Field(default=None, max_length=200)
    values: dict[str, float | None] | None = None
    """Grafana only: the value of each query and expression (refId -> value)."""


class IncomingWebhook(BaseModel):
    """Alertmanager's webhook payload (version 4), and Grafana's, which adds fields of its own."""

    model_config = ConfigDict(extra="allow")

    receiver: str = ""
    status: str = ""
    alerts: list[IncomingAlert] = Field(max_length=10_000)


def _number(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def alert_value(alert: IncomingAlert) -> float:
    """Grafana's reduced value (B), else its query (A), else the ``value`` annotation; 0 when none is known."""
    for ref in ("B", "A"):
        found = _number((alert.values or {}).get(ref))
        if found is not None:
            return found
    return _number(alert.annotations.get("value")) or 0.0


def to_event(alert: IncomingAlert, *, origin: str) -> tuple[AlertChanged, str]:
    """The ``alert`` event of one incoming alert, and an event id derived from it (a retried webhook is
    the same event, so redelivery stays idempotent downstream)."""
    labels = alert.labels
    model = labels.get("model", "")
    version = labels.get("version", "")
    severity = labels.get("severity", "warning")
    since = alert.startsAt if alert.startsAt and alert.startsAt.year > 1 else utc_now()
    event = AlertChanged(
        model_name=model if re.match(MODEL_NAME_PATTERN, model) else PLATFORM,
        rule=labels.get("alertname", "") or "unnamed",
        state="fired" if alert.status == "firing" else "resolved",
        version=int(version) if _VERSION.fullmatch(version) and 1 <= int(version) < 2**31 else None,
        severity=severity if severity in _SEVERITIES else "warning",  # type: ignore[arg-type]
        action=_ACTIONS.get(labels.get("action", ""), "notify"),
        value=alert_value(alert),
        threshold=_number(alert.annotations.get("threshold")) or 0.0,
        labels={key: value for key, value in labels.items() if key not in _META_LABELS},
        since=since,
    )
    identity = [origin, alert.fingerprint or repr(sorted(labels.items())), since.isoformat(), alert.status]
    return event, str(uuid.uuid5(uuid.NAMESPACE_URL, "ferry-monitor-incoming:" + "|".join(identity)))
