"""The evaluator's reading of the registry (its RegistryReader), through the one registry client.

The registry's bodies become the evaluator's own records (``domain/records.py``), the few fields its rules
read; a model or version the registry does not know is None (or nothing). The client's errors pass through:
RegistryUnavailable is a TransientError (the consumer loop retries the event, the bake thread looks again
later), any other refusal a PermanentError.
"""

from __future__ import annotations

from services.evaluator.domain.records import DeploymentRecord, EvaluationRecord, HistoryRecord, VersionRecord
from services.evaluator.domain.slices import SliceSpec
from shared.registry_client import RegistryClient
from shared.registry_errors import RegistryNotFound
from shared.registry_models import DeploymentOut, EvaluationOut, HistoryEntryOut, VersionOut

PAGE = 200


class RegistryRecords:
    """A RegistryReader over a RegistryClient."""

    def __init__(self, client: RegistryClient) -> None:
        self._client = client

    def close(self) -> None:
        self._client.close()

    def version(self, model_name: str, version: int) -> VersionRecord | None:
        try:
            return version_record(self._client.version(model_name, version))
        except RegistryNotFound:
            return None

    def deployment(self, model_name: str) -> DeploymentRecord | None:
        try:
            return deployment_record(self._client.deployment(model_name))
        except RegistryNotFound:
            return None

    def history(self, model_name: str, *, limit: int = PAGE) -> list[HistoryRecord]:
        """The newest ``limit`` deployment changes, newest first."""
        entries = self._client.history(model_name, page_size=min(limit, PAGE))
        try:
            return [history_record(entry) for _, entry in zip(range(limit), entries, strict=False)]
        except RegistryNotFound:
            return []

    def evaluations(self, model_name: str, version: int) -> list[EvaluationRecord]:
        try:
            return [evaluation_record(item) for item in self._client.evaluations(model_name, version, limit=PAGE)]
        except RegistryNotFound:
            return []

    def model_names(self) -> list[str]:
        """Every registered model's name, through the pages."""
        return [model.name for model in self._client.models()]


def version_record(version: VersionOut) -> VersionRecord:
    return VersionRecord(
        model_name=version.model_name,
        version=version.version,
        status=version.status,
        artifact=version.artifact,
        signature=version.signature,
        dataset=version.dataset,
        split_id=version.split_id,
        compression=version.compression,
        slices=tuple(SliceSpec(item.name, item.feature, item.min, item.max) for item in version.slices),
        arch=version.arch,
        hyperparameters=version.hyperparameters,
        training_request_id=version.training_request_id,
    )


def deployment_record(deployment: DeploymentOut) -> DeploymentRecord:
    return DeploymentRecord(
        champion=deployment.champion,
        challenger=deployment.challenger,
        canary_weight=deployment.canary_weight,
        revision=deployment.revision,
    )


def history_record(entry: HistoryEntryOut) -> HistoryRecord:
    return HistoryRecord(
        revision=entry.revision,
        action=entry.action,
        from_champion=entry.from_champion,
        to_champion=entry.to_champion,
        from_challenger=entry.from_challenger,
        to_challenger=entry.to_challenger,
        to_canary_weight=entry.to_canary_weight,
        actor=entry.actor,
        reason=entry.reason,
        created_at=entry.created_at,
    )


def evaluation_record(evaluation: EvaluationOut) -> EvaluationRecord:
    return EvaluationRecord(
        candidate_version=evaluation.candidate_version,
        decision=evaluation.decision,
        stage=evaluation.stage,
        actor=evaluation.actor,
        source_event_id=evaluation.source_event_id,
    )
