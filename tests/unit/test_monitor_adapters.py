"""The monitor's adapters over a fake HTTP transport: scraping, the registry's references, and the
export command's staleness check."""

from __future__ import annotations

import argparse
from pathlib import Path

import httpx
import pytest

from services.monitor.adapters.registry import RegistryReferences
from services.monitor.adapters.scraper import HttpScraper, Target
from services.monitor.cli import PROJECT_ROOT, run_export
from shared.registry_client import RegistryClient, RetryBudget

SECRET_BODY = "this is a private file, not metrics {\n"
EVALUATION = {
    "candidate_version": 2,
    "baseline_version": 1,
    "metrics": {"accuracy": 0.9},
    "baseline_metrics": {"accuracy": 0.8},
    "decision": "promote",
    "stage": "canary",
    "canary_weight": 0.1,
    "reason": "better",
    "actor": "evaluator",
    "source_event_id": None,
    "created_at": "2026-01-01T00:00:00Z",
}


def scraper_answering(status: int, body: str) -> HttpScraper:
    transport = httpx.MockTransport(lambda request: httpx.Response(status, text=body))
    return HttpScraper(client=httpx.Client(transport=transport))


def test_a_scrape_parses_the_exposition() -> None:
    result = scraper_answering(200, '# TYPE a counter\na_total{x="1"} 3\nb NaN\n').scrape(Target("t", "http://h:1/m"))
    assert result.ok and [(s.name, s.labels, s.value) for s in result.samples] == [("a_total", {"x": "1"}, 3.0)]


def test_a_failed_scrape_says_why_without_quoting_the_body() -> None:
    garbage = scraper_answering(200, SECRET_BODY).scrape(Target("t", "http://h:1/m"))
    assert not garbage.ok and garbage.error == "ValueError: the body is not Prometheus text exposition"
    refused = scraper_answering(503, "").scrape(Target("t", "http://h:1/m"))
    assert refused.error == "ValueError: HTTP 503"


def test_references_are_fetched_cached_and_an_absent_one_is_asked_again_later() -> None:
    asked: list[str] = []
    now = [0.0]

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        if "/models/gone/" in request.url.path:
            return httpx.Response(404, json={"error": "model 'gone' is not registered"})
        if "/models/broken/" in request.url.path:
            return httpx.Response(500)
        report = {"candidate": {"prediction_distribution": {"0": 0.25, "1": 0.75}}}
        return httpx.Response(200, json=[{**EVALUATION, "report": report}])

    client = RegistryClient.connect(
        "http://registry", transport=httpx.MockTransport(answer), budget=RetryBudget(attempts=1), sleep=lambda s: None
    )
    references = RegistryReferences(
        client,
        ttl_s=100,
        missing_ttl_s=10,
        clock=lambda: now[0],
    )
    references.refresh({("digits", "2"), ("gone", "1"), ("broken", "1"), ("../etc", "1"), ("digits", "x")})
    assert references.get("digits", "2") == {"0": 0.25, "1": 0.75}
    assert references.get("gone", "1") is None and references.known() == {("digits", "2"): {"0": 0.25, "1": 0.75}}
    assert sorted(asked) == [
        "/api/v1/models/broken/versions/1/evaluations",
        "/api/v1/models/digits/versions/2/evaluations",
        "/api/v1/models/gone/versions/1/evaluations",
    ]
    asked.clear()
    now[0] = 50.0  # the absence has expired, the reference has not; the failed fetch is tried again
    references.refresh({("digits", "2"), ("gone", "1"), ("broken", "1")})
    assert sorted(asked) == [
        "/api/v1/models/broken/versions/1/evaluations",
        "/api/v1/models/gone/versions/1/evaluations",
    ]


def test_export_check_fails_on_a_stale_file_and_passes_once_rewritten(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = argparse.Namespace(
        rules=PROJECT_ROOT / "deploy" / "alerts" / "rules.yaml",
        out=tmp_path,
        check=True,
        prometheus_url="http://127.0.0.1:9090",
        monitor_url="http://127.0.0.1:8082",
        alertmanager_credentials_file=None,
    )
    assert run_export(args) == 1  # nothing written yet
    assert run_export(argparse.Namespace(**{**vars(args), "check": False})) == 0
    assert run_export(args) == 0
    (tmp_path / "prometheus" / "ferry.rules.yml").write_text("edited by hand\n")
    assert run_export(args) == 1
    assert "out of date" in capsys.readouterr().err
    elsewhere = argparse.Namespace(**{**vars(args), "check": False, "alertmanager_credentials_file": "/etc/am/token"})
    assert run_export(elsewhere) == 0
    assert "credentials_file: /etc/am/token" in (tmp_path / "prometheus" / "alertmanager.yml").read_text()
