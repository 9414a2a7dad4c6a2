"""What the console does, in the words of its pages and actions, over its sources (the ports below).

Every page is built from what its sources answer; a source that does not answer becomes a notice on the
page (``SourceDown``), never an error page. Actions are the registry's: the console predicts their
consequence in words (domain.actions) and forwards them with the operator's token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial
from typing import Any, Protocol, TypeVar

from services.console.adapters.services import GatewayView
from services.console.domain import NotFound, SourceDown, actions, reports
from services.console.domain.fresh import fresh_view
from shared.dead_letters import DeadLetter, Operator
from shared.registry_models import (
    DeploymentAction,
    DeploymentChangeOut,
    DeploymentOut,
    EvaluationOut,
    HistoryEntryOut,
    ModelOut,
    VersionOut,
)

T = TypeVar("T")
MAX_COMPARED = 8


class Registry(Protocol):
    def models(self) -> list[ModelOut]: ...
    def model(self, name: str) -> ModelOut: ...
    def versions(self, name: str) -> list[VersionOut]: ...
    def version(self, name: str, version: int) -> VersionOut: ...
    def evaluations(self, name: str, version: int, *, limit: int = 20) -> list[EvaluationOut]: ...
    def deployment(self, name: str) -> DeploymentOut: ...
    def history(self, name: str, *, limit: int = 100) -> list[HistoryEntryOut]: ...
    def change(self, name: str, action: DeploymentAction, token: str | None) -> DeploymentChangeOut: ...


class Monitor(Protocol):
    def alerts(self) -> dict[str, list[dict[str, Any]]]: ...
    def rules(self) -> list[dict[str, Any]]: ...


class Evaluator(Protocol):
    def bakes(self) -> list[dict[str, Any]]: ...


class Gateways(Protocol):
    def views(self, model: str) -> tuple[list[GatewayView], list[str]]: ...


class FreshComparisons(Protocol):
    def compare(self, model: str, versions: Sequence[int]) -> dict[str, Any]: ...


class DeadLetters(Protocol):
    def topics(self) -> list[str]: ...
    def read(self, topic: str) -> list[DeadLetter]: ...
    def replay(self, topic: str, letters: Sequence[DeadLetter], operator: Operator) -> list[DeadLetter]: ...


@dataclass
class Notices:
    """What could not be read for a page: one line per source that did not answer."""

    lines: list[str] = field(default_factory=list)

    def attempt(self, read: Callable[[], T]) -> T | None:
        """What ``read`` answers, or None (and a notice) when its source is away."""
        try:
            return read()
        except SourceDown as error:
            if error.notice not in self.lines:
                self.lines.append(error.notice)
            return None

    def active_alerts(self, monitor: Monitor) -> list[dict[str, Any]]:
        return (self.attempt(monitor.alerts) or {}).get("active", [])


def _model_of(alert: dict[str, Any]) -> str:
    labels = alert.get("labels")
    return str(labels.get("model") or "") if isinstance(labels, dict) else ""


def firing_for(alerts: Sequence[dict[str, Any]], model: str) -> list[dict[str, Any]]:
    """The active alerts whose labels name ``model``."""
    return [alert for alert in alerts if alert.get("labels", {}).get("model") == model]


@dataclass
class Console:
    """The console's reads and actions over its sources."""

    registry: Registry
    monitor: Monitor
    evaluator: Evaluator
    gateways: Gateways
    dead_letters: DeadLetters
    fresh: FreshComparisons | None = None
    """``ferry compare`` on request (None: the Compare page offers only what the registry holds)."""

    def models_page(self) -> dict[str, Any]:
        notices = Notices()
        models = notices.attempt(self.registry.models)
        active = notices.active_alerts(self.monitor)
        rows = []
        for model in models or []:
            last = notices.attempt(partial(self._last_evaluation, model))
            deployment = notices.attempt(partial(self._deployment, model.name))
            rows.append(
                {"model": model, "deployment": deployment, "last": last, "alerts": firing_for(active, model.name)}
            )
        return {"rows": rows, "registry_down": models is None, "notices": notices.lines}

    def _last_evaluation(self, model: ModelOut) -> EvaluationOut | None:
        if not model.latest_version:
            return None
        try:
            found = self.registry.evaluations(model.name, model.latest_version, limit=1)
        except NotFound:
            return None
        return found[0] if found else None

    def _deployment(self, name: str) -> DeploymentOut | None:
        try:
            return self.registry.deployment(name)
        except NotFound:
            return None

    def model_page(self, name: str) -> dict[str, Any]:
        """Raises NotFound (no such model) or SourceDown (the registry away: nothing to show)."""
        model = self.registry.model(name)
        notices = Notices()
        versions = notices.attempt(partial(self.registry.versions, name)) or []
        deployment = self.registry.deployment(name)
        history = notices.attempt(partial(self.registry.history, name)) or []
        views, gateway_notices = self.gateways.views(name)
        notices.lines.extend(gateway_notices)
        bakes = [bake for bake in notices.attempt(self.evaluator.bakes) or [] if bake.get("model_name") == name]
        active = notices.active_alerts(self.monitor)
        return {
            "model": model,
            "versions": versions,
            "deployment": deployment,
            "history": history,
            "views": views,
            "bakes": bakes,
            "alerts": firing_for(active, name),
            "notices": notices.lines,
        }

    def evaluation_page(self, name: str, version: int, index: int = 0) -> dict[str, Any]:
        found = self.registry.version(name, version)
        evaluations = self.registry.evaluations(name, version)
        if not evaluations:  # not judged yet (or registered by hand before any evaluation): say so, no 404
            return {"version": found, "evaluation": None, "evaluations": [], "index": 0}
        if not 0 <= index < len(evaluations):
            raise NotFound(f"{name} version {version} has no evaluation {index}")
        evaluation = evaluations[index]
        report = evaluation.report
        return {
            "version": found,
            "evaluation": evaluation,
            "evaluations": evaluations,
            "index": index,
            "report": report,
            "ci_plot": reports.ci_plot(report),
            "difference_plot": reports.difference_plot(report),
            "tests": reports.paired_tests(report),
            "confusions": reports.confusions(report),
            "checks": reports.checks(report),
        }

    def compare_page(self, name: str, numbers: Sequence[int], *, fresh: bool = False) -> dict[str, Any]:
        """Versions side by side from the registry; with ``fresh``, also scored afresh by ``ferry compare``."""
        model = self.registry.model(name)
        chosen = sorted(set(numbers))[:MAX_COMPARED]  # the oldest is the baseline, as in `ferry compare 1 2 3`
        versions = [self.registry.version(name, number) for number in chosen]
        evaluations = {found.version: self.registry.evaluations(name, found.version) for found in versions}
        page: dict[str, Any] = {"model": model, "table": reports.compare(versions, evaluations), "chosen": chosen}
        page |= {"fresh": None, "can_score": self.fresh is not None and len(chosen) >= 2, "notices": []}
        if fresh and page["can_score"] and self.fresh is not None:
            notices = Notices()
            scored = notices.attempt(partial(self.fresh.compare, name, chosen))
            page |= {"fresh": fresh_view(scored) if scored else None, "notices": notices.lines}
        return page

    def alerts_page(self) -> dict[str, Any]:
        notices = Notices()
        alerts = notices.attempt(self.monitor.alerts) or {}
        rules = notices.attempt(self.monitor.rules) or []
        listed = [*alerts.get("active", []), *alerts.get("recent", [])]
        histories: dict[str, list[HistoryEntryOut]] = {}
        for name in {_model_of(alert) for alert in listed} - {""}:
            try:
                histories[name] = notices.attempt(partial(self.registry.history, name)) or []
            except NotFound:
                histories[name] = []

        def rows(found: list[dict[str, Any]]) -> list[dict[str, Any]]:
            """Each alert with the deployment change that followed it, if any."""
            return [
                {"alert": alert, "followed": actions.followed_by(alert, histories.get(_model_of(alert), []))}
                for alert in found
            ]

        return {
            "active": rows(alerts.get("active", [])),
            "recent": rows(alerts.get("recent", [])),
            "rules": rules,
            "notices": notices.lines,
        }

    def dead_letters_page(self, topic: str | None) -> dict[str, Any]:
        notices = Notices()
        topics = [topic] if topic else self.dead_letters.topics()
        found: dict[str, list[DeadLetter]] = {}
        for name in topics:
            letters = notices.attempt(partial(self.dead_letters.read, name))
            if letters is None:  # the broker is away: every other topic would wait for it as long
                break
            found[name] = letters
        return {"topics": found, "notices": notices.lines}

    def preview(self, name: str, action: DeploymentAction) -> str:
        """The confirmation's sentence for ``action`` (NotFound, SourceDown as for the model page)."""
        deployment = self.registry.deployment(name)
        statuses = {found.version: found.status for found in self.registry.versions(name)}
        return actions.consequence(name, action, deployment, statuses, self.registry.history(name))

    def change(self, name: str, action: DeploymentAction, token: str | None) -> DeploymentChangeOut:
        return self.registry.change(name, action, token)

    def replay(
        self, topic: str, *, ident: str | None, since: datetime | None, dry_run: bool, operator: Operator
    ) -> list[DeadLetter]:
        """The dead letters of ``topic`` that ``ident`` (or ``since``) selects, replayed unless ``dry_run``."""
        from shared.dead_letters import select

        letters = [
            letter for letter in self.dead_letters.read(topic) if since is None or letter.dead_lettered_at >= since
        ]
        chosen = select(letters, ident)
        if chosen and not dry_run:
            self.dead_letters.replay(topic, chosen, operator)
        return chosen
