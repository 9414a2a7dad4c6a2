"""Drift against the real registry: the reference is the evaluation report's prediction distribution.

The registry process gets a version and a promote decision that carries the evaluator's report; the
monitor learns of the deployment from ``deployment.changed``, fetches the reference before the
first prediction, and a skewed prediction stream then fires PredictionDrift for that version.
"""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from monitor_support import AlertWatcher, FakeGateway, base_env, short_rules, start_monitor
from support import ServiceProcess, wait_for

from shared.artifacts import ArtifactStore
from shared.datasets import load_dataset, split
from shared.events import ArtifactRef, Hyperparameters, ModelDecided, ModelTrained, Signature, TensorSpec
from shared.input_reference import build_input_reference
from shared.kafka import KafkaPublisher
from shared.settings import FerrySettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REFERENCE = {"0": 0.5, "1": 0.3, "2": 0.2}


def register_and_promote(settings: FerrySettings, registry_url: str) -> None:
    # The registry registers only an artifact that is intact in its store (issue 7 §1).
    uri, sha256, size = ArtifactStore(settings.resolved_artifact_root).put_bytes(b"drift-test model")
    signature = Signature(
        inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, 4])],
        outputs=[TensorSpec(name="probabilities", datatype="FP32", shape=[-1, 3])],
    )
    trained = ModelTrained(
        model_name="digits",
        request_id="drift-test",
        signature=signature,
        dataset="sklearn:iris",
        split_id="s",
        artifact=ArtifactRef(uri=uri, sha256=sha256, size_bytes=size, format="onnx"),
        arch="mlp",
        hyperparameters=Hyperparameters(epochs=1),
        input_reference=build_input_reference(split(load_dataset("sklearn:iris")).train.features, "input"),
    )
    publisher = KafkaPublisher(settings, source="test")
    try:
        publisher.publish(trained)
        versions = f"{registry_url}/api/v1/models/digits/versions/1"
        wait_for(lambda: httpx.get(versions, timeout=5).status_code == 200, what="version 1 registered")
        report = {
            "candidate": {
                "version": 1,
                "accuracy": 0.9,
                "prediction_distribution": REFERENCE,
                "intervals": {"accuracy": {"estimate": 0.9, "low": 0.85, "high": 0.95}},  # online accuracy's bound
            }
        }
        publisher.publish(
            ModelDecided(
                model_name="digits",
                version=1,
                decision="promote",
                stage="champion",
                reason="first champion",
                report=report,
            )
        )
        wait_for(lambda: httpx.get(f"{versions}/evaluations", timeout=5).json(), what="the evaluation stored")
    finally:
        publisher.close()


def test_a_skewed_prediction_stream_fires_drift_for_that_version(
    ferry_settings: FerrySettings, fresh_database_url: str, tmp_path: Path
) -> None:
    env = base_env(ferry_settings, tmp_path / "home")
    registry_env = {**env, "FERRY_DATABASE_URL": fresh_database_url, "FERRY_REGISTRY_RELAY_IDLE_S": "0.05"}
    registry = ServiceProcess("registry", registry_env, tmp_path / "registry.log").start()
    gateway, watcher = FakeGateway(version="1"), AlertWatcher(ferry_settings)
    monitor = None
    try:
        register_and_promote(ferry_settings, registry.url)
        monitor, url = start_monitor(
            env,
            tmp_path,
            rules_file=str(short_rules(tmp_path / "rules.yaml")),
            targets=f"gateway={gateway.url}",
            registry_url=registry.url,
        )
        # No prediction yet: the reference comes through deployment.changed (the champion is version 1).
        reference = wait_for(lambda: reference_gauge(url), what="the drift reference gauge")
        assert reference == REFERENCE
        gateway.class_weights = {"0": 5, "1": 3, "2": 2}  # as on held-out data
        wait_for(lambda: "ferry_monitor_drift_psi" in metrics(url), what="a PSI value")
        assert watcher.of("PredictionDrift") == []
        gateway.class_weights = {"0": 1, "1": 1, "2": 18}  # class 2 takes over
        [fired] = wait_for(lambda: watcher.of("PredictionDrift", "fired"), what="PredictionDrift on Kafka")
        assert (fired.model_name, fired.version, fired.labels) == ("digits", 1, {"model": "digits", "version": "1"})
        assert fired.value > fired.threshold == 0.2
        [psi] = re.findall(r'ferry_monitor_drift_psi\{[^}]*version="1"[^}]*\} (\S+)', metrics(url))
        assert float(psi) > 0.2
    finally:
        codes = [process.stop() for process in (monitor, registry) if process is not None]
        gateway.close()
        watcher.close()
    assert codes == [0] * len(codes)


def metrics(url: str) -> str:
    return httpx.get(f"{url}/metrics", timeout=10).text


def reference_gauge(url: str) -> dict[str, float]:
    pattern = r'ferry_monitor_drift_reference\{class="(\d+)",model="digits",[^}]*version="1"\} (\S+)'
    return {cls: float(value) for cls, value in re.findall(pattern, metrics(url))}
