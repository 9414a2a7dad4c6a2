"""An evaluation report made readable: the intervals as plot data, the paired tests in words, the
confusion matrices side by side, the policy's checks; and N versions side by side for Compare.

Reports are the evaluator's JSON as the registry stores it (services/evaluator/domain/report.py); a
field a report lacks is shown as absent, never guessed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from shared.registry_models import EvaluationOut, VersionOut

METRIC_LABELS = {
    "accuracy": "accuracy",
    "f1_macro": "macro F1",
    "precision_macro": "macro precision",
    "recall_macro": "macro recall",
    "roc_auc": "ROC AUC",
    "log_loss": "log loss",
    "ece": "calibration error (ECE)",
}
LATENCY_LABELS = {
    "latency_b1_p50_ms": "p50 CPU ms, batch 1",
    "latency_b1_p99_ms": "p99 CPU ms, batch 1",
    "latency_b64_p50_ms": "p50 CPU ms, batch 64",
    "latency_b64_p99_ms": "p99 CPU ms, batch 64",
}


def label(metric: str) -> str:
    return METRIC_LABELS.get(metric, LATENCY_LABELS.get(metric, metric.replace("_", " ")))


def _section(report: Mapping[str, Any], role: str) -> Mapping[str, Any]:
    found = report.get(role)
    return found if isinstance(found, Mapping) else {}


def _interval(found: Any) -> tuple[float, float, float] | None:
    if not isinstance(found, Mapping):
        return None
    try:
        return float(found["estimate"]), float(found["low"]), float(found["high"])
    except (KeyError, TypeError, ValueError):
        return None


def ci_plot(report: Mapping[str, Any]) -> dict[str, Any]:
    """Chart.js data for the metrics' confidence intervals: per model a floating bar [low, high] and a
    point at the estimate, one category per metric the candidate has an interval for."""
    candidate = _section(report, "candidate")
    metrics = [name for name in candidate.get("intervals", {}) if _interval(candidate["intervals"][name])]
    datasets = []
    for role in ("candidate", "champion"):
        section = _section(report, role)
        intervals = section.get("intervals", {})
        if not isinstance(intervals, Mapping) or not intervals:
            continue
        found = [_interval(intervals.get(name)) for name in metrics]
        datasets.append(
            {
                "label": f"v{section.get('version', '?')} ({role})",
                "role": role,
                "bars": [[item[1], item[2]] if item else None for item in found],
                "estimates": [item[0] if item else None for item in found],
            }
        )
    return {"labels": [label(name) for name in metrics], "metrics": metrics, "datasets": datasets}


def difference_plot(report: Mapping[str, Any]) -> dict[str, Any]:
    """Chart.js data for the paired differences (candidate − champion): a bar [low, high] and the estimate."""
    comparisons = [(name, _interval(item.get("difference"))) for name, item in _comparisons(report)]
    shown = [(name, found) for name, found in comparisons if found]
    return {
        "labels": [label(name) for name, _ in shown],
        "bars": [[found[1], found[2]] for _, found in shown],
        "estimates": [found[0] for _, found in shown],
        "label": "difference (candidate − champion)",
    }


def _comparisons(report: Mapping[str, Any]) -> list[tuple[str, Mapping[str, Any]]]:
    found = report.get("comparison")
    if not isinstance(found, Mapping):
        return []
    return [(name, item) for name, item in found.items() if isinstance(item, Mapping)]


@dataclass(frozen=True)
class PairedTest:
    """One metric's paired comparison, with the sentences that explain it."""

    metric: str
    estimate: float
    low: float
    high: float
    confidence: float
    verdict: str
    interval_words: str
    mcnemar_words: str | None
    summary: str


def paired_tests(report: Mapping[str, Any]) -> list[PairedTest]:
    """The paired difference of each metric, and McNemar's test where there is one, in plain words."""
    tests = []
    for name, item in _comparisons(report):
        found = _interval(item.get("difference"))
        if found is None:
            continue
        estimate, low, high = found
        confidence = float(item.get("confidence", 0.95))
        if low > 0:
            verdict = "better"
        elif high < 0:
            verdict = "worse"
        else:
            verdict = "no clear difference"
        words = (
            f"The candidate's {label(name)} is {estimate:+.4f} against the champion's on the same rows; "
            f"with {confidence:.0%} confidence the true difference lies between {low:+.4f} and {high:+.4f}"
            + (
                " — the interval includes 0, so the difference may be chance."
                if verdict == "no clear difference"
                else "."
            )
        )
        tests.append(
            PairedTest(
                name,
                estimate,
                low,
                high,
                confidence,
                verdict,
                words,
                _mcnemar_words(item.get("mcnemar")),
                str(item.get("summary", "")),
            )
        )
    return tests


def _mcnemar_words(found: Any) -> str | None:
    if not isinstance(found, Mapping):
        return None
    try:
        candidate, champion, p_value = (
            int(found["candidate_only"]),
            int(found["champion_only"]),
            float(found["p_value"]),
        )
    except (KeyError, TypeError, ValueError):
        return None
    chance = "unlikely to be chance" if p_value < 0.05 else "could well be chance"
    return (
        f"Of the {candidate + champion} rows exactly one model got right, the candidate got {candidate} and the "
        f"champion {champion}. McNemar's exact test gives p = {p_value:.4f}: a split this uneven {chance}."
    )


@dataclass(frozen=True)
class Confusion:
    """One model's confusion matrix: rows are the true classes, columns the predicted ones."""

    title: str
    classes: list[str]
    rows: list[list[int]]
    top: int = field(default=0)


def confusions(report: Mapping[str, Any]) -> list[Confusion]:
    """The candidate's and the champion's confusion matrices, side by side."""
    classes = [str(name) for name in report.get("classes", [])]
    found = []
    for role in ("candidate", "champion"):
        section = _section(report, role)
        matrix = section.get("confusion_matrix")
        if not isinstance(matrix, list) or not matrix:
            continue
        rows = [[int(cell) for cell in row] for row in matrix]
        names = classes if len(classes) == len(rows) else [str(number) for number in range(len(rows))]
        top = max((cell for row in rows for cell in row), default=0)
        found.append(Confusion(f"v{section.get('version', '?')} ({role})", names, rows, top))
    return found


def checks(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The policy's checks: name, passed, and the detail saying why."""
    decision = report.get("decision")
    listed = decision.get("checks", []) if isinstance(decision, Mapping) else []
    return [
        {"name": str(item.get("name", "")), "passed": bool(item.get("passed")), "detail": str(item.get("detail", ""))}
        for item in listed
        if isinstance(item, Mapping)
    ]


@dataclass(frozen=True)
class CompareColumn:
    """One version on the Compare page."""

    version: int
    status: str
    size_bytes: int
    metrics: dict[str, float]
    latency: dict[str, float]
    intervals: dict[str, tuple[float, float, float] | None]
    paired: list[PairedTest] | None
    """Its recorded paired comparison against the first version (None when the evaluator never made one)."""


def _own(reports: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The version's own section of its newest report (it was the candidate there)."""
    return next((_section(report, "candidate") for report in reports if _section(report, "candidate")), {})


def held_out_metrics(found: VersionOut, reports: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """The evaluator's metrics of the version on the held-out split (its newest report), over what the registry
    keeps from training (validation metrics: ``val_accuracy`` and the like)."""
    measured = _own(reports).get("metrics")
    scored = (
        {k: float(v) for k, v in measured.items() if isinstance(v, int | float)}
        if isinstance(measured, Mapping)
        else {}
    )
    return {**found.metrics, **scored}


def _column(found: VersionOut, reports: Sequence[Mapping[str, Any]], metrics: list[str], base: int) -> CompareColumn:
    own = _own(reports)
    intervals = own.get("intervals", {}) if isinstance(own.get("intervals"), Mapping) else {}
    latency = own.get("latency_ms", {}) if isinstance(own.get("latency_ms"), Mapping) else {}
    paired = next((report for report in reports if _section(report, "champion").get("version") == base), None)
    return CompareColumn(
        version=found.version,
        status=found.status,
        size_bytes=found.artifact.size_bytes,
        metrics={name: held_out_metrics(found, reports)[name] for name in metrics},
        latency={name: float(latency[name]) for name in LATENCY_LABELS if isinstance(latency.get(name), int | float)},
        intervals={name: _interval(intervals.get(name)) for name in metrics},
        paired=paired_tests(paired) if paired is not None and found.version != base else None,
    )


def compare(versions: Sequence[VersionOut], evaluations: Mapping[int, Sequence[EvaluationOut]]) -> dict[str, Any]:
    """N versions side by side: metrics and size from the registry, each metric's interval and the latency from
    the version's newest report, and the recorded paired comparison against the first version where one exists."""
    if not versions:
        return {"baseline": None, "metrics": [], "latency": [], "columns": [], "plot": {"labels": [], "datasets": []}}
    reports = {found.version: [e.report for e in evaluations.get(found.version, ())] for found in versions}
    scored = [held_out_metrics(found, reports[found.version]) for found in versions]
    metrics = [name for name in METRIC_LABELS if all(name in each for each in scored)]
    base = versions[0].version
    columns = [_column(found, reports[found.version], metrics, base) for found in versions]
    latency = [name for name in LATENCY_LABELS if all(name in column.latency for column in columns)]

    def bar(column: CompareColumn, name: str) -> list[float] | None:
        found = column.intervals[name]
        return [found[1], found[2]] if found else None

    plot = {
        "labels": [label(name) for name in metrics],
        "datasets": [
            {
                "label": f"v{column.version}",
                "bars": [bar(column, name) for name in metrics],
                "estimates": [column.metrics[name] for name in metrics],
            }
            for column in columns
        ],
    }
    return {"baseline": base, "metrics": metrics, "latency": latency, "columns": columns, "plot": plot}
