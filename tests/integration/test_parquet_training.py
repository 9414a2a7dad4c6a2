"""parquet: datasets through the real services: a trainer process (real broker) streams a folder of Parquet
files under its datasets root, and objects on the real S3 store (SeaweedFS), a registry process records each
version, and the evaluator (in-process) judges it on the test rows that no trainer read."""

from __future__ import annotations

import os
import signal
import time
import uuid
from pathlib import Path

import httpx
import numpy as np
import pytest
from parquet_files import write_dataset
from support import ServiceProcess
from test_evaluator_service import (  # noqa: F401 - settings and registry_url are this module's fixtures too
    Api,
    champion_is,
    evaluator,
    registry_url,
    settings,
    settle,
)

from shared.envelope import decode
from shared.events import Event, Hyperparameters, ModelTrained, TrainingRequested, TrainingStatus
from shared.kafka import KafkaPublisher, make_consumer
from shared.local.seaweedfs import SeaweedFS
from shared.onnx import open_session, predict
from shared.parquet_datasets import ParquetDataset, held_out_split, open_parquet, read_part
from shared.settings import FerrySettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUICK = Hyperparameters(epochs=8, hidden_sizes=[32], learning_rate=1e-2, batch_size=64, patience=3)
BUCKET = "ferry-test"  # the session store's bucket (the seaweedfs fixture creates it)


def train_through_kafka(
    ferry: FerrySettings, tmp_path: Path, requests: list[TrainingRequested], env: dict[str, str]
) -> list[Event]:
    """Start a trainer process with ``env``, publish the requests, return what it published until each ended."""
    trainer_env = (
        os.environ
        | {
            "FERRY_HOME": str(tmp_path / "trainer-home"),
            "FERRY_KAFKA_BOOTSTRAP": ferry.kafka_bootstrap,
            "FERRY_TOPIC_PREFIX": ferry.topic_prefix,
            "FERRY_ARTIFACT_ROOT": ferry.resolved_artifact_root,
            "FERRY_TRAINER_CONSUMER_GROUP": f"{ferry.topic_prefix}trainer",
            "FERRY_TRAINER_METRICS_PORT": "0",
            "FERRY_TRAINER_BUDGET_S": "300",
            "FERRY_REGISTRY_URL": "http://127.0.0.1:9",  # no distillation here
        }
        | env
    )
    trainer = ServiceProcess("trainer", trainer_env, tmp_path / "trainer.log").start(wait=False)
    observer = f"{ferry.topic_prefix}observer-{uuid.uuid4().hex[:6]}"
    consumer = make_consumer(ferry, observer, [TrainingStatus.topic, ModelTrained.topic])
    publisher = KafkaPublisher(ferry, source="tests")
    seen: list[Event] = []
    ids = {request.request_id for request in requests}
    open_ids = set(ids)
    try:
        for request in requests:
            publisher.publish(request)
        deadline = time.monotonic() + 300
        while open_ids:
            assert time.monotonic() < deadline, f"timed out; saw {seen}; trainer: {trainer.tail()}"
            for records in consumer.poll(timeout_ms=500).values():
                for record in records:
                    event = decode(record.headers, record.key, record.value).event
                    if getattr(event, "request_id", None) not in ids:
                        continue  # the module's topics also carry the other test's events
                    seen.append(event)
                    if isinstance(event, TrainingStatus) and event.state in ("completed", "failed"):
                        open_ids.discard(event.request_id)
    finally:
        consumer.close()
        publisher.close()
        trainer.send_signal(signal.SIGTERM)
        trainer.close(grace_s=30)
    return seen


def check_judged(api: Api, trained: ModelTrained, name: str) -> None:
    """The evaluator's report is on the dataset's own split and test rows, and its accuracy is the artifact's."""
    settle(api, lambda: api.evaluations(1), "v1's evaluation", timeout_s=120)
    held_out = held_out_split(name)  # as the evaluator reads it, from the same settings
    assert trained.split_id == held_out.split_id
    [evaluation] = api.evaluations(1)
    report = evaluation["report"]
    assert report["dataset"] == name and report["split"]["split_id"] == held_out.split_id
    assert report["split"]["rows"] == len(held_out.test) and report["classes"] == ["0", "1", "2"]
    data = httpx.get(f"{api.base}/versions/1/artifact", timeout=10).content
    probabilities = predict(open_session(data), held_out.test.features)
    accuracy = float(np.mean(probabilities.argmax(axis=1) == held_out.test.labels))
    assert report["candidate"]["metrics"]["accuracy"] == pytest.approx(accuracy)
    assert accuracy > 0.8 and evaluation["decision"] == "promote", evaluation["reason"]
    settle(api, lambda: champion_is(api, 1), "v1 as the first champion")


def test_a_trainer_process_learns_a_folder_of_parquet_files_and_the_evaluator_judges_it(
    settings: FerrySettings,  # noqa: F811 - the imported fixture
    registry_url: str,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root = tmp_path / "datasets"
    write_dataset(root / "clicks" / "2026", rows=3000, files=3)
    env = {"FERRY_DATASETS_ROOT": str(root)}
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)  # the in-process evaluator reads its test rows with the same settings
    name = "parquet:clicks"
    good = TrainingRequested(model_name="clicks", dataset=name, hyperparameters=QUICK)
    outside = TrainingRequested(model_name="clicks-outside", dataset="parquet:../clicks", hyperparameters=QUICK)
    api = Api(registry_url, "clicks")
    with evaluator(settings, registry_url):
        seen = train_through_kafka(settings, tmp_path, [good, outside], env)
        [trained] = [event for event in seen if isinstance(event, ModelTrained)]
        assert trained.request_id == good.request_id
        dataset = open_parquet(name)
        assert trained.metrics["train_rows"] == _train_rows(dataset)
        check_judged(api, trained, name)
    progress = [e for e in seen if isinstance(e, TrainingStatus) and e.request_id == good.request_id]
    assert [e.epoch for e in progress if e.state == "progress"] == list(
        range(1, int(trained.metrics["epochs_run"]) + 1)
    )
    [failed] = [e for e in seen if isinstance(e, TrainingStatus) and e.state == "failed"]
    assert failed.request_id == outside.request_id and "'..' are refused" in (failed.reason or "")


@pytest.mark.s3
def test_a_trainer_process_learns_parquet_objects_on_s3_and_the_evaluator_judges_them(
    settings: FerrySettings,  # noqa: F811
    registry_url: str,  # noqa: F811
    seaweedfs: SeaweedFS,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    prefix = f"datasets-{uuid.uuid4().hex[:8]}"
    client = seaweedfs.client()
    for path in write_dataset(tmp_path / "upload", rows=3000, files=2):
        client.put_object(Bucket=BUCKET, Key=f"{prefix}/clicks/{path.name}", Body=path.read_bytes())
    env = seaweedfs.environment() | {"FERRY_DATASETS_S3_ROOT": f"s3://{BUCKET}/{prefix}", "AWS_REGION": "us-east-1"}
    for variable, value in env.items():
        monkeypatch.setenv(variable, value)
    name = f"parquet:s3://{BUCKET}/{prefix}/clicks"
    good = TrainingRequested(model_name="clicks-s3", dataset=name, hyperparameters=QUICK)
    elsewhere = TrainingRequested(
        model_name="clicks-elsewhere", dataset=f"parquet:s3://{BUCKET}/other/clicks", hyperparameters=QUICK
    )
    api = Api(registry_url, "clicks-s3")
    with evaluator(settings, registry_url):
        seen = train_through_kafka(settings, tmp_path, [good, elsewhere], env)
        [trained] = [event for event in seen if isinstance(event, ModelTrained)]
        assert trained.request_id == good.request_id
        assert trained.metrics["train_rows"] == _train_rows(open_parquet(name))
        check_judged(api, trained, name)
    [failed] = [e for e in seen if isinstance(e, TrainingStatus) and e.state == "failed"]
    assert failed.request_id == elsewhere.request_id and "outside FERRY_DATASETS_S3_ROOT" in (failed.reason or "")


def _train_rows(dataset: ParquetDataset) -> int:
    return sum(len(labels) for _, labels in read_part(dataset, "train", range(len(dataset.row_groups))))
