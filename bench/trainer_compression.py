"""Trainer benchmark: what compression buys at serving time, as ratios to the fp32 ONNX model.

    .venv/bin/python bench/trainer_compression.py [--arch mlp|cnn] [--repeats 2000]

Trains one model on sklearn:digits (one torch thread), exports fp32 and int8, prunes a copy, and
times ONNX Runtime (one intra-op thread, the steadiest on small machines) at batch 1 and 64, plus
torch eager as the baseline people start from. Sizes and validation accuracy are printed beside.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.trainer.adapters.onnx_model import torch_probabilities  # noqa: E402
from services.trainer.adapters.torch_training import TrainingData, fit  # noqa: E402
from services.trainer.domain import accuracy, plan_training  # noqa: E402
from services.trainer.pipeline import load_split, run_training  # noqa: E402
from shared.events import Compression, TrainingRequested  # noqa: E402


def _median_us(run: object, repeats: int) -> float:
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()  # type: ignore[operator]
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1e6


def _session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def _time_onnx(path: Path, batches: dict[int, np.ndarray], repeats: int) -> dict[int, float]:
    session = _session(path)
    for batch in batches.values():
        session.run(None, {"input": batch})  # warm-up: the first run allocates
    return {size: _median_us(lambda b=b: session.run(None, {"input": b}), repeats) for size, b in batches.items()}


def _row(
    name: str, seconds: str, size: str, val_accuracy: float, times: dict[int, float], baseline: dict[int, float]
) -> str:
    return (
        f"{name:12} {seconds:>8} {size:>9} {val_accuracy:8.4f} "
        f"{times[1]:9.1f} {times[1] / baseline[1]:6.2f} {times[64]:9.1f} {times[64] / baseline[64]:6.2f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", choices=["mlp", "cnn"], default="mlp")
    parser.add_argument("--repeats", type=int, default=2000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = Path(tempfile.mkdtemp(prefix="ferry-bench-"))
    variants = {"fp32": Compression(), "int8": Compression(quantize="int8"), "pruned-50": Compression(prune=0.5)}
    parts = load_split(TrainingRequested(model_name="bench", dataset="sklearn:digits"))
    batches = {1: parts.validation.features[:1], 64: parts.validation.features[:64]}
    rows = {}
    for name, compression in variants.items():
        request = TrainingRequested(
            model_name="bench", dataset="sklearn:digits", arch=args.arch, compression=compression
        )
        (folder / name).mkdir()
        started = time.perf_counter()
        model = run_training(request, workdir=folder / name)
        seconds = time.perf_counter() - started
        rows[name] = (model, seconds, _time_onnx(model.path, batches, args.repeats))
    baseline = rows["fp32"][2]
    print(f"arch={args.arch}  ORT {ort.__version__}  torch {torch.__version__}  (medians; ratio = time / fp32 ORT)")
    print(
        f"{'variant':12} {'train s':>8} {'size KiB':>9} {'val acc':>8} "
        f"{'b=1 µs':>9} {'ratio':>6} {'b=64 µs':>9} {'ratio':>6}"
    )
    for name, (model, seconds, times) in rows.items():
        size = f"{model.path.stat().st_size / 1024:.1f}"
        print(_row(name, f"{seconds:.2f}", size, model.metrics["val_accuracy"], times, baseline))
    print(_torch_row(args, batches, baseline))
    return 0


def _torch_row(args: argparse.Namespace, batches: dict[int, np.ndarray], baseline: dict[int, float]) -> str:
    """torch eager on the same network: what serving without ONNX Runtime would cost."""
    request = TrainingRequested(model_name="bench", dataset="sklearn:digits", arch=args.arch)
    split = load_split(request)
    plan = plan_training(request, split.dataset, budget_s=600, max_world_size=1)
    data = TrainingData(split.train.features, split.train.labels, split.validation.features, split.validation.labels)
    classifier = fit(plan, data).classifier
    val_accuracy = accuracy(torch_probabilities(classifier, split.validation.features), split.validation.labels)
    repeats = max(1, args.repeats // 4)
    times = {size: _median_us(lambda b=b: torch_probabilities(classifier, b), repeats) for size, b in batches.items()}
    return _row("torch eager", "", "", val_accuracy, times, baseline)


if __name__ == "__main__":
    sys.exit(main())
