"""The evaluator's retraining: a fired ``retrain`` alert becomes one ``training.requested`` on the production window.

Exactly once with N replicas: the request's ids derive from the alert's (``domain/retrain.py``); the check of the
cooldown and the publication happen under a per-model PostgreSQL advisory lock (``shared.leader.advisory_mutex``),
and the cooldown is read from the requests Kafka holds, so a second replica, or a restarted one, sees the first
request. The window is materialised under the datasets root before the request that names it is published.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from services.evaluator.domain.records import VersionRecord
from services.evaluator.domain.retrain import RetrainRefusal, champion_refusal, cooldown_refusal, retrain_request
from services.evaluator.domain.rollout import derived_event_id
from shared.envelope import EventMeta
from shared.events import AlertChanged, TrainingRequested
from shared.production_names import window_file
from shared.production_window import LabelledRow, write_window

if TYPE_CHECKING:  # the handlers' deps name this module's Retraining: imported for types only
    from services.evaluator.handlers import EvaluatorDeps

log = logging.getLogger(__name__)


@dataclass
class Retraining:
    """What a retrain needs from the outside world; bootstrap builds it over Kafka and PostgreSQL."""

    read_window: Callable[[str, Sequence[str]], list[LabelledRow]]
    """(model, class names) -> the recent labelled production window."""
    recent_retrains: Callable[[str], list[TrainingRequested]]
    """model -> the retrain requests published within the cooldown."""
    datasets_root: Path
    cooldown_s: float = 3600.0
    min_rows: int = 100
    mutex: Callable[[str], AbstractContextManager[object]] | None = None
    """model -> a lock held while its cooldown is checked and its request published; None: this process only."""


@dataclass(frozen=True)
class RetrainOutcome:
    """What a retrain alert did: the request published, or why none was."""

    request: TrainingRequested | None = None
    refusal: RetrainRefusal | None = None


def handle_retrain_alert(event: AlertChanged, meta: EventMeta, *, deps: EvaluatorDeps) -> RetrainOutcome | None:
    """A fired ``retrain`` alert: the champion's recipe retrained on the recent labelled window, once per cooldown."""
    if event.state != "fired" or event.action != "retrain":
        return None
    retraining, record = deps.retraining, deps.record_decision
    if retraining is None:
        log.warning("alert %s for %s asks for a retrain; this evaluator does not retrain", event.rule, event.model_name)
        return RetrainOutcome(refusal=RetrainRefusal("retraining is not set up"))
    outcome = _retrain(event, meta.event_id, retraining, deps)
    if outcome.refusal is not None:
        log.info("alert %s for %s does not retrain: %s", event.rule, event.model_name, outcome.refusal.reason)
        record("retrain_refused")
    else:
        record("retrain")
    return outcome


def _retrain(event: AlertChanged, alert_id: str, retraining: Retraining, deps: EvaluatorDeps) -> RetrainOutcome:
    name = event.model_name
    champion = _champion(deps, name)
    refusal = champion_refusal(champion)
    if refusal is not None or champion is None:
        return RetrainOutcome(refusal=refusal)
    with retraining.mutex(name) if retraining.mutex is not None else nullcontext():
        refusal = cooldown_refusal(retraining.recent_retrains(name), alert_id, retraining.cooldown_s)
        if refusal is not None:
            return RetrainOutcome(refusal=refusal)
        labels = champion.signature.labels or []
        rows = retraining.read_window(name, labels)
        if len(rows) < retraining.min_rows:
            return RetrainOutcome(
                refusal=RetrainRefusal(f"the window holds {len(rows)} labelled rows, {retraining.min_rows} needed")
            )
        write_window(retraining.datasets_root, window_file(name, alert_id), rows)
        request = retrain_request(event, alert_id, champion, len(rows))
        deps.publish(request, event_id=derived_event_id(name, alert_id, "retrain"))
    log.warning(
        "%s: alert %s asked for a retrain; request %s trains champion v%s's recipe on %s (%d production rows)",
        name,
        event.rule,
        request.request_id,
        champion.version,
        request.dataset,
        len(rows),
    )
    return RetrainOutcome(request=request)


def _champion(deps: EvaluatorDeps, name: str) -> VersionRecord | None:
    deployment = deps.registry.deployment(name)
    if deployment is None or deployment.champion is None:
        return None
    return deps.registry.version(name, deployment.champion)
