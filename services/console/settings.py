"""The console's settings: environment prefix ``FERRY_CONSOLE_``, plus the shared ``FERRY_`` ones."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.services import service
from shared.settings import FerrySettings

TOKENS_FILE_SETTING = "FERRY_REGISTRY_TOKENS_FILE"


def _url_of(name: str) -> str:
    return service(name).url()


class ConsoleSettings(BaseSettings):
    """What the console process needs; the stack's own settings are nested under ``ferry``."""

    model_config = SettingsConfigDict(env_prefix="FERRY_CONSOLE_", extra="ignore", frozen=True, populate_by_name=True)

    ferry: FerrySettings = Field(default_factory=FerrySettings, description="The shared FERRY_ settings")
    host: str = Field(default="127.0.0.1", description="Interface the web console listens on")
    port: int = Field(default=8085, ge=1, le=65535, description="Port of the web console")
    registry_url: str = Field(
        default_factory=lambda: _url_of("registry"),
        validation_alias=AliasChoices("FERRY_REGISTRY_URL", "FERRY_CONSOLE_REGISTRY_URL", "registry_url"),
        description="Registry REST base URL: models, versions, evaluations, deployments; writes forwarded",
    )
    monitor_url: str = Field(
        default_factory=lambda: _url_of("monitor"),
        validation_alias=AliasChoices("FERRY_MONITOR_URL", "FERRY_CONSOLE_MONITOR_URL", "monitor_url"),
        description="Monitor base URL: alerts and rules",
    )
    evaluator_url: str = Field(
        default_factory=lambda: _url_of("evaluator"),
        validation_alias=AliasChoices("FERRY_EVALUATOR_URL", "FERRY_CONSOLE_EVALUATOR_URL", "evaluator_url"),
        description="Evaluator base URL: the canaries baking",
    )
    gateway_urls: str = Field(
        default_factory=lambda: _url_of("gateway"),
        validation_alias=AliasChoices("FERRY_CONSOLE_GATEWAY_URLS", "FERRY_GATEWAY_URL", "gateway_urls"),
        description="Comma-separated base URLs of the gateways whose live view the console shows",
    )
    source_timeout_s: float = Field(
        default=3.0, gt=0, le=60, description="Longest wait for one source's answer before its notice shows"
    )
    dead_letter_timeout_s: float = Field(
        default=10.0, gt=0, le=300, description="Longest read of one topic's dead letters"
    )
    compare_timeout_s: float = Field(
        default=300.0, gt=0, le=3600, description="Longest a 'Score afresh' comparison (ferry compare) may take"
    )
    compare_latency_runs: int = Field(
        default=200, ge=10, le=100_000, description="Timed runs at batch 1 per version of a 'Score afresh' comparison"
    )
    tokens_file: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("FERRY_REGISTRY_TOKENS_FILE", "FERRY_CONSOLE_TOKENS_FILE", "tokens_file"),
        description="The registry's '<user> <token>' file: who may replay a dead letter; none: replays are refused",
    )
    consumer_group_prefix: str = Field(
        default="console",
        min_length=1,
        description="Each process follows the training topics in its own group <prefix>-<host>-<pid>",
    )
    shutdown_timeout_s: float = Field(default=10.0, gt=0)

    @property
    def resolved_gateway_urls(self) -> list[str]:
        return [url.strip().rstrip("/") for url in self.gateway_urls.split(",") if url.strip()]

    def consumer_group(self) -> str:
        """This process's own group: every console replica sees every training event."""
        return f"{self.consumer_group_prefix}-{socket.gethostname()}-{os.getpid()}"
