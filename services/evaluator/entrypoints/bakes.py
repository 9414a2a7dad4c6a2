"""The bake thread: rebuilds the pending bakes from the registry at start and every ``resync_interval_s``,
and completes those that are due. It never dies of a failure: it logs it and looks again later.

Every replica keeps the bakes; only the one that leads (``leads``: the evaluator's advisory lock)
completes them, so one evaluator completes a bake. When the leader dies another takes the lock within
its retry interval and completes what is due, at most ``resync_interval_s`` later if the bake began
after its last resync."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from services.evaluator.domain.rollout import Bake
from services.evaluator.handlers import EvaluatorDeps, complete_bake, resync_bakes

log = logging.getLogger(__name__)
RETRY_S = 2.0


class BakeRunner:
    """Runs in its own thread beside the consumer loop; ``stop`` ends it."""

    def __init__(
        self,
        deps: EvaluatorDeps,
        *,
        stop: threading.Event,
        resync_interval_s: float,
        tick_s: float = 0.25,
        leads: Callable[[], bool] = lambda: True,
    ) -> None:
        self.deps = deps
        self.stop = stop
        self.resync_interval_s = resync_interval_s
        self.tick_s = tick_s
        self.leads = leads
        self.leading = False
        self.resynced = threading.Event()
        """Set once the bakes have been rebuilt from the registry (readiness)."""

    def run(self) -> None:
        next_resync = 0.0
        while not self.stop.is_set():
            if time.monotonic() >= next_resync:
                next_resync = time.monotonic() + (self.resync_interval_s if self.resync() else RETRY_S)
            self.complete_due()
            self.stop.wait(self.tick_s)

    def complete_due(self) -> int:
        """Complete the bakes that are due, if this replica leads; returns how many it tried."""
        self.leading = self.leads()
        tried = 0
        for bake in self.deps.bakes.due(self.deps.clock()) if self.leading else []:
            if self.stop.is_set():
                break
            self._complete(bake)
            tried += 1
        return tried

    def resync(self) -> bool:
        try:
            found = resync_bakes(deps=self.deps)
        except Exception as error:  # noqa: BLE001 - the registry may be away; try again shortly
            log.warning("could not rebuild the bakes from the registry yet: %s", error)
            return False
        if not self.resynced.is_set():
            log.info("bakes rebuilt from the registry: %d pending", found)
            self.resynced.set()
        return True

    def _complete(self, bake: Bake) -> None:
        try:
            complete_bake(bake, deps=self.deps)
        except Exception as error:  # noqa: BLE001 - a registry or broker failure: the bake waits and retries
            log.warning(
                "bake of %s v%s not completed, retrying in %.0fs: %s", bake.model_name, bake.version, RETRY_S, error
            )
            self.deps.bakes.schedule(replace(bake, due_at=self.deps.clock() + RETRY_S))
