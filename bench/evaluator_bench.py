"""Evaluator benchmark: one evaluation of digits beside ONNX Runtime alone, and the REST view of a report.

    .venv/bin/python bench/evaluator_bench.py [--repeats 7] [--requests 1000] [--database-url URL]

Trains two digits MLPs with the trainer's pipeline (256-128, 15 epochs, two seeds), then:
1. times ONNX Runtime alone scoring the held-out split with both models (the floor of any evaluation);
2. times one whole evaluation, as the handler runs it: load both artifacts through the verified store
   path, score, every metric, latency at batch 1 and 64, bootstrap intervals and McNemar, the policy,
   the report; each counted only when its report holds both models and the paired test;
3. stores that report through the registry's own decision handler (PostgreSQL: embedded, under
   .ferry-bench-evaluator, unless --database-url) and times GET .../versions/2/evaluations over HTTP
   (uvicorn on loopback, keep-alive client) beside GET /healthz, counting answers that carry the report.
Aims: the evaluation under 2 s, the REST view's p99 under 20 ms.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import uvicorn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.evaluator.adapters.artifact_store import ModelLoader  # noqa: E402
from services.evaluator.domain.policy import Policy  # noqa: E402
from services.evaluator.domain.records import VersionRecord  # noqa: E402
from services.evaluator.service import DatasetSplits, Evaluation, evaluate  # noqa: E402
from services.registry.adapters.memory import ListSender  # noqa: E402
from services.registry.bootstrap import bootstrap  # noqa: E402
from services.registry.entrypoints.api import create_app  # noqa: E402
from services.registry.handlers import handle_model_decided, handle_model_trained  # noqa: E402
from services.registry.settings import RegistrySettings  # noqa: E402
from services.trainer.service import run_training  # noqa: E402
from shared.artifacts import ArtifactStore  # noqa: E402
from shared.envelope import EventMeta  # noqa: E402
from shared.events import (  # noqa: E402
    ArtifactRef,
    Event,
    Hyperparameters,
    ModelDecided,
    ModelTrained,
    TrainingRequested,
    new_id,
    utc_now,
)
from shared.local.ports import free_port  # noqa: E402
from shared.local.postgres import EmbeddedPostgres, temporary_database  # noqa: E402
from shared.local.stack import PROJECT_ROOT  # noqa: E402
from shared.onnx import predict  # noqa: E402
from shared.settings import FerrySettings  # noqa: E402
from shared.waiting import wait_for  # noqa: E402

MODEL = "bench"


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def train_two(store: ArtifactStore, work: Path) -> list[tuple[VersionRecord, ModelTrained]]:
    """Two digits MLPs as the trainer makes them, stored; their version records and model.trained events."""
    import torch

    torch.set_num_threads(1)
    made = []
    for number, seed in ((1, 0), (2, 1)):
        request = TrainingRequested(
            model_name=MODEL, dataset="sklearn:digits", hyperparameters=Hyperparameters(epochs=15, seed=seed)
        )
        folder = work / str(number)
        folder.mkdir()
        trained = run_training(request, workdir=folder)
        uri, sha256, size = store.put_file(trained.path)
        artifact = ArtifactRef(uri=uri, sha256=sha256, size_bytes=size, format=trained.format)
        record = VersionRecord(
            MODEL, number, "registered", artifact, trained.signature, "sklearn:digits", trained.split_id
        )
        event = ModelTrained(
            model_name=MODEL,
            request_id=new_id(),
            artifact=artifact,
            signature=trained.signature,
            metrics=trained.metrics,
            dataset="sklearn:digits",
            split_id=trained.split_id,
            arch="mlp",
            hyperparameters=request.hyperparameters,
        )
        made.append((record, event))
    return made


def bench_ort_alone(loader: ModelLoader, records: list[VersionRecord], splits: DatasetSplits, repeats: int) -> float:
    """Seconds for ONNX Runtime to score the held-out split with both models (sessions already built)."""
    test = splits("sklearn:digits").test
    models = [loader.load(record.artifact) for record in records]
    for model in models:
        predict(model, test.features)
    samples = []
    for _ in range(repeats * 20):
        started = time.perf_counter()
        for model in models:
            predict(model, test.features)
        samples.append(time.perf_counter() - started)
    return statistics.median(samples)


def complete(evaluation: Evaluation) -> bool:
    """What one evaluation must produce to count: both models' sections and the paired test."""
    report = evaluation.report
    return bool(
        report.get("candidate", {}).get("metrics")
        and (report.get("champion") or {}).get("metrics")
        and report["comparison"].get("accuracy", {}).get("mcnemar")
        and evaluation.verdict.reason
    )


def bench_evaluation(
    loader: ModelLoader, records: list[VersionRecord], splits: DatasetSplits, repeats: int
) -> tuple[list[float], Evaluation]:
    champion, candidate = records
    samples, counted, last = [], 0, None
    for _ in range(repeats):
        started = time.perf_counter()
        last = evaluate(candidate, champion, loader=loader, splits=splits, policy=Policy(), latency_runs=1000)
        samples.append(time.perf_counter() - started)
        counted += complete(last)
    assert last is not None
    if counted != repeats:
        raise SystemExit(f"only {counted} of {repeats} evaluations produced a whole report: no timing printed")
    return samples, last


@contextmanager
def database(args: argparse.Namespace) -> Iterator[str]:
    if args.database_url:
        with temporary_database(args.database_url, prefix="evaluator_bench") as url:
            yield url
        return
    settings = FerrySettings(home=PROJECT_ROOT / ".ferry-bench-evaluator", postgres_port=free_port())
    server = EmbeddedPostgres(settings)
    print("starting PostgreSQL under .ferry-bench-evaluator ...", flush=True)
    server.start()
    try:
        with temporary_database(server.url, prefix="evaluator_bench") as url:
            yield url
    finally:
        server.stop()


def meta(event: Event) -> EventMeta:
    return EventMeta(event_id=new_id(), source="bench", time=utc_now(), traceparent=None, type_name=event.type_name)


def store_report(settings: RegistrySettings, trained: list[ModelTrained], evaluation: Evaluation) -> None:
    """Register both versions and record the evaluation through the registry's own handlers."""
    registry = bootstrap(settings, sender=ListSender())
    try:
        for event in trained:  # the registry verifies each artifact in its store (the bench's store)
            handle_model_trained(event, meta(event), uow=registry.uow(), artifacts=registry.artifacts)
        promote_first = ModelDecided(model_name=MODEL, version=1, decision="promote", stage="champion", reason="bench")
        handle_model_decided(promote_first, meta(promote_first), uow=registry.uow())
        verdict = evaluation.verdict
        decided = ModelDecided(
            model_name=MODEL,
            version=2,
            decision=verdict.decision,
            stage=verdict.stage,
            canary_weight=verdict.canary_weight,
            baseline_version=1,
            reason=verdict.reason,
            report=evaluation.report,
        )
        handle_model_decided(decided, meta(decided), uow=registry.uow())
    finally:
        registry.close()


def serve(settings: RegistrySettings, port: int) -> None:
    """The registry's API alone, in its own process (the client must not share its GIL)."""
    registry = bootstrap(settings, migrate=False, sender=ListSender())
    app = create_app(settings, registry.api_deps())
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, lifespan="off")


def timed(action: Callable[[], bool], repeat: int) -> tuple[list[float], int]:
    """Milliseconds per call after a warm-up, and how many calls answered as expected."""
    for _ in range(max(10, repeat // 10)):
        action()
    samples, answered = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        answered += action()
        samples.append((time.perf_counter() - started) * 1000)
    return samples, answered


def bench_rest(settings: RegistrySettings, requests: int) -> None:
    port = free_port()
    server = multiprocessing.get_context("spawn").Process(target=serve, args=(settings, port), daemon=True)
    server.start()
    base = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(timeout=10) as client:
            wait_for(lambda: _up(client, f"{base}/healthz"), what=f"the API at {base}", timeout_s=60)
            url = f"{base}/api/v1/models/{MODEL}/versions/2/evaluations"
            size = len(client.get(url).content)
            healthz, healthy = timed(lambda: client.get(f"{base}/healthz").status_code == 200, requests)
            version_url = f"{base}/api/v1/models/{MODEL}/versions/2"
            version, found = timed(lambda: client.get(version_url).status_code == 200, requests)
            view, served = timed(lambda: _has_report(client.get(url)), requests)
    finally:
        server.terminate()
        server.join(10)
    if healthy != requests or served != requests or found != requests:
        raise SystemExit(
            f"{served}/{requests} report views, {found}/{requests} version reads and {healthy}/{requests} "
            "health checks answered: no timing printed"
        )
    base_p99 = percentile(healthz, 0.99)
    print(f"  GET /healthz (baseline)         p50 {statistics.median(healthz):6.2f} ms   p99 {base_p99:6.2f} ms")
    print(
        f"  GET …/versions/2 (for scale)    p50 {statistics.median(version):6.2f} ms   "
        f"p99 {percentile(version, 0.99):6.2f} ms"
    )
    p50, p99 = statistics.median(view), percentile(view, 0.99)
    print(
        f"  GET …/versions/2/evaluations    p50 {p50:6.2f} ms   p99 {p99:6.2f} ms   p99/baseline "
        f"{p99 / base_p99:4.1f}x   ({size / 1024:.1f} KB, {served} answers with the report)   "
        f"{'OK' if p99 < 20 else 'ABOVE 20 ms AIM'}"
    )


def _up(client: httpx.Client, url: str) -> bool:
    try:
        return client.get(url).status_code == 200
    except httpx.HTTPError:
        return False


def _has_report(response: httpx.Response) -> bool:
    return response.status_code == 200 and b'"prediction_distribution"' in response.content


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=7, help="evaluations timed")
    parser.add_argument("--requests", type=int, default=1000, help="HTTP requests per timing")
    parser.add_argument("--database-url", help="a PostgreSQL server to use instead of an embedded one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        store = ArtifactStore(str(Path(scratch) / "artifacts"))
        print("training two digits MLPs (256-128, 15 epochs) ...", flush=True)
        made = train_two(store, Path(scratch))
        records = [record for record, _ in made]
        loader, splits = ModelLoader(store), DatasetSplits()
        splits("sklearn:digits")  # the split is cut once per process; the evaluations below reuse it
        ort_s = bench_ort_alone(loader, records, splits, args.repeats)
        samples, evaluation = bench_evaluation(loader, records, splits, args.repeats)
        median = statistics.median(samples)
        rows = evaluation.report["split"]["rows"]
        print(f"one evaluation of digits ({rows} held-out rows, both models, {args.repeats} timed, all complete):")
        print(f"  ONNX Runtime alone, both models score the split   {ort_s * 1000:8.2f} ms")
        print(
            f"  whole evaluation (median; best {min(samples) * 1000:.0f} ms)        {median * 1000:8.2f} ms   "
            f"{median / ort_s:5.0f}x ORT alone   {'OK' if median < 2 else 'ABOVE 2 s AIM'}"
        )
        timings = evaluation.report["timings_s"].items()
        print(f"  phases of the last one: {', '.join(f'{name} {seconds * 1000:.0f} ms' for name, seconds in timings)}")
        print(f"  decision: {evaluation.verdict.reason[:160]}…")
        with database(args) as url:  # the registry registers only artifacts in its store: the bench's
            settings = RegistrySettings(ferry=FerrySettings(database_url=url, artifact_root=store.root))
            store_report(settings, [event for _, event in made], evaluation)
            print(f"REST view of the stored report ({args.requests} requests, uvicorn on loopback):")
            bench_rest(settings, args.requests)


if __name__ == "__main__":
    main()
