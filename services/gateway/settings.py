"""The gateway's settings: environment prefix ``FERRY_GATEWAY_``, plus the shared ``FERRY_`` ones."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.gateway.domain import BatchConfig
from shared.credentials import parse_tokens_file
from shared.settings import FerrySettings


class BatchSettings(BaseModel):
    """Dynamic batching of one model (or the default for all)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_batch_size: int = Field(default=64, ge=1, le=4096, description="rows per session.run at most")
    max_delay_ms: float = Field(default=0.0, ge=0, le=1000, description="longest wait for a batch to fill")

    def config(self) -> BatchConfig:
        return BatchConfig(max_batch_size=self.max_batch_size, max_delay_ms=self.max_delay_ms)


class GatewaySettings(BaseSettings):
    """What a gateway process needs; the stack's own settings are nested under ``ferry``."""

    model_config = SettingsConfigDict(env_prefix="FERRY_GATEWAY_", extra="ignore", frozen=True, populate_by_name=True)

    ferry: FerrySettings = Field(default_factory=FerrySettings, description="The shared FERRY_ settings")
    host: str = Field(default="127.0.0.1", description="Interface the HTTP API listens on")
    port: int = Field(default=8080, ge=1, le=65535, description="Port of the HTTP API")
    grpc_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port of the gRPC API (OIP v2's GRPCInferenceService; Triton uses 8001); 0: no gRPC",
    )
    workers: int = Field(
        default=1, ge=1, le=64, description="Gateway processes on this port (each follows every change)"
    )
    registry_url: str = Field(
        default="http://127.0.0.1:8081",
        validation_alias=AliasChoices("FERRY_REGISTRY_URL", "FERRY_GATEWAY_REGISTRY_URL", "registry_url"),
        description="Registry REST base URL: the deployments loaded at start",
    )
    registry_timeout_s: float = Field(default=10.0, gt=0, le=300)
    consumer_group_prefix: str = Field(
        default="gateway",
        min_length=1,
        description="Each process reads every change in its own group <prefix>-<host>-<pid>",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto: CUDA when a GPU is there")
    inline_run_ms: float = Field(
        default=1.0, ge=0, le=1000, description="Runs shorter than this go on the event loop, longer on a thread"
    )
    ort_threads: int = Field(default=1, ge=1, le=256, description="ONNX Runtime intra-op threads per session")
    batching: BatchSettings = Field(default_factory=BatchSettings, description="Default dynamic batching")
    model_batching: dict[str, BatchSettings] = Field(
        default_factory=dict, description='Per model, as JSON: {"digits": {"max_batch_size": 32, "max_delay_ms": 2}}'
    )
    max_inflight: int = Field(default=512, ge=1, le=1_000_000, description="Bound on requests in flight (then 503)")
    shadow_share: float = Field(default=0.5, gt=0, le=1, description="Share of the bound shadow work may fill")
    canary_share: float = Field(default=0.8, gt=0, le=1, description="Share of the bound canary work may fill")
    rate_limit_rps: float = Field(default=0.0, ge=0, description="Requests a second per client; 0 turns limits off")
    rate_limit_burst: float = Field(default=0.0, ge=0, description="Bucket size; default twice the rate")
    api_key_header: str = Field(default="x-api-key", description="Header naming the client for rate limits")
    deadline_ms: float = Field(default=5000.0, gt=0, le=600_000, description="Longest a request may take (then 504)")
    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, description="Largest request body (then 413)")
    memory_budget_mb: float = Field(
        default=0.0, ge=0, description="Host memory for loaded versions' sessions; 0: no limit (see residency.py)"
    )
    gpu_memory_budget_mb: float = Field(
        default=0.0, ge=0, description="GPU memory for sessions on the CUDA provider; 0: no limit"
    )
    lazy_start: bool = Field(
        default=False,
        description="Ready once the deployments are known; load in the background up to the budget, and on demand",
    )
    load_concurrency: int = Field(default=4, ge=1, le=64, description="Version loads at once (on demand, at start)")
    protect_window_s: float = Field(
        default=60.0, ge=0, description="A model with traffic this recent keeps its champion and canary loaded longest"
    )
    load_retry_s: float = Field(
        default=5.0, gt=0, le=3600, description="After a failed load, requests get 503 this long before a retry"
    )
    session_overhead_kb: int = Field(
        default=192, ge=0, description="Memory counted per loaded session on top of its weights (budget.py)"
    )
    keep_previous: bool = Field(default=True, description="Keep the replaced champion loaded for fallback")
    drain_timeout_s: float = Field(default=30.0, gt=0, description="Wait for in-flight requests before a release")
    warmup_batch: bool = Field(default=True, description="Warm up at the largest batch size too")
    access_log: bool = Field(default=True, description="One log line per request: id, model, version, route")
    access_log_file: Path | None = Field(
        default=None, description="Where the access log goes; default <home>/logs/gateway-access.log"
    )
    access_log_max_bytes: int = Field(default=50_000_000, ge=10_000, description="Size at which it is rotated")
    access_log_backups: int = Field(default=3, ge=0, le=100, description="Rotated files kept (.1 is the newest)")
    trace_requests: bool | None = Field(
        default=None, description="A span per request; default: when OTEL_EXPORTER_OTLP_ENDPOINT is set"
    )
    admin_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("FERRY_GATEWAY_ADMIN_TOKEN", "admin_token"),
        description="Bearer token of the fault-injection admin API; the API is off while unset",
    )
    log_sample: float = Field(
        default=0.01, ge=0, le=1, description="Share of answered requests logged to inference.logged (0: none)"
    )
    log_sample_by_model: dict[str, Annotated[float, Field(ge=0, le=1)]] = Field(
        default_factory=dict, description='Per model share, as JSON: {"digits": 1.0}; others get log_sample'
    )
    log_queue_size: int = Field(
        default=10_000, ge=1, le=1_000_000, description="Records waiting to be sent at most (then dropped)"
    )
    log_linger_ms: int = Field(default=50, ge=0, le=10_000, description="The log producer's wait to fill a batch")
    log_batch_bytes: int = Field(default=256 * 1024, ge=1024, le=16 * 2**20, description="The log producer's batch")
    log_max_in_flight: int = Field(
        default=10_000, ge=1, le=1_000_000, description="Records sent and not yet acknowledged at most (then dropped)"
    )
    feedback_tokens_file: Path | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "FERRY_GATEWAY_FEEDBACK_TOKENS_FILE", "FERRY_REGISTRY_TOKENS_FILE", "feedback_tokens_file"
        ),
        description="'<user> <token>' lines that may POST feedback; default the registry's API tokens file",
    )
    startup_timeout_s: float = Field(
        default=120.0, gt=0, description="How long to wait for the registry at start when Kafka did not answer"
    )
    replay_timeout_s: float = Field(
        default=30.0, gt=0, le=3600, description="Longest read of deployment.changed to its end at start"
    )
    registry_fallback_s: float = Field(
        default=5.0, gt=0, le=300, description="Budget of the registry fallback at start when Kafka answered"
    )
    shutdown_timeout_s: float = Field(default=15.0, gt=0)

    @property
    def resolved_access_log_file(self) -> Path:
        # One file per replica: two processes rotating one file would lose each other's lines.
        name = "gateway" if self.ferry.replica == 1 else f"gateway-{self.ferry.replica}"
        return (self.access_log_file or self.ferry.home / "logs" / f"{name}-access.log").absolute()

    @property
    def tracing(self) -> bool:
        if self.trace_requests is not None:
            return self.trace_requests
        return bool(os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"))

    def batch_config(self, model_name: str) -> BatchConfig:
        return self.model_batching.get(model_name, self.batching).config()

    @property
    def burst(self) -> float:
        return self.rate_limit_burst or 2 * self.rate_limit_rps

    @property
    def token(self) -> str | None:
        if self.admin_token is None or not self.admin_token.get_secret_value():
            return None
        return self.admin_token.get_secret_value()

    def feedback_tokens(self) -> dict[str, str]:
        """Token → user of who may post feedback; empty (feedback refused) without a tokens file.

        Raises InvalidTokens for an unusable file: the gateway refuses to start rather than take a weak one."""
        if self.feedback_tokens_file is None:
            return {}
        return parse_tokens_file(self.feedback_tokens_file, setting="FERRY_GATEWAY_FEEDBACK_TOKENS_FILE")

    def consumer_group(self) -> str:
        """This process's own group: every replica and worker sees every deployment change."""
        return f"{self.consumer_group_prefix}-{socket.gethostname()}-{os.getpid()}"
