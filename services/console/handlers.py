"""The console's handlers: each training event folded into the live board (which wakes the streams).

Run by the one consumer loop of shared/ in a group of this process's own, from the earliest offset, so
the board holds every run the topics still keep. Applying an event twice changes nothing new.
"""

from __future__ import annotations

from collections.abc import Callable

from services.console.adapters.runs import LiveRuns
from shared.envelope import EventMeta
from shared.events import Event, TrainingRequested, TrainingStatus


def handle_training_event(event: TrainingRequested | TrainingStatus, meta: EventMeta, *, runs: LiveRuns) -> None:
    """Fold a request or a status into its run, at the event's own time."""
    runs.apply(event, meta.time)


HANDLERS: dict[type[Event], list[Callable[..., None]]] = {
    TrainingRequested: [handle_training_event],
    TrainingStatus: [handle_training_event],
}
