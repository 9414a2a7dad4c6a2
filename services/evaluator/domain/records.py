"""Plain records of what the evaluator reads from the registry (its REST API): versions, the
deployment and its history, evaluations. The adapters build them; the domain decides on them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.evaluator.domain.slices import SliceSpec
from shared.events import ArtifactRef, Signature

OPEN_STATUSES = ("registered", "evaluating")
"""Statuses of a version that still waits for the evaluator's judgement."""


@dataclass(frozen=True)
class VersionRecord:
    model_name: str
    version: int
    status: str
    artifact: ArtifactRef
    signature: Signature
    dataset: str
    split_id: str
    compression: Mapping[str, Any] = field(default_factory=dict)
    slices: tuple[SliceSpec, ...] = ()
    """The named feature ranges its training request asked to guard."""
    arch: str = "mlp"
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)
    training_request_id: str | None = None
    """Its recipe (arch, hyper-parameters) and the request that trained it: what a retraining repeats."""

    @property
    def compressed(self) -> bool:
        """Quantized, pruned or distilled, or a format other than plain ONNX."""
        knobs = ("quantize", "prune", "distill_from")
        return self.artifact.format != "onnx" or any(self.compression.get(knob) for knob in knobs)


@dataclass(frozen=True)
class DeploymentRecord:
    champion: int | None
    challenger: int | None
    canary_weight: float
    revision: int


@dataclass(frozen=True)
class HistoryRecord:
    revision: int
    action: str
    from_champion: int | None
    to_champion: int | None
    from_challenger: int | None
    to_challenger: int | None
    to_canary_weight: float
    actor: str
    reason: str
    created_at: datetime


@dataclass(frozen=True)
class EvaluationRecord:
    candidate_version: int
    decision: str
    stage: str | None
    actor: str
    source_event_id: str | None
