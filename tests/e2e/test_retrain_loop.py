"""End to end: retraining on drift, judged like any candidate (issue 15's "done when"), on the real broker and
PostgreSQL with the registry, trainer, evaluator and monitor as processes.

A first version is trained and becomes the champion. Then the logged inputs shift (the same digits, intensities
inverted) and their ground truth is given as feedback: the monitor's InputDrift fires with action retrain, the
evaluator reads the labelled window back from Kafka, materialises it under the datasets root and publishes one
training request for the champion's recipe on the original plus the window, with the alert as its cause. The new
version is judged on the original held-out split and on the window's held-out part, made a canary and promoted;
the registry's history records alert → request → version → decision. A second retrain alert inside the
cooldown publishes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import yaml
from e2e_support import Processes
from support import free_port

from shared.datasets import load_dataset
from shared.events import (
    AlertChanged,
    FeedbackItem,
    Hyperparameters,
    InferenceFeedback,
    InferenceLogged,
    LoggedTensor,
    TrainingRequested,
)
from shared.kafka import KafkaPublisher
from shared.local.stack import PROJECT_ROOT
from shared.settings import FerrySettings
from shared.window_reader import recent_retrains

pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(600)]

WINDOW_ROWS = 240
RECIPE = Hyperparameters(epochs=25, hidden_sizes=[64], learning_rate=1e-2, patience=5)


def short_rules(path: Path) -> Path:
    """The shipped rules, their ``for`` shortened; InputDrift judged on this test's window."""
    document = yaml.safe_load((PROJECT_ROOT / "deploy" / "alerts" / "rules.yaml").read_text())
    for rule in document["rules"]:
        rule["for"] = "1s"
        if rule["name"] == "InputDrift":
            rule["min_rows"] = WINDOW_ROWS
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
def loop_env(user_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {
        **user_env,
        "FERRY_REGISTRY_RELAY_IDLE_S": "0.05",
        "FERRY_EVALUATOR_PORT": str(free_port()),
        "FERRY_EVALUATOR_BAKE_S": "3",
        "FERRY_EVALUATOR_RESYNC_INTERVAL_S": "1",
        # What this test judges is the chain, not the policy's thresholds: timings and a small window's noise
        # must not decide the verdicts.
        "FERRY_EVALUATOR_LATENCY_TOLERANCE_MS": "50",
        "FERRY_EVALUATOR_LATENCY_RUNS": "50",
        "FERRY_EVALUATOR_MARGIN": "0.15",
        "FERRY_EVALUATOR_MIN_ACCURACY": "0.5",
        "FERRY_EVALUATOR_MIN_F1_MACRO": "0.4",
        "FERRY_EVALUATOR_SLICE_MARGIN": "0.5",
        "FERRY_EVALUATOR_RETRAIN_MIN_ROWS": "100",
        "FERRY_EVALUATOR_RETRAIN_WINDOW_S": "900",
        "FERRY_EVALUATOR_RETRAIN_COOLDOWN_S": "3600",
        "FERRY_MONITOR_SCRAPE_INTERVAL_S": "0.5",
        "FERRY_MONITOR_RULES_FILE": str(short_rules(tmp_path / "rules.yaml")),
        "FERRY_MONITOR_INPUT_WINDOW_ROWS": str(WINDOW_ROWS),
    }


@pytest.fixture
def processes(loop_env: dict[str, str], tmp_path: Path) -> Iterator[Processes]:
    running = Processes(loop_env, tmp_path)
    yield running
    running.stop()


def shifted_traffic(publisher: KafkaPublisher) -> None:
    """Inverted digits, each logged as one answered request, and their true classes given as feedback first."""
    digits = load_dataset("sklearn:digits")
    rows = np.random.default_rng(11).choice(len(digits.labels), WINDOW_ROWS, replace=False)
    ids = [f"shifted-{row}" for row in rows]
    labels = [
        FeedbackItem(request_id=request_id, label=int(digits.labels[row]))
        for request_id, row in zip(ids, rows, strict=True)
    ]
    publisher.publish(InferenceFeedback(model_name="digits", items=labels, actor="labeller"))
    logged = [
        InferenceLogged(
            model_name="digits",
            request_id=request_id,
            version=1,
            route="champion",
            inputs=[
                LoggedTensor(name="input", datatype="FP32", shape=[1, 64], data=(16.0 - digits.features[row]).tolist())
            ],
            outputs=[],
        )
        for request_id, row in zip(ids, rows, strict=True)
    ]
    assert publisher.publish_batch([(event, None) for event in logged]) == [None] * len(logged)


def refused_retrains(evaluator_url: str) -> float:
    """The evaluator's count of retrain alerts it refused (cooldown, window), from its /metrics."""
    text = httpx.get(f"{evaluator_url}/metrics", timeout=5).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("ferry_evaluator_skipped_total{") and 'reason="retrain_refused"' in line
    )


def test_drift_retrains_on_the_production_window_judged_on_both_splits_once_per_cooldown(
    loop_env: dict[str, str], processes: Processes, ferry_settings: FerrySettings
) -> None:
    api = f"{loop_env['FERRY_REGISTRY_URL']}/api/v1/models/digits"
    evaluator_url = f"http://127.0.0.1:{loop_env['FERRY_EVALUATOR_PORT']}"

    def get(path: str) -> Any:
        response = httpx.get(f"{api}{path}", timeout=5)
        return response.json() if response.status_code == 200 else None

    def champion() -> int | None:
        return (get("/deployment") or {}).get("champion")

    for name in ("registry", "trainer", "evaluator"):
        processes.start(name)
    processes.wait_ready("registry")
    processes.wait_ready("evaluator")
    processes.start("monitor", FERRY_MONITOR_TARGETS=f"registry={loop_env['FERRY_REGISTRY_URL']}")
    publisher = KafkaPublisher(ferry_settings, source="tests")
    try:
        publisher.publish(TrainingRequested(model_name="digits", dataset="sklearn:digits", hyperparameters=RECIPE))
        processes.until("v1 as the first champion", lambda: champion() == 1, timeout_s=300)
        processes.wait_ready("monitor")

        shifted_traffic(publisher)
        [request] = processes.until(
            "the retrain request", lambda: recent_retrains(ferry_settings, "digits", since_s=900), timeout_s=180
        )
        cause = request.cause
        assert cause is not None and (cause.rule, cause.version, cause.window_rows) == ("InputDrift", 1, WINDOW_ROWS)
        assert request.dataset == f"sklearn:digits+window:{cause.window}" and cause.alert_id in cause.window
        assert (request.hyperparameters, cause.champion_version) == (RECIPE, 1)  # the champion's recipe
        window = Path(loop_env["FERRY_HOME"]) / "datasets" / cause.window
        assert len(window.read_text().splitlines()) == WINDOW_ROWS + 1

        processes.until("v2 promoted after its canary", lambda: champion() == 2, timeout_s=420)
        version = get("/versions/2")
        assert (version["dataset"], version["training_request_id"]) == (request.dataset, request.request_id)
        assert version["cause"] == cause.model_dump(mode="json")  # the registry keeps the alert that asked
        canary = [e for e in get("/versions/2/evaluations") if e["stage"] == "canary"][0]
        production = canary["report"]["production"]
        assert production["policy"] == "both" and production["window_rows"] == WINDOW_ROWS
        assert production["held_out_rows"] > 20 and production["original"]["decision"]["decision"] == "promote"
        assert production["report"]["decision"]["decision"] == "promote"
        assert canary["report"]["split"]["rows"] > 200  # the original's held-out split, scored too
        assert cause.alert_id in canary["reason"] and "production window" in canary["reason"]
        entries = get("/deployment/history")["items"]
        assert any(cause.alert_id in entry["reason"] and entry["to_challenger"] == 2 for entry in entries)

        refused = refused_retrains(evaluator_url)
        publisher.publish(
            AlertChanged(
                model_name="digits",
                rule="OnlineAccuracyBelowEvaluation",
                state="fired",
                version=2,
                action="retrain",
                value=-0.2,
                threshold=0.0,
            ),
            event_id="a-second-alert",
        )
        processes.until("the second alert refused", lambda: refused_retrains(evaluator_url) > refused)
        assert recent_retrains(ferry_settings, "digits", since_s=900) == [request]  # no second retrain
    finally:
        publisher.close()
