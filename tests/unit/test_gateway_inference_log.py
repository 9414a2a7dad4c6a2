"""The gateway's inference log: sampling per model, capping, a full queue that drops (never blocks), and the
fate of every record counted once."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest

from services.gateway.adapters.inference_log import InferenceLog, KafkaLogSink, logged_tensor, to_event
from shared.envelope import decode, encode
from shared.events import MAX_LOGGED_VALUES, InferenceLogged
from shared.settings import FerrySettings


@dataclass(frozen=True)
class Tensor:
    name: str
    datatype: str
    data: np.ndarray


@dataclass
class ListSink:
    """Keeps what it is sent; answers each with ``outcome`` (or holds the callbacks when ``hold``)."""

    outcome: str = "sent"
    events: list[InferenceLogged] = field(default_factory=list)

    def send(self, event: InferenceLogged, outcome: Callable[[str], None]) -> None:
        self.events.append(event)
        outcome(self.outcome)

    def close(self) -> None:
        pass


ROWS = np.arange(8, dtype=np.float32).reshape(1, 8)
SCORES = np.array([[0.1, 0.7, 0.2]], dtype=np.float32)


def offer(log: InferenceLog, model: str = "digits", request_id: str = "req-1", **changes: Any) -> bool:
    arguments: dict[str, Any] = {
        "version": 3,
        "route": "champion",
        "revision": 7,
        "inputs": [Tensor("input", "FP32", ROWS)],
        "outputs": (["probabilities"], [SCORES]),
    } | changes
    return log.offer(model, request_id, **arguments)


def test_sampling_follows_the_default_and_the_per_model_shares() -> None:
    draws = itertools.cycle([0.0, 0.3, 0.6, 0.9])
    log = InferenceLog(ListSink(), sample=0.5, sample_by_model={"all": 1.0, "none": 0.0}, draw=lambda: next(draws))
    assert [offer(log, "digits") for _ in range(8)] == [True, True, False, False] * 2
    assert all(offer(log, "all") for _ in range(10))
    assert not any(offer(log, "none") for _ in range(10))
    assert log.queued == 14
    assert not InferenceLog(ListSink(), sample=0.0).enabled
    assert InferenceLog(ListSink(), sample=0.0, sample_by_model={"digits": 0.1}).enabled


def test_a_drained_record_carries_what_answered_and_what_was_asked() -> None:
    sink = ListSink()
    log = InferenceLog(sink, sample=1.0, gateway="host-1")
    offer(log, request_id="client-42", route="canary")
    assert log.drain() == 1
    [event] = sink.events
    assert (event.model_name, event.request_id, event.version, event.route, event.revision) == (
        "digits",
        "client-42",
        3,
        "canary",
        7,
    )
    assert event.gateway == "host-1" and not event.truncated
    [logged_input], [output] = event.inputs, event.outputs
    assert (logged_input.name, logged_input.datatype, logged_input.shape) == ("input", "FP32", [1, 8])
    assert logged_input.data == list(range(8))
    assert (output.name, output.datatype, output.shape) == ("probabilities", "FP32", [1, 3])
    assert output.data == pytest.approx([0.1, 0.7, 0.2])
    assert dict(log.counts) == {("digits", "sent"): 1}


def test_a_record_survives_its_envelope() -> None:
    sink = ListSink()
    log = InferenceLog(sink, sample=1.0)
    offer(log)
    log.drain()
    message = encode(sink.events[0], source="test")
    decoded = decode(message.headers, message.key, message.value).event
    assert isinstance(decoded, InferenceLogged) and decoded.outputs[0].shape == [1, 3]


def test_large_tensors_are_capped_and_marked_truncated() -> None:
    wide = np.ones((2, 3000), dtype=np.float32)
    tensor, cut = logged_tensor("input", "FP32", wide)
    assert cut and len(tensor.data) == MAX_LOGGED_VALUES and tensor.shape == [2, 3000]
    sink = ListSink()
    log = InferenceLog(sink, sample=1.0)
    offer(log, inputs=[Tensor("input", "FP32", wide)])
    log.drain()
    assert sink.events[0].truncated


def test_odd_values_become_json_safe_and_a_bad_request_id_is_replaced() -> None:
    texts = np.array([b"caf\xc3\xa9", b"x" * 5000], dtype=object)
    tensor, _ = logged_tensor("text", "BYTES", texts)
    assert tensor.data[0] == "café" and len(str(tensor.data[1])) == 1024
    floats, _ = logged_tensor("scores", "FP32", np.array([1.0, np.nan, np.inf], dtype=np.float32))
    assert floats.data == [1.0, "nan", "inf"]
    sink = ListSink()
    log = InferenceLog(sink, sample=1.0)
    offer(log, request_id="has spaces and / slashes")
    log.drain()
    assert sink.events[0].request_id != "has spaces and / slashes"


def test_a_full_queue_drops_and_counts_without_blocking() -> None:
    blocked = threading.Event()

    class StuckSink(ListSink):
        def send(self, event: InferenceLogged, outcome: Callable[[str], None]) -> None:
            blocked.wait(10)  # a broker that does not answer: only the draining thread would wait here

    log = InferenceLog(StuckSink(), sample=1.0, max_queue=3)
    accepted = [offer(log, request_id=f"r{index}") for index in range(10)]
    assert accepted == [True] * 3 + [False] * 7
    assert log.counts[("digits", "dropped")] == 7
    assert log.queued == 3
    blocked.set()


def test_failed_sends_are_counted_as_failed() -> None:
    log = InferenceLog(ListSink(outcome="failed"), sample=1.0)
    offer(log)
    log.drain()
    assert dict(log.counts) == {("digits", "failed"): 1}


def test_the_run_drains_until_stopped_and_once_more() -> None:
    sink = ListSink()
    log = InferenceLog(sink, sample=1.0, interval_s=0.01)
    stop = threading.Event()
    offer(log, request_id="before")
    stop.set()
    log.run(stop)
    assert [event.request_id for event in sink.events] == ["before"]


class FakeFuture:
    def __init__(self) -> None:
        self.callbacks: list[Callable[[Any], Any]] = []
        self.errbacks: list[Callable[[Any], Any]] = []

    def add_callback(self, callback: Callable[[Any], Any]) -> FakeFuture:
        self.callbacks.append(callback)
        return self

    def add_errback(self, errback: Callable[[Any], Any]) -> FakeFuture:
        self.errbacks.append(errback)
        return self


class FakeProducer:
    def __init__(self, *, refuse: bool = False) -> None:
        self.refuse = refuse
        self.sent: list[tuple[str, bytes]] = []
        self.futures: list[FakeFuture] = []

    def send(self, topic: str, *, key: bytes, value: bytes, headers: Any) -> FakeFuture:
        if self.refuse:
            raise TimeoutError("buffer full")
        self.sent.append((topic, key))
        self.futures.append(FakeFuture())
        return self.futures[-1]

    def close(self, timeout: float) -> None:
        pass


def test_the_kafka_sink_keys_by_model_and_reports_acks_errors_and_a_full_buffer() -> None:
    producer = FakeProducer()
    made: list[int] = []
    sink = KafkaLogSink(FerrySettings(), make_producer=lambda: made.append(1) or producer, source="test")
    event = to_event_for("digits")
    outcomes: list[str] = []
    sink.send(event, outcomes.append)
    sink.send(event, outcomes.append)
    assert made == [1]  # built once, on first use
    assert producer.sent == [("ferry.inference.logged", b"digits")] * 2
    producer.futures[0].callbacks[0](None)
    producer.futures[1].errbacks[0](RuntimeError("broker said no"))
    producer.refuse = True
    sink.send(event, outcomes.append)
    assert outcomes == ["sent", "failed", "dropped"]


def to_event_for(model: str) -> InferenceLogged:
    log = InferenceLog(ListSink(), sample=1.0)
    offer(log, model)
    return to_event(log._queue[0], "g")


def test_the_kafka_sink_drops_past_its_bound_of_unacknowledged_records() -> None:
    producer = FakeProducer()
    sink = KafkaLogSink(FerrySettings(), make_producer=lambda: producer, source="test", max_in_flight=2)
    event, outcomes = to_event_for("digits"), list[str]()
    for _ in range(3):
        sink.send(event, outcomes.append)  # a slow broker: nothing acknowledged yet
    assert outcomes == ["dropped"] and len(producer.sent) == 2
    producer.futures[0].callbacks[0](None)  # one acknowledged: room for one more
    sink.send(event, outcomes.append)
    assert outcomes == ["dropped", "sent"] and len(producer.sent) == 3


def test_a_producer_that_cannot_be_built_drops_and_is_tried_again() -> None:
    attempts: list[int] = []

    def make() -> FakeProducer:
        attempts.append(1)
        if len(attempts) == 1:
            raise ValueError("no broker")
        return FakeProducer()

    sink = KafkaLogSink(FerrySettings(), make_producer=make, source="test")
    outcomes: list[str] = []
    sink.send(to_event_for("digits"), outcomes.append)
    sink.send(to_event_for("digits"), outcomes.append)
    assert outcomes == ["dropped"] and len(attempts) == 2
