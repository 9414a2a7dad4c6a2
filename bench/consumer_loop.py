"""Consumer-loop benchmark: the shared ConsumerLoop beside a bare kafka-python consumer, same messages.

    .venv/bin/python bench/consumer_loop.py [--events 20000] [--rounds 5] [--kafka HOST:PORT] [--spans]

Starts its own Kafka broker (shared.local.stack, home .ferry-bench-loop, free ports) unless --kafka names a
running one. Publishes ``--events`` small CloudEvents (``training.status``) to a fresh topic, then, in
alternating rounds, consumes all of them from the start with each contender, each round in a fresh
consumer group with the same consumer settings (``shared.kafka.make_consumer``):

- bare: ``KafkaConsumer.poll`` in a loop, counting records, one commit at the end;
- loop: ``ConsumerLoop`` with a no-op handler, telemetry installed as a service installs it, and its
  delivery-attempt log (SQLite) as the services run it: decode, validate, trace context, metrics, one
  commit and one attempt mark per poll batch (``--spans``: a span per message too, as when traces are
  exported).

The clock of each round starts when the first batch has come (joining the group and the first fetch
are not what is measured) and stops when the last message is done (the loop: and committed); the
rate counts the messages after the first batch. Each contender must consume exactly ``--events``
messages (the loop: handled, none dead-lettered, and its committed offsets must add up); otherwise
no rate is printed and the exit status is 1. The printed rate is the best round of each; the ratio
is loop/bare. Aims: ratio >= 0.6, loop >= 10,000/s.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kafka import KafkaConsumer
from kafka.structs import TopicPartition

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shared.delivery import SqliteDeliveryLog  # noqa: E402
from shared.envelope import EventMeta, encode  # noqa: E402
from shared.events import TrainingStatus  # noqa: E402
from shared.kafka import ConsumerLoop, make_consumer, make_producer  # noqa: E402
from shared.local.ports import free_port  # noqa: E402
from shared.local.stack import PROJECT_ROOT, KafkaBroker  # noqa: E402
from shared.settings import FerrySettings  # noqa: E402
from shared.telemetry import setup_telemetry  # noqa: E402
from shared.topics import ensure_topics  # noqa: E402

TOPIC = TrainingStatus.topic


class CountMismatch(RuntimeError):
    """A contender did not consume exactly the events published: its rate would be a lie."""


@contextmanager
def broker_settings(args: argparse.Namespace) -> Iterator[FerrySettings]:
    """Settings on the given broker, or on a broker of our own (stopped and removed afterwards)."""
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    if args.kafka:
        settings = FerrySettings(kafka_bootstrap=args.kafka, topic_prefix=prefix)
        ensure_topics(settings)
        yield settings
        return
    home = PROJECT_ROOT / ".ferry-bench-loop"
    shutil.rmtree(home, ignore_errors=True)
    settings = FerrySettings(
        home=home,
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        kafka_controller_port=free_port(),
        cache_dir=PROJECT_ROOT / ".ferry" / "cache",
        topic_prefix=prefix,
    )
    broker = KafkaBroker(settings)
    print("starting Kafka under .ferry-bench-loop ...", flush=True)
    try:
        broker.start()
        ensure_topics(settings)
        yield settings
    finally:
        broker.stop()
        shutil.rmtree(home, ignore_errors=True)


def publish(settings: FerrySettings, count: int) -> None:
    """``count`` small events, batched (the bench measures consuming, not producing)."""
    producer = make_producer(settings, linger_ms=20, batch_size=256 * 1024)
    topic = settings.topic(TOPIC)
    for n in range(count):
        event = TrainingStatus(model_name="bench", request_id=f"r{n % 64}", state="progress", epoch=n)
        message = encode(event, source="ferry/bench")
        producer.send(topic, key=message.key, value=message.value, headers=message.headers)
    producer.flush(timeout=120)
    producer.close()


def end_offsets(settings: FerrySettings) -> dict[TopicPartition, int]:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    try:
        topic = settings.topic(TOPIC)
        partitions = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        return {tp: int(offset) for tp, offset in consumer.end_offsets(partitions).items()}
    finally:
        consumer.close()


def committed_total(settings: FerrySettings, group: str, partitions: list[TopicPartition]) -> int:
    consumer = KafkaConsumer(bootstrap_servers=settings.kafka_bootstrap, group_id=group, enable_auto_commit=False)
    try:
        return sum(consumer.committed(tp) or 0 for tp in partitions)
    finally:
        consumer.close(autocommit=False)


def joined(consumer: KafkaConsumer) -> None:
    """Poll until the group has assigned partitions (joining is not what is measured)."""
    deadline = time.monotonic() + 60
    while not consumer.assignment():
        if time.monotonic() > deadline:
            raise RuntimeError("the consumer was never assigned a partition")
        consumer.poll(timeout_ms=100, max_records=1, update_offsets=False)


def run_bare(settings: FerrySettings, expected: int) -> float:
    group = f"{settings.topic_prefix}bare-{uuid.uuid4().hex[:6]}"
    consumer = make_consumer(settings, group, [TOPIC])
    try:
        joined(consumer)
        count, first, started = 0, 0, 0.0
        deadline = time.monotonic() + 300
        while count < expected and time.monotonic() < deadline:
            for records in consumer.poll(timeout_ms=500).values():
                count += len(records)
            if count and not first:  # the clock starts once data flows (see the docstring)
                first, started = count, time.perf_counter()
        consumer.commit()
        elapsed = time.perf_counter() - started
        for _ in range(3):  # nothing more may arrive
            count += sum(len(records) for records in consumer.poll(timeout_ms=200).values())
    finally:
        consumer.close(autocommit=False)
    if count != expected:
        raise CountMismatch(f"bare consumer consumed {count} of {expected} events")
    return (expected - first) / elapsed


def run_loop(
    settings: FerrySettings, expected: int, partitions: list[TopicPartition], state: Path, spans: bool = False
) -> float:
    group = f"{settings.topic_prefix}loop-{uuid.uuid4().hex[:6]}"
    handled = 0

    def noop(event: TrainingStatus, meta: EventMeta) -> None:
        nonlocal handled
        handled += 1

    dlq_producer = make_producer(settings)
    loop = ConsumerLoop(
        consumer=make_consumer(settings, group, [TOPIC]),
        dlq_producer=dlq_producer,
        group=group,
        handlers={TrainingStatus: [noop]},
        delivery_log=SqliteDeliveryLog(state / f"{group}.sqlite"),
        spans=spans,
    )
    try:
        joined(loop.consumer)
        first, started = 0, 0.0
        deadline = time.monotonic() + 300
        while handled < expected and time.monotonic() < deadline:
            loop.poll_once(timeout_ms=500)
            if handled and not first:
                first, started = handled, time.perf_counter()
        loop.flush_commits()
        elapsed = time.perf_counter() - started
        for _ in range(3):
            loop.poll_once(timeout_ms=200)
    finally:
        loop.close()
        dlq_producer.close()
    committed = committed_total(settings, group, partitions)
    refused = sum(n for (_, outcome), n in loop.counts.items() if outcome != "handled")
    if handled != expected or refused or committed != expected:
        raise CountMismatch(f"loop handled {handled} of {expected} events, refused {refused}, committed {committed}")
    return (expected - first) / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--kafka", help="bootstrap servers of a running broker")
    parser.add_argument("--spans", action="store_true", help="a span per message, as when traces are exported")
    args = parser.parse_args()
    setup_telemetry("bench", log_level="WARNING")
    with broker_settings(args) as settings, tempfile.TemporaryDirectory(prefix="ferry-bench-") as state:
        publish(settings, args.events)
        ends = end_offsets(settings)
        if sum(ends.values()) != args.events:
            print(f"the topic holds {sum(ends.values())} events, not {args.events}: no rates", file=sys.stderr)
            return 1
        bare: list[float] = []
        loop: list[float] = []
        try:
            for round_number in range(1, args.rounds + 1):
                bare.append(run_bare(settings, args.events))
                loop.append(run_loop(settings, args.events, list(ends), Path(state), spans=args.spans))
                print(f"  round {round_number}: bare {bare[-1]:8.0f}/s   loop {loop[-1]:8.0f}/s", flush=True)
        except CountMismatch as error:
            print(f"count mismatch, no rates: {error}", file=sys.stderr)
            return 1
    best_bare, best_loop = max(bare), max(loop)
    if not best_bare or not best_loop:  # timed from the first batch: nothing is left to time when it held all
        print(f"{args.events} events all came in the first batch: no rates (give more --events)", file=sys.stderr)
        return 1
    ratio = best_loop / best_bare
    print(f"{args.events} events, {len(ends)} partitions, best of {args.rounds} rounds:")
    print(f"  bare kafka-python consumer   {best_bare:8.0f} events/s")
    name = "ConsumerLoop + spans, no-op" if args.spans else "ConsumerLoop, no-op handler"
    print(
        f"  {name:<27}  {best_loop:8.0f} events/s   loop/bare {ratio:.2f}   "
        f"{'OK' if ratio >= 0.6 and best_loop >= 10_000 else 'BELOW AIM (0.6 and 10,000/s)'}"
    )
    logging.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
