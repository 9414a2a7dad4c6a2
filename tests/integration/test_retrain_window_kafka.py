"""The production window and the retrain cooldown read back from the real broker (offsets-for-times), and the
per-model advisory lock that serialises retrain decisions across replicas, on the real PostgreSQL."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, text
from support import wait_for

from shared.events import (
    FeedbackItem,
    InferenceFeedback,
    InferenceLogged,
    LoggedTensor,
    RetrainCause,
    TrainingRequested,
)
from shared.kafka import KafkaPublisher
from shared.leader import database_mutex, lock_key
from shared.production_window import LabelledRow
from shared.settings import FerrySettings
from shared.window_reader import read_window, recent_retrains

pytestmark = [pytest.mark.integration]

CLASSES = ["cat", "dog"]


def answered(model: str, request_id: str, values: list[float]) -> InferenceLogged:
    return InferenceLogged(
        model_name=model,
        request_id=request_id,
        version=1,
        route="champion",
        inputs=[LoggedTensor(name="input", datatype="FP32", shape=[1, len(values)], data=values)],
        outputs=[],
    )


def test_the_window_joins_logged_answers_and_feedback_read_back_from_the_broker(
    ferry_settings: FerrySettings,
) -> None:
    publisher = KafkaPublisher(ferry_settings, source="test")
    try:
        publisher.publish(InferenceFeedback(model_name="pets", items=[FeedbackItem(request_id="r0", label="dog")]))
        for index in range(3):
            publisher.publish(answered("pets", f"r{index}", [float(index), 0.5]))
        publisher.publish(answered("petsitter", "r1", [7.0, 7.0]))  # another model, the same request id
        publisher.publish(
            InferenceFeedback(
                model_name="pets",
                items=[FeedbackItem(request_id="r1", label=0), FeedbackItem(request_id="unknown", label=1)],
            )
        )
    finally:
        publisher.close()
    rows = read_window(ferry_settings, "pets", CLASSES, since_s=600, max_rows=100)
    assert rows == [LabelledRow((0.0, 0.5), "dog"), LabelledRow((1.0, 0.5), "cat")]
    assert read_window(ferry_settings, "nobody", CLASSES, since_s=600, max_rows=100) == []


def test_the_cooldown_is_the_caused_requests_the_broker_holds(ferry_settings: FerrySettings) -> None:
    cause = RetrainCause(
        alert_id="a1",
        rule="InputDrift",
        fired_at=datetime.now(UTC),
        original_dataset="sklearn:digits",
        window="production/digits-a1.csv",
        window_rows=120,
    )
    caused = TrainingRequested(model_name="digits", dataset="sklearn:digits", cause=cause)
    publisher = KafkaPublisher(ferry_settings, source="test")
    try:
        publisher.publish(TrainingRequested(model_name="digits", dataset="sklearn:digits"))  # a user's
        publisher.publish(caused)
        publisher.publish(TrainingRequested(model_name="digits-2", dataset="sklearn:digits", cause=cause))
    finally:
        publisher.close()
    assert recent_retrains(ferry_settings, "digits", since_s=600) == [caused]
    assert recent_retrains(ferry_settings, "iris", since_s=600) == []


def waiting_for_lock(database_url: str, name: str) -> bool:
    """True while a session waits for the advisory lock ``name`` (granted neither to it nor yet released)."""
    key = lock_key(name)
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            query = text(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
                "AND ((classid::bigint << 32) | objid::bigint) = :key"
            )
            return bool(connection.scalar(query, {"key": key}))
    finally:
        engine.dispose()


def test_a_second_replica_waits_for_the_first_to_finish_its_retrain_decision(fresh_database_url: str) -> None:
    first, second = database_mutex(fresh_database_url), database_mutex(fresh_database_url)
    order: list[str] = []
    entered = threading.Event()

    def other_replica() -> None:
        with second("evaluator.retrain:digits") as held:
            assert held
            order.append("second")
            entered.set()

    with first("evaluator.retrain:digits") as held:
        assert held
        thread = threading.Thread(target=other_replica)
        thread.start()
        wait_for(lambda: waiting_for_lock(fresh_database_url, "evaluator.retrain:digits"), what="the second to wait")
        assert not entered.is_set()
        with first("evaluator.retrain:iris") as other_model:  # another model's lock is free meanwhile
            assert other_model
        order.append("first")
    thread.join(30)
    assert order == ["first", "second"]
