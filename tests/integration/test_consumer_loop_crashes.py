"""The consumer loop when its process dies: a message that crashes it every time is dead-lettered after
N attempts (a real child process, killed at a fault point); a broker away for two minutes is survived."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from loop_support import STATUS, Loops, committed, encoded, end_offsets, read_all, send_raw, status
from support import free_port

from shared.envelope import EventMeta
from shared.errors import PermanentError
from shared.events import TrainingStatus
from shared.faults import FAULT_EXIT_CODE, reached
from shared.local.stack import PROJECT_ROOT, KafkaBroker
from shared.settings import FerrySettings
from shared.topics import ensure_topics

pytestmark = pytest.mark.integration

CHILD = """
import sys
from pathlib import Path
from shared.delivery import SqliteDeliveryLog
from shared.events import TrainingStatus
from shared.faults import fault_point
from shared.kafka import ConsumerLoop, make_consumer, make_producer
from shared.settings import FerrySettings
from shared.telemetry import metrics_payload, setup_telemetry

settings = FerrySettings.model_validate_json(sys.argv[1])
group, state = sys.argv[2], Path(sys.argv[3])
setup_telemetry("crashtest", log_level="WARNING")

def handle(event, meta):
    if event.epoch == 13:
        fault_point("test.poison_message")  # as an out-of-memory kill or a native crash would
    print(f"handled {event.epoch}", flush=True)
    if event.epoch == 99:
        loop.stop_event.set()

consumer = make_consumer(settings, group, ["training.status"], session_timeout_ms=6000, heartbeat_interval_ms=1000)
loop = ConsumerLoop(consumer=consumer, dlq_producer=make_producer(settings), group=group,
                    handlers={TrainingStatus: [handle]}, delivery_log=SqliteDeliveryLog(state / "delivery.sqlite"),
                    max_attempts=3)
while not loop.stop_event.is_set():
    loop.poll_once()
print(metrics_payload()[0].decode(), flush=True)
loop.close()
"""


@pytest.mark.slow
def test_a_message_that_kills_its_consumer_every_time_is_dead_lettered_after_n_attempts(
    ferry_settings: FerrySettings, tmp_path: Path
) -> None:
    topic = ferry_settings.topic(STATUS)
    epochs = [1, 2, 13, 3, 4, 99]
    offsets = send_raw(ferry_settings, topic, [encoded(status(epoch, "crash")) for epoch in epochs])
    group, report = f"{ferry_settings.topic_prefix}crash", tmp_path / "faults.txt"
    env = os.environ | {"FERRY_FAULT_POINT": "test.poison_message", "FERRY_FAULT_REPORT": str(report)}
    runs: list[subprocess.CompletedProcess[str]] = []
    while not runs or runs[-1].returncode == FAULT_EXIT_CODE:
        assert len(runs) < 6, f"still crashing after {len(runs)} runs"
        command = [sys.executable, "-c", CHILD, ferry_settings.model_dump_json(), group, str(tmp_path)]
        runs.append(subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=180))

    assert [run.returncode for run in runs] == [FAULT_EXIT_CODE] * 3 + [0], runs[-1].stderr[-3000:]
    assert reached(report) == ["test.poison_message"] * 3  # each death was at the poison message, in its handler
    handled = [
        [int(line.split()[1]) for line in run.stdout.splitlines() if line.startswith("handled ")] for run in runs
    ]
    assert 13 not in sum(handled, [])
    assert handled[-1][-3:] == [3, 4, 99]  # the messages after it were handled, once, in order
    assert sum(handled, []).count(3) == 1

    [dead] = read_all(ferry_settings, f"{topic}.dlq", 1)
    headers = dict(dead.headers)
    assert headers["ferry_dlq_error_type"] == b"DeliveryAttemptsExhausted"
    assert int(headers["ferry_dlq_offset"]) == offsets[epochs.index(13)]
    assert b"died 3 times" in headers["ferry_dlq_reason"]
    assert dead.value == encoded(status(13, "crash"))[1]
    assert committed(ferry_settings, group, topic)[dead.partition] == offsets[-1] + 1

    metrics = runs[-1].stdout  # the names as Prometheus exposes them
    assert f'ferry_events_dead_lettered_total{{group="{group}"' in metrics
    assert f'ferry_events_consumed_total{{group="{group}"' in metrics and 'outcome="handled"' in metrics
    lag = [line for line in metrics.splitlines() if line.startswith("ferry_kafka_consumer_lag{")]
    assert any(f'group="{group}"' in line and f'topic="{topic}"' in line and 'partition="' in line for line in lag)


@pytest.mark.slow
def test_a_broker_away_for_two_minutes_is_survived_with_nothing_lost(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A broker of the test's own, stopped twice from inside a handler, so that each outage meets what it
    is meant to: the first begins at a batch's last message, so that batch's commit is sent into it (the
    broker comes back once the loop reports the failed commit); the second begins inside a handler that
    then fails for good, so that the message's dead-letter copy is sent into it, and it lasts two minutes.

    (A malformed message waiting in the fetcher's buffer would not do for the second: kafka-python hands
    out no buffered record while the group's coordinator is known to be away, and whether it knows that
    yet is a race with its heartbeat thread. Nor may one wait there into the first: its copy's retries
    would hold the loop, and the failed commit would not be reported until the broker was back.)"""
    settings = FerrySettings(
        home=tmp_path / "outage",
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        kafka_controller_port=free_port(),
        cache_dir=PROJECT_ROOT / ".ferry" / "cache",
        topic_prefix="outage.",
    )
    broker = KafkaBroker(settings)
    broker.start()
    loops = Loops(settings)
    try:
        ensure_topics(settings)
        topic = settings.topic(STATUS)
        first_batch = [encoded(status(n, "outage")) for n in range(6)]
        poison = (b"outage", b"{broken", first_batch[0][2])
        send_raw(settings, topic, first_batch)  # alone, so no record waits in the buffer into the first outage
        handled: list[int] = []
        commit_outage, dead_letter_outage = threading.Event(), threading.Event()

        def handle(event: TrainingStatus, meta: EventMeta) -> None:
            handled.append(event.epoch or 0)
            if event.epoch == 5 and not commit_outage.is_set():
                broker.stop()  # the batch's effects are done; its commit is not
                commit_outage.set()
            if event.epoch == 8 and not dead_letter_outage.is_set():
                broker.stop()
                dead_letter_outage.set()
                raise PermanentError("refused for good while the broker is away")  # its copy meets the outage

        # Six to a poll: the first batch ends at the message that begins the first outage.
        loop = loops.make({TrainingStatus: [handle]}, group="outage", consumer_options={"max_poll_records": 6})
        worker = threading.Thread(target=loop.run, name="outage-loop", daemon=True)
        worker.start()
        assert commit_outage.wait(120), "the loop never reached the message that stops the broker"
        _await_log(caplog, "offset commit failed", worker)
        broker.start()
        send_raw(settings, topic, [poison, *(encoded(status(n, "outage")) for n in range(6, 9))])
        assert dead_letter_outage.wait(240), "after the first outage, the loop never reached the second's message"
        outage_ends = time.monotonic() + 120
        while time.monotonic() < outage_ends:
            assert worker.is_alive(), "the consumer loop died during the outage"
            time.sleep(1)
        broker.start()
        send_raw(settings, topic, [encoded(status(100 + n, "outage")) for n in range(5)])
        deadline = time.monotonic() + 240
        expected = {*range(9), *range(100, 105)}
        while not expected <= set(handled):
            assert time.monotonic() < deadline, f"after the outage, handled only {sorted(set(handled))}"
            assert worker.is_alive(), "the consumer loop died after the outage"
            time.sleep(0.5)
        dead = read_all(settings, f"{topic}.dlq", 2)  # the poison and the refused message: neither skipped
        assert b"{broken" in [record.value for record in dead]
        # One copy of the refusal, however long its send waited in the outage. (The poison may be copied twice:
        # when the outage outlived the consumer's session the group hands the partition over again, and the
        # re-read meets it anew; the refused message is then handled, not refused, as its handler says.)
        assert [dict(record.headers)["ferry_dlq_error_type"] for record in dead].count(b"PermanentError") == 1
        ends = {p: o for p, o in end_offsets(settings, topic).items() if o}
        deadline = time.monotonic() + 60
        while {p: o for p, o in committed(settings, loops.group("outage"), topic).items() if p in ends} != ends:
            assert time.monotonic() < deadline, "the offsets pending through the outage were never committed"
            time.sleep(0.5)
        loop.stop_event.set()
        worker.join(60)
        assert not worker.is_alive()
        said = [record.getMessage() for record in caplog.records]
        assert any(line.startswith("dead-letter send for") for line in said)  # the copy met the second outage
    finally:
        loops.close()
        broker.stop()


def _await_log(caplog: pytest.LogCaptureFixture, prefix: str, worker: threading.Thread) -> None:
    """Wait until the loop has logged a line starting with ``prefix`` (the fault has landed)."""
    deadline = time.monotonic() + 120
    while not any(record.getMessage().startswith(prefix) for record in list(caplog.records)):
        assert time.monotonic() < deadline, f"the loop never reported {prefix!r}"
        assert worker.is_alive(), "the consumer loop died during the outage"
        time.sleep(0.2)
