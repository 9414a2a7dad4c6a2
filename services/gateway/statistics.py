"""Per-version inference statistics, as Triton's statistics extension reports them.

Kept by the request path in the gateway's own objects (one :class:`InferenceStatistics` per gateway),
beside the Prometheus counters: Triton's clients read counts and nanosecond totals per version, which
the metrics' labelled counters and bucketed histograms cannot give back exactly.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Duration:
    """How many, and their total time in nanoseconds."""

    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)

    def as_json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass
class VersionStatistics:
    """One version's requests: inferences (rows), runs of its session, successes and failures."""

    inference_count: int = 0
    execution_count: int = 0
    last_inference_ms: int = 0
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)


class InferenceStatistics:
    """Every version's statistics in this gateway; updated on the event loop's thread only."""

    def __init__(self) -> None:
        self.versions: dict[tuple[str, int], VersionStatistics] = {}

    def of(self, model: str, version: int) -> VersionStatistics:
        found = self.versions.get((model, version))
        if found is None:
            found = self.versions[(model, version)] = VersionStatistics()
        return found

    def finished(self, model: str, version: int, *, ok: bool, rows: int, seconds: float) -> None:
        """One request ran on ``version`` (``rows`` inferences in it) and succeeded or failed."""
        stats = self.of(model, version)
        if ok:
            stats.success.add(seconds)
            stats.inference_count += rows
            stats.last_inference_ms = int(time.time() * 1000)
        else:
            stats.fail.add(seconds)

    def executed(self, model: str, version: int, *, requests: int, queued_s: float, run_s: float) -> None:
        """One run of the session for ``requests`` batched requests, after they waited ``queued_s`` in all."""
        stats = self.of(model, version)
        stats.execution_count += 1
        stats.queue.add(queued_s, requests)
        stats.compute_infer.add(run_s, requests)

    def report(self, wanted: list[tuple[str, int]]) -> dict[str, Any]:
        """Triton's ``{"model_stats": [...]}`` for the (model, version) pairs asked for."""
        return {"model_stats": [_entry(model, version, self.of(model, version)) for model, version in wanted]}


def _entry(model: str, version: int, stats: VersionStatistics) -> dict[str, Any]:
    empty = Duration().as_json()
    return {
        "name": model,
        "version": str(version),
        "last_inference": stats.last_inference_ms,
        "inference_count": stats.inference_count,
        "execution_count": stats.execution_count,
        "inference_stats": {
            "success": stats.success.as_json(),
            "fail": stats.fail.as_json(),
            "queue": stats.queue.as_json(),
            "compute_input": empty,
            "compute_infer": stats.compute_infer.as_json(),
            "compute_output": empty,
            "cache_hit": empty,
            "cache_miss": empty,
        },
        "batch_stats": [],
    }
