"""``ferry compare MODEL V1 V2 [V3 ...]``: several versions on the same held-out split, side by side,
each difference against the first version with its paired significance."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from shared.settings import FerrySettings

ROWS = (
    ("accuracy", "accuracy", "{:.4f}"),
    ("f1_macro", "macro F1", "{:.4f}"),
    ("precision_macro", "macro precision", "{:.4f}"),
    ("recall_macro", "macro recall", "{:.4f}"),
    ("log_loss", "log loss", "{:.4f}"),
    ("ece", "ECE", "{:.4f}"),
    ("roc_auc", "ROC AUC", "{:.4f}"),
    ("rmse", "RMSE", "{:.4f}"),
    ("mae", "MAE", "{:.4f}"),
    ("r2", "R²", "{:.4f}"),
    ("mean_error", "mean error", "{:+.4f}"),
)
LATENCY_ROWS = (
    ("latency_b1_p50_ms", "p50 CPU ms, batch 1"),
    ("latency_b1_p99_ms", "p99 CPU ms, batch 1"),
    ("latency_b64_p50_ms", "p50 CPU ms, batch 64"),
    ("latency_b64_p99_ms", "p99 CPU ms, batch 64"),
)


def register(subparsers: Any) -> dict[str, Callable[[argparse.Namespace, FerrySettings], int]]:
    """The evaluator's contribution to the ``ferry`` command (entry point ``ferry.commands``)."""
    parser = subparsers.add_parser("compare", help="evaluate versions of a model side by side on the held-out split")
    parser.add_argument("model", help="model name")
    parser.add_argument("versions", nargs="+", type=int, help="two or more version numbers; the first is the baseline")
    parser.add_argument("--json", action="store_true", help="print the comparison as JSON")
    parser.add_argument("--latency-runs", type=int, default=None, help="timed runs at batch 1 per version")
    return {"compare": run_compare}


def run_compare(args: argparse.Namespace, settings: FerrySettings, out: TextIO | None = None) -> int:
    """Load every version through the registry and the store, score them on one split, print the table."""
    from services.evaluator.adapters.artifact_store import ModelLoader
    from services.evaluator.adapters.registry import RegistryRecords
    from services.evaluator.service import DatasetSplits, Stopwatch, Unscorable, compare, open_model, score_all
    from services.evaluator.settings import EvaluatorSettings
    from shared.artifacts import ArtifactStore
    from shared.datasets import DatasetError
    from shared.registry_client import RegistryClient
    from shared.registry_errors import InvalidModelName, RegistryError

    out = out or sys.stdout
    if len(args.versions) < 2 or len(set(args.versions)) != len(args.versions):
        print("ferry compare needs two or more distinct versions", file=sys.stderr)
        return 2
    evaluator = EvaluatorSettings(ferry=settings)
    policy = evaluator.policy()
    registry = RegistryRecords(RegistryClient.connect(evaluator.registry_url, timeout_s=evaluator.registry_timeout_s))
    try:
        records = [registry.version(args.model, number) for number in args.versions]
    except InvalidModelName as error:
        print(error, file=sys.stderr)
        return 2
    except RegistryError as error:
        print(f"cannot read the registry: {error}", file=sys.stderr)
        return 1
    finally:
        registry.close()
    missing = [number for number, record in zip(args.versions, records, strict=True) if record is None]
    if missing:
        print(f"{args.model} has no version {', '.join(map(str, missing))} in the registry", file=sys.stderr)
        return 2
    found = [record for record in records if record is not None]
    datasets = sorted({record.dataset for record in found})
    if len(datasets) != 1:
        print(
            f"the versions were trained on different datasets ({', '.join(datasets)}): not comparable", file=sys.stderr
        )
        return 2
    loader = ModelLoader(ArtifactStore.from_settings(settings))
    try:
        test = DatasetSplits()(datasets[0], task=found[0].signature.task)
        models = [(record, open_model(loader, record, test)) for record in found]
        scored = score_all(models, test, args.latency_runs or evaluator.latency_runs, Stopwatch())
    except (DatasetError, Unscorable) as error:
        print(f"cannot compare: {error}", file=sys.stderr)
        return 1
    baseline = scored[0]
    comparisons = [compare(other, baseline, test, policy) for other in scored[1:]]
    table = comparison_table(
        args.model, test.split_id, len(test.test), scored, comparisons, policy.confidence, policy.alpha
    )
    stale = [record.version for record in found if record.split_id != test.split_id]
    if stale:
        table["warnings"] = [
            f"v{number} was trained on another split: its test rows may include its training rows" for number in stale
        ]
    if args.json:
        from services.evaluator.domain.metrics import json_safe

        print(json.dumps(json_safe(table), indent=2), file=out)
    else:
        print_table(table, out)
    return 0


def comparison_table(
    model: str,
    split_id: str,
    rows: int,
    scored: Sequence[Any],
    comparisons: Sequence[Any],
    confidence: float,
    alpha: float,
) -> dict[str, Any]:
    """The comparison as data: per-version metrics and each version's differences against the first."""
    from services.evaluator.domain.statistics import PairedComparison

    def difference(item: PairedComparison) -> dict[str, Any]:
        significant = item.difference.low > 0 or item.difference.high < 0
        mcnemar = item.mcnemar
        if mcnemar is not None and item.metric == "accuracy":
            significant = mcnemar.p_value < alpha
        found: dict[str, Any] = {
            "estimate": item.difference.estimate,
            "low": item.difference.low,
            "high": item.difference.high,
            "mcnemar_p": mcnemar.p_value if mcnemar is not None and item.metric == "accuracy" else None,
            "significant": significant,
        }
        if mcnemar is not None:
            found["discordant"] = [mcnemar.candidate_only, mcnemar.champion_only]
        else:  # a regressor: the difference of resampled per-row errors, candidate minus champion
            found["lower_is_better"] = item.lower_is_better
        return found

    return {
        "model": model,
        "split_id": split_id,
        "test_rows": rows,
        "confidence": confidence,
        "alpha": alpha,
        "versions": [
            {
                "version": found.record.version,
                "metrics": dict(found.metrics),
                "latency_ms": dict(found.latency),
                "size_bytes": found.record.artifact.size_bytes,
                "format": found.record.artifact.format,
            }
            for found in scored
        ],
        "baseline": scored[0].record.version,
        "differences": [
            {"version": found.record.version, **{metric: difference(item) for metric, item in pair.items()}}
            for found, pair in zip(scored[1:], comparisons, strict=True)
        ],
    }


def print_table(table: dict[str, Any], out: TextIO) -> None:
    versions = table["versions"]
    width = 14
    print(
        f"{table['model']}: {len(versions)} versions on held-out split {table['split_id']} "
        f"({table['test_rows']} rows, the same rows for every version)",
        file=out,
    )
    print(f"{'':22}" + "".join(f"{'v' + str(entry['version']):>{width}}" for entry in versions), file=out)
    for key, label, form in ROWS:
        if all(key in entry["metrics"] for entry in versions):
            print(f"{label:22}" + "".join(f"{form.format(e['metrics'][key]):>{width}}" for e in versions), file=out)
    for key, label in LATENCY_ROWS:
        if not all(key in entry["latency_ms"] for entry in versions):
            continue
        print(f"{label:22}" + "".join(f"{entry['latency_ms'][key]:>{width}.3f}" for entry in versions), file=out)
    print(f"{'size KB':22}" + "".join(f"{entry['size_bytes'] / 1024:>{width}.1f}" for entry in versions), file=out)
    level = f"{table['confidence']:.0%}"
    print(
        f"\ndifferences against v{table['baseline']} (paired bootstrap {level} CI; exact McNemar for accuracy; "
        "per-row errors for a regressor):",
        file=out,
    )
    for entry in table["differences"]:
        for metric in [key for key in entry if key != "version"]:
            item = entry[metric]
            test = f"McNemar p={item['mcnemar_p']:.4f}" if item["mcnemar_p"] is not None else "bootstrap"
            verdict = "significant" if item["significant"] else "not significant (noise)"
            interval = f"CI {item['low']:+.4f}..{item['high']:+.4f}"
            print(
                f"  v{entry['version']} {metric:9} {item['estimate']:+.4f}  {interval}  {test:18} {verdict}", file=out
            )
    for warning in table.get("warnings", []):
        print(f"warning: {warning}", file=out)
