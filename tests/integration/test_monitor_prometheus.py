"""The generated Prometheus side, checked by Prometheus's own tools: ``promtool check config``,
``promtool check rules``, ``promtool test rules`` on the committed files, every dashboard and Grafana
query as valid PromQL, and a real Prometheus firing the same alerts as the monitor from the same rules."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from monitor_support import (
    AlertWatcher,
    FakeGateway,
    FakeRegistry,
    active,
    base_env,
    short_rules,
    skip_without,
    start_monitor,
)
from support import free_port, wait_for

from services.monitor.adapters.rules_file import read_rules
from services.monitor.provisioning import dashboard
from services.monitor.provisioning.prometheus import ScrapeTarget, alerting_rules, prometheus_config
from services.monitor.provisioning.promql import value_expression
from services.monitor.provisioning.render import to_yaml
from shared.events import utc_now
from shared.input_reference import build_input_reference
from shared.kafka import KafkaPublisher
from shared.local.stack import PROJECT_ROOT
from shared.settings import FerrySettings

PROMETHEUS_DIR = PROJECT_ROOT / "deploy" / "prometheus"
needs_promtool = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool is not installed (Debian: apt-get install prometheus)"
)
REFERENCE = {"0": 0.2, "1": 0.4, "2": 0.4}
TRAINING_ROWS = np.random.default_rng(0).normal(size=(2000, 4))
INPUT_REFERENCE = build_input_reference(TRAINING_ROWS, "input")


def promtool(*args: str, cwd: Path = PROMETHEUS_DIR) -> str:
    result = subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


@needs_promtool
def test_promtool_accepts_the_generated_config_and_rules() -> None:
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml")
    shipped = read_rules(PROJECT_ROOT / "deploy" / "alerts" / "rules.yaml").rules
    assert f"SUCCESS: {len(shipped)} rules found" in promtool("check", "rules", "ferry.rules.yml")


@needs_promtool
def test_promtool_unit_tests_fire_every_rule_and_keep_it_quiet() -> None:
    assert "SUCCESS" in promtool("test", "rules", "ferry.rules.test.yml")


@needs_promtool
def test_promtool_fails_a_rule_test_whose_expectation_is_wrong(tmp_path: Path) -> None:
    """The unit tests can fail: a quiet case that expects an alert is refused."""
    shutil.copy(PROMETHEUS_DIR / "ferry.rules.yml", tmp_path)
    tests = (PROMETHEUS_DIR / "ferry.rules.test.yml").read_text().replace("exp_alerts: []", "exp_alerts: [{}]", 1)
    (tmp_path / "wrong.test.yml").write_text(tests)
    result = subprocess.run(["promtool", "test", "rules", "wrong.test.yml"], cwd=tmp_path, capture_output=True)
    assert result.returncode != 0


@needs_promtool
def test_every_dashboard_and_grafana_query_is_valid_promql(tmp_path: Path) -> None:
    rules = read_rules(PROJECT_ROOT / "deploy" / "alerts" / "rules.yaml")
    queries = dashboard.expressions() + [value_expression(rule) for rule in rules.rules]
    grafana_vars = {"$__rate_interval": "1m", "$__range": "1h", "$model": ".*"}
    recording = []
    for index, query in enumerate(queries):
        for variable, value in grafana_vars.items():
            query = query.replace(variable, value)
        recording.append({"record": f"ferry:check_{index}", "expr": query})
    (tmp_path / "queries.yml").write_text(to_yaml({"groups": [{"name": "queries", "rules": recording}]}))
    assert f"SUCCESS: {len(queries)} rules found" in promtool("check", "rules", "queries.yml", cwd=tmp_path)


# --- a real Prometheus beside the monitor ------------------------------------------------------------


class Prometheus:
    def __init__(self, config: dict[str, Any], rules: dict[str, Any], folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "ferry.rules.yml").write_text(to_yaml(rules))
        (folder / "prometheus.yml").write_text(to_yaml(config))
        self.url = f"http://127.0.0.1:{free_port()}"
        self.log = folder / "prometheus.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    "prometheus",
                    f"--config.file={folder / 'prometheus.yml'}",
                    f"--storage.tsdb.path={folder / 'data'}",
                    f"--web.listen-address={self.url.removeprefix('http://')}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_for(self._ready, timeout_s=60, what=f"Prometheus ready (log {self.log})")

    def _ready(self) -> bool:
        assert self.process.poll() is None, self.log.read_text()[-3000:]
        try:
            return httpx.get(f"{self.url}/-/ready", timeout=5).status_code == 200
        except httpx.HTTPError:
            return False

    def firing(self, rule: str) -> list[dict[str, str]]:
        alerts = httpx.get(f"{self.url}/api/v1/alerts", timeout=10).json()["data"]["alerts"]
        return [
            alert["labels"] for alert in alerts if alert["labels"]["alertname"] == rule and alert["state"] == "firing"
        ]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


@pytest.fixture
def side_by_side(
    ferry_settings: FerrySettings, tmp_path: Path
) -> Iterator[tuple[FakeGateway, Prometheus, str, AlertWatcher]]:
    skip_without("prometheus")
    rules_file = short_rules(tmp_path / "rules.yaml")
    gateway, watcher = FakeGateway(version="5"), AlertWatcher(ferry_settings)
    # The drift references, which both engines read (the input reference through the monitor's gauges).
    registry = FakeRegistry({("digits", "5"): REFERENCE}, {("digits", "5"): INPUT_REFERENCE})
    gateway.publisher = KafkaPublisher(ferry_settings, source="tests")
    monitor, url = start_monitor(
        base_env(ferry_settings, tmp_path / "home"),
        tmp_path,
        rules_file=str(rules_file),
        targets=f"gateway={gateway.url}",
        registry_url=registry.url,
        input_window_rows=str(INPUT_ROWS),
    )
    targets = [
        ScrapeTarget("gateway", f"127.0.0.1:{gateway.server.port}"),
        ScrapeTarget("monitor", url.removeprefix("http://")),
    ]
    config = prometheus_config(targets, scrape_interval="1s", evaluation_interval="1s", alertmanager=None)
    prometheus = Prometheus(config, alerting_rules(read_rules(rules_file)), tmp_path / "prometheus")
    try:
        yield gateway, prometheus, url, watcher
    finally:
        prometheus.stop()
        monitor.stop()
        gateway.close()
        gateway.publisher.close()
        registry.close()
        watcher.close()


def test_prometheus_and_the_monitor_fire_the_same_alerts_from_the_same_rules(
    side_by_side: tuple[FakeGateway, Prometheus, str, AlertWatcher],
) -> None:
    gateway, prometheus, monitor_url, watcher = side_by_side
    wait_for(
        lambda: httpx.get(f"{prometheus.url}/api/v1/query", params={"query": "up"}).json()["data"]["result"],
        what="Prometheus's first scrape",
    )
    gateway.error_rate = 0.5
    expected = {
        "alertname": "GatewayErrorRatio",
        "model": "digits",
        "version": "5",
        "severity": "critical",
        "action": "rollback",
    }
    assert wait_for(lambda: prometheus.firing("GatewayErrorRatio"), what="Prometheus firing") == [expected]
    [mine] = wait_for(lambda: active(monitor_url, "GatewayErrorRatio"), what="the monitor firing")
    assert mine["labels"] == {"model": "digits", "version": "5"}
    gateway.error_rate = 0.0
    wait_for(lambda: not prometheus.firing("GatewayErrorRatio"), what="Prometheus resolving")
    wait_for(lambda: watcher.of("GatewayErrorRatio", "resolved"), what="the monitor resolving")

    gateway.close()  # and both see the target go down
    [down] = wait_for(lambda: prometheus.firing("TargetDown"), what="Prometheus's TargetDown")
    assert (down["job"], down["instance"]) == ("gateway", f"127.0.0.1:{gateway.server.port}")
    [event] = wait_for(lambda: watcher.of("TargetDown", "fired"), what="the monitor's TargetDown")
    assert event.labels == {"job": down["job"], "instance": down["instance"]}


def _latency(gateway: FakeGateway, on: bool) -> None:
    gateway.latency_s = 0.5 if on else 0.005


def _lag(gateway: FakeGateway, on: bool) -> None:
    gateway.consumer_lag("evaluator", 5000 if on else 3)


def _drift(gateway: FakeGateway, on: bool) -> None:
    gateway.class_weights = {"0": 10} if on else {cls: round(share * 10) for cls, share in REFERENCE.items()}


INPUT_ROWS = 250  # the monitor's window: a drive's rows replace the last drive's


def _input_drift(gateway: FakeGateway, on: bool) -> None:
    """Logged inputs as in training, or with every feature moved by two standard deviations."""
    rows = np.random.default_rng(int(on)).normal(size=(INPUT_ROWS, 4))
    gateway.log_inputs(rows + 2.0 if on else rows)


RULE_KINDS = {
    "GatewayLatencyP99": (_latency, {"model": "digits", "version": "5"}, "warning", "rollback"),
    "ConsumerLag": (_lag, {"group": "evaluator"}, "warning", "notify"),
    "PredictionDrift": (_drift, {"model": "digits", "version": "5"}, "warning", "notify"),
    "InputDrift": (_input_drift, {"model": "digits", "version": "5"}, "warning", "retrain"),
}


@pytest.mark.parametrize("rule", list(RULE_KINDS))
def test_prometheus_and_the_monitor_agree_on_every_rule_kind(
    side_by_side: tuple[FakeGateway, Prometheus, str, AlertWatcher], rule: str
) -> None:
    """The latency quantile, the consumer lag gauge, drift and input drift (the error ratio is above): each made
    to fire, then to resolve, in both engines, with the same labels."""
    gateway, prometheus, monitor_url, watcher = side_by_side
    drive, labels, severity, action = RULE_KINDS[rule]
    drive(gateway, False)
    wait_for(
        lambda: httpx.get(f"{prometheus.url}/api/v1/query", params={"query": "up"}).json()["data"]["result"],
        what="Prometheus's first scrape",
    )
    started = utc_now()  # the alert topic is the session's: this test's events began after this
    drive(gateway, True)
    expected = {"alertname": rule, **labels, "severity": severity, "action": action}
    assert wait_for(lambda: prometheus.firing(rule), what=f"Prometheus firing {rule}") == [expected]
    [mine] = wait_for(lambda: active(monitor_url, rule), what=f"the monitor firing {rule}")
    assert mine["labels"] == labels
    drive(gateway, False)
    wait_for(lambda: not prometheus.firing(rule), what=f"Prometheus resolving {rule}")
    [resolved] = wait_for(
        lambda: [e for e in watcher.of(rule, "resolved") if e.since >= started], what=f"the monitor resolving {rule}"
    )
    assert resolved.labels == labels
