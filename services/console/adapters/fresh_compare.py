"""``ferry compare`` run for the Compare page: the versions scored afresh on one held-out split, exactly as
the command line scores them (its ``--json`` output is the contract), one comparison at a time.

The command loads every model and times it, which takes seconds of CPU: it runs only when a person asks
(the page's "Score afresh" button), never on an ordinary visit, and in a process of its own so that the
console's own serving never waits on it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Sequence
from typing import Any

from services.console.domain import SourceDown
from shared.events import MODEL_NAME_PATTERN

SOURCE = "ferry compare"
MAX_OUTPUT_CHARS = 500


class FreshCompare:
    """Runs ``python -m shared.cli compare MODEL V… --json`` against ``registry_url``."""

    def __init__(self, registry_url: str, *, timeout_s: float, latency_runs: int) -> None:
        self.registry_url = registry_url
        self.timeout_s = timeout_s
        self.latency_runs = latency_runs
        self._one_at_a_time = threading.Lock()

    def compare(self, model: str, versions: Sequence[int]) -> dict[str, Any]:
        """``ferry compare``'s JSON; SourceDown (with the command's own message) when it cannot give it."""
        if not re.match(MODEL_NAME_PATTERN, model) or len(versions) < 2:
            raise SourceDown(SOURCE, "needs a model name and two or more versions", state="refused")
        if not self._one_at_a_time.acquire(blocking=False):
            raise SourceDown(SOURCE, "another comparison is running; try again in a moment", state="busy")
        try:
            return self._run(model, versions)
        finally:
            self._one_at_a_time.release()

    def _run(self, model: str, versions: Sequence[int]) -> dict[str, Any]:
        command = [sys.executable, "-m", "shared.cli", "compare", model, *(str(int(v)) for v in versions)]
        command += ["--json", "--latency-runs", str(self.latency_runs)]
        environment = {**os.environ, "FERRY_REGISTRY_URL": self.registry_url}
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=self.timeout_s, env=environment)
        except subprocess.TimeoutExpired:
            raise SourceDown(SOURCE, f"took longer than {self.timeout_s:.0f}s", state="failed") from None
        if done.returncode != 0:
            said = (done.stderr.strip().splitlines() or ["no message"])[-1][:MAX_OUTPUT_CHARS]
            raise SourceDown(SOURCE, f"exit {done.returncode}: {said}", state="failed")
        try:
            found = json.loads(done.stdout)
        except ValueError:
            raise SourceDown(SOURCE, "did not print JSON", state="failed") from None
        if not isinstance(found, dict):
            raise SourceDown(SOURCE, "did not print a comparison", state="failed")
        return found
