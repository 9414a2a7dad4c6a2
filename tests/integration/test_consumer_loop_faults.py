"""The consumer loop against the real broker when things go wrong: poison messages of every shape,
commits that fail, a dead-letter producer that fails, a rebalance, the lag it reports."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from kafka.errors import (
    CommitFailedError,
    KafkaConnectionError,
    KafkaTimeoutError,
    MessageSizeTooLargeError,
    RebalanceInProgressError,
)
from kafka.future import Future
from kafka.record.default_records import DefaultRecordBatchBuilder
from kafka.structs import TopicPartition
from loop_support import (
    STATUS,
    Loops,
    committed,
    drain,
    encoded,
    end_offsets,
    read_all,
    send_raw,
    status,
    trained_event,
)

from shared.envelope import EventMeta
from shared.events import ModelTrained, TrainingStatus
from shared.kafka import make_consumer, make_producer
from shared.settings import FerrySettings

pytestmark = pytest.mark.integration

TRAINED = ModelTrained.topic
MAX_REQUEST = 1_048_576  # the producer's max_request_size and (about) the broker's message.max.bytes


@pytest.fixture
def loops(ferry_settings: FerrySettings) -> Iterator[Loops]:
    built = Loops(ferry_settings)
    yield built
    built.close()


class RawName(str):
    """A header name that kafka-python writes as bytes that are not UTF-8 (as a foreign producer might)."""

    def encode(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return b"\xff\xfe-not-utf8"


def json_value(**fields: Any) -> bytes:
    return json.dumps({"model_name": "edge", "request_id": "edge", "state": "progress"} | fields).encode()


def just_under_the_limit(headers: list[tuple[str, bytes]]) -> bytes:
    """A status with unknown fields, 300 bytes under the request limit: its dead-letter copy is over it."""
    junk = {f"junk{n}": n for n in range(200)}
    head = json_value(**junk)[:-1] + b', "padding": "'
    room = MAX_REQUEST - 300 - DefaultRecordBatchBuilder.estimate_size_in_bytes(b"edge", head + b'"}', headers)
    value = head + b"x" * room + b'"}'
    assert MAX_REQUEST - 310 < DefaultRecordBatchBuilder.estimate_size_in_bytes(b"edge", value, headers) < MAX_REQUEST
    return value


def poisons() -> list[tuple[str, tuple[bytes | None, bytes | None, list], str, str]]:
    """(name, (key, value, headers), what the reason says, error type) of every poison shape."""
    headers = encoded(status(0))[2]
    return [
        ("missing headers", (b"edge", b"\x00not an event", []), "missing headers", "DecodeError"),
        ("not JSON", (b"edge", b"{broken", headers), "value is not valid JSON", "DecodeError"),
        ("empty ce_id", encoded(status(0), ce_id=b""), "ce_id is empty", "DecodeError"),
        ("specversion 0.3", encoded(status(0), ce_specversion=b"0.3"), "ce_specversion must be '1.0'", "DecodeError"),
        ("wrong topic", encoded(trained_event()), "belongs on topic 'model.trained'", "WrongTopic"),
        (
            "huge number",
            (b"edge", json_value(epoch=2**40), headers),
            "epoch: Input should be less than or equal to 2147483647",
            "DecodeError",
        ),
        (
            "unknown field",
            (b"edge", json_value(surprise=1), headers),
            "surprise: Extra inputs are not permitted",
            "DecodeError",
        ),
        (
            "non-retriable Kafka error",
            encoded(status(0).model_copy(update={"reason": "big"})),
            "MessageSizeTooLargeError",
            "MessageSizeTooLargeError",
        ),
        (
            "just under the size limit",
            (b"edge", just_under_the_limit(headers), headers),
            "junk0: Extra inputs are not permitted",
            "DecodeError",
        ),
        (
            "non-UTF-8 header name",
            (b"edge", encoded(status(0))[1], [*headers, (RawName("x"), b"v")]),
            "unreadable record",
            "CorruptRecordError",
        ),
    ]


def test_poison_messages_of_every_shape_are_dead_lettered_and_the_next_event_is_handled(
    ferry_settings: FerrySettings, loops: Loops
) -> None:
    topic, trained_topic = ferry_settings.topic(STATUS), ferry_settings.topic(TRAINED)
    shapes = poisons()
    messages: list[tuple[bytes | None, bytes | None, list]] = []
    for n, (_, message, _, _) in enumerate(shapes):
        messages += [message, encoded(status(100 + n))]
    messages.append(
        encoded(TrainingStatus(model_name="edge", request_id="edge", state="progress", epoch=300, reason="flaky"))
    )
    offsets = send_raw(ferry_settings, topic, messages)
    [no_handler_offset] = send_raw(ferry_settings, trained_topic, [encoded(trained_event())])
    poison_at = {offsets[2 * n]: shape for n, shape in enumerate(shapes)}

    handled: list[int] = []
    flaky_failures = [KafkaTimeoutError("broker slow"), KafkaTimeoutError("broker slow")]

    def handle(event: TrainingStatus, meta: EventMeta) -> None:
        if event.reason == "big":
            raise MessageSizeTooLargeError("the effect's own message is over the broker's limit")
        if event.reason == "flaky" and flaky_failures:
            raise flaky_failures.pop()  # retriable: retried, never dead-lettered
        handled.append(event.epoch or 0)

    loop = loops.make({TrainingStatus: [handle]}, topics=(STATUS, TRAINED))
    expected = [100 + n for n in range(len(shapes))] + [300]
    drain(loop, lambda: len(handled) >= len(expected))
    for _ in range(3):
        loop.poll_once(timeout_ms=100)
    assert handled == expected  # each valid event once, in order, after its poison

    dead = {int(dict(r.headers)["ferry_dlq_offset"]): r for r in read_all(ferry_settings, f"{topic}.dlq", len(shapes))}
    assert sorted(dead) == sorted(poison_at)
    for offset, (name, (key, value, _), reason, error_type) in poison_at.items():
        headers = dict(dead[offset].headers)
        assert reason in headers["ferry_dlq_reason"].decode(), name
        assert headers["ferry_dlq_error_type"] == error_type.encode(), name
        assert headers["ferry_dlq_topic"] == topic.encode()
        assert headers["ferry_dlq_group"] == loops.group("loop").encode()
        if name == "non-UTF-8 header name":
            assert headers["ferry_dlq_unreadable"] == b"true" and dead[offset].value == b""
        elif name == "just under the size limit":
            assert headers["ferry_dlq_truncated"] == b"value"
            assert headers["ferry_dlq_original_bytes"] == str(len(value or b"")).encode()
            assert (value or b"").startswith(dead[offset].value)
        else:
            assert (dead[offset].key, dead[offset].value) == (key, value), name
    [other] = read_all(ferry_settings, f"{trained_topic}.dlq", 1)
    assert dict(other.headers)["ferry_dlq_error_type"] == b"NoHandler"
    assert int(dict(other.headers)["ferry_dlq_offset"]) == no_handler_offset

    assert loop.counts[(topic, "unreadable")] == 1
    assert loop.counts[(topic, "dead_lettered")] == len(shapes) - 1
    ends = end_offsets(ferry_settings, topic)
    assert {p: o for p, o in committed(ferry_settings, loops.group("loop"), topic).items() if ends[p]} == {
        p: o for p, o in ends.items() if o
    }  # everything committed, the unreadable record included


class FlakyCommits:
    """A real consumer whose first commits by the loop fail with the given errors; all else passes through,
    the revoke listener's commit included (it is the one ``commit_async`` call without a callback)."""

    def __init__(self, consumer: Any, failures: list[Exception]) -> None:
        self._consumer = consumer
        self.failures = failures

    def commit(self, offsets: Any = None, timeout_ms: int | None = None) -> None:
        if self.failures:
            raise self.failures.pop(0)
        self._consumer.commit(offsets, timeout_ms=timeout_ms)

    def commit_async(self, offsets: Any = None, callback: Any = None) -> Any:
        if callback is not None and self.failures:
            error = self.failures.pop(0)
            callback(offsets, error)  # as kafka-python reports a failed commit
            future = Future()
            future.failure(error)
            return future
        return self._consumer.commit_async(offsets, callback=callback)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._consumer, name)


@pytest.mark.parametrize(
    "error",
    [
        RebalanceInProgressError(),
        CommitFailedError("group rebalanced"),
        KafkaTimeoutError("commit timed out"),
        KafkaConnectionError("broker away"),
    ],
    ids=["rebalance", "commit-failed", "timeout", "connection"],
)
def test_a_failed_commit_stays_pending_and_is_committed_later(
    ferry_settings: FerrySettings, loops: Loops, error: Exception
) -> None:
    topic = ferry_settings.topic(STATUS)
    send_raw(ferry_settings, topic, [encoded(status(n)) for n in range(5)])
    group = loops.group("flaky")
    consumer = FlakyCommits(make_consumer(ferry_settings, group, [STATUS]), [error, error])
    handled: list[int] = []
    loop = loops.make(
        {TrainingStatus: [lambda event, meta: handled.append(event.epoch)]}, group="flaky", consumer=consumer
    )
    drain(loop, lambda: len(handled) == 5)
    ends = {p: o for p, o in end_offsets(ferry_settings, topic).items() if o}

    def all_committed() -> bool:
        return {p: o for p, o in committed(ferry_settings, group, topic).items() if p in ends} == ends

    # Retried after a back-off (or, should the group rebalance meanwhile, committed on revoke).
    drain(loop, lambda: loop.flush_commits() and all_committed())
    assert len(consumer.failures) < 2, "the commit should have failed first"
    loop.close()

    again: list[int] = []
    restarted = loops.make({TrainingStatus: [lambda event, meta: again.append(event.epoch)]}, group="flaky")
    send_raw(ferry_settings, topic, [encoded(status(5))])
    drain(restarted, lambda: again == [5])
    for _ in range(3):
        restarted.poll_once(timeout_ms=100)
    assert again == [5]  # nothing handled before is handled again
    assert sorted(handled) == [0, 1, 2, 3, 4]


def test_offsets_pending_at_a_rebalance_are_committed_on_revoke(ferry_settings: FerrySettings, loops: Loops) -> None:
    topic = ferry_settings.topic(STATUS)
    keys = [f"k{n}" for n in range(12)]  # spread over the partitions
    send_raw(ferry_settings, topic, [encoded(status(n, key)) for n, key in enumerate(keys)])
    group = loops.group("revoke")
    never = FlakyCommits(make_consumer(ferry_settings, group, [STATUS]), [KafkaConnectionError("away")] * 10_000)
    first: list[int] = []
    loop_a = loops.make(
        {TrainingStatus: [lambda event, meta: first.append(event.epoch)]}, group="revoke", consumer=never
    )
    drain(loop_a, lambda: len(first) == len(keys))  # handled, but its own commits all fail
    assert committed(ferry_settings, group, topic) == dict.fromkeys(end_offsets(ferry_settings, topic))

    second: list[int] = []
    loop_b = loops.make({TrainingStatus: [lambda event, meta: second.append(event.epoch)]}, group="revoke")
    stop = threading.Event()
    polling_b = threading.Thread(target=lambda: [loop_b.poll_once(200) for _ in iter(stop.is_set, True)], daemon=True)
    polling_b.start()
    try:
        # A's next polls rebalance: on revoke it commits what it finished, so B starts after it.
        drain(loop_a, lambda: bool(loop_b.consumer.assignment()) and len(loop_a.consumer.assignment()) < 3)
        send_raw(ferry_settings, topic, [encoded(status(100 + n, key)) for n, key in enumerate(keys)])
        drain(loop_a, lambda: len(first) + len(second) >= 2 * len(keys))
    finally:
        stop.set()
        polling_b.join(30)
    assert sorted(first + second) == list(range(len(keys))) + [100 + n for n in range(len(keys))]
    assert not set(second) & set(range(len(keys)))  # B re-handled nothing that A had finished


class FlakySends:
    """A real producer whose first sends fail (or that calls ``on_send`` before each send)."""

    def __init__(self, producer: Any, failures: int, on_send: Any = None) -> None:
        self._producer = producer
        self.failures = failures
        self.calls = 0
        self._on_send = on_send

    def send(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self._on_send:
            self._on_send(self.calls)
        if self.failures:
            self.failures -= 1
            raise KafkaTimeoutError("Failed to update metadata after 60.0 secs.")
        return self._producer.send(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._producer, name)


def test_a_failing_dlq_producer_is_retried_and_the_message_never_skipped(
    ferry_settings: FerrySettings, loops: Loops
) -> None:
    topic = ferry_settings.topic(STATUS)
    send_raw(ferry_settings, topic, [(b"edge", b"{broken", encoded(status(0))[2]), encoded(status(1))])
    producer = make_producer(ferry_settings)
    handled: list[int] = []
    stop = threading.Event()
    # First a producer that keeps failing until the loop is told to stop: the poison must stay uncommitted.
    failing = FlakySends(producer, failures=10_000, on_send=lambda calls: calls >= 2 and stop.set())
    loop = loops.make(
        {TrainingStatus: [lambda event, meta: handled.append(event.epoch)]},
        group="dlq",
        dlq_producer=failing,
        stop=stop,
    )
    drain(loop, lambda: failing.calls >= 2)
    loop.close()
    assert handled == [] and read_all(ferry_settings, f"{topic}.dlq", 1, timeout_s=2) == []

    # Restarted with a producer that fails twice more, then works: retried, dead-lettered once, then on.
    flaky = FlakySends(producer, failures=2)
    restarted = loops.make(
        {TrainingStatus: [lambda event, meta: handled.append(event.epoch)]}, group="dlq", dlq_producer=flaky
    )
    drain(restarted, lambda: handled == [1])
    assert flaky.failures == 0
    [copy] = read_all(ferry_settings, f"{topic}.dlq", 1)
    assert copy.value == b"{broken"
    producer.close()


def test_the_loop_reports_its_lag_per_partition(ferry_settings: FerrySettings, loops: Loops) -> None:
    topic = ferry_settings.topic(STATUS)
    offsets = send_raw(ferry_settings, topic, [encoded(status(n, "one-key")) for n in range(10)])
    partition = TopicPartition(topic, next(p for p, o in end_offsets(ferry_settings, topic).items() if o))
    handled: list[int] = []
    loop = loops.make(
        {TrainingStatus: [lambda event, meta: handled.append(event.epoch)]},
        group="lag",
        consumer_options={"max_poll_records": 3},
    )
    drain(loop, lambda: len(handled) >= 3)
    assert loop.lag[partition] == offsets[-1] + 1 - len(handled)
    drain(loop, lambda: len(handled) == 10)
    assert loop.lag[partition] == 0


def test_a_topic_the_loop_only_observes_gets_no_dead_letter_copy_from_it(
    loops: Loops, ferry_settings: FerrySettings
) -> None:
    """A watcher (the console) skips what cannot succeed on a topic another group owns: the owner's copy is
    the one dead letter; the watcher counts it as left to the owner and carries on with the next event."""
    topic = ferry_settings.topic(STATUS)
    seen: list[int | None] = []
    watcher = loops.make(
        {TrainingStatus: [lambda event, meta: seen.append(event.epoch)]}, group="watcher", observed_topics=[topic]
    )
    before = end_offsets(ferry_settings, f"{topic}.dlq")
    send_raw(ferry_settings, topic, [(b"edge", b"{not json", encoded(status(1))[2]), encoded(status(2))])
    drain(watcher, lambda: seen == [2])
    assert watcher.counts[(topic, "left_to_owner")] == 1
    assert end_offsets(ferry_settings, f"{topic}.dlq") == before
