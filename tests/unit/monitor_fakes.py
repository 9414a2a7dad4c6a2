"""Fakes for the monitor's unit tests: a scraper answering set texts, a reference table, a clock."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from services.monitor.adapters.delivery import Dispatcher, KafkaSink
from services.monitor.adapters.scraper import ScrapeResult, Target, parse_exposition
from services.monitor.domain.rules import load_rules
from services.monitor.service import Monitor
from shared.kafka import ListPublisher


@dataclass
class FakeScraper:
    """Answers each target with the exposition text set for it, or a failure when it is None."""

    texts: dict[str, str | None] = field(default_factory=dict)

    def scrape_all(self, targets: list[Target]) -> list[ScrapeResult]:
        results = []
        for target in targets:
            text = self.texts.get(target.job)
            if text is None:
                results.append(ScrapeResult(target, ok=False, error="ConnectError: refused"))
            else:
                results.append(ScrapeResult(target, ok=True, samples=parse_exposition(text)))
        return results


@dataclass
class FakeReferences:
    table: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    asked: set[tuple[str, str]] = field(default_factory=set)

    def get(self, model: str, version: str) -> Mapping[str, float] | None:
        return self.table.get((model, version))

    def refresh(self, wanted: set[tuple[str, str]]) -> None:
        self.asked |= wanted

    def known(self) -> dict[tuple[str, str], dict[str, float]]:
        return dict(self.table)


@dataclass
class Clock:
    now: float = 1_000.0

    def __call__(self) -> float:
        return self.now


SHORT_RULES = load_rules(
    {
        "rules": [
            {
                "name": "TargetDown",
                "kind": "gauge_threshold",
                "gauge": {"metric": "up"},
                "group_by": ["job", "instance"],
                "op": "<",
                "threshold": 1,
                "for": "10s",
                "severity": "critical",
            },
            {
                "name": "GatewayErrorRatio",
                "kind": "counter_ratio",
                "window": "30s",
                "threshold": 0.05,
                "for": "0s",
                "numerator": {"metric": "ferry_gateway_requests_total", "match": {"outcome": "error|timeout"}},
                "denominator": {"metric": "ferry_gateway_requests_total"},
                "group_by": ["model", "version"],
                "action": "rollback",
                "severity": "critical",
            },
            {
                "name": "PredictionDrift",
                "kind": "drift",
                "window": "30s",
                "threshold": 0.2,
                "min_samples": 10,
                "group_by": ["model", "version"],
            },
        ]
    }
)


def exposition(ok: int, errors: int, predicted: Mapping[str, int]) -> str:
    lines = [
        "# TYPE ferry_gateway_requests_total counter",
        f'ferry_gateway_requests_total{{model="digits",version="2",outcome="ok"}} {ok}',
        f'ferry_gateway_requests_total{{model="digits",version="2",outcome="error"}} {errors}',
        "# TYPE ferry_gateway_predictions_total counter",
    ]
    lines += [
        f'ferry_gateway_predictions_total{{model="digits",version="2",class="{c}"}} {n}' for c, n in predicted.items()
    ]
    return "\n".join(lines) + "\n"


def make_monitor(scraper: FakeScraper, clock: Clock, references: FakeReferences, sink: ListPublisher) -> tuple:
    dispatcher = Dispatcher([KafkaSink(sink)])
    targets = [Target("gateway", "http://127.0.0.1:1/metrics"), Target("registry", "http://127.0.0.1:2/metrics")]
    monitor = Monitor(
        SHORT_RULES,
        targets,
        scraper=scraper,
        references=references,
        dispatcher=dispatcher,
        clock=clock,
        scrape_interval_s=5,
        deployed_versions=lambda: [("digits", "1")],
    )
    return monitor, dispatcher
