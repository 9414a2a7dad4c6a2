"""Property-based fuzzing of the monitor's HTTP API from its own OpenAPI document: no input may yield a
5xx. The monitor is wired by its bootstrap on the real broker, so the webhooks' alerts that get through
are published for real."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from fuzzing import fuzz_app

from services.monitor.bootstrap import MonitorService, bootstrap
from services.monitor.entrypoints.api import create_app
from services.monitor.settings import MonitorSettings
from shared.events import Event
from shared.settings import FerrySettings

pytestmark = pytest.mark.integration
TOKEN = "Hm3uV6sQ1dRf8jXa5nWk"


@pytest.fixture
def monitor(ferry_settings: FerrySettings, tmp_path: Path) -> Iterator[MonitorService]:
    tokens = tmp_path / "webhook-tokens"
    tokens.write_text(f"alertmanager {TOKEN}\n")
    settings = MonitorSettings(
        ferry=ferry_settings,
        webhook_tokens_file=tokens,
        targets="gateway=http://127.0.0.1:9",  # refused: a TargetDown alert for the API to list
        registry_url="http://127.0.0.1:9",
    )
    service = bootstrap(settings)
    try:
        service.monitor.tick()
        yield service
    finally:
        service.close()


def test_no_input_to_the_monitor_yields_a_server_error(monitor: MonitorService) -> None:
    report = fuzz_app(create_app(monitor.api_deps()), headers={"Authorization": f"Bearer {TOKEN}"})
    assert {"POST /api/v1/alertmanager-webhook", "POST /api/v1/grafana-webhook", "GET /api/v1/alerts"} <= set(
        report.operations
    )
    assert {200, 422} <= set(report.statuses)  # alerts published, and bad payloads refused


def test_without_a_credential_no_input_gets_past_the_webhooks(monitor: MonitorService) -> None:
    deps = monitor.api_deps()
    asked: list[object] = []

    def recording(items: Sequence[tuple[Event, str | None]]) -> list[Exception | None]:
        asked.extend(items)
        return deps.publish_batch(items)

    report = fuzz_app(create_app(replace(deps, publish_batch=recording)), max_examples=15)
    assert 401 in report.statuses and asked == []
