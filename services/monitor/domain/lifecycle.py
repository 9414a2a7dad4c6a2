"""Alert states as Prometheus keeps them: inactive → pending → firing → resolved.

A breached group becomes *pending*; once it has stayed breached for the rule's ``for`` duration it
*fires* (at once when ``for`` is 0). A pending alert whose condition clears is dropped without a
word; a firing one *resolves*. Only firing and resolving are transitions the world hears about.
"""

from __future__ import annotations

import re
import uuid
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Literal

from services.monitor.domain.evaluate import Observation
from services.monitor.domain.rules import BaseRule
from services.monitor.domain.series import Labels
from shared.events import MODEL_NAME_PATTERN, AlertChanged

AlertState = Literal["pending", "firing", "resolved"]
PLATFORM = "ferry"
"""The ``model_name`` of an alert that concerns no model (a target down, a consumer group's lag)."""


@dataclass(frozen=True)
class Alert:
    """One alert of one rule for one group, at the moment it was last evaluated."""

    rule: str
    labels: Labels
    state: AlertState
    value: float
    threshold: float
    severity: str
    action: str
    summary: str
    active_at: float
    """When the condition started to hold (Alertmanager's ``startsAt``)."""
    fired_at: float | None = None
    resolved_at: float | None = None

    @property
    def key(self) -> tuple[str, Labels]:
        return (self.rule, self.labels)

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)


@dataclass(frozen=True)
class Transition:
    """An alert that has just fired or just resolved."""

    alert: Alert
    state: Literal["fired", "resolved"]

    @property
    def event_id(self) -> str:
        """Derived from the alert's identity and start: the same transition always has the same id."""
        parts = [self.alert.rule, repr(self.alert.labels), repr(self.alert.active_at), self.state]
        return str(uuid.uuid5(uuid.NAMESPACE_URL, "ferry-monitor:" + "|".join(parts)))


class AlertBook:
    """The alerts of every rule: the active ones, and the last ``recent_limit`` resolved ones."""

    def __init__(self, *, recent_limit: int = 200) -> None:
        self._active: dict[tuple[str, Labels], Alert] = {}
        self._recent: deque[Alert] = deque(maxlen=recent_limit)

    def update(self, rule: BaseRule, observations: Iterable[Observation], now: float) -> list[Transition]:
        """Apply one evaluation of ``rule`` at ``now``; returns what fired and what resolved."""
        transitions: list[Transition] = []
        breached = {obs.labels: obs.value for obs in observations if rule.breached(obs.value)}
        for labels, value in breached.items():
            current = self._active.get((rule.name, labels))
            if current is None:
                current = Alert(
                    rule.name,
                    labels,
                    "pending",
                    value,
                    rule.threshold,
                    rule.severity,
                    rule.action,
                    rule.summary,
                    active_at=now,
                )
            else:
                current = replace(current, value=value)
            if current.state == "pending" and now - current.active_at >= rule.for_s:
                current = replace(current, state="firing", fired_at=now)
                transitions.append(Transition(current, "fired"))
            self._active[current.key] = current
        for key, alert in list(self._active.items()):
            if key[0] != rule.name or key[1] in breached:
                continue
            del self._active[key]
            if alert.state == "firing":
                resolved = replace(alert, state="resolved", resolved_at=now)
                self._recent.append(resolved)
                transitions.append(Transition(resolved, "resolved"))
        return transitions

    def active(self) -> list[Alert]:
        return sorted(self._active.values(), key=lambda alert: (alert.rule, alert.labels))

    def recent(self) -> list[Alert]:
        """Resolved alerts, newest first."""
        return list(reversed(self._recent))

    def firing(self) -> list[Alert]:
        return [alert for alert in self.active() if alert.state == "firing"]


def timestamp(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


def alert_event(transition: Transition) -> AlertChanged:
    """The ``alert`` event of a transition: labels, value, threshold, since, and the version to act on."""
    alert = transition.alert
    labels = alert.label_map
    version = labels.get("version", "")
    model = labels.get("model", "")
    return AlertChanged(
        model_name=model if _valid_model(model) else PLATFORM,
        rule=alert.rule,
        state=transition.state,
        version=int(version) if version.isdigit() and int(version) >= 1 else None,
        severity=alert.severity,  # type: ignore[arg-type]
        action=alert.action,  # type: ignore[arg-type]
        value=_finite(alert.value),
        threshold=alert.threshold,
        labels=labels,
        since=timestamp(alert.active_at),
    )


def _valid_model(name: str) -> bool:
    return bool(name) and re.match(MODEL_NAME_PATTERN, name) is not None


def _finite(value: float) -> float:
    """JSON has no NaN or infinity: an infinite ratio (errors over zero requests) travels as a large number."""
    if value != value:
        return 0.0
    return max(min(value, 1e308), -1e308)
