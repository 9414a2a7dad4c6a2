"""``GET /api/v1/models/{name}/drift``: a model's input drift per version and per feature, as last measured."""

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path
from pydantic import BaseModel

from services.monitor.domain.input_drift import FEATURE_P_DRIFT, FEATURE_PSI_DRIFT, InputDrift
from services.monitor.input_drift import InputDriftTracker
from shared.events import MODEL_NAME_PATTERN


class FeatureDriftOut(BaseModel):
    feature: str
    """The feature's position in a row of the flattened input."""
    psi: float
    p_value: float
    drifted: bool
    live_counts: list[int]
    reference_counts: list[int]


class VersionDriftOut(BaseModel):
    version: str
    rows: int
    score: float
    """The share of the reference's features that drift."""
    drifted_features: int
    features: list[FeatureDriftOut]


class ModelDriftOut(BaseModel):
    model: str
    psi_threshold: float
    p_value_threshold: float
    versions: list[VersionDriftOut]


def _version_out(drift: InputDrift) -> VersionDriftOut:
    features = [
        FeatureDriftOut(
            feature=f.feature,
            psi=f.psi,
            p_value=f.p_value,
            drifted=f.drifted,
            live_counts=list(f.live_counts),
            reference_counts=list(f.reference_counts),
        )
        for f in drift.features
    ]
    drifted = sum(f.drifted for f in features)
    return VersionDriftOut(
        version=drift.version, rows=drift.rows, score=drift.score, drifted_features=drifted, features=features
    )


def drift_router(tracker: InputDriftTracker) -> APIRouter:
    """The input drift route over the tracker's last measurement."""
    router = APIRouter()

    @router.get(
        "/api/v1/models/{name}/drift",
        summary="Input drift per version and per feature: PSI and the chi-square p-value against the training split",
        responses={404: {"description": "no measured inputs of this model (none logged, or no reference yet)"}},
    )
    def model_drift(name: Annotated[str, Path(pattern=MODEL_NAME_PATTERN)]) -> ModelDriftOut:
        found = sorted(
            (drift for (model, _), drift in tracker.latest().items() if model == name), key=lambda d: int(d.version)
        )
        if not found:
            raise HTTPException(404, f"no input drift measured for model {name!r}: no logged inputs or no reference")
        return ModelDriftOut(
            model=name,
            psi_threshold=FEATURE_PSI_DRIFT,
            p_value_threshold=FEATURE_P_DRIFT,
            versions=[_version_out(drift) for drift in found],
        )

    return router
