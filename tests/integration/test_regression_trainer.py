"""A regressor through the real trainer process on the real broker: ``sklearn:diabetes`` in, a verified
``model.trained`` out, whose stored artifact scores exactly the RMSE, MAE and R² it announces."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
from support import ServiceProcess

from shared.artifacts import ArtifactStore
from shared.datasets import load_dataset, split
from shared.envelope import decode
from shared.events import Event, Hyperparameters, ModelTrained, TrainingRequested, TrainingStatus
from shared.kafka import KafkaPublisher, make_consumer
from shared.onnx import open_session, predict
from shared.regression import bin_shares
from shared.settings import FerrySettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUICK = Hyperparameters(epochs=15, hidden_sizes=[32], learning_rate=1e-2, patience=5)


def _trainer(settings: FerrySettings, tmp_path: Path) -> ServiceProcess:
    env = os.environ | {
        "FERRY_HOME": str(tmp_path / "home"),
        "FERRY_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "FERRY_TOPIC_PREFIX": settings.topic_prefix,
        "FERRY_ARTIFACT_ROOT": settings.resolved_artifact_root,
        "FERRY_TRAINER_CONSUMER_GROUP": f"{settings.topic_prefix}trainer",
        "FERRY_TRAINER_METRICS_PORT": "0",
        "FERRY_TRAINER_BUDGET_S": "300",
        "FERRY_REGISTRY_URL": "http://127.0.0.1:9",  # no distillation here
    }
    return ServiceProcess("trainer", env, tmp_path / "trainer.log").start(wait=False)


def _outcomes(settings: FerrySettings, requests: list[TrainingRequested], timeout_s: float = 240) -> list[Event]:
    """Publish the requests; return what the trainer published until each ended (completed or failed)."""
    consumer = make_consumer(settings, f"{settings.topic_prefix}observer", [TrainingStatus.topic, ModelTrained.topic])
    publisher = KafkaPublisher(settings, source="tests")
    seen: list[Event] = []
    open_ids = {request.request_id for request in requests}
    try:
        for request in requests:
            publisher.publish(request)
        deadline = time.monotonic() + timeout_s
        while open_ids:
            assert time.monotonic() < deadline, f"timed out; saw {seen}"
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    event = decode(record.headers, record.key, record.value).event
                    seen.append(event)
                    if isinstance(event, TrainingStatus) and event.state in ("completed", "failed"):
                        open_ids.discard(event.request_id)
    finally:
        consumer.close()
        publisher.close()
    return seen


def test_diabetes_trains_a_verified_regressor_and_a_compressed_one_is_refused(
    ferry_settings: FerrySettings, tmp_path: Path
) -> None:
    regressor = TrainingRequested(model_name="diabetes", dataset="sklearn:diabetes", hyperparameters=QUICK)
    quantized = TrainingRequested(
        model_name="diabetes-int8",
        dataset="sklearn:diabetes",
        hyperparameters=QUICK,
        compression={"quantize": "int8"},  # type: ignore[arg-type]
    )
    trainer = _trainer(ferry_settings, tmp_path)
    try:
        seen = _outcomes(ferry_settings, [regressor, quantized])
    finally:
        trainer.send_signal(signal.SIGTERM)
        trainer.close(grace_s=30)
    [trained] = [event for event in seen if isinstance(event, ModelTrained)]
    assert trained.request_id == regressor.request_id
    [failed] = [e for e in seen if isinstance(e, TrainingStatus) and e.state == "failed"]
    assert failed.request_id == quantized.request_id and "--quantize" in (failed.reason or "")

    signature = trained.signature
    assert signature.task == "regression" and signature.labels is None
    assert [(o.name, o.datatype, o.shape) for o in signature.outputs] == [("prediction", "FP32", [-1, 1])]
    assert signature.bin_edges is not None and len(signature.bin_edges) >= 5

    store = ArtifactStore(ferry_settings.resolved_artifact_root)
    data = store.fetch(trained.artifact.sha256, size_bytes=trained.artifact.size_bytes)
    parts = split(load_dataset("sklearn:diabetes"))
    assert trained.split_id == parts.split_id
    values = predict(open_session(data), parts.validation.features)[:, 0].astype(np.float64)
    errors = values - parts.validation.labels
    assert trained.metrics["val_rmse"] == pytest.approx(float(np.sqrt(np.mean(errors**2))), rel=1e-5)
    assert trained.metrics["val_mae"] == pytest.approx(float(np.mean(np.abs(errors))), rel=1e-5)
    total = float(np.sum((parts.validation.labels - parts.validation.labels.mean()) ** 2))
    assert trained.metrics["val_r2"] == pytest.approx(1 - float(np.sum(errors**2)) / total, rel=1e-5)
    assert trained.metrics["val_r2"] > 0.2  # it learned something: better than predicting the mean
    assert "val_accuracy" not in trained.metrics
    # The edges are the deciles of its validation predictions: every bin holds about a tenth of those rows.
    assert max(bin_shares(values, signature.bin_edges).values()) <= 0.2
