"""Retraining on an alert, decided without I/O: whether the cooldown allows it, and the request it publishes.

An alert whose action is ``retrain`` asks for the champion's recipe (arch, hyper-parameters, task) trained again
on its original dataset joined with the recent labelled production window. The request's id and event id derive
from the alert's id, so a redelivered alert, or the same alert on a second replica, can never mint a second run;
the cooldown (no more than one retrain per model per ``cooldown_s``) is read from the requests Kafka holds.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from services.evaluator.domain.records import VersionRecord
from shared.events import AlertChanged, Hyperparameters, RetrainCause, TrainingRequested
from shared.production_names import original_of, window_file, with_window

RETRAIN_NAMESPACE = uuid.UUID("6f1c1f38-5d0e-4c55-9d43-3b7d2a0c9e11")


def retrain_request_id(alert_id: str) -> str:
    """The training request id of the retrain an alert asks for: the same for every copy of that alert."""
    return f"retrain-{uuid.uuid5(RETRAIN_NAMESPACE, alert_id)}"


@dataclass(frozen=True)
class RetrainRefusal:
    """Why an alert does not retrain (cooldown, no champion, too few labelled rows, a model it cannot fit)."""

    reason: str


def cooldown_refusal(recent: Sequence[TrainingRequested], alert_id: str, cooldown_s: float) -> RetrainRefusal | None:
    """A refusal when a retrain of this model was requested within the cooldown (this alert's own included)."""
    for request in recent:
        cause = request.cause
        if cause is None:
            continue
        if cause.alert_id == alert_id:
            return RetrainRefusal(f"alert {alert_id} already asked for retrain {request.request_id}")
        return RetrainRefusal(
            f"cooldown: retrain {request.request_id} (alert {cause.rule} {cause.alert_id}) was requested within "
            f"the last {cooldown_s:g} s"
        )
    return None


def champion_refusal(champion: VersionRecord | None) -> RetrainRefusal | None:
    """A refusal when there is no champion whose recipe could be retrained on a window of class labels."""
    if champion is None:
        return RetrainRefusal("the model has no champion whose recipe could be retrained")
    if champion.signature.is_regressor or not champion.signature.labels:
        return RetrainRefusal(f"champion v{champion.version} is not a classifier with named classes")
    if champion.dataset.startswith("parquet:"):
        return RetrainRefusal(f"champion v{champion.version}'s dataset is streamed; a window joins a loaded one")
    return None


def retrain_request(alert: AlertChanged, alert_id: str, champion: VersionRecord, window_rows: int) -> TrainingRequested:
    """The champion's recipe on its original dataset plus the window of ``alert_id``, with the alert as cause."""
    window = window_file(alert.model_name, alert_id)
    return TrainingRequested(
        model_name=alert.model_name,
        request_id=retrain_request_id(alert_id),
        dataset=with_window(champion.dataset, window),
        arch=champion.arch,
        hyperparameters=Hyperparameters.model_validate(champion.hyperparameters),
        task=champion.signature.task,
        requested_by=f"evaluator: alert {alert.rule}",
        cause=RetrainCause(
            alert_id=alert_id,
            rule=alert.rule,
            version=alert.version,
            fired_at=alert.since,
            champion_version=champion.version,
            original_dataset=original_of(champion.dataset),
            window=window,
            window_rows=window_rows,
        ),
    )
