"""``start_offsets``: a loop of a group of its own begins a partition where it is told, found by time, once."""

from __future__ import annotations

import time

import pytest
from loop_support import STATUS, Loops, drain, encoded, status

from services.monitor.entrypoints.consumer import input_log_starts
from services.monitor.settings import MonitorSettings
from shared.envelope import EventMeta
from shared.events import InferenceLogged, TrainingStatus
from shared.kafka import make_consumer, make_producer, offsets_since
from shared.settings import FerrySettings

pytestmark = pytest.mark.integration

HOUR_MS = 3_600_000


def send_at(settings: FerrySettings, epochs: range, timestamp_ms: int) -> None:
    """TrainingStatus events of these epochs, written with this record timestamp (CreateTime), in order."""
    producer = make_producer(settings)
    try:
        for epoch in epochs:
            key, value, headers = encoded(status(epoch))
            producer.send(settings.topic(STATUS), key=key, value=value, headers=headers, timestamp_ms=timestamp_ms)
        producer.flush(timeout=30)
    finally:
        producer.close()


def test_a_new_group_reads_only_the_last_hour_and_goes_on_from_its_commits(ferry_settings: FerrySettings) -> None:
    now_ms = int(time.time() * 1000)
    send_at(ferry_settings, range(0, 5), now_ms - 2 * HOUR_MS)  # older than the lookback
    send_at(ferry_settings, range(5, 8), now_ms - 60_000)  # within it
    topic = ferry_settings.topic(STATUS)
    loops = Loops(ferry_settings)
    handled: list[int] = []

    def handle(event: TrainingStatus, meta: EventMeta) -> None:
        handled.append(event.epoch or 0)

    try:
        consumer = make_consumer(ferry_settings, loops.group("lookback"), [STATUS])
        starts = offsets_since(consumer, topic, now_ms - HOUR_MS)
        # The key's partition begins at its first recent record; the others, empty, at their ends (0).
        assert sorted(offset for offset in starts.values() if offset) == [5]
        loop = loops.make({TrainingStatus: [handle]}, group="lookback", consumer=consumer, start_offsets=starts)
        drain(loop, lambda: len(handled) >= 3)
        send_at(ferry_settings, range(8, 10), now_ms)
        drain(loop, lambda: len(handled) >= 5)
        assert handled == [5, 6, 7, 8, 9]  # nothing older than the hour, nothing twice
        assert loop.flush_commits(force=True)
        loop.close()

        # The same group again, with no start offsets: its commits say where it goes on, so only the new is read.
        send_at(ferry_settings, range(10, 11), now_ms)
        again = loops.make({TrainingStatus: [handle]}, group="lookback", start_offsets={})
        drain(again, lambda: len(handled) >= 6)
        assert handled == [5, 6, 7, 8, 9, 10]
    finally:
        loops.close()


def test_where_nothing_is_that_recent_reading_begins_at_the_end(ferry_settings: FerrySettings) -> None:
    now_ms = int(time.time() * 1000)
    send_at(ferry_settings, range(0, 3), now_ms - 2 * HOUR_MS)
    consumer = make_consumer(ferry_settings, f"{ferry_settings.topic_prefix}empty-hour", [STATUS])
    try:
        starts = offsets_since(consumer, ferry_settings.topic(STATUS), now_ms - HOUR_MS)
        ends = consumer.end_offsets(list(starts))
        assert starts == {tp: int(end) for tp, end in ends.items()} and max(starts.values()) == 3
    finally:
        consumer.close()


def test_the_monitor_begins_the_inference_log_at_its_lookback(ferry_settings: FerrySettings) -> None:
    """Its windows refill from the last FERRY_MONITOR_INPUT_LOOKBACK_S of the log, not the whole retained topic."""
    now_ms = int(time.time() * 1000)
    producer = make_producer(ferry_settings)
    topic = ferry_settings.topic(InferenceLogged.topic)
    try:
        for number, written_ms in enumerate([now_ms - 3 * HOUR_MS] * 4 + [now_ms - 60_000] * 2):
            logged = InferenceLogged(
                model_name="digits", request_id=f"r{number}", version=1, route="champion", inputs=[], outputs=[]
            )
            key, value, headers = encoded(logged)
            producer.send(topic, key=key, value=value, headers=headers, timestamp_ms=written_ms)
        producer.flush(timeout=30)
    finally:
        producer.close()
    settings = MonitorSettings(ferry=ferry_settings, input_lookback_s=2 * 3600)
    consumer = make_consumer(ferry_settings, f"{ferry_settings.topic_prefix}monitor-own", [InferenceLogged.topic])
    try:
        starts = input_log_starts(settings, consumer, now_ms / 1000)
        assert sorted(offset for offset in starts.values() if offset) == [4]  # the two within two hours
        longer = MonitorSettings(ferry=ferry_settings, input_lookback_s=4 * 3600)
        assert not any(input_log_starts(longer, consumer, now_ms / 1000).values())  # all six: from the start
    finally:
        consumer.close()
