"""Consumer fail-over: how long a consumer killed with -9 keeps its partitions, per session timeout.

    .venv/bin/python bench/consumer_failover.py [--timeouts 6000,3000,1000] [--rounds 2] [--kafka HOST:PORT]

Starts its own Kafka broker (as bench/consumer_loop.py does: the local stack's broker, whose
group.min.session.timeout.ms is 1000) unless --kafka names a running one. For each session timeout
(FERRY_KAFKA_SESSION_TIMEOUT_MS, through shared.kafka.make_consumer): a child process joins a group on
a three-partition topic, a consumer here joins the same group; once both hold partitions the child is
killed with -9, and the clock runs until the consumer here holds every partition. Printed: the best
round of each timeout, and its ratio to the first timeout's (the default, 6 s).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from consumer_loop import TOPIC, broker_settings  # noqa: E402

from shared.kafka import make_consumer  # noqa: E402
from shared.settings import FerrySettings  # noqa: E402

CHILD = """
import sys, time
from shared.kafka import make_consumer
from shared.settings import FerrySettings
settings = FerrySettings.model_validate_json(sys.argv[1])
consumer = make_consumer(settings, sys.argv[2], [sys.argv[3]])
while True:
    consumer.poll(timeout_ms=200)
    if consumer.assignment():
        print("joined", flush=True)
"""


def one_round(settings: FerrySettings, timeout_ms: int) -> float:
    """Seconds from the child's kill -9 until the survivor holds every partition."""
    settings = settings.model_copy(update={"kafka_session_timeout_ms": timeout_ms})
    group = f"failover-{uuid.uuid4().hex[:8]}"
    root = str(Path(__file__).resolve().parent.parent)
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, settings.model_dump_json(), group, TOPIC],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": root},
    )
    try:
        assert child.stdout is not None and child.stdout.readline().startswith("joined")
        survivor = make_consumer(settings, group, [TOPIC])
        partitions = len(survivor.partitions_for_topic(settings.topic(TOPIC)) or ())
        while not survivor.assignment() or len(survivor.assignment()) == partitions:
            survivor.poll(timeout_ms=200)  # until the group is shared between the two
        child.send_signal(signal.SIGKILL)
        killed = time.monotonic()
        while len(survivor.assignment()) < partitions:
            survivor.poll(timeout_ms=100)
        elapsed = time.monotonic() - killed
        survivor.close()
        return elapsed
    finally:
        child.kill()
        child.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timeouts", default="6000,3000,1000", help="session timeouts in ms, the first the baseline")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--kafka", default=None, help="HOST:PORT of a running broker")
    args = parser.parse_args()
    timeouts = [int(value) for value in args.timeouts.split(",")]
    with broker_settings(args) as settings:
        results = {ms: min(one_round(settings, ms) for _ in range(args.rounds)) for ms in timeouts}
    baseline = results[timeouts[0]]
    for ms, seconds in results.items():
        print(f"session {ms:>6} ms: partitions back after {seconds:5.2f} s  ({seconds / baseline:.2f} x baseline)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
