"""The monitor's cycle: scrape every target, keep the window, evaluate the rules, hand transitions on.

The clock is injected (unit tests step it by hand); the scraper, the reference source and the
dispatcher are the adapters bootstrap wires, or fakes from a test.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Protocol

from opentelemetry import metrics

from services.monitor.adapters.scraper import ScrapeResult, Target
from services.monitor.domain.evaluate import Observation, drift_versions, evaluate
from services.monitor.domain.lifecycle import Alert, AlertBook, Transition
from services.monitor.domain.rules import BaseRule, DriftRule, RuleSet
from services.monitor.domain.series import Sample, SeriesStore
from services.monitor.input_drift import INPUT_DRIFT_TARGET, InputDriftTracker

log = logging.getLogger(__name__)


class Scraper(Protocol):
    def scrape_all(self, targets: list[Target]) -> list[ScrapeResult]: ...


class ReferenceSource(Protocol):
    def get(self, model: str, version: str) -> Mapping[str, float] | None: ...

    def refresh(self, wanted: set[tuple[str, str]]) -> None: ...

    def known(self) -> dict[tuple[str, str], dict[str, float]]: ...


class TransitionSink(Protocol):
    def submit(self, transitions: list[Transition]) -> None: ...


@dataclass(frozen=True)
class TargetHealth:
    job: str
    instance: str
    url: str
    up: bool | None
    """None until the first scrape."""
    last_scrape: float | None = None
    last_error: str | None = None
    duration_s: float | None = None
    samples: int = 0


@dataclass(frozen=True)
class RuleHealth:
    rule: BaseRule
    last_evaluation: float | None = None
    error: str | None = None
    groups: int = 0


def with_target_labels(result: ScrapeResult) -> list[Sample]:
    """The samples as Prometheus stores them: ``job`` and ``instance`` added (clashing ones become
    ``exported_*``), plus the synthetic ``up`` series, 1 for a good scrape and 0 for a failed one."""
    target = result.target
    extra = {"job": target.job, "instance": target.instance}
    samples = [Sample("up", extra, 1.0 if result.ok else 0.0)]
    for sample in result.samples:
        labels = {f"exported_{k}" if k in extra else k: v for k, v in sample.labels.items()}
        samples.append(Sample(sample.name, labels | extra, sample.value))
    return samples


class Monitor:
    """Scrape → window → evaluate → lifecycle → dispatch, once per ``tick``."""

    def __init__(
        self,
        rules: RuleSet,
        targets: list[Target],
        *,
        scraper: Scraper,
        references: ReferenceSource,
        dispatcher: TransitionSink,
        clock: Callable[[], float] = time.time,
        store: SeriesStore | None = None,
        book: AlertBook | None = None,
        deployed_versions: Callable[[], Iterable[tuple[str, str]]] = lambda: (),
        scrape_interval_s: float = 5.0,
        leads: Callable[[], bool] = lambda: True,
        input_drift: InputDriftTracker | None = None,
    ) -> None:
        self.rules = rules
        self.targets = targets
        self._scraper = scraper
        self._references = references
        self._dispatcher = dispatcher
        self._clock = clock
        retention = rules.longest_window_s() + 3 * scrape_interval_s + 60
        self.store = store or SeriesStore(retention_s=retention)
        self.book = book or AlertBook()
        self._deployed_versions = deployed_versions
        self.input_drift = input_drift
        # Every replica evaluates (its `for` timers keep running); only the leader's transitions go out.
        self._leads = leads
        self.leading = False
        self._lock = threading.RLock()
        self._targets = {t.key: TargetHealth(t.job, t.instance, t.url, None) for t in targets}
        self._rules = {rule.name: RuleHealth(rule) for rule in rules.rules}
        self._values: dict[str, list[Observation]] = {}
        meter = metrics.get_meter("ferry.monitor")
        self._scrapes = meter.create_counter("ferry.monitor.scrapes", unit="1", description="scrapes by job, outcome")
        self._transitions = meter.create_counter(
            "ferry.monitor.alert.transitions", unit="1", description="alerts fired and resolved, by rule"
        )

    def tick(self) -> list[Transition]:
        """One cycle at the clock's now; returns the transitions it handed to the dispatcher."""
        results = self._scraper.scrape_all(self.targets)
        now = self._clock()
        with self._lock:
            for result in results:
                self.store.ingest(result.target.key, now, with_target_labels(result))
                self._record_scrape(result, now)
            self.store.prune(now)
            wanted = drift_versions(self.rules.rules, self.store, now) | set(self._deployed_versions())
        self._references.refresh(wanted)  # I/O outside the lock: the API keeps answering
        own = self._measure_inputs()
        with self._lock:
            if own is not None:
                self.store.ingest(INPUT_DRIFT_TARGET, now, own)
            transitions = [change for rule in self.rules.rules for change in self._evaluate(rule, now)]
        for transition in transitions:
            self._transitions.add(1, {"rule": transition.alert.rule, "state": transition.state})
            log.info(
                "alert %s %s %s value=%s",
                transition.alert.rule,
                transition.state,
                transition.alert.label_map,
                transition.alert.value,
            )
        return self._hand_on(transitions)

    def _measure_inputs(self) -> list[Sample] | None:
        """Input drift's samples (the references fetched first); None when the monitor measures no inputs."""
        if self.input_drift is None:
            return None
        self.input_drift.refresh()
        return self.input_drift.measure()

    def _hand_on(self, transitions: list[Transition]) -> list[Transition]:
        """The leader hands its transitions to the dispatcher; a replica that has just become leader first
        announces what is firing in its own book (the old leader may have died before it could)."""
        leading, was_leading = self._leads(), self.leading
        self.leading = leading
        if not leading:
            return []
        if not was_leading:
            fired = {t.alert.key for t in transitions if t.state == "fired"}
            with self._lock:
                firing = [Transition(a, "fired") for a in self.book.firing() if a.key not in fired]
            if firing:
                log.info("leading now: announcing %d firing alert(s) of this replica's book", len(firing))
            transitions = firing + transitions
        self._dispatcher.submit(transitions)
        return transitions

    def _evaluate(self, rule: BaseRule, now: float) -> list[Transition]:
        try:
            observations = evaluate(rule, self.store, now, self._references.get)
        except Exception as error:  # noqa: BLE001 - one broken rule must not silence the others
            log.exception("rule %s failed to evaluate", rule.name)
            self._rules[rule.name] = RuleHealth(rule, now, f"{type(error).__name__}: {error}")
            return []
        self._values[rule.name] = observations
        self._rules[rule.name] = RuleHealth(rule, now, None, len(observations))
        return self.book.update(rule, observations, now)

    def _record_scrape(self, result: ScrapeResult, now: float) -> None:
        target = result.target
        self._targets[target.key] = TargetHealth(
            target.job,
            target.instance,
            target.url,
            result.ok,
            now,
            result.error,
            result.duration_s,
            len(result.samples),
        )
        self._scrapes.add(1, {"job": target.job, "outcome": "up" if result.ok else "down"})
        if not result.ok:
            log.warning("scrape of %s (%s) failed: %s", target.job, target.url, result.error)

    def run(self, stop: threading.Event, interval_s: float) -> None:
        """Tick every ``interval_s`` until ``stop``; a failing tick is logged and the next one comes."""
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the monitor goes on; the next tick tries again
                log.exception("monitor cycle failed")
            stop.wait(max(0.0, interval_s - (time.monotonic() - started)))

    # --- read side, for the API and the gauges ----------------------------------------------

    def active_alerts(self) -> list[Alert]:
        with self._lock:
            return self.book.active()

    def recent_alerts(self) -> list[Alert]:
        with self._lock:
            return self.book.recent()

    def target_health(self) -> list[TargetHealth]:
        with self._lock:
            return list(self._targets.values())

    def rule_health(self) -> list[RuleHealth]:
        with self._lock:
            return list(self._rules.values())

    def drift_values(self) -> dict[tuple[str, str], float]:
        """The latest PSI per (model, version) of every drift rule."""
        with self._lock:
            found: dict[tuple[str, str], float] = {}
            for rule in self.rules.rules:
                if isinstance(rule, DriftRule):
                    for observation in self._values.get(rule.name, []):
                        labels = dict(observation.labels)
                        if math.isfinite(observation.value):
                            found[(labels["model"], labels["version"])] = observation.value
            return found

    def references(self) -> dict[tuple[str, str], dict[str, float]]:
        return self._references.known()
