"""A rule's value per group at one instant, computed over the series window as PromQL would."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from services.monitor.domain.drift import psi, shares
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
from services.monitor.domain.series import Labels, Series, SeriesStore

References = Callable[[str, str], Mapping[str, float] | None]
"""(model, version) -> the reference class shares of that version, or None when unknown."""


@dataclass(frozen=True)
class Observation:
    """A rule's value for one group (its grouping labels)."""

    labels: Labels
    value: float


def group_key(labels: Mapping[str, str], by: Iterable[str]) -> Labels:
    """The grouping labels of a series; empty values are dropped, as ``sum by`` does."""
    return tuple(sorted((name, labels[name]) for name in by if labels.get(name)))


def _sum_increase(store: SeriesStore, selector: Selector, by: Iterable[str], now: float, window_s: float) -> dict:
    by = tuple(by)
    sums: dict[Labels, float] = defaultdict(float)
    for series in store.select(selector.names, selector.match):
        increase = store.increase(series, now=now, window_s=window_s)
        if increase is not None:
            sums[group_key(series.labels, by)] += increase
    return dict(sums)


def counter_ratio(rule: CounterRatioRule, store: SeriesStore, now: float) -> list[Observation]:
    numerator = _sum_increase(store, rule.numerator, rule.group_by, now, rule.window_s)
    denominator = _sum_increase(store, rule.denominator, rule.group_by, now, rule.window_s)
    found = []
    for group, part in numerator.items():
        whole = denominator.get(group)
        if whole is None or whole < rule.min_denominator:
            continue
        found.append(Observation(group, _divide(part, whole)))
    return found


def _divide(part: float, whole: float) -> float:
    if whole == 0:
        return math.nan if part == 0 else math.copysign(math.inf, part)
    return part / whole


def histogram_quantile(rule: HistogramQuantileRule, store: SeriesStore, now: float) -> list[Observation]:
    buckets = _sum_increase(store, rule.histogram.with_suffix("_bucket"), [*rule.group_by, "le"], now, rule.window_s)
    per_group: dict[Labels, list[tuple[float, float]]] = defaultdict(list)
    for labels, count in buckets.items():
        named = dict(labels)
        try:
            upper = float(named.pop("le"))
        except (KeyError, ValueError):
            continue  # a bucket without a valid le: PromQL ignores it too
        per_group[tuple(sorted(named.items()))].append((upper, count))
    return [Observation(group, bucket_quantile(rule.quantile, pairs)) for group, pairs in per_group.items()]


def bucket_quantile(quantile: float, buckets: list[tuple[float, float]]) -> float:
    """PromQL's ``histogram_quantile`` over (upper bound, cumulative count) pairs."""
    buckets = sorted(buckets)
    if len(buckets) < 2 or not math.isinf(buckets[-1][0]):
        return math.nan
    for index in range(1, len(buckets)):  # cumulative counts never fall (float error can make them)
        if buckets[index][1] < buckets[index - 1][1]:
            buckets[index] = (buckets[index][0], buckets[index - 1][1])
    observations = buckets[-1][1]
    if observations <= 0:
        return math.nan
    rank = quantile * observations
    index = next(i for i, (_, count) in enumerate(buckets) if count >= rank)
    if index == len(buckets) - 1:
        return buckets[-2][0]
    if index == 0 and buckets[0][0] <= 0:
        return buckets[0][0]
    start, end, count = 0.0, buckets[index][0], buckets[index][1]
    if index > 0:
        start = buckets[index - 1][0]
        count -= buckets[index - 1][1]
        rank -= buckets[index - 1][1]
    return start + (end - start) * (rank / count) if count > 0 else end


_AGGREGATE: dict[str, Callable[[list[float]], float]] = {"max": max, "min": min, "sum": sum}


def gauge_threshold(rule: GaugeThresholdRule, store: SeriesStore, now: float) -> list[Observation]:
    values: dict[Labels, list[float]] = defaultdict(list)
    for series in store.select(rule.gauge.names, rule.gauge.match):
        value = store.latest(series)
        if value is not None:
            values[group_key(series.labels, rule.group_by)].append(value)
    aggregate = _AGGREGATE[rule.aggregate]
    return [Observation(group, aggregate(found)) for group, found in values.items()]


def live_classes(rule: DriftRule, store: SeriesStore, now: float) -> dict[Labels, dict[str, float]]:
    """Predictions per class over the window, per (model, version) group."""
    per_class = _sum_increase(store, rule.predictions, [*rule.group_by, rule.class_label], now, rule.window_s)
    grouped: dict[Labels, dict[str, float]] = defaultdict(dict)
    for labels, count in per_class.items():
        named = dict(labels)
        label = named.pop(rule.class_label, None)
        if label is not None:
            grouped[tuple(sorted(named.items()))][label] = count
    return dict(grouped)


def drift(rule: DriftRule, store: SeriesStore, now: float, references: References) -> list[Observation]:
    found = []
    for group, counts in live_classes(rule, store, now).items():
        named = dict(group)
        if sum(counts.values()) < rule.min_samples or "model" not in named or "version" not in named:
            continue
        reference = references(named["model"], named["version"])
        if not reference:
            continue  # no evaluation report for this version: nothing to compare with
        found.append(Observation(group, psi(shares(counts), reference, epsilon=rule.epsilon)))
    return found


def _latest_max(store: SeriesStore, selector: Selector, by: Iterable[str]) -> dict[Labels, float]:
    """The latest value of each series, the largest per group (several scrapes of one gauge agree)."""
    found: dict[Labels, float] = {}
    for series in store.select(selector.names, selector.match):
        value = store.latest(series)
        if value is not None:
            group = group_key(series.labels, by)
            found[group] = max(value, found.get(group, value))
    return found


def input_drift(rule: InputDriftRule, store: SeriesStore, now: float) -> list[Observation]:
    """The latest score per version (max over series: a scraped copy equals the monitor's own), where its
    window holds ``min_rows`` rows."""
    rows = _latest_max(store, rule.rows, rule.group_by)
    return [
        Observation(group, score)
        for group, score in _latest_max(store, rule.score, rule.group_by).items()
        if rows.get(group, 0.0) >= rule.min_rows
    ]


def online_accuracy(rule: OnlineAccuracyRule, store: SeriesStore, now: float) -> list[Observation]:
    """Online accuracy minus the evaluation's lower bound per version, once ``min_feedback`` answers are judged."""
    accuracy = _latest_max(store, rule.accuracy, rule.group_by)
    counts = _latest_max(store, rule.count, rule.group_by)
    bounds = _latest_max(store, rule.bound, rule.group_by)
    return [
        Observation(group, value - bounds[group])
        for group, value in accuracy.items()
        if group in bounds and counts.get(group, 0.0) >= rule.min_feedback
    ]


def evaluate(rule: BaseRule, store: SeriesStore, now: float, references: References) -> list[Observation]:
    """Every group's value of ``rule`` at ``now`` (breached or not)."""
    if isinstance(rule, CounterRatioRule):
        return counter_ratio(rule, store, now)
    if isinstance(rule, HistogramQuantileRule):
        return histogram_quantile(rule, store, now)
    if isinstance(rule, GaugeThresholdRule):
        return gauge_threshold(rule, store, now)
    if isinstance(rule, DriftRule):
        return drift(rule, store, now, references)
    if isinstance(rule, InputDriftRule):
        return input_drift(rule, store, now)
    if isinstance(rule, OnlineAccuracyRule):
        return online_accuracy(rule, store, now)
    raise TypeError(f"unknown rule kind: {type(rule).__name__}")


def drift_versions(rules: Iterable[BaseRule], store: SeriesStore, now: float) -> set[tuple[str, str]]:
    """The (model, version) pairs with live predictions: whose references the drift rules will ask for."""
    wanted: set[tuple[str, str]] = set()
    for rule in rules:
        if isinstance(rule, DriftRule):
            for group in live_classes(rule, store, now):
                named = dict(group)
                if "model" in named and "version" in named:
                    wanted.add((named["model"], named["version"]))
    return wanted


__all__ = ["Observation", "References", "Series", "evaluate", "drift_versions", "bucket_quantile"]
