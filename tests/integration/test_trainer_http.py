"""The trainer's HTTP face, as `ferry status` and the monitor see it: /healthz and /readyz tell the truth
about the process and its consumer, /metrics is Prometheus, and every other path is 404 (not metrics)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from support import free_port

from shared.local.stack import PROJECT_ROOT
from shared.settings import FerrySettings
from shared.waiting import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_trainer_answers_health_readiness_and_metrics_and_nothing_else(
    ferry_settings: FerrySettings, tmp_path: Path
) -> None:
    port = free_port()
    env = os.environ | {
        "FERRY_HOME": str(tmp_path / "home"),
        "FERRY_KAFKA_BOOTSTRAP": ferry_settings.kafka_bootstrap,
        "FERRY_TOPIC_PREFIX": ferry_settings.topic_prefix,
        "FERRY_ARTIFACT_ROOT": ferry_settings.resolved_artifact_root,
        "FERRY_TRAINER_CONSUMER_GROUP": f"{ferry_settings.topic_prefix}trainer",
        "FERRY_TRAINER_METRICS_PORT": str(port),
        "FERRY_REGISTRY_URL": "http://127.0.0.1:9",
    }
    log = tmp_path / "trainer.log"
    with log.open("wb") as out:
        trainer = subprocess.Popen(
            [sys.executable, "-m", "services.trainer"], cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    url = f"http://127.0.0.1:{port}"

    def get(path: str) -> httpx.Response | None:
        assert trainer.poll() is None, f"the trainer exited with {trainer.returncode}:\n{log.read_text()[-3000:]}"
        try:
            return httpx.get(url + path, timeout=5)
        except httpx.HTTPError:
            return None

    try:
        wait_for(lambda: get("/readyz") is not None, what="the trainer's HTTP port", timeout_s=90)
        ready = wait_for(
            lambda: (answer := get("/readyz")) is not None and answer.status_code == 200 and answer,
            what="the trainer's consumer to join its group",
            timeout_s=90,
        )
        assert ready.json() == {"status": "ready", "checks": {"consumer": True}}
        health = get("/healthz")
        assert health is not None and (health.status_code, health.json()) == (200, {"status": "ok"})
        metrics = get("/metrics")
        assert metrics is not None and metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain") and "# TYPE" in metrics.text
        for path in ("/docs", "/openapi.json", "/v2/health/live", "/nowhere"):
            answer = get(path)
            assert answer is not None and answer.status_code == 404, path
            assert "# TYPE" not in answer.text, path
        trainer.send_signal(signal.SIGTERM)
        assert trainer.wait(timeout=60) == 0, log.read_text()[-3000:]
    finally:
        if trainer.poll() is None:
            trainer.kill()
            trainer.wait(10)
