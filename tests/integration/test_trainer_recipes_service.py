"""A recipe from an installed package, through the real trainer process on the real broker: trained, exported,
verified and announced; and a request naming no installed recipe refused with its reason."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from recipes_support import EXAMPLES, ROOT, write_examples
from support import ServiceProcess

from shared import onnx as shared_onnx
from shared.artifacts import ArtifactStore
from shared.envelope import decode
from shared.events import Event, Hyperparameters, ModelTrained, TrainingRequested, TrainingStatus
from shared.kafka import KafkaPublisher, make_consumer
from shared.settings import FerrySettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _trainer(settings: FerrySettings, tmp_path: Path, **extra_env: str) -> ServiceProcess:
    """A trainer whose Python path holds the example package and its distribution metadata, as after pip
    (``extra_env``: more of its environment, FERRY_DATASETS_ROOT say)."""
    site = write_examples(tmp_path / "site")
    path = os.pathsep.join(filter(None, [str(site), str(EXAMPLES), str(ROOT), os.environ.get("PYTHONPATH")]))
    env = os.environ | {
        "PYTHONPATH": path,
        "FERRY_HOME": str(tmp_path / "trainer"),
        "FERRY_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "FERRY_TOPIC_PREFIX": settings.topic_prefix,
        "FERRY_TOPIC_PARTITIONS": str(settings.topic_partitions),
        "FERRY_ARTIFACT_ROOT": settings.resolved_artifact_root,
        "FERRY_LOG_LEVEL": "INFO",
        "FERRY_TRAINER_CONSUMER_GROUP": f"{settings.topic_prefix}trainer",
        "FERRY_TRAINER_METRICS_PORT": "0",
        "FERRY_TRAINER_BUDGET_S": "300",
        "FERRY_REGISTRY_URL": "http://127.0.0.1:9",  # no distillation here
        **extra_env,
    }
    return ServiceProcess("trainer", env, tmp_path / "trainer.log").start(wait=False)


def _until_settled(settings: FerrySettings, requests: list[TrainingRequested], timeout_s: float = 240) -> list[Event]:
    """Every event about these requests, until each has completed or failed."""
    consumer = make_consumer(settings, f"{settings.topic_prefix}observer", [TrainingStatus.topic, ModelTrained.topic])
    wanted, seen, settled = {request.request_id for request in requests}, [], set()
    deadline = time.monotonic() + timeout_s
    try:
        while settled != wanted:
            assert time.monotonic() < deadline, f"timed out; saw {seen}"
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    event = decode(record.headers, record.key, record.value).event
                    if getattr(event, "request_id", None) in wanted:
                        seen.append(event)
                        if isinstance(event, TrainingStatus) and event.state in {"completed", "failed"}:
                            settled.add(event.request_id)
    finally:
        consumer.close()
    return seen


def test_a_recipe_request_trains_into_a_verified_model_and_an_unknown_one_is_refused(
    ferry_settings: FerrySettings, tmp_path: Path
) -> None:
    trainer = _trainer(ferry_settings, tmp_path)
    quick = Hyperparameters(epochs=3, learning_rate=3e-3, options={"hidden_size": 32})
    gru = TrainingRequested(model_name="digits-gru", dataset="sklearn:digits", arch="gru", hyperparameters=quick)
    unknown = TrainingRequested(model_name="digits-lstm", dataset="sklearn:digits", arch="lstm")
    publisher = KafkaPublisher(ferry_settings, source="test")
    try:
        for request in (gru, unknown):
            publisher.publish(request)
        events = _until_settled(ferry_settings, [gru, unknown])
    finally:
        publisher.close()
        trainer.send_signal(signal.SIGTERM)
        trainer.close(grace_s=30)

    [trained] = [event for event in events if isinstance(event, ModelTrained)]
    assert (trained.request_id, trained.arch, trained.hyperparameters.options) == (gru.request_id, "gru", quick.options)
    assert "verify" in trained.timings and trained.signature.inputs[0].shape == [-1, 64]
    stored = ArtifactStore(ferry_settings.resolved_artifact_root).fetch(
        trained.artifact.sha256, size_bytes=trained.artifact.size_bytes
    )
    session = shared_onnx.open_session(stored, device="cpu", threads=1)
    assert np.isclose(shared_onnx.predict(session, np.zeros((1, 64), dtype=np.float32)).sum(), 1.0, atol=1e-5)

    [refusal] = [e for e in events if isinstance(e, TrainingStatus) and e.request_id == unknown.request_id][-1:]
    assert refusal.state == "failed"
    assert "no recipe 'lstm' is installed on this trainer" in (refusal.reason or "")
    assert "mlp, cnn, gru, transformer" in (refusal.reason or "")
