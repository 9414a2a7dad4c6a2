"""Two monitors over the same targets raise one alert per rule, labels and episode: only the leader's
transitions go out, the standby's `for` timers keep running, and a new leader announces what fires."""

from __future__ import annotations

from dataclasses import dataclass, field

from monitor_fakes import SHORT_RULES, Clock, FakeReferences, exposition

from services.monitor.adapters.delivery import Dispatcher, KafkaSink
from services.monitor.adapters.scraper import ScrapeResult, Target, parse_exposition
from services.monitor.service import Monitor
from services.monitor.settings import parse_targets
from shared.events import AlertChanged
from shared.kafka import ListPublisher

GATEWAYS = [Target("gateway", "http://127.0.0.1:1/metrics"), Target("gateway", "http://127.0.0.1:3/metrics")]


@dataclass
class ScraperByUrl:
    """Answers each target by its URL: two replicas of one job answer apart."""

    texts: dict[str, str | None] = field(default_factory=dict)

    def scrape_all(self, targets: list[Target]) -> list[ScrapeResult]:
        return [
            ScrapeResult(t, ok=True, samples=parse_exposition(text))
            if (text := self.texts.get(t.url)) is not None
            else ScrapeResult(t, ok=False, error="ConnectError: refused")
            for t in targets
        ]


@dataclass
class Lock:
    """The advisory lock as two replicas see it: ``holder`` leads."""

    holder: str = "a"

    def leads(self, who: str) -> bool:
        return self.holder == who


def replica(name: str, lock: Lock, scraper: ScraperByUrl, clock: Clock, sink: ListPublisher) -> Monitor:
    return Monitor(
        SHORT_RULES,
        GATEWAYS,
        scraper=scraper,
        references=FakeReferences(),
        dispatcher=Dispatcher([KafkaSink(sink)]),
        clock=clock,
        scrape_interval_s=5,
        leads=lambda: lock.leads(name),
    )


def deliver(*monitors: Monitor) -> None:
    for monitor in monitors:
        monitor._dispatcher.deliver_due()  # type: ignore[attr-defined]


def test_two_monitors_publish_one_fired_and_one_resolved_per_episode() -> None:
    lock, clock, sink = Lock(), Clock(), ListPublisher()
    healthy = {url: exposition(100, 0, {}) for url in (t.url for t in GATEWAYS)}
    scraper = ScraperByUrl(dict(healthy))
    a, b = (replica(name, lock, scraper, clock, sink) for name in "ab")
    for step in range(14):
        if step == 2:  # one gateway replica starts failing
            scraper.texts[GATEWAYS[1].url] = exposition(100, 60, {})
        if step == 4:
            scraper.texts[GATEWAYS[1].url] = exposition(300, 60, {})
        a.tick(), b.tick()
        deliver(a, b)
        clock.now += 5
    events = sink.of_type(AlertChanged)
    assert [(e.rule, e.state, e.labels) for e in events] == [
        ("GatewayErrorRatio", "fired", {"model": "digits", "version": "2"}),
        ("GatewayErrorRatio", "resolved", {"model": "digits", "version": "2"}),
    ]
    assert (a.leading, b.leading) == (True, False)
    assert [x.rule for x in b.recent_alerts()] == ["GatewayErrorRatio"]  # the standby saw it all the same


def test_the_errors_of_both_gateway_replicas_count_in_one_ratio() -> None:
    lock, clock, sink = Lock(), Clock(), ListPublisher()
    scraper = ScraperByUrl({GATEWAYS[0].url: exposition(0, 0, {}), GATEWAYS[1].url: exposition(0, 0, {})})
    monitor = replica("a", lock, scraper, clock, sink)
    monitor.tick()
    clock.now += 5
    scraper.texts = {GATEWAYS[0].url: exposition(97, 0, {}), GATEWAYS[1].url: exposition(0, 3, {})}
    assert monitor.tick() == []  # 3 errors in 100 requests: under 5 %, though one replica alone is at 100 %
    assert {t.instance for t in monitor.target_health()} == {"127.0.0.1:1", "127.0.0.1:3"}


def test_a_new_leader_announces_what_fires_without_restarting_its_for_timer() -> None:
    lock, clock, sink = Lock(), Clock(), ListPublisher()
    scraper = ScraperByUrl({GATEWAYS[0].url: exposition(0, 0, {})})  # the second gateway is down
    a, b = (replica(name, lock, scraper, clock, sink) for name in "ab")
    a.tick(), b.tick()  # TargetDown pending on both (for: 10s)
    clock.now += 5
    lock.holder = "b"  # a dies before its timer is up; b's timer began with a's
    b.tick()
    clock.now += 5
    [fired] = b.tick()
    deliver(a, b)
    assert (fired.alert.rule, fired.state, fired.alert.label_map["instance"]) == ("TargetDown", "fired", "127.0.0.1:3")
    assert [(e.rule, e.state) for e in sink.of_type(AlertChanged)] == [("TargetDown", "fired")]


def test_a_standby_that_becomes_leader_while_an_alert_fires_announces_it_once() -> None:
    lock, clock, sink = Lock(), Clock(), ListPublisher()
    scraper = ScraperByUrl({GATEWAYS[0].url: exposition(0, 0, {})})
    a, b = (replica(name, lock, scraper, clock, sink) for name in "ab")
    lock.holder = "nobody"  # the leader died before it sent anything
    for _ in range(3):
        a.tick(), b.tick()
        clock.now += 5
    assert sink.of_type(AlertChanged) == [] and b.active_alerts()[0].state == "firing"
    lock.holder = "b"
    b.tick(), b.tick()
    deliver(b)
    assert [(e.rule, e.state) for e in sink.of_type(AlertChanged)] == [("TargetDown", "fired")]


def test_targets_may_name_one_job_at_several_urls_but_not_one_url_twice() -> None:
    targets = parse_targets("gateway=http://127.0.0.1:1,gateway=http://127.0.0.1:3")
    assert [t.key for t in targets] == ["gateway http://127.0.0.1:1/metrics", "gateway http://127.0.0.1:3/metrics"]
    try:
        parse_targets("gateway=http://127.0.0.1:1,registry=http://127.0.0.1:1")
    except ValueError as error:
        assert "unique" in str(error)
    else:
        raise AssertionError("a URL named twice was accepted")


def test_without_a_leader_two_monitors_send_an_episode_twice_under_different_ids() -> None:
    """Why a leader, and not ids alone: an alert's id is derived from when its replica first saw the breach."""
    sink, scraper = ListPublisher(), ScraperByUrl({GATEWAYS[0].url: exposition(0, 0, {})})
    clock_a, clock_b = Clock(1000.0), Clock(1000.4)  # two replicas scrape 0.4 s apart
    a, b = (
        Monitor(
            SHORT_RULES,
            GATEWAYS,
            scraper=scraper,
            references=FakeReferences(),
            dispatcher=Dispatcher([KafkaSink(sink)]),
            clock=clock,
            scrape_interval_s=5,
        )
        for clock in (clock_a, clock_b)
    )
    for _ in range(3):
        a.tick(), b.tick()
        clock_a.now += 5
        clock_b.now += 5
    deliver(a, b)
    fired = [e for e in sink.of_type(AlertChanged) if e.state == "fired"]
    assert len(fired) == 2 and len(set(sink.event_ids)) == 2
