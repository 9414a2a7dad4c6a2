"""The monitor's pure logic: durations and rules, PromQL-faithful reads, PSI, and the alert lifecycle."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from pydantic import ValidationError

from services.monitor.adapters.rules_file import RulesFileError, read_rules
from services.monitor.domain.drift import psi, shares
from services.monitor.domain.evaluate import Observation, bucket_quantile, evaluate
from services.monitor.domain.lifecycle import PLATFORM, AlertBook, alert_event
from services.monitor.domain.rules import GaugeThresholdRule, load_rules, parse_duration
from services.monitor.domain.series import Sample, SeriesStore, extrapolated_increase

RULES = Path(__file__).resolve().parents[2] / "deploy" / "alerts" / "rules.yaml"


def gauge_rule(**overrides: object) -> GaugeThresholdRule:
    fields: dict[str, object] = {
        "name": "Lag",
        "kind": "gauge_threshold",
        "gauge": {"metric": "lag"},
        "group_by": ["group"],
        "threshold": 10,
        "for": "30s",
        "severity": "warning",
    }
    return GaugeThresholdRule.model_validate(fields | overrides)


# --- rules ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25)])
def test_durations_are_prometheus_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5 m", "m5", "1.5m", "5mins"])
def test_a_bad_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_the_shipped_rules_file_has_every_default_rule() -> None:
    names = {rule.name for rule in read_rules(RULES).rules}
    assert names == {
        "GatewayErrorRatio",
        "GatewayLatencyP99",
        "GatewayShedRatio",
        "PredictionDrift",
        "InputDrift",
        "ConsumerLag",
        "TrainingFailures",
        "RegistryOutboxLag",
        "TargetDown",
        "OnlineAccuracyBelowEvaluation",
    }


@pytest.mark.parametrize(
    ("rule", "complaint"),
    [
        ({"name": "X", "kind": "nope", "threshold": 1}, "kind"),
        ({"name": "X", "kind": "gauge_threshold", "gauge": {"metric": "a-b"}, "threshold": 1}, "metric names"),
        (
            {"name": "X", "kind": "gauge_threshold", "gauge": {"metric": "a", "match": {"l": "("}}, "threshold": 1},
            "regular expression",
        ),
        ({"name": "X", "kind": "gauge_threshold", "gauge": {"metric": "a"}, "threshold": 1, "for": "soon"}, "duration"),
        ({"name": "X", "kind": "drift", "window": "5m", "threshold": 0.2, "group_by": ["model"]}, "model and version"),
        ({"name": "X", "kind": "gauge_threshold", "gauge": {"metric": "a"}, "threshold": 1, "action": "pg"}, "action"),
    ],
)
def test_an_invalid_rule_is_refused_with_the_reason(rule: dict, complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        load_rules({"rules": [rule]})


def test_rule_names_are_unique() -> None:
    rule = {"name": "X", "kind": "gauge_threshold", "gauge": {"metric": "a"}, "threshold": 1}
    with pytest.raises(ValidationError, match="unique"):
        load_rules({"rules": [rule, rule]})


def test_a_broken_rules_file_names_the_file(tmp_path: Path) -> None:
    broken = tmp_path / "rules.yaml"
    broken.write_text("rules: [ {name: X, kind: gauge_threshold, threshold: 1 ]")
    with pytest.raises(RulesFileError, match="not valid YAML"):
        read_rules(broken)
    broken.write_text("rules:\n  - {name: X, kind: gauge_threshold, threshold: 1}\n")
    with pytest.raises(RulesFileError, match=r"rules\.yaml is invalid: .*gauge"):
        read_rules(broken)
    with pytest.raises(RulesFileError, match="cannot read"):
        read_rules(tmp_path / "absent.yaml")


# --- PromQL reads ---------------------------------------------------------------------------------


def test_increase_extrapolates_like_prometheus() -> None:
    # A counter growing 10 per 15s step, seen at 45..90s: 30 counted over 45s of samples.
    points = [(float(t), t / 15 * 10) for t in range(45, 91, 15)]
    # Window 40..100: gaps of 5s and 10s (under 1.1 steps) are extrapolated in full.
    assert extrapolated_increase(points, 40, 100) == pytest.approx(30 * (45 + 5 + 10) / 45)
    # Window 0..100: a 45s gap at the start is extrapolated by half a step only.
    assert extrapolated_increase(points, 0, 100) == pytest.approx(30 * (45 + 7.5 + 10) / 45)


def test_increase_does_not_extrapolate_a_counter_below_zero_and_corrects_resets() -> None:
    # Started at 5 one step into the window: extrapolation to the start stops where it would reach zero.
    assert extrapolated_increase([(10.0, 5.0), (20.0, 15.0)], 0, 20) == pytest.approx(10 * (10 + 5) / 10)
    # A reset (30 -> 4) counts the 4 as new increase: 10 + 30... = (30-10) + 4
    assert extrapolated_increase([(0.0, 10.0), (10.0, 30.0), (20.0, 4.0)], 0, 20) == pytest.approx(24)
    assert extrapolated_increase([(0.0, 1.0)], 0, 10) is None


@pytest.mark.parametrize(
    ("quantile", "buckets", "expected"),
    [
        (0.5, [(0.1, 50), (0.2, 100), (math.inf, 100)], 0.1),
        (0.75, [(0.1, 50), (0.2, 100), (math.inf, 100)], 0.15),
        (0.99, [(0.1, 0), (0.2, 50), (math.inf, 100)], 0.2),  # in the +Inf bucket: the highest finite bound
        (0.5, [(0.1, 0), (math.inf, 0)], math.nan),  # no observations
        (0.5, [(0.1, 3), (0.2, 5)], math.nan),  # no +Inf bucket
    ],
)
def test_bucket_quantile_is_promql_histogram_quantile(quantile: float, buckets: list, expected: float) -> None:
    found = bucket_quantile(quantile, buckets)
    assert (math.isnan(found) and math.isnan(expected)) or found == pytest.approx(expected)


def test_a_series_missing_from_the_latest_scrape_is_stale_for_gauges_but_counted_in_ranges() -> None:
    store = SeriesStore(retention_s=600)
    store.ingest("t", 0.0, [Sample("c", {"k": "a"}, 0.0), Sample("g", {}, 5.0)])
    store.ingest("t", 10.0, [Sample("c", {"k": "a"}, 10.0), Sample("g", {}, 6.0)])
    store.ingest("t", 20.0, [Sample("up", {}, 0.0)])  # the target failed: its other series are stale
    [gauge] = store.select(["g"], {})
    [counter] = store.select(["c"], {"k": "a|b"})
    assert store.latest(gauge) is None
    assert store.increase(counter, now=20.0, window_s=30) is not None
    assert list(store.select(["c"], {"k": "b"})) == []


def test_the_window_is_bounded_in_time_points_and_series() -> None:
    store = SeriesStore(retention_s=30, max_points=3, max_series=2)
    for step in range(10):
        store.ingest("t", step * 10.0, [Sample("a", {}, step), Sample("b", {}, step), Sample("c", {}, step)])
    store.prune(90.0)
    [series] = store.select(["a"], {})
    assert [t for t, _ in series.points] == [70.0, 80.0, 90.0]
    assert len(store) == 2 and store.refused == 10
    store.prune(200.0)
    assert len(store) == 0


# --- PSI ------------------------------------------------------------------------------------------


def test_psi_is_zero_for_the_same_distribution_and_grows_with_the_shift() -> None:
    reference = {"0": 0.5, "1": 0.5}
    assert psi({"0": 0.5, "1": 0.5}, reference) == pytest.approx(0)
    expected = (0.9 - 0.5) * math.log(0.9 / 0.5) + (0.1 - 0.5) * math.log(0.1 / 0.5)
    assert psi({"0": 0.9, "1": 0.1}, reference) == pytest.approx(expected)
    assert psi({"0": 0.6, "1": 0.4}, reference) < 0.2 < psi({"0": 0.9, "1": 0.1}, reference)
    # A class the reference never saw counts at epsilon, not as a division by zero.
    assert psi({"2": 1.0}, reference, epsilon=1e-4) > 5
    assert shares({"0": 3, "1": 1}) == {"0": 0.75, "1": 0.25}
    assert shares({"0": 0}) == {}


# --- the lifecycle --------------------------------------------------------------------------------


def test_pending_then_firing_after_for_then_resolved() -> None:
    rule, book = gauge_rule(), AlertBook()
    labels = (("group", "g"),)
    assert book.update(rule, [Observation(labels, 50)], now=100) == []
    assert [a.state for a in book.active()] == ["pending"]
    assert book.update(rule, [Observation(labels, 60)], now=129) == []
    [fired] = book.update(rule, [Observation(labels, 70)], now=130)
    assert (fired.state, fired.alert.state, fired.alert.value, fired.alert.active_at) == ("fired", "firing", 70, 100)
    assert book.update(rule, [Observation(labels, 80)], now=140) == []  # fires once
    [resolved] = book.update(rule, [Observation(labels, 5)], now=150)  # below the threshold
    assert (resolved.state, resolved.alert.resolved_at) == ("resolved", 150)
    assert book.active() == [] and [a.state for a in book.recent()] == ["resolved"]


def test_a_pending_alert_that_clears_leaves_silently_and_starts_over() -> None:
    rule, book = gauge_rule(), AlertBook()
    labels = (("group", "g"),)
    book.update(rule, [Observation(labels, 50)], now=0)
    assert book.update(rule, [], now=20) == []  # the group vanished: no longer breached
    assert book.active() == [] and book.recent() == []
    book.update(rule, [Observation(labels, 50)], now=25)
    assert book.update(rule, [Observation(labels, 50)], now=50) == []  # 25s since it came back: still pending
    assert len(book.update(rule, [Observation(labels, 50)], now=55)) == 1


def test_for_zero_fires_at_once_and_groups_are_independent() -> None:
    rule, book = gauge_rule(**{"for": "0s"}), AlertBook(recent_limit=1)
    a, b = (("group", "a"),), (("group", "b"),)
    fired = book.update(rule, [Observation(a, 11), Observation(b, 12), Observation((("group", "c"),), 3)], now=0)
    assert sorted(t.alert.labels for t in fired) == [a, b]
    assert [t.alert.labels for t in book.update(rule, [Observation(b, 12)], now=1)] == [a]
    book.update(rule, [], now=2)
    assert [alert.labels for alert in book.recent()] == [b]  # recent is bounded: a was pushed out


def test_the_alert_event_carries_version_action_and_a_derived_id() -> None:
    rule, book = gauge_rule(**{"for": "0s", "action": "rollback", "group_by": ["model", "version"]}), AlertBook()
    [fired] = book.update(rule, [Observation((("model", "digits"), ("version", "3")), 42.0)], now=1_700_000_000)
    event = alert_event(fired)
    assert (event.model_name, event.version, event.action, event.state) == ("digits", 3, "rollback", "fired")
    assert (event.value, event.threshold, event.labels) == (42.0, 10, {"model": "digits", "version": "3"})
    assert event.since.timestamp() == 1_700_000_000
    assert fired.event_id == fired.event_id and fired.event_id != book.update(rule, [], now=1_700_000_001)[0].event_id
    [platform] = AlertBook().update(gauge_rule(**{"for": "0s"}), [Observation((("group", "x"),), math.inf)], now=0)
    event = alert_event(platform)
    assert (event.model_name, event.version, event.value) == (PLATFORM, None, 1e308)


def test_nan_never_breaches() -> None:
    rule = gauge_rule(**{"for": "0s"})
    assert not rule.breached(math.nan)
    store = SeriesStore(retention_s=60)
    store.ingest("t", 0.0, [Sample("lag", {"group": "g"}, 11.0)])
    assert evaluate(rule, store, 0.0, lambda m, v: None) == [Observation((("group", "g"),), 11.0)]
