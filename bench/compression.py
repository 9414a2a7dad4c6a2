"""Compression benchmark: what each technique, and the whole pipeline, buys on sklearn:digits.

    .venv/bin/python bench/compression.py [--seeds 10] [--arch mlp cnn] [--epochs 300]

For the MLP and the CNN, every row is trained through the trainer's own ``run_training`` (one
torch thread) for each seed and scored on the held-out test split (which the trainer never sees):
accuracy as mean ± sd over the seeds, parameters, artifact bytes, and ONNX Runtime p50 latency at
batch 1 and 64 (the shared harness: CPU time, one intra-op thread, all of an architecture's seed-0
files timed in interleaved rounds), each beside the uncompressed baseline measured in the same run, as ratios.

The teacher of every distilled row is the CNN baseline of seed 0, as a champion would be. Whether a
distilled student beats the same student trained alone is judged on the per-seed differences (the same
seed, the same held-out rows): a one-sided paired t-test and a Wilcoxon signed-rank test, and the verdict
is worded by the t-test's p-value.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import onnxruntime as ort
import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.trainer.adapters.onnx_model import predict  # noqa: E402
from services.trainer.domain import Teacher, accuracy  # noqa: E402
from services.trainer.measure import time_files  # noqa: E402
from services.trainer.service import TrainedModel, load_split, run_training  # noqa: E402
from shared.datasets import Split  # noqa: E402
from shared.events import Compression, Hyperparameters, TrainingRequested  # noqa: E402
from shared.onnx import Latency, LatencyPlan  # noqa: E402

DATASET = "sklearn:digits"
TEACHER_NAME = "digits-cnn"
BENCH_TIMING = LatencyPlan(runs=1500, rounds=10, budget_s=60.0)
ALPHA = 0.05  # the level at which a gain is called beyond noise


@dataclass(frozen=True)
class Variant:
    """One row: an architecture and what is done to it."""

    name: str
    arch: str
    hidden: tuple[int, ...] = (256, 128)
    compression: Compression = field(default_factory=Compression)

    @property
    def distilled(self) -> bool:
        return self.compression.distill_from is not None


def variants(arch: str) -> list[Variant]:
    """The rows of one architecture: baseline first, then each technique, then the pipeline.

    Every row allows any accuracy drop: the bench measures what the trainer's guard would refuse.
    """
    student = (16,)
    pipeline_prune = 0.8 if arch == "mlp" else 0.9

    def compressed(**fields: object) -> Compression:
        return Compression(max_accuracy_drop=1.0, **fields)  # type: ignore[arg-type]

    return [
        Variant("baseline", arch),
        Variant("prune 50%", arch, compression=compressed(prune=0.5)),
        Variant("int8 static", arch, compression=compressed(quantize="int8-static")),
        Variant("int8 dynamic", arch, compression=compressed(quantize="int8-dynamic")),
        Variant(f"student {list(student)} alone", arch, student),
        Variant(f"student {list(student)} distilled", arch, student, compressed(distill_from=TEACHER_NAME)),
        Variant(
            f"pipeline: prune {pipeline_prune:.0%} + distill + int8",
            arch,
            compression=compressed(prune=pipeline_prune, distill_from=TEACHER_NAME, quantize="int8"),
        ),
    ]


@dataclass
class Row:
    """A variant's runs, one per seed."""

    variant: Variant
    runs: list[TrainedModel] = field(default_factory=list)
    test_accuracies: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


def train(variant: Variant, seed: int, epochs: int, teacher: Teacher | None, folder: Path) -> TrainedModel:
    folder.mkdir(parents=True)
    request = TrainingRequested(
        model_name="bench",
        dataset=DATASET,
        arch=variant.arch,
        hyperparameters=Hyperparameters(hidden_sizes=list(variant.hidden), epochs=epochs, seed=seed),
        compression=variant.compression,
    )
    return run_training(request, workdir=folder, teacher=teacher if variant.distilled else None)


def run_rows(
    arch: str, args: argparse.Namespace, parts: Split, root: Path, teacher: Teacher, teacher_row: Row
) -> list[Row]:
    rows = []
    for variant in variants(arch):
        if arch == "cnn" and variant.name == "baseline":  # the same runs as the teacher's: not twice
            rows.append(Row(variant, teacher_row.runs, teacher_row.test_accuracies, teacher_row.seconds))
            continue
        row = Row(variant)
        for seed in range(args.seeds):
            started = time.perf_counter()
            model = train(variant, seed, args.epochs, teacher, root / arch / f"{len(rows)}-{seed}")
            row.seconds.append(time.perf_counter() - started)
            row.runs.append(model)
            row.test_accuracies.append(accuracy(predict(model.path, parts.test.features), parts.test.labels))
        rows.append(row)
        print(f"  {arch} {variant.name}: {_mean_sd(row.test_accuracies)} in {sum(row.seconds):.0f} s", file=sys.stderr)
    return rows


def _mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def table(arch: str, rows: list[Row], latency: dict[str, Latency]) -> list[str]:
    base = rows[0]
    base_latency = latency[base.variant.name]
    base_acc = statistics.mean(base.test_accuracies)
    lines = [
        f"**{arch.upper()}** (baseline: hidden {list(base.variant.hidden)}; ratio = row / baseline)",
        "",
        "| variant | test accuracy | Δ acc | parameters | × | bytes | × | p50 b=1 µs | × | p50 b=64 µs | × |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        model = row.runs[0]
        params, size = int(model.metrics["parameters"]), model.path.stat().st_size
        times = latency[row.variant.name]
        lines.append(
            f"| {row.variant.name} | {_mean_sd(row.test_accuracies)} "
            f"| {statistics.mean(row.test_accuracies) - base_acc:+.4f} "
            f"| {params:,} | {params / base.runs[0].metrics['parameters']:.2f} "
            f"| {size:,} | {size / base.runs[0].path.stat().st_size:.2f} "
            f"| {times.b1.p50_ms * 1e3:.1f} | {times.b1.p50_ms / base_latency.b1.p50_ms:.2f} "
            f"| {times.b64.p50_ms * 1e3:.1f} | {times.b64.p50_ms / base_latency.b64.p50_ms:.2f} |"
        )
    return lines


def paired_gain(treated: Row, control: Row) -> str:
    """The mean per-seed gain of ``treated`` over ``control`` and whether it is beyond noise (bar: > 0)."""
    differences = [mine - theirs for mine, theirs in zip(treated.test_accuracies, control.test_accuracies, strict=True)]
    gain = statistics.mean(differences)
    spread = statistics.stdev(differences) if len(differences) > 1 else 0.0
    head = f"{gain:+.4f} (bar: > 0), the mean of {len(differences)} per-seed differences (sd {spread:.4f})"
    if len(differences) < 2 or len(set(differences)) == 1:
        return f"{head}: no paired test (too few seeds, or every seed the same difference)"
    t_p = float(stats.ttest_rel(treated.test_accuracies, control.test_accuracies, alternative="greater").pvalue)
    wins, losses = sum(d > 0 for d in differences), sum(d < 0 for d in differences)
    wilcoxon = "no differing seed"
    if wins + losses:
        wilcoxon = f"p={float(stats.wilcoxon(differences, zero_method='zsplit', alternative='greater').pvalue):.4f}"
    verdict = (
        f"beyond noise (p < {ALPHA})" if t_p < ALPHA else f"NOT shown beyond noise (p ≥ {ALPHA}): it may be chance"
    )
    return (
        f"{head}, better on {wins} seeds, worse on {losses}; one-sided paired t-test p={t_p:.4f}, "
        f"Wilcoxon signed-rank {wilcoxon}: {verdict}"
    )


def checks(rows: dict[str, list[Row]], latencies: dict[str, dict[str, Latency]], teacher_row: Row) -> list[str]:
    """The issue's bars, computed from the rows above (the teacher is the seed-0 CNN baseline)."""
    teacher_acc = teacher_row.test_accuracies[0]
    teacher_params = teacher_row.runs[0].metrics["parameters"]
    lines = []
    for arch, arch_rows in rows.items():
        base, pruned, static, dynamic, alone, distilled, pipeline = arch_rows
        drop = statistics.mean(pruned.test_accuracies) - statistics.mean(base.test_accuracies)
        smaller = pruned.runs[0].path.stat().st_size < base.runs[0].path.stat().st_size
        faster = latencies[arch][pruned.variant.name].faster_than(latencies[arch][base.variant.name])
        lines.append(
            f"- {arch} prune 50%: {drop:+.4f} vs the baseline (bar: within 0.01); smaller: {smaller}, "
            f"faster at b=1 and b=64: {faster}"
        )
        lines.append(
            f"- {arch} distilled student vs the same student trained alone: {paired_gain(distilled, alone)}; "
            f"{statistics.mean(distilled.test_accuracies) - teacher_acc:+.4f} vs the teacher "
            f"at 1/{teacher_params / distilled.runs[0].metrics['parameters']:.0f} of its parameters"
        )
        for row in (static, dynamic, pipeline):
            metrics = row.runs[0].metrics
            lines.append(
                f"- {arch} {row.variant.name}: int8 {metrics['size_bytes'] / metrics['fp32_size_bytes']:.2f}x the "
                f"fp32 bytes; its metrics say faster at b=1: {metrics['int8_faster_b1']:.0f}, at b=64: "
                f"{metrics['int8_faster_b64']:.0f}, int8_faster (both): {metrics['int8_faster']:.0f}"
            )
        lines.append(
            f"- {arch} pipeline: 1/{teacher_params / pipeline.runs[0].metrics['parameters']:.1f} of the teacher's "
            f"parameters (bar: ≥ 10×), {statistics.mean(pipeline.test_accuracies) - teacher_acc:+.4f} vs the "
            "teacher (bar: within 0.02)"
        )
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="seeds per row (the paired tests need several)")
    parser.add_argument("--arch", nargs="+", choices=["mlp", "cnn"], default=["cnn", "mlp"])
    parser.add_argument("--epochs", type=int, default=300, help="epoch cap of every run (early stopping ends it)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    parts = load_split(TrainingRequested(model_name="bench", dataset=DATASET))
    root = Path(tempfile.mkdtemp(prefix="ferry-bench-compression-"))
    started = time.perf_counter()
    teacher_row = Row(Variant("teacher", "cnn"))
    # the CNN baseline, trained once: seed 0 is the champion; the other seeds serve only the CNN's own rows
    for seed in range(args.seeds if "cnn" in args.arch else 1):
        teacher_row.runs.append(train(teacher_row.variant, seed, args.epochs, None, root / "teacher" / str(seed)))
        teacher_row.test_accuracies.append(
            accuracy(predict(teacher_row.runs[-1].path, parts.test.features), parts.test.labels)
        )
    teacher = Teacher(TEACHER_NAME, version=1, path=teacher_row.runs[0].path)
    results: dict[str, list[Row]] = {}
    latencies: dict[str, dict[str, Latency]] = {}
    for arch in args.arch:
        results[arch] = run_rows(arch, args, parts, root, teacher, teacher_row)
        paths = {row.variant.name: row.runs[0].path for row in results[arch]}
        latencies[arch] = time_files(paths, parts.validation.features, BENCH_TIMING)
    short = [row.variant.name for rows in results.values() for row in rows if len(row.test_accuracies) != args.seeds]
    if short:  # a mean over fewer seeds than claimed is not the number the header promises
        print(f"refusing to print: {short} have fewer than {args.seeds} seeds", file=sys.stderr)
        return 1
    print(
        f"sklearn:digits, test split ({len(parts.test.labels)} rows), seeds 0..{args.seeds - 1}, epoch cap "
        f"{args.epochs} (early stopping), one torch thread; ONNX Runtime {ort.__version__} CPU, one intra-op "
        f"thread, p50 CPU time of {BENCH_TIMING.rounds} interleaved rounds; torch {torch.__version__}; "
        f"{time.perf_counter() - started:.0f} s in all"
    )
    print(
        f"teacher of the distilled rows: the CNN baseline of seed 0, test accuracy "
        f"{teacher_row.test_accuracies[0]:.4f}, {int(teacher_row.runs[0].metrics['parameters']):,} parameters"
    )
    for arch in args.arch:
        print()
        print("\n".join(table(arch, results[arch], latencies[arch])))
    print()
    print("\n".join(checks(results, latencies, teacher_row)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
