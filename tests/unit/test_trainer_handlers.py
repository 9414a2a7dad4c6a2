"""The training handler with a list publisher, a real folder store and a fake teacher source."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.trainer.adapters.completed import CompletedRequests
from services.trainer.adapters.teachers import StaticTeachers
from services.trainer.domain import Teacher
from services.trainer.handlers import (
    HANDLERS,
    TrainerDeps,
    handle_training_requested,
    model_trained_event_id,
)
from services.trainer.service import JobLimits
from shared.artifacts import ArtifactStore, sha256_of
from shared.envelope import EventMeta
from shared.errors import TransientError
from shared.events import (
    Compression,
    FeatureSlice,
    Hyperparameters,
    ModelTrained,
    TrainingRequested,
    TrainingStatus,
    utc_now,
)
from shared.kafka import ListPublisher, bind_handlers

pytestmark = pytest.mark.usefixtures("one_torch_thread")

META = EventMeta(event_id="e1", source="test", time=utc_now(), traceparent=None, type_name=TrainingRequested.type_name)
QUICK = Hyperparameters(epochs=25, hidden_sizes=[16], learning_rate=1e-2)


class FailingTeachers:
    """A teacher source that breaks the way the outside world does."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def fetch(self, model_name: str, workdir: Path) -> Teacher:
        raise self.error


def _deps(root: Path, publisher: ListPublisher, teachers: object | None = None) -> TrainerDeps:
    outcomes: list[str] = []
    return TrainerDeps(
        store=ArtifactStore(str(root / "artifacts")),
        publish=publisher.publish,
        teachers=teachers or StaticTeachers(),  # type: ignore[arg-type]
        completed=CompletedRequests(str(root / "artifacts")),
        work_root=root / "work",
        limits=JobLimits(budget_s=120, max_world_size=1),
        record_outcome=lambda outcome, seconds: outcomes.append(outcome),
    )


def _request(**fields: object) -> TrainingRequested:
    values: dict[str, object] = {"model_name": "iris", "dataset": "sklearn:iris", "hyperparameters": QUICK}
    return TrainingRequested(**(values | fields))  # type: ignore[arg-type]


def _states(publisher: ListPublisher) -> list[str]:
    return [event.state for event in publisher.of_type(TrainingStatus)]


def test_a_request_becomes_a_stored_announced_model(tmp_path: Path) -> None:
    publisher = ListPublisher()
    deps = _deps(tmp_path, publisher)
    request = _request(slices=[FeatureSlice(name="petal-long", feature=2, min=4.5)])
    handle_training_requested(request, META, deps=deps)
    states = _states(publisher)
    assert states[0] == "started" and states[-1] == "completed"
    assert set(states[1:-1]) == {"progress"} and len(states) >= 3
    [trained] = publisher.of_type(ModelTrained)
    assert trained.request_id == request.request_id and trained.model_name == "iris"
    assert trained.artifact.format == "onnx" and trained.artifact.size_bytes > 0
    assert sha256_of(deps.store.fetch(trained.artifact.sha256)) == trained.artifact.sha256
    assert trained.signature.inputs[0].shape == [-1, 4]
    assert trained.metrics["val_accuracy"] > 0.8
    assert trained.split_id.startswith("v1-")
    assert trained.slices == request.slices  # for the evaluator to guard
    assert publisher.event_ids[publisher.events.index(trained)] == model_trained_event_id(request.request_id)
    completed = publisher.of_type(TrainingStatus)[-1]
    assert completed.artifact_sha256 == trained.artifact.sha256


def test_a_redelivered_request_republishes_instead_of_retraining(tmp_path: Path) -> None:
    publisher = ListPublisher()
    deps = _deps(tmp_path, publisher)
    request = _request()
    handle_training_requested(request, META, deps=deps)
    first = publisher.of_type(ModelTrained)[0]
    redelivered = ListPublisher()
    handle_training_requested(request, META, deps=_deps(tmp_path, redelivered))
    assert _states(redelivered) == ["completed"]  # no "started": nothing was trained again
    assert redelivered.of_type(ModelTrained) == [first]
    assert redelivered.event_ids[0] == model_trained_event_id(request.request_id)


def test_retraining_after_a_lost_record_gives_the_same_artifact(tmp_path: Path) -> None:
    request = _request()
    first, second = ListPublisher(), ListPublisher()
    handle_training_requested(request, META, deps=_deps(tmp_path / "a", first))
    handle_training_requested(request, META, deps=_deps(tmp_path / "b", second))
    assert first.of_type(ModelTrained)[0].artifact.sha256 == second.of_type(ModelTrained)[0].artifact.sha256


def _write_csv(path: Path) -> Path:
    path.write_text("a,b,species\n" + "".join(f"{i},{i % 3},{'xyz'[i % 3]}\n" for i in range(30)))
    return path


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"dataset": "sklearn:nope"}, "unknown dataset"),
        ({"dataset": "csv:nonexistent.csv"}, "no file 'nonexistent.csv' under the datasets root"),
        ({"arch": "cnn"}, "needs image-shaped data"),
        ({"world_size": 4}, "exceeds this trainer's limit"),
        ({"compression": Compression(distill_from="teacher")}, "'teacher' has no champion"),
        (
            {"hyperparameters": Hyperparameters(learning_rate=10.0, weight_decay=1.0, epochs=50, batch_size=4)},
            "lower the learning rate",
        ),
    ],
)
def test_bad_requests_fail_cleanly_with_a_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fields: dict[str, object], reason: str
) -> None:
    monkeypatch.setenv("FERRY_DATASETS_ROOT", str(tmp_path))
    publisher = ListPublisher()
    handle_training_requested(_request(**fields), META, deps=_deps(tmp_path, publisher))
    statuses = publisher.of_type(TrainingStatus)
    assert statuses[0].state == "started" and statuses[-1].state == "failed"
    assert reason in (statuses[-1].reason or "")
    assert publisher.of_type(ModelTrained) == []


def test_a_csv_without_its_label_column_fails_cleanly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FERRY_DATASETS_ROOT", str(tmp_path))
    publisher = ListPublisher()
    path = _write_csv(tmp_path / "flowers.csv")
    handle_training_requested(_request(dataset=f"csv:{path.name}"), META, deps=_deps(tmp_path, publisher))
    assert "no label column 'label'" in (publisher.of_type(TrainingStatus)[-1].reason or "")
    named = ListPublisher()
    labelled = _request(dataset=f"csv:{path.name}", label_column="species")
    handle_training_requested(labelled, META, deps=_deps(tmp_path, named))
    assert _states(named)[-1] == "completed"


@pytest.mark.parametrize(
    ("dataset", "reason"),
    [
        ("csv:/etc/passwd", "absolute paths are refused"),
        ("csv:../outside.csv", "'..' is refused"),
        ("csv:link.csv", "leads out of the datasets root"),
        ("csv:secret.csv", "column 1 is not numeric on line 2"),
    ],
)
def test_a_dataset_outside_the_root_fails_with_a_reason_that_quotes_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, dataset: str, reason: str
) -> None:
    root = tmp_path / "datasets"
    root.mkdir()
    monkeypatch.setenv("FERRY_DATASETS_ROOT", str(root))
    secret = "s3cr3t-content"
    (tmp_path / "outside.csv").write_text(f"{secret},label\n" + "1,a\n2,b\n" * 15)
    (root / "link.csv").symlink_to(tmp_path / "outside.csv")
    (root / "secret.csv").write_text("x,label\n" + f"{secret},a\n" * 30)
    publisher = ListPublisher()
    handle_training_requested(_request(dataset=dataset), META, deps=_deps(tmp_path, publisher))
    failed = publisher.of_type(TrainingStatus)[-1]
    assert failed.state == "failed" and reason in (failed.reason or "")
    assert secret not in (failed.reason or "") and "root:" not in (failed.reason or "")
    assert publisher.of_type(ModelTrained) == []


def test_a_transient_failure_is_left_to_the_consumer_loop(tmp_path: Path) -> None:
    publisher = ListPublisher()
    deps = _deps(tmp_path, publisher, FailingTeachers(TransientError("registry away")))
    with pytest.raises(TransientError):
        handle_training_requested(_request(compression=Compression(distill_from="t")), META, deps=deps)
    assert _states(publisher) == ["started"]  # no "failed": a retry may still succeed


def test_a_kafka_error_that_will_not_pass_is_reported_then_raised_for_the_dlq(tmp_path: Path) -> None:
    from kafka.errors import MessageSizeTooLargeError

    publisher = ListPublisher()
    deps = _deps(tmp_path, publisher, FailingTeachers(MessageSizeTooLargeError("too large")))
    with pytest.raises(MessageSizeTooLargeError):
        handle_training_requested(_request(compression=Compression(distill_from="t")), META, deps=deps)
    assert _states(publisher) == ["started", "failed"]  # not retriable: the requester hears of it


def test_a_trainer_bug_is_reported_then_raised_for_the_dlq(tmp_path: Path) -> None:
    publisher = ListPublisher()
    deps = _deps(tmp_path, publisher, FailingTeachers(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        handle_training_requested(_request(compression=Compression(distill_from="t")), META, deps=deps)
    assert _states(publisher) == ["started", "failed"]
    assert "RuntimeError: boom" in (publisher.of_type(TrainingStatus)[-1].reason or "")


def test_the_routing_table_binds_the_dependencies(tmp_path: Path) -> None:
    publisher = ListPublisher()
    [handler] = bind_handlers(HANDLERS, deps=_deps(tmp_path, publisher))[TrainingRequested]
    handler(_request(dataset="sklearn:nope"), META)
    assert _states(publisher) == ["started", "failed"]
