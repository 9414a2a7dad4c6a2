"""``ferry train --wait`` on the real broker, with the test playing trainer and registry."""

from __future__ import annotations

import argparse
import threading

import pytest

from services.trainer.cli import add_train_parser, run_train
from shared.envelope import decode
from shared.events import (
    ArtifactRef,
    ModelDecided,
    ModelRegistered,
    Signature,
    TrainingRequested,
    TrainingStatus,
)
from shared.kafka import KafkaPublisher, make_consumer
from shared.settings import FerrySettings

pytestmark = pytest.mark.integration


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="ferry")
    add_train_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["train", *argv])


def _answer_one_request(settings: FerrySettings, outcome: str, stop: threading.Event) -> None:
    """Wait for the CLI's request, then publish what the trainer and the registry would."""
    consumer = make_consumer(settings, f"{settings.topic_prefix}fake-trainer", [TrainingRequested.topic])
    publisher = KafkaPublisher(settings, source="test")
    try:
        while not stop.is_set():
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    request = decode(record.headers, record.key, record.value).event
                    assert isinstance(request, TrainingRequested)
                    _publish_outcome(publisher, request, outcome)
                    return
    finally:
        consumer.close()
        publisher.close()


def _publish_outcome(publisher: KafkaPublisher, request: TrainingRequested, outcome: str) -> None:
    def status(state: str, **fields: object) -> TrainingStatus:
        return TrainingStatus(model_name=request.model_name, request_id=request.request_id, state=state, **fields)  # type: ignore[arg-type]

    publisher.publish(status("started", epochs=3))
    publisher.publish(status("progress", epoch=1, epochs=3, train_loss=0.9, val_loss=0.8, val_accuracy=0.7))
    if outcome == "failed":
        publisher.publish(status("failed", reason="loss became NaN at epoch 2; lower the learning rate"))
        return
    publisher.publish(status("completed", artifact_sha256="c" * 64))
    publisher.publish(
        ModelRegistered(
            model_name=request.model_name,
            version=5,
            artifact=ArtifactRef(uri="/x.onnx", sha256="c" * 64, size_bytes=10, format="onnx"),
            signature=Signature(inputs=[], outputs=[]),
            dataset=request.dataset,
            split_id="v1-x",
            training_request_id=request.request_id,
        )
    )
    if outcome == "registered":
        return
    decision = "promote" if outcome == "champion" else "reject"
    publisher.publish(
        ModelDecided(model_name=request.model_name, version=5, decision=decision, reason=f"{outcome} by the test")
    )


@pytest.mark.parametrize(
    ("outcome", "code", "printed"),
    [
        ("champion", 0, "champion: digits version 5: champion by the test"),
        ("rejected", 1, "rejected digits version 5: rejected by the test"),
        ("failed", 1, "training failed: loss became NaN at epoch 2"),
    ],
)
def test_train_wait_follows_the_request_to_its_end(
    ferry_settings: FerrySettings, capsys: pytest.CaptureFixture[str], outcome: str, code: int, printed: str
) -> None:
    stop = threading.Event()
    fake = threading.Thread(target=_answer_one_request, args=(ferry_settings, outcome, stop), daemon=True)
    fake.start()
    try:
        args = _args("--model", "digits", "--dataset", "sklearn:digits", "--epochs", "3", "--wait", "--timeout", "60")
        assert run_train(args, ferry_settings) == code
    finally:
        stop.set()
        fake.join(timeout=10)
    assert printed in capsys.readouterr().out


def test_an_invalid_request_is_refused_before_anything_is_sent(
    ferry_settings: FerrySettings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_train(_args("--model", "bad name!", "--dataset", "sklearn:iris"), ferry_settings) == 2
    assert "invalid training request: model_name" in capsys.readouterr().err
