"""The registry's settings: environment prefix ``FERRY_REGISTRY_``, plus the shared ``FERRY_`` ones."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.credentials import InvalidTokens, parse_tokens_file, token_weakness
from shared.settings import FerrySettings

ENV_TOKEN_USER = "admin"
TOKENS_FILE_SETTING = "FERRY_REGISTRY_TOKENS_FILE"
InvalidApiTokens = InvalidTokens  # the registry's name for it, kept for its callers


class RegistrySettings(BaseSettings):
    """What the registry process needs; the stack's own settings are nested under ``ferry``."""

    model_config = SettingsConfigDict(env_prefix="FERRY_REGISTRY_", extra="ignore", frozen=True, populate_by_name=True)

    ferry: FerrySettings = Field(default_factory=FerrySettings, description="The shared FERRY_ settings")
    host: str = Field(default="127.0.0.1", description="Interface the HTTP API listens on")
    port: int = Field(default=8081, ge=1, le=65535, description="Port of the HTTP API")
    api_token: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("FERRY_API_TOKEN", "FERRY_REGISTRY_API_TOKEN", "api_token"),
        description="A single bearer token for writes, credited to user 'admin' (unless the tokens file names it)",
    )
    tokens_file: Path | None = Field(
        default=None, description="File of '<user> <token>' lines: each token's user is the actor of its writes"
    )
    consumer_group: str = Field(default="registry", min_length=1)
    consumer_session_timeout_ms: int | None = Field(
        default=None,
        ge=1_000,
        le=300_000,
        description="How soon a dead registry's partitions move to another; default FERRY_KAFKA_SESSION_TIMEOUT_MS",
    )
    db_pool_size: int = Field(default=10, ge=1, le=200)
    db_max_overflow: int = Field(default=20, ge=0, le=200)
    migrate_on_start: bool = Field(default=True, description="Run `alembic upgrade head` at start-up")
    default_canary_weight: float = Field(default=0.1, ge=0, le=1, description="Canary weight when none is given")
    relay_batch_size: int = Field(default=200, ge=1, le=10_000)
    relay_idle_s: float = Field(default=0.2, gt=0, le=60, description="Outbox poll interval when idle")
    outbox_retention_hours: float = Field(default=24.0, gt=0, description="How long sent outbox rows are kept")
    shutdown_timeout_s: float = Field(default=15.0, gt=0)
    upload_max_bytes: int = Field(
        default=256 * 2**20, ge=1, le=2**31 - 1, description="Largest ONNX artifact POST …/versions accepts (413 above)"
    )

    def api_tokens(self) -> dict[str, str]:
        """Every accepted bearer token → its user; empty when writes are disabled (neither setting given).

        Raises InvalidApiTokens for an empty, short or placeholder token, or an unusable tokens file: the
        registry refuses to start rather than guard its writes with a guessable secret.
        """
        tokens = (
            parse_tokens_file(self.tokens_file, setting=TOKENS_FILE_SETTING) if self.tokens_file is not None else {}
        )
        if self.api_token is not None:
            token = self.api_token.get_secret_value()
            weakness = token_weakness(token)
            if weakness:
                raise InvalidApiTokens(f"FERRY_API_TOKEN {weakness}")
            tokens.setdefault(token, ENV_TOKEN_USER)  # a token the file names keeps the file's user
        return tokens
