"""The Kafka edge against the real broker: round trip, DLQ, retries, resume."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from loop_support import drain, read_all
from opentelemetry import trace

from shared.envelope import EventMeta, encode
from shared.errors import TransientError
from shared.events import TrainingStatus
from shared.kafka import ConsumerLoop, KafkaPublisher, RetryPolicy, make_consumer, make_producer
from shared.settings import FerrySettings

pytestmark = pytest.mark.integration

TOPIC = TrainingStatus.topic


def status(n: int) -> TrainingStatus:
    return TrainingStatus(model_name="edge", request_id=f"r{n}", state="progress", epoch=n)


@pytest.fixture(autouse=True)
def close_loops() -> Iterator[None]:
    yield
    while OPEN_LOOPS:
        OPEN_LOOPS.pop().close()


OPEN_LOOPS: list[ConsumerLoop] = []


def make_loop(settings: FerrySettings, handler: Callable, group: str = "edge", **options) -> ConsumerLoop:
    """A loop on this test's topic; the group name is made unique to the test's topic prefix."""
    group = f"{settings.topic_prefix}{group}"
    loop = ConsumerLoop(
        consumer=make_consumer(settings, group, [TOPIC], session_timeout_ms=10_000),
        dlq_producer=make_producer(settings),
        group=group,
        handlers={TrainingStatus: [handler]},
        retry=options.pop("retry", RetryPolicy(attempts=3, first_backoff_s=0.05)),
        **options,
    )
    OPEN_LOOPS.append(loop)
    return loop


def test_round_trip_keeps_headers_and_trace_context(ferry_settings: FerrySettings) -> None:
    publisher = KafkaPublisher(ferry_settings, source="ferry/test")
    publisher.publish(status(1), event_id="event-1")
    [record] = read_all(ferry_settings, ferry_settings.topic(TOPIC), expected=1)
    headers = dict(record.headers)
    assert headers["ce_id"] == b"event-1"
    assert headers["ce_type"] == b"ferry.training.status.v1"
    assert headers["content-type"] == b"application/json"
    assert record.key == b"r1"  # status events are keyed by request id

    seen: list[tuple[TrainingStatus, EventMeta, int]] = []

    def handler(event: TrainingStatus, meta: EventMeta) -> None:
        seen.append((event, meta, trace.get_current_span().get_span_context().trace_id))

    loop = make_loop(ferry_settings, handler)
    drain(loop, lambda: len(seen) == 1)
    event, meta, trace_id = seen[0]
    assert event == status(1)
    assert meta.event_id == "event-1"
    assert format(trace_id, "032x") == headers["traceparent"].decode().split("-")[1]


def test_poison_messages_go_to_the_dlq_and_the_next_one_is_handled(ferry_settings: FerrySettings) -> None:
    topic = ferry_settings.topic(TOPIC)
    producer = make_producer(ferry_settings)
    producer.send(topic, key=b"edge", value=b"\x00not an event")  # no CloudEvents headers at all
    bad_json = encode(status(2), source="t")
    producer.send(topic, key=b"edge", value=b"{broken", headers=bad_json.headers)
    good = encode(status(3), source="t")
    producer.send(topic, key=b"edge", value=good.value, headers=good.headers).get(timeout=10)
    handled: list[TrainingStatus] = []
    loop = make_loop(ferry_settings, lambda event, meta: handled.append(event))
    drain(loop, lambda: len(handled) == 1)
    assert handled == [status(3)]

    dead = read_all(ferry_settings, f"{topic}.dlq", expected=2)
    assert sorted(record.value for record in dead) == sorted([b"\x00not an event", b"{broken"])
    reasons = {dict(record.headers)["ferry_dlq_reason"].decode() for record in dead}
    assert any("missing headers" in reason for reason in reasons)
    assert any("not valid JSON" in reason for reason in reasons)
    for record in dead:
        headers = dict(record.headers)
        assert headers["ferry_dlq_topic"] == topic.encode()
        assert headers["ferry_dlq_group"] == f"{ferry_settings.topic_prefix}edge".encode()
        assert int(headers["ferry_dlq_offset"]) >= 0
        assert record.key == b"edge"


def test_a_handler_raising_a_permanent_error_dead_letters_and_moves_on(ferry_settings: FerrySettings) -> None:
    publisher = KafkaPublisher(ferry_settings, source="t")
    publisher.publish(status(1))
    publisher.publish(status(2))
    handled: list[int] = []

    def handler(event: TrainingStatus, meta: EventMeta) -> None:
        if event.epoch == 1:
            raise ValueError("epoch one is cursed")
        handled.append(event.epoch or 0)

    loop = make_loop(ferry_settings, handler)
    drain(loop, lambda: handled == [2])
    [dead] = read_all(ferry_settings, ferry_settings.topic(TOPIC) + ".dlq", expected=1)
    assert dict(dead.headers)["ferry_dlq_reason"] == b"ValueError: epoch one is cursed"


@pytest.mark.parametrize("failures", [2, 5], ids=["within-retries", "beyond-retries-repolled"])
def test_transient_failures_are_retried_and_the_effect_happens_once(
    ferry_settings: FerrySettings, failures: int
) -> None:
    KafkaPublisher(ferry_settings, source="t").publish(status(7))
    attempts: list[int] = []
    effects: list[TrainingStatus] = []

    def flaky(event: TrainingStatus, meta: EventMeta) -> None:
        attempts.append(1)
        if len(attempts) <= failures:
            raise TransientError("database away")
        effects.append(event)

    loop = make_loop(ferry_settings, flaky)
    drain(loop, lambda: len(effects) == 1)
    for _ in range(5):  # more polls must not deliver it again
        loop.poll_once(timeout_ms=100)
    assert effects == [status(7)]
    assert len(attempts) == failures + 1
    assert read_all(ferry_settings, ferry_settings.topic(TOPIC) + ".dlq", expected=1, timeout_s=2) == []


def test_a_restarted_consumer_resumes_from_its_committed_offset(ferry_settings: FerrySettings) -> None:
    publisher = KafkaPublisher(ferry_settings, source="t")
    for n in range(6):
        publisher.publish(TrainingStatus(model_name="edge", request_id="same-key", state="progress", epoch=n))
    first: list[int] = []

    def stop_after_three(event: TrainingStatus, meta: EventMeta) -> None:
        first.append(event.epoch or 0)
        if len(first) == 3:
            loop.stop_event.set()

    loop = make_loop(ferry_settings, stop_after_three, group="resume")
    loop.run()  # returns once stopped, after committing what finished
    assert first == [0, 1, 2]

    second: list[int] = []
    restarted = make_loop(ferry_settings, lambda event, meta: second.append(event.epoch or 0), group="resume")
    drain(restarted, lambda: len(second) >= 3)
    for _ in range(3):
        restarted.poll_once(timeout_ms=100)
    assert second == [3, 4, 5]


SIGTERM_CONSUMER = """
import sys
from shared.events import TrainingStatus
from shared.kafka import ConsumerLoop, make_consumer, make_producer, stop_on_signals
from shared.settings import FerrySettings

settings = FerrySettings.model_validate_json(sys.argv[1])
def handle(event, meta):
    print(event.epoch, flush=True)
loop = ConsumerLoop(consumer=make_consumer(settings, sys.argv[2], ["training.status"]),
                    dlq_producer=make_producer(settings), group=sys.argv[2], handlers={TrainingStatus: [handle]})
stop_on_signals(loop.stop_event)
loop.run()
print("stopped", flush=True)
"""


def test_sigterm_stops_the_loop_cleanly_and_commits_what_finished(ferry_settings: FerrySettings) -> None:
    import signal
    import subprocess
    import sys

    publisher = KafkaPublisher(ferry_settings, source="t")
    for n in range(4):
        publisher.publish(TrainingStatus(model_name="edge", request_id="one-key", state="progress", epoch=n))
    group = f"{ferry_settings.topic_prefix}sigterm"
    child = subprocess.Popen(
        [sys.executable, "-c", SIGTERM_CONSUMER, ferry_settings.model_dump_json(), group],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    seen = [int(child.stdout.readline()) for _ in range(4)]
    child.send_signal(signal.SIGTERM)
    assert child.stdout.readline().strip() == "stopped"
    assert child.wait(timeout=30) == 0
    assert seen == [0, 1, 2, 3]

    publisher.publish(TrainingStatus(model_name="edge", request_id="one-key", state="progress", epoch=4))
    after: list[int] = []
    loop = make_loop(ferry_settings, lambda event, meta: after.append(event.epoch or 0), group="sigterm")
    drain(loop, lambda: len(after) >= 1)
    for _ in range(3):
        loop.poll_once(timeout_ms=100)
    assert after == [4]  # nothing handled before SIGTERM is handled again
