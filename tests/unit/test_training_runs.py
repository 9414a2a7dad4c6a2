"""The run board: a request folded with its status events, in any order, redeliveries changing nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.events import Hyperparameters, TrainingRequested, TrainingStatus
from shared.training_runs import RunBoard

T0 = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def request(request_id: str = "r1", epochs: int = 10) -> TrainingRequested:
    return TrainingRequested(
        request_id=request_id,
        model_name="iris",
        dataset="sklearn:iris",
        hyperparameters=Hyperparameters(epochs=epochs),
        requested_by="alice",
    )


def progress(epoch: int, request_id: str = "r1") -> TrainingStatus:
    return TrainingStatus(
        model_name="iris",
        request_id=request_id,
        state="progress",
        epoch=epoch,
        epochs=10,
        val_accuracy=0.5 + epoch / 100,
    )


def test_a_request_then_its_progress_shows_model_epoch_and_fraction() -> None:
    board = RunBoard()
    board.apply(request(), at(0))
    board.apply(TrainingStatus(model_name="iris", request_id="r1", state="started"), at(1))
    run = board.apply(progress(4), at(2))
    assert (run.model_name, run.dataset, run.requested_by, run.state) == ("iris", "sklearn:iris", "alice", "progress")
    assert run.epoch == 4 and run.progress == 0.4
    assert run.val_accuracy == 0.54
    assert board.in_progress() == [run] and board.failed() == []


def test_status_read_before_its_request_keeps_both() -> None:
    board = RunBoard()
    early = board.apply(progress(3), at(2))
    assert early.model_name == "iris" and early.dataset is None
    run = board.apply(request(), at(0))
    assert run.model_name == "iris" and run.state == "progress" and run.epoch == 3
    assert run.updated_at == at(2)


def test_a_redelivered_older_status_does_not_move_a_run_back() -> None:
    board = RunBoard()
    board.apply(request(), at(0))
    board.apply(progress(7), at(3))
    run = board.apply(progress(5), at(4))
    assert run.epoch == 7
    board.apply(TrainingStatus(model_name="iris", request_id="r1", state="completed", artifact_sha256="ab" * 32), at(5))
    run = board.apply(progress(8), at(6))
    assert run.state == "completed" and run.progress == 1.0 and run.artifact_sha256 == "ab" * 32
    assert run.finished and board.in_progress() == []


def test_failures_keep_their_reason_and_runs_list_newest_first() -> None:
    board = RunBoard()
    board.apply(request("old"), at(0))
    board.apply(request("new"), at(10))
    board.apply(
        TrainingStatus(model_name="iris", request_id="old", state="failed", reason="dataset csv:x.csv not found"),
        at(20),
    )
    assert [run.request_id for run in board.runs()] == ["old", "new"]
    assert [run.reason for run in board.failed()] == ["dataset csv:x.csv not found"]
    assert [run.request_id for run in board.runs(limit=1)] == ["old"]


def test_summary_is_json_safe_with_progress() -> None:
    board = RunBoard()
    board.apply(request(epochs=4), at(0))
    summary = board.apply(
        TrainingStatus(model_name="iris", request_id="r1", state="progress", epoch=1), at(1)
    ).summary()
    assert summary["requested_at"] == at(0).isoformat() and summary["updated_at"] == at(1).isoformat()
    assert summary["progress"] == 0.25  # the request's epochs, when the status does not say them
    assert summary["state"] == "progress" and summary["model_name"] == "iris"
