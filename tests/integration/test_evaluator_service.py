"""The evaluator against the real stack: Kafka, PostgreSQL and a registry process; the evaluator runs
in-process (its consumer loop and bake thread in threads), so each test can give it its own bake.

Models come from the trainer's own pipeline (tiny MLPs, trained once for the module) and from
tests/evaluator_onnx.py (a linear model whose input has another name), put in the store and announced
with ``model.trained`` as the trainer would.
"""

from __future__ import annotations

import os
import secrets
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
import numpy as np
import pytest
from evaluator_onnx import fitted_digits
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, log_loss, precision_score, recall_score
from support import ServiceProcess, wait_for
from test_registry_support import TopicReader

from services.evaluator.bootstrap import EvaluatorService, bootstrap
from services.evaluator.settings import EvaluatorSettings
from services.trainer.service import run_training
from shared.artifacts import ArtifactStore
from shared.datasets import load_dataset, split
from shared.events import (
    AlertChanged,
    ArtifactRef,
    Event,
    FeatureSlice,
    Hyperparameters,
    ModelTrained,
    TrainingRequested,
    new_id,
)
from shared.kafka import KafkaPublisher, make_producer
from shared.local.postgres import temporary_database
from shared.local.stack import Stack
from shared.onnx import open_session, predict, signature_of
from shared.settings import FerrySettings
from shared.topics import ensure_topics

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("one_torch_thread")]

HELD_OUT = split(load_dataset("sklearn:digits"))
REGISTRY_TOKEN = secrets.token_urlsafe(24)  # the registry refuses a placeholder token; an upload test writes with it


@dataclass(frozen=True)
class Artifact:
    data: bytes
    format: str = "onnx"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory, one_torch_thread: None) -> dict[str, Artifact]:
    """Trained once: a fair and a good MLP, a weak one (one epoch, two hidden units), and a renamed input."""
    plans = {
        "fair": Hyperparameters(epochs=6, hidden_sizes=[16], seed=3),
        "good": Hyperparameters(epochs=30, hidden_sizes=[96], seed=1),
        "weak": Hyperparameters(epochs=1, hidden_sizes=[2], seed=0),
    }
    made = {}
    for name, plan in plans.items():
        work = tmp_path_factory.mktemp(name)
        request = TrainingRequested(model_name="x", dataset="sklearn:digits", hyperparameters=plan)
        made[name] = Artifact(run_training(request, workdir=work).path.read_bytes())
    made["renamed"] = Artifact(fitted_digits(input_name="features"))
    return made


@pytest.fixture(scope="module")
def settings(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FerrySettings]:
    root = tmp_path_factory.mktemp("evaluator-stack")
    with temporary_database(stack.database_url, prefix="evaluator") as url:
        ferry = stack.settings.model_copy(
            update={
                "topic_prefix": f"e{uuid.uuid4().hex[:10]}.",
                "database_url": url,
                "home": root / "home",
                "artifact_root": str(root / "artifacts"),
            }
        )
        ensure_topics(ferry)
        yield ferry


@pytest.fixture(scope="module")
def registry_url(settings: FerrySettings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A registry process on this module's topics and database."""
    env = {
        **os.environ,
        "FERRY_HOME": str(settings.home),
        "FERRY_DATABASE_URL": str(settings.database_url),
        "FERRY_KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "FERRY_TOPIC_PREFIX": settings.topic_prefix,
        "FERRY_ARTIFACT_ROOT": settings.resolved_artifact_root,
        "FERRY_REGISTRY_RELAY_IDLE_S": "0.05",
        "FERRY_API_TOKEN": REGISTRY_TOKEN,
    }
    registry = ServiceProcess("registry", env, tmp_path_factory.mktemp("logs") / "registry.log").start()
    yield registry.url
    assert registry.stop() == 0, registry.tail()


@contextmanager
def evaluator(settings: FerrySettings, registry_url: str, **overrides: Any) -> Iterator[EvaluatorService]:
    """An evaluator wired like the real one, its loop and bake thread running for the block."""
    # Timings are not what these tests judge (the policy's latency rule has its unit tests): a wide
    # tolerance keeps a busy machine's scheduler from deciding them.
    options = {"bake_s": 3.0, "latency_runs": 50, "latency_tolerance_ms": 50.0, "resync_interval_s": 1.0, **overrides}
    service = bootstrap(EvaluatorSettings(ferry=settings, registry_url=registry_url, port=0, **options))
    threads = [
        threading.Thread(target=service.loop.run, daemon=True),
        threading.Thread(target=service.bakes.run, daemon=True),
    ]
    for thread in threads:
        thread.start()
    try:
        yield service
    finally:
        service.stop()
        for thread in threads:
            thread.join(30)
        service.close()


def publish(settings: FerrySettings, event: Event, event_id: str | None = None) -> None:
    publisher = KafkaPublisher(settings, source="tests")
    try:
        publisher.publish(event, event_id=event_id)
    finally:
        publisher.close()


def train(settings: FerrySettings, model: str, artifact: Artifact, slices: tuple[FeatureSlice, ...] = ()) -> None:
    """Put the artifact in the store and announce it as the trainer does (with its request's slices)."""
    uri, sha256, size = ArtifactStore(settings.resolved_artifact_root).put_bytes(artifact.data)
    publish(
        settings,
        ModelTrained(
            model_name=model,
            request_id=new_id(),
            artifact=ArtifactRef(uri=uri, sha256=sha256, size_bytes=size, format=artifact.format),
            signature=signature_of(open_session(artifact.data)),
            dataset="sklearn:digits",
            split_id=HELD_OUT.split_id,
            arch="mlp",
            hyperparameters=Hyperparameters(),
            slices=list(slices),
        ),
    )


class Api:
    def __init__(self, url: str, model: str) -> None:
        self.base = f"{url}/api/v1/models/{model}"

    def get(self, path: str = "") -> Any:
        response = httpx.get(f"{self.base}{path}", timeout=10)
        return response.json() if response.status_code == 200 else None

    def deployment(self) -> dict[str, Any]:
        return self.get("/deployment") or {}

    def evaluations(self, version: int) -> list[dict[str, Any]]:
        return self.get(f"/versions/{version}/evaluations") or []

    def history(self) -> list[dict[str, Any]]:
        return list(reversed((self.get("/deployment/history") or {"items": []})["items"]))  # oldest first


def settle(api: Api, predicate: Callable[[], Any], what: str, timeout_s: float = 60.0) -> None:
    """wait_for, with the model's deployment and evaluations in the failure message."""
    try:
        wait_for(predicate, timeout_s=timeout_s, what=what)
    except pytest.fail.Exception:
        latest = (api.get("") or {}).get("latest_version", 0)
        evaluations = {v: [(e["decision"], e["reason"]) for e in api.evaluations(v)] for v in range(1, latest + 1)}
        pytest.fail(f"{what}: not reached; deployment {api.deployment()}, evaluations {evaluations}")


def champion_is(api: Api, version: int, *, challenger: int | None = None) -> bool:
    deployment = api.deployment()
    return deployment.get("champion") == version and deployment.get("challenger") == challenger


def moment(entry: dict[str, Any]) -> float:
    return datetime.fromisoformat(entry["created_at"]).timestamp()


@pytest.fixture(scope="module")
def alpha(settings: FerrySettings, registry_url: str, artifacts: dict[str, Artifact]) -> Api:
    """Model alpha: a fair first version, then a good one that bakes for 4 s."""
    api = Api(registry_url, "alpha")
    with evaluator(settings, registry_url, bake_s=4.0):
        train(settings, "alpha", artifacts["fair"])
        settle(api, lambda: champion_is(api, 1), "v1 as the first champion")
        train(settings, "alpha", artifacts["good"])
        settle(api, lambda: champion_is(api, 1, challenger=2), "v2 as the canary")
        assert api.deployment()["canary_weight"] == pytest.approx(0.1)
        settle(api, lambda: champion_is(api, 2), "v2 promoted after its bake")
    return api


def test_a_good_candidate_becomes_the_canary_then_the_champion_after_the_bake(alpha: Api) -> None:
    history = alpha.history()
    assert [(e["action"], e["to_champion"], e["to_challenger"], e["actor"]) for e in history] == [
        ("promote", 1, None, "evaluator"),
        ("promote", 1, 2, "evaluator"),
        ("promote", 2, None, "evaluator"),
    ]
    assert moment(history[2]) - moment(history[1]) >= 4.0  # the bake ran its course
    [champion_step, canary_step] = alpha.evaluations(2)
    report = canary_step["report"]
    assert canary_step["decision"] == "promote" and canary_step["stage"] == "canary"
    assert report["candidate"]["version"] == 2 and report["champion"]["version"] == 1
    assert report["comparison"]["accuracy"]["difference"]["estimate"] > 0
    assert "accuracy" in canary_step["reason"] and "vs champion v1" in canary_step["reason"]
    assert champion_step["report"]["kind"] == "bake" and champion_step["stage"] == "champion"
    assert alpha.get("/versions/1")["status"] == "archived"


def test_the_report_matches_scikit_learn_on_the_same_predictions(alpha: Api) -> None:
    api = alpha  # its models are scored again here, independently of the evaluator
    [*_, canary_step] = api.evaluations(2)
    for side, version in (("candidate", 2), ("champion", 1)):
        section = canary_step["report"][side]
        data = httpx.get(f"{api.base}/versions/{version}/artifact", timeout=10).content
        probabilities = predict(open_session(data), HELD_OUT.test.features).astype(np.float64)
        probabilities /= probabilities.sum(axis=1, keepdims=True)
        labels, predictions = HELD_OUT.test.labels, probabilities.argmax(axis=1)
        metrics = section["metrics"]
        assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, predictions))
        assert metrics["precision_macro"] == pytest.approx(precision_score(labels, predictions, average="macro"))
        assert metrics["recall_macro"] == pytest.approx(recall_score(labels, predictions, average="macro"))
        assert metrics["f1_macro"] == pytest.approx(f1_score(labels, predictions, average="macro"))
        assert metrics["log_loss"] == pytest.approx(log_loss(labels, probabilities), rel=1e-6)
        assert section["confusion_matrix"] == confusion_matrix(labels, predictions).tolist()
        shares = np.bincount(predictions, minlength=10) / len(labels)
        assert section["prediction_distribution"] == pytest.approx({str(k): shares[k] for k in range(10)})
        assert section["size_bytes"] == len(data)
        assert section["latency_ms"]["latency_b1_p50_ms"] > 0 and section["latency_ms"]["latency_b64_p99_ms"] > 0
    assert canary_step["report"]["split"] == {
        "split_id": HELD_OUT.split_id,
        "part": "test",
        "rows": len(HELD_OUT.test),
        "rescored": False,
        "note": None,
    }


def test_a_weak_candidate_is_rejected_with_a_reason_naming_the_metric(
    settings: FerrySettings, registry_url: str, artifacts: dict[str, Artifact]
) -> None:
    api = Api(registry_url, "beta")
    with evaluator(settings, registry_url):
        train(settings, "beta", artifacts["good"])
        settle(api, lambda: champion_is(api, 1), "v1 as the first champion")
        train(settings, "beta", artifacts["weak"])
        settle(api, lambda: api.evaluations(2), "v2's evaluation")
    [evaluation] = api.evaluations(2)
    assert evaluation["decision"] == "reject"
    assert "accuracy" in evaluation["reason"] and "below the floor 0.80" in evaluation["reason"]
    assert "not shown non-inferior within the margin 0.02" in evaluation["reason"]
    assert api.get("/versions/2")["status"] == "rejected" and champion_is(api, 1)


def test_a_candidate_non_inferior_overall_but_much_worse_on_one_class_is_rejected_naming_it(
    settings: FerrySettings, registry_url: str
) -> None:
    api = Api(registry_url, "theta")
    # Class 3's logit lowered: its recall falls from 0.89 to 0.52 while accuracy overall falls by 4 points only,
    # inside this evaluator's overall margin of 0.10.
    champion, candidate = Artifact(fitted_digits()), Artifact(fitted_digits(bias_shift={3: -4.0}))
    ink = FeatureSlice(name="ink-centre", feature=36, min=8.0)  # the request's own slice: pixel (4, 4) inked
    with evaluator(settings, registry_url, margin=0.10):
        train(settings, "theta", champion)
        settle(api, lambda: champion_is(api, 1), "v1 as the first champion")
        train(settings, "theta", candidate, slices=(ink,))
        settle(api, lambda: api.evaluations(2), "v2's evaluation")
    [evaluation] = api.evaluations(2)
    report = evaluation["report"]
    assert report["comparison"]["accuracy"]["non_inferior"]
    assert evaluation["decision"] == "reject" and api.get("/versions/2")["status"] == "rejected"
    assert evaluation["reason"].startswith("reject v2: class '3' recall 0.5185 vs champion 0.8889 (difference -0.3704")
    assert "27 rows) is worse beyond the slice margin 0.1" in evaluation["reason"]
    slices = {found["name"]: found for found in report["slices"]}
    assert set(slices) == {*HELD_OUT.dataset.class_names, "ink-centre"}
    assert [name for name, found in slices.items() if found["worse"]] == ["3"]
    inked = HELD_OUT.test.features[:, 36] >= 8.0
    assert (slices["ink-centre"]["kind"], slices["ink-centre"]["rows"]) == ("range", int(inked.sum()))
    assert api.get("/versions/2")["slices"] == [{"name": "ink-centre", "feature": 36, "min": 8.0, "max": None}]
    assert champion_is(api, 1)


def test_an_incompatible_signature_is_rejected(
    settings: FerrySettings, registry_url: str, artifacts: dict[str, Artifact]
) -> None:
    api = Api(registry_url, "gamma")
    with evaluator(settings, registry_url):
        train(settings, "gamma", artifacts["good"])
        settle(api, lambda: champion_is(api, 1), "v1 as the first champion")
        train(settings, "gamma", artifacts["renamed"])
        settle(api, lambda: api.evaluations(2), "v2's evaluation")
    [evaluation] = api.evaluations(2)
    assert evaluation["decision"] == "reject"
    assert "signature differs from the champion's: inputs features FP32 [-1, 64] (v2)" in evaluation["reason"]


def test_a_critical_alert_during_the_bake_rolls_the_canary_back(
    settings: FerrySettings, registry_url: str, artifacts: dict[str, Artifact]
) -> None:
    api = Api(registry_url, "delta")
    with evaluator(settings, registry_url, bake_s=600.0) as service:
        train(settings, "delta", artifacts["fair"])
        settle(api, lambda: champion_is(api, 1), "v1 as the first champion")
        train(settings, "delta", artifacts["good"])
        settle(api, lambda: champion_is(api, 1, challenger=2), "v2 as the canary")
        assert [bake.version for bake in service.deps.bakes.pending()] == [2]
        publish(
            settings,
            AlertChanged(
                model_name="delta",
                rule="error_rate",
                state="fired",
                version=2,
                severity="critical",
                action="rollback",
                value=0.3,
                threshold=0.05,
            ),
        )
        settle(api, lambda: api.get("/versions/2")["status"] == "rolled_back", "v2 rolled back")
        assert service.deps.bakes.pending() == []
    assert champion_is(api, 1)
    last = api.history()[-1]
    assert (last["action"], last["from_challenger"], last["to_challenger"], last["actor"]) == (
        "rollback",
        2,
        None,
        "evaluator",
    )
    assert "rollback alert error_rate fired for canary v2 during its bake" in last["reason"]


def test_a_redelivered_registration_is_not_evaluated_twice(
    settings: FerrySettings, registry_url: str, artifacts: dict[str, Artifact]
) -> None:
    api = Api(registry_url, "epsilon")
    registered = TopicReader(settings, "model.registered")
    decided = TopicReader(settings, "model.decided")
    try:
        with evaluator(settings, registry_url):
            train(settings, "epsilon", artifacts["good"])
            settle(api, lambda: champion_is(api, 1), "v1 as the first champion")
            train(settings, "epsilon", artifacts["weak"])
            settle(api, lambda: api.evaluations(2), "v2's evaluation")
            [original] = _records(registered, "epsilon", 2)
            producer = make_producer(settings)
            for event_id in (None, b"a-new-id"):  # the same message again, then a copy under a new event id
                headers = [(k, event_id if k == "ce_id" and event_id else v) for k, v in original.headers]
                producer.send(original.topic, key=original.key, value=original.value, headers=headers).get(30)
            producer.close()
            train(settings, "epsilon", artifacts["weak"])  # v3, behind the copies on the same partition
            settle(api, lambda: api.evaluations(3), "v3's evaluation")
        assert len(api.evaluations(2)) == 1
        decisions = [item.event for item in decided.settle(2.0) if item.event.model_name == "epsilon"]
        assert sorted(event.version for event in decisions) == [1, 2, 3]  # type: ignore[attr-defined]
    finally:
        registered.close()
        decided.close()


def _records(reader: TopicReader, model: str, version: int) -> list[Any]:
    """The raw records of ``model.registered`` for one version."""
    from shared.envelope import decode

    wait_for(lambda: reader.read(1, timeout_s=1), timeout_s=30, what="model.registered records")
    reader.settle(1.0)
    found = []
    for record in reader.records:
        event = decode(record.headers, record.key, record.value).event
        if event.model_name == model and getattr(event, "version", None) == version:
            found.append(record)
    return found


def test_a_bake_survives_an_evaluator_restart(
    settings: FerrySettings, registry_url: str, artifacts: dict[str, Artifact]
) -> None:
    api = Api(registry_url, "zeta")
    with evaluator(settings, registry_url, bake_s=8.0):
        train(settings, "zeta", artifacts["fair"])
        settle(api, lambda: champion_is(api, 1), "v1 as the first champion")
        train(settings, "zeta", artifacts["good"])
        settle(api, lambda: champion_is(api, 1, challenger=2), "v2 as the canary")
    # The first evaluator is gone, and its memory with it: the second one reads the bake from the registry.
    with evaluator(settings, registry_url, bake_s=8.0) as second:
        wait_for(second.bakes.resynced.is_set, timeout_s=30, what="the bakes rebuilt")
        assert [
            (bake.model_name, bake.version) for bake in second.deps.bakes.pending() if bake.model_name == "zeta"
        ] == [("zeta", 2)]
        settle(api, lambda: champion_is(api, 2), "v2 promoted by the second evaluator")
    canary, promotion = api.history()[-2:]
    assert moment(promotion) - moment(canary) >= 8.0
