"""End to end: registry, trainer and evaluator processes on the real stack; a user runs `ferry train` twice.

The evaluator issue's "done when": the second version's evaluation (both models, the test, the decision
and its reason) is visible through the registry's REST API, and the canary, the promotion and a forced
rollback all show in the deployment history. On the way the evaluator crashes right after publishing
the canary decision (a fault point), and the restarted one neither evaluates again nor forgets the bake.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from e2e_support import Processes, ferry, train_digits
from support import free_port

from shared.events import AlertChanged
from shared.faults import FAULT_EXIT_CODE, reached
from shared.kafka import KafkaPublisher
from shared.settings import FerrySettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BAKE_S = 4.0


@pytest.fixture
def loop_env(user_env: dict[str, str]) -> dict[str, str]:
    return {
        **user_env,
        "FERRY_REGISTRY_RELAY_IDLE_S": "0.05",
        "FERRY_EVALUATOR_PORT": str(free_port()),
        "FERRY_EVALUATOR_BAKE_S": str(BAKE_S),
        "FERRY_EVALUATOR_RESYNC_INTERVAL_S": "1",
        # Timings are not what this test judges: a busy machine's scheduler must not decide the verdicts.
        "FERRY_EVALUATOR_LATENCY_TOLERANCE_MS": "50",
    }


@pytest.fixture
def processes(loop_env: dict[str, str], tmp_path: Path) -> Iterator[Processes]:
    running = Processes(loop_env, tmp_path)
    yield running
    running.stop(allowed=(0, FAULT_EXIT_CODE))


def test_two_trainings_end_in_a_baked_promotion_and_a_forced_rollback(
    loop_env: dict[str, str], processes: Processes, tmp_path: Path
) -> None:
    registry = loop_env["FERRY_REGISTRY_URL"]
    api = f"{registry}/api/v1/models/digits"
    evaluator_url = f"http://127.0.0.1:{loop_env['FERRY_EVALUATOR_PORT']}"
    faults = tmp_path / "faults"

    def deployment() -> dict[str, Any]:
        response = httpx.get(f"{api}/deployment", timeout=5)
        return response.json() if response.status_code == 200 else {}

    processes.start("registry")
    processes.wait_ready("registry")
    processes.start("trainer")
    crashing = processes.start(
        "evaluator", FERRY_FAULT_POINT="evaluator.after_decision@2", FERRY_FAULT_REPORT=str(faults)
    )
    processes.wait_ready("evaluator")

    train_digits(loop_env, "16", 6, 3)
    processes.until("v1 as the first champion", lambda: deployment().get("champion") == 1)
    train_digits(loop_env, "96", 30, 1)
    assert crashing.wait(timeout_s=120) == FAULT_EXIT_CODE  # it died right after publishing v2's canary decision
    assert reached(faults) == ["evaluator.after_decision"]
    processes.start("evaluator")  # the same model.registered comes again; the bake lives in the registry
    processes.until("v2 as the canary", lambda: 2 in (deployment().get("challenger"), deployment().get("champion")))
    processes.until("v2 promoted after its bake", lambda: deployment().get("champion") == 2)

    evaluations = httpx.get(f"{api}/versions/2/evaluations", timeout=5).json()
    assert [(e["decision"], e["stage"]) for e in evaluations] == [("promote", "champion"), ("promote", "canary")]
    report = evaluations[1]["report"]
    assert report["candidate"]["version"] == 2 and report["champion"]["version"] == 1
    assert set(report["comparison"]) == {"accuracy", "f1_macro"}
    assert report["comparison"]["accuracy"]["mcnemar"]["p_value"] <= 1
    assert report["decision"]["reason"] == evaluations[1]["reason"] and "accuracy" in evaluations[1]["reason"]

    settings = FerrySettings(
        kafka_bootstrap=loop_env["FERRY_KAFKA_BOOTSTRAP"], topic_prefix=loop_env["FERRY_TOPIC_PREFIX"]
    )
    publisher = KafkaPublisher(settings, source="tests")
    publisher.publish(
        AlertChanged(
            model_name="digits",
            rule="latency_p99",
            state="fired",
            version=2,
            severity="critical",
            action="rollback",
            value=0.9,
            threshold=0.05,
        )
    )
    publisher.close()
    processes.until("v2 rolled back", lambda: deployment().get("champion") == 1)

    history = list(reversed(httpx.get(f"{api}/deployment/history", timeout=5).json()["items"]))
    assert [(e["action"], e["to_champion"], e["to_challenger"]) for e in history] == [
        ("promote", 1, None),
        ("promote", 1, 2),
        ("promote", 2, None),
        ("rollback", 1, None),
    ]
    assert all(entry["actor"] == "evaluator" for entry in history)

    compared = ferry(loop_env, "compare", "digits", "1", "2", "--latency-runs", "100")
    assert compared.returncode == 0, compared.stdout + compared.stderr
    assert "differences against v1" in compared.stdout and "McNemar p=" in compared.stdout
    accuracy_line = next(line for line in compared.stdout.splitlines() if line.startswith("accuracy"))
    assert f"{report['candidate']['metrics']['accuracy']:.4f}" in accuracy_line

    assert httpx.get(f"{evaluator_url}/healthz", timeout=5).status_code == 200
    assert httpx.get(f"{evaluator_url}/api/v1/bakes", timeout=5).json() == []
    exposed = httpx.get(f"{evaluator_url}/metrics", timeout=5).text
    assert 'ferry_evaluator_evaluations_total{decision="rollback"' in exposed
    assert 'ferry_evaluator_evaluations_total{decision="promote"' in exposed
