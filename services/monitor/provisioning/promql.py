"""PromQL for every rule kind, generated from the same rules the monitor evaluates itself.

Each rule has a *value* expression (what the monitor computes per group) and a *condition* (the
value compared with the threshold): Prometheus alerts on the condition, Grafana queries the value
and applies the threshold in its own expression step.

Drift is PSI in plain PromQL. The live shares come from the gateway's prediction counters; the
reference shares, which only the registry knows, are exported by the monitor as the gauge
``ferry_monitor_drift_reference{model,version,class}``. Each side is filled with 0 where only the
other has a class (``or``), floored at epsilon (``clamp_min``), and
``sum by (model, version) ((live - ref) * ln(live / ref))`` is the index, judged only where the
window holds ``min_samples`` predictions and a reference exists.

Input drift is computed by the monitor from logged inputs (only it holds them) and exported as
``ferry_monitor_input_drift_score{model,version}`` with the rows it rests on: both engines read those
gauges, the monitor from its own window, Prometheus from its scrape of the monitor.

Online accuracy is the monitor's gauge minus the evaluated bound it exports beside it, per version, judged
only where the count of judged answers reaches ``min_feedback``; ``max`` makes several scrapes of one gauge
(every monitor replica's) one value, as the monitor's own engine does.
"""

from __future__ import annotations

import re

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

DRIFT_REFERENCE_METRIC = "ferry_monitor_drift_reference"
_PLAIN = re.compile(r"^[A-Za-z0-9_:-]*$")


def number(value: float) -> str:
    """A PromQL number literal with no precision lost (0.05, 1000, 1e-04)."""
    return f"{value:.15g}"


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def selector(sel: Selector) -> str:
    """``name{label=~"re"}``, or ``{__name__=~"a|b", ...}`` for several names."""
    matchers = [f"{label}{'=' if _PLAIN.match(value) else '=~'}{_quote(value)}" for label, value in sel.match.items()]
    if len(sel.names) == 1:
        return sel.names[0] + ("{" + ", ".join(matchers) + "}" if matchers else "")
    return "{" + ", ".join([f"__name__=~{_quote('|'.join(sel.names))}", *matchers]) + "}"


def _by(labels: list[str]) -> str:
    return f"sum by ({', '.join(labels)})" if labels else "sum"


def _increase(sel: Selector, by: list[str], window: str) -> str:
    """The summed increase; several metric names are summed apiece, then added where either exists
    (``increase`` drops the name, so one selector over both could hold clashing label sets)."""
    parts = [
        f"{_by(by)} (increase({selector(Selector(metric=name, match=sel.match))}[{window}]))" for name in sel.names
    ]
    if len(parts) == 1:
        return parts[0]
    union = "(" + " or ".join(parts) + ")"
    return "(" + " + ".join(f"({part} or 0 * {union})" for part in parts) + ")"


def counter_ratio(rule: CounterRatioRule) -> str:
    ratio = (
        f"{_increase(rule.numerator, rule.group_by, rule.window)}\n  /\n"
        f"{_increase(rule.denominator, rule.group_by, rule.window)}"
    )
    if rule.min_denominator > 0:
        ratio += f"\n  and\n{_increase(rule.denominator, rule.group_by, rule.window)} >= {number(rule.min_denominator)}"
    return ratio


def histogram_quantile(rule: HistogramQuantileRule) -> str:
    buckets = selector(rule.histogram.with_suffix("_bucket"))
    by = _by(["le", *rule.group_by])
    return f"histogram_quantile({number(rule.quantile)}, {by} (rate({buckets}[{rule.window}])))"


def gauge_threshold(rule: GaugeThresholdRule) -> str:
    by = f" by ({', '.join(rule.group_by)})" if rule.group_by else ""
    return f"{rule.aggregate}{by} ({selector(rule.gauge)})"


def drift(rule: DriftRule) -> str:
    groups = ", ".join(rule.group_by)
    per_class = ", ".join([*rule.group_by, rule.class_label])
    counts = f"increase({selector(rule.predictions)}[{rule.window}])"
    live = f"(sum by ({per_class}) ({counts}) / on ({groups}) group_left sum by ({groups}) ({counts}))"
    reference = f"max by ({per_class}) ({DRIFT_REFERENCE_METRIC})"
    eps = number(rule.epsilon)
    live_filled = f"clamp_min({live} or 0 * {reference}, {eps})"
    reference_filled = f"clamp_min({reference} or 0 * {live}, {eps})"
    return (
        f"sum by ({groups}) (\n  ({live_filled} - {reference_filled})\n"
        f"  * ln({live_filled} / {reference_filled})\n)\n"
        f"  and on ({groups}) sum by ({groups}) ({counts}) >= {number(rule.min_samples)}\n"
        f"  and on ({groups}) count by ({groups}) ({DRIFT_REFERENCE_METRIC})"
    )


def input_drift(rule: InputDriftRule) -> str:
    groups = ", ".join(rule.group_by)
    return (
        f"max by ({groups}) ({selector(rule.score)})\n"
        f"  and on ({groups}) max by ({groups}) ({selector(rule.rows)}) >= {number(rule.min_rows)}"
    )


def online_accuracy(rule: OnlineAccuracyRule) -> str:
    groups = ", ".join(rule.group_by)
    by = f"max by ({groups})"
    return (
        f"{by} ({selector(rule.accuracy)})\n  - on ({groups})\n{by} ({selector(rule.bound)})\n"
        f"  and on ({groups}) {by} ({selector(rule.count)}) >= {number(rule.min_feedback)}"
    )


def value_expression(rule: BaseRule) -> str:
    """The rule's value per group, in PromQL."""
    if isinstance(rule, CounterRatioRule):
        return counter_ratio(rule)
    if isinstance(rule, HistogramQuantileRule):
        return histogram_quantile(rule)
    if isinstance(rule, GaugeThresholdRule):
        return gauge_threshold(rule)
    if isinstance(rule, DriftRule):
        return drift(rule)
    if isinstance(rule, InputDriftRule):
        return input_drift(rule)
    if isinstance(rule, OnlineAccuracyRule):
        return online_accuracy(rule)
    raise TypeError(f"unknown rule kind: {type(rule).__name__}")


def condition(rule: BaseRule) -> str:
    """The alert condition: the value compared with the threshold."""
    return f"(\n{value_expression(rule)}\n) {rule.op} {number(rule.threshold)}"


def metric_names(expression: str) -> set[str]:
    """The metric names an expression reads (for checking them against what the services expose)."""
    names = set(re.findall(r"\b(ferry_[a-z0-9_]+|up)\b", expression))
    for group in re.findall(r'__name__=~"([^"]+)"', expression):
        names.update(group.split("|"))
    return names
