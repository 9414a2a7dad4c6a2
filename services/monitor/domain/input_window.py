"""The sliding window of logged inputs per (model, version): what input drift is measured on.

A window keeps the latest ``max_rows`` logged records of a version, keyed by request id so that a
redelivered ``inference.logged`` counts once. Records, not rows, are kept: a version's row size is known
only once its reference has come from the registry. At most ``max_versions`` windows are kept; the one
least recently fed goes first.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from services.monitor.domain.input_drift import InputDrift, input_drift, rows_of
from shared.events import InferenceLogged, InputReference, LoggedTensor

VersionKey = tuple[str, str]
"""(model, version as a string), as the monitor's labels carry them."""
InputReferences = Callable[[str, str], InputReference | None]


class InputWindows:
    """Logged inputs per version, bounded; thread-safe (the consumer writes, the engine's tick reads)."""

    def __init__(self, *, max_rows: int = 1000, max_versions: int = 256) -> None:
        self.max_rows = max_rows
        self.max_versions = max_versions
        self._windows: OrderedDict[VersionKey, OrderedDict[str, tuple[LoggedTensor, ...]]] = OrderedDict()
        self._lock = threading.Lock()

    def record(self, event: InferenceLogged) -> bool:
        """Keep the record's inputs; False for a request already in the window (a redelivery)."""
        key = (event.model_name, str(event.version))
        with self._lock:
            window = self._windows.setdefault(key, OrderedDict())
            self._windows.move_to_end(key)
            if event.request_id in window:
                return False
            window[event.request_id] = tuple(event.inputs)
            while len(window) > self.max_rows:  # each record holds a row or more: max_rows records suffice
                window.popitem(last=False)
            while len(self._windows) > self.max_versions:
                self._windows.popitem(last=False)
            return True

    def versions(self) -> set[VersionKey]:
        """The versions with logged inputs: whose references the engine fetches."""
        with self._lock:
            return set(self._windows)

    def rows(self, key: VersionKey, reference: InputReference) -> np.ndarray:
        """The window's latest ``max_rows`` rows of the reference's input (rows × row_size)."""
        with self._lock:
            records = list(self._windows.get(key, {}).values())
        found = [rows for rows in (rows_of(inputs, reference) for inputs in records) if rows is not None]
        if not found:
            return np.empty((0, reference.row_size))
        return np.concatenate(found)[-self.max_rows :]

    def measure(self, references: InputReferences) -> dict[VersionKey, InputDrift]:
        """Input drift of every version whose reference is known and whose window holds rows."""
        found = {}
        for model, version in sorted(self.versions()):
            reference = references(model, version)
            if reference is None:
                continue
            rows = self.rows((model, version), reference)
            if len(rows):
                found[(model, version)] = input_drift(model, version, rows, reference)
        return found
