"""What a starting gateway serves: the highest revision per model from the replayed topic, and the
registry only as the fallback (for models the topic never named, or when the broker did not answer)."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from types import SimpleNamespace

from services.gateway.adapters.deployment_log import Replay, ReplayFirst, record_deployment
from services.gateway.domain import Deployment, VersionSpec, latest_per_model
from services.gateway.sample_models import classifier_signature
from shared.envelope import encode
from shared.events import ArtifactRef, DeployedVersion, DeploymentChanged
from shared.registry_errors import RegistryUnavailable

SIGNATURE = classifier_signature(8, 3)


def spec(version: int) -> VersionSpec:
    return VersionSpec(version, f"{version:064x}", 100 + version, SIGNATURE)


def deployment(model: str, revision: int, champion: int, challenger: int | None = None) -> Deployment:
    return Deployment(
        model, revision, spec(champion), spec(challenger) if challenger else None, canary_weight=0.25 * bool(challenger)
    )


def test_latest_per_model_keeps_the_highest_revision_whatever_the_order() -> None:
    events = [
        deployment("iris", 2, 2),
        deployment("digits", 1, 1),
        deployment("iris", 3, 2, challenger=3),
        deployment("iris", 1, 1),  # an older revision read later (two partitions' worth, a replayed copy)
        deployment("iris", 3, 1),  # a repeat of revision 3 changes nothing
        deployment("digits", 1, 1),
    ]
    latest = latest_per_model(events)
    assert latest == {"iris": deployment("iris", 3, 2, challenger=3), "digits": deployment("digits", 1, 1)}
    assert latest_per_model([]) == {}


@dataclass
class FakeRegistry:
    answer: list[Deployment]
    away: bool = False
    asked: list[set[str]] = field(default_factory=list)

    def deployments(self, skip: Collection[str] = ()) -> list[Deployment]:
        self.asked.append(set(skip))
        if self.away:
            raise RegistryUnavailable("registry away")
        return [d for d in self.answer if d.model_name not in skip]


def test_a_complete_replay_serves_without_the_registry_and_asks_it_only_about_other_models() -> None:
    replayed = {"iris": deployment("iris", 3, 2, challenger=3)}
    patient, quick = FakeRegistry([], away=True), FakeRegistry([], away=True)
    source = ReplayFirst(lambda: Replay(replayed, complete=True), patient, quick)
    assert source.deployments() == [replayed["iris"]]
    assert quick.asked == [{"iris"}] and patient.asked == []  # the quick budget, never the patient one

    quick = FakeRegistry([deployment("iris", 2, 2), deployment("digits", 4, 5)])
    source = ReplayFirst(lambda: Replay(replayed, complete=True), patient, quick)
    assert sorted(source.deployments(), key=lambda d: d.model_name) == [deployment("digits", 4, 5), replayed["iris"]]


def test_a_broker_that_did_not_answer_falls_back_to_the_patient_registry() -> None:
    partial = {"iris": deployment("iris", 5, 4)}
    patient, quick = FakeRegistry([deployment("iris", 4, 3), deployment("digits", 2, 1)]), FakeRegistry([])
    source = ReplayFirst(lambda: Replay(partial, complete=False), patient, quick)
    assert sorted(source.deployments(), key=lambda d: d.model_name) == [deployment("digits", 2, 1), partial["iris"]]
    assert patient.asked == [set()] and quick.asked == []


def test_a_replayed_record_becomes_the_whole_deployment_and_an_unreadable_one_none() -> None:
    artifact = ArtifactRef(uri="file:///elsewhere/ignored", sha256="ab" * 32, size_bytes=42, format="onnx")
    event = DeploymentChanged(
        model_name="iris",
        revision=7,
        champion=DeployedVersion(version=2, artifact=artifact, signature=SIGNATURE),
        challenger=DeployedVersion(version=3, artifact=artifact, signature=SIGNATURE),
        canary_weight=0.1,
        shadow=True,
    )
    message = encode(event, source="test/registry")
    record = SimpleNamespace(key=message.key, value=message.value, headers=message.headers)
    [found] = record_deployment(record)
    assert (found.model_name, found.revision, found.canary_weight, found.shadow) == ("iris", 7, 0.1, True)
    assert found.champion == VersionSpec(2, "ab" * 32, 42, SIGNATURE) and found.challenger is not None
    assert record_deployment(SimpleNamespace(key=b"iris", value=b"{}", headers=[])) == []
