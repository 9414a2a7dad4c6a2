"""The monitor's engine with fakes: the same synthetic series as the generated promtool tests fire the
same alerts here, targets that fail fire TargetDown, transitions reach Kafka and webhooks in order."""

from __future__ import annotations

from pathlib import Path

import pytest
from monitor_fakes import SHORT_RULES, Clock, FakeReferences, FakeScraper, exposition, make_monitor

from services.monitor.adapters.delivery import Dispatcher
from services.monitor.adapters.rules_file import read_rules
from services.monitor.adapters.webhooks import alertmanager_payload
from services.monitor.domain.evaluate import Observation, evaluate
from services.monitor.domain.lifecycle import AlertBook, Transition
from services.monitor.domain.series import Sample, SeriesStore
from services.monitor.provisioning.promql import DRIFT_REFERENCE_METRIC
from services.monitor.provisioning.synthetic import INTERVAL_S, SyntheticCase, cases
from shared.events import AlertChanged
from shared.kafka import ListPublisher

RULES = read_rules(Path(__file__).resolve().parents[2] / "deploy" / "alerts" / "rules.yaml")


def replay(case: SyntheticCase, until_s: int) -> AlertBook:
    """Feed the case's series to the engine's window and evaluate every interval, as promtool does."""
    store, book = SeriesStore(retention_s=10**6), AlertBook()
    references: dict[tuple[str, str], dict[str, float]] = {}
    for series in case.series:
        if series.name == DRIFT_REFERENCE_METRIC:
            key = (series.labels["model"], series.labels["version"])
            references.setdefault(key, {})[series.labels["class"]] = series.start
    for step in range(until_s // INTERVAL_S + 1):
        now = float(step * INTERVAL_S)
        samples = [Sample(s.name, s.labels, s.values()[step]) for s in case.series if step <= s.count]
        store.ingest("synthetic", now, samples)
        book.update(case.rule, evaluate(case.rule, store, now, lambda m, v: references.get((m, v))), now)
    return book


@pytest.mark.parametrize("case", [c for rule in RULES.rules for c in cases(rule)], ids=lambda c: c.title)
def test_the_engine_fires_what_the_generated_promtool_test_expects(case: SyntheticCase) -> None:
    firing = replay(case, case.eval_s).firing()
    if not case.fires:
        assert firing == []
        return
    [alert] = firing
    assert alert.label_map == case.group
    assert f"{alert.value:.6g}" == f"{case.value:.6g}"  # the very annotation promtool checks
    if case.pending_s is not None:
        assert replay(case, case.pending_s).firing() == []


def test_a_target_that_goes_down_fires_target_down_after_for_and_resolves_when_back() -> None:
    scraper, clock, published = (
        FakeScraper({"gateway": exposition(0, 0, {}), "registry": None}),
        Clock(),
        ListPublisher(),
    )
    monitor, dispatcher = make_monitor(scraper, clock, FakeReferences(), published)
    monitor.tick()
    assert [(a.rule, a.state, a.label_map["job"]) for a in monitor.active_alerts()] == [
        ("TargetDown", "pending", "registry")
    ]
    clock.now += 10
    [fired] = monitor.tick()
    assert (fired.state, fired.alert.label_map) == ("fired", {"job": "registry", "instance": "127.0.0.1:2"})
    scraper.texts["registry"] = "up_and_running 1\n"
    clock.now += 5
    [resolved] = monitor.tick()
    assert resolved.state == "resolved"
    dispatcher.deliver_due()
    events = published.of_type(AlertChanged)
    assert [(e.rule, e.state, e.model_name) for e in events] == [
        ("TargetDown", "fired", "ferry"),
        ("TargetDown", "resolved", "ferry"),
    ]
    assert published.event_ids == [fired.event_id, resolved.event_id]
    health = {t.job: t for t in monitor.target_health()}
    assert health["registry"].up and health["gateway"].up


def test_errors_fire_the_ratio_alert_per_version_and_it_resolves_when_healthy() -> None:
    scraper, clock, published = (
        FakeScraper({"gateway": exposition(100, 0, {}), "registry": ""}),
        Clock(),
        ListPublisher(),
    )
    monitor, dispatcher = make_monitor(scraper, clock, FakeReferences(), published)
    monitor.tick()
    for ok, errors in ((150, 50), (200, 100)):  # half of the new requests fail
        clock.now += 5
        scraper.texts["gateway"] = exposition(ok, errors, {})
        monitor.tick()
    [alert] = [a for a in monitor.active_alerts() if a.rule == "GatewayErrorRatio"]
    assert (alert.state, alert.label_map, alert.action) == ("firing", {"model": "digits", "version": "2"}, "rollback")
    # As PromQL's increase(): the ok counter (100 at its first point) is extrapolated half a step back,
    # the error counter (0 at its first point) is not extrapolated below zero: 100 / (100 + 125).
    assert alert.value == pytest.approx(100 / 225)
    for step in range(1, 10):  # healthy traffic until the errors leave the 30s window
        clock.now += 5
        scraper.texts["gateway"] = exposition(200 + 50 * step, 100, {})
        monitor.tick()
    assert [a.rule for a in monitor.active_alerts()] == []
    dispatcher.deliver_due()
    events = [e for e in published.of_type(AlertChanged) if e.rule == "GatewayErrorRatio"]
    assert [(e.state, e.version, e.action) for e in events] == [("fired", 2, "rollback"), ("resolved", 2, "rollback")]


def test_drift_fires_for_a_skewed_version_against_its_reference() -> None:
    references = FakeReferences({("digits", "2"): {"0": 0.5, "1": 0.5}})
    scraper = FakeScraper({"gateway": exposition(0, 0, {"0": 0, "1": 0}), "registry": ""})
    clock, published = Clock(), ListPublisher()
    monitor, _ = make_monitor(scraper, clock, references, published)
    monitor.tick()
    assert references.asked == {("digits", "1")}  # the deployed version, before any prediction
    clock.now += 5
    scraper.texts["gateway"] = exposition(0, 0, {"0": 10, "1": 10})  # as the reference: no drift
    monitor.tick()
    assert references.asked == {("digits", "2"), ("digits", "1")}  # and the versions that predict
    assert monitor.drift_values()[("digits", "2")] == pytest.approx(0)
    clock.now += 5
    scraper.texts["gateway"] = exposition(0, 0, {"0": 100, "1": 10})  # 90 of the next 90 are class 0
    [fired] = monitor.tick()
    assert (fired.alert.rule, fired.alert.label_map) == ("PredictionDrift", {"model": "digits", "version": "2"})
    assert monitor.drift_values()[("digits", "2")] > 0.2


def test_drift_is_not_judged_without_a_reference() -> None:
    scraper = FakeScraper({"gateway": exposition(0, 0, {"0": 0}), "registry": ""})
    clock = Clock()
    monitor, _ = make_monitor(scraper, clock, FakeReferences(), ListPublisher())
    monitor.tick()
    scraper.texts["gateway"] = exposition(0, 0, {"0": 1000})
    clock.now += 5
    assert monitor.tick() == [] and monitor.drift_values() == {}


def test_one_broken_rule_is_reported_and_the_others_still_run() -> None:
    scraper = FakeScraper({"gateway": exposition(0, 0, {}), "registry": None})
    clock = Clock()
    monitor, _ = make_monitor(scraper, clock, FakeReferences(), ListPublisher())

    def broken(*args: object) -> None:
        raise RuntimeError("boom")

    monitor._references.get = broken
    scraper.texts["gateway"] = exposition(0, 0, {"0": 100})
    monitor.tick()
    clock.now += 5
    scraper.texts["gateway"] = exposition(0, 0, {"0": 200})
    monitor.tick()
    health = {h.rule.name: h for h in monitor.rule_health()}
    assert health["PredictionDrift"].error == "RuntimeError: boom"
    assert health["TargetDown"].error is None and health["TargetDown"].last_evaluation is not None


# --- delivery -------------------------------------------------------------------------------------


class FlakySink:
    def __init__(self, name: str, failures: int) -> None:
        self.name, self.failures = name, failures
        self.delivered: list[Transition] = []

    def deliver(self, transition: Transition) -> None:
        if self.failures:
            self.failures -= 1
            raise ConnectionError("away")
        self.delivered.append(transition)


def transitions(count: int) -> list[Transition]:
    """``count`` TargetDown alerts that fired at once."""
    rule = SHORT_RULES.rules[0].model_copy(update={"for_": "0s"})
    observations = [Observation((("job", f"j{n}"),), 0.0) for n in range(count)]
    return AlertBook().update(rule, observations, 0)


def test_a_failing_sink_is_retried_in_order_without_holding_up_the_others() -> None:
    flaky, steady = FlakySink("flaky", failures=2), FlakySink("steady", failures=0)
    outcomes: list[tuple[str, str]] = []
    dispatcher = Dispatcher([flaky, steady], first_backoff_s=0.0, on_outcome=lambda s, o: outcomes.append((s, o)))
    batch = transitions(3)
    dispatcher.submit(batch)
    dispatcher.deliver_due()
    assert steady.delivered == batch and flaky.delivered == []
    dispatcher.deliver_due()
    dispatcher.deliver_due()
    assert flaky.delivered == batch and dispatcher.pending() == {"flaky": 0, "steady": 0}
    assert outcomes.count(("flaky", "failed")) == 2 and outcomes.count(("flaky", "delivered")) == 3


def test_an_overflowing_queue_drops_the_oldest_and_says_so() -> None:
    outcomes: list[tuple[str, str]] = []
    sink = FlakySink("down", failures=100)
    dispatcher = Dispatcher([sink], max_pending=2, on_outcome=lambda s, o: outcomes.append((s, o)))
    batch = transitions(3)
    dispatcher.submit(batch)
    assert dispatcher.pending() == {"down": 2} and outcomes == [("down", "overflowed")]


def test_the_webhook_payload_is_alertmanagers() -> None:
    [transition] = transitions(1)
    payload = alertmanager_payload(transition, external_url="http://monitor")
    assert payload["version"] == "4" and payload["status"] == "firing"
    [alert] = payload["alerts"]
    assert alert["labels"] == {"alertname": "TargetDown", "job": "j0", "severity": "critical", "action": "notify"}
    assert alert["endsAt"] == "0001-01-01T00:00:00Z" and alert["startsAt"].endswith("Z")
    assert alert["annotations"]["value"] == "0" and alert["annotations"]["threshold"] == "1"
