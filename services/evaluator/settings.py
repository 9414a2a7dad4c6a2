"""The evaluator's settings: environment prefix ``FERRY_EVALUATOR_``, plus the shared ``FERRY_`` ones.

The promotion policy lives here too (``FERRY_EVALUATOR_MARGIN``, ``FERRY_EVALUATOR_BAKE_S``, ...): see
:meth:`EvaluatorSettings.policy` and the README's table of defaults.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.evaluator.domain.policy import Policy
from services.evaluator.domain.production import ProductionPolicy
from services.evaluator.domain.slices import SliceSpec
from shared.events import MAX_SLICES, MODEL_NAME_PATTERN, FeatureSlice
from shared.settings import FerrySettings


class SliceSetting(FeatureSlice):
    """A slice the evaluator guards for every model, or for ``model`` alone, as FERRY_EVALUATOR_SLICES spells it:
    ``[{"name": "petal-long", "feature": 2, "min": 4.5, "model": "iris"}]``."""

    model: str | None = Field(default=None, pattern=MODEL_NAME_PATTERN)

    def spec(self) -> SliceSpec:
        """The domain's slice."""
        return SliceSpec(self.name, self.feature, self.min, self.max, self.model)


class EvaluatorSettings(BaseSettings):
    """What an evaluator process needs; the stack's own settings are nested under ``ferry``."""

    model_config = SettingsConfigDict(env_prefix="FERRY_EVALUATOR_", extra="ignore", frozen=True, populate_by_name=True)

    ferry: FerrySettings = Field(default_factory=FerrySettings, description="The shared FERRY_ settings")
    host: str = Field(default="127.0.0.1", description="Interface of /healthz, /metrics and /api/v1/bakes")
    port: int = Field(default=8084, ge=0, le=65535, description="Port of the HTTP endpoints; 0 turns them off")
    registry_url: str = Field(
        default="http://127.0.0.1:8081",
        validation_alias=AliasChoices("FERRY_REGISTRY_URL", "FERRY_EVALUATOR_REGISTRY_URL", "registry_url"),
        description="Registry REST base URL: champions, deployments, history, evaluations",
    )
    registry_timeout_s: float = Field(default=10.0, gt=0, le=300)
    consumer_group: str = Field(default="evaluator", min_length=1)
    shutdown_timeout_s: float = Field(default=20.0, gt=0, description="How long a stop waits for each worker")

    # --- the policy (defaults documented in the README) ---
    primary_metric: Literal["accuracy", "f1_macro"] = "accuracy"
    min_accuracy: float = Field(default=0.80, ge=0, le=1, description="floor every version must clear")
    min_f1_macro: float = Field(default=0.75, ge=0, le=1, description="floor every version must clear")
    margin: float = Field(default=0.02, ge=0, le=1, description="non-inferiority margin on the primary metric")
    alpha: float = Field(default=0.05, gt=0, lt=0.5, description="significance level of the paired tests")
    confidence: float = Field(default=0.95, gt=0.5, lt=1, description="level of the bootstrap intervals")
    bootstrap_samples: int = Field(default=2000, ge=100, le=100_000)
    bootstrap_seed: int = Field(default=0, ge=0)
    max_latency_ratio: float = Field(default=1.5, ge=1, description="candidate p99 CPU time / champion's, each batch")
    latency_tolerance_ms: float = Field(default=2.0, ge=0, description="p99 differences below this are noise")
    max_latency_p99_ms: float = Field(default=100.0, gt=0, description="absolute p99 CPU-time limit at batch 1")
    max_size_ratio: float = Field(default=2.0, ge=1, description="candidate size / champion size")
    size_tolerance_bytes: int = Field(default=1 << 20, ge=0, description="size differences below this are ignored")
    max_size_bytes: int = Field(default=200 << 20, gt=0, description="absolute artifact size limit")
    compressed_min_gain: float = Field(
        default=0.10, gt=0, lt=1, description="the size or p50 CPU-time gain of a compressed model"
    )
    split_mismatch: Literal["rescore", "reject"] = Field(
        default="rescore", description="a champion trained on another split: re-score both, or reject"
    )
    regression_primary_metric: Literal["rmse", "mae"] = Field(
        default="rmse", description="a regressor's non-inferiority metric (paired bootstrap of per-row errors)"
    )
    min_r2: float = Field(default=0.2, ge=-1, le=1, description="floor every regressor's R² must clear")
    regression_margin: float = Field(
        default=0.05, ge=0, le=1, description="a regressor may be worse by this share of the champion's RMSE (MAE)"
    )
    slice_margin: float = Field(
        default=0.10, ge=0, le=1, description="a class's recall (a range's accuracy) may be this far below the champion"
    )
    slice_regression_margin: float = Field(
        default=0.10, ge=0, le=10, description="a range's RMSE may be above the champion's by this share of it"
    )
    slice_min_rows: int = Field(default=20, ge=1, description="a slice with fewer held-out rows is reported only")
    slices: list[SliceSetting] = Field(
        default_factory=list, max_length=MAX_SLICES, description="named feature ranges to guard, as JSON (SliceSetting)"
    )
    production_split_policy: ProductionPolicy = Field(
        default="both",
        description="a version retrained on a production window: which held-out split must hold "
        "(both, original, production); the other is reported",
    )
    latency_runs: int = Field(default=1000, ge=10, le=100_000, description="timed runs at batch 1 (half at 64)")

    # --- progressive rollout ---
    canary_weight: float = Field(default=0.1, gt=0, le=1, description="traffic share of a new canary")
    bake_s: float = Field(default=600.0, ge=0, description="how long a canary runs without alert")
    rollback_window_s: float = Field(default=3600.0, ge=0, description="alerts this long after promotion roll back")
    resync_interval_s: float = Field(default=30.0, gt=0, description="how often bakes are re-read from the registry")

    # --- retraining on a retrain alert ---
    retrain_cooldown_s: float = Field(default=3600.0, ge=0, description="at most one retrain per model this long")
    retrain_window_s: float = Field(
        default=3600.0, gt=0, description="how far back the labelled production window is read (logged + feedback)"
    )
    retrain_min_rows: int = Field(default=100, ge=1, description="fewer labelled production rows: no retrain")
    retrain_max_rows: int = Field(default=5000, ge=1, le=1_000_000, description="the newest rows a window keeps")

    def policy(self) -> Policy:
        """The promotion policy these settings describe."""
        return Policy(
            primary_metric=self.primary_metric,
            floors={"accuracy": self.min_accuracy, "f1_macro": self.min_f1_macro},
            margin=self.margin,
            alpha=self.alpha,
            confidence=self.confidence,
            bootstrap_samples=self.bootstrap_samples,
            bootstrap_seed=self.bootstrap_seed,
            max_latency_ratio=self.max_latency_ratio,
            latency_tolerance_ms=self.latency_tolerance_ms,
            max_latency_p99_ms=self.max_latency_p99_ms,
            max_size_ratio=self.max_size_ratio,
            size_tolerance_bytes=self.size_tolerance_bytes,
            max_size_bytes=self.max_size_bytes,
            compressed_min_gain=self.compressed_min_gain,
            split_mismatch=self.split_mismatch,
            canary_weight=self.canary_weight,
            regression_primary_metric=self.regression_primary_metric,
            regression_floors={"r2": self.min_r2},
            regression_margin=self.regression_margin,
            slice_margin=self.slice_margin,
            slice_regression_margin=self.slice_regression_margin,
            slice_min_rows=self.slice_min_rows,
            slices=tuple(setting.spec() for setting in self.slices),
        )
