"""`ferry runs` through the real broker: runs listed from both training topics, and one run followed
from its history to its end, the events published while it follows included."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator

import pytest

from shared.cli import build_parser, main
from shared.events import Hyperparameters, TrainingRequested, TrainingStatus
from shared.kafka import KafkaPublisher
from shared.runs_cli import runs
from shared.settings import FerrySettings
from shared.training_runs import read_runs
from shared.waiting import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def publisher(ferry_settings: FerrySettings, monkeypatch: pytest.MonkeyPatch) -> Iterator[KafkaPublisher]:
    monkeypatch.setenv("FERRY_KAFKA_BOOTSTRAP", ferry_settings.kafka_bootstrap)
    monkeypatch.setenv("FERRY_TOPIC_PREFIX", ferry_settings.topic_prefix)
    built = KafkaPublisher(ferry_settings, source="test/runs")
    yield built
    built.close()


def requested(request_id: str, model: str = "iris") -> TrainingRequested:
    return TrainingRequested(
        request_id=request_id, model_name=model, dataset="sklearn:iris", hyperparameters=Hyperparameters(epochs=4)
    )


def status(request_id: str, state: str, model: str = "iris", **fields: object) -> TrainingStatus:
    return TrainingStatus(model_name=model, request_id=request_id, state=state, **fields)  # type: ignore[arg-type]


def test_runs_lists_each_request_with_its_latest_state(
    publisher: KafkaPublisher, ferry_settings: FerrySettings, capsys: pytest.CaptureFixture[str]
) -> None:
    publisher.publish(requested("done"))
    publisher.publish(status("done", "progress", epoch=4, epochs=4, val_accuracy=0.9))
    publisher.publish(status("done", "completed", artifact_sha256="cd" * 32))
    publisher.publish(requested("broken", model="wine"))
    publisher.publish(status("broken", "failed", model="wine", reason="loss is NaN at epoch 2"))
    publisher.publish(requested("waiting", model="digits"))

    board = read_runs(ferry_settings)
    assert {run.request_id: run.state for run in board.runs()} == {
        "done": "completed",
        "broken": "failed",
        "waiting": "requested",
    }

    assert main(["runs", "--json"]) == 0
    listed = {run["request_id"]: run for run in json.loads(capsys.readouterr().out)}
    assert listed["done"]["artifact_sha256"] == "cd" * 32 and listed["done"]["progress"] == 1.0
    assert listed["broken"]["reason"] == "loss is NaN at epoch 2" and listed["broken"]["model_name"] == "wine"

    assert main(["runs", "--failed"]) == 0
    table = capsys.readouterr().out
    assert "broken" in table and "loss is NaN at epoch 2" in table and "done" not in table

    assert main(["runs", "no-such-run"]) == 3
    assert "no training run 'no-such-run'" in capsys.readouterr().err


def test_runs_follows_a_run_until_it_ends_and_says_how_it_ended(
    publisher: KafkaPublisher, ferry_settings: FerrySettings
) -> None:
    publisher.publish(requested("live"))
    publisher.publish(status("live", "started"))
    parser, _ = build_parser()
    out = io.StringIO()
    codes: list[int] = []
    follower = threading.Thread(
        target=lambda: codes.append(runs(parser.parse_args(["runs", "live", "--timeout", "60"]), ferry_settings, out))
    )
    follower.start()
    wait_for(lambda: "live:" in out.getvalue(), what="the run's history", timeout_s=30)
    publisher.publish(status("live", "progress", epoch=2, epochs=4, val_accuracy=0.75))
    publisher.publish(status("live", "failed", reason="out of memory at epoch 3"))
    follower.join(timeout=60)

    assert codes == [1]  # failed
    lines = out.getvalue().splitlines()
    assert lines[0] == "live: iris training"
    assert "epoch 2/4, val_accuracy 0.7500" in lines[1]
    assert lines[-1] == "live: failed: out of memory at epoch 3"
