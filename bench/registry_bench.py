"""Registry benchmark: read latency through HTTP with 10,000 versions stored, and registration rates.

    .venv/bin/python bench/registry_bench.py [--versions 10000] [--requests 2000] [--no-kafka]

Starts its own Kafka and PostgreSQL (shared.local.stack, home .ferry-bench, free ports) unless
--database-url and --kafka name running ones. Reads go through real uvicorn on loopback with a
keep-alive client; each timing is printed with its ratio to a baseline measured in the same run
(/healthz for reads, a bare one-row transaction for registrations). Aims: p99 < 20 ms, >= 300/s.

The end-to-end phase runs on a database and topics of its own (a clean outbox), with the consumer
group already joined: it publishes model.trained events, then times until every version made from
*those* events exists and every one of their model.registered rows is acked by the broker. It prints
where the time went: the handlers (the registry's ferry.registry.handler.duration), the rest of the consumer
loop (poll, decode, commit), and the relay's tail. A count that is off refuses to print a rate.
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
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
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from pydantic import SecretStr
from sqlalchemy import func, insert, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.registry.adapters.memory import ListSender  # noqa: E402
from services.registry.adapters.orm import ModelVersion, OutboxMessage, RegisteredModel  # noqa: E402
from services.registry.bootstrap import Registry, bootstrap, consumer_loop  # noqa: E402
from services.registry.entrypoints.api import create_app  # noqa: E402
from services.registry.entrypoints.consumer import TOPICS  # noqa: E402
from services.registry.handlers import handle_model_decided, handle_model_trained  # noqa: E402
from services.registry.service import version_from_event  # noqa: E402
from services.registry.settings import RegistrySettings  # noqa: E402
from shared.artifacts import ArtifactStore  # noqa: E402
from shared.envelope import EventMeta  # noqa: E402
from shared.events import (
    ArtifactRef,
    Hyperparameters,
    ModelDecided,
    ModelTrained,
    Signature,
    TensorSpec,
    new_id,
    utc_now,
)  # noqa: E402
from shared.kafka import KafkaPublisher, make_consumer  # noqa: E402
from shared.local.ports import free_port  # noqa: E402
from shared.local.postgres import temporary_database  # noqa: E402
from shared.local.stack import PROJECT_ROOT, Stack  # noqa: E402
from shared.settings import FerrySettings  # noqa: E402
from shared.topics import ensure_topics  # noqa: E402
from shared.waiting import wait_for  # noqa: E402

SIGNATURE = Signature(
    inputs=[TensorSpec(name="input", datatype="FP32", shape=[-1, 64])],
    outputs=[TensorSpec(name="probabilities", datatype="FP32", shape=[-1, 10])],
)


def trained(model: str, store: ArtifactStore) -> ModelTrained:
    """A model.trained event whose artifact (1,000 bytes) is in the store: the registry verifies it."""
    uri, sha256, size = store.put_bytes(uuid.uuid4().bytes * 62 + b"onnx-bench")
    return ModelTrained(
        model_name=model,
        request_id=new_id(),
        signature=SIGNATURE,
        dataset="sklearn:digits",
        split_id="s",
        artifact=ArtifactRef(uri=uri, sha256=sha256, size_bytes=size, format="onnx"),
        metrics={"val_accuracy": 0.9},
        arch="mlp",
        hyperparameters=Hyperparameters(),
    )


def meta(event: ModelTrained | ModelDecided) -> EventMeta:
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
    print(
        f"  {name:<34} p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   p99/baseline {p99 / base:5.1f}x"
        f"   {'OK' if p99 < 20 else 'ABOVE 20 ms AIM'}"
    )


@contextmanager
def stack_settings(args: argparse.Namespace) -> Iterator[FerrySettings]:
    """Settings on the given servers, or on a stack of our own (stopped afterwards)."""
    if args.database_url and (args.kafka or args.no_kafka):
        settings = FerrySettings(
            database_url=args.database_url,
            kafka_bootstrap=args.kafka or "127.0.0.1:9092",
            topic_prefix=f"bench{uuid.uuid4().hex[:6]}.",
        )
        if not args.no_kafka:
            ensure_topics(settings)
        yield settings
        return
    settings = FerrySettings(
        home=PROJECT_ROOT / ".ferry-bench",
        kafka_bootstrap=f"127.0.0.1:{free_port()}",
        kafka_controller_port=free_port(),
        postgres_port=free_port(),
        cache_dir=PROJECT_ROOT / ".ferry" / "cache",
        topic_prefix="bench.",
    )
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
    events = [trained("bench", registry.artifacts) for _ in range(count)]
    started = time.perf_counter()
    for event in events:
        handle_model_trained(event, meta(event), uow=registry.uow(), artifacts=registry.artifacts)
    rate = count / (time.perf_counter() - started)
    with registry.session_factory() as session:
        made = session.scalar(select(func.count()).select_from(ModelVersion)) or 0
    if made != count:
        print(f"  handler path: {made} versions for {count} events; no rate printed")
        return 0.0
    print(
        f"  handler path: {rate:8.0f} registrations/s   (bare transaction {baseline_rate:.0f}/s, "
        f"ratio {rate / baseline_rate:.2f}; includes verifying each artifact in the store)   "
        f"{'OK' if rate >= 300 else 'BELOW 300/s AIM'}"
    )
    return rate


def fill_versions(registry: Registry, total: int) -> None:
    """Bulk-insert versions until the model has ``total`` (the handler path is measured separately)."""
    with registry.session_factory() as session, session.begin():
        model = session.query(RegisteredModel).filter_by(name="bench").one()
        rows = []
        artifact = trained("bench", registry.artifacts)
        for number in range(model.latest_version + 1, total + 1):
            event = artifact.model_copy(update={"request_id": new_id()})  # one stored artifact, many requests
            version = version_from_event(event, meta(event), artifact_uri=event.artifact.uri)
            version.model_id, version.number = model.id, number
            rows.append(
                {
                    column.key: getattr(version, column.key)
                    for column in ModelVersion.__table__.columns
                    if column.key != "id"
                }
            )
        if rows:
            session.execute(insert(ModelVersion), rows)
        model.latest_version = total


def serve(settings: RegistrySettings, port: int) -> None:
    """The API alone, in its own process (the client must not share its GIL)."""
    registry = bootstrap(settings, migrate=False, sender=ListSender())
    app = create_app(settings, registry.api_deps())
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off")


def add_evaluation(registry: Registry) -> None:
    """One evaluation of version 1 with a report of the size the evaluator sends (both models, the test)."""
    classes = {str(index): 0.1 for index in range(10)}
    side = {
        "accuracy": 0.97,
        "f1_macro": 0.96,
        "log_loss": 0.1,
        "prediction_distribution": classes,
        "confusion": [[int(index == other) * 18 for other in range(10)] for index in range(10)],
    }
    report = {
        "candidate": side,
        "baseline": side,
        "test": {"name": "mcnemar", "p_value": 0.03, "n": 360},
        "policy": {"min_gain": 0.0, "alpha": 0.05},
    }
    decision = ModelDecided(
        model_name="bench",
        version=1,
        decision="reject",
        reason="bench",
        report=report,
        metrics={"accuracy": 0.97},
        baseline_metrics={"accuracy": 0.97},
    )
    handle_model_decided(decision, meta(decision), uow=registry.uow())


def bench_reads(registry: Registry, total: int, requests: int) -> None:
    add_evaluation(registry)
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
            evaluations = timed(lambda: client.get(f"{base}/versions/1/evaluations").raise_for_status(), requests)
            lineage = timed(lambda: client.get(f"{base}/versions/1/lineage").raise_for_status(), requests)
    finally:
        server.terminate()
        server.join(10)
    report("GET /healthz (baseline)", baseline, baseline)
    report("GET versions?limit=50 (first page)", page, baseline)
    report("GET versions?limit=50&cursor=...", deep, baseline)
    report("GET versions/{n}", one, baseline)
    report("GET versions/1/evaluations (report)", evaluations, baseline)
    report("GET versions/1/lineage", lineage, baseline)


def wait_until_up(client: httpx.Client, url: str, timeout_s: float = 60) -> None:
    def up() -> bool:
        try:
            return client.get(url).status_code == 200
        except httpx.HTTPError:
            return False

    wait_for(up, what=f"the API at {url}", timeout_s=timeout_s)


def record_metrics() -> InMemoryMetricReader:
    """Install a meter provider this program can read (the handlers' durations); call before bootstrap."""
    reader = InMemoryMetricReader()
    metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return reader


def handler_time(reader: InMemoryMetricReader) -> tuple[float, int]:
    """Seconds spent in the registry's handlers so far, and how many calls (ferry.registry.handler.duration)."""
    total_ms, calls = 0.0, 0
    data = reader.get_metrics_data()
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != "ferry.registry.handler.duration":
                    continue
                for point in metric.data.data_points:
                    if isinstance(point, HistogramDataPoint):
                        total_ms, calls = total_ms + point.sum, calls + point.count
    return total_ms / 1000, calls


def bench_end_to_end(ferry: FerrySettings, count: int, models: int, reader: InMemoryMetricReader) -> None:
    """model.trained → consumer loop → version → outbox → model.registered acked, on a clean database and topics.

    The consumer group has joined before the first event is published; the clock runs from the first
    publish until every model.registered row of these events is acked.
    """
    settings_ferry = ferry.model_copy(update={"topic_prefix": f"e2e{uuid.uuid4().hex[:6]}."})
    ensure_topics(settings_ferry)
    with temporary_database(str(ferry.database_url), prefix="registry_e2e") as url:
        settings = RegistrySettings(
            ferry=settings_ferry.model_copy(update={"database_url": url}),
            consumer_group=f"bench-{uuid.uuid4().hex[:6]}",
        )
        registry = bootstrap(settings)
        try:
            _run_end_to_end(registry, count, models, reader)
        finally:
            registry.close()


def _run_end_to_end(registry: Registry, count: int, models: int, reader: InMemoryMetricReader) -> None:
    events = [trained(f"e2e-{index % models}", registry.artifacts) for index in range(count)]
    request_ids = [event.request_id for event in events]
    consumer = make_consumer(registry.settings.ferry, registry.settings.consumer_group, TOPICS)
    loop, dlq = consumer_loop(registry, consumer=consumer)
    registry.stop.clear()
    threads = [threading.Thread(target=loop.run, daemon=True), threading.Thread(target=registry.relay.run, daemon=True)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 120
    while not consumer.assignment() and time.monotonic() < deadline:  # the group join is not what we measure
        time.sleep(0.05)
    handler_before_s, calls_before = handler_time(reader)
    publisher = KafkaPublisher(registry.settings.ferry, source="bench")
    started = time.perf_counter()
    for event in events:
        publisher.publish(event, wait=False)
    publisher.flush()
    registered_s = wait_count(registry, count, sent=False, started=started)
    announced_s = wait_count(registry, count, sent=True, started=started)
    registry.stop.set()
    for thread in threads:
        thread.join(15)
    publisher.close()
    dlq.close()
    handler_s, calls = handler_time(reader)
    made = made_from(registry, request_ids)
    if made != (count, count):
        print(f"  end to end: (versions, announcements) made from the {count} events: {made}; no rate printed")
        return
    report_end_to_end(count, models, registered_s, announced_s, handler_s - handler_before_s, calls - calls_before)


def wait_count(registry: Registry, count: int, *, sent: bool, started: float) -> float | None:
    """Seconds from ``started`` until the (clean) database holds ``count`` versions (or, with ``sent``, acked
    model.registered rows). Cheap counts while the clock runs; ``made_from`` checks whose they are after."""
    table = OutboxMessage if sent else ModelVersion
    query = select(func.count()).select_from(table)
    if sent:
        query = query.where(OutboxMessage.status == "sent", OutboxMessage.type_name == "ferry.model.registered.v1")
    while time.perf_counter() - started < 300:
        with registry.read_session_factory() as session:
            if (session.scalar(query) or 0) >= count:
                return time.perf_counter() - started
        time.sleep(0.05)
    return None


def made_from(registry: Registry, request_ids: list[str]) -> tuple[int, int]:
    """How many versions, and acked model.registered rows, were made from these requests (and nothing else)."""
    with registry.read_session_factory() as session:
        versions = set(session.scalars(select(ModelVersion.training_request_id)))
        announced = set(
            session.scalars(
                select(OutboxMessage.payload["training_request_id"].astext).where(
                    OutboxMessage.status == "sent", OutboxMessage.type_name == "ferry.model.registered.v1"
                )
            )
        )
    wanted = set(request_ids)

    def mine(found: set[str | None]) -> int:
        return len(found & wanted) if found <= wanted else -1  # -1: something else was made too

    return mine(versions), mine(announced)


def report_end_to_end(
    count: int, models: int, registered_s: float | None, announced_s: float | None, handler_s: float, handled: int
) -> None:
    label = f"  end to end, {count} events over {models} model(s):"
    if registered_s is None or announced_s is None:
        print(f"{label} not every event became an announced version within 300 s; no rate printed")
        return
    rate = count / announced_s
    loop_s = max(registered_s - handler_s, 0.0)
    print(
        f"{label} {rate:6.0f} registrations/s ({announced_s:.2f} s until the last model.registered was acked)   "
        f"{'OK' if rate >= 300 else 'BELOW 300/s AIM'}"
    )
    print(
        f"    all versions in the database after {registered_s:.2f} s; of the whole time: handlers "
        f"{100 * handler_s / announced_s:.0f}% ({handled} calls, {1000 * handler_s / max(handled, 1):.2f} ms each), "
        f"the rest of the consumer loop {100 * loop_s / announced_s:.0f}%, relay tail "
        f"{100 * (announced_s - registered_s) / announced_s:.0f}%"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--versions", type=int, default=10_000)
    parser.add_argument("--registrations", type=int, default=2_000)
    parser.add_argument("--requests", type=int, default=2_000)
    parser.add_argument("--no-kafka", action="store_true", help="skip the end-to-end run through Kafka")
    parser.add_argument("--e2e-models", default="1,8", help="end-to-end runs: how many models the events spread over")
    parser.add_argument("--database-url")
    parser.add_argument("--kafka", help="bootstrap servers of a running broker")
    args = parser.parse_args()
    reader = record_metrics()
    with stack_settings(args) as ferry, temporary_database(str(ferry.database_url), prefix="registry_bench") as url:
        token = SecretStr(uuid.uuid4().hex)
        settings = RegistrySettings(ferry=ferry.model_copy(update={"database_url": url}), api_token=token)
        registry = bootstrap(settings, sender=ListSender() if args.no_kafka else None)
        try:
            print(f"registrations ({args.registrations}, one at a time):")
            bench_registrations(registry, args.registrations)
            fill_versions(registry, args.versions)
            print(f"reads with {args.versions} versions stored ({args.requests} requests each, uvicorn on loopback):")
            bench_reads(registry, args.versions, args.requests)
        finally:
            registry.close()
        if not args.no_kafka:
            for models in (int(part) for part in args.e2e_models.split(",")):
                bench_end_to_end(ferry, args.registrations, models, reader)


if __name__ == "__main__":
    main()
