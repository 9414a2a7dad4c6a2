"""Retraining on an alert, and the judgement of a version retrained on a production window: the request and its
cooldown, the handler with an in-memory registry and a list publisher, and both held-out splits scored with
small real ONNX models under each production policy."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from evaluator_onnx import fitted_digits, softmax_classifier

from services.evaluator.adapters.artifact_store import ModelLoader
from services.evaluator.domain.policy import Policy, Verdict
from services.evaluator.domain.production import combined_verdict
from services.evaluator.domain.records import DeploymentRecord, VersionRecord
from services.evaluator.domain.retrain import champion_refusal, cooldown_refusal, retrain_request, retrain_request_id
from services.evaluator.domain.rollout import derived_event_id
from services.evaluator.handlers import EvaluatorDeps
from services.evaluator.retraining import Retraining, handle_retrain_alert
from services.evaluator.window_evaluation import evaluate_candidate
from shared.artifacts import ArtifactStore
from shared.datasets import Split, load_dataset, split
from shared.envelope import EventMeta
from shared.events import AlertChanged, ArtifactRef, TrainingRequested, utc_now
from shared.kafka import ListPublisher
from shared.onnx import open_session, signature_of
from shared.production_window import LabelledRow, write_window

DIGITS = tuple(str(digit) for digit in range(10))
SPLIT_ID = split(load_dataset("sklearn:digits")).split_id
FIRED = datetime(2026, 12, 5, 4, 0, tzinfo=UTC)


def alert(*, action: str = "retrain", state: str = "fired", rule: str = "InputDrift") -> AlertChanged:
    return AlertChanged(
        model_name="digits",
        rule=rule,
        state=state,  # type: ignore[arg-type]
        version=1,
        action=action,  # type: ignore[arg-type]
        value=0.6,
        threshold=0.3,
        since=FIRED,
    )


def meta(event_id: str) -> EventMeta:
    return EventMeta(event_id=event_id, source="test", time=utc_now(), traceparent=None, type_name="t")


def shifted(features: np.ndarray) -> np.ndarray:
    """The same digits moved one pixel right (the drift of the tests): each 8×8 image rolled a column."""
    images = np.asarray(features, dtype=np.float32).reshape(-1, 8, 8)
    moved = np.zeros_like(images)
    moved[:, :, 1:] = images[:, :, :-1]
    return moved.reshape(len(features), 64)


def window_rows(count: int = 400, seed: int = 5) -> list[LabelledRow]:
    digits = load_dataset("sklearn:digits")
    rows = np.random.default_rng(seed).choice(len(digits.labels), count, replace=False)
    moved = shifted(digits.features[rows])
    return [LabelledRow(tuple(float(v) for v in moved[i]), DIGITS[digits.labels[row]]) for i, row in enumerate(rows)]


@dataclass
class FakeRegistry:
    versions: dict[int, VersionRecord] = field(default_factory=dict)
    champion: int | None = None

    def version(self, model_name: str, version: int) -> VersionRecord | None:
        return self.versions.get(version)

    def deployment(self, model_name: str) -> DeploymentRecord | None:
        if self.champion is None:
            return None
        return DeploymentRecord(champion=self.champion, challenger=None, canary_weight=0.0, revision=1)

    def history(self, model_name: str, *, limit: int = 200) -> list:  # type: ignore[type-arg]
        return []

    def evaluations(self, model_name: str, version: int) -> list:  # type: ignore[type-arg]
        return []

    def model_names(self) -> list[str]:
        return ["digits"]


def register(
    registry: FakeRegistry, store: ArtifactStore, number: int, data: bytes, *, dataset: str, split_id: str
) -> VersionRecord:
    uri, sha256, size = store.put_bytes(data)
    record = VersionRecord(
        model_name="digits",
        version=number,
        status="registered",
        artifact=ArtifactRef(uri=uri, sha256=sha256, size_bytes=size, format="onnx"),
        signature=signature_of(open_session(data)).labelled(DIGITS),
        dataset=dataset,
        split_id=split_id,
        arch="mlp",
        hyperparameters={"epochs": 7, "hidden_sizes": [32], "seed": 3},
        training_request_id="first",
    )
    registry.versions[number] = record
    return record


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "datasets"


@pytest.fixture
def champion_model() -> bytes:
    return fitted_digits()


# --- the request and its cooldown -----------------------------------------------------------------


def test_a_retrain_request_repeats_the_champions_recipe_on_the_original_plus_the_window(
    store: ArtifactStore, champion_model: bytes
) -> None:
    champion = register(FakeRegistry(), store, 1, champion_model, dataset="sklearn:digits", split_id=SPLIT_ID)
    request = retrain_request(alert(), "alert-7", champion, 250)
    assert request.request_id == retrain_request_id("alert-7") != retrain_request_id("alert-8")
    assert request.dataset == "sklearn:digits+window:production/digits-alert-7.csv"
    assert (request.arch, request.hyperparameters.epochs, request.hyperparameters.hidden_sizes) == ("mlp", 7, [32])
    cause = request.cause
    assert cause is not None
    assert (cause.alert_id, cause.rule, cause.version, cause.fired_at, cause.window_rows) == (
        "alert-7",
        "InputDrift",
        1,
        FIRED,
        250,
    )
    assert (cause.champion_version, cause.original_dataset) == (1, "sklearn:digits")
    assert TrainingRequested.model_validate_json(request.model_dump_json()) == request  # the event round-trips


def test_the_cooldown_refuses_a_second_alert_and_a_redelivered_one(store: ArtifactStore, champion_model: bytes) -> None:
    champion = register(FakeRegistry(), store, 1, champion_model, dataset="sklearn:digits", split_id=SPLIT_ID)
    first = retrain_request(alert(), "alert-1", champion, 200)
    by_hand = TrainingRequested(model_name="digits", dataset="sklearn:digits")  # a user's run: no cooldown
    assert cooldown_refusal([by_hand], "alert-2", 3600) is None
    again = cooldown_refusal([by_hand, first], "alert-1", 3600)
    assert again is not None and "already asked" in again.reason
    other = cooldown_refusal([first], "alert-2", 3600)
    assert other is not None and "cooldown" in other.reason and "alert-1" in other.reason


def test_no_champion_or_a_regressor_champion_is_not_retrained(store: ArtifactStore, champion_model: bytes) -> None:
    assert champion_refusal(None) is not None
    champion = register(FakeRegistry(), store, 1, champion_model, dataset="sklearn:digits", split_id=SPLIT_ID)
    assert champion_refusal(champion) is None
    unnamed = replace(champion, signature=signature_of(open_session(champion_model)))
    refusal = champion_refusal(unnamed)
    assert refusal is not None and "named classes" in refusal.reason


# --- the handler ----------------------------------------------------------------------------------


@pytest.fixture
def retrain_deps(store: ArtifactStore, root: Path, champion_model: bytes) -> tuple[EvaluatorDeps, ListPublisher]:
    registry = FakeRegistry(champion=1)
    register(registry, store, 1, champion_model, dataset="sklearn:digits", split_id=SPLIT_ID)
    published = ListPublisher()
    reads: list[tuple[str, tuple[str, ...]]] = []

    def read_window(name: str, labels: object) -> list[LabelledRow]:
        reads.append((name, tuple(labels)))  # type: ignore[arg-type]
        return window_rows(150)

    retraining = Retraining(
        read_window=read_window,
        # What Kafka would answer: the requests published so far (the cooldown is kept there, not in memory).
        recent_retrains=lambda name: [e for e in published.of_type(TrainingRequested) if e.model_name == name],
        datasets_root=root,
        cooldown_s=3600,
        min_rows=100,
    )
    deps = EvaluatorDeps(registry=registry, loader=ModelLoader(store), publish=published.publish, retraining=retraining)
    return deps, published


def test_a_retrain_alert_writes_its_window_and_publishes_one_request_under_a_derived_id(
    retrain_deps: tuple[EvaluatorDeps, ListPublisher], root: Path
) -> None:
    deps, published = retrain_deps
    outcome = handle_retrain_alert(alert(), meta("alert-1"), deps=deps)
    assert outcome is not None and outcome.request is not None
    [request] = published.of_type(TrainingRequested)
    assert published.event_ids == [derived_event_id("digits", "alert-1", "retrain")]
    assert request.dataset == "sklearn:digits+window:production/digits-alert-1.csv"
    lines = (root / "production" / "digits-alert-1.csv").read_text().splitlines()
    assert len(lines) == 151 and lines[0].endswith(",f63,label")
    assert request.cause is not None and request.cause.window_rows == 150

    again = handle_retrain_alert(alert(), meta("alert-1"), deps=deps)  # redelivered
    second = handle_retrain_alert(alert(rule="OnlineAccuracyBelowEvaluation"), meta("alert-2"), deps=deps)
    assert again is not None and again.refusal is not None and "already asked" in again.refusal.reason
    assert second is not None and second.refusal is not None and "cooldown" in second.refusal.reason
    assert len(published.events) == 1 and not (root / "production" / "digits-alert-2.csv").exists()


def test_a_window_too_small_or_an_alert_that_is_not_a_fired_retrain_publishes_nothing(
    retrain_deps: tuple[EvaluatorDeps, ListPublisher],
) -> None:
    deps, published = retrain_deps
    assert handle_retrain_alert(alert(action="rollback"), meta("a"), deps=deps) is None
    assert handle_retrain_alert(alert(state="resolved"), meta("b"), deps=deps) is None
    assert deps.retraining is not None
    deps.retraining.min_rows = 500
    small = handle_retrain_alert(alert(), meta("c"), deps=deps)
    assert small is not None and small.refusal is not None and "150 labelled rows, 500 needed" in small.refusal.reason
    assert published.events == []


# --- the judgement on both held-out splits ---------------------------------------------------------


def fitted_on(features: np.ndarray, labels: np.ndarray) -> bytes:
    from sklearn.linear_model import LogisticRegression

    fitted = LogisticRegression(max_iter=400).fit(features / 16.0, labels)
    return softmax_classifier(fitted.coef_.T / 16.0, fitted.intercept_)


@pytest.fixture
def window_dataset(root: Path) -> tuple[str, Split]:
    write_window(root, "production/digits-a1.csv", window_rows())
    name = "sklearn:digits+window:production/digits-a1.csv"
    return name, split(load_dataset(name, root=root))


def judge(store: ArtifactStore, root: Path, champion: VersionRecord, candidate: VersionRecord, policy: str) -> object:
    return evaluate_candidate(
        candidate,
        champion,
        loader=ModelLoader(store),
        splits=lambda name, task=None: split(load_dataset(name, root=root, task=task)),
        # What is judged here is that both splits are scored and the policy combines them, not the margins.
        policy=Policy(bootstrap_samples=300, margin=0.1, slice_margin=0.3),
        latency_runs=20,
        production_policy=policy,  # type: ignore[arg-type]
    )


def test_a_version_retrained_on_the_window_is_judged_on_both_splits_and_promoted(
    store: ArtifactStore, root: Path, champion_model: bytes, window_dataset: tuple[str, Split]
) -> None:
    name, joined = window_dataset
    registry = FakeRegistry()
    champion = register(registry, store, 1, champion_model, dataset="sklearn:digits", split_id=SPLIT_ID)
    retrained = fitted_on(joined.train.features, joined.train.labels)
    candidate = register(registry, store, 2, retrained, dataset=name, split_id=joined.split_id)
    evaluation = judge(store, root, champion, candidate, "both")
    verdict, report = evaluation.verdict, evaluation.report  # type: ignore[attr-defined]
    assert (verdict.decision, verdict.stage) == ("promote", "canary"), verdict.reason
    production = report["production"]
    assert production["policy"] == "both" and production["window_rows"] == 400
    assert production["held_out_rows"] == len(split(joined.dataset.components[1]).test) > 50
    on_window = production["report"]["comparison"]["accuracy"]["difference"]
    assert on_window["low"] > 0  # the champion never saw shifted digits: the retrained one is better on them
    assert report["split"]["split_id"] == SPLIT_ID and production["report"]["split"]["rows"] > 50
    assert "production/digits-a1.csv" in verdict.reason and "original held-out split promote" in verdict.reason


def test_a_version_worse_on_the_window_is_rejected_under_both_and_promoted_under_original(
    store: ArtifactStore, root: Path, window_dataset: tuple[str, Split]
) -> None:
    name, joined = window_dataset
    registry = FakeRegistry()
    strong = fitted_on(joined.train.features, joined.train.labels)
    champion = register(registry, store, 1, strong, dataset=name, split_id=joined.split_id)
    candidate = register(registry, store, 2, fitted_digits(), dataset=name, split_id=joined.split_id)
    both = judge(store, root, champion, candidate, "both").verdict  # type: ignore[attr-defined]
    assert both.decision == "reject" and "production window's held-out part reject" in both.reason
    original = judge(store, root, champion, candidate, "original").verdict  # type: ignore[attr-defined]
    assert original.decision == "promote"


def test_a_candidate_whose_window_changed_since_training_is_refused(
    store: ArtifactStore, root: Path, champion_model: bytes, window_dataset: tuple[str, Split]
) -> None:
    name, joined = window_dataset
    registry = FakeRegistry()
    champion = register(registry, store, 1, champion_model, dataset="sklearn:digits", split_id=SPLIT_ID)
    candidate = register(registry, store, 2, champion_model, dataset=name, split_id="v1-not-this-one")
    verdict = judge(store, root, champion, candidate, "both").verdict  # type: ignore[attr-defined]
    assert verdict.decision == "reject" and "was trained on split v1-not-this-one" in verdict.reason


@pytest.mark.parametrize(
    ("original", "production", "policy", "decided"),
    [
        ("promote", "promote", "both", "promote"),
        ("promote", "reject", "both", "reject"),
        ("reject", "promote", "both", "reject"),
        ("reject", "promote", "production", "promote"),
        ("promote", "reject", "original", "promote"),
    ],
)
def test_the_production_policy_says_which_split_must_hold(
    original: str, production: str, policy: str, decided: str
) -> None:
    def verdict(decision: str, where: str) -> Verdict:
        if decision == "promote":
            return Verdict("promote", "non-inferior", f"ok on {where}", stage="canary", canary_weight=0.1)
        return Verdict("reject", "rejected", f"worse on {where}")

    found = combined_verdict(verdict(original, "A"), verdict(production, "B"), policy, "v2 retrained")  # type: ignore[arg-type]
    assert found.decision == decided
    assert found.reason.startswith("v2 retrained; policy ") and "on A" in found.reason and "on B" in found.reason
