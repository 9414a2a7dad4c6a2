"""Which version answered request X, on the real broker: the logged record found by time (offsets-for-times),
its feedback, a request outside the window or never logged not found; ``ferry trace`` prints it."""

from __future__ import annotations

import argparse
import io
import json
from datetime import UTC, datetime, timedelta

import pytest

from shared.envelope import encode
from shared.events import FeedbackItem, InferenceFeedback, InferenceLogged, LoggedTensor
from shared.kafka import KafkaPublisher, make_producer
from shared.ops_common import CommandError
from shared.request_trace import find_request
from shared.settings import FerrySettings
from shared.trace_cli import trace

pytestmark = [pytest.mark.integration]


def answer(request_id: str, model: str, version: int, at: datetime) -> InferenceLogged:
    scores = LoggedTensor(name="probabilities", datatype="FP32", shape=[1, 2], data=[0.3, 0.7])
    return InferenceLogged(
        model_name=model,
        request_id=request_id,
        version=version,
        route="canary",
        revision=9,
        inputs=[],
        outputs=[scores],
        gateway="host-1",
        at=at,
    )


def test_a_logged_request_is_found_with_its_feedback_and_others_are_not(ferry_settings: FerrySettings) -> None:
    now = datetime.now(UTC)
    publisher = KafkaPublisher(ferry_settings, source="test")
    try:
        publisher.publish(answer("wanted", "digits", 3, now))
        publisher.publish(answer("other", "digits", 2, now))
        publisher.publish(answer("wanted-too-similar", "iris", 1, now))
        publisher.publish(
            InferenceFeedback(
                model_name="digits",
                items=[FeedbackItem(request_id="other", label=0), FeedbackItem(request_id="wanted", label=1)],
                actor="labeller",
            )
        )
    finally:
        publisher.close()
    found = find_request(ferry_settings, "wanted", since_s=600)
    assert found is not None
    record = found.as_dict()
    assert (record["model"], record["version"], record["route"], record["revision"]) == ("digits", 3, "canary", 9)
    assert [(given["label"], given["actor"]) for given in record["feedback"]] == [(1, "labeller")]
    assert find_request(ferry_settings, "never-logged", since_s=600) is None


def test_the_search_starts_at_the_window_not_at_the_topics_start(ferry_settings: FerrySettings) -> None:
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
    message = encode(answer("old", "digits", 1, two_hours_ago), source="test")
    producer = make_producer(ferry_settings)
    try:  # written with the answer's time as its Kafka timestamp, as if sent two hours ago
        producer.send(
            ferry_settings.topic(InferenceLogged.topic),
            key=message.key,
            value=message.value,
            headers=message.headers,
            timestamp_ms=int(two_hours_ago.timestamp() * 1000),
        ).get(timeout=30)
    finally:
        producer.close()
    assert find_request(ferry_settings, "old", since_s=3600) is None  # offsets-for-times skips past it
    found = find_request(ferry_settings, "old", since_s=3 * 3600)
    assert found is not None and found.logged.version == 1


def test_ferry_trace_prints_the_answer_or_says_it_is_not_logged(ferry_settings: FerrySettings) -> None:
    publisher = KafkaPublisher(ferry_settings, source="test")
    try:
        publisher.publish(answer("traced", "digits", 4, datetime.now(UTC) - timedelta(seconds=5)))
    finally:
        publisher.close()
    out = io.StringIO()
    assert trace(argparse.Namespace(request_id="traced", since="1h", json=True), ferry_settings, out) == 0
    printed = json.loads(out.getvalue())
    assert (printed["model"], printed["version"], printed["feedback"]) == ("digits", 4, [])
    with pytest.raises(CommandError, match="not logged in the last 1h"):
        trace(argparse.Namespace(request_id="absent", since="1h", json=True), ferry_settings, io.StringIO())
    with pytest.raises(CommandError, match="--since"):
        trace(argparse.Namespace(request_id="traced", since="forever", json=True), ferry_settings, io.StringIO())
