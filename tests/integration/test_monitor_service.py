"""The monitor as it runs: a real process on the real broker, scraping a real HTTP target.

The target stands in for the gateway with the gateway's metric names (the gateway's own tests in
test_monitor_gateway.py run once it exists). Windows and ``for`` are shortened through the rules
file, never waited out by the clock: every wait is on a condition, with a generous deadline.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from monitor_support import AlertWatcher, FakeGateway, WebhookReceiver, active, base_env, short_rules, start_monitor
from support import ServiceProcess, wait_for

from services.monitor.adapters.rules_file import read_rules
from shared.local.stack import PROJECT_ROOT
from shared.settings import FerrySettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


ALERTMANAGER_TOKEN = "Hm3uV6sQ1dRf8jXa5nWk"


@dataclass
class Running:
    gateway: FakeGateway
    watcher: AlertWatcher
    webhook: WebhookReceiver
    monitor: ServiceProcess
    url: str


@pytest.fixture
def running(ferry_settings: FerrySettings, tmp_path: Path) -> Iterator[Running]:
    gateway, watcher, webhook = FakeGateway(version="3"), AlertWatcher(ferry_settings), WebhookReceiver()
    env = base_env(ferry_settings, tmp_path / "home")
    webhook_tokens = tmp_path / "webhook-tokens"
    webhook_tokens.write_text(f"alertmanager {ALERTMANAGER_TOKEN}\n")
    monitor, url = start_monitor(
        env,
        tmp_path,
        rules_file=str(short_rules(tmp_path / "rules.yaml")),
        webhook_urls=webhook.url,
        targets=f"gateway={gateway.url}",
        registry_url="http://127.0.0.1:9",
        webhook_tokens_file=str(webhook_tokens),
    )
    try:
        yield Running(gateway, watcher, webhook, monitor, url)
    finally:
        code = monitor.stop()
        gateway.close()
        watcher.close()
        webhook.close()
        assert code == 0, f"the monitor did not stop cleanly:\n{monitor.log.read_text()[-3000:]}"


def test_failing_requests_fire_the_error_ratio_alert_on_kafka_and_it_resolves_when_healthy(running: Running) -> None:
    wait_for(
        lambda: any(t["up"] for t in httpx.get(f"{running.url}/api/v1/targets").json()["targets"]),
        what="the first scrape",
    )
    assert running.watcher.of("GatewayErrorRatio") == []
    running.gateway.error_rate = 0.5
    [fired] = wait_for(lambda: running.watcher.of("GatewayErrorRatio", "fired"), what="GatewayErrorRatio on Kafka")
    assert (fired.model_name, fired.version, fired.action, fired.severity) == ("digits", 3, "rollback", "critical")
    assert fired.labels == {"model": "digits", "version": "3"}
    assert fired.value > fired.threshold == 0.05
    [listed] = active(running.url, "GatewayErrorRatio")
    assert listed["labels"] == {"model": "digits", "version": "3"} and listed["action"] == "rollback"

    running.gateway.error_rate = 0.0
    [resolved] = wait_for(lambda: running.watcher.of("GatewayErrorRatio", "resolved"), what="the resolution")
    assert resolved.since == fired.since  # the same alert: since is when it began
    assert active(running.url, "GatewayErrorRatio") == []
    recent = httpx.get(f"{running.url}/api/v1/alerts").json()["recent"]
    assert [(a["rule"], a["state"]) for a in recent] == [("GatewayErrorRatio", "resolved")]
    wait_for(lambda: running.webhook.statuses("GatewayErrorRatio") == ["firing", "resolved"], what="both webhooks")
    assert len(running.watcher.of("GatewayErrorRatio")) == 2  # fired once, resolved once


def test_a_target_that_goes_down_fires_target_down_and_the_monitor_goes_on(running: Running) -> None:
    wait_for(
        lambda: any(t["up"] for t in httpx.get(f"{running.url}/api/v1/targets").json()["targets"]),
        what="the first scrape",
    )
    running.gateway.close()
    [fired] = wait_for(lambda: running.watcher.of("TargetDown", "fired"), what="TargetDown on Kafka")
    assert fired.labels == {"job": "gateway", "instance": f"127.0.0.1:{running.gateway.server.port}"}
    assert (fired.model_name, fired.version) == ("ferry", None)
    [target] = httpx.get(f"{running.url}/api/v1/targets").json()["targets"]
    assert target["up"] is False and target["last_error"]
    assert httpx.get(f"{running.url}/healthz").status_code == 200
    rules = {rule["name"]: rule for rule in httpx.get(f"{running.url}/api/v1/rules").json()["rules"]}
    assert rules["TargetDown"]["active"] == 1 and rules["TargetDown"]["error"] is None
    assert len(rules) == len(read_rules(PROJECT_ROOT / "deploy" / "alerts" / "rules.yaml").rules)


def test_only_an_authenticated_webhook_reaches_the_alert_topic(running: Running) -> None:
    """One rule and model throughout, so one partition: a forged alert that got through would be read
    before the genuine one sent after it."""
    url = f"{running.url}/api/v1/alertmanager-webhook"

    def webhook(sent_by: str, **extra_labels: str) -> dict:
        labels = {"alertname": "Forgeable", "model": "digits", "version": "2", "action": "rollback"}
        alert = {"status": "firing", "labels": {**labels, "sent_by": sent_by, **extra_labels}, "fingerprint": sent_by}
        return {"alerts": [alert]}

    forged = [
        httpx.post(url, json=webhook("nobody"), timeout=10),
        httpx.post(url, json=webhook("guesser"), headers={"Authorization": "Bearer Hm3uV6sQ1dRf8jXa5nWj"}, timeout=10),
        httpx.post(url, json=webhook("basic"), auth=("alertmanager", "not-the-token-7f2k"), timeout=10),
    ]
    assert [answer.status_code for answer in forged] == [401, 401, 401]
    assert all("WWW-Authenticate" in answer.headers for answer in forged)
    as_alertmanager = {"Authorization": f"Bearer {ALERTMANAGER_TOKEN}"}
    nul = httpx.post(url, json=webhook("nul", job="a\x00b"), headers=as_alertmanager, timeout=10)
    assert nul.status_code == 422 and "labels.job" in nul.json()["error"]

    genuine = httpx.post(url, json=webhook("alertmanager"), headers=as_alertmanager, timeout=10)
    assert genuine.status_code == 200 and genuine.json() == {"published": 1, "duplicates": 0}  # acked by the broker
    [event] = wait_for(lambda: running.watcher.of("Forgeable"), what="the genuine alert on Kafka")
    assert event.labels["sent_by"] == "alertmanager" and (event.action, event.version) == ("rollback", 2)
    assert [e.labels["sent_by"] for e in running.watcher.of("Forgeable")] == ["alertmanager"]
