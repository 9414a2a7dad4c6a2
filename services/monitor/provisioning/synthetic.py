"""Synthetic series that fire a rule, and series that keep it quiet: the input of the generated
``promtool test rules`` file, and (replayed into the monitor's own engine) of the test that both
engines agree on every rule."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

from services.monitor.domain.drift import psi
from services.monitor.domain.rules import (
    BaseRule,
    CounterRatioRule,
    DriftRule,
    GaugeThresholdRule,
    HistogramQuantileRule,
    InputDriftRule,
    OnlineAccuracyRule,
    Selector,
)
from services.monitor.domain.series import matches
from services.monitor.provisioning.promql import number

INTERVAL_S = 15
GROUP_VALUES = {"model": "digits", "version": "1", "job": "gateway", "instance": "127.0.0.1:8080", "group": "registry"}


@dataclass(frozen=True)
class SyntheticSeries:
    """``count + 1`` samples, one per interval: start, start + step, ..."""

    name: str
    labels: dict[str, str]
    start: float
    step: float
    count: int

    def notation(self) -> str:
        return f"{number(self.start)}+{number(self.step)}x{self.count}"

    def selector(self) -> str:
        inner = ", ".join(f'{key}="{value}"' for key, value in sorted(self.labels.items()))
        return f"{self.name}{{{inner}}}"

    def values(self) -> list[float]:
        return [self.start + self.step * index for index in range(self.count + 1)]


@dataclass(frozen=True)
class SyntheticCase:
    rule: BaseRule
    fires: bool
    series: list[SyntheticSeries]
    eval_s: int
    group: dict[str, str]
    value: float | None = None
    pending_s: int | None = None
    """An earlier instant at which the (breaching) condition is only pending: no alert yet."""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def title(self) -> str:
        return f"{self.rule.name}: {'fires' if self.fires else 'stays quiet'}"


def _first_match(pattern: str) -> str:
    """A label value that fully matches ``pattern`` (rules keep matchers to words and alternations)."""
    for candidate in [*pattern.split("|"), "ok", "other"]:
        if re.fullmatch(pattern, candidate):
            return candidate
    raise ValueError(f"cannot make up a label value matching {pattern!r}: keep matchers to a|b alternations")


def _labels(sel: Selector, group: dict[str, str]) -> dict[str, str]:
    return {**group, **{label: _first_match(pattern) for label, pattern in sel.match.items()}}


def _steps(rule: BaseRule) -> tuple[int, int, int | None]:
    """(eval time, samples, pending time) for a rule: the window filled and ``for`` well past."""
    eval_s = int(math.ceil((rule.window_s + rule.for_s) / INTERVAL_S) + 4) * INTERVAL_S
    pending = None
    if rule.for_s > 0:
        # A range rule is true from its second sample on, a gauge rule from its first.
        first_true = INTERVAL_S if rule.window_s > 0 else 0
        pending = first_true + int(rule.for_s / 2 // INTERVAL_S) * INTERVAL_S
    return eval_s, eval_s // INTERVAL_S + 4, pending


def _rest(rule: CounterRatioRule, group: dict[str, str], count: int, step: float) -> SyntheticSeries:
    """A denominator series that the numerator does not count."""
    other_names = [name for name in rule.denominator.names if name not in rule.numerator.names]
    labels = _labels(rule.denominator, group)
    if other_names:
        return SyntheticSeries(other_names[0], labels, 0, step, count)
    for label, pattern in rule.numerator.match.items():
        allowed = rule.denominator.match.get(label, ".*")
        candidates = [*allowed.split("|"), "ok", "other", "none"]
        labels[label] = next(c for c in candidates if re.fullmatch(allowed, c) and not re.fullmatch(pattern, c))
    return SyntheticSeries(rule.denominator.names[0], labels, 0, step, count)


def counter_ratio_case(rule: CounterRatioRule, fires: bool) -> SyntheticCase:
    eval_s, count, pending = _steps(rule)
    group = {label: GROUP_VALUES.get(label, f"test-{label}") for label in rule.group_by}
    ratio = (rule.threshold + 1) / 2 if fires else rule.threshold / 2
    per_step = max(100.0, 2 * rule.min_denominator)
    numerator = SyntheticSeries(rule.numerator.names[0], _labels(rule.numerator, group), 0, ratio * per_step, count)
    counted = numerator.name in rule.denominator.names and matches(numerator.labels, rule.denominator.match)
    rest = _rest(rule, group, count, (1 - ratio) * per_step if counted else per_step)
    return SyntheticCase(rule, fires, [numerator, rest], eval_s, group, ratio if fires else None, pending)


def histogram_case(rule: HistogramQuantileRule, fires: bool) -> SyntheticCase:
    eval_s, count, pending = _steps(rule)
    group = {label: GROUP_VALUES.get(label, f"test-{label}") for label in rule.group_by}
    low, high = rule.threshold / 2, rule.threshold * 2
    name = rule.histogram.names[0] + "_bucket"
    labels = _labels(rule.histogram, group)
    series = [
        SyntheticSeries(name, {**labels, "le": number(low)}, 0, 0 if fires else 10, count),
        SyntheticSeries(name, {**labels, "le": number(high)}, 0, 10, count),
        SyntheticSeries(name, {**labels, "le": "+Inf"}, 0, 10, count),
    ]
    value = low + (high - low) * rule.quantile if fires else None
    return SyntheticCase(rule, fires, series, eval_s, group, value, pending)


def gauge_case(rule: GaugeThresholdRule, fires: bool) -> SyntheticCase:
    eval_s, count, pending = _steps(rule)
    group = {label: GROUP_VALUES.get(label, f"test-{label}") for label in rule.group_by}
    margin = max(1.0, abs(rule.threshold))
    value = rule.threshold + (margin if rule.op == ">" else -margin) if fires else rule.threshold
    series = [SyntheticSeries(rule.gauge.names[0], _labels(rule.gauge, group), value, 0, count)]
    return SyntheticCase(rule, fires, series, eval_s, group, value if fires else None, pending)


def drift_case(rule: DriftRule, fires: bool) -> SyntheticCase:
    from services.monitor.provisioning.promql import DRIFT_REFERENCE_METRIC

    eval_s, count, pending = _steps(rule)
    group = {label: GROUP_VALUES.get(label, f"test-{label}") for label in rule.group_by}
    reference = {"0": 0.5, "1": 0.5}
    live = {"0": 0.9, "1": 0.1} if fires else {"0": 0.5, "1": 0.5}
    scale = max(10.0, math.ceil(2 * rule.min_samples / max(1.0, rule.window_s / INTERVAL_S)))
    labels = _labels(rule.predictions, group)
    series = [
        SyntheticSeries(DRIFT_REFERENCE_METRIC, {**group, rule.class_label: cls}, share, 0, count)
        for cls, share in reference.items()
    ] + [
        SyntheticSeries(rule.predictions.names[0], {**labels, rule.class_label: cls}, 0, share * scale, count)
        for cls, share in live.items()
    ]
    value = psi(live, reference, epsilon=rule.epsilon) if fires else None
    return SyntheticCase(rule, fires, series, eval_s, group, value, pending)


def input_drift_case(rule: InputDriftRule, fires: bool) -> SyntheticCase:
    eval_s, count, pending = _steps(rule)
    group = {label: GROUP_VALUES.get(label, f"test-{label}") for label in rule.group_by}
    score = min(1.0, rule.threshold + (1 - rule.threshold) / 2) if fires else rule.threshold / 2
    series = [
        SyntheticSeries(rule.score.names[0], _labels(rule.score, group), score, 0, count),
        SyntheticSeries(rule.rows.names[0], _labels(rule.rows, group), 2 * rule.min_rows, 0, count),
    ]
    return SyntheticCase(rule, fires, series, eval_s, group, score if fires else None, pending)


def online_accuracy_case(rule: OnlineAccuracyRule, fires: bool) -> SyntheticCase:
    eval_s, count, pending = _steps(rule)
    group = {label: GROUP_VALUES.get(label, f"test-{label}") for label in rule.group_by}
    bound = 0.9
    accuracy = bound + rule.threshold + (-0.25 if rule.op == "<" else 0.05) if fires else bound + rule.threshold
    series = [
        SyntheticSeries(rule.accuracy.names[0], _labels(rule.accuracy, group), accuracy, 0, count),
        SyntheticSeries(rule.bound.names[0], _labels(rule.bound, group), bound, 0, count),
        SyntheticSeries(rule.count.names[0], _labels(rule.count, group), 2 * rule.min_feedback, 0, count),
    ]
    return SyntheticCase(rule, fires, series, eval_s, group, accuracy - bound if fires else None, pending)


def cases(rule: BaseRule) -> list[SyntheticCase]:
    """A firing and a quiet case of the rule."""
    if isinstance(rule, CounterRatioRule):
        make: Any = counter_ratio_case
    elif isinstance(rule, HistogramQuantileRule):
        make = histogram_case
    elif isinstance(rule, GaugeThresholdRule):
        make = gauge_case
    elif isinstance(rule, DriftRule):
        make = drift_case
    elif isinstance(rule, InputDriftRule):
        make = input_drift_case
    elif isinstance(rule, OnlineAccuracyRule):
        make = online_accuracy_case
    else:
        raise TypeError(f"unknown rule kind: {type(rule).__name__}")
    return [make(rule, True), make(rule, False)]


def _duration(seconds: int) -> str:
    return f"{seconds // 60}m{seconds % 60}s" if seconds % 60 else f"{seconds // 60}m"


def rule_tests(rule: BaseRule, labels: dict[str, str], annotations: dict[str, str]) -> list[dict[str, Any]]:
    """The ``promtool test rules`` test groups of one rule."""
    tests = []
    for case in cases(rule):
        checks: list[dict[str, Any]] = []
        if case.fires and case.pending_s is not None:
            checks.append({"eval_time": _duration(case.pending_s), "alertname": rule.name, "exp_alerts": []})
        expected: list[dict[str, Any]] = []
        if case.fires:
            assert case.value is not None
            shown = {**annotations, "value": f"{case.value:.6g}"}
            expected.append({"exp_labels": {**case.group, **labels}, "exp_annotations": shown})
        checks.append({"eval_time": _duration(case.eval_s), "alertname": rule.name, "exp_alerts": expected})
        tests.append(
            {
                "name": case.title,
                "interval": f"{INTERVAL_S}s",
                "input_series": [{"series": s.selector(), "values": s.notation()} for s in case.series],
                "alert_rule_test": checks,
            }
        )
    return tests
