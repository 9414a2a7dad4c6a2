"""The drift references from the registry: each version's predicted-class distribution on held-out data, and its
input reference (the training split's per-feature bins).

The evaluator's report (a version's evaluations, newest first, read through the one registry client)
carries ``report["candidate"]["prediction_distribution"]``: ``{class index: fraction}``. Answers are
cached (an unknown reference for a shorter time), and a registry that is away only delays drift alerts.
A version's ``input_reference`` comes with the version itself.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, TypeVar

from services.monitor.domain.drift import shares
from shared.events import MODEL_NAME_PATTERN, InputReference
from shared.registry_client import RegistryClient
from shared.registry_errors import RegistryError, RegistryNotFound

log = logging.getLogger(__name__)
T = TypeVar("T")


def reference_of(reports: Iterable[Mapping[str, Any]]) -> dict[str, float] | None:
    """The prediction distribution of the newest report that has one, as shares; None if none does.

    The report is the evaluator's own document, stored whole: each level is checked before it is read.
    """
    for report in reports:
        candidate = report.get("candidate")
        found = candidate.get("prediction_distribution") if isinstance(candidate, dict) else None
        if isinstance(found, dict) and found:
            cleaned = {
                str(key): float(value)
                for key, value in found.items()
                if isinstance(value, int | float) and math.isfinite(value) and value >= 0
            }
            distribution = shares(cleaned)
            if distribution:
                return distribution
    return None


class VersionCache(Generic[T]):
    """Something the registry knows per (model, version), read through the one registry client and cached; an
    absent answer is cached for a shorter time. Subclasses say what to ask (``ask``)."""

    def __init__(
        self,
        client: RegistryClient,
        *,
        ttl_s: float = 300.0,
        missing_ttl_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._client = client
        self._ttl_s = ttl_s
        self._missing_ttl_s = missing_ttl_s
        self._clock = clock
        self._cache: dict[tuple[str, str], tuple[float, T | None]] = {}
        self._lock = threading.Lock()

    def get(self, model: str, version: str) -> T | None:
        """The cached value (no I/O): what evaluation reads."""
        with self._lock:
            entry = self._cache.get((model, version))
        return entry[1] if entry else None

    def known(self) -> dict[tuple[str, str], T]:
        """Every value known now."""
        with self._lock:
            return {key: value for key, (_, value) in self._cache.items() if value}

    def refresh(self, wanted: set[tuple[str, str]]) -> None:
        """Fetch what is wanted and not freshly cached; a failure leaves the cache as it was."""
        now = self._clock()
        for model, version in sorted(wanted):
            with self._lock:
                entry = self._cache.get((model, version))
            if entry and entry[0] > now:
                continue
            try:
                found = self.fetch(model, version)
            except RegistryError as error:
                log.warning("%s of %s v%s not available yet: %s", self.what, model, version, error)
                continue
            ttl = self._ttl_s if found else self._missing_ttl_s
            with self._lock:
                self._cache[(model, version)] = (now + ttl, found)

    def fetch(self, model: str, version: str) -> T | None:
        """Ask the registry. Names that are no model name or version number are never put in a URL."""
        if not re.match(MODEL_NAME_PATTERN, model) or not version.isdigit():
            return None
        try:
            return self.ask(model, int(version))
        except RegistryNotFound:
            return None

    what = "value"

    def ask(self, model: str, version: int) -> T | None:
        raise NotImplementedError

    def close(self) -> None:
        self._client.close()


class RegistryReferences(VersionCache[dict[str, float]]):
    """Reference distributions of predicted classes per (model, version), from the evaluation reports."""

    what = "drift reference"

    def ask(self, model: str, version: int) -> dict[str, float] | None:
        evaluations = self._client.evaluations(model, version, limit=20)
        return reference_of(evaluation.report for evaluation in evaluations)

    def known(self) -> dict[tuple[str, str], dict[str, float]]:
        """Every reference known now, for the ``ferry_monitor_drift_reference`` gauge."""
        return {key: dict(value) for key, value in super().known().items()}


class RegistryInputReferences(VersionCache[InputReference]):
    """Input references per (model, version): the training split's per-feature bins the version carries."""

    what = "input reference"

    def ask(self, model: str, version: int) -> InputReference | None:
        return self._client.version(model, version).input_reference
