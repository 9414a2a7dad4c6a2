"""The live training board: the runs folded from ``training.requested`` and ``training.status`` by the
console's consumer loop, and a change counter that server-sent-event streams wait on."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

from shared.events import TrainingRequested, TrainingStatus
from shared.training_runs import RunBoard, TrainingRun


class LiveRuns:
    """A :class:`RunBoard` shared between the consumer thread (writes) and the HTTP handlers (reads)."""

    def __init__(self, board: RunBoard | None = None) -> None:
        self._board = board or RunBoard()
        self._changed = threading.Condition()
        self._revision = 0

    @property
    def revision(self) -> int:
        """How many changes the board has seen: a stream sends again when it grows."""
        with self._changed:
            return self._revision

    def apply(self, event: TrainingRequested | TrainingStatus, at: datetime) -> TrainingRun:
        """Fold one event in and wake every stream waiting for a change."""
        with self._changed:
            run = self._board.apply(event, at)
            self._revision += 1
            self._changed.notify_all()
        return run

    def wait(self, seen: int, timeout_s: float) -> int:
        """Until the revision passes ``seen`` or ``timeout_s`` passes; the revision then."""
        with self._changed:
            self._changed.wait_for(lambda: self._revision > seen, timeout=timeout_s)
            return self._revision

    def snapshot(self, limit: int | None = None) -> dict[str, Any]:
        """Every run's summary (newest first), the ones in progress and the failed ones, and the revision."""
        with self._changed:
            return {
                "revision": self._revision,
                "runs": [run.summary() for run in self._board.runs(limit)],
            }

    def in_progress(self) -> list[TrainingRun]:
        with self._changed:
            return self._board.in_progress()

    def failed(self) -> list[TrainingRun]:
        with self._changed:
            return self._board.failed()
