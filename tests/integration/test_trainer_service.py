"""The trainer as it runs: real processes on the real broker, splitting work and surviving crashes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from kafka import KafkaConsumer
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError
from kafka.partitioner.default import murmur2

from shared.envelope import decode
from shared.events import Event, Hyperparameters, ModelTrained, TrainingRequested, TrainingStatus
from shared.faults import FAULT_EXIT_CODE, reached
from shared.kafka import KafkaPublisher, make_consumer
from shared.local.stack import PROJECT_ROOT
from shared.settings import FerrySettings

pytestmark = [pytest.mark.integration, pytest.mark.slow]

QUICK = Hyperparameters(epochs=20, hidden_sizes=[32], learning_rate=1e-2)


@dataclass
class Trainer:
    process: subprocess.Popen[bytes]
    log: Path

    def handled(self) -> set[str]:
        """Request ids this process trained, from its JSON log lines."""
        marker = "trained request "
        return {
            line.split(marker, 1)[1].split(":", 1)[0]
            for line in self.log.read_text(errors="replace").splitlines()
            if marker in line
        }


@dataclass
class Observed:
    """Everything the trainers published, with the CloudEvents id of each event."""

    events: list[tuple[Event, str]] = field(default_factory=list)

    def of(self, kind: type[Event], request_id: str) -> list[tuple[Event, str]]:
        return [(e, i) for e, i in self.events if isinstance(e, kind) and getattr(e, "request_id", None) == request_id]

    def states(self, request_id: str) -> list[str]:
        return [event.state for event, _ in self.of(TrainingStatus, request_id)]  # type: ignore[attr-defined]


@pytest.fixture
def trainers(ferry_settings: FerrySettings, tmp_path: Path) -> Iterator[Callable[..., Trainer]]:
    started: list[Trainer] = []

    def start(name: str, *, home: str | None = None, extra_env: dict[str, str] | None = None) -> Trainer:
        log = tmp_path / f"{name}.log"
        env = (
            os.environ
            | {
                "FERRY_HOME": str(tmp_path / (home or name)),
                "FERRY_KAFKA_BOOTSTRAP": ferry_settings.kafka_bootstrap,
                "FERRY_TOPIC_PREFIX": ferry_settings.topic_prefix,
                "FERRY_TOPIC_PARTITIONS": str(ferry_settings.topic_partitions),
                "FERRY_ARTIFACT_ROOT": ferry_settings.resolved_artifact_root,
                "FERRY_LOG_LEVEL": "INFO",
                "FERRY_TRAINER_CONSUMER_GROUP": _group(ferry_settings),
                "FERRY_TRAINER_METRICS_PORT": "0",
                "FERRY_TRAINER_BUDGET_S": "300",
                "FERRY_REGISTRY_URL": "http://127.0.0.1:9",  # no distillation here
            }
            | (extra_env or {})
        )
        with log.open("wb") as out:
            process = subprocess.Popen(
                [sys.executable, "-m", "services.trainer"],
                cwd=PROJECT_ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        started.append(Trainer(process, log))
        return started[-1]

    yield start
    for trainer in started:
        if trainer.process.poll() is None:
            trainer.process.send_signal(signal.SIGTERM)
    for trainer in started:
        try:
            trainer.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            trainer.process.kill()


def _group(settings: FerrySettings) -> str:
    return f"{settings.topic_prefix}trainer"


def _wait_for_members(settings: FerrySettings, members: int, timeout_s: float = 120) -> None:
    """Until the trainer group is stable with this many members, each holding partitions."""
    admin = KafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            try:
                group = admin.describe_groups([_group(settings)])[_group(settings)]
            except KafkaError:
                group = {}  # the group coordinator is not there until the first member asks for it
            if str(group.get("group_state")) == "Stable" and len(group.get("members", [])) == members:
                return
            time.sleep(0.5)
    finally:
        admin.close()
    raise AssertionError(f"the trainer group never became stable with {members} members")


def _observer(settings: FerrySettings) -> KafkaConsumer:
    return make_consumer(settings, f"{settings.topic_prefix}observer", [TrainingStatus.topic, ModelTrained.topic])


def _collect(consumer: KafkaConsumer, observed: Observed, until: Callable[[], bool], timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while not until():
        assert time.monotonic() < deadline, f"timed out; saw {[type(e).__name__ for e, _ in observed.events]}"
        for records in consumer.poll(timeout_ms=500).values():
            for record in records:
                decoded = decode(record.headers, record.key, record.value)
                observed.events.append((decoded.event, decoded.meta.event_id))


def _names_over_partitions(partitions: int, per_partition: int) -> list[str]:
    """Model names (the Kafka key) that land evenly on every partition, so both trainers get work."""
    chosen: dict[int, list[str]] = {partition: [] for partition in range(partitions)}
    candidate = 0
    while any(len(names) < per_partition for names in chosen.values()):
        name = f"model-{candidate}"
        partition = (murmur2(name.encode()) & 0x7FFFFFFF) % partitions
        if len(chosen[partition]) < per_partition:
            chosen[partition].append(name)
        candidate += 1
    return [name for names in chosen.values() for name in names]


def test_two_trainer_processes_split_the_requests(
    ferry_settings: FerrySettings, trainers: Callable[..., Trainer]
) -> None:
    first, second = trainers("first"), trainers("second")
    _wait_for_members(ferry_settings, 2)
    requests = [
        TrainingRequested(model_name=name, dataset="sklearn:iris", hyperparameters=QUICK)
        for name in _names_over_partitions(ferry_settings.topic_partitions, 2)
    ]
    publisher = KafkaPublisher(ferry_settings, source="test")
    for request in requests:
        publisher.publish(request)
    publisher.close()
    observed, consumer = Observed(), _observer(ferry_settings)
    try:
        _collect(consumer, observed, lambda: all(observed.of(ModelTrained, r.request_id) for r in requests))
    finally:
        consumer.close()
    for request in requests:
        assert len(observed.of(ModelTrained, request.request_id)) == 1
        assert "failed" not in observed.states(request.request_id)
    by_first, by_second = first.handled(), second.handled()
    assert by_first and by_second, "both trainers should have trained something"
    assert by_first.isdisjoint(by_second)
    assert by_first | by_second == {request.request_id for request in requests}


def test_a_trainer_killed_mid_training_restarts_cleans_up_and_completes_the_request_once(
    ferry_settings: FerrySettings, trainers: Callable[..., Trainer], tmp_path: Path
) -> None:
    report = tmp_path / "faults.txt"
    doomed = trainers(
        "doomed", extra_env={"FERRY_FAULT_POINT": "trainer.mid_training@2", "FERRY_FAULT_REPORT": str(report)}
    )
    _wait_for_members(ferry_settings, 1)
    request = TrainingRequested(model_name="digits", dataset="sklearn:iris", hyperparameters=QUICK)
    publisher = KafkaPublisher(ferry_settings, source="test")
    publisher.publish(request)
    observed, consumer = Observed(), _observer(ferry_settings)
    work = tmp_path / "doomed" / "trainer" / "work"
    try:
        assert doomed.process.wait(timeout=180) == FAULT_EXIT_CODE, doomed.log.read_text()[-3000:]
        assert reached(report) == ["trainer.mid_training"]  # it died in the second epoch, not before or after
        [stale] = [path for path in work.iterdir() if path.is_dir()]  # the scratch folder it left behind

        survivor = trainers("survivor", home="doomed")  # the same host: the same work folder and attempt log
        _collect(consumer, observed, lambda: bool(observed.of(ModelTrained, request.request_id)))
        assert not stale.exists()
        log = survivor.log.read_text()
        assert "removed 1 stale run folder" in log
        assert "were in hand when its consumer died" in log  # the request's second attempt, counted
        assert observed.states(request.request_id).count("started") == 2  # trained again after the crash
        publisher.publish(request)  # the same request once more, as a redelivery brings it
        _collect(consumer, observed, lambda: observed.states(request.request_id).count("completed") == 2)
    finally:
        consumer.close()
        publisher.close()
    (first, first_id), (again, again_id) = observed.of(ModelTrained, request.request_id)
    assert again == first and again_id == first_id  # the same event: the registry dedupes it
    assert observed.states(request.request_id).count("started") == 2  # republished, not retrained
    assert not [path for path in work.iterdir() if path.name.startswith("run-")]
