"""Dead-letter copies: headers, truncation for the broker's size limit, retries that never skip."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
from kafka.errors import KafkaConfigurationError, KafkaTimeoutError, MessageSizeTooLargeError

from shared.dead_letter import MAX_REASON_CHARS, DeadLetterAborted, DeadLetterWriter, Original


class Acked:
    is_done = True

    def get(self, timeout: float | None = None) -> None:
        return None


class Failed:
    is_done = True

    def __init__(self, error: Exception) -> None:
        self._error = error

    def get(self, timeout: float | None = None) -> None:
        raise self._error


class Pending:
    """A record still in the producer's hands: its first ``waits`` waits time out, then it is acked."""

    def __init__(self, waits: int) -> None:
        self.waits = waits
        self.is_done = False

    def get(self, timeout: float | None = None) -> None:
        if self.waits:
            self.waits -= 1
            raise KafkaTimeoutError(f"Timeout after waiting for {timeout} secs.")
        self.is_done = True


@dataclass
class FakeProducer:
    """Refuses copies over ``limit`` bytes like a broker would, and fails the first ``failures`` sends."""

    limit: int = 1_048_576
    failures: list[Exception] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=lambda: {"max_request_size": 1_048_576})

    def send(self, topic: str, *, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> Any:
        if self.failures:
            return Failed(self.failures.pop(0))
        size = len(key or b"") + len(value or b"") + sum(len(name) + len(data) for name, data in headers)
        if size > self.limit:
            return Failed(MessageSizeTooLargeError(f"{size} bytes"))
        self.sent.append(
            {"topic": topic, "key": key, "value": value, "headers": dict(headers), "header_list": list(headers)}
        )
        return Acked()


def writer(producer: FakeProducer, stop: threading.Event | None = None) -> DeadLetterWriter:
    return DeadLetterWriter(producer, group="g", stop=stop or threading.Event(), first_backoff_s=0.001)  # type: ignore[arg-type]


def original(value: bytes, headers: list[tuple[str, bytes]] | None = None) -> Original:
    return Original("p.model.trained", 2, 41, key=b"digits", value=value, headers=headers or [("ce_id", b"e1")])


def test_a_copy_carries_the_original_and_every_dlq_header() -> None:
    producer = FakeProducer()
    writer(producer).send(original(b"{}"), reason="bad", error_type="DecodeError")
    [copy] = producer.sent
    assert copy["topic"] == "p.model.trained.dlq"
    assert (copy["key"], copy["value"], copy["headers"]["ce_id"]) == (b"digits", b"{}", b"e1")
    headers = copy["headers"]
    assert headers["ferry_dlq_reason"] == b"bad"
    assert headers["ferry_dlq_error_type"] == b"DecodeError"
    assert (headers["ferry_dlq_topic"], headers["ferry_dlq_partition"], headers["ferry_dlq_offset"]) == (
        b"p.model.trained",
        b"2",
        b"41",
    )
    assert headers["ferry_dlq_group"] == b"g"
    assert float(headers["ferry_dlq_time"]) > 0
    assert "ferry_dlq_truncated" not in headers


def test_a_copy_too_large_is_truncated_and_says_so_while_reason_and_coordinates_stay_whole() -> None:
    producer = FakeProducer(limit=1_048_576)
    value = b"x" * 1_046_000
    reason = "model.trained failed validation: " + "; ".join(f"f{n}: Extra inputs are not permitted" for n in range(80))
    writer(producer).send(original(value), reason=reason, error_type="DecodeError")
    [copy] = producer.sent
    headers = copy["headers"]
    assert headers["ferry_dlq_truncated"] == b"value"
    assert headers["ferry_dlq_original_bytes"] == str(len(value)).encode()
    assert headers["ferry_dlq_reason"] == reason.encode()
    assert headers["ferry_dlq_offset"] == b"41" and headers["ferry_dlq_partition"] == b"2"
    assert value.startswith(copy["value"]) and 0 < len(copy["value"]) < len(value)
    assert headers["ce_id"] == b"e1"  # the original headers travel while they fit


def test_a_broker_with_a_small_limit_still_gets_the_reason_and_coordinates() -> None:
    producer = FakeProducer(limit=2_000)
    huge_headers = [("junk", b"y" * 50_000)]
    writer(producer).send(original(b"z" * 900_000, huge_headers), reason="too big", error_type="DecodeError")
    [copy] = producer.sent
    assert copy["headers"]["ferry_dlq_truncated"] == b"value,headers,key"
    assert copy["headers"]["ferry_dlq_reason"] == b"too big"
    assert "junk" not in copy["headers"]


def test_a_copy_the_producer_refuses_outright_is_replaced_by_a_smaller_one() -> None:
    producer = FakeProducer(failures=[TypeError("a header the producer cannot write")])
    writer(producer).send(original(b"{}", [("odd", b"x")]), reason="bad", error_type="DecodeError")
    [copy] = producer.sent
    assert copy["headers"]["ferry_dlq_reason"] == b"bad"
    assert copy["headers"]["ferry_dlq_truncated"] == b"value,headers,key" and "odd" not in copy["headers"]


def test_when_even_the_smallest_copy_is_refused_the_error_is_raised_not_swallowed() -> None:
    producer = FakeProducer(failures=[KafkaConfigurationError("refused")] * 10)
    with pytest.raises(KafkaConfigurationError):
        writer(producer).send(original(b"{}"), reason="bad", error_type="DecodeError")


def test_failed_sends_are_retried_until_the_broker_takes_the_copy() -> None:
    producer = FakeProducer(failures=[KafkaTimeoutError("away"), ConnectionError("refused"), KafkaTimeoutError("x")])
    writer(producer).send(original(b"{}"), reason="bad", error_type="DecodeError")
    assert len(producer.sent) == 1


@dataclass
class SlowProducer(FakeProducer):
    """Hands its first record to a future acked only after ``waits`` timed-out waits, later ones at once."""

    waits: int = 0
    futures: list[Pending] = field(default_factory=list)

    def send(self, topic: str, *, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> Any:
        self.futures.append(Pending(0 if self.futures else self.waits))
        return self.futures[-1]


def test_a_copy_not_acknowledged_yet_is_waited_for_never_sent_twice() -> None:
    """The producer retries the record itself (idempotent: written once); a second send could be a duplicate."""
    producer = SlowProducer(waits=4)
    writer(producer).send(original(b"{}"), reason="bad", error_type="DecodeError")
    assert len(producer.futures) == 1 and producer.futures[0].is_done


def test_stopping_while_a_copy_waits_for_its_ack_aborts() -> None:
    stop = threading.Event()
    stop.set()
    producer = SlowProducer(waits=1000)
    with pytest.raises(DeadLetterAborted, match="acked"):
        writer(producer, stop).send(original(b"{}"), reason="bad", error_type="DecodeError")
    assert len(producer.futures) == 1


def test_stopping_while_the_broker_refuses_aborts_without_pretending_it_was_sent() -> None:
    stop = threading.Event()
    producer = FakeProducer(failures=[KafkaTimeoutError("away")] * 1000)
    stop.set()
    with pytest.raises(DeadLetterAborted):
        writer(producer, stop).send(original(b"{}"), reason="bad", error_type="DecodeError")
    assert producer.sent == []


def test_an_unreadable_record_is_dead_lettered_as_its_coordinates() -> None:
    producer = FakeProducer()
    unreadable = Original("p.alert", 0, 7, readable=False)
    writer(producer).send(unreadable, reason="unreadable record: bad header", error_type="CorruptRecordError")
    [copy] = producer.sent
    assert copy["value"] == b"" and copy["key"] is None
    assert copy["headers"]["ferry_dlq_unreadable"] == b"true"
    assert copy["headers"]["ferry_dlq_offset"] == b"7"


def test_a_runaway_reason_is_bounded_and_says_how_much_was_left_out() -> None:
    producer = FakeProducer()
    writer(producer).send(original(b"{}"), reason="DataError: " + "x" * 100_000, error_type="DataError")
    reason = producer.sent[0]["headers"]["ferry_dlq_reason"].decode()
    assert len(reason) < MAX_REASON_CHARS + 100
    assert reason.endswith("more characters)")


def test_a_message_dead_lettered_before_keeps_its_earlier_reasons_oldest_first() -> None:
    producer = FakeProducer()
    arriving = [
        ("ce_id", b"e1"),
        ("ferry_dlq_previous_reason", b"first"),
        ("ferry_dlq_reason", b"second"),
        ("ferry_dlq_offset", b"7"),
        ("ferry_replay_of", b"p.model.trained.dlq/0/7"),
    ]
    writer(producer).send(original(b"{}", arriving), reason="third", error_type="PermanentError")
    [copy] = producer.sent
    headers = copy["header_list"]
    assert copy["headers"]["ferry_dlq_reason"] == b"third"
    assert copy["headers"]["ferry_dlq_offset"] == b"41"  # this copy's coordinates, not the stale ones
    assert copy["headers"]["ferry_replay_of"] == b"p.model.trained.dlq/0/7"
    assert [name for name, _ in headers].count("ferry_dlq_offset") == 1
    assert [value for name, value in headers if name == "ferry_dlq_previous_reason"] == [b"first", b"second"]


def test_the_smallest_copy_still_carries_the_earlier_reasons() -> None:
    producer = FakeProducer(limit=300_000)
    arriving = [("ce_id", b"e1"), ("ferry_dlq_reason", b"earlier"), ("big", b"h" * 400_000)]
    writer(producer).send(original(b"v" * 10, arriving), reason="now", error_type="X")
    [copy] = producer.sent
    assert "big" not in copy["headers"]
    assert copy["headers"]["ferry_dlq_previous_reason"] == b"earlier"
