"""Parquet bench: the trainer learns from a generated Parquet dataset larger than it ever holds in memory.

    .venv/bin/python bench/parquet_training.py [--gigabytes 5] [--workers 1] [--bound-gb 1.5]

It writes ``--gigabytes`` of Parquet (``id``, an integer ``label`` of 4 classes that a linear rule of the
features decides, and 32 float32 features; files of ``--file-gigabytes``, row groups of 131,072 rows) under
a temporary folder, deleted after. While writing it counts the rows of the train part itself, from the keys.
Then it trains ONE epoch through the trainer's own ``run_training`` (the ``parquet:`` hook, the streaming
DataLoader, early stopping, export, verification, measurement: not a copy of the loop), with one torch
thread, as the trainer runs.

It prints the peak resident memory of the training against ``--bound-gb``: the proportional set size
(PSS) of the trainer process and its DataLoader workers, summed and sampled every 0.25 s (shared pages,
such as torch's libraries a forked worker shares, counted once), beside the kernel's exact high-water
marks of RSS (the data is written by a process of its own, so its buffers are not counted), and the rows
per second of the training phase (the statistics pass, the epoch, its streamed validation). It refuses to
print a rate when the rows the epoch read differ from the rows of the train part counted while writing.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.trainer.domain import StreamingOptions  # noqa: E402
from services.trainer.service import JobLimits, run_training  # noqa: E402
from shared.events import Hyperparameters, TrainingRequested  # noqa: E402
from shared.parquet_datasets import parts_of  # noqa: E402

FEATURES = 32
CLASSES = 4
ROW_GROUP_ROWS = 131_072
GIB = 1 << 30


def generate(folder: Path, gigabytes: float, file_gigabytes: float, seed: int = 7) -> tuple[int, int, int]:
    """Write the dataset; returns (rows, rows of the train part, bytes on disk)."""
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(FEATURES, CLASSES)).astype(np.float32)
    schema = pa.schema(
        [("id", pa.int64()), ("label", pa.int64()), *[(f"x{i:02d}", pa.float32()) for i in range(FEATURES)]]
    )
    rows = train_rows = written = 0
    file_index = 0
    while written < gigabytes * GIB:
        path = folder / f"part-{file_index:04d}.parquet"
        with pq.ParquetWriter(path, schema, compression="snappy") as writer:
            while path.stat().st_size < file_gigabytes * GIB and written + path.stat().st_size < gigabytes * GIB:
                ids = np.arange(rows, rows + ROW_GROUP_ROWS, dtype=np.int64)
                features = rng.standard_normal((ROW_GROUP_ROWS, FEATURES), dtype=np.float32)
                labels = np.argmax(features @ weights, axis=1).astype(np.int64)
                columns = [pa.array(ids), pa.array(labels), *[pa.array(features[:, i]) for i in range(FEATURES)]]
                writer.write_table(pa.Table.from_arrays(columns, schema=schema), row_group_size=ROW_GROUP_ROWS)
                train_rows += int(np.count_nonzero(parts_of(pa.array(ids)) == 0))
                rows += ROW_GROUP_ROWS
        written += path.stat().st_size
        file_index += 1
    return rows, train_rows, written


class TreeMemory:
    """Samples the proportional set size (PSS) of this process and its DataLoader workers, summed, and keeps the
    peak: shared pages (torch's libraries, which a forked worker shares) are counted once, not once per process."""

    def __init__(self, interval_s: float = 0.25) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval_s,), daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            self.peak = max(self.peak, sum(_pss(pid) for pid in _tree(os.getpid())))


def _tree(pid: int) -> list[int]:
    """A process and its descendants, from /proc (Linux)."""
    found = [pid]
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [grandchild for child in children.read_text().split() for grandchild in _tree(int(child))]
        except OSError:
            continue  # a thread or a worker that ended between the listing and the reading
    return found


def _pss(pid: int) -> int:
    """The proportional set size of a process in bytes (0 once it has ended)."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return 0
    return next((int(line.split()[1]) * 1024 for line in lines if line.startswith("Pss:")), 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--gigabytes", type=float, default=5.0, help="size of the dataset on disk")
    parser.add_argument("--file-gigabytes", type=float, default=0.5, help="size of each file")
    parser.add_argument("--workers", type=int, default=1, help="DataLoader worker processes")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--bound-gb", type=float, default=1.5, help="the peak resident memory it must stay under")
    parser.add_argument("--dir", type=Path, default=None, help="where the temporary folder goes")
    parser.add_argument("--generate-into", type=Path, default=None, help=argparse.SUPPRESS)  # the writer's own process
    args = parser.parse_args()
    if args.generate_into is not None:
        print(json.dumps(generate(args.generate_into, args.gigabytes, args.file_gigabytes)))
        return
    torch.set_num_threads(1)  # as the trainer runs (FERRY_TRAINER_TORCH_THREADS)
    root = Path(tempfile.mkdtemp(prefix="ferry-parquet-bench-", dir=args.dir))
    try:
        (root / "bench").mkdir()
        started = time.perf_counter()
        # Written by a process of its own: the writer's buffers are not the trainer's memory.
        command = [sys.executable, __file__, "--generate-into", str(root / "bench"), "--gigabytes", str(args.gigabytes)]
        command += ["--file-gigabytes", str(args.file_gigabytes)]
        written = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        rows, train_rows, size = json.loads(written.strip().splitlines()[-1])
        print(
            f"wrote {size / GIB:.2f} GiB: {rows:,} rows, {train_rows:,} in the train part "
            f"({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
        os.environ["FERRY_DATASETS_ROOT"] = str(root)
        (root / "work").mkdir()
        request = TrainingRequested(
            model_name="parquet-bench",
            dataset="parquet:bench",
            hyperparameters=Hyperparameters(epochs=1, patience=1, hidden_sizes=[64], batch_size=args.batch_size),
        )
        limits = JobLimits(budget_s=24 * 3600, streaming=StreamingOptions(loader_workers=args.workers))
        generator_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        with TreeMemory() as memory:
            trained = run_training(
                request, workdir=root / "work", progress=lambda report: print(report, flush=True), limits=limits
            )
        report(trained.metrics, trained.timings, train_rows, size, args.bound_gb, memory.peak, generator_peak)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def report(
    metrics: dict[str, float],
    timings: dict[str, float],
    train_rows: int,
    size: int,
    bound_gb: float,
    peak: int,
    generator_peak: int,
) -> None:
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kilobytes on Linux
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    worker = f"{children * 1024 / GIB:.2f} GiB" if children > generator_peak else "below the writer's"
    print(f"timings (s): {timings}")
    print(
        f"validation accuracy (first {metrics['measured_validation_rows']:,.0f} validation rows): "
        f"{metrics['val_accuracy']:.4f}"
    )
    print(
        f"peak resident memory: {peak / GIB:.2f} GiB (PSS of the trainer and its workers, summed, sampled every "
        f"0.25 s) for {size / GIB:.2f} GiB of Parquet; bound {bound_gb} GiB: "
        f"{'OK' if peak < bound_gb * GIB else 'EXCEEDED'}"
    )
    print(
        f"kernel high-water marks (RSS, shared pages counted in each): trainer {own / GIB:.2f} GiB, "
        f"largest worker {worker}"
    )
    read = int(metrics["train_rows"])
    if read != train_rows:
        print(f"REFUSED: the epoch read {read:,} rows, the train part has {train_rows:,}; no rate printed")
        raise SystemExit(1)
    print(f"rows read by the epoch: {read:,} = the train part's")
    print(
        f"rate: {read / timings['train']:,.0f} rows/s over the training phase ({timings['train']:.0f} s: "
        f"statistics pass, one epoch, its validation)"
    )
    if peak >= bound_gb * GIB:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
