"""The monitor's event handlers: it follows ``deployment.changed`` to know which versions serve, and keeps
the inputs of ``inference.logged`` records for input drift.

Knowing the served versions, it fetches each one's drift reference before its first prediction, so
the ``ferry_monitor_drift_reference`` gauge that Prometheus's drift rule reads is there in time.

Production data (``inference.logged``, ``inference.feedback``) has tables of its own, one per use, each
bound to its own dependencies and merged into the one loop of the monitor's shared production group
(``entrypoints/consumer.py``): ``ONLINE_ACCURACY_HANDLERS`` joins feedback to logged answers.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from services.monitor.domain.input_window import InputWindows
from services.monitor.domain.online_accuracy import OnlineAccuracy, answer_of
from shared.envelope import EventMeta
from shared.events import DeploymentChanged, Event, InferenceFeedback, InferenceLogged


class DeployedVersions:
    """The latest deployment of each model (by revision): its champion and challenger versions."""

    def __init__(self) -> None:
        self._by_model: dict[str, tuple[int, tuple[int, ...]]] = {}
        self._lock = threading.Lock()

    def apply(self, event: DeploymentChanged) -> bool:
        """Record the deployment unless a later revision is known; True when it changed what is known."""
        versions = tuple(part.version for part in (event.champion, event.challenger) if part is not None)
        with self._lock:
            known = self._by_model.get(event.model_name)
            if known is not None and known[0] >= event.revision:
                return False  # a redelivery or an older revision: idempotent
            self._by_model[event.model_name] = (event.revision, versions)
            return True

    def versions(self) -> list[tuple[str, str]]:
        with self._lock:
            return [(model, str(v)) for model, (_, versions) in sorted(self._by_model.items()) for v in versions]


# Every handler gets every dependency (shared bind_handlers binds one set): each takes what it needs, by name.


def handle_deployment_changed(
    event: DeploymentChanged, meta: EventMeta, *, deployed: DeployedVersions, **_: object
) -> None:
    deployed.apply(event)


def handle_inference_logged_inputs(
    event: InferenceLogged, meta: EventMeta, *, input_windows: InputWindows, **_: object
) -> None:
    """Keep a logged record's inputs in its version's window: input drift is measured on them."""
    input_windows.record(event)


HANDLERS: dict[type[Event], list[Callable[..., None]]] = {
    DeploymentChanged: [handle_deployment_changed],
    InferenceLogged: [handle_inference_logged_inputs],
}


def handle_inference_logged(
    event: InferenceLogged, meta: EventMeta, *, online: OnlineAccuracy, clock: Callable[[], float]
) -> None:
    now = clock()
    online.logged(event.model_name, event.request_id, answer_of(event, now), now)


def handle_inference_feedback(
    event: InferenceFeedback, meta: EventMeta, *, online: OnlineAccuracy, clock: Callable[[], float]
) -> None:
    now = clock()
    for item in event.items:
        online.feedback(event.model_name, item, now)


ONLINE_ACCURACY_HANDLERS: dict[type[Event], list[Callable[..., None]]] = {
    InferenceLogged: [handle_inference_logged],
    InferenceFeedback: [handle_inference_feedback],
}
