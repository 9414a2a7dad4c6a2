"""The evaluator's handlers with an in-memory registry, a list publisher and a real folder store holding
small real ONNX models."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import pytest
from evaluator_onnx import fitted_digits, random_digits

from services.evaluator.adapters.artifact_store import ModelLoader
from services.evaluator.domain.records import DeploymentRecord, EvaluationRecord, HistoryRecord, VersionRecord
from services.evaluator.domain.rollout import Bake, BakeBook
from services.evaluator.entrypoints.bakes import BakeRunner
from services.evaluator.handlers import (
    EvaluatorDeps,
    Rollout,
    complete_bake,
    handle_alert,
    handle_model_registered,
    resync_bakes,
)
from shared.artifacts import ArtifactStore
from shared.datasets import load_dataset, split
from shared.envelope import EventMeta
from shared.errors import PermanentError, TransientError
from shared.events import AlertChanged, ArtifactRef, ModelDecided, ModelRegistered, utc_now
from shared.kafka import ListPublisher
from shared.onnx import open_session, signature_of

SPLIT_ID = split(load_dataset("sklearn:digits")).split_id
NOW = 1_800_000_000.0


@dataclass
class FakeRegistry:
    """The registry's REST view, in memory."""

    versions: dict[int, VersionRecord] = field(default_factory=dict)
    deployment_record: DeploymentRecord | None = None
    history_records: list[HistoryRecord] = field(default_factory=list)
    evaluation_records: dict[int, list[EvaluationRecord]] = field(default_factory=dict)

    def version(self, model_name: str, version: int) -> VersionRecord | None:
        return self.versions.get(version)

    def deployment(self, model_name: str) -> DeploymentRecord | None:
        return self.deployment_record

    def history(self, model_name: str, *, limit: int = 200) -> list[HistoryRecord]:
        return self.history_records[:limit]

    def evaluations(self, model_name: str, version: int) -> list[EvaluationRecord]:
        return self.evaluation_records.get(version, [])

    def model_names(self) -> list[str]:
        return ["digits"] if self.versions else []


@pytest.fixture(scope="module")
def models() -> dict[str, bytes]:
    return {
        "good": fitted_digits(),
        "fair": fitted_digits(regularisation=0.05),
        "weak": random_digits(),
        "renamed": fitted_digits(input_name="features"),
    }


@pytest.fixture
def store(tmp_path: Path) -> ArtifactStore:
    return ArtifactStore(str(tmp_path / "artifacts"))


def register(registry: FakeRegistry, store: ArtifactStore, number: int, data: bytes, **changes: str) -> VersionRecord:
    uri, sha256, size = store.put_bytes(data)
    record = VersionRecord(
        model_name="digits",
        version=number,
        status=changes.get("status", "registered"),
        artifact=ArtifactRef(uri=uri, sha256=sha256, size_bytes=size, format=changes.get("format", "onnx")),
        signature=signature_of(open_session(data)),
        dataset="sklearn:digits",
        split_id=changes.get("split_id", SPLIT_ID),
    )
    registry.versions[number] = record
    return record


def announced(record: VersionRecord) -> ModelRegistered:
    return ModelRegistered(
        model_name="digits",
        version=record.version,
        artifact=record.artifact,
        signature=record.signature,
        dataset=record.dataset,
        split_id=record.split_id,
    )


def meta(event_id: str = "e1") -> EventMeta:
    return EventMeta(event_id=event_id, source="test", time=utc_now(), traceparent=None, type_name="t")


@pytest.fixture
def registry() -> FakeRegistry:
    return FakeRegistry()


@pytest.fixture
def published() -> ListPublisher:
    return ListPublisher()


@pytest.fixture
def deps(registry: FakeRegistry, store: ArtifactStore, published: ListPublisher) -> EvaluatorDeps:
    return EvaluatorDeps(
        registry=registry,
        loader=ModelLoader(store),
        publish=published.publish,
        rollout=Rollout(bake_s=60, rollback_window_s=600),
        latency_runs=30,
        clock=lambda: NOW,
    )


def with_champion(registry: FakeRegistry, store: ArtifactStore, data: bytes) -> None:
    register(registry, store, 1, data, status="champion")
    registry.deployment_record = DeploymentRecord(champion=1, challenger=None, canary_weight=0.0, revision=1)


def test_a_first_version_is_promoted_to_champion_with_its_report(
    deps: EvaluatorDeps, registry: FakeRegistry, store: ArtifactStore, published: ListPublisher, models: dict
) -> None:
    record = register(registry, store, 1, models["good"])
    verdict = handle_model_registered(announced(record), meta(), deps=deps)
    assert verdict is not None and verdict.stage == "champion"
    [decided] = published.of_type(ModelDecided)
    assert (decided.decision, decided.stage, decided.version, decided.baseline_version) == (
        "promote",
        "champion",
        1,
        None,
    )
    assert decided.metrics["accuracy"] > 0.9 and decided.report["champion"] is None
    assert decided.report["candidate"]["prediction_distribution"].keys() == {str(k) for k in range(10)}
    json.dumps(decided.report, allow_nan=False)
    assert deps.bakes.pending() == []  # a first champion has no canary to bake


def test_a_better_candidate_becomes_a_canary_and_its_bake_is_booked(
    deps: EvaluatorDeps, registry: FakeRegistry, store: ArtifactStore, published: ListPublisher, models: dict
) -> None:
    with_champion(registry, store, models["fair"])
    record = register(registry, store, 2, models["good"])
    handle_model_registered(announced(record), meta(), deps=deps)
    [decided] = published.of_type(ModelDecided)
    assert (decided.decision, decided.stage, decided.canary_weight, decided.baseline_version) == (
        "promote",
        "canary",
        0.1,
        1,
    )
    comparison = decided.report["comparison"]["accuracy"]
    assert comparison["difference"]["estimate"] > 0 and decided.report["champion"]["version"] == 1
    assert decided.baseline_metrics["accuracy"] < decided.metrics["accuracy"]
    assert [(bake.version, bake.due_at) for bake in deps.bakes.pending()] == [(2, NOW + 60)]


def test_a_weak_candidate_is_rejected_naming_the_metric(
    deps: EvaluatorDeps, registry: FakeRegistry, store: ArtifactStore, published: ListPublisher, models: dict
) -> None:
    with_champion(registry, store, models["good"])
    record = register(registry, store, 2, models["weak"])
    handle_model_registered(announced(record), meta(), deps=deps)
    [decided] = published.of_type(ModelDecided)
    assert decided.decision == "reject" and "accuracy" in decided.reason and "below the floor" in decided.reason
    assert deps.bakes.pending() == []


def test_a_signature_unlike_the_champions_is_rejected_before_scoring(
    deps: EvaluatorDeps, registry: FakeRegistry, store: ArtifactStore, published: ListPublisher, models: dict
) -> None:
    with_champion(registry, store, models["good"])
    record = register(registry, store, 2, models["renamed"])
    handle_model_registered(announced(record), meta(), deps=deps)
    [decided] = published.of_type(ModelDecided)
    assert decided.decision == "reject"
    assert "signature differs from the champion's: inputs features FP32 [-1, 64] (v2) vs input FP32" in decided.reason


def test_a_candidate_from_another_split_is_rejected_and_a_champion_from_one_is_rescored(
    deps: EvaluatorDeps, registry: FakeRegistry, store: ArtifactStore, published: ListPublisher, models: dict
) -> None:
    with_champion(registry, store, models["fair"])
    stale = register(registry, store, 2, models["good"], split_id="v1-old")
    handle_model_registered(announced(stale), meta(), deps=deps)
    assert "trained on split v1-old" in published.events[-1].reason  # type: ignore[attr-defined]
    registry.versions[2] = replace(stale, status="rejected")  # as the registry applies the decision
    registry.versions[1] = register(registry, store, 1, models["fair"], status="champion", split_id="v1-older")
    fresh = register(registry, store, 3, models["good"])
    handle_model_registered(announced(fresh), meta(), deps=deps)
    last = published.events[-1]
    assert isinstance(last, ModelDecided) and last.decision == "promote"
    assert last.report["split"]["rescored"] is True and "v1-older" in last.report["split"]["note"]


def test_a_corrupt_artifact_is_rejected_and_a_broken_champion_goes_to_the_dlq(
    deps: EvaluatorDeps, registry: FakeRegistry, store: ArtifactStore, published: ListPublisher, models: dict
) -> None:
    record = register(registry, store, 1, models["good"])
    Path(store.uri(record.artifact.sha256)).write_bytes(b"tampered")
    handle_model_registered(announced(record), meta(), deps=deps)
    assert "failed the store's verified read" in published.events[-1].reason  # type: ignore[attr-defined]
    with_champion(registry, store, models["good"])
    registry.versions[1] = replace(record, status="champion")  # the champion's bytes are the tampered ones
    candidate = register(registry, store, 2, models["fair"])
    with pytest.raises(PermanentError, match="the champion cannot be scored"):
        handle_model_registered(announced(candidate), meta(), deps=deps)


def test_a_version_judged_before_is_not_evaluated_again(
    deps: EvaluatorDeps, registry: FakeRegistry, store: ArtifactStore, published: ListPublisher, models: dict
) -> None:
    record = register(registry, store, 1, models["good"])
    registry.evaluation_records[1] = [EvaluationRecord(1, "promote", "champion", "evaluator", "x")]
    assert handle_model_registered(announced(record), meta(), deps=deps) is None
    registry.evaluation_records.clear()
    registry.versions[1] = register(registry, store, 1, models["good"], status="champion")
    assert handle_model_registered(announced(record), meta(), deps=deps) is None
    assert published.events == []


def test_the_same_registration_twice_yields_the_same_decision_id(
    deps: EvaluatorDeps, registry: FakeRegistry, store: ArtifactStore, published: ListPublisher, models: dict
) -> None:
    record = register(registry, store, 1, models["good"])
    handle_model_registered(announced(record), meta("first"), deps=deps)
    handle_model_registered(announced(record), meta("second"), deps=deps)  # the registry had not applied it yet
    assert len(set(published.event_ids)) == 1  # so the registry records one decision


def history_of_canary() -> list[HistoryRecord]:
    moment = datetime.fromtimestamp(NOW - 30, UTC)
    return [HistoryRecord(2, "promote", 1, 1, None, 2, 0.1, "evaluator", "canary", moment)]


def alert(version: int | None, **changes: object) -> AlertChanged:
    fields = {
        "model_name": "digits",
        "rule": "error_rate",
        "state": "fired",
        "version": version,
        "severity": "critical",
        "action": "rollback",
        "value": 0.4,
        "threshold": 0.05,
        **changes,
    }
    return AlertChanged(**fields)  # type: ignore[arg-type]


def test_a_critical_alert_during_the_bake_rolls_back_and_ends_the_bake(
    deps: EvaluatorDeps, registry: FakeRegistry, store: ArtifactStore, published: ListPublisher, models: dict
) -> None:
    with_champion(registry, store, models["good"])
    register(registry, store, 2, models["good"], status="challenger")
    registry.deployment_record = DeploymentRecord(champion=1, challenger=2, canary_weight=0.1, revision=2)
    registry.history_records = history_of_canary()
    deps.bakes.schedule(Bake("digits", 2, NOW + 30))
    handle_alert(alert(None, labels={"version": "2"}), meta("a1"), deps=deps)
    [decided] = published.of_type(ModelDecided)
    assert (decided.decision, decided.version, decided.baseline_version) == ("rollback", 2, 1)
    assert decided.report["alert"]["rule"] == "error_rate" and "value 0.4 vs threshold 0.05" in decided.reason
    assert deps.bakes.pending() == []
    assert complete_bake(Bake("digits", 2, NOW), deps=deps).action == "drop"  # nothing promotes it after


def test_alerts_that_ask_for_no_rollback_change_nothing(
    deps: EvaluatorDeps, registry: FakeRegistry, published: ListPublisher
) -> None:
    registry.deployment_record = DeploymentRecord(champion=1, challenger=2, canary_weight=0.1, revision=2)
    handle_alert(alert(2, action="notify"), meta(), deps=deps)
    handle_alert(alert(2, state="resolved"), meta(), deps=deps)
    handle_alert(alert(None), meta(), deps=deps)
    assert published.events == []


def test_a_due_bake_promotes_the_canary_and_a_resync_finds_it_again(
    deps: EvaluatorDeps, registry: FakeRegistry, store: ArtifactStore, published: ListPublisher, models: dict
) -> None:
    with_champion(registry, store, models["good"])
    register(registry, store, 2, models["good"], status="challenger")
    registry.deployment_record = DeploymentRecord(champion=1, challenger=2, canary_weight=0.1, revision=2)
    registry.history_records = history_of_canary()
    assert resync_bakes(deps=deps) == 1  # as after a restart: the bake comes back from the history
    [bake] = deps.bakes.pending()
    assert bake.due_at == NOW + 30
    assert complete_bake(bake, deps=deps).action == "wait"  # 30 s of its 60 s
    later = EvaluatorDeps(**{**deps.__dict__, "clock": lambda: NOW + 31})
    step = complete_bake(bake, deps=later)
    assert step.action == "promote"
    [decided] = published.of_type(ModelDecided)
    assert (decided.decision, decided.stage, decided.version, decided.baseline_version) == ("promote", "champion", 2, 1)
    assert decided.report["kind"] == "bake" and deps.bakes.pending() == []


def test_the_next_version_waits_until_the_registry_shows_the_last_decision(
    deps: EvaluatorDeps, registry: FakeRegistry, store: ArtifactStore, published: ListPublisher, models: dict
) -> None:
    first = register(registry, store, 1, models["good"])
    handle_model_registered(announced(first), meta(), deps=deps)  # v1 promoted; the registry has not applied it
    second = register(registry, store, 2, models["good"])
    with pytest.raises(TransientError, match="has not applied the decision on digits v1"):
        handle_model_registered(announced(second), meta(), deps=deps)  # it would meet no champion: a 2nd "first"
    with_champion(registry, store, models["good"])  # now the registry shows v1 as the champion
    handle_model_registered(announced(second), meta(), deps=deps)
    assert [event.stage for event in published.of_type(ModelDecided)] == ["champion", "canary"]


def test_of_two_replicas_only_the_leader_completes_a_bake_and_the_other_does_once_it_leads(
    deps: EvaluatorDeps, registry: FakeRegistry, store: ArtifactStore, published: ListPublisher, models: dict
) -> None:
    with_champion(registry, store, models["good"])
    register(registry, store, 2, models["good"], status="challenger")
    registry.deployment_record = DeploymentRecord(champion=1, challenger=2, canary_weight=0.1, revision=2)
    registry.history_records = history_of_canary()
    later = {"clock": lambda: NOW + 31}
    leader = {"name": "a"}
    runners = {
        name: BakeRunner(
            EvaluatorDeps(**{**deps.__dict__, **later, "bakes": BakeBook()}),
            stop=threading.Event(),
            resync_interval_s=1,
            leads=lambda name=name: leader["name"] == name,  # type: ignore[misc]
        )
        for name in "ab"
    }
    for runner in runners.values():
        assert runner.resync()  # both know the bake, from the registry
    leader["name"] = "nobody"  # the leader died before it was due
    assert [runner.complete_due() for runner in runners.values()] == [0, 0]
    leader["name"] = "b"
    assert [runner.complete_due() for runner in runners.values()] == [0, 1]
    [decided] = published.of_type(ModelDecided)
    assert (decided.decision, decided.stage, decided.version) == ("promote", "champion", 2)
    assert runners["b"].leading and not runners["a"].leading
