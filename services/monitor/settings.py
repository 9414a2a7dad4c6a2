"""The monitor's settings: environment prefix ``FERRY_MONITOR_``, plus the shared ``FERRY_`` ones."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.monitor.adapters.scraper import Target
from shared.credentials import parse_tokens_file
from shared.services import installed_services
from shared.settings import FerrySettings

PROJECT_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RULES = PROJECT_ROOT / "deploy" / "alerts" / "rules.yaml"
WEBHOOK_TOKENS_FILE_ENV = "FERRY_MONITOR_WEBHOOK_TOKENS_FILE"
DEFAULT_WEBHOOK_MAX_BYTES = 4 * 1024 * 1024


def parse_targets(text: str) -> list[Target]:
    """``job=url,job=url`` (a URL without a path gets ``/metrics``); raises ValueError naming the bad entry."""
    targets = []
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        job, sep, url = entry.partition("=")
        if not sep or not job.strip() or not url.startswith(("http://", "https://")):
            raise ValueError(f"a target is job=http://host:port[/path], got {entry!r}")
        if url.count("/") == 2:
            url += "/metrics"
        targets.append(Target(job.strip(), url.strip()))
    # A job may have several processes (replicas of a service), each scraped at its own URL.
    urls = [target.url for target in targets]
    if len(set(urls)) != len(urls):
        raise ValueError(f"target URLs must be unique: {urls}")
    return targets


def default_targets() -> list[Target]:
    """Every installed service of ``shared.services.SERVICES`` at its port (each port variable moves it):
    a service this installation cannot run is no target, so it never reads as down."""
    return [Target(spec.name, spec.url(spec.metrics_path)) for spec in installed_services()]


class MonitorSettings(BaseSettings):
    """What the monitor process needs; the stack's own settings are nested under ``ferry``."""

    model_config = SettingsConfigDict(env_prefix="FERRY_MONITOR_", extra="ignore", frozen=True, populate_by_name=True)

    ferry: FerrySettings = Field(default_factory=FerrySettings, description="The shared FERRY_ settings")
    host: str = Field(default="127.0.0.1", description="Interface the HTTP API listens on")
    port: int = Field(default=8082, ge=1, le=65535, description="Port of the HTTP API")
    engine: Literal["builtin", "external"] = Field(
        default="builtin",
        description="builtin: the monitor evaluates the rules and publishes its alerts; external: Prometheus "
        "evaluates them and Alertmanager delivers, the monitor only bridges its webhook to Kafka",
    )
    rules_file: Path = Field(default=DEFAULT_RULES, description="The alert rules (YAML)")
    scrape_interval_s: float = Field(default=5.0, gt=0, le=3600, description="Scrape and evaluation interval")
    scrape_timeout_s: float = Field(default=2.0, gt=0, le=60)
    targets: str = Field(default="", description="job=url,... ; empty: every installed service of shared/services.py")
    webhook_urls: str = Field(default="", description="Comma-separated URLs that get Alertmanager-style webhooks")
    registry_url: str = Field(
        default="http://127.0.0.1:8081",
        validation_alias=AliasChoices("FERRY_REGISTRY_URL", "FERRY_MONITOR_REGISTRY_URL", "registry_url"),
        description="Registry REST base URL: the drift references",
    )
    registry_timeout_s: float = Field(default=5.0, gt=0, le=120)
    reference_ttl_s: float = Field(default=300.0, gt=0, description="How long a drift reference is cached")
    missing_reference_ttl_s: float = Field(default=30.0, gt=0, description="When to ask again for an absent reference")
    input_window_rows: int = Field(
        default=1000, ge=10, le=1_000_000, description="Logged input rows per version that input drift is measured on"
    )
    input_lookback_s: float = Field(
        default=3600.0,
        gt=0,
        le=30 * 86400,
        description="At start, input drift's windows refill from the inference log of this many seconds back "
        "(offsets-for-times), not from the topic's start",
    )
    consumer_group: str = Field(
        default="monitor", min_length=1, description="Prefix of each process's own group <prefix>-<host>-<pid>"
    )
    feedback_window_s: float = Field(
        default=3600.0, gt=0, le=7 * 86400, description="How long a logged answer waits for its feedback (and back)"
    )
    feedback_max_pending: int = Field(
        default=100_000, ge=100, le=10_000_000, description="Per model: logged answers (and early feedback) kept"
    )
    online_max_outcomes: int = Field(
        default=1_000, ge=10, le=1_000_000, description="Per version: the latest judged answers the accuracy is over"
    )
    webhook_dedup_ids: int = Field(
        default=100_000, ge=100, description="Incoming alert ids remembered, so a re-sent alert is published once"
    )
    recent_alerts: int = Field(default=200, ge=1, le=100_000, description="Resolved alerts kept for the API")
    max_series: int = Field(default=100_000, ge=100, description="Series the window keeps at most")
    max_pending_deliveries: int = Field(default=10_000, ge=10, description="Per sink, before the oldest is dropped")
    webhook_tokens_file: Path | None = Field(
        default=None,
        description="File of '<user> <token>' lines: the credentials the incoming Grafana and Alertmanager "
        "webhooks must carry (bearer token, or basic auth with the user and its token); none: they are refused",
    )
    webhook_max_bytes: int = Field(
        default=DEFAULT_WEBHOOK_MAX_BYTES,
        ge=1024,
        le=256 * 1024 * 1024,
        description="Largest incoming webhook body (then 413)",
    )
    external_url: str | None = Field(default=None, description="The monitor's URL as others reach it (webhooks)")
    shutdown_timeout_s: float = Field(default=10.0, gt=0)

    @field_validator("targets")
    @classmethod
    def _targets(cls, value: str) -> str:
        parse_targets(value)
        return value

    @property
    def resolved_targets(self) -> list[Target]:
        return parse_targets(self.targets) or default_targets()

    @property
    def production_group(self) -> str:
        """The group all replicas share for inference.logged and inference.feedback: each model's partition
        (both topics are keyed by model name) is read by one replica, which so sees its logs and feedback."""
        return f"{self.consumer_group}-production"

    @property
    def publishes_own_alerts(self) -> bool:
        """Whether the monitor's own evaluation goes out (builtin), or only the webhooks' alerts (external)."""
        return self.engine == "builtin"

    @property
    def resolved_webhook_urls(self) -> list[str]:
        return [url.strip() for url in self.webhook_urls.split(",") if url.strip()]

    @property
    def resolved_external_url(self) -> str:
        return self.external_url or f"http://{self.host}:{self.port}"

    def webhook_tokens(self) -> dict[str, str]:
        """Every token the incoming webhooks accept → its user; empty when no tokens file is set.

        Raises InvalidTokens for an unreadable file, or an empty, short or placeholder token in it: the
        monitor refuses to start rather than guard its webhooks with a guessable secret.
        """
        if self.webhook_tokens_file is None:
            return {}
        return parse_tokens_file(self.webhook_tokens_file, setting=WEBHOOK_TOKENS_FILE_ENV)
