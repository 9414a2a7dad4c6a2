"""``ferry compare``'s JSON (services/evaluator/cli.py, ``comparison_table``) as the Compare page shows it:
the table the command prints, each difference in words, and the differences as plot data."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from services.console.domain.reports import LATENCY_LABELS, METRIC_LABELS, label


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _difference_words(metric: str, item: Mapping[str, Any], baseline: Any, confidence: float) -> str:
    estimate, low, high = (_number(item.get(key)) for key in ("estimate", "low", "high"))
    if estimate is None or low is None or high is None:
        return f"{label(metric)}: no difference measured."
    verdict = "a real difference" if item.get("significant") else "within noise"
    words = (
        f"{label(metric)} {estimate:+.4f} against v{baseline}; with {confidence:.0%} confidence between "
        f"{low:+.4f} and {high:+.4f}: {verdict}."
    )
    p_value = _number(item.get("mcnemar_p"))
    discordant = item.get("discordant")
    if p_value is not None and isinstance(discordant, list) and len(discordant) == 2:
        words += (
            f" Of the rows exactly one of the two got right, this version got {discordant[0]} and v{baseline} "
            f"{discordant[1]} (McNemar's exact test: p = {p_value:.4f})."
        )
    return words


def fresh_view(table: Mapping[str, Any]) -> dict[str, Any]:
    """The table, the differences in words, and the plot of the differences (a bar [low, high], a dot)."""
    versions = [entry for entry in table.get("versions", []) if isinstance(entry, Mapping)]
    metrics = [name for name in METRIC_LABELS if all(name in entry.get("metrics", {}) for entry in versions)]
    latency = [name for name in LATENCY_LABELS if all(name in entry.get("latency_ms", {}) for entry in versions)]
    baseline, confidence = table.get("baseline"), float(table.get("confidence", 0.95))
    differences, labels, bars, estimates = [], [], [], []
    for entry in table.get("differences", []):
        compared = {name: item for name, item in entry.items() if isinstance(item, Mapping)}
        differences.append(
            {
                "version": entry.get("version"),
                "words": [_difference_words(name, item, baseline, confidence) for name, item in compared.items()],
            }
        )
        for name, item in compared.items():
            low, high, estimate = _number(item.get("low")), _number(item.get("high")), _number(item.get("estimate"))
            if low is not None and high is not None and estimate is not None:
                labels.append(f"v{entry.get('version')} {label(name)}")
                bars.append([low, high])
                estimates.append(estimate)
    return {
        "model": table.get("model"),
        "split_id": table.get("split_id"),
        "test_rows": table.get("test_rows"),
        "baseline": baseline,
        "versions": versions,
        "metrics": metrics,
        "latency": latency,
        "differences": differences,
        "warnings": [str(warning) for warning in table.get("warnings", [])],
        "plot": {"labels": labels, "bars": bars, "estimates": estimates, "label": f"difference against v{baseline}"},
    }
