"""The web console in a real browser (Debian's Chromium, driven by Playwright) against the real services.

Every service runs as its own process on the session's Kafka and PostgreSQL. A user trains two versions
of a model with `ferry train` (the second becomes a canary that bakes for longer than the test), and one
malformed request is dead-lettered. Then every page is loaded and read: the model, its version numbers,
the evaluator's reason, the history's reasons, the runs, the dead letter (escaped). An action without a
token sends nothing, one with a wrong token is refused by the registry and changes nothing, and with the
operator's token the challenger is withdrawn through the UI, which the registry's history then records.
Any console error, page error or failed request in the browser fails the test.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from browser_support import Watched, chromium
from e2e_support import Processes, ferry, train_digits
from kafka import KafkaProducer
from playwright.sync_api import expect
from support import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN = secrets.token_urlsafe(24)
POISON = b'{"model_name": "digits", "dataset": "<script>alert(1)</script>"'  # cut short: not JSON


@pytest.fixture
def console_env(user_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    tokens = tmp_path / "api-tokens"
    tokens.write_text(f"operator {TOKEN}\n")
    tokens.chmod(0o600)
    ports = {name: str(free_port()) for name in ("EVALUATOR", "GATEWAY", "MONITOR", "CONSOLE")}
    return {
        **user_env,
        **{f"FERRY_{name}_PORT": port for name, port in ports.items()},
        **{f"FERRY_{name}_URL": f"http://127.0.0.1:{port}" for name, port in ports.items()},
        "FERRY_REGISTRY_TOKENS_FILE": str(tokens),
        "FERRY_REGISTRY_RELAY_IDLE_S": "0.05",
        "FERRY_EVALUATOR_BAKE_S": "3600",  # the canary is still baking when the browser withdraws it
        "FERRY_EVALUATOR_LATENCY_TOLERANCE_MS": "50",
    }


@pytest.fixture
def processes(console_env: dict[str, str], tmp_path: Path) -> Iterator[Processes]:
    running = Processes(console_env, tmp_path / "logs")
    (tmp_path / "logs").mkdir()
    yield running
    running.stop()


def poison(env: dict[str, str]) -> None:
    producer = KafkaProducer(bootstrap_servers=env["FERRY_KAFKA_BOOTSTRAP"], acks="all")
    headers = [
        ("ce_specversion", b"1.0"),
        ("ce_id", b"poison-1"),
        ("ce_source", b"tests/console"),
        ("ce_type", b"ferry.training.requested.v1"),
        ("content-type", b"application/json"),
    ]
    producer.send(f"{env['FERRY_TOPIC_PREFIX']}training.requested", key=b"digits", value=POISON, headers=headers)
    producer.flush(timeout=30)
    producer.close()


def test_the_console_shows_the_loop_and_rolls_back_through_the_browser(
    console_env: dict[str, str], processes: Processes
) -> None:
    registry = console_env["FERRY_REGISTRY_URL"]
    console = console_env["FERRY_CONSOLE_URL"]
    api = f"{registry}/api/v1/models/digits"

    def deployment() -> dict[str, Any]:
        answer = httpx.get(f"{api}/deployment", timeout=5)
        return answer.json() if answer.status_code == 200 else {}

    processes.start("registry")
    processes.wait_ready("registry")
    for name in ("trainer", "evaluator", "gateway", "monitor", "console"):
        processes.start(name)
    for name in ("evaluator", "gateway", "monitor", "console"):
        processes.wait_ready(name)

    first = train_digits(console_env, "16", 6, 3)
    processes.until("v1 as the champion", lambda: deployment().get("champion") == 1)
    second = train_digits(console_env, "96", 30, 1)
    processes.until("v2 as the canary", lambda: deployment().get("challenger") == 2, timeout_s=120)
    poison(console_env)
    processes.until(
        "the poison dead-lettered",
        lambda: "poison-1" in ferry(console_env, "dlq", "list", "training.requested", "--json").stdout,
    )
    evaluation = httpx.get(f"{api}/versions/2/evaluations", timeout=5).json()[0]
    history = httpx.get(f"{api}/deployment/history", timeout=5).json()["items"]

    with chromium() as browser:
        context = browser.new_context()
        page = context.new_page()
        watched = Watched(page).attach()

        page.goto(console)
        row = page.get_by_test_id("model-row-digits")
        assert row.get_by_test_id("champion-cell").inner_text().strip() == "v1"
        assert row.get_by_test_id("challenger-cell").inner_text().strip() == "v2"
        assert evaluation["reason"] in row.get_by_test_id("decision-reason").inner_text()

        page.goto(f"{console}/models/digits")
        assert page.get_by_test_id("model-name").inner_text() == "digits"
        for version in (1, 2):
            trained = httpx.get(f"{api}/versions/{version}", timeout=5).json()["metrics"]["val_accuracy"]
            cell = page.get_by_test_id(f"version-row-{version}").get_by_test_id("version-validation")
            assert cell.inner_text().strip() == f"accuracy {trained:.4f}"
        shown = page.get_by_test_id("history-reason").all_inner_texts()
        assert [entry["reason"] for entry in history] == [text.strip() for text in shown]
        assert page.get_by_test_id("gateway-row").count() == 1

        page.goto(f"{console}/models/digits/versions/2/evaluation")
        assert page.get_by_test_id("evaluation-reason").inner_text().strip() == evaluation["reason"]
        assert page.get_by_test_id("ci-chart").is_visible()
        assert page.get_by_test_id("mcnemar").count() == len(evaluation["report"]["comparison"])  # one per metric
        assert page.get_by_test_id("confusion-matrix").count() == 2

        page.goto(f"{console}/models/digits/compare?v=1&v=2")
        for version in (1, 2):
            assert page.get_by_test_id(f"compare-column-{version}").is_visible()
        held_out = evaluation["report"]["candidate"]["metrics"]["accuracy"]  # the evaluator's, on the test split
        assert f"{held_out:.4f}" in page.get_by_test_id("compare-table").inner_text()

        page.goto(f"{console}/training")
        for request_id in (first, second):
            run = page.get_by_test_id(f"run-row-{request_id}")
            assert run.get_by_test_id("run-state").inner_text().strip() == "completed"

        page.goto(f"{console}/alerts")
        assert page.get_by_test_id("rules-table").is_visible()

        page.goto(f"{console}/dead-letters")
        letter = page.locator("[data-testid='dead-letter-row'][data-id='poison-1']")  # one: the trainer's copy
        letter.locator("summary").click()  # the payload opens on demand
        assert "<script>alert(1)</script>" in letter.get_by_test_id("dead-letter-payload").inner_text()
        assert page.locator("script", has_text="alert(1)").count() == 0  # shown as text, never run
        assert letter.get_by_test_id("dead-letter-reason").inner_text().strip()

        # No token: the console sends nothing and says what to do.
        page.goto(f"{console}/models/digits")
        page.get_by_test_id("action-withdraw").click()
        expect(page.get_by_test_id("action-result")).to_contain_text("token")
        assert not page.get_by_test_id("confirm-dialog").is_visible()

        # A wrong token: the registry refuses it, and nothing changes.
        watched.expected_statuses = {401, 403}
        page.get_by_test_id("token-input").fill("not-the-operators-token-at-all")
        page.get_by_test_id("action-withdraw").click()
        expect(page.get_by_test_id("confirm-text")).to_contain_text("challenger version 2 stops serving")
        page.get_by_test_id("confirm-ok").click()
        page.get_by_test_id("action-result").filter(has_text="Refused").wait_for()
        assert deployment().get("challenger") == 2
        watched.expected_statuses = set()

        # The operator's token: withdrawn, and the registry's history says who and why.
        page.get_by_test_id("token-input").fill(TOKEN)
        page.get_by_test_id("reason-input").fill("withdrawn from the console by the browser test")
        page.get_by_test_id("action-withdraw").click()
        expect(page.get_by_test_id("confirm-dialog")).to_be_visible()
        page.get_by_test_id("confirm-ok").click()
        page.get_by_test_id("action-result").filter(has_text="Done").wait_for()
        newest = httpx.get(f"{api}/deployment/history", timeout=5).json()["items"][0]
        assert (newest["action"], newest["from_challenger"], newest["to_challenger"]) == ("rollback", 2, None)
        assert newest["reason"] == "withdrawn from the console by the browser test"
        assert "operator" in newest["actor"]
        assert page.get_by_test_id("history-reason").first.inner_text().strip() == newest["reason"]

        assert watched.problems == []
        context.close()
