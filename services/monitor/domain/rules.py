"""Alert rules as the rules file states them, validated: one file feeds the monitor's own engine and
the PromQL that Prometheus and Grafana evaluate (``services.monitor.provisioning``)."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

METRIC_NAME = r"^[a-zA-Z_:][a-zA-Z0-9_:]*$"
LABEL_NAME = r"^[a-zA-Z_][a-zA-Z0-9_]*$"
_DURATION_PART = re.compile(r"(\d+)(ms|s|m|h|d|w)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_duration(text: str) -> float:
    """Seconds of a Prometheus duration such as ``30s``, ``5m`` or ``1h30m``."""
    parts = _DURATION_PART.findall(text)
    if not text or "".join(number + unit for number, unit in parts) != text:
        raise ValueError(f"not a duration (use e.g. 30s, 5m, 1h30m): {text!r}")
    return sum(int(number) * _UNIT_S[unit] for number, unit in parts)


class Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Selector(Strict):
    """Series of one metric name (or several, summed) whose labels fully match regular expressions."""

    metric: str | list[str] = Field(description="metric name as exposed, or a list of names to add up")
    match: dict[str, str] = Field(default_factory=dict, description="label -> anchored regular expression")

    @field_validator("metric")
    @classmethod
    def _names(cls, value: str | list[str]) -> str | list[str]:
        names = [value] if isinstance(value, str) else value
        if not names or any(not re.match(METRIC_NAME, name) for name in names):
            raise ValueError(f"metric names must match {METRIC_NAME}, got {value!r}")
        return value

    @field_validator("match")
    @classmethod
    def _matchers(cls, value: dict[str, str]) -> dict[str, str]:
        for label, pattern in value.items():
            if not re.match(LABEL_NAME, label) or label == "__name__":
                raise ValueError(f"bad label name {label!r}")
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"label {label!r}: bad regular expression {pattern!r}: {error}") from None
        return value

    @property
    def names(self) -> tuple[str, ...]:
        return (self.metric,) if isinstance(self.metric, str) else tuple(self.metric)

    def with_suffix(self, suffix: str) -> Selector:
        return Selector(metric=[name + suffix for name in self.names], match=self.match)


class BaseRule(Strict):
    """What every rule has: a name, grouping, a threshold held for a duration, a severity and an action."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]*$")
    group_by: list[Annotated[str, Field(pattern=LABEL_NAME)]] = Field(default_factory=list)
    op: Literal[">", "<"] = ">"
    threshold: float
    for_: str = Field(default="0s", alias="for", description="how long the condition must hold before firing")
    severity: Literal["info", "warning", "critical"] = "warning"
    action: Literal["notify", "rollback", "retrain"] = "notify"
    summary: str = ""

    @field_validator("for_")
    @classmethod
    def _for(cls, value: str) -> str:
        parse_duration(value)
        return value

    @field_validator("threshold")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("threshold must be finite")
        return value

    @property
    def for_s(self) -> float:
        return parse_duration(self.for_)

    @property
    def window_s(self) -> float:
        window = getattr(self, "window", None)
        return parse_duration(window) if window else 0.0

    def breached(self, value: float) -> bool:
        """The condition; NaN is never breached (as in PromQL, where a comparison with NaN drops the series)."""
        return value > self.threshold if self.op == ">" else value < self.threshold


class WindowedRule(BaseRule):
    window: str = Field(description="range of the counters' increase, e.g. 5m")

    @field_validator("window")
    @classmethod
    def _window(cls, value: str) -> str:
        if parse_duration(value) <= 0:
            raise ValueError("window must be positive")
        return value


class CounterRatioRule(WindowedRule):
    """increase(numerator) / increase(denominator) over the window, per group."""

    kind: Literal["counter_ratio"]
    numerator: Selector
    denominator: Selector
    min_denominator: float = Field(default=0.0, ge=0, description="groups with fewer events are not judged")


class HistogramQuantileRule(WindowedRule):
    """A quantile of a histogram's observations over the window, per group."""

    kind: Literal["histogram_quantile"]
    histogram: Selector = Field(description="the histogram's base name; its _bucket series are read")
    quantile: float = Field(gt=0, lt=1)


class GaugeThresholdRule(BaseRule):
    """The latest value of a gauge, aggregated per group."""

    kind: Literal["gauge_threshold"]
    gauge: Selector
    aggregate: Literal["max", "min", "sum"] = "max"


class DriftRule(WindowedRule):
    """Population stability index of a version's live predicted classes against its evaluation report."""

    kind: Literal["drift"]
    predictions: Selector = Field(default_factory=lambda: Selector(metric="ferry_gateway_predictions_total"))
    class_label: str = Field(default="class", pattern=LABEL_NAME)
    min_samples: float = Field(default=50, ge=1, description="fewer predictions in the window: not judged")
    epsilon: float = Field(default=1e-4, gt=0, lt=0.1, description="floor of every class share (no log of 0)")

    @model_validator(mode="after")
    def _per_version(self) -> DriftRule:
        if not {"model", "version"} <= set(self.group_by):
            raise ValueError("a drift rule groups by model and version (the reference is per version)")
        return self


class InputDriftRule(BaseRule):
    """A version's input drift score (the share of its features that drift from the training split), which the
    monitor computes from logged inputs and exports; judged only where the window holds ``min_rows`` rows."""

    kind: Literal["input_drift"]
    score: Selector = Field(default_factory=lambda: Selector(metric="ferry_monitor_input_drift_score"))
    rows: Selector = Field(default_factory=lambda: Selector(metric="ferry_monitor_input_drift_rows"))
    min_rows: float = Field(default=100, ge=1, description="fewer logged rows in the window: not judged")

    @model_validator(mode="after")
    def _per_version(self) -> InputDriftRule:
        if not {"model", "version"} <= set(self.group_by):
            raise ValueError("an input drift rule groups by model and version (the reference is per version)")
        if self.op != ">":
            raise ValueError("an input drift rule fires on a score above its threshold (op: >)")
        return self


class OnlineAccuracyRule(BaseRule):
    """A version's online accuracy (its answers judged by feedback) minus the lower bound of its evaluated
    accuracy, judged once ``min_feedback`` answers were judged; below ``threshold`` (0: the bound) it fires."""

    kind: Literal["online_accuracy"]
    op: Literal[">", "<"] = "<"
    threshold: float = 0.0
    accuracy: Selector = Field(default_factory=lambda: Selector(metric="ferry_monitor_online_accuracy"))
    count: Selector = Field(default_factory=lambda: Selector(metric="ferry_monitor_online_feedback_count"))
    bound: Selector = Field(default_factory=lambda: Selector(metric="ferry_monitor_evaluation_accuracy_low"))
    min_feedback: float = Field(default=50, ge=1, description="fewer judged answers: not judged")

    @model_validator(mode="after")
    def _per_version(self) -> OnlineAccuracyRule:
        if set(self.group_by) != {"model", "version"}:
            raise ValueError("an online_accuracy rule groups by model and version (the bound is per version)")
        return self


Rule = Annotated[
    CounterRatioRule | HistogramQuantileRule | GaugeThresholdRule | DriftRule | InputDriftRule | OnlineAccuracyRule,
    Field(discriminator="kind"),
]


class RuleSet(Strict):
    """The rules file: ``rules:`` a list of rules with unique names."""

    rules: list[Rule]

    @field_validator("rules")
    @classmethod
    def _unique(cls, rules: Sequence[BaseRule]) -> Sequence[BaseRule]:
        names = [rule.name for rule in rules]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"rule names must be unique: {duplicates}")
        return rules

    def longest_window_s(self) -> float:
        return max((rule.window_s for rule in self.rules), default=0.0)


def load_rules(document: Any) -> RuleSet:
    """The rules of a parsed rules file; raises pydantic's ValidationError naming what is wrong."""
    return RuleSet.model_validate(document)
