"""Registry benchmark: read latency through HTTP with 10,000 versions stored, and registration rates.

    .venv/bin/python bench/registry_bench.py [--versions 10000] [--requests 2000] [--no-kafka]

Starts its own Kafka and PostgreSQL (shared.stack, home .ferry-bench, free ports) unless
--database-url and --kafka name running ones. Reads go through real uvicorn on loopback with a
keep-alive client; each timing is printed with its ratio to a baseline measured in the same run
(/healthz for reads, a bare one-row transaction for registrations). Aims: p99 < 20 ms, >= 300/s.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import socket
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn
from pydantic import SecretStr
from sqlalchemy import insert, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.registry.adapters.orm import ModelVersion, RegisteredModel  # noqa: E402
from services.registry.bootstrap import Registry, bootstrap  # noqa: E402
from services.registry.entrypoints.api import create_app  # noqa: E402
from services.registry.entrypoints.consumer import build_consumer_loop  # noqa: E402
from services.registry.handlers import handle_model_trained, version_from_event  # noqa: E402
from services.registry.settings import RegistrySettings  # noqa: E402
from shared.envelope import EventMeta  # noqa: E402
from shared.events import ArtifactRef, Hyperparameters, ModelTrained, Signature, TensorSpec, new_id, utc_now  # noqa: E402
from shared.kafka import KafkaPublisher, ListPublisher  # noqa: E402
from shared.postgres import temporary_database  # noqa: E402
from shared.settings import FerrySettings  # noqa: E402
from shared.stack import PROJECT_ROOT, Stack  # noqa: E402
from shared.topics import ensure_topics  # noqa: E402

SIGNATURE = Signature(inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, 64])],
                      outputs=[TensorSpec(name="probabilities", datatype="FP32", shape=[-1, 10])])  # fmt: skip


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def trained(model: str) -> ModelTrained:
    sha256 = uuid.uuid4().hex * 2
    return ModelTrained(
        model_name=model, request_id=new_id(), signature=SIGNATURE, dataset="sklearn:digits", split_id="s",
        artifact=ArtifactRef(uri=f"/bench/{sha256}.onnx", sha256=sha256, size_bytes=1000, format="onnx"),
        metrics={"val_accuracy": 0.9}, arch="mlp", hyperparameters=Hyperparameters(),
    )  # fmt: skip


def meta(event: ModelTrained) -> EventMeta:
    return EventMeta(event_id=new_id(), source="bench", time=utc_now(), traceparent=None, type_name=event.type_name)


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def timed(action: Callable[[], object], repeat: int) -> list[float]:
    """Milliseconds per call, after a warm-up of a tenth as many calls."""
    for _ in range(max(10, repeat // 10)):
        action()
    samples = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def report(name: str, samples: list[float], baseline: list[float]) -> None:
    p50, p99, base = statistics.median(samples), percentile(samples, 0.99), percentile(baseline, 0.99)
    print(f"  {name:<34} p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   p99/baseline {p99 / base:5.1f}x"
          f"   {'OK' if p99 < 20 else 'ABOVE 20 ms AIM'}")  # fmt: skip


@contextmanager
def stack_settings(args: argparse.Namespace) -> Iterator[FerrySettings]:
    """Settings on the given servers, or on a stack of our own (stopped afterwards)."""
    if args.database_url and (args.kafka or args.no_kafka):
        settings = FerrySettings(database_url=args.database_url, kafka_bootstrap=args.kafka or "127.0.0.1:9092",
                                 topic_prefix=f"bench{uuid.uuid4().hex[:6]}.")  # fmt: skip
        if not args.no_kafka:
            ensure_topics(settings)
        yield settings
        return
    settings = FerrySettings(home=PROJECT_ROOT / ".ferry-bench", kafka_bootstrap=f"127.0.0.1:{free_port()}",
                             kafka_controller_port=free_port(), postgres_port=free_port(),
                             cache_dir=PROJECT_ROOT / ".ferry" / "cache", topic_prefix="bench.")  # fmt: skip
    stack = Stack(settings)
    print("starting Kafka and PostgreSQL under .ferry-bench ...", flush=True)
    try:
        stack.up()
        yield settings.model_copy(update={"database_url": stack.database_url})
    finally:
        stack.down()


def bench_registrations(registry: Registry, count: int) -> float:
    """model.trained → version through the handler (one transaction each, outbox row included)."""
    baseline_engine = registry.engine
    started = time.perf_counter()
    for _ in range(count):
        with baseline_engine.begin() as connection:
            connection.execute(text("SELECT 1 FROM registered_models LIMIT 1"))
    baseline_rate = count / (time.perf_counter() - started)
    events = [trained("bench") for _ in range(count)]
    started = time.perf_counter()
    for event in events:
        handle_model_trained(event, meta(event), uow=registry.uow())
    rate = count / (time.perf_counter() - started)
    print(f"  handler path: {rate:8.0f} registrations/s   (bare transaction {baseline_rate:.0f}/s, "
          f"ratio {rate / baseline_rate:.2f})   {'OK' if rate >= 300 else 'BELOW 300/s AIM'}")  # fmt: skip
    return rate


def fill_versions(registry: Registry, total: int) -> None:
    """Bulk-insert versions until the model has ``total`` (the handler path is measured separately)."""
    with registry.session_factory() as session, session.begin():
        model = session.query(RegisteredModel).filter_by(name="bench").one()
        rows = []
        for number in range(model.latest_version + 1, total + 1):
            version = version_from_event(trained("bench"), meta(trained("bench")))
            version.model_id, version.number = model.id, number
            rows.append({column.key: getattr(version, column.key) for column in ModelVersion.__table__.columns
                         if column.key != "id"})  # fmt: skip
        if rows:
            session.execute(insert(ModelVersion), rows)
        model.latest_version = total


def serve(settings: RegistrySettings, port: int) -> None:
    """The API alone, in its own process (the client must not share its GIL)."""
    registry = bootstrap(settings, migrate=False, publisher=ListPublisher())
    app = create_app(settings, registry.api_deps())
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off")


def bench_reads(registry: Registry, total: int, requests: int) -> None:
    port = free_port()
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(registry.settings, port), daemon=True)
    server.start()
    base = f"http://127.0.0.1:{port}/api/v1/models/bench"
    try:
        with httpx.Client(timeout=10) as client:
            wait_until_up(client, f"http://127.0.0.1:{port}/healthz")
            baseline = timed(lambda: client.get(f"http://127.0.0.1:{port}/healthz"), requests)
            page = timed(lambda: client.get(f"{base}/versions", params={"limit": 50}).raise_for_status(), requests)
            cursor = client.get(f"{base}/versions", params={"limit": 50}).json()["next_cursor"]
            deep = timed(lambda: client.get(f"{base}/versions", params={"limit": 50, "cursor": cursor}), requests)
            one = timed(lambda: client.get(f"{base}/versions/{random.randint(1, total)}").raise_for_status(), requests)
    finally:
        server.terminate()
        server.join(10)
    report("GET /healthz (baseline)", baseline, baseline)
    report("GET versions?limit=50 (first page)", page, baseline)
    report("GET versions?limit=50&cursor=...", deep, baseline)
    report("GET versions/{n}", one, baseline)


def wait_until_up(client: httpx.Client, url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if client.get(url).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"the API did not come up at {url}")


def bench_end_to_end(registry: Registry, count: int) -> None:
    """model.trained published to Kafka first, then consumed: time until every version is announced."""
    publisher = KafkaPublisher(registry.settings.ferry, source="bench")
    for _ in range(count):
        publisher.publish(trained("e2e"), wait=False)
    publisher.flush()
    publisher.close()
    loop, dlq = build_consumer_loop(registry)
    registry.stop.clear()
    threads = [threading.Thread(target=loop.run, daemon=True), threading.Thread(target=registry.relay.run, daemon=True)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    while registry.relay.published < count and time.perf_counter() - started < 300:
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    registry.stop.set()
    for thread in threads:
        thread.join(15)
    dlq.close()
    rate = registry.relay.published / elapsed
    print(
        f"  end to end: {count} model.trained → versions → model.registered acked in {elapsed:.1f}s: "
        f"{rate:.0f}/s (includes the consumer group join)   {'OK' if rate >= 300 else 'BELOW 300/s AIM'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--registrations", type=int, default=2_000)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--no-kafka", action="store_true", help="skip the end-to-end run through Kafka")
    parser.add_argument("--database-url")
    parser.add_argument("--kafka", help="bootstrap servers of a running broker")
    args = parser.parse_args()
    with stack_settings(args) as ferry, temporary_database(str(ferry.database_url), prefix="registry_bench") as url:
        settings = RegistrySettings(ferry=ferry.model_copy(update={"database_url": url}), api_token=SecretStr("bench"))
        registry = bootstrap(settings, publisher=ListPublisher() if args.no_kafka else None)
        try:
            print(f"registrations ({args.registrations}, one at a time):")
            bench_registrations(registry, args.registrations)
            fill_versions(registry, args.versions)
            print(f"reads with {args.versions} versions stored ({args.requests} requests each, uvicorn on loopback):")
            bench_reads(registry, args.versions, args.requests)
            if not args.no_kafka:
                bench_end_to_end(registry, args.registrations)
        finally:
            registry.close()


if __name__ == "__main__":
    main()
