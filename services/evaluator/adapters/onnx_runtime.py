"""ONNX Runtime: a session from verified bytes, its signature as loaded, batched scoring, and latency.

Sessions run on the CPU with one intra-op thread: the evaluator compares two models' latency, and one
thread gives the steadiest tails on a shared machine (NOTES.md). Latency is measured interleaved —
one run of each model in turn — so that a burst of load on the machine hits both alike.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import onnxruntime as ort

from services.evaluator.domain.metrics import LatencySamples
from shared.events import Signature, TensorSpec

SCORING_BATCH = 4096
WARMUP_RUNS = 20
LATENCY_ROUNDS = 10
LATENCY_BUDGET_S = 1.0
"""Wall time all rounds at both batch sizes may take together, for all models (large models get fewer runs)."""
MIN_RUNS_PER_ROUND = 10
_DATATYPES = {
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(float16)": "FP16",
    "tensor(int64)": "INT64",
    "tensor(int32)": "INT32",
    "tensor(int8)": "INT8",
    "tensor(uint8)": "UINT8",
    "tensor(bool)": "BOOL",
}


class ModelUnloadable(Exception):
    """ONNX Runtime refused the bytes (not a model, unsupported operator, ...)."""


def _spec(node: ort.NodeArg) -> TensorSpec:
    shape = [dim if isinstance(dim, int) and dim >= 0 else -1 for dim in (node.shape or [])]
    return TensorSpec(name=node.name, datatype=_DATATYPES.get(node.type, node.type), shape=shape)


class OnnxModel:
    """One model in an ONNX Runtime session."""

    def __init__(self, data: bytes) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(data, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as error:  # noqa: BLE001 - ORT raises its own types for every kind of bad model
            raise ModelUnloadable(f"ONNX Runtime cannot load it: {str(error)[:300]}") from error
        self._input = self.session.get_inputs()[0].name
        self._output = self.session.get_outputs()[0].name

    @property
    def signature(self) -> Signature:
        """Inputs and outputs as the session sees them (dynamic axes as -1), in OIP v2 terms."""
        return Signature(
            inputs=[_spec(node) for node in self.session.get_inputs()],
            outputs=[_spec(node) for node in self.session.get_outputs()],
        )

    def predict(self, features: np.ndarray) -> np.ndarray:
        """The first output for every row, batched."""
        rows = np.ascontiguousarray(features, dtype=np.float32)
        outputs = [
            self.session.run([self._output], {self._input: rows[start : start + SCORING_BATCH]})[0]
            for start in range(0, len(rows), SCORING_BATCH)
        ]
        return np.concatenate(outputs, axis=0)

    def run_once(self, batch: np.ndarray) -> tuple[float, float]:
        """Wall-clock and CPU seconds of one ``session.run`` of ``batch``.

        With one intra-op thread ONNX Runtime computes on the calling thread, so the thread's CPU
        clock counts the model's work and none of the time the scheduler gave the core to others.
        """
        wall, cpu = time.perf_counter(), time.thread_time()
        self.session.run([self._output], {self._input: batch})
        return time.perf_counter() - wall, time.thread_time() - cpu


def _batches(features: np.ndarray, size: int, count: int) -> list[np.ndarray]:
    rows = np.ascontiguousarray(features, dtype=np.float32)
    repeats = -(-size * count // max(len(rows), 1))
    cycled = np.concatenate([rows] * max(repeats, 1))
    return [np.ascontiguousarray(cycled[index * size : (index + 1) * size]) for index in range(count)]


def measure_latency(
    models: Sequence[OnnxModel],
    features: np.ndarray,
    runs: int,
    *,
    rounds: int = LATENCY_ROUNDS,
    budget_s: float = LATENCY_BUDGET_S,
) -> list[LatencySamples]:
    """Per model, ``runs`` runs at batch 1 and half as many at batch 64, in ``rounds`` rounds.

    The models take turns run by run, so load on the machine hits them alike. Each round stops early
    when it has used its share of ``budget_s`` (large models), and says how many runs it made.
    """
    measured: dict[int, list[tuple[list[list[float]], list[list[float]]]]] = {}
    for size, count in ((1, runs), (64, max(20, runs // 2))):
        batches = _batches(features, size, max(count, MIN_RUNS_PER_ROUND * rounds))
        for batch in batches[:WARMUP_RUNS]:
            for model in models:
                model.run_once(batch)
        per_round = max(MIN_RUNS_PER_ROUND, count // rounds)
        measured[size] = [
            _round(models, batches[start : start + per_round], budget_s / (2 * rounds))
            for start in range(0, per_round * rounds, per_round)
        ]
    return [
        LatencySamples(
            batch_1=[wall[index] for wall, _ in measured[1]],
            batch_64=[wall[index] for wall, _ in measured[64]],
            cpu_batch_1=[cpu[index] for _, cpu in measured[1]],
            cpu_batch_64=[cpu[index] for _, cpu in measured[64]],
        )
        for index in range(len(models))
    ]


def _round(
    models: Sequence[OnnxModel], batches: list[np.ndarray], budget_s: float
) -> tuple[list[list[float]], list[list[float]]]:
    """One round: per model, the wall-clock and the CPU seconds of each run."""
    walls: list[list[float]] = [[] for _ in models]
    cpus: list[list[float]] = [[] for _ in models]
    deadline = time.perf_counter() + budget_s
    for batch in batches:
        for index, model in enumerate(models):
            wall, cpu = model.run_once(batch)
            walls[index].append(wall)
            cpus[index].append(cpu)
        if time.perf_counter() > deadline and len(walls[0]) >= MIN_RUNS_PER_ROUND:
            break
    return walls, cpus
