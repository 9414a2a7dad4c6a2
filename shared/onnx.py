"""ONNX Runtime for every service: sessions from verified bytes, the provider really in use, the
signature as loaded, batched scoring, and the one latency harness.

Sessions: CUDA first when it is asked for (``cuda``) or a GPU is there (``auto``), then the CPU; the
session says which provider it really got (:func:`provider_in_use`), and that is what is reported.

Latency has one clock and one family of statistics, for the trainer's choice of an int8 kind and the
evaluator's rules alike, so that "faster" means the same thing on both sides of ``model.trained``:

- the clock is the calling thread's CPU time (``time.thread_time_ns``) around one ``session.run``, on a
  CPU session with one intra-op thread. With one thread ONNX Runtime computes on the calling thread,
  so that clock counts the model's work and none of the moments a busy machine's scheduler gives the
  core to someone else. The wall clock counts those too: on a shared machine it doubled a model's
  time and rejected good models on their tails (the evaluator's history). Serving latency under real
  load is the gateway's to report and the monitor's to watch; this harness measures what a model costs;
- fixed batch sizes (1 and 64), warm-up runs first, models interleaved run by run so that whatever
  the machine does lands on all of them alike, in rounds;
- p50 over every run, and p99 as the lowest of the rounds' 99th percentiles (best of N, as benchmarks
  do): a model that is really slower is slower in every round.
"""

from __future__ import annotations

import glob
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import onnxruntime as ort

from shared.events import Signature, TensorSpec

Device = Literal["auto", "cuda", "cpu"]
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
SCORING_BATCH = 4096
"""Rows per ``session.run`` when :func:`predict` scores a whole table."""
BATCH_SIZES = (1, 64)
MIN_RUNS_PER_ROUND = 10
_ORT_TO_OIP = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}
_REFUSALS = {
    "INVALID_PROTOBUF": "it is not an ONNX model (protobuf parsing failed)",
    "INVALID_ARGUMENT": "it holds no usable ONNX graph",
    "INVALID_GRAPH": "its graph is not valid ONNX",
    "NOT_IMPLEMENTED": "it uses an operator or type this ONNX Runtime does not implement",
    "NO_MODEL": "it holds no model",
}


class ModelUnloadable(ValueError):
    """ONNX Runtime refused the bytes; the message says why in general terms and quotes none of them."""


def gpu_present() -> bool:
    """True when an NVIDIA device node exists (``onnxruntime-gpu`` lists CUDA whether or not a GPU does)."""
    return bool(glob.glob("/dev/nvidia[0-9]*"))


def choose_providers(device: Device) -> list[Any]:
    """``auto``: CUDA first when a GPU is there, then the CPU; ``cuda`` insists on trying it; ``cpu`` never."""
    chosen: list[Any] = []
    wanted_cuda = device == "cuda" or (device == "auto" and gpu_present())
    if wanted_cuda and CUDA in ort.get_available_providers():
        if hasattr(ort, "preload_dlls"):
            # CUDA and cuDNN from the NVIDIA wheels: ORT finds them no other way unless torch came first.
            # Loading is idempotent and cheap after the first call; a failure shows up as the CPU provider.
            ort.preload_dlls()
        # TF32 trades ~1e-3 relative precision for speed; models are verified and measured in full FP32.
        chosen.append((CUDA, {"use_tf32": "0"}))
    chosen.append(CPU)
    return chosen


def open_session(model: bytes, *, device: Device = "cpu", threads: int = 1) -> ort.InferenceSession:
    """A session from verified bytes, with the project's options; ModelUnloadable when ORT refuses them.

    ``threads`` is ONNX Runtime's intra-op threads (0: its own choice, one per core); one inter-op
    thread, every graph optimisation, errors-only logging (CUDA's CPU-fallback notices are expected).
    """
    if not model:
        raise ModelUnloadable("ONNX Runtime cannot load the model: it is empty (0 bytes)")
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(model, sess_options=options, providers=choose_providers(device))
    except Exception as error:  # noqa: BLE001 - ORT raises its own types for every kind of bad model
        raise ModelUnloadable(f"ONNX Runtime cannot load the model: {_refusal(error)}") from error


def _refusal(error: Exception) -> str:
    """ORT's status code in words: its message may quote node names and attributes from the file."""
    found = re.search(r"\[ONNXRuntimeError\] : \d+ : ([A-Z_]+)", str(error))
    code = found.group(1) if found else type(error).__name__
    return _REFUSALS.get(code, f"it failed to load ({code})")


def provider_in_use(session: ort.InferenceSession) -> str:
    """The provider the session really runs on (the first it got, not the first asked for)."""
    return str(session.get_providers()[0])


def signature_of(session: ort.InferenceSession) -> Signature:
    """Inputs and outputs as the session sees them, in OIP v2 terms (dynamic axes as -1)."""
    return Signature(
        inputs=[_spec(node) for node in session.get_inputs()],
        outputs=[_spec(node) for node in session.get_outputs()],
    )


def _spec(node: Any) -> TensorSpec:
    shape = [dim if isinstance(dim, int) and dim >= 0 else -1 for dim in (node.shape or [])]
    return TensorSpec(name=node.name, datatype=_ORT_TO_OIP.get(node.type, node.type), shape=shape)


def predict(session: ort.InferenceSession, features: np.ndarray, batch: int = SCORING_BATCH) -> np.ndarray:
    """The first output for every row (fed as FP32 to the first input, or as strings to a text model's),
    ``batch`` rows per run."""
    feed, output = session.get_inputs()[0].name, session.get_outputs()[0].name
    rows = model_inputs(session, features)
    outputs = [session.run([output], {feed: rows[start : start + batch]})[0] for start in range(0, len(rows), batch)]
    return np.concatenate(outputs, axis=0)


def model_inputs(session: ort.InferenceSession, rows: np.ndarray) -> np.ndarray:
    """Rows as the first input takes them: strings (an object array) for a BYTES input, else FP32."""
    if session.get_inputs()[0].type == "tensor(string)":
        return np.asarray(rows, dtype=object)
    return np.ascontiguousarray(rows, dtype=np.float32)


@dataclass(frozen=True)
class LatencyPlan:
    """How much timing: ``runs`` per model at batch 1 (half as many, at least 20, at batch 64), in
    ``rounds``, after ``warmup_runs``. A round ends early (never under MIN_RUNS_PER_ROUND runs) once it
    has spent its share of ``budget_s`` of wall time, so that large models get fewer runs, not hours."""

    runs: int = 1000
    rounds: int = 10
    warmup_runs: int = 20
    budget_s: float = 1.0

    def runs_per_round(self, batch_size: int) -> int:
        """Timed runs of each model in one round at this batch size, unless the budget ends it early."""
        wanted = self.runs if batch_size == 1 else max(20, self.runs // 2)
        return max(MIN_RUNS_PER_ROUND, wanted // self.rounds)


@dataclass(frozen=True)
class BatchLatency:
    """One batch size: p50 and p99 of a run's CPU time in milliseconds, and how many runs they rest on."""

    p50_ms: float
    p99_ms: float
    runs: int


@dataclass(frozen=True)
class Latency:
    """What the harness found for one model at batch 1 and 64."""

    b1: BatchLatency
    b64: BatchLatency
    rounds: int

    def metrics(self, prefix: str = "") -> dict[str, float]:
        """``{prefix}latency_b1_p50_ms``, ``..._b1_p99_ms``, ``..._b64_p50_ms``, ``..._b64_p99_ms``."""
        return {
            f"{prefix}latency_{name}_{statistic}_ms": getattr(found, f"{statistic}_ms")
            for name, found in (("b1", self.b1), ("b64", self.b64))
            for statistic in ("p50", "p99")
        }

    def counts(self) -> dict[str, float]:
        """How many runs the percentiles rest on: ``latency_b1_runs``, ``latency_b64_runs``, ``latency_rounds``."""
        return {"latency_b1_runs": self.b1.runs, "latency_b64_runs": self.b64.runs, "latency_rounds": self.rounds}

    def p50_ratios(self, baseline: Latency) -> tuple[float, float]:
        """This p50 / the baseline's, at batch 1 and at batch 64 (below 1 is faster)."""
        return self.b1.p50_ms / baseline.b1.p50_ms, self.b64.p50_ms / baseline.b64.p50_ms

    def faster_than(self, baseline: Latency) -> bool:
        """Lower p50 at both batch sizes: the only sense in which a model is called faster."""
        return self.b1.p50_ms < baseline.b1.p50_ms and self.b64.p50_ms < baseline.b64.p50_ms


def summarise(samples: Mapping[int, Sequence[Sequence[int]]]) -> Latency:
    """Nanoseconds per run, per round, at batch 1 and 64 → p50 over all runs, p99 best of the rounds."""
    found = {}
    for size in BATCH_SIZES:
        per_round = [np.asarray(runs, dtype=np.float64) / 1e6 for runs in samples[size] if len(runs)]
        if not per_round:
            raise ValueError(f"no timed runs at batch {size}")
        pooled = np.concatenate(per_round)
        p50 = float(np.percentile(pooled, 50))
        # A best round faster than most runs (the machine's load fell during it) would put p99 under p50.
        p99 = max(p50, min(float(np.percentile(runs, 99)) for runs in per_round))
        found[size] = (BatchLatency(p50, p99, len(pooled)), len(per_round))
    return Latency(b1=found[1][0], b64=found[64][0], rounds=max(found[1][1], found[64][1]))


def measure_latency(
    sessions: Sequence[ort.InferenceSession], rows: np.ndarray, plan: LatencyPlan = LatencyPlan()
) -> list[Latency]:
    """Each session's latency at batch 1 and 64 on ``rows`` (repeated as needed), by :data:`LatencyPlan`.

    Sessions must be CPU sessions with one intra-op thread (``open_session(data)``): the clock is the
    calling thread's, and it would miss work done on other threads or on a GPU.
    """
    for session in sessions:
        _check_timeable(session)
    samples: list[dict[int, list[list[int]]]] = [{size: [] for size in BATCH_SIZES} for _ in sessions]
    for size in BATCH_SIZES:
        per_round = plan.runs_per_round(size)
        feeds = [_feeds(session, rows, size, per_round) for session in sessions]
        for index in range(plan.warmup_runs):
            for session, feed in zip(sessions, feeds, strict=True):
                session.run(None, feed[index % len(feed)])
        for _ in range(plan.rounds):
            timed = _round(sessions, feeds, per_round, plan.budget_s / (len(BATCH_SIZES) * plan.rounds))
            for model, runs in zip(samples, timed, strict=True):
                model[size].append(runs)
    return [summarise(model) for model in samples]


def _check_timeable(session: ort.InferenceSession) -> None:
    if provider_in_use(session) != CPU or session.get_session_options().intra_op_num_threads != 1:
        raise ValueError("latency is timed on the calling thread's CPU clock: open the session on the CPU, one thread")


def _feeds(session: ort.InferenceSession, rows: np.ndarray, size: int, count: int) -> list[dict[str, np.ndarray]]:
    """Up to 16 distinct batches of ``size`` rows, cycling through ``rows``; the runs reuse them in turn."""
    name, table = session.get_inputs()[0].name, model_inputs(session, rows)
    distinct = min(count, 16)
    cycled = np.resize(table, (size * distinct, *table.shape[1:]))  # a text model's rows have no second axis
    return [{name: np.ascontiguousarray(cycled[index * size : (index + 1) * size])} for index in range(distinct)]


def _round(
    sessions: Sequence[ort.InferenceSession], feeds: list[list[dict[str, np.ndarray]]], runs: int, budget_s: float
) -> list[list[int]]:
    """One round, the models taking turns run by run: per model, the CPU nanoseconds of each run."""
    timed: list[list[int]] = [[] for _ in sessions]
    deadline = time.perf_counter() + budget_s  # how long to spend, not what is measured
    for index in range(runs):
        for session, feed, found in zip(sessions, feeds, timed, strict=True):
            started = time.thread_time_ns()
            session.run(None, feed[index % len(feed)])
            found.append(time.thread_time_ns() - started)
        if index + 1 >= MIN_RUNS_PER_ROUND and time.perf_counter() > deadline:
            break
    return timed
