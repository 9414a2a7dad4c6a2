"""ONNX Runtime latency the way compression is judged: CPU, one intra-op thread, p50 per batch size.

Models compared with each other are timed in interleaved rounds (a, b, c, a, b, c, ...) so that a
busy moment on a shared machine lands on all of them rather than on one.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from services.trainer.compression import Latency


@dataclass(frozen=True)
class TimingPlan:
    """How much timing: rounds over all models, and calls per round at batch 1 and batch 64."""

    rounds: int = 5
    calls_batch1: int = 60
    calls_batch64: int = 12


def cpu_session(path: Path) -> ort.InferenceSession:
    """A CPU session with one intra-op thread: small models, steadiest on a shared machine."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def measure_latency(paths: Mapping[str, Path], rows: np.ndarray, plan: TimingPlan = TimingPlan()) -> dict[str, Latency]:
    """p50 latency of each model at batch 1 and 64 (rows repeat when there are fewer than 64)."""
    sessions = {name: cpu_session(path) for name, path in paths.items()}
    batches = {size: np.ascontiguousarray(np.resize(rows, (size, rows.shape[1])), dtype=np.float32) for size in (1, 64)}
    calls = {1: plan.calls_batch1, 64: plan.calls_batch64}
    samples: dict[tuple[str, int], list[float]] = {(name, size): [] for name in sessions for size in batches}
    for _ in range(plan.rounds):
        for name, session in sessions.items():
            feed_name = session.get_inputs()[0].name
            for size, batch in batches.items():
                feed = {feed_name: batch}
                session.run(None, feed)  # the first call of a shape allocates
                for _ in range(calls[size]):
                    start = time.perf_counter()
                    session.run(None, feed)
                    samples[(name, size)].append(time.perf_counter() - start)
    return {
        name: Latency(
            batch1_ms=statistics.median(samples[(name, 1)]) * 1e3,
            batch64_ms=statistics.median(samples[(name, 64)]) * 1e3,
        )
        for name in sessions
    }
