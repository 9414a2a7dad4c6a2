"""What inference logging costs (``gateway_bench.py --log-sample 0.01,1.0``): the gateway (one worker) logging
to a real Kafka broker (KRaft, started here under .ferry/bench/kafka) at log sample 0, the baseline, and at
each share asked, measured in the same run. Each row gets a topic prefix of its own; when its server stops,
its ``ferry_gateway_inference_logs_total`` is read from its /metrics (sent, dropped, failed) and compared with
the records that reached the topic (its end offsets; more than counted sent, since what was queued or in
flight at the scrape went at the clean stop). Printed: each share's throughput and p50/p99 as ratios to
sample 0 (the aim: under 10 % of throughput at 0.01), the records' fate, and what ``offer`` costs a request
in process (a figure a shared machine's noise cannot hide).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from kafka import KafkaConsumer, TopicPartition

from shared.local.ports import free_port
from shared.local.stack import PROJECT_ROOT, KafkaBroker
from shared.settings import FerrySettings
from shared.topics import ensure_topics

_COUNTER = re.compile(r'^ferry_gateway_inference_logs_total\{[^}]*outcome="(\w+)"[^}]*\} (\S+)$', re.MULTILINE)


@dataclass
class LoggingRun:
    """The broker, and what each row's gateway counted and its topic received."""

    settings: FerrySettings
    broker: KafkaBroker
    counted: dict[str, dict[str, float]] = field(default_factory=dict)
    received: dict[str, int] = field(default_factory=dict)

    def stop(self) -> None:
        self.broker.stop()


def start_broker(home: Any) -> LoggingRun:
    """A single-node broker of the bench's own, on free ports."""
    settings = FerrySettings(
        home=home,
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        kafka_controller_port=free_port(),
        topic_prefix="bench0.",
        cache_dir=PROJECT_ROOT / ".ferry" / "cache",  # the broker's jars, fetched once
    )
    broker = KafkaBroker(settings)
    broker.start()
    return LoggingRun(settings, broker)


def row_name(sample: float) -> str:
    return f"(c) gateway x1, log sample {sample:g}"


def logging_configs(
    run: LoggingRun, samples: list[float], start: Callable[..., Any], make_config: Callable[..., Any]
) -> list[Any]:
    """Sample 0 and each share: the gateway's server (``start``: gateway_bench's local_server) with a topic
    prefix of its own, whose stop first reads the counters and the topic."""
    configs = []
    for index, sample in enumerate([0.0, *samples]):
        prefix = f"bench{index}."
        ensure_topics(run.settings.model_copy(update={"topic_prefix": prefix}))
        env = {
            "FERRY_BENCH_LOG_KAFKA": "1",
            "FERRY_GATEWAY_LOG_SAMPLE": str(sample),
            "FERRY_KAFKA_BOOTSTRAP": run.settings.kafka_bootstrap,
            "FERRY_TOPIC_PREFIX": prefix,
        }
        name = row_name(sample)

        def launch(name: str = name, env: dict[str, str] = env, prefix: str = prefix) -> Any:
            server = start(name, "gateway", 1, **env)
            stop = server.stop

            def counted_stop() -> None:
                # Summed over the rounds: the topic holds every round's records.
                counted = run.counted.setdefault(name, {})
                for outcome, value in _counters(server.url.split("/v2/")[0]).items():
                    counted[outcome] = counted.get(outcome, 0.0) + value
                run.received[name] = _records(run.settings, f"{prefix}inference.logged")
                stop()

            server.stop = counted_stop
            return server

        configs.append(make_config("ferry", name, launch))
    return configs


def _counters(base_url: str) -> dict[str, float]:
    try:
        text = httpx.get(f"{base_url}/metrics", timeout=10).text
    except httpx.HTTPError:
        return {}
    found: dict[str, float] = {}
    for outcome, value in _COUNTER.findall(text):
        found[outcome] = found.get(outcome, 0.0) + float(value)
    return found


def _records(settings: FerrySettings, topic: str) -> int:
    """Records on the topic: the sum of its partitions' end offsets (it was empty before the row)."""
    consumer = KafkaConsumer(**settings.kafka_client_options())
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        return int(sum(consumer.end_offsets(partitions).values()))
    finally:
        consumer.close()


def print_costs(run: LoggingRun, rows: dict[str, Any], samples: list[float], keys: list[tuple[str, int]]) -> None:
    """Each share against sample 0, and where the records went."""
    base = rows.get(row_name(0.0), {})
    print("\ninference logging: each sample against sample 0, same run (throughput: higher is better)\n")
    print("| sample | " + " | ".join(f"{g}, {c}" for g, c in keys) + " | records: sent / on the topic / dropped |")
    print("| --- | " + " | ".join("---" for _ in keys) + " | --- |")
    for sample in [0.0, *samples]:
        name = row_name(sample)
        cells = []
        for key in keys:
            mine, zero = rows.get(name, {}).get(key), base.get(key)
            if not isinstance(mine, dict) or not isinstance(zero, dict):
                cells.append("no rate")
                continue
            cells.append(
                f"{mine['rps']:.0f} req/s ({mine['rps'] / zero['rps']:.3f}x), "
                f"p50 {mine['p50'] / zero['p50']:.2f}x, p99 {mine['p99'] / zero['p99']:.2f}x"
            )
        counts = run.counted.get(name, {})
        fate = f"{counts.get('sent', 0):.0f} / {run.received.get(name, 0)} / {counts.get('dropped', 0):.0f}"
        print(f"| {sample:g} | " + " | ".join(cells) + f" | {fate} |")
    for sample in samples:
        print(
            f"\nthe request path's share at {sample:g}: {offer_cost_us(sample):.2f} µs per request (InferenceLog.offer)"
        )


def offer_cost_us(sample: float, requests: int = 200_000) -> float:
    """What ``offer`` adds to a request at ``sample``, in process: a draw, and for a drawn one an append."""
    import numpy as np

    from services.gateway.adapters.inference_log import InferenceLog

    class Input:
        name, datatype, data = "input", "FP32", np.zeros((1, 64), dtype=np.float32)

    log = InferenceLog(_NullSink(), sample=sample, max_queue=requests + 1)
    inputs, outputs = [Input()], (["probabilities"], [np.zeros((1, 10), dtype=np.float32)])
    started = time.perf_counter()
    for _ in range(requests):
        log.offer("bench", "r", 1, "champion", 2, inputs, outputs)
    return (time.perf_counter() - started) / requests * 1e6


class _NullSink:
    def send(self, event: Any, outcome: Callable[[str], None]) -> None:
        outcome("sent")

    def close(self) -> None:
        pass
